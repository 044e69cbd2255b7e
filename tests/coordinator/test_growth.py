"""A run outgrows its batch job: the growth rule, the budget, extra jobs on a simulated scheduler.

The runs here are real Directors (local exchange, real worker pools) whose
coordinator asks the simulated scheduler (``actors.site.batch_jobs.simulated``)
for extra jobs; ``tests/cluster/test_slurm_grow.py`` runs the same on the
namespace Slurm cluster.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from typing import Any

import pytest

from actors.calling.calls import call
from actors.common.errors import ConfigurationError
from actors.coordinator.growth import GrowthPolicy
from actors.coordinator.growth import budget_refusal
from actors.coordinator.growth import growth_need
from actors.coordinator.policy import ElasticPolicy
from actors.coordinator.policy import Load
from actors.job.ownership import FREE
from actors.job.ownership import NodeOwnership
from actors.job.ownership import Owner
from actors.job.ownership import OwnershipError
from actors.site.batch_jobs.base import JobRequest
from actors.site.batch_jobs.base import SubmitRefused
from actors.site.batch_jobs.simulated import SimulatedJobs
from actors.store.jobs import JobJournal
from actors.store.jobs import jobs_dir
from actors.store.jobs import read_job_events
from actors.store.jobs import read_jobs
from actors.store.moves import read_moves
from tests.helpers import pools_of
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(30)


# The rule.


def _load(name: str, nodes: int, queued: int = 0, **more: Any) -> Load:
    names = tuple(f'{name}-{i}' for i in range(nodes))
    return Load(name, names, (), queued, workers_per_node=2, **more)


def test_the_run_grows_only_when_its_backlog_cannot_finish_in_time():
    policy = GrowthPolicy(max_jobs=1, target=100.0)
    # 2 nodes x 2 slots finish 400 slot-seconds within 100 s.
    assert (
        growth_need([_load('d0', 2, queued=40, queued_seconds=400.0)], free=0, now=0, policy=policy)
        is None
    )
    need = growth_need(
        [_load('d0', 2, queued=50, queued_seconds=1000.0)], free=0, now=0, policy=policy
    )
    assert need is not None and need.nodes == 3 and '1000 slot-seconds' in need.why
    # A free node counts as held; calls that declare nothing take assumed_call_seconds.
    need = growth_need(
        [_load('d0', 2, queued=13)],
        free=1,
        now=0,
        policy=GrowthPolicy(max_jobs=1, target=100.0, assumed_call_seconds=60),
    )
    assert need is not None and need.nodes == 1


def test_the_walltime_left_is_the_horizon_and_too_late_asks_for_nothing():
    policy = GrowthPolicy(max_jobs=1, target=3600.0)
    loads = [_load('d0', 1, queued=10, queued_seconds=100.0, drain_at=1010.0)]
    need = growth_need(loads, free=0, now=1000.0, policy=policy)
    assert need is not None and need.nodes == 4  # 100 s of work on 2 slots within 10 s
    assert growth_need(loads, free=0, now=1011.0, policy=policy) is None


def test_an_mpi_call_bigger_than_the_free_nodes_is_a_need():
    need = growth_need([_load('d0', 1, mpi_need=3)], free=1, now=0, policy=GrowthPolicy(max_jobs=1))
    assert need is not None and need.nodes == 2 and 'MPI' in need.why


def test_the_budget_charges_every_job_its_whole_walltime():
    assert budget_refusal(spent=1, committed=1, nodes=2, walltime=3600, budget=None) is None
    assert budget_refusal(spent=1, committed=1, nodes=2, walltime=3600, budget=4) is None
    said = budget_refusal(spent=1, committed=1.5, nodes=2, walltime=3600, budget=4)
    assert said is not None and 'budget (4)' in said and '2.00 for a job of 2 node(s)' in said


def test_bad_growth_bounds_name_their_flag():
    with pytest.raises(ConfigurationError, match='--grow-nodes must be at least 1'):
        GrowthPolicy(max_jobs=1, nodes_per_job=0)
    with pytest.raises(ConfigurationError, match='--grow-max-jobs must be an integer'):
        GrowthPolicy(max_jobs=-1)
    with pytest.raises(ConfigurationError, match='--node-hours must be'):
        GrowthPolicy(max_jobs=1, node_hours=0)
    with pytest.raises(ConfigurationError, match="scheduler 'lsf'"):
        GrowthPolicy(scheduler='lsf')
    with pytest.raises(ConfigurationError, match='longer than the 60s its nodes drain'):
        GrowthPolicy(job_walltime=30)


# The parts.


def test_nodes_of_an_extra_job_join_free_and_leave_only_free():
    view = NodeOwnership(keep_history=True)
    view.join('x1n0', '1', 'job 1 started')
    assert view.owner('x1n0') == FREE and view.jobs() == {'x1n0': '1'}
    view.change('x1n0', Owner('pool', 'd0'), 'free node')
    with pytest.raises(OwnershipError, match='only a free node leaves'):
        view.leave('x1n0', 'idle')
    view.change('x1n0', FREE, 'released')
    view.leave('x1n0', 'job 1 idle')
    assert 'x1n0' not in view and view.history is not None
    assert [c.event for c in view.history] == ['joined', 'reclaimed', 'free', 'left']


def test_the_simulated_scheduler_queues_starts_refuses_and_ends_jobs(tmp_path: pathlib.Path):
    jobs = SimulatedJobs(str(tmp_path), start_after=0.0, capacity=3)
    first = jobs.submit(JobRequest(nodes=2, walltime=60, name='a'))
    second = jobs.submit(JobRequest(nodes=2, walltime=60, name='b'))
    states = jobs.states([first, second])
    assert states[first].phase == 'running' and states[first].nodes == ('x1n0', 'x1n1')
    assert states[second].phase == 'pending' and states[second].reason == 'Resources'
    with pytest.raises(SubmitRefused, match="invalid account 'refused'"):
        jobs.submit(JobRequest(nodes=1, walltime=60, name='c', account='refused'))
    with pytest.raises(SubmitRefused, match='exceeds the 3'):
        jobs.submit(JobRequest(nodes=4, walltime=60, name='c'))
    # Another process (scancel) sees the same queue; the waiting job starts.
    SimulatedJobs(str(tmp_path)).end(first, 'killed')
    states = jobs.states([first, second])
    assert states[first].phase == 'ended' and states[first].reason == 'killed'
    assert states[second].phase == 'running'
    assert jobs.states(['99'])['99'].phase == 'ended'


def test_the_jobs_journal_folds_into_records_with_node_hours(tmp_path: pathlib.Path):
    journal = JobJournal(tmp_path)
    journal.write('submitted', '7', scheduler='slurm', nodes_asked=2, walltime=600)
    journal.write('started', '7', nodes=['n3', 'n4'], started=1000.0)
    journal.write('ended', '7', why='idle')
    journal.close()
    record = read_jobs(tmp_path)['7']
    assert record.nodes == ['n3', 'n4'] and record.why == 'idle'
    record.ended = 1000.0 + 1800
    assert record.node_hours() == pytest.approx(1.0)


# Real Directors and a simulated scheduler.


def _growth(**changes: Any) -> GrowthPolicy:
    values: dict[str, Any] = {
        'max_jobs': 1,
        'nodes_per_job': 2,
        'target': 2.0,
        'grow_after': 0.0,
        'shrink_after': 1.0,
        'retry_after': 3600.0,
        'simulated_start_after': 0.0,
    }
    values.update(changes)
    return GrowthPolicy(**values)


POLICY = ElasticPolicy(floor=1, patience=0.5, settle=1.0, period=0.2)


def _batch(manager: Any, handle: Any, calls: int, duration: float) -> Any:
    return call(manager, handle, 'md_sim_batch', iterations=calls, params={'duration': duration})


async def _until(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f'not within {timeout}s')


def _events(run_dir: pathlib.Path, job: str | None = None) -> list[str]:
    """The jobs journal's events (but the run's ``begin``), of ``job`` if given."""
    return [
        e['event']
        for e in read_job_events(run_dir)
        if e['event'] != 'begin' and (job is None or e['job'] == job)
    ]


@pytest.mark.timeout(180)
def test_a_run_grows_into_an_extra_job_then_gives_it_back(run_dir: pathlib.Path):
    """One node, too much work: a 2-node job joins, runs calls, and is cancelled once idle."""

    async def main():
        async with running_directors(
            run_dir, nodes=1, partitions=1, policy=POLICY, growth=_growth()
        ) as (manager, handles, _):
            results = await _batch(manager, handles[0], 24, 1.0)
            # Idle now: the nodes go back and the job is cancelled.
            await _until(lambda: asyncio.sleep(0, 'ended' in _events(run_dir)), timeout=60)
            status = await call(manager, handles[0], 'status')
            layout = await handles.coordinator.node_layout()
            return results, status, layout

    results, status, layout = asyncio.run(main())
    assert all(r.ok for r in results) and len(results) == 24
    extra = {r.node for r in results} - {'sim-node-001'}
    assert extra and extra <= {'x1n0', 'x1n1'}, {r.node for r in results}
    assert status.nodes == ['sim-node-001']
    assert layout['extra']['jobs'][0]['state'] == 'ended'
    record = read_jobs(run_dir)['1']
    assert record.why == 'idle' and record.cancel_asked and record.node_hours() > 0
    events = [m['event'] for m in read_moves(run_dir) if m['node'].startswith('x1')]
    assert events.count('joined') == 2 and events.count('left') == 2
    assert 'reclaimed' in events  # given to the Director like any free node
    assert not [p for p in pools_of(run_dir) if 'x1n' in ' '.join(p.environ().values())]


@pytest.mark.timeout(180)
def test_an_extra_job_killed_mid_call_loses_no_call(run_dir: pathlib.Path):
    """``scancel`` of the extra job while calls run there: they run again on the run's node."""

    async def main():
        growth = _growth(shrink_after=3600.0)
        async with running_directors(
            run_dir, nodes=1, partitions=1, policy=POLICY, growth=growth
        ) as (manager, handles, _):
            calls = asyncio.ensure_future(_batch(manager, handles[0], 16, 3.0))

            async def serving_extra() -> bool:
                status = await call(manager, handles[0], 'status')
                return {'x1n0', 'x1n1'} <= set(status.nodes) and status.running >= 4

            await _until(serving_extra, timeout=60)
            SimulatedJobs(str(jobs_dir(run_dir))).end('1', 'killed by the test')
            results = await calls
            status = await call(manager, handles[0], 'status')
            return results, status

    results, status = asyncio.run(main())
    assert all(r.ok for r in results) and len({r.call_id for r in results}) == 16
    assert any(r.attempts > 1 for r in results)  # some ran again, and say so
    # The killed job's nodes left the Director (the need may have asked for another job).
    assert not {'x1n0', 'x1n1'} & set(status.nodes)
    assert read_jobs(run_dir)['1'].why == 'killed by the test'


