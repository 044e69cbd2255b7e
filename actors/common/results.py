"""Typed results returned by Director actions."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(slots=True)
class CallResult:
    """The outcome of one tool call, successful or not.

    Attributes:
        call_id: Unique ID of the call within its Director.
        director: Name of the Director that ran the call.
        partition: Index of the Director's partition.
        action: Director action that issued the call (``md_sim`` or
            ``md_sim_batch``).
        tool: Name of the tool that ran.
        params: Keyword arguments passed to the tool.
        ok: True if the tool returned a value.
        node: Host the worker pool was placed on by the launcher; ``None`` if
            the call never reached a worker.
        worker: Parsl worker rank within its pool.
        pid: Process ID of the worker that ran the tool.
        start: Unix time the tool started (or the call was submitted, if it
            never started).
        end: Unix time the tool ended (or the failure was seen).
        value: What the tool returned.
        error_type: Exception class name when ``ok`` is false.
        error_message: Exception message when ``ok`` is false.
        nodes: For an MPI call, the nodes Parsl's MPI mode gave it.
        resources: For an MPI call, ``num_nodes``, ``ranks_per_node`` and
            ``num_ranks``.
        call_key: Stable key of the call (client-supplied or derived); a
            resumed run skips keys whose journaled result is final.
        status: ``ok``, ``failed`` (the tool raised), ``lost`` (the
            infrastructure failed after all retries), ``cancelled``,
            ``timed_out`` or ``refused`` (not admitted, e.g. walltime).
        attempts: How many times Parsl ran the call (more than 1 after a
            lost worker or pool was retried).

    """

    call_id: str
    director: str
    partition: int
    action: str
    tool: str
    params: dict[str, Any]
    ok: bool
    node: str | None = None
    worker: int | None = None
    pid: int | None = None
    start: float = 0.0
    end: float = 0.0
    value: Any = None
    error_type: str | None = None
    error_message: str | None = None
    nodes: list[str] | None = None
    resources: dict[str, int] | None = None
    call_key: str | None = None
    status: str = ''
    attempts: int = 1

    @property
    def wall_time(self) -> float:
        """Seconds between start and end."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field (values are shared, not copied)."""
        # Shallow on purpose: dataclasses.asdict deep-copies params and value,
        # which costs more than the rest of journaling a no-op call.
        return {name: getattr(self, name) for name in _CALL_RESULT_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallResult:
        """Rebuild a result from ``to_dict()`` output (a journal line)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass(slots=True)
class DirectorStatus:
    """A snapshot of one Director's partition and work.

    Attributes:
        director: Director name.
        partition: Partition index.
        nodes: Hosts of the partition.
        slots: Tool slots (workers per node x nodes).
        workers_connected: Workers whose pools have registered with the
            interchange.
        queued: Calls submitted but not yet sent to a worker pool.
        running: Calls held by worker pools.
        done: Calls that finished successfully.
        failed: Calls that finished with an error.
        mpi_nodes_free: Partition nodes no MPI call holds.
        mpi_waiting: MPI calls waiting for nodes.
        mpi_reservation: The head waiting MPI call's reservation, if it has
            one: ``{"nodes": N, "in": seconds until its nodes are free}``.
        mpi_backfilled: MPI calls started ahead of an earlier waiting one.
        recent_throughput: Calls finished per second over the last
            ``throughput_window`` seconds.
        throughput_window: Seconds ``recent_throughput`` is measured over.
        incarnation: Changes each time the Director (re)starts; a client
            that sees it change knows its pending calls were lost.
        draining: True once the Director stopped admitting calls before
            its allocation's end.
        walltime_end: Unix time the allocation ends, if known.
        node_roles: Each of its nodes' owner (``pool``, ``mpi``, ``held``;
            see ``actors.job.ownership``).
        node_states: What each of its nodes is doing: its phase
            (``launching``, ``starting``, ``arriving``, ``serving``,
            ``draining``, ``leaving``, ``reserved``), else its role (``mpi``,
            ``held``).
        moves_in: Nodes that moved in from other Directors.
        moves_out: Nodes that moved out to other Directors.
        borrowed: Nodes lent to it for an MPI call -> the Director that lent each.
        mpi_max_nodes: The most nodes one MPI call to it may ask for: its
            nodes, or in an elastic run the job's (it borrows the rest).
        tool: Its default tool (of calls that name none): a client sends
            that tool's calls without ``tool=...``, so a python tool's calls
            take the fast path (``''`` from a Director that does not say).
        fast_calls: Calls that took the fast path since it started.
        node_jobs: Its nodes of extra batch jobs the run grew into -> their job.

    """

    director: str
    partition: int
    nodes: list[str]
    slots: int
    workers_connected: int
    queued: int
    running: int
    done: int
    failed: int
    mpi_nodes_free: int = 0
    mpi_waiting: int = 0
    mpi_reservation: dict[str, float] | None = None
    mpi_backfilled: int = 0
    recent_throughput: float = 0.0
    throughput_window: float = 0.0
    incarnation: str = ''
    draining: bool = False
    walltime_end: float | None = None
    node_roles: dict[str, str] = dataclasses.field(default_factory=dict)
    node_states: dict[str, str] = dataclasses.field(default_factory=dict)
    moves_in: int = 0
    moves_out: int = 0
    borrowed: dict[str, str] = dataclasses.field(default_factory=dict)
    mpi_max_nodes: int = 0
    tool: str = ''
    fast_calls: int = 0
    node_jobs: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class NodeLoad:
    """One Director's load, as the node coordinator's policy reads it (its ``node_load``).

    Attributes:
        director: Director name.
        nodes: The nodes it owns.
        idle: Owned nodes whose pool runs nothing, and held nodes nobody waits for.
        queued: Single-slot calls waiting for a worker (not held by a pool, not MPI).
        mpi_need: Nodes its first waiting MPI call needs beyond its own.
        borrowed: Nodes lent to it for an MPI call -> the Director that lent each.
        workers_per_node: Its tool slots per node.
        draining: True once it stopped admitting calls before its allocation's end.
        incarnation: Changes each time the Director (re)starts.
        queued_seconds: Seconds of work its queued calls declare (their timeout
            or ``duration``, the mean of those in flight times ``queued``);
            ``None`` when no call declares it.
        drain_at: Unix time it drains before its allocation's end (``None``: no end known).

    """

    director: str
    nodes: list[str]
    idle: list[str]
    queued: int
    mpi_need: int
    borrowed: dict[str, str]
    workers_per_node: int
    draining: bool
    incarnation: str
    queued_seconds: float | None = None
    drain_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field."""
        return dataclasses.asdict(self)


_CALL_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(CallResult))
