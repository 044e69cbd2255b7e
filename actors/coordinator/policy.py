"""Which nodes move where: the elastic policy (no asyncio, no Academy: it can be simulated).

Nodes move from Directors with idle nodes and no queued calls to Directors
with queued calls:

* a receiver wants as many nodes as its queued calls fill beyond its idle
  slots (``ceil(queued / workers_per_node)``), at most its ``maximum``;
* a giver has had no queued call for ``patience`` seconds, and keeps its
  ``floor`` (default 1 node) or its ``minimum``;
* a node that arrived less than ``settle`` seconds ago stays (with
  ``patience``, the hysteresis that stops nodes from ping-ponging);
* a Director whose waiting MPI call needs more nodes than it owns borrows
  them first (``borrow``), from calm Directors' idle nodes, their floor too
  (the call could never start otherwise);
* a borrowed node that is idle again goes back to its lender (``return``)
  once the borrower needs no more nodes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from collections.abc import Sequence

from actors.common.errors import ConfigurationError
from actors.common.results import NodeLoad
from actors.common.timing import DEAD_AFTER
from actors.common.timing import ORPHAN_GRACE


@dataclasses.dataclass(frozen=True)
class ElasticPolicy:
    """How nodes move between Directors.

    Attributes:
        floor: Nodes every Director keeps (default 1: it can always answer).
        minimum: Per-Director floors above ``floor`` (by Director name).
        maximum: Per-Director caps (by Director name).
        patience: Seconds a Director must have had no queued call before it gives nodes.
        settle: Seconds a node that moved stays before it may move again.
        period: Seconds between the coordinator's looks at the Directors.
        dead_after: Seconds without an answer after which a Director is fenced
            (its processes stopped, SIGKILL included) and its nodes go to the
            others: long enough that a Director merely slow on a busy node
            is not killed for it.
        orphan_grace: Seconds a restarted coordinator waits before it frees the
            nodes that no Director reports (nodes that were moving when it
            died): an adoption it started may still end meanwhile.

    """

    floor: int = 1
    minimum: Mapping[str, int] = dataclasses.field(default_factory=dict)
    maximum: Mapping[str, int] = dataclasses.field(default_factory=dict)
    patience: float = 1.0
    settle: float = 5.0
    period: float = 0.5
    dead_after: float = DEAD_AFTER
    orphan_grace: float = ORPHAN_GRACE

    def __post_init__(self) -> None:
        if isinstance(self.floor, bool) or not isinstance(self.floor, int) or self.floor < 0:
            raise ConfigurationError(f'floor must be an integer >= 0, got {self.floor!r}')
        for name, limits in (('minimum', self.minimum), ('maximum', self.maximum)):
            for director, value in dict(limits).items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigurationError(
                        f'{name}[{director!r}] must be an integer >= 0, got {value!r}'
                    )
        for director, most in dict(self.maximum).items():
            if most < self.keep(director):
                raise ConfigurationError(
                    f'maximum[{director!r}] = {most} is below its floor {self.keep(director)}'
                )
        for name in ('patience', 'settle', 'period', 'dead_after', 'orphan_grace'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigurationError(f'{name} must be seconds >= 0, got {value!r}')
        if self.period == 0:
            raise ConfigurationError('period must be more than 0 seconds')

    def keep(self, director: str) -> int:
        """Nodes ``director`` never gives away."""
        return max(self.floor, self.minimum.get(director, 0))

    def most(self, director: str) -> float:
        """Nodes ``director`` may own at most."""
        return self.maximum.get(director, math.inf)


@dataclasses.dataclass(frozen=True)
class Load:
    """One Director's answer to ``node_load``.

    Attributes:
        director: Its name.
        nodes: The nodes it owns.
        idle: Owned nodes whose pool runs nothing (or held for nobody).
        queued: Single-slot calls waiting for a worker.
        mpi_need: Nodes its first waiting MPI call needs beyond its own.
        borrowed: Nodes lent to it -> their lender.
        workers_per_node: Its slots per node.
        draining: It admits no new calls (walltime drain): it neither gives nor takes.
        queued_seconds: Seconds of work its queued calls declare (``None``: none declares it).
        drain_at: Unix time it drains before its allocation's end (``None``: unknown).

    """

    director: str
    nodes: tuple[str, ...]
    idle: tuple[str, ...] = ()
    queued: int = 0
    mpi_need: int = 0
    borrowed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    workers_per_node: int = 1
    draining: bool = False
    queued_seconds: float | None = None
    drain_at: float | None = None

    @classmethod
    def from_answer(cls, answer: NodeLoad) -> Load:
        """A ``Load`` from the Director's ``node_load`` answer."""
        return cls(
            director=answer.director,
            nodes=tuple(answer.nodes),
            idle=tuple(answer.idle),
            queued=answer.queued,
            mpi_need=answer.mpi_need,
            borrowed=dict(answer.borrowed),
            workers_per_node=max(answer.workers_per_node, 1),
            draining=answer.draining,
            queued_seconds=answer.queued_seconds,
            drain_at=answer.drain_at,
        )