@pytest.mark.timeout(120)
def test_the_budget_and_a_refusal_stop_a_submission_and_the_run_goes_on(run_dir: pathlib.Path):
    async def main():
        growth = _growth(node_hours=0.01)  # a 2-node hour-long job would cost 2
        async with running_directors(
            run_dir, nodes=1, partitions=1, policy=POLICY, growth=growth
        ) as (manager, handles, _):
            results = await _batch(manager, handles[0], 12, 1.0)
            layout = await handles.coordinator.node_layout()
            return results, layout

    results, layout = asyncio.run(main())
    assert all(r.ok for r in results)
    assert _events(run_dir) == ['refused']
    assert 'node-hour budget (0.01) would be exceeded' in layout['extra']['refused']

    refused = run_dir.parent / 'refused'
    refused.mkdir()

    async def refused_run():
        async with running_directors(
            refused, nodes=1, partitions=1, policy=POLICY, growth=_growth(account='refused')
        ) as (manager, handles, _):
            return await _batch(manager, handles[0], 12, 1.0)

    assert all(r.ok for r in asyncio.run(refused_run()))
    (line,) = [e for e in read_job_events(refused) if e['event'] == 'refused']
    assert 'the scheduler refused an extra job: sbatch: error: invalid account' in line['why']


@pytest.mark.timeout(120)
def test_a_pending_job_does_not_hold_the_run_and_is_cancelled_when_it_ends(run_dir: pathlib.Path):
    # Another user's job holds the simulated cluster's only 2 free nodes.
    cluster = SimulatedJobs(str(jobs_dir(run_dir)), start_after=0.0, capacity=2)
    other = cluster.submit(JobRequest(nodes=2, walltime=3600, name='someone else'))

    async def main():
        growth = _growth(simulated_capacity=2)
        async with running_directors(
            run_dir, nodes=1, partitions=1, policy=POLICY, growth=growth
        ) as (manager, handles, _):
            results = await _batch(manager, handles[0], 12, 1.0)
            layout = await handles.coordinator.node_layout()
            return results, layout

    results, layout = asyncio.run(main())
    cluster.cancel(other)
    assert all(r.ok for r in results) and {r.node for r in results} == {'sim-node-001'}
    (job,) = layout['extra']['jobs']
    assert job['state'] == 'pending'
    assert _events(run_dir, job['job']) == ['submitted', 'cancel', 'ended']
    assert read_jobs(run_dir)[job['job']].node_hours() == 0


