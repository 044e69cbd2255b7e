"""The PBS-family profiles on the real cluster: ``mpiexec`` starts the pools over ssh.

On a PBS job the Directors run on the lead ("mom") host and every block's
``mpiexec`` (MPICH's hydra here) starts its pool on the node named by the
block's ``$PBS_NODEFILE``, through ssh. ``.ci/slurm-cluster ssh-up`` gives the
namespace cluster that: one ``sshd`` per host on its own cluster address, root
by a key made for the cluster, and ``/run/hpc-slurm/bin/ssh``, which runs ssh
with that key and a ``known_hosts`` of the hosts' keys (``StrictHostKeyChecking
yes``, ``BatchMode``). The tests put that directory first on ``PATH``; hydra's
ssh launcher runs ``ssh`` from ``PATH`` and carries the caller's environment
(the block's ``PATH`` with the venv) to the pools.

Every run starts on ``ctl`` (outside the nodefile: no pool runs there) with
``$PBS_NODEFILE`` listing ``n1``..``n4`` once per rank and ``$PBS_JOBID`` set,
and no Slurm variables. Beyond "every call ok", each test checks where every
pool really registered (``tests.pool_placement``), that the nodes' sshd
accepted the run's key logins from ``ctl``, and that no ``mpiexec``,
``hydra_pmi_proxy``, ssh session or pool of the run is left on any host.

``polaris`` and ``aurora`` are PALS profiles: their launch line binds with
``--cpu-bind none``, which hydra rejects (``unrecognized argument cpu-bind``),
and their ``interface`` (``bond0``, ``hsn0``) exists on no host here. Their runs
replace exactly those two (``bind_cmd=--bind-to``, ``interface=`` so the
Director's address is ``ctl``'s own, as on ``pbs``) and add ``-launcher ssh``;
the test checks that the line that ran is the profile's own but for those
words. PALS itself, CPU binding and the accelerators' pinning are not tested.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from actors.job.partition import write_partition
from actors.site.parsl_config import make_launcher
from actors.site.profile import load_site
from tests.conftest import REPO
from tests.pool_placement import misplaced
from tests.pool_placement import pool_placements
from tests.slurm_cluster import ADDRESSES
from tests.slurm_cluster import HOSTS
from tests.slurm_cluster import NODES
from tests.slurm_cluster import SCRIPT
from tests.slurm_cluster import on_host
from tests.slurm_cluster import slurm_cluster  # noqa: F401

PYTHON = sys.executable
LAUNCH = str(REPO / 'launch.py')
SSH_BIN = '/run/hpc-slurm/bin'
SSHD_LOG = '/run/hpc-slurm/log/sshd-{host}.log'
NAMESPACE = 'hpcs-{host}'
"""``ip netns`` name of a cluster host (``.ci/slurm-cluster``'s ``PREFIX``)."""
HYDRA_SSH = '-launcher ssh --ppn 1'
RANKS_PER_NODE = 2
LAUNCH_PROGRAMS = frozenset({'mpiexec', 'mpiexec.hydra', 'hydra_pmi_proxy', 'ssh'})
"""What a block's launch runs on the hosts besides the pool (and sshd's ``sshd: root...``)."""


@pytest.fixture(scope='module')
def ssh_cluster(slurm_cluster: None) -> None:  # noqa: F811
    """Start sshd on the cluster's hosts (idempotent); skip the test if it cannot start."""
    try:
        proc = subprocess.run(
            [str(SCRIPT), 'ssh-up'], capture_output=True, text=True, timeout=280, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.skip('sshd cannot start on the cluster: .ci/slurm-cluster ssh-up took over 280s')
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        pytest.skip(f'sshd cannot start on the cluster: {lines[0] if lines else proc.returncode}')


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.usefixtures('slurm_cluster', 'ssh_cluster', 'no_slurm_job'),
]


def _pbs_environment(tmp_path: pathlib.Path) -> dict[str, str]:
    """A PBS job's variables on its mom host: the nodefile (once per rank), the job ID."""
    nodefile = tmp_path / 'PBS_NODEFILE'
    nodefile.write_text(''.join(f'{n}\n' * RANKS_PER_NODE for n in NODES))
    return {
        'PATH': f'{SSH_BIN}:{os.environ["PATH"]}',
        'PBS_NODEFILE': str(nodefile),
        'PBS_JOBID': f'{os.getpid()}.ctl',
    }


@pytest.fixture
def no_slurm_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Slurm job variables reach the runs (hydra would pick its Slurm launcher)."""
    for name in [n for n in os.environ if n.startswith('SLURM_') and n != 'SLURM_CONF']:
        monkeypatch.delenv(name)


def _json_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index('{') :])


def _ssh_logins() -> dict[str, int]:
    """Key logins of root from ``ctl`` each node's sshd has accepted so far."""
    accepted = f'Accepted publickey for root from {ADDRESSES["ctl"]} '
    counts = {}
    for node in NODES:
        log = pathlib.Path(SSHD_LOG.format(host=node))
        text = log.read_text(errors='replace') if log.exists() else ''
        counts[node] = text.count(accepted)
    return counts


def _launch_processes(tmp_path: pathlib.Path) -> dict[int, str]:
    """Processes in the cluster's namespaces that a launch left: pid -> host and command line.

    ``hydra_pmi_proxy``, ``mpiexec``, ssh clients and sshd sessions (anyone's), and
    anything that names this test's directory (pools, block scripts, their helpers).
    """
    found = {}
    for host in HOSTS:
        listed = subprocess.run(
            ['ip', 'netns', 'pids', NAMESPACE.format(host=host)],
            capture_output=True,
            text=True,
            check=False,
        )
        for pid in listed.stdout.split():
            try:
                raw = pathlib.Path(f'/proc/{pid}/cmdline').read_bytes()
            except OSError:
                continue
            argv = raw.decode(errors='replace').split('\0')
            cmdline = ' '.join(argv).strip()
            if (
                os.path.basename(argv[0]) in LAUNCH_PROGRAMS
                or argv[0].startswith('sshd: root')
                or str(tmp_path) in cmdline
            ):
                found[int(pid)] = f'{host}: {cmdline[:200]}'
    return found


def _wait_gone(tmp_path: pathlib.Path, before: dict[int, str], timeout: float = 20.0) -> None:
    """The run's launch processes on every host exit (Parsl's cancel: SIGTERM to mpiexec)."""
    deadline = time.monotonic() + timeout
    left = {}
    while time.monotonic() < deadline:
        left = {p: c for p, c in _launch_processes(tmp_path).items() if p not in before}
        if not left:
            return
        time.sleep(0.5)
    raise AssertionError(f'left running after the run: {sorted(left.values())}')


def _check_placements(run_dir: pathlib.Path) -> None:
    placements = [p for p in pool_placements(run_dir) if p.meant_for is not None]
    assert placements, f'no pool registered under {run_dir}'
    assert misplaced(placements) == []
    assert {p.hostname for p in placements} == set(NODES)
    assert {p.meant_for for p in placements} == set(NODES)


def _launch_lines(run_dir: pathlib.Path) -> set[str]:
    """The ``mpiexec`` lines of every block's submit script."""
    lines = set()
    for script in run_dir.rglob('submit_scripts/parsl.*.sh'):
        for line in script.read_text().splitlines():
            if line.startswith('mpiexec '):
                lines.add(line)
    return lines


def _interchange_urls(run_dir: pathlib.Path) -> set[str]:
    return {
        line.split('interchange url: ')[1].strip()
        for log in run_dir.rglob('manager.log')
        for line in log.read_text().splitlines()
        if 'interchange url: ' in line
    }


def _expected_line(site: str, launcher_args: str | None, tmp_path: pathlib.Path) -> str:
    """The site's own ``mpiexec`` line for a one-node block, with what the run replaced.

    ``launcher_args`` (if given) in place of the profile's, and hydra's ``--bind-to`` in
    place of PALS's ``--cpu-bind``.
    """
    profile = load_site(site)
    one = write_partition(0, ['n1'], tmp_path / 'probe' / 'n1')
    script = make_launcher(profile, one)('CMD', 1, 1)
    (line,) = [x for x in script.splitlines() if x.startswith('mpiexec ')]
    if launcher_args is not None:
        line = line.replace(f' {profile.launcher_args} -n ', f' {launcher_args} -n ', 1)
    return re.sub(r'^mpiexec --cpu-bind none ', 'mpiexec --bind-to none ', line)


def _check_ran_over_ssh(run_dir: pathlib.Path, logins_before: dict[str, int]) -> None:
    """Pools reached ``ctl``'s address; every node's sshd let the run in."""
    urls = _interchange_urls(run_dir)
    assert urls and all(u.startswith(f'tcp://{ADDRESSES["ctl"]}:') for u in urls), urls
    logins = _ssh_logins()
    assert all(logins[n] > logins_before[n] for n in NODES), (logins_before, logins)


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ('mode', 'launcher_args'),
    [('elastic', HYDRA_SSH), ('static', None)],
    ids=['elastic-launcher-ssh', 'static-profile-as-shipped'],
)
def test_pbs_profile_starts_one_pool_per_node_over_ssh(
    mode: str, launcher_args: str | None, tmp_path: pathlib.Path
):
    run_dir = tmp_path / 'run'
    before = _launch_processes(tmp_path)
    logins = _ssh_logins()
    flags = ['--static'] if mode == 'static' else []
    if launcher_args is not None:
        flags += ['--launcher-args', launcher_args]
    done = on_host(
        'ctl',
        [
            PYTHON,
            LAUNCH,
            '--site',
            'pbs',
            *flags,
            '--iterations',
            '6',
            '--duration',
            '0.5',
            '--run-dir',
            str(run_dir),
            '--json',
        ],
        env=_pbs_environment(tmp_path),
        cwd=tmp_path,
        timeout=220,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = _json_of(done.stdout)
    assert doc['node_source'] == {'kind': 'pbs', 'detail': str(tmp_path / 'PBS_NODEFILE')}
    partitions = {p['index']: p['nodes'] for p in doc['partitions']}
    # Duplicates (one line per rank) dropped, the nodefile's order kept.
    assert [n for i in sorted(partitions) for n in partitions[i]] == list(NODES)
    assert len(doc['results']) == 2 * (1 + 6)
    for result in doc['results']:
        assert result['ok'], result
        assert result['node'] in NODES
        if mode == 'static':
            assert result['node'] in partitions[result['partition']], result
    assert {r['node'] for r in doc['results']} == set(NODES)
    _check_placements(run_dir)
    # The profile's launch line ran (with the given launcher flags), and only it.
    assert _launch_lines(run_dir) == {_expected_line('pbs', launcher_args, tmp_path)}
    _check_ran_over_ssh(run_dir, logins)
    _wait_gone(tmp_path, before)


@pytest.mark.timeout(400)
@pytest.mark.parametrize('site', ['pbs', 'polaris', 'aurora'])
def test_nodes_move_between_directors_whose_pools_start_over_ssh(site: str, tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    before = _launch_processes(tmp_path)
    logins = _ssh_logins()
    overrides = []
    if load_site(site).bind_cmd != '--bind-to':
        # A PALS flag and a NIC of the real machine: see the module's docstring.
        overrides = ['--override', 'bind_cmd=--bind-to', '--override', 'interface=']
    done = on_host(
        'ctl',
        [
            PYTHON,
            '-m',
            'tests.slurm_scenarios',
            'moves',
            str(run_dir),
            '--site',
            site,
            '--launcher-args',
            HYDRA_SSH,
            *overrides,
        ],
        env=_pbs_environment(tmp_path),
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = _json_of(done.stdout)
    assert found['site']['name'] == site and found['site']['launcher_args'] == HYDRA_SSH
    giver_nodes, receiver_nodes = (set(p) for p in found['partitions'])
    assert giver_nodes | receiver_nodes == set(NODES)
    heavy = found['heavy']
    assert len(heavy) == 40 and all(r['ok'] for r in heavy)
    assert len(found['light']) == 2 and all(r['ok'] for r in found['light'])
    # Director 1 ran calls on nodes that were director-0's: they moved.
    assert {r['node'] for r in heavy} & giver_nodes
    statuses = {s['director']: s for s in found['statuses']}
    assert statuses['director-0']['moves_out'] >= 1 and statuses['director-1']['moves_in'] >= 1
    assert found['violations'] == [] and found['moves'] >= 1
    # Then the giver got calls again: all ran, on nodes of the job.
    assert len(found['after']) == 8 and all(r['ok'] for r in found['after'])
    assert {r['node'] for r in found['after']} <= set(NODES)
    # No node was owned by two Directors at any sample.
    assert found['samples']
    for views in found['samples']:
        owned = [n for nodes in views.values() for n in nodes]
        assert len(owned) == len(set(owned)), views
    _check_placements(run_dir)
    # More blocks than nodes started (moved nodes got new pools), each on its own node.
    assert len(pool_placements(run_dir)) > len(NODES)
    # What ran is the profile's own launch line but for the words named above.
    assert _launch_lines(run_dir) == {_expected_line(site, HYDRA_SSH, tmp_path)}
    _check_ran_over_ssh(run_dir, logins)
    _wait_gone(tmp_path, before)
