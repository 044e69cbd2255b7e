"""A simulated scheduler for the simulated batch job (site ``local``).

Extra jobs of a simulated run get made-up nodes (``x<job>n<i>``), whose
pools, like every simulated node's, run on this machine. The scheduler keeps
its queue in one file (``<dir>/scheduler.json``, locked while changed), so
another process (a test playing ``scancel``, ``launch.py cleanup``) sees
the same jobs, and a job outlives the coordinator that submitted it, as a real
one does. A job waits ``start_after`` seconds, then runs while the nodes of
the jobs running before it leave room under ``capacity``; it ends at its
walltime or when cancelled. Ending a running job stops the processes that
stand for its nodes (the pools whose ``$PMI_HOSTNAME`` is one of them and
whose environment names ``owner_mark``), as a real scheduler kills a job's
processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import pathlib
import time
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

import psutil

from actors.common.private import private_dir
from actors.common.private import write_private
from actors.common.processes import stop_processes
from actors.site.batch_jobs.base import BatchJobs
from actors.site.batch_jobs.base import JobRequest
from actors.site.batch_jobs.base import JobState
from actors.site.batch_jobs.base import SubmitRefused

logger = logging.getLogger(__name__)

STATE_FILE = 'scheduler.json'
REFUSE_ACCOUNT = 'refused'
"""An account the simulated scheduler refuses (to try out a refused submission)."""


@dataclasses.dataclass(frozen=True)
class SimulatedJobs(BatchJobs):
    """A file-backed queue of simulated batch jobs.

    Args:
        directory: Where the queue's file lives (the run's ``jobs/`` folder).
        start_after: Seconds a job waits in the queue before it may start.
        capacity: Most nodes of running simulated jobs at once (``None``: no
            limit); a job that does not fit stays pending.
        owner_mark: The run directory: ending a job stops only processes
            whose environment has a path in it (the pools' control directory).

    """

    directory: str
    start_after: float = 1.0
    capacity: int | None = None
    owner_mark: str = ''
    kind = 'simulated'

    def submit(self, request: JobRequest) -> str:
        """Queue a job (refused for the account ``refused``, or more nodes than ``capacity``)."""
        if request.account == REFUSE_ACCOUNT:
            raise SubmitRefused(f'sbatch: error: invalid account {request.account!r}')
        if self.capacity is not None and request.nodes > self.capacity:
            raise SubmitRefused(
                f'job of {request.nodes} node(s) exceeds the {self.capacity} the queue allows'
            )
        with self._queue() as queue:
            number = queue['next']
            queue['next'] += 1
            job_id = str(number)
            queue['jobs'][job_id] = {
                'name': request.name,
                'nodes': [f'x{number}n{i}' for i in range(request.nodes)],
                'walltime': request.walltime,
                'submitted': time.time(),
                'started': None,
                'ended': None,
                'reason': '',
            }
            self._advance(queue)
        return job_id

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Each job's state now."""
        with self._queue() as queue:
            self._advance(queue)
            jobs = queue['jobs']
            return {job_id: _state(jobs.get(job_id)) for job_id in job_ids}

    def cancel(self, job_id: str) -> None:
        """End a job (its node processes are stopped)."""
        self.end(job_id, 'cancelled')

    def end(self, job_id: str, reason: str) -> None:
        """End a job as the scheduler would (cancelled, or killed): ``scancel`` here."""
        with self._queue() as queue:
            job = queue['jobs'].get(job_id)
            if job is None or job['ended'] is not None:
                return
            job['ended'], job['reason'] = time.time(), reason
            nodes = list(job['nodes']) if job['started'] is not None else []
        if nodes:
            stop_node_processes(nodes, self.owner_mark)

    def _advance(self, queue: dict[str, Any]) -> None:
        """Start what may start, end what reached its walltime."""
        now = time.time()
        ending: list[str] = []
        for job in queue['jobs'].values():
            started, ended = job['started'], job['ended']
            if started is not None and ended is None and now >= started + job['walltime']:
                job['ended'], job['reason'] = started + job['walltime'], 'walltime'
                ending += job['nodes']
        busy = sum(
            len(j['nodes'])
            for j in queue['jobs'].values()
            if j['started'] is not None and j['ended'] is None
        )
        for job in sorted(queue['jobs'].values(), key=lambda j: j['submitted']):
            if job['started'] is not None or job['ended'] is not None:
                continue
            if now < job['submitted'] + self.start_after:
                break
            if self.capacity is not None and busy + len(job['nodes']) > self.capacity:
                job['reason'] = 'Resources'
                break  # first come, first served: nothing jumps the queue
            job['started'], job['reason'] = now, ''
            busy += len(job['nodes'])
        if ending:
            stop_node_processes(ending, self.owner_mark)

    @contextlib.contextmanager
    def _queue(self) -> Iterator[dict[str, Any]]:
        folder = private_dir(pathlib.Path(self.directory))
        path = folder / STATE_FILE
        with open(folder / f'{STATE_FILE}.lock', 'a') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                queue = json.loads(path.read_text())
            except FileNotFoundError:
                queue = {'next': 1, 'jobs': {}}
            yield queue
            write_private(path, json.dumps(queue, indent=1))


def _state(job: dict[str, Any] | None) -> JobState:
    if job is None or job['ended'] is not None:
        return JobState('ended', reason=job['reason'] if job else 'unknown job')
    if job['started'] is None:
        return JobState('pending', reason=job['reason'] or 'Priority')
    return JobState('running', tuple(job['nodes']), started=job['started'])


def stop_node_processes(nodes: Sequence[str], owner_mark: str) -> int:
    """SIGKILL this user's processes that stand for ``nodes`` (and carry ``owner_mark``).

    Returns:
        How many processes were stopped.

    """
    wanted = set(nodes)
    mark = owner_mark.rstrip('/')

    def node_processes() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(['uids']):
            try:
                if proc.info['uids'] is None or proc.info['uids'].real != os.getuid():
                    continue
                environ = proc.environ()
            except psutil.Error:
                continue
            if environ.get('PMI_HOSTNAME') in wanted and (
                not mark or any(_under(value, mark) for value in environ.values())
            ):
                found.append(proc)
        return found

    stopped = stop_processes(node_processes, grace=0)
    if stopped:
        logger.info('simulated scheduler: stopped %d process(es) on %s', stopped, nodes)
    return stopped


def _under(value: str, directory: str) -> bool:
    """Whether ``value`` is ``directory`` or a path in it."""
    return value == directory or value.startswith(directory + '/')
