"""The namespace Slurm cluster (``.ci/slurm-cluster``) is a real one.

Four nodes with their own hostnames and addresses run jobs from the
controller; nothing inside reaches past the cluster's subnet, and the root
namespace does not reach into it. Skipped when the cluster is not up.
"""

from __future__ import annotations

import errno
import os
import pathlib
import socket
import sys
import time

import hostlist
import pytest

from tests.slurm_cluster import ADDRESSES
from tests.slurm_cluster import CONTROLLER
from tests.slurm_cluster import HOSTS
from tests.slurm_cluster import NODES
from tests.slurm_cluster import on_host
from tests.slurm_cluster import slurm_cluster  # noqa: F401
from tests.slurm_cluster import wait_for_job

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures('slurm_cluster')]

UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH}
VENV_BIN = str(pathlib.Path(sys.executable).parent)

# Connects to ADDRESS:PORT and prints the errno it fails with (0: it connected), and the seconds.
CONNECT = """
import socket, sys, time
start = time.monotonic()
sock = socket.socket()
sock.settimeout(10)
try:
    sock.connect((sys.argv[1], int(sys.argv[2])))
    code = 0
except OSError as exc:
    code = exc.errno if exc.errno is not None else -1
print(code, round(time.monotonic() - start, 3))
"""

# Step of a barrier: leaves its host's name in DIR, then waits (bounded) for all four.
BARRIER = """
import pathlib, socket, sys, time
folder = pathlib.Path(sys.argv[1])
(folder / socket.gethostname()).touch()
deadline = time.monotonic() + 60
while len(list(folder.iterdir())) < 4:
    if time.monotonic() > deadline:
        sys.exit('only ' + ' '.join(sorted(p.name for p in folder.iterdir())))
    time.sleep(0.05)
print(socket.gethostname())
"""


@pytest.mark.timeout(60)
def test_sinfo_shows_four_idle_nodes():
    # A job of an earlier test may still be completing: wait (bounded) for the nodes to be free.
    expected = [(node, 'idle', '2') for node in NODES]
    deadline = time.monotonic() + 45
    while True:
        proc = on_host(CONTROLLER, ['sinfo', '-h', '-N', '-p', 'debug', '-o', '%N %t %c'])
        rows = sorted(tuple(line.split()) for line in proc.stdout.splitlines())
        if rows == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows == expected, proc.stdout + proc.stderr


@pytest.mark.timeout(60)
def test_each_host_has_its_name_and_address():
    for host in HOSTS:
        proc = on_host(host, ['sh', '-c', 'hostname; ip -o -4 addr show scope global'], check=True)
        name, *addresses = proc.stdout.splitlines()
        assert name == host
        assert len(addresses) == 1, proc.stdout
        assert f' {ADDRESSES[host]}/24 ' in addresses[0]


@pytest.mark.timeout(90)
def test_salloc_four_nodes_runs_one_task_on_each():
    script = 'echo "$(hostname) $(ip -o -4 addr show dev eth0)"'
    proc = on_host(
        CONTROLLER, ['salloc', '-N', '4', 'srun', 'sh', '-c', script], timeout=80, check=True
    )
    lines = sorted(proc.stdout.splitlines())
    assert [line.split()[0] for line in lines] == list(NODES), proc.stdout + proc.stderr
    for line in lines:
        node = line.split()[0]
        assert f' inet {ADDRESSES[node]}/24 ' in line, line


@pytest.mark.timeout(90)
def test_four_one_node_steps_run_at_once(tmp_path: pathlib.Path):
    """Four single-node steps of one allocation meet at a barrier: they run concurrently."""
    barrier = tmp_path / 'barrier'
    barrier.mkdir()
    steps = ' '.join(
        f'srun -N 1 -n 1 -w {node} python3 -c "$BARRIER" {barrier} &' for node in NODES
    )
    proc = on_host(
        CONTROLLER,
        ['salloc', '-N', '4', 'sh', '-c', f'{steps} wait'],
        # srun carries PATH to the nodes: `python3` there is this venv's.
        env={'PATH': f'{VENV_BIN}{os.pathsep}{os.environ["PATH"]}', 'BARRIER': BARRIER},
        timeout=80,
    )
    assert sorted(proc.stdout.split()) == list(NODES), proc.stdout + proc.stderr
    assert sorted(p.name for p in barrier.iterdir()) == list(NODES)


@pytest.mark.timeout(60)
def test_srun_finds_this_venvs_python_on_a_node():
    code = 'import socket, sys; print(socket.gethostname(), sys.prefix)'
    proc = on_host(
        CONTROLLER,
        ['srun', '-N', '1', '-w', 'n3', 'python3', '-c', code],
        env={'PATH': f'{VENV_BIN}{os.pathsep}{os.environ["PATH"]}'},
        timeout=50,
        check=True,
    )
    assert proc.stdout.split() == ['n3', sys.prefix]


@pytest.mark.timeout(120)
def test_sbatch_two_nodes_runs_the_script_on_the_first(tmp_path: pathlib.Path):
    script = 'echo "batch $(hostname) $SLURM_JOB_NODELIST"; srun hostname'
    proc = on_host(
        CONTROLLER,
        ['sbatch', '--parsable', '-N', '2', '-o', str(tmp_path / 'job-%j.out'), '--wrap', script],
        cwd=tmp_path,
        check=True,
    )
    job_id = proc.stdout.strip().split(';')[0]
    assert wait_for_job(job_id, timeout=100) == 'COMPLETED'
    lines = (tmp_path / f'job-{job_id}.out').read_text().splitlines()
    batch = [line.split() for line in lines if line.startswith('batch ')]
    assert len(batch) == 1, lines
    _, host, nodelist = batch[0]
    nodes = hostlist.expand_hostlist(nodelist)
    assert len(nodes) == 2 and set(nodes) <= set(NODES), nodelist
    assert host == nodes[0]
    assert sorted(line for line in lines if not line.startswith('batch ')) == sorted(nodes)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('host', HOSTS)
def test_no_host_reaches_past_the_subnet(host: str):
    outside = on_host(host, [sys.executable, '-c', CONNECT, '1.1.1.1', '80'], check=True)
    code, seconds = outside.stdout.split()
    assert int(code) == errno.ENETUNREACH, outside.stdout
    assert float(seconds) < 1.0
    # The cluster's own network works: the controller's port answers.
    inside = on_host(host, [sys.executable, '-c', CONNECT, ADDRESSES[CONTROLLER], '6817'])
    assert inside.stdout.split()[0] == '0', inside.stdout + inside.stderr


@pytest.mark.timeout(30)
def test_root_namespace_does_not_reach_the_cluster():
    for address in ADDRESSES.values():
        start = time.monotonic()
        with socket.socket() as sock, pytest.raises(OSError) as caught:
            sock.settimeout(10)
            sock.connect((address, 6818))
        assert caught.value.errno in UNREACHABLE, caught.value
        assert time.monotonic() - start < 1.0
