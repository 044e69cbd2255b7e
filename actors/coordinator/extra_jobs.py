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
on the coordinator's loop before it goes on. The run's own job is never one
of these. Times of jobs are Unix times (``time.time()``, as the scheduler
and the journal have them); the hysteresis clocks are ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from collections.abc import Sequence

from actors.coordinator.growth import GrowthPolicy
from actors.coordinator.growth import Need
from actors.coordinator.growth import budget_refusal
from actors.coordinator.policy import Load
from actors.coordinator.schedulers import scheduler_for
from actors.job.ownership import NodeOwnership
from actors.site.batch_jobs.base import BatchJobs
from actors.site.batch_jobs.base import JobRequest
from actors.site.batch_jobs.base import JobState
from actors.site.batch_jobs.base import SubmitRefused
from actors.store.jobs import JobJournal
from actors.store.jobs import JobRecord
from actors.store.jobs import read_job_events
from actors.store.jobs import read_jobs

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Job:
    """One extra job while the run knows it: its record, its scheduler, what is done with it."""

    record: JobRecord
    batch: BatchJobs
    leaving: str = ''
    """Why its nodes go back (``idle``, ``walltime``, why it ended); ``''``: they stay."""
    joined: bool = False
    """Whether its nodes joined the run (in this coordinator's view)."""
    cancelled_for: str = ''
    """Why the run asked the scheduler to end it (``''``: it did not)."""

    @property
    def phase(self) -> str:
        """``pending``, ``running`` or ``ended`` (as far as the journal knows)."""
        return self.record.phase