def test_after_a_restart_running_jobs_rejoin_and_waiting_ones_are_cancelled(tmp_path):
    """``start``: what a restarted coordinator (or ``--resume``) does with the journal."""
    from actors.coordinator.extra_jobs import ExtraJobs

    scheduler = SimulatedJobs(str(jobs_dir(tmp_path)), start_after=0.0, capacity=2)
    journal = JobJournal(tmp_path)
    running = scheduler.submit(JobRequest(nodes=2, walltime=3600, name='run'))
    waiting = scheduler.submit(JobRequest(nodes=2, walltime=3600, name='run'))
    gone = scheduler.submit(JobRequest(nodes=1, walltime=3600, name='run'))
    for job in (running, waiting, gone):
        journal.write('submitted', job, scheduler='simulated', nodes_asked=2, walltime=3600)
    journal.write('started', running, nodes=['x1n0', 'x1n1'], started=time.time())
    scheduler.end(gone, 'cancelled by the user')

    view = NodeOwnership()
    extra = ExtraJobs(_growth(), scheduler, journal, view, name='run')
    asyncio.run(extra.start(str(tmp_path), hold_until=time.monotonic() + 60))
    journal.close()
    assert view.jobs() == {'x1n0': running, 'x1n1': running}
    assert view.nodes('free') == ['x1n0', 'x1n1']
    # Not given out before the Directors that may hold them have answered.
    assert all(view.retry_at(n) > time.monotonic() + 30 for n in ('x1n0', 'x1n1'))
    assert extra.gone('x1n0') is False
    states = scheduler.states([running, waiting, gone])
    assert [states[j].phase for j in (running, waiting, gone)] == ['running', 'ended', 'ended']
    records = read_jobs(tmp_path)
    assert records[waiting].why == 'pending at resume' and records[waiting].cancel_asked
    assert records[gone].why == 'cancelled by the user' and not records[gone].cancel_asked
    assert records[running].ended is None


