"""When a run asks for another batch job, and what it may spend (no asyncio: it can be simulated).

The run grows when its Directors' backlog cannot finish on the nodes it
holds in time, or an MPI call waits for more nodes than are free:

* the backlog is the seconds of work the queued calls declare (their
  ``duration`` or timeout; ``assumed_call_seconds`` each when none does);
* it must finish within the horizon: the time left before the run's
  walltime drain, or ``target`` seconds when that is sooner or unknown;
* the run's nodes give ``nodes x workers_per_node x horizon`` slot-seconds;
* what does not fit, in nodes, is the need
  ([`growth_need`][actors.coordinator.growth.growth_need]).

A need must last ``grow_after`` seconds before a job is asked for (a burst
that the held nodes absorb asks for nothing), one job waits in the queue at a
time, and every submission is checked against ``max_jobs`` and the run's
node-hour budget ([`budget_refusal`][actors.coordinator.growth.budget_refusal]),
which charges every running job its whole walltime: the run never spends
more than the budget, whatever the scheduler does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from actors.common.errors import ConfigurationError
from actors.coordinator.policy import Load
from actors.site.batch_jobs.base import PROVIDER_SCHEDULERS

SCHEDULERS = (*PROVIDER_SCHEDULERS, 'simulated')


@dataclasses.dataclass(frozen=True)
class GrowthPolicy:
    """Whether and how a run asks for more batch jobs.

    Attributes:
        max_jobs: Extra jobs at once, at most (0: the run never grows).
        nodes_per_job: Nodes each extra job asks for.
        node_hours: The run's node-hour budget, its own job included
            (``None``: no budget).
        job_walltime: Walltime of each extra job, in seconds.
        scheduler: ``slurm``, ``pbs`` or ``simulated`` (a simulated job's).
        queue: Queue or partition of extra jobs (``''``: the scheduler's default).
        account: Account or project charged (``''``: the user's default).
        target: Seconds within which the queued work should finish when the
            run's walltime is further away or unknown.
        assumed_call_seconds: Seconds a queued call that declares none is taken to run.
        grow_after: Seconds a need must last before a job is asked for.
        shrink_after: Seconds a node of an extra job stays idle before it goes back.
        drain_margin: Seconds before an extra job's walltime at which its
            nodes drain (their calls finish or move to other nodes).
        retry_after: Seconds after a refused submission before the next.
        pending_limit: Seconds a job may wait in the queue before it is
            cancelled (``None``: it waits as long as the need lasts).
        simulated_start_after: The simulated scheduler's queue wait, in seconds.
        simulated_capacity: The simulated scheduler's free nodes (``None``: no limit).

    """

    max_jobs: int = 0
    nodes_per_job: int = 1
    node_hours: float | None = None
    job_walltime: float = 3600.0
    scheduler: str = 'simulated'
    queue: str = ''
    account: str = ''
    target: float = 600.0
    assumed_call_seconds: float = 60.0
    grow_after: float = 5.0
    shrink_after: float = 30.0
    drain_margin: float = 60.0
    retry_after: float = 60.0
    pending_limit: float | None = None
    simulated_start_after: float = 1.0
    simulated_capacity: int | None = None

    def __post_init__(self) -> None:
        for name in ('max_jobs', 'nodes_per_job'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f'{_flag(name)} must be an integer >= 0, got {value!r}')
        if self.nodes_per_job < 1:
            raise ConfigurationError(
                f'--grow-nodes must be at least 1 node, got {self.nodes_per_job}'
            )
        if self.node_hours is not None and not (
            math.isfinite(self.node_hours) and self.node_hours > 0
        ):
            raise ConfigurationError(
                f'--node-hours must be a number of node-hours > 0, got {self.node_hours!r}'
            )
        if self.scheduler not in SCHEDULERS:
            raise ConfigurationError(
                f'scheduler {self.scheduler!r} cannot take extra jobs; one of {SCHEDULERS}'
            )
        for name in (
            'job_walltime',
            'target',
            'assumed_call_seconds',
            'grow_after',
            'shrink_after',
            'drain_margin',
            'retry_after',
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigurationError(f'{_flag(name)} must be seconds >= 0, got {value!r}')
        if self.job_walltime <= self.drain_margin:
            raise ConfigurationError(
                f"an extra job's walltime ({self.job_walltime:g}s) must be longer than the "
                f'{self.drain_margin:g}s its nodes drain before it ends'
            )

    @property
    def enabled(self) -> bool:
        """Whether the run may grow at all."""
        return self.max_jobs > 0

    @property
    def extra_nodes(self) -> int:
        """The most nodes of extra jobs the run may hold at once."""
        return self.max_jobs * self.nodes_per_job


def _flag(name: str) -> str:
    flags = {
        'max_jobs': '--grow-max-jobs',
        'nodes_per_job': '--grow-nodes',
        'job_walltime': '--grow-walltime',
        'target': '--grow-target',
    }
    return flags.get(name, name)


@dataclasses.dataclass(frozen=True)
class Need:
    """Nodes the run lacks now, and why (one line for the log and status).

    Attributes:
        nodes: Nodes beyond those it holds.
        why: ``backlog ...`` or ``MPI call ...``.

    """

    nodes: int
    why: str


def growth_need(
    loads: Sequence[Load],
    *,
    free: int,
    now: float,
    policy: GrowthPolicy,
) -> Need | None:
    """The nodes the run lacks to finish its queued work in time (``None``: none).

    Args:
        loads: Every live Director's load.
        free: Nodes of the run nobody owns.
        now: Unix time.
        policy: The growth policy.

    """
    active = [load for load in loads if not load.draining]
    if not active:
        return None
    ends = [load.drain_at for load in active if load.drain_at is not None]
    horizon = min([policy.target, *(end - now for end in ends)])
    mpi = max((load.mpi_need for load in active), default=0) - free
    if mpi > 0:
        return Need(mpi, f'an MPI call waits for {mpi} node(s) more than are free')
    if horizon <= 0:
        return None  # too late: a new job could not help before the run ends
    backlog = sum(
        load.queued_seconds
        if load.queued_seconds is not None
        else load.queued * policy.assumed_call_seconds
        for load in active
    )
    slots = max(load.workers_per_node for load in active)
    held = sum(len(load.nodes) for load in active) + free
    room = held * slots * horizon
    if backlog <= room:
        return None
    nodes = math.ceil((backlog - room) / (slots * horizon))
    return Need(
        nodes,
        f'{backlog:.0f} slot-seconds queued; {held} node(s) x {slots} slot(s) finish '
        f'{room:.0f} within {horizon:.0f}s',
    )


def budget_refusal(
    *,
    spent: float,
    committed: float,
    nodes: int,
    walltime: float,
    budget: float | None,
) -> str | None:
    """Why a job of ``nodes`` for ``walltime`` seconds would break the budget (``None``: it fits).

    Args:
        spent: Node-hours the run used so far (its own job and ended extra jobs).
        committed: Node-hours the running and pending extra jobs may still use.
        nodes: The new job's nodes.
        walltime: The new job's walltime in seconds.
        budget: The run's node-hours (``None``: no budget).

    """
    if budget is None:
        return None
    cost = nodes * walltime / 3600.0
    if spent + committed + cost <= budget:
        return None
    return (
        f'the node-hour budget ({budget:g}) would be exceeded: {spent:.2f} used, '
        f'{committed:.2f} held by running jobs, {cost:.2f} for a job of {nodes} node(s)'
    )
