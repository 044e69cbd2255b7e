"""The project on the real Slurm cluster, run as users run it: ``salloc``, ``sbatch``, moves.

Each test starts ``launch.py`` (or a scenario of ``tests.slurm_scenarios``) on
the cluster's login host ``ctl`` inside a real allocation; worker pools start
through ``srun`` on ``n1``..``n4`` and reach the Director over the cluster's
own network. Beyond "every call ok", they check where every pool really ran
(``tests.pool_placement``): each registered under its own block, on the node
its block was started for.
"""

from __future__ import annotations

import asyncio
import collections
import json
import pathlib
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.pool_placement import misplaced
from tests.pool_placement import pool_placements
from tests.slurm_cluster import ADDRESSES
from tests.slurm_cluster import NODES
from tests.slurm_cluster import on_host
from tests.slurm_cluster import popen_on_host
from tests.slurm_cluster import slurm_cluster  # noqa: F401
from tests.slurm_cluster import wait_for_job

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures('slurm_cluster')]

PYTHON = sys.executable
LAUNCH = str(REPO / 'launch.py')


def _json_of(stdout: str) -> dict:
    """The JSON document a run printed (salloc's own lines go to stderr)."""
    return json.loads(stdout[stdout.index('{') :])


def _launch_in_allocation(
    allocation: list[str], run_dir: pathlib.Path, *flags: str, timeout: float = 220
) -> subprocess.CompletedProcess[str]:
    """``salloc ALLOCATION launch.py --site slurm FLAGS --run-dir RUN --json`` on the login host."""
    return on_host(
        'ctl',
        ['salloc', *allocation, PYTHON, LAUNCH, '--site', 'slurm', *flags,
         '--run-dir', str(run_dir), '--json'],
        cwd=run_dir.parent,
        timeout=timeout,
    )  # fmt: skip


def _check_placements(run_dir: pathlib.Path, nodes: set[str]) -> None:
    placements = [p for p in pool_placements(run_dir) if p.meant_for is not None]
    assert placements, f'no pool registered under {run_dir}'
    assert misplaced(placements) == []
    assert {p.hostname for p in placements} == nodes