# MPI calls and extra jobs on Slurm: one step, one job.


def test_an_srun_mpi_call_takes_nodes_of_one_job_the_runs_own_first():
    from actors.director.node_pools import nodes_for_mpi

    jobs = {'x1n0': '12', 'x1n1': '12', 'x2n0': '13'}
    candidates = ['x1n0', 'a', 'x1n1', 'x2n0', 'b']
    assert nodes_for_mpi(candidates, 2, jobs.get, one_job=True) == ['a', 'b']
    assert nodes_for_mpi(candidates, 3, jobs.get, one_job=True) == []
    assert nodes_for_mpi(['x1n0', 'a', 'x1n1'], 2, jobs.get, one_job=True) == ['x1n0', 'x1n1']
    # mpiexec (hydra over ssh, PALS) reaches nodes of any job.
    assert nodes_for_mpi(candidates, 3, jobs.get, one_job=False) == ['x1n0', 'a', 'x1n1']


def test_the_srun_prefix_of_an_extra_jobs_nodes_names_that_job():
    from actors.tools.resources import MPIResources

    resources = MPIResources(num_nodes=2, ranks_per_node=2)
    own = resources.environment('srun', ['n1', 'n2'])
    extra = resources.environment('srun', ['n3', 'n4'], job='12')
    assert own['PARSL_MPI_PREFIX'].startswith('srun ') and '--jobid' not in own['PARSL_MPI_PREFIX']
    assert extra['PARSL_MPI_PREFIX'].startswith('srun --jobid=12 --overlap ')
    assert extra['PARSL_MPI_PREFIX'][len('srun --jobid=12 --overlap ') :] == own[
        'PARSL_MPI_PREFIX'
    ][5:].replace('n1,n2', 'n3,n4')
    assert (
        '--jobid'
        not in resources.environment('mpiexec', ['n3', 'n4'], job='12')['PARSL_MPI_PREFIX']
    )


