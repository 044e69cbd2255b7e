"""Kill the client mid-run, then resume: no finished result is lost or run twice."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time
import uuid

import psutil
import pytest

from actors.cli.parser import build_parser
from actors.cli.plan import plan_run
from actors.common.timing import ORPHAN_BOUND
from actors.director.options import DirectorOptions
from actors.store.journal import read_run
from actors.store.manifest import DirectorEntry
from actors.store.manifest import RunManifest
from tests.conftest import parsl_processes_of
from tests.helpers import director_processes
from tests.helpers import make_partitions
from tests.helpers import resume_json
from tests.helpers import start_launch

pytestmark = pytest.mark.timeout(240)


def test_killed_client_loses_nothing_and_resume_finishes(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    iterations = 10
    args = [
        '--simulate-nodes', '2', '--partitions', '1', '--workers-per-node', '1',
        '--iterations', str(iterations), '--duration', '1', '--run-dir', str(run_dir),
    ]  # fmt: skip
    client = start_launch(*args)
    journal = run_dir / 'journal' / 'director-0.jsonl'
    deadline = time.time() + 150
    while time.time() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        assert client.poll() is None, client.stderr.read()
        time.sleep(0.1)
    else:
        pytest.fail('no results were journaled in time')
    parsl_before = parsl_processes_of(run_dir)
    assert parsl_before, 'the Director had no Parsl processes'
    client.send_signal(signal.SIGKILL)
    client.wait()
    killed_at = time.time()
    first_line = client.stderr.readline()
    client.stderr.close()
    assert first_line.strip() == f'launch.py: run dir {run_dir}'
    # The parent-death watchdog stops the interchange and the worker pools.
    while parsl_processes_of(run_dir) and time.time() < killed_at + ORPHAN_BOUND + 5:
        time.sleep(0.1)
    orphan_time = time.time() - killed_at
    assert not parsl_processes_of(run_dir), 'Parsl processes outlived the killed client'
    assert orphan_time <= ORPHAN_BOUND + 1
    before = {r['call_key']: r for r in read_run(run_dir)}
    assert len(before) >= 3 and all(r['status'] == 'ok' for r in before.values())

    results, _ = resume_json(run_dir)
    keys = [r['call_key'] for r in results]
    expected = ['director-0/md_sim/0'] + [f'director-0/md_sim_batch/{i}' for i in range(iterations)]
    assert keys == expected
    assert all(r['status'] == 'ok' for r in results)
    # Every result journaled before the kill is reported as it was, not run again.
    by_key = {r['call_key']: r for r in results}
    for key, record in before.items():
        assert by_key[key] == record
    journaled = read_run(run_dir)
    ok_keys = [r['call_key'] for r in journaled if r['status'] == 'ok']
    assert sorted(ok_keys) == sorted(expected), 'a call ran twice or is missing'
    assert os.path.exists(run_dir / 'manifest.json')


def _start_networked_run(run_dir: pathlib.Path, exchange: str, iterations: int):
    """A client with 2 Directors in processes of their own, killed once work is journaled."""
    args = [
        '--exchange', exchange, '--executor', 'process',
        '--simulate-nodes', '2', '--partitions', '2', '--workers-per-node', '1',
        '--iterations', str(iterations), '--duration', '1.5', '--run-dir', str(run_dir),
        '--quiet',
    ]  # fmt: skip
    client = start_launch(*args)
    deadline = time.time() + 150
    while not ((run_dir / 'manifest.json').exists() and len(read_run(run_dir)) >= 3):
        assert time.time() < deadline, 'no results were journaled in time'
        assert client.poll() is None, client.stderr.read()
        time.sleep(0.1)
    directors = director_processes(client.pid)
    assert len(directors) == 2
    client.send_signal(signal.SIGKILL)
    client.wait()
    client.stderr.close()
    return directors


def _expected_keys(iterations: int) -> list[str]:
    return [
        key
        for i in range(2)
        for key in [f'director-{i}/md_sim/0']
        + [f'director-{i}/md_sim_batch/{n}' for n in range(iterations)]
    ]


def _resume(run_dir: pathlib.Path) -> tuple[list[dict], str]:
    results, stderr = resume_json(run_dir)
    # results.jsonl holds the same union.
    written = [json.loads(line) for line in (run_dir / 'results.jsonl').read_text().splitlines()]
    assert written == results
    return results, stderr


def _parsl_runs(run_dir: pathlib.Path) -> dict[str, list[str]]:
    """Each Director's Parsl run directories (one per DataFlowKernel it built)."""
    return {
        d.name: sorted(r.name for r in d.iterdir() if r.name.isdigit())
        for d in sorted((run_dir / 'parsl').iterdir())
    }


def _assert_union(run_dir, results, before, iterations):
    expected = _expected_keys(iterations)
    assert [r['call_key'] for r in results] == expected
    assert all(r['status'] == 'ok' for r in results), results
    # Results journaled before the kill are reported as they were, not run again.
    by_key = {r['call_key']: r for r in results}
    for key, record in before.items():
        assert by_key[key] == record
    ok_keys = [r['call_key'] for r in read_run(run_dir) if r['status'] == 'ok']
    assert sorted(ok_keys) == sorted(expected), 'a call ran twice or is missing'


