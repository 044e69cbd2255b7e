from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import REPO

LAUNCH = str(REPO / 'launch.py')


def launch(*args: str, cwd: pathlib.Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, LAUNCH, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture
def empty_nodefile(tmp_path: pathlib.Path) -> str:
    path = tmp_path / 'empty.nodes'
    path.write_text('\n')
    return str(path)


BAD_INPUTS = [
    (['--partitions', '5'], '--partitions 5 is more than the 4 node'),
    (['--partitions', '0'], '--partitions 0'),
    (['--partition-sizes', '1,2'], '--partition-sizes 1,2 add up to 3'),
    (['--partition-sizes', '1,x'], "'x' is not an integer"),
    (['--partitions', '2', '--partition-sizes', '1,3'], 'not allowed with argument'),
    (['--nodes-file', 'EMPTY'], 'lists no host'),
    (['--nodes-file', '/no/such/file'], "'/no/such/file' does not exist"),
    (['--iterations', '-1'], '--iterations -1'),
    (['--duration', '-2'], '--duration -2.0'),
    (['--duration', 'nan'], '--duration nan'),
    (['--site', 'nowhere'], "unknown site 'nowhere'"),
    (['--exchange', 'carrier-pigeon'], "unknown exchange 'carrier-pigeon'"),
    (['--executor', 'quantum'], "unknown executor 'quantum'"),
    (['--executor', 'process'], '--executor process runs Directors in other processes'),
    (['--executor', 'globus-compute', '--exchange', 'http'], 'needs --endpoint'),
    (
        ['--executor', 'globus-compute', '--exchange', 'http', '--endpoint', 'xyz'],
        "'xyz' is not a UUID",
    ),
    (['--simulate-nodes', '0'], '--simulate-nodes 0'),
    (['--workers-per-node', '0'], '--workers-per-node 0'),
    (['--iterations', 'many'], "invalid int value: 'many'"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(('args', 'message'), BAD_INPUTS, ids=[' '.join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_clear_line(args, message, tmp_path, empty_nodefile):
    args = [empty_nodefile if a == 'EMPTY' else a for a in args]
    result = launch(*args, '--run-dir', str(tmp_path / 'run'), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert result.stdout == ''


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ('executor', 'exchange'),
    [('local', 'local'), ('thread', 'local'), ('process', 'http')],
)
def test_launch_end_to_end_json(executor, exchange, tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    result = launch(
        '--json',
        '--executor',
        executor,
        '--exchange',
        exchange,
        '--duration',
        '0.2',
        '--iterations',
        '3',
        '--run-dir',
        str(run_dir),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    partitions = {p['index']: p for p in doc['partitions']}
    assert len(partitions) == 2
    assert not set(partitions[0]['nodes']) & set(partitions[1]['nodes'])
    assert len(doc['results']) == 2 * (1 + 3)
    for r in doc['results']:
        assert r['ok'], r
        assert r['node'] in partitions[r['partition']]['nodes']
        assert r['action'] in ('md_sim', 'md_sim_batch')
        assert r['start'] <= r['end']
    actions = [r['action'] for r in doc['results']]
    assert actions.count('md_sim') == 2
    # Launcher hostfiles and Parsl files stay in the run directory, not the cwd.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']


@pytest.mark.timeout(120)
def test_default_run_prints_a_table_per_director(tmp_path: pathlib.Path):
    result = launch(
        '--duration', '0.1', '--iterations', '2', '--run-dir', str(tmp_path / 'r'), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "director-0: partition 0 ['sim-node-001', 'sim-node-002']" in result.stdout
    assert "director-1: partition 1 ['sim-node-003', 'sim-node-004']" in result.stdout
    assert '6 calls, 6 ok, 0 failed' in result.stdout


@pytest.mark.timeout(180)
def test_runs_with_the_venv_not_activated(tmp_path: pathlib.Path):
    # How MCP hosts and batch scripts start it: the venv's python named, its bin not on PATH.
    import os

    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHONHOME')}
    env['PATH'] = '/usr/bin:/bin'
    done = subprocess.run(
        [sys.executable, LAUNCH, '--duration', '0.1', '--iterations', '1', '--json'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'interchange.py' not in done.stderr
    results = json.loads(done.stdout)['results']
    assert len(results) == 2 * (1 + 1)
    assert all(r['ok'] for r in results), results


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ('how', 'exchange'),
    [('ctrl-c', 'http'), ('ctrl-c', 'local'), ('sigterm', 'local')],
)
def test_stopping_a_run_says_one_line_and_how_to_finish(
    how: str, exchange: str, tmp_path: pathlib.Path
):
    # Ctrl-C at a terminal signals the whole foreground process group (the spawned HTTP
    # exchange and the interchanges died first: 2,256 lines ending in ECONNREFUSED);
    # a batch scheduler's scancel or qdel sends SIGTERM.
    import os
    import signal
    import time

    run_dir = tmp_path / 'run'
    err = tmp_path / 'err.txt'
    with open(err, 'w') as stream:
        run = subprocess.Popen(
            [sys.executable, LAUNCH, '--exchange', exchange, '--simulate-nodes', '2',
             '--partitions', '1', '--iterations', '30', '--duration', '1',
             '--run-dir', str(run_dir), '--quiet'],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stream,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )  # fmt: skip
    try:
        journal = run_dir / 'journal' / 'director-0.jsonl'
        deadline = time.monotonic() + 120
        while not (journal.exists() and journal.read_text().count('\n') >= 2):
            assert run.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        if how == 'ctrl-c':
            os.killpg(run.pid, signal.SIGINT)
        else:
            run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=90) == 130
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    said = err.read_text()
    assert 'Traceback' not in said and 'ECONNREFUSED' not in said, said[-3000:]
    assert said.count('\n') <= 3, said[-3000:]
    assert f'launch.py: stopped; finished calls are in {run_dir}/journal' in said
    assert f'finish with: launch.py --resume {run_dir}' in said


@pytest.mark.timeout(10)
def test_a_run_inside_a_batch_job_without_site_says_it_simulates(caplog):
    from actors.cli.plan import _site

    with caplog.at_level('WARNING', logger='actors.cli.plan'):
        assert _site(None, {'SLURM_JOB_ID': '4711'}) == 'local'
    (said,) = [r.getMessage() for r in caplog.records]
    assert 'SLURM_JOB_ID=4711 without --site' in said and 'slurm' in said and 'pbs' in said
    caplog.clear()
    with caplog.at_level('WARNING', logger='actors.cli.plan'):
        assert _site(None, {}) == 'local'  # a laptop: nothing to say
        assert _site('local', {'PBS_JOBID': '12.pbs'}) == 'local'  # chosen on purpose
        assert _site('slurm', {'SLURM_JOB_ID': '4711'}) == 'slurm'
    assert not caplog.records