@pytest.mark.timeout(240)
@pytest.mark.parametrize('mode', ['elastic', 'static'])
def test_launch_in_an_salloc_allocation(mode: str, tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    flags = ['--static'] if mode == 'static' else []
    done = _launch_in_allocation(
        ['-N', '4'], run_dir, *flags, '--iterations', '6', '--duration', '0.5'
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = _json_of(done.stdout)
    assert doc['node_source']['kind'] == 'slurm'
    partitions = {p['index']: p['nodes'] for p in doc['partitions']}
    assert sorted(n for nodes in partitions.values() for n in nodes) == list(NODES)
    assert len(doc['results']) == 2 * (1 + 6)
    for result in doc['results']:
        assert result['ok'], result
        assert result['node'] in NODES
        if mode == 'static':
            assert result['node'] in partitions[result['partition']], result
    _check_placements(run_dir, set(NODES))


@pytest.mark.timeout(240)
def test_launch_from_an_sbatch_script_runs_the_directors_on_the_batch_host(
    tmp_path: pathlib.Path,
):
    run_dir = tmp_path / 'run'
    script = tmp_path / 'job.sh'
    script.write_text(
        '#!/bin/bash\n'
        f'cd {tmp_path}\n'
        f'hostname > {tmp_path}/batch-host\n'
        f'{PYTHON} {LAUNCH} --site slurm --partitions 2 --iterations 4 --duration 0.5 '
        f'--run-dir {run_dir} --json > {tmp_path}/out.json 2> {tmp_path}/err.txt\n'
    )
    submitted = on_host(
        'ctl', ['sbatch', '--parsable', '-N', '3', str(script)], cwd=tmp_path, timeout=30
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(';')[0]
    state = wait_for_job(job, timeout=200)
    err = (tmp_path / 'err.txt').read_text() if (tmp_path / 'err.txt').exists() else ''
    assert state == 'COMPLETED', err[-3000:]
    batch_host = (tmp_path / 'batch-host').read_text().strip()
    doc = json.loads((tmp_path / 'out.json').read_text())
    nodes = {n for p in doc['partitions'] for n in p['nodes']}
    assert batch_host in nodes and len(nodes) == 3
    assert len(doc['results']) == 2 * (1 + 4) and all(r['ok'] for r in doc['results'])
    _check_placements(run_dir, nodes)
    # The pools reached the Directors at the batch host's own address.
    urls = {
        line.split('interchange url: ')[1].strip()
        for log in run_dir.rglob('manager.log')
        for line in log.read_text().splitlines()
        if 'interchange url: ' in line
    }
    assert urls and all(u.startswith(f'tcp://{ADDRESSES[batch_host]}:') for u in urls), urls


@pytest.mark.timeout(300)
def test_nodes_move_and_the_giver_keeps_serving(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    done = on_host(
        'ctl',
        ['salloc', '-N', '4', PYTHON, '-m', 'tests.slurm_scenarios', 'moves', str(run_dir)],
        cwd=REPO,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = _json_of(done.stdout)
    giver_nodes, receiver_nodes = (set(p) for p in found['partitions'])
    heavy = found['heavy']
    assert len(heavy) == 40 and all(r['ok'] for r in heavy)
    # Director 1 ran calls on nodes that were director-0's: they moved.
    assert {r['node'] for r in heavy} & giver_nodes
    statuses = {s['director']: s for s in found['statuses']}
    assert statuses['director-0']['moves_out'] >= 1 and statuses['director-1']['moves_in'] >= 1
    assert found['violations'] == [] and found['moves'] >= 1
    # Then the giver got calls again: all ran, on nodes of the job.
    assert len(found['after']) == 8 and all(r['ok'] for r in found['after'])
    assert {r['node'] for r in found['after']} <= giver_nodes | receiver_nodes
    # No node was owned by two Directors at any sample.
    for views in found['samples']:
        owned = [n for nodes in views.values() for n in nodes]
        assert len(owned) == len(set(owned)), views
    _check_placements(run_dir, giver_nodes | receiver_nodes)


def _ok_keys(run_dir: pathlib.Path) -> collections.Counter[str]:
    """How many times each call is journaled ``ok`` (twice would be a call run twice)."""
    keys: collections.Counter[str] = collections.Counter()
    for journal in (run_dir / 'journal').glob('*.jsonl'):
        for line in journal.read_text().splitlines():
            entry = json.loads(line)
            if entry.get('status') == 'ok':
                keys[entry['call_key']] += 1
    return keys


def _resume_in_a_new_allocation(run_dir: pathlib.Path, nodes: int, cwd: pathlib.Path) -> dict:
    done = on_host(
        'ctl',
        ['salloc', '-N', str(nodes), PYTHON, LAUNCH, '--resume', str(run_dir), '--json'],
        cwd=cwd,
        timeout=200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return _json_of(done.stdout)


@pytest.mark.timeout(300)
def test_the_allocations_time_limit_drains_the_run_and_resume_finishes_it(
    tmp_path: pathlib.Path,
):
    # salloc --time=1: one minute; Slurm 22.05 sets no SLURM_JOB_END_TIME (squeue tells).
    run_dir = tmp_path / 'run'
    work = ['--static', '--iterations', '40', '--duration', '3', '--drain-margin', '45']
    done = _launch_in_allocation(['-N', '2', '--time=1'], run_dir, *work, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    assert 'draining: the allocation ends in' in done.stderr
    assert f'finish with: launch.py --resume {run_dir}' in done.stderr
    first = _json_of(done.stdout)['results']
    statuses = collections.Counter(r['status'] for r in first)
    assert statuses['cancelled'] > 0 and statuses['ok'] > 0, statuses
    resumed = _resume_in_a_new_allocation(run_dir, 2, tmp_path)
    assert len(resumed['results']) == len(first) == 2 * (1 + 40)
    assert all(r['ok'] for r in resumed['results'])
    keys = _ok_keys(run_dir)
    assert len(keys) == len(first) and set(keys.values()) == {1}


@pytest.mark.timeout(300)
def test_scancel_mid_run_stops_with_the_resume_hint_and_resume_finishes_it(
    tmp_path: pathlib.Path,
):
    run_dir = tmp_path / 'run'
    err = tmp_path / 'err.txt'
    script = tmp_path / 'job.sh'
    script.write_text(
        '#!/bin/bash\n'
        f'{PYTHON} {LAUNCH} --site slurm --iterations 30 --duration 2 '
        f'--run-dir {run_dir} --json > {tmp_path}/out.json 2> {err}\n'
    )
    submitted = on_host('ctl', ['sbatch', '--parsable', '-N', '2', str(script)], cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(';')[0]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not (run_dir / 'journal').exists() or sum(_ok_keys(run_dir).values()) < 6
    ):
        time.sleep(0.2)
    assert sum(_ok_keys(run_dir).values()) >= 6, err.read_text()[-2000:]
    assert on_host('ctl', ['scancel', job]).returncode == 0
    assert wait_for_job(job, timeout=90) == 'CANCELLED'
    # launch.py took the scheduler's SIGTERM as Ctrl-C: Directors stopped, one line said how
    # to finish (it outlives the batch script by the few seconds its cleanup takes).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and 'stopped' not in err.read_text():
        time.sleep(0.2)
    said = err.read_text()
    assert f'launch.py: stopped; finished calls are in {run_dir}/journal' in said, said
    assert f'finish with: launch.py --resume {run_dir}' in said
    before = _ok_keys(run_dir)
    assert 0 < sum(before.values()) < 2 * (1 + 30)
    resumed = _resume_in_a_new_allocation(run_dir, 2, tmp_path)
    assert len(resumed['results']) == 2 * (1 + 30)
    assert all(r['ok'] for r in resumed['results'])
    keys = _ok_keys(run_dir)
    assert len(keys) == 2 * (1 + 30) and set(keys.values()) == {1}


@pytest.mark.timeout(240)
def test_directors_in_separate_processes_over_the_http_exchange(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    done = _launch_in_allocation(
        ['-N', '4'], run_dir, '--executor', 'process', '--exchange', 'http', '--iterations', '6',
        '--duration', '0.5',
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = _json_of(done.stdout)['results']
    assert len(results) == 2 * (1 + 6) and all(r['ok'] for r in results)
    _check_placements(run_dir, set(NODES))


@pytest.mark.timeout(240)
def test_mpi_calls_run_their_ranks_on_two_nodes_through_srun(tmp_path: pathlib.Path):
    done = on_host(
        'ctl',
        # Whole nodes, as HPC centres allocate them: 2 ranks per node need 2 CPUs per node.
        [
            'salloc',
            '-N',
            '4',
            '--exclusive',
            PYTHON,
            '-m',
            'tests.slurm_scenarios',
            'mpi',
            str(tmp_path / 'r'),
        ],
        cwd=REPO,
        timeout=220,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = _json_of(done.stdout)
    spans = []
    for probe in found['probes']:
        assert probe['ok'], probe['error']
        assert len(probe['nodes']) == 2 and set(probe['nodes']) <= set(NODES)
        # srun put the ranks on exactly the call's nodes, 2 per node.
        assert probe['value']['hosts'] == sorted(probe['nodes'])
        assert probe['value']['size'] == 4
        ranks = collections.Counter(r['host'] for r in probe['value']['ranks'])
        assert ranks == dict.fromkeys(probe['nodes'], 2)
        spans.append((set(probe['nodes']), probe['value']['start'], probe['value']['end']))
    for i, (nodes_a, start_a, end_a) in enumerate(spans):
        for nodes_b, start_b, end_b in spans[i + 1 :]:
            if start_a < end_b and start_b < end_a:
                assert not nodes_a & nodes_b, 'two MPI calls shared a node while running'
    md = found['md']
    assert md['ok'], md['error']
    assert md['value']['hosts'] == sorted(md['nodes'])
    assert [r['result']['seed'] for r in md['value']['ranks']] == [3, 4, 5, 6]
    assert all(r['ok'] for r in found['after'])


def _worker_port(run_dir: pathlib.Path, deadline: float) -> tuple[str, str]:
    """The interchange address and worker port a Director's pools were told (its block files)."""
    while time.monotonic() < deadline:
        for command in run_dir.rglob('cmd_*.sh'):
            text = command.read_text()
            address = re.search(r' -a (\S+)', text)
            port = re.search(r'--port=(\d+)', text)
            if address and port:
                return address[1], port[1]
        time.sleep(0.1)
    raise AssertionError(f'no block command file under {run_dir}')


@pytest.mark.timeout(240)
@pytest.mark.parametrize('encrypted', [True, False], ids=['encrypted', 'unencrypted'])
def test_a_stranger_on_the_network_without_the_runs_keys_gets_no_call(
    encrypted: bool, tmp_path: pathlib.Path
):
    # Another user's job on n4 (outside the allocation) runs Parsl's own worker pool
    # against a Director's worker port, without the run's certificates.
    run_dir = tmp_path / 'run'
    flags = [] if encrypted else ['--unencrypted-workers']
    run = popen_on_host(
        'ctl',
        [
            'salloc',
            '-N',
            '2',
            '-w',
            'n1,n2',
            PYTHON,
            LAUNCH,
            '--site',
            'slurm',
            '--static',
            *flags,
            '--iterations',
            '30',
            '--duration',
            '1',
            '--run-dir',
            str(run_dir),
            '--json',
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stranger_logs = tmp_path / 'stranger'
    try:
        address, port = _worker_port(run_dir, time.monotonic() + 120)
        stranger = on_host(
            'n4',
            [
                'timeout',
                '-s',
                'KILL',
                '12',
                PYTHON,
                str(pathlib.Path(PYTHON).parent / 'process_worker_pool.py'),
                '--max_workers_per_node=1',
                '-a',
                address,
                '-p',
                '0',
                '-c',
                '1.0',
                '-m',
                'None',
                '--poll',
                '10',
                f'--port={port}',
                '--cert_dir',
                'None',
                f'--logdir={stranger_logs}',
                '--logconf=None',
                '--block_id=999',
                '--hb_period=1',
                '--hb_threshold=30',
                '--drain_period=None',
                '--cpu-affinity',
                'none',
                '--mpi-launcher=mpiexec',
                '--available-accelerators',
            ],
            cwd=tmp_path,
            timeout=60,
        )
        stdout, stderr = run.communicate(timeout=200)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, stderr[-3000:]
    assert stranger.returncode != 0  # it never served; `timeout` ended it
    results = _json_of(stdout)['results']
    assert len(results) == 2 * (1 + 30) and all(r['ok'] for r in results)
    registered = {p.block for p in pool_placements(run_dir)}
    if encrypted:
        # Nothing of the stranger's reached an interchange: no registration, no call.
        assert '999' not in registered
        assert {r['node'] for r in results} <= {'n1', 'n2'}
    else:
        # Without CurveZMQ the same stranger registers as a pool of the run: the risk.
        assert '999' in registered


@pytest.mark.timeout(240)
def test_mcp_server_in_an_allocation_answers_the_sdks_client(tmp_path: pathlib.Path):
    # What an MCP host does: start `launch.py mcp` (here through salloc on the login host)
    # as a stdio subprocess of the MCP SDK's own client, list its tools and call one.
    from mcp import ClientSession
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    from tests.slurm_cluster import SCRIPT

    run_dir = tmp_path / 'run'
    params = StdioServerParameters(
        command=str(SCRIPT),
        args=[
            'exec',
            'ctl',
            'salloc',
            '-N',
            '2',
            PYTHON,
            LAUNCH,
            'mcp',
            '--site',
            'slurm',
            '--partitions',
            '2',
            '--run-dir',
            str(run_dir),
        ],
        cwd=str(tmp_path),
    )

    async def session() -> tuple[set[str], list[dict], dict]:
        with open(tmp_path / 'mcp.err', 'w') as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as mcp_session,
            ):
                await mcp_session.initialize()
                tools = {t.name for t in (await mcp_session.list_tools()).tools}
                calls = await asyncio.gather(
                    *(
                        mcp_session.call_tool('mock_md', {'duration': 0.5, 'call_key': f'k{i}'})
                        for i in range(6)
                    )
                )
                status = await mcp_session.call_tool('directors_status', {})
                return tools, [c.structuredContent for c in calls], status.structuredContent

    tools, calls, status = asyncio.run(session())
    assert {'mock_md', 'directors_status'} <= tools
    assert [c['status'] for c in calls] == ['ok'] * 6
    assert {c['node'] for c in calls} <= set(NODES)
    directors = status['directors']
    assert len(directors) == 2 and sum(d['done'] for d in directors) == 6
    _check_placements(run_dir, {n for d in directors for n in d['nodes']})
