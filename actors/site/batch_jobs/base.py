"""The tiny base of a batch scheduler that extra jobs of a run are submitted to.

A run that outgrows its batch job asks for another (``actors.coordinator.growth``).
Each scheduler is a small class behind
[`BatchJobs`][actors.site.batch_jobs.base.BatchJobs]: submit a job of N nodes
that holds them (it runs nothing of ours: the Directors start one pool per
node inside it), say each job's state and nodes, cancel one. Real schedulers
go through Parsl's own providers (``actors.site.batch_jobs.parsl_jobs``); a
simulated job gets a simulated scheduler (``actors.site.batch_jobs.simulated``).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Literal

from actors.common.errors import ExecutionError

JobPhase = Literal['pending', 'running', 'ended']

PROVIDER_SCHEDULERS = ('slurm', 'pbs')
"""Schedulers reached through Parsl's providers (``actors.site.batch_jobs.parsl_jobs``)."""


class SubmitRefused(ExecutionError):
    """The scheduler refused a job (a bad account or queue, a queue limit): says why in one line."""


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """One extra batch job to ask for.

    Attributes:
        nodes: Nodes in the job.
        walltime: Its walltime in seconds (it ends by itself then, whatever happens to us).
        name: Its name in the scheduler's queue (carries the run's id).
        queue: Queue or partition (``''``: the scheduler's default).
        account: Account or project to charge (``''``: the user's default).

    """

    nodes: int
    walltime: float
    name: str
    queue: str = ''
    account: str = ''


@dataclasses.dataclass(frozen=True)
class JobState:
    """What the scheduler says of one job.

    Attributes:
        phase: ``pending``, ``running`` or ``ended``.
        nodes: Its nodes once running (host names, in the scheduler's order).
        reason: Why it ended or waits, when the scheduler says.
        started: Unix time it started running, when the scheduler says.

    """

    phase: JobPhase
    nodes: tuple[str, ...] = ()
    reason: str = ''
    started: float | None = None


class BatchJobs(abc.ABC):
    """Submit, look at and cancel batch jobs on one scheduler.

    Every method may block on the scheduler's commands: callers on an event
    loop run them on a thread.
    """

    kind: str = ''
    """The scheduler's name, for logs and the jobs journal (``slurm``, ``pbs``, ``simulated``)."""

    @abc.abstractmethod
    def submit(self, request: JobRequest) -> str:
        """Submit a job that holds ``request.nodes`` nodes; its id.

        Raises:
            SubmitRefused: If the scheduler refused it (with its own words).

        """

    @abc.abstractmethod
    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Each job's state (a job the scheduler no longer knows has ended)."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None:
        """End a job (nothing happens if it has ended already)."""
