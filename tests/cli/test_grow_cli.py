"""Growth from the command line: the flags, the run's output, the report, cleanup and --resume.

The embedded default (a simulated job) grows on its simulated scheduler:
the same code path as on Slurm (``tests/cluster/test_slurm_grow.py``).
"""

from __future__ import annotations

import json
import pathlib
import time

import pytest

from actors.site.batch_jobs.base import JobRequest
from actors.site.batch_jobs.simulated import SimulatedJobs
from actors.store.jobs import JobJournal
from actors.store.jobs import jobs_dir
from actors.store.jobs import read_job_events
from actors.store.jobs import read_jobs
from actors.store.moves import read_moves
from tests.cli.test_cli import launch

pytestmark = pytest.mark.timeout(60)

GROW = ('--grow-max-jobs', '1', '--grow-nodes', '2', '--grow-target', '2')


def test_bad_growth_flags_are_one_line_naming_the_flag(tmp_path: pathlib.Path):
    done = launch('--static', *GROW, cwd=tmp_path)
    assert done.returncode == 2 and 'drop --static' in done.stderr
    assert 'Traceback' not in done.stderr
    done = launch('--grow-max-jobs', '1', '--grow-nodes', '0', cwd=tmp_path)
    assert done.returncode == 2 and '--grow-nodes must be at least 1 node' in done.stderr
    done = launch('--grow-max-jobs', '1', '--node-hours', '-1', cwd=tmp_path)
    assert done.returncode == 2 and '--node-hours must be' in done.stderr
    done = launch('--grow-max-jobs', '1', '--grow-walltime', 'soon', cwd=tmp_path)
    assert done.returncode == 2 and "walltime 'soon' is not a duration" in done.stderr


@pytest.mark.timeout(240)
def test_the_default_job_grows_and_the_report_draws_the_job(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    done = launch(
        '--simulate-nodes', '1', '--partitions', '1', *GROW,
        '--iterations', '30', '--duration', '1', '--workers-per-node', '2',
        '--run-dir', str(run_dir), '--json',
        cwd=tmp_path, timeout=200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert all(r['ok'] for r in doc['results']) and len(doc['results']) == 31
    (job,) = doc['extra_jobs']
    assert job['nodes'] == ['x1n0', 'x1n1'] and job['ended'] is not None
    assert {r['node'] for r in doc['results']} & {'x1n0', 'x1n1'}
    report = launch('report', str(run_dir), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert 'extra batch jobs:' in report.stdout and 'node-hours' in report.stdout
    assert f'job {job["job"]} (simulated): x1n0, x1n1' in report.stdout
    assert (run_dir / 'report.png').stat().st_size > 0
    cleanup = launch('cleanup', str(run_dir), cwd=tmp_path)
    assert cleanup.returncode == 0 and '0 extra job(s) cancelled' in cleanup.stdout


def _running_job(run_dir: pathlib.Path) -> str:
    """A job the journal says runs (its coordinator died), running on the simulated scheduler."""
    scheduler = SimulatedJobs(str(jobs_dir(run_dir)), start_after=0.0)
    job = scheduler.submit(JobRequest(nodes=2, walltime=3600, name='htc-grow-run'))
    assert scheduler.states([job])[job].phase == 'running'
    journal = JobJournal(run_dir)
    journal.write('submitted', job, scheduler='simulated', nodes_asked=2, walltime=3600)
    journal.write('started', job, nodes=['x1n0', 'x1n1'], started=time.time())
    journal.close()
    return job


def test_cleanup_cancels_a_job_left_running(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    job = _running_job(run_dir)
    done = launch('cleanup', str(run_dir), '--json', cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {'cancelled': [job], 'left': []}
    scheduler = SimulatedJobs(str(jobs_dir(run_dir)))
    assert scheduler.states([job])[job].phase == 'ended'
    assert read_jobs(run_dir)[job].why == 'cleanup'
    missing = launch('cleanup', str(tmp_path / 'nowhere'), cwd=tmp_path)
    assert missing.returncode == 2 and 'is not a run directory' in missing.stderr


@pytest.mark.timeout(240)
def test_resume_takes_back_a_running_job_and_ends_it_with_the_run(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    first = launch(
        '--iterations', '2', '--duration', '0', '--run-dir', str(run_dir), '--json',
        cwd=tmp_path, timeout=200,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    job = _running_job(run_dir)
    resumed = launch('--resume', str(run_dir), '--json', cwd=tmp_path, timeout=200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = [(e['event'], e.get('why')) for e in read_job_events(run_dir) if e['job'] == job]
    assert events[-2:] == [('cancel', 'the run ended'), ('ended', 'the run ended')]
    moves = [m for m in read_moves(run_dir) if m['node'] == 'x1n0']
    assert [m['event'] for m in moves][:1] == ['joined']
    assert SimulatedJobs(str(jobs_dir(run_dir))).states([job])[job].phase == 'ended'