@dataclasses.dataclass(frozen=True)
class Move:
    """Nodes to move from one Director to another.

    Attributes:
        giver: The Director that releases them.
        receiver: The Director that adopts them.
        nodes: The nodes.
        why: ``load``, ``borrow`` or ``return``.

    """

    giver: str
    receiver: str
    nodes: tuple[str, ...]
    why: str


def plan_moves(
    loads: Sequence[Load],
    policy: ElasticPolicy,
    *,
    now: float,
    calm_since: Mapping[str, float],
    arrived: Mapping[str, float],
) -> list[Move]:
    """The moves to make now.

    Args:
        loads: Every live Director's load.
        policy: The policy.
        now: The clock (seconds).
        calm_since: When each Director last had queued calls (absent: calm since ever).
        arrived: When each node last moved.

    """
    active = [load for load in loads if not load.draining]
    spare = _spare(active, policy, now, calm_since, arrived)
    owned = {load.director: len(load.nodes) for load in active}
    moves: list[Move] = []

    # An MPI call may borrow a calm Director's floor too: it cannot start otherwise.
    lendable = _spare(active, policy, now, calm_since, arrived, floors=False)

    def take(receiver: str, count: int, why: str, givers: Sequence[str]) -> None:
        room = policy.most(receiver) - owned[receiver]
        count = int(min(count, room))
        pool = lendable if why == 'borrow' else spare
        for giver in givers:
            if count <= 0:
                break
            if giver == receiver or not pool.get(giver):
                continue
            nodes = pool[giver][:count]
            for each in (spare, lendable):
                each[giver] = [n for n in each.get(giver, []) if n not in nodes]
            moves.append(Move(giver, receiver, tuple(nodes), why))
            owned[receiver] += len(nodes)
            owned[giver] -= len(nodes)
            count -= len(nodes)

    by_spare = sorted(lendable, key=lambda d: -len(lendable[d]))
    # Borrowing for an MPI call first: it cannot start at all without them.
    for load in sorted(active, key=lambda x: -x.mpi_need):
        if load.mpi_need:
            take(load.director, load.mpi_need, 'borrow', by_spare)
    # Idle borrowed nodes go home while their lender is calm (it gave them) or busy.
    for load in active:
        if load.mpi_need or load.queued:
            continue
        for node in list(spare.get(load.director, [])):
            lender = load.borrowed.get(node)
            if lender in owned and owned[lender] < policy.most(lender):
                spare[load.director].remove(node)
                moves.append(Move(load.director, lender, (node,), 'return'))
                owned[lender] += 1
                owned[load.director] -= 1
    wants = {}
    for load in active:
        backlog = math.ceil(load.queued / load.workers_per_node) - len(load.idle)
        if backlog > 0:
            wants[load.director] = backlog
    while wants and any(spare.values()):
        # One node at a time to the Director that wants most: a fair split of few nodes.
        receiver = max(wants, key=lambda d: (wants[d] / max(owned[d], 1), wants[d]))
        before = len(moves)
        take(receiver, 1, 'load', sorted(spare, key=lambda d: -len(spare[d])))
        if len(moves) == before:
            del wants[receiver]
            continue
        wants[receiver] -= 1
        if wants[receiver] <= 0:
            del wants[receiver]
    return _merge(moves)


def _spare(
    active: Sequence[Load],
    policy: ElasticPolicy,
    now: float,
    calm_since: Mapping[str, float],
    arrived: Mapping[str, float],
    *,
    floors: bool = True,
) -> dict[str, list[str]]:
    """Each calm Director's settled idle nodes (above its floor, with ``floors``)."""
    spare: dict[str, list[str]] = {}
    for load in active:
        calm = load.queued == 0 and load.mpi_need == 0
        if not calm or now - calm_since.get(load.director, -math.inf) < policy.patience:
            continue
        settled = [n for n in load.idle if now - arrived.get(n, -math.inf) >= policy.settle]
        # Borrowed nodes first: they go home before the Director's own.
        settled.sort(key=lambda n: n not in load.borrowed)
        room = len(load.nodes) - (policy.keep(load.director) if floors else 0)
        spare[load.director] = settled[: max(room, 0)]
    return spare


def _merge(moves: list[Move]) -> list[Move]:
    """One move per (giver, receiver, why)."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    for move in moves:
        merged.setdefault((move.giver, move.receiver, move.why), []).extend(move.nodes)
    return [Move(g, r, tuple(nodes), why) for (g, r, why), nodes in merged.items()]