class ExtraJobs:
    """The run's extra batch jobs and their nodes.

    Args:
        policy: The growth policy (bounds, walltime, queue, account).
        batch: The scheduler new jobs go to.
        journal: The jobs journal.
        view: The coordinator's view of the run's nodes (nodes join and leave it).
        name: The jobs' name in the scheduler's queue (carries the run's id).

    """

    def __init__(
        self,
        policy: GrowthPolicy,
        batch: BatchJobs,
        journal: JobJournal,
        view: NodeOwnership,
        name: str,
    ) -> None:
        self.policy = policy
        self.batch = batch
        self.journal = journal
        self.view = view
        self.name = name
        self.jobs: dict[str, _Job] = {}
        self.need: Need | None = None
        self.refused = ''
        """The scheduler's last refusal (or the budget's), for ``status``."""
        self.closing = False
        self._need_since: float | None = None
        self._retry_at = 0.0
        self._idle_since: dict[str, tuple[str | None, float]] = {}
        """Idle extra nodes -> (their owner then, since when): a new owner starts again."""
        self._submitting: asyncio.Future[str] | None = None
        self._request: JobRequest | None = None
        self._run_began = time.time()

    # What the coordinator asks.

    def job_of(self, node: str) -> str | None:
        """The extra job ``node`` belongs to (``None``: the run's own, or not in the run)."""
        return self.view.job(node) if node in self.view else None

    def leaving(self, node: str) -> bool:
        """Whether ``node`` belongs to an extra job whose nodes go back now."""
        job_id = self.job_of(node)
        if job_id is None:
            return False
        known = self.jobs.get(job_id)
        return known is None or bool(known.leaving)

    def may_give(self, node: str) -> bool:
        """Whether a free node may go to a Director (not one whose job is leaving)."""
        return not self.leaving(node)

    def gone(self, node: str) -> bool:
        """Whether ``node`` left the run with its job (a Director reporting it must let it go)."""
        if node in self.view:
            return False
        return any(
            node in known.record.nodes and (known.leaving or known.phase == 'ended')
            for known in self.jobs.values()
        )

    def pending(self) -> list[JobRecord]:
        """The extra jobs waiting in the scheduler's queue."""
        return [j.record for j in self.jobs.values() if j.phase == 'pending']

    def report(self) -> dict[str, object]:
        """The jobs, their nodes and node-hours (the coordinator's ``node_layout``)."""
        return {
            'jobs': [
                {
                    'job': j.record.job,
                    'state': j.phase,
                    'nodes': list(j.record.nodes),
                    'nodes_asked': j.record.nodes_asked,
                    'node_hours': round(j.record.node_hours(), 4),
                    'leaving': j.leaving,
                }
                for j in self.jobs.values()
            ],
            'need': None if self.need is None else self.need.why,
            'refused': self.refused,
        }

    # One step.

    async def look(self) -> None:
        """Ask the schedulers about the jobs that have not ended; follow what they say."""
        by_batch: dict[int, list[_Job]] = {}
        for known in self.jobs.values():
            if known.phase != 'ended':
                by_batch.setdefault(id(known.batch), []).append(known)
        for group in by_batch.values():
            batch = group[0].batch
            ids = [known.record.job for known in group]
            try:
                states = await asyncio.to_thread(batch.states, ids)
            except Exception as e:
                logger.warning('extra jobs: %s did not say how they are: %s', batch.kind, e)
                continue
            for known in group:
                await self._follow(known, states.get(known.record.job, JobState('ended')))

    async def _follow(self, known: _Job, state: JobState) -> None:
        """Take in a started job's nodes; let an ended one go; cancel one pending too long."""
        record = known.record
        if state.phase == 'running' and not known.joined:
            if record.started is None:
                record.started = state.started or time.time()
                record.nodes = list(state.nodes)
                self.journal.write(
                    'started', record.job, nodes=record.nodes, started=record.started
                )
                logger.info('extra job %s started on %s', record.job, ', '.join(record.nodes))
            known.joined = True
            for node in record.nodes:
                if node not in self.view:
                    self.view.join(node, record.job, f'job {record.job} started')
        elif state.phase == 'ended':
            # A cancel the run asked for ends it for the run's reason, whoever sees it first.
            why = known.cancelled_for or state.reason or 'ended by the scheduler'
            self._ended(known, why)
        elif state.phase == 'pending' and self.policy.pending_limit is not None:
            if time.time() - record.submitted > self.policy.pending_limit:
                await self._cancel(known, 'pending too long')

    def mark_leaving(self) -> None:
        """Jobs whose walltime is within ``drain_margin``: their nodes go back now."""
        for known in self.jobs.values():
            record = known.record
            if known.phase != 'running' or known.leaving or record.started is None:
                continue
            left = record.started + record.walltime - time.time()
            if left <= self.policy.drain_margin:
                known.leaving = 'walltime'
                logger.info('extra job %s ends in %.0fs: its nodes drain', record.job, left)

    def _ended(self, known: _Job, why: str) -> None:
        """Record that a job ended (its nodes go, if any are still the run's)."""
        record = known.record
        if record.ended is not None:
            return
        record.ended, record.why = time.time(), why
        known.leaving = known.leaving or why
        hours = record.node_hours()
        self.journal.write('ended', record.job, why=why, node_hours=round(hours, 6))
        logger.info('extra job %s ended (%s): %.3f node-hour(s)', record.job, why, hours)

    async def grow(self, need: Need | None, loads: Sequence[Load], now: float) -> None:
        """Ask for a job if the run has lacked nodes for ``grow_after`` seconds, within bounds.

        Args:
            need: What the run lacks now (``None``: nothing).
            loads: The Directors' loads (for the run's own node-hours).
            now: ``time.monotonic()``.

        """
        self.need = need
        if not self._may_submit(need, now):
            return
        request = JobRequest(
            nodes=self.policy.nodes_per_job,
            walltime=self.policy.job_walltime,
            name=self.name,
            queue=self.policy.queue,
            account=self.policy.account,
        )
        refusal = budget_refusal(
            spent=self._spent(loads),
            committed=self._committed(),
            nodes=request.nodes,
            walltime=request.walltime,
            budget=self.policy.node_hours,
        )
        if refusal is not None:
            self._refuse(f'no extra job: {refusal}', now)
            return
        self._request = request
        self._submitting = asyncio.ensure_future(asyncio.to_thread(self.batch.submit, request))
        try:
            job_id = await asyncio.shield(self._submitting)
        except SubmitRefused as e:
            self._refuse(f'the scheduler refused an extra job: {e}', now)
            return
        except Exception as e:
            # A submission whose outcome is unknown (a timeout) may have queued a job.
            self._refuse(
                f'submitting an extra job failed ({e}); a job named {request.name} may be '
                'queued: look with the scheduler',
                now,
            )
            return
        finally:
            self._submitting = None
        if self.closing:
            return  # close() saw this submission through and cancelled it
        self._submitted(job_id, request, need)

    def _may_submit(self, need: Need | None, now: float) -> bool:
        """Whether a need has lasted ``grow_after`` and the bounds allow one more job now."""
        if need is None:
            self._need_since = None
            return False
        if self._need_since is None:
            self._need_since = now
        if now - self._need_since < self.policy.grow_after or now < self._retry_at:
            return False
        if self.closing or self.pending():
            return False  # one job in the queue at a time: the next may not be needed
        live = [j for j in self.jobs.values() if j.phase != 'ended']
        return len(live) < self.policy.max_jobs

    def _submitted(self, job_id: str, request: JobRequest, need: Need | None) -> None:
        record = JobRecord(
            job=job_id,
            scheduler=self.batch.kind,
            nodes_asked=request.nodes,
            walltime=request.walltime,
            submitted=time.time(),
        )
        self.jobs[job_id] = _Job(record, self.batch)
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
            why=need.why if need is not None else '',
        )
        logger.info(
            'extra job %s asked for: %d node(s) for %.0fs (%s)',
            job_id,
            request.nodes,
            request.walltime,
            need.why if need is not None else '',
        )

    def _refuse(self, message: str, now: float) -> None:
        """Say why no job was asked for (once per new reason) and wait ``retry_after``."""
        if message != self.refused:
            logger.warning('%s', message)
            self.journal.write('refused', '', why=message)
        self.refused = message
        self._retry_at = now + self.policy.retry_after

    def _spent(self, loads: Sequence[Load]) -> float:
        """Node-hours used: the run's own nodes since it began (to its end), every extra job's."""
        extra = sum(j.record.node_hours() for j in self.jobs.values())
        own = sum(1 for node in self.view.nodes() if self.view.job(node) is None)
        ends = [load.drain_at for load in loads if load.drain_at is not None]
        # The run's own job is paid to its end whatever happens: charge it so.
        until = max(min(ends), time.time()) if ends else time.time()
        return extra + own * (until - self._run_began) / 3600.0

    def _committed(self) -> float:
        """Node-hours the live extra jobs may still use (each to its walltime)."""
        total = 0.0
        for known in self.jobs.values():
            record = known.record
            if known.phase == 'pending':
                total += record.nodes_asked * record.walltime / 3600.0
            elif known.phase == 'running' and record.started is not None:
                left = record.started + record.walltime - time.time()
                total += len(record.nodes) * max(left, 0.0) / 3600.0
        return total

    def to_return(
        self, loads: Sequence[Load], owners: Mapping[str, str], now: float
    ) -> dict[str, list[str]]:
        """Extra nodes that Directors must give back now -> by Director.

        Those of leaving jobs always; idle ones after ``shrink_after`` seconds
        idle under one owner while the run lacks nothing.

        Args:
            loads: The Directors' loads (their idle nodes).
            owners: Each extra node a Director owns -> that Director.
            now: ``time.monotonic()``.

        """
        idle = {node for load in loads for node in load.idle}
        back: dict[str, list[str]] = {}
        for node, director in owners.items():
            if self.leaving(node):
                back.setdefault(director, []).append(node)
            elif self._idle_long(node, director, node in idle, now):
                back.setdefault(director, []).append(node)
        return back

    def _idle_long(self, node: str, owner: str | None, idle: bool, now: float) -> bool:
        """Whether ``node`` was idle under ``owner`` for ``shrink_after`` while nothing lacked."""
        if not idle or self.need is not None:
            self._idle_since.pop(node, None)
            return False
        was, since = self._idle_since.get(node, (owner, now))
        if was != owner:
            since = now
        self._idle_since[node] = (owner, since)
        return now - since >= self.policy.shrink_after

    async def part_with(self, now: float) -> None:
        """Let go of free nodes nobody needs; cancel a job once all its nodes are free."""
        for job_id, known in list(self.jobs.items()):
            record = known.record
            if record.started is None:
                continue
            nodes = [n for n in record.nodes if n in self.view and self.view.job(n) == job_id]
            free = [n for n in nodes if self.view.owner(n).role == 'free']
            if len(free) != len(nodes):
                continue
            idle = all([self._idle_long(n, None, True, now) for n in free])
            if not known.leaving and free and idle and known.phase == 'running':
                known.leaving = 'idle'
            if not known.leaving:
                continue
            for node in free:
                self.view.leave(node, f'job {job_id} {known.leaving}')
                self._idle_since.pop(node, None)
            if known.phase != 'ended':
                await self._cancel(known, known.leaving)

    async def _cancel(self, known: _Job, why: str) -> None:
        """Ask the job's scheduler to end it (journaled first), then record its end."""
        record = known.record
        known.cancelled_for = known.cancelled_for or why
        if not record.cancel_asked:
            record.cancel_asked = True
            self.journal.write('cancel', record.job, why=why)
        try:
            await asyncio.to_thread(known.batch.cancel, record.job)
        except Exception as e:
            logger.warning('extra job %s: cancel failed: %s', record.job, e)
            return
        self._ended(known, known.cancelled_for)

    async def close(self) -> None:
        """The run ends: cancel every job that has not ended (pending ones, one being asked for)."""
        self.closing = True
        if self._submitting is not None:
            try:
                job_id = await self._submitting
            except Exception:
                job_id = None
            if job_id is not None and job_id not in self.jobs and self._request is not None:
                self._submitted(job_id, self._request, None)
        for known in list(self.jobs.values()):
            if known.phase != 'ended':
                await self._cancel(known, 'the run ended')

    # At the start (a new run, a restarted coordinator, --resume).

    async def start(self, run_dir: str, hold_until: float) -> None:
        """Learn the run's jobs from its journal: take back those that run, cancel queued ones.

        Args:
            run_dir: The run directory.
            hold_until: ``time.monotonic()`` before which re-joined nodes are
                not given out (their Directors may still report them).

        """
        events = await asyncio.to_thread(read_job_events, run_dir)
        began = [e['at'] for e in events if e.get('event') == 'begin']
        if began:
            self._run_began = float(began[0])
        else:
            self.journal.write('begin', '', at_run_start=self._run_began)
        records = await asyncio.to_thread(read_jobs, run_dir)
        for job_id, record in records.items():
            batch = self.batch
            if record.scheduler != batch.kind:
                batch = await asyncio.to_thread(scheduler_for, record.scheduler, run_dir)
            self.jobs[job_id] = _Job(record, batch, leaving=record.why if record.ended else '')
        live = [known for known in self.jobs.values() if known.phase != 'ended']
        if live:
            await self.look()
        for known in live:
            if known.phase == 'pending':
                await self._cancel(known, 'pending at resume')
            elif known.joined:
                logger.info('extra job %s still runs: its nodes rejoin the run', known.record.job)
                for node in known.record.nodes:
                    if node in self.view:
                        self.view.set_retry(node, hold_until)