def test_resume_reattaches_to_the_running_directors(tmp_path: pathlib.Path, http_exchange):
    run_dir = tmp_path / 'run'
    iterations = 6
    exchange = f'http://127.0.0.1:{http_exchange.port}'
    directors = _start_networked_run(run_dir, exchange, iterations)
    manifest = json.loads((run_dir / 'manifest.json').read_text())
    parsl_runs = _parsl_runs(run_dir)
    # The Directors outlive their client and keep working on its calls.
    assert all(d.is_running() for d in directors)
    before = {r['call_key']: r for r in read_run(run_dir)}
    assert all(r['status'] == 'ok' for r in before.values())
    assert len(before) < len(_expected_keys(iterations)), 'the run finished before the kill'

    results, stderr = _resume(run_dir)
    assert 'launch.py: re-attached to 2 running Directors' in stderr
    _assert_union(run_dir, results, before, iterations)
    # The same Directors answered: same agent IDs, no new DataFlowKernel.
    after = json.loads((run_dir / 'manifest.json').read_text())
    assert [d['agent_uid'] for d in after['directors']] == [
        d['agent_uid'] for d in manifest['directors']
    ]
    assert _parsl_runs(run_dir) == parsl_runs
    # The resumed client finished the run: it shut those Directors down.
    _, alive = psutil.wait_procs(directors, timeout=60)
    assert alive == [], 'the re-attached Directors were not shut down'
    assert not parsl_processes_of(run_dir)


def test_resume_starts_a_new_director_where_the_recorded_one_is_gone(
    tmp_path: pathlib.Path,
    http_exchange,
):
    """Client and director-0 killed, director-1 runs on: re-attach to 1, start 1."""
    run_dir = tmp_path / 'run'
    iterations = 6
    exchange = f'http://127.0.0.1:{http_exchange.port}'
    directors = _start_networked_run(run_dir, exchange, iterations)
    (dead,) = [d for d in directors if _journals(d, run_dir, 'director-0')]
    (alive,) = [d for d in directors if _journals(d, run_dir, 'director-1')]
    dead.send_signal(signal.SIGKILL)
    psutil.wait_procs([dead], timeout=30)
    manifest = json.loads((run_dir / 'manifest.json').read_text())
    parsl_runs = _parsl_runs(run_dir)
    before = {r['call_key']: r for r in read_run(run_dir)}

    results, stderr = _resume(run_dir)
    assert 'launch.py: re-attached to 1 running Director, started 1 new Director' in stderr
    _assert_union(run_dir, results, before, iterations)
    after = json.loads((run_dir / 'manifest.json').read_text())
    uids = [[d['agent_uid'] for d in m['directors']] for m in (manifest, after)]
    assert uids[0][0] != uids[1][0], 'director-0 was not replaced'
    assert uids[0][1] == uids[1][1], 'director-1 was not re-attached'
    runs = _parsl_runs(run_dir)
    assert len(runs['director-0']) == len(parsl_runs['director-0']) + 1
    assert runs['director-1'] == parsl_runs['director-1']
    _, still = psutil.wait_procs([alive], timeout=60)
    assert still == [], 'the re-attached Director was not shut down'


def _journals(proc: psutil.Process, run_dir: pathlib.Path, name: str) -> bool:
    """Whether ``proc`` holds the Director ``name``'s journal open."""
    journal = str(run_dir / 'journal' / f'{name}.jsonl')
    return any(f.path == journal for f in proc.open_files())


def _recorded_run(run_dir: pathlib.Path, **fields) -> None:
    """A manifest of a finished one-partition run, written without starting anything."""
    (part,) = make_partitions(run_dir, nodes=1, partitions=1)
    entry = DirectorEntry(partition=part, agent_uid=str(uuid.uuid4()), name='director-0')
    RunManifest(str(run_dir), 'local', 'local', 'local', [entry], **fields).write()


def _resume_plan(run_dir: pathlib.Path, *flags: str):
    return plan_run(build_parser().parse_args(['--resume', str(run_dir), *flags]))


def test_resume_takes_the_recorded_director_options(tmp_path: pathlib.Path):
    recorded = DirectorOptions(workers_per_node=3, supervise=True, journal_sync='off')
    _recorded_run(tmp_path, work={'iterations': 5}, director=recorded.to_record())
    plan = _resume_plan(tmp_path, '--walltime', '01:00:00', '--retries', '4')
    assert plan.iterations == 5
    options = plan.director
    assert (options.workers_per_node, options.supervise, options.journal_sync) == (3, True, 'off')
    # The retries and the allocation are this command's.
    assert options.retries == 4
    assert options.walltime.end is not None
    flags = ('--workers-per-node', '1', '--journal-sync', 'before-answer')
    options = _resume_plan(tmp_path, *flags).director
    assert (options.workers_per_node, options.journal_sync) == (1, 'before-answer')


def test_resume_reads_director_options_of_an_older_manifest(tmp_path: pathlib.Path):
    work = {'iterations': 2, 'workers_per_node': 2, 'supervise': True, 'journal_sync': 'off'}
    _recorded_run(tmp_path, work=work)
    options = _resume_plan(tmp_path).director
    assert (options.workers_per_node, options.supervise, options.journal_sync) == (2, True, 'off')
    assert options.walltime.end is None
