"""A run outgrows its Slurm allocation on the real cluster: extra jobs, their nodes, their faults.

Each test runs a ``grow-*`` scenario of ``tests.slurm_scenarios`` in a 2-node
``salloc`` on the login host with 4 nodes' worth of work: the coordinator
submits a 2-node job through Parsl's ``SlurmProvider``, the Director starts a
pool on each of its nodes as a step of that job (``srun --jobid``), and the
job goes back when idle, is cancelled by the user, is stopped by the budget,
or waits while the cluster is full.
"""

from __future__ import annotations

import collections
import json
import pathlib
import sys

import pytest

from tests.conftest import REPO
from tests.pool_placement import misplaced
from tests.pool_placement import pool_placements
from tests.slurm_cluster import NODES
from tests.slurm_cluster import on_host
from tests.slurm_cluster import slurm_cluster  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures('slurm_cluster')]

PYTHON = sys.executable


def _scenario(name: str, run_dir: pathlib.Path, timeout: float = 250) -> dict:
    done = on_host(
        'ctl',
        ['salloc', '-N', '2', PYTHON, '-m', 'tests.slurm_scenarios', name, str(run_dir)],
        cwd=REPO,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout[done.stdout.index('{') :])


def _squeue_jobs() -> list[str]:
    listed = on_host('ctl', ['squeue', '-h', '-o', '%i %j %T'], timeout=30)
    return [line for line in listed.stdout.splitlines() if 'htc-grow' in line]


def _events(found: dict) -> list[str]:
    return [e['event'] for e in found['job_events'] if e['event'] != 'begin']


def _ok_once(found: dict, calls: int) -> None:
    results = found['results']
    assert len(results) == calls and all(r['ok'] for r in results), results
    assert len({r['call_id'] for r in results}) == calls


@pytest.mark.timeout(300)
def test_the_run_grows_into_a_second_job_and_cancels_it_when_the_load_ends(tmp_path):
    run_dir = tmp_path / 'run'
    found = _scenario('grow-idle', run_dir)
    _ok_once(found, 40)
    own = set(found['nodes'])
    (job,) = found['layout']['extra']['jobs']
    extra = set(job['nodes'])
    assert len(own) == 2 and len(extra) == 2 and not own & extra and own | extra == set(NODES)
    # Calls ran on the extra job's nodes, each pool placed on its own node.
    assert {r['node'] for r in found['results']} & extra
    placements = [p for p in pool_placements(run_dir) if p.meant_for is not None]
    assert misplaced(placements) == []
    assert {p.hostname for p in placements} == own | extra
    # Once idle its nodes went back and the job was cancelled through the provider.
    assert _events(found) == ['submitted', 'started', 'cancel', 'ended']
    assert found['job_events'][-1]['why'] == 'idle' and found['job_events'][-1]['node_hours'] > 0
    events = collections.Counter(m['event'] for m in found['moves'] if m['node'] in extra)
    assert events['joined'] == 2 and events['left'] == 2
    assert set(found['status']['nodes']) == own
    assert _squeue_jobs() == []


@pytest.mark.timeout(300)
def test_scancel_of_the_extra_job_mid_call_loses_no_call(tmp_path):
    found = _scenario('grow-scancel', tmp_path / 'run')
    _ok_once(found, 40)
    killed = found['scancel']
    extra = {n for j in found['layout']['extra']['jobs'] if j['job'] == killed for n in j['nodes']}
    # Calls that were running on the killed job's nodes ran again elsewhere, counted.
    rerun = [r for r in found['results'] if r['attempts'] > 1]
    assert rerun and all(r['node'] not in extra for r in rerun)
    ended = [e for e in found['job_events'] if e['job'] == killed and e['event'] == 'ended']
    assert ended and 'cancel' not in [e['event'] for e in found['job_events'] if e['job'] == killed]
    assert not extra & set(found['status']['nodes'])
    assert _squeue_jobs() == []


@pytest.mark.timeout(300)
def test_the_node_hour_budget_stops_the_submission(tmp_path):
    found = _scenario('grow-budget', tmp_path / 'run')
    _ok_once(found, 40)
    assert _events(found) == ['refused']
    (refused,) = [e for e in found['job_events'] if e['event'] == 'refused']
    assert 'node-hour budget (0.05) would be exceeded' in refused['why']
    assert {r['node'] for r in found['results']} <= set(found['nodes'])
    assert _squeue_jobs() == []


@pytest.mark.timeout(300)
def test_a_pending_job_does_not_hang_the_run_and_is_cancelled_at_its_end(tmp_path):
    # Another user's job holds the 2 nodes the run's allocation leaves free.
    held = on_host(
        'ctl',
        [
            'sbatch',
            '--parsable',
            '-N',
            '2',
            '--exclusive',
            '--job-name',
            'someone-else',
            '--wrap',
            'sleep 600',
        ],
        cwd=tmp_path,
        timeout=30,
    )
    assert held.returncode == 0, held.stderr
    other = held.stdout.strip().split(';')[0]
    try:
        found = _scenario('grow-pending', tmp_path / 'run')
    finally:
        on_host('ctl', ['scancel', other], timeout=30)
    _ok_once(found, 40)
    assert {r['node'] for r in found['results']} <= set(found['nodes'])
    (job,) = found['layout']['extra']['jobs']
    assert job['state'] == 'pending'
    assert _events(found) == ['submitted', 'cancel', 'ended']
    assert _squeue_jobs() == []
