"""The run's extra batch jobs: asked for when the work outgrows the run, given back when idle.

[`ExtraJobs`][actors.coordinator.extra_jobs.ExtraJobs] is the coordinator's
part that talks to the scheduler (``actors.site.batch_jobs``). Each step it

* looks at its jobs: a job that started brings its nodes into the run's
  ``NodeOwnership`` as ``free`` (``joined``), where the coordinator gives
  them to the Directors that need them as it gives any free node; a job that
  ended (its walltime, ``scancel``) takes its nodes with it;
* asks for a job when the growth rule (``actors.coordinator.growth``) has
  said for ``grow_after`` seconds that the run lacks nodes, within the
  user's bounds (``max_jobs``, the node-hour budget), one pending at a time;
* says which nodes must go back: those of a job whose walltime is near
  (``drain_margin``: their calls finish or move elsewhere before it ends) or
  that ended, and those idle for ``shrink_after`` seconds while nothing lacks
  nodes;
* cancels a job once all its nodes are ``free`` again (they ``left``).

Every event is a line of the jobs journal (``actors.store.jobs``), written
before the coordinator goes on. The run's own job is never one of these.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from collections.abc import Sequence

from actors.coordinator.growth import GrowthPolicy
from actors.coordinator.growth import Need
from actors.coordinator.growth import budget_refusal
from actors.coordinator.policy import Load
from actors.job.ownership import NodeOwnership
from actors.site.batch_jobs.base import BatchJobs
from actors.site.batch_jobs.base import JobRequest
from actors.site.batch_jobs.base import JobState
from actors.site.batch_jobs.base import SubmitRefused
from actors.site.batch_jobs.simulated import SimulatedJobs
from actors.store.jobs import JobJournal
from actors.store.jobs import JobRecord
from actors.store.jobs import jobs_dir
from actors.store.jobs import read_jobs

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Job:
    """One extra job while the run knows it (its record, and what the coordinator does with it)."""

    record: JobRecord
    leaving: str = ''
    """Why its nodes go back (``''``: they stay)."""


class ExtraJobs:
    """The run's extra batch jobs and their nodes.

    Args:
        policy: The growth policy (bounds, walltime, queue, account).
        batch: The scheduler.
        journal: The jobs journal.
        job: The coordinator's view of the run's nodes (nodes join and leave it).
        name: The jobs' name in the scheduler's queue (carries the run's id).

    """

    def __init__(
        self,
        policy: GrowthPolicy,
        batch: BatchJobs,
        journal: JobJournal,
        job: NodeOwnership,
        name: str,
    ) -> None:
        self.policy = policy
        self.batch = batch
        self.journal = journal
        self.job = job
        self.name = name
        self.jobs: dict[str, _Job] = {}
        self.need: Need | None = None
        self.refused = ''
        """The scheduler's last refusal (or the budget's), for ``status``."""
        self._need_since: float | None = None
        self._retry_at = 0.0
        self._idle_since: dict[str, float] = {}
        self._started_at = time.time()

    # What the coordinator asks.

    def job_of(self, node: str) -> str | None:
        """The extra job ``node`` belongs to (``None``: the run's own)."""
        return self.job.job(node) if node in self.job else None

    def may_give(self, node: str) -> bool:
        """Whether a free node may go to a Director (not one whose job is leaving)."""
        owner = self.job_of(node)
        return owner is None or (owner in self.jobs and not self.jobs[owner].leaving)

    def running(self) -> list[JobRecord]:
        """The extra jobs that run now."""
        return [
            j.record
            for j in self.jobs.values()
            if j.record.started is not None and j.record.ended is None
        ]

    def pending(self) -> list[JobRecord]:
        """The extra jobs waiting in the scheduler's queue."""
        return [j.record for j in self.jobs.values() if j.record.started is None]

    def report(self) -> dict[str, object]:
        """The jobs, their nodes and node-hours (the coordinator's ``node_layout``)."""
        now = time.time()
        return {
            'jobs': [
                {
                    'job': j.record.job,
                    'state': _phase(j.record),
                    'nodes': list(j.record.nodes),
                    'nodes_asked': j.record.nodes_asked,
                    'node_hours': round(j.record.node_hours(now), 4),
                    'leaving': j.leaving,
                }
                for j in self.jobs.values()
            ],
            'need': None if self.need is None else self.need.why,
            'refused': self.refused,
        }

    # One step.

    async def look(self, now: float) -> None:
        """Ask the scheduler about the jobs that have not ended; take in started ones' nodes."""
        live = [j for j, known in self.jobs.items() if known.record.ended is None]
        if not live:
            return
        try:
            states = await asyncio.to_thread(self.batch.states, live)
        except Exception as e:
            logger.warning('extra jobs: the scheduler did not say how they are: %s', e)
            return
        for job_id, state in states.items():
            self._follow(self.jobs[job_id], state, now)

    def _follow(self, known: _Job, state: JobState, now: float) -> None:
        record = known.record
        if state.phase == 'running' and record.started is None:
            record.started, record.nodes = time.time(), list(state.nodes)
            self.journal.write('started', record.job, nodes=record.nodes, started=record.started)
            logger.info('extra job %s started on %s', record.job, ', '.join(record.nodes))
            for node in record.nodes:
                if node not in self.job:
                    self.job.join(node, record.job, f'job {record.job} started')
        elif state.phase == 'ended':
            self._ended(known, state.reason or 'ended by the scheduler')
        elif state.phase == 'pending' and self.policy.pending_limit is not None:
            if time.time() - record.submitted > self.policy.pending_limit:
                self._cancel(known, 'pending too long')
        if record.started is not None and record.ended is None and not known.leaving:
            end = record.started + record.walltime
            if end - self.policy.drain_margin <= time.time():
                known.leaving = 'walltime'
                logger.info(
                    'extra job %s ends in %.0fs: its nodes drain', record.job, end - time.time()
                )

    def _ended(self, known: _Job, why: str) -> None:
        record = known.record
        if record.ended is not None:
            return
        record.ended, record.why = time.time(), why
        known.leaving = known.leaving or why
        self.journal.write('ended', record.job, why=why, node_hours=round(record.node_hours(), 6))
        logger.info(
            'extra job %s ended (%s): %.3f node-hour(s)', record.job, why, record.node_hours()
        )

    async def grow(self, need: Need | None, loads: Sequence[Load], now: float) -> None:
        """Ask for a job if the run has lacked nodes for ``grow_after`` seconds, within bounds."""
        self.need = need
        if need is None:
            self._need_since = None
            return
        if self._need_since is None:
            self._need_since = now
        if now - self._need_since < self.policy.grow_after or now < self._retry_at:
            return
        if self.pending():
            return  # one job in the queue at a time: the next may not be needed
        live = [j for j in self.jobs.values() if j.record.ended is None]
        if len(live) >= self.policy.max_jobs:
            return
        request = JobRequest(
            nodes=self.policy.nodes_per_job,
            walltime=self.policy.job_walltime,
            name=self.name,
            queue=self.policy.queue,
            account=self.policy.account,
        )
        refusal = budget_refusal(
            spent=self._spent(loads, now),
            committed=self._committed(now),
            nodes=request.nodes,
            walltime=request.walltime,
            budget=self.policy.node_hours,
        )
        if refusal is not None:
            self._refuse(f'no extra job: {refusal}')
            return
        try:
            job_id = await asyncio.to_thread(self.batch.submit, request)
        except SubmitRefused as e:
            self._refuse(f'the scheduler refused an extra job: {e}')
            return
        record = JobRecord(
            job=job_id,
            scheduler=self.batch.kind,
            nodes_asked=request.nodes,
            walltime=request.walltime,
            submitted=time.time(),
        )
        self.jobs[job_id] = _Job(record)
        self.refused = ''
        self.journal.write(
            'submitted',
            job_id,
            scheduler=record.scheduler,
            nodes_asked=request.nodes,
            walltime=request.walltime,
            name=request.name,
            queue=request.queue,
            account=request.account,
            why=need.why,
        )
        logger.info(
            'extra job %s asked for: %d node(s) for %.0fs (%s)',
            job_id,
            request.nodes,
            request.walltime,
            need.why,
        )

    def _refuse(self, message: str) -> None:
        if message != self.refused:
            logger.warning('%s', message)
            self.journal.write('refused', '', why=message)
        self.refused = message
        self._retry_at = time.monotonic() + self.policy.retry_after

    def _spent(self, loads: Sequence[Load], now: float) -> float:
        """Node-hours used so far: the run's own nodes since it began, and every extra job's."""
        extra = sum(j.record.node_hours() for j in self.jobs.values())
        own = sum(1 for node in self.job.nodes() if self.job.job(node) is None)
        ends = [load.drain_at for load in loads if load.drain_at is not None]
        # The run's own job is paid to its end whatever happens: charge it so.
        until = max(min(ends), time.time()) if ends else time.time()
        return extra + own * (until - self._started_at) / 3600.0

    def _committed(self, now: float) -> float:
        """Node-hours the live extra jobs may still use (each to its walltime)."""
        total = 0.0
        for known in self.jobs.values():
            record = known.record
            if record.ended is not None:
                continue
            if record.started is None:
                total += record.nodes_asked * record.walltime / 3600.0
            else:
                left = record.started + record.walltime - time.time()
                total += len(record.nodes) * max(left, 0.0) / 3600.0
        return total

    def to_return(
        self, loads: Sequence[Load], owners: Mapping[str, str], now: float
    ) -> dict[str, list[str]]:
        """Extra nodes that Directors must give back now -> by Director.

        Those of leaving jobs always; idle ones after ``shrink_after`` seconds
        while the run lacks nothing.

        Args:
            loads: The Directors' loads (their idle nodes).
            owners: Each extra node a Director owns -> that Director.
            now: ``time.monotonic()``.

        """
        idle = {node for load in loads for node in load.idle}
        back: dict[str, list[str]] = {}
        for node, director in owners.items():
            job_id = self.job_of(node)
            if job_id is None:
                continue
            known = self.jobs.get(job_id)
            leaving = known is None or bool(known.leaving)
            if node in idle and self.need is None:
                self._idle_since.setdefault(node, now)
            else:
                self._idle_since.pop(node, None)
            idle_long = now - self._idle_since.get(node, now) >= self.policy.shrink_after
            if leaving or (node in idle and self.need is None and idle_long):
                back.setdefault(director, []).append(node)
        return back

    def leaving(self, node: str) -> bool:
        """Whether ``node``'s job is leaving (its nodes go, whatever runs there)."""
        job_id = self.job_of(node)
        known = self.jobs.get(job_id) if job_id is not None else None
        return job_id is not None and (known is None or bool(known.leaving))

    async def part_with(self, now: float) -> None:
        """Let go of free nodes nobody needs; cancel a job once all its nodes are free."""
        for job_id, known in self.jobs.items():
            record = known.record
            if record.started is None:
                continue
            nodes = [n for n in record.nodes if n in self.job]
            free = [n for n in nodes if self.job.owner(n).role == 'free']
            idle_long = all(
                now - self._idle_since.setdefault(n, now) >= self.policy.shrink_after for n in free
            )
            if (
                not known.leaving
                and free
                and len(free) == len(nodes)
                and self.need is None
                and idle_long
            ):
                known.leaving = 'idle'
            if not known.leaving or len(free) != len(nodes):
                continue
            for node in free:
                self.job.leave(node, f'job {job_id} {known.leaving}')
                self._idle_since.pop(node, None)
            if record.ended is None:
                await asyncio.to_thread(self._cancel, known, known.leaving)

    def _cancel(self, known: _Job, why: str) -> None:
        record = known.record
        if not record.cancel_asked:
            record.cancel_asked = True
            self.journal.write('cancel', record.job, why=why)
        try:
            self.batch.cancel(record.job)
        except Exception as e:
            logger.warning('extra job %s: cancel failed: %s', record.job, e)
            return
        self._ended(known, why)

    async def close(self) -> None:
        """The run ends: cancel every job that has not ended (pending ones too)."""
        for known in list(self.jobs.values()):
            if known.record.ended is None:
                await asyncio.to_thread(self._cancel, known, 'the run ended')

    # After a restart.

    async def take_back(self, run_dir: str) -> None:
        """Re-adopt the journal's jobs that still run; cancel those that wait in the queue."""
        records = await asyncio.to_thread(read_jobs, run_dir)
        live = {j: r for j, r in records.items() if r.ended is None}
        if not live:
            return
        try:
            states = await asyncio.to_thread(self.batch.states, list(live))
        except Exception as e:
            logger.warning('extra jobs of the last run: the scheduler did not answer: %s', e)
            return
        for job_id, record in live.items():
            known = _Job(record)
            self.jobs[job_id] = known
            state = states.get(job_id, JobState('ended'))
            if state.phase == 'running' and record.started is not None:
                logger.info('extra job %s still runs: its nodes rejoin the run', job_id)
                for node in state.nodes:
                    if node not in self.job:
                        self.job.join(node, job_id, f'job {job_id} re-adopted')
            elif state.phase in {'running', 'pending'}:
                record.started = None
                self._follow(known, state, time.monotonic())
                if state.phase == 'pending':
                    await asyncio.to_thread(self._cancel, known, 'pending at resume')
            else:
                self._ended(known, state.reason or 'ended while the run was down')


def open_scheduler(policy: GrowthPolicy, run_dir: str) -> BatchJobs:
    """The scheduler extra jobs go to: the site's, through Parsl's provider, or a simulated one."""
    if policy.scheduler == 'simulated':
        return SimulatedJobs(
            str(jobs_dir(run_dir)),
            start_after=policy.simulated_start_after,
            capacity=policy.simulated_capacity,
            owner_mark=os.path.abspath(run_dir),
        )
    return _provider_jobs(policy.scheduler, run_dir)


def _provider_jobs(scheduler: str, run_dir: str) -> BatchJobs:
    # Parsl only where a real scheduler is used: the coordinator's process stays light.
    from actors.site.batch_jobs.parsl_jobs import batch_jobs_for

    return batch_jobs_for(scheduler, str(jobs_dir(run_dir) / 'scripts'))


def end_leftover_jobs(run_dir: str) -> list[JobRecord]:
    """Cancel the run's extra jobs that the journal says may still run; the jobs it ended.

    What ``launch.py cleanup`` does, and a run does once its coordinator
    stopped (had it died, its jobs would hold their nodes to their walltime).
    """
    ended = []
    live = [record for record in read_jobs(run_dir).values() if record.ended is None]
    if not live:
        return []
    journal = JobJournal(run_dir)
    try:
        for record in live:
            if record.scheduler == 'simulated':
                batch: BatchJobs = SimulatedJobs(
                    str(jobs_dir(run_dir)), owner_mark=os.path.abspath(run_dir)
                )
            else:
                batch = _provider_jobs(record.scheduler, run_dir)
            try:
                batch.cancel(record.job)
            except Exception as e:
                logger.warning('extra job %s: cancel failed: %s', record.job, e)
                continue
            journal.write('cancel', record.job, why='cleanup')
            record.ended, record.why = time.time(), 'cleanup'
            journal.write('ended', record.job, why='cleanup', node_hours=record.node_hours())
            ended.append(record)
    finally:
        journal.close()
    return ended


def _phase(record: JobRecord) -> str:
    if record.ended is not None:
        return 'ended'
    return 'pending' if record.started is None else 'running'