@pytest.mark.timeout(180)
def test_an_extra_jobs_nodes_drain_before_its_walltime_and_no_call_is_lost(run_dir: pathlib.Path):
    """A 14-second extra job: its nodes go back 7 s before its end, their calls done elsewhere."""

    async def main():
        growth = _growth(job_walltime=14.0, drain_margin=7.0, shrink_after=3600.0, max_jobs=1)
        async with running_directors(
            run_dir, nodes=1, partitions=1, policy=POLICY, growth=growth
        ) as (manager, handles, _):
            results = await _batch(manager, handles[0], 40, 1.5)
            return results

    results = asyncio.run(main())
    assert all(r.ok for r in results) and len({r.call_id for r in results}) == 40
    first = read_jobs(run_dir)['1']
    assert first.why == 'walltime' and first.cancel_asked
    assert first.started is not None and first.ended is not None
    assert first.ended < first.started + first.walltime  # given back before the scheduler's end
    on_first = [r for r in results if r.node in first.nodes]
    assert on_first and all(r.end <= first.ended for r in on_first)


@pytest.mark.timeout(180)
def test_an_mpi_call_bigger_than_the_run_grows_it_and_runs_on_the_new_nodes(run_dir: pathlib.Path):
    """One node held, a 3-node MPI call: a 2-node job joins and the call runs across both jobs."""

    async def main():
        async with running_directors(
            run_dir, nodes=1, partitions=1, policy=POLICY, growth=_growth()
        ) as (manager, handles, _):
            return await call(
                manager,
                handles[0],
                'call_tool',
                'mpi_probe',
                {'duration': 0.5, 'num_nodes': 3, 'ranks_per_node': 1},
            )

    result = asyncio.run(main())
    assert result.ok, result.error_message
    assert sorted(result.nodes) == ['sim-node-001', 'x1n0', 'x1n1']
    (line,) = [e for e in read_job_events(run_dir) if e['event'] == 'submitted']
    assert 'an MPI call waits for 2 node(s) more than are free' in line['why']


class _FlakyScheduler(SimulatedJobs):
    """The simulated scheduler whose next submission times out (outcome unknown)."""

    fail_next: bool = False

    def submit(self, request: JobRequest) -> str:
        if _FlakyScheduler.fail_next:
            _FlakyScheduler.fail_next = False
            raise TimeoutError('sbatch did not answer within 30s')
        return super().submit(request)


def test_extra_jobs_survive_a_failed_submission_and_ask_again_after_a_queued_job_ended(
    tmp_path: pathlib.Path,
):
    from actors.coordinator.extra_jobs import ExtraJobs
    from actors.coordinator.growth import Need

    async def main():
        scheduler = _FlakyScheduler(str(jobs_dir(tmp_path)), start_after=3600.0)
        journal = JobJournal(tmp_path)
        extra = ExtraJobs(_growth(max_jobs=2, retry_after=0.0), scheduler, journal,
                          NodeOwnership(), name='run')  # fmt: skip
        await extra.start(str(tmp_path), hold_until=0.0)
        need = Need(2, 'backlog')
        _FlakyScheduler.fail_next = True
        await extra.grow(need, [], now=1.0)  # one line, no exception, nothing recorded
        assert 'a job named run may be queued' in extra.refused and not extra.jobs
        await extra.grow(need, [], now=2.0)
        (first,) = extra.jobs
        await extra.grow(need, [], now=3.0)  # one job in the queue at a time
        assert list(extra.jobs) == [first]
        scheduler.end(first, 'cancelled by the user')  # it never started
        await extra.look()
        await extra.grow(need, [], now=4.0)
        assert len(extra.jobs) == 2 and extra.pending()[0].job != first
        await extra.close()
        journal.close()
        return extra

    extra = asyncio.run(main())
    assert all(j.phase == 'ended' for j in extra.jobs.values())
    assert _events(tmp_path) == [
        'refused', 'submitted', 'ended', 'submitted', 'cancel', 'ended'
    ]  # fmt: skip
