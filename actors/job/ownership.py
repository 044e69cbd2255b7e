"""One owner per node: the job's one node state machine, and the rule that there is one owner.

At every instant each node of the job has exactly one owner (its ``role``):

* ``pool``: a Director's single-slot worker pool runs there;
* ``mpi``: a Director's running MPI call (its ranks, and nothing else);
* ``held``: a Director keeps it, with no pool and no call, for its waiting
  MPI calls (between two MPI calls, so as not to restart a pool between them);
* ``moving``: released by one Director and not yet adopted by the next;
* ``fencing``: its Director stopped answering; nobody may use it until the
  Director's pools are confirmed stopped (then it is ``free``);
* ``free``: nobody (the job's coordinator gives it to a Director).

Within a role a node has a ``phase`` (``PHASES``), the step a Director is at:

* ``pool``: ``launching`` (its block is being submitted), ``starting``
  (submitted, its pool not connected yet), ``arriving`` (adopted from another
  Director: it counts as moved once its pool serves), ``serving``,
  ``draining`` (held for an MPI call, its running calls finishing),
  ``leaving`` (drained for a move);
* ``held``: ``None`` (waiting), ``reserved`` (chosen for an MPI call whose
  other nodes are still draining), ``leaving``.

``None`` is also the phase of a view that does not follow phases (the
coordinator's view of the job: a node owned by a Director is ``pool`` of it).

A node runs single-slot work only while a pool owns it, MPI ranks only
while an MPI call owns it: so a node is never oversubscribed. The allowed
role changes are in ``ALLOWED``, the allowed phase changes in ``PHASES``;
anything else raises [`OwnershipError`][actors.job.ownership.OwnershipError].
Every change is a [`Change`][actors.job.ownership.Change] given to the
view's listener (the coordinator's move journal is written from them: one
change, one line). Each Director keeps a
[`NodeOwnership`][actors.job.ownership.NodeOwnership] of the nodes it owns
(it forgets a node once it is ``moving``), with each node's block and the
host its pool reported; the job's coordinator keeps one of the whole job.
[`check_layout`][actors.job.ownership.check_layout] checks the
Directors' views against each other and the job. Nothing else assigns a
node's owner or state (``tests/job/test_node_state.py`` checks it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Literal

from actors.common.errors import HpcToolCallingError

Role = Literal['pool', 'mpi', 'held', 'moving', 'fencing', 'free']
Phase = Literal['launching', 'starting', 'arriving', 'serving', 'draining', 'leaving', 'reserved']

ALLOWED: dict[Role, frozenset[Role]] = {
    'free': frozenset({'pool', 'held'}),
    'pool': frozenset({'held', 'moving', 'fencing', 'free'}),
    'held': frozenset({'pool', 'mpi', 'moving', 'fencing', 'free'}),
    'mpi': frozenset({'held', 'fencing', 'free'}),
    'moving': frozenset({'pool', 'held', 'free'}),
    'fencing': frozenset({'pool', 'free'}),
}
"""Owner changes allowed from each role (any owner may lose a node to ``free`` when it dies)."""

PHASES: dict[Role, dict[Phase | None, frozenset[Phase | None]]] = {
    'pool': {
        None: frozenset({'launching', 'starting', 'serving', 'draining', 'leaving'}),
        'launching': frozenset({'starting'}),
        'starting': frozenset({'launching', 'serving', 'draining', 'leaving'}),
        'arriving': frozenset({'serving', 'leaving'}),
        'serving': frozenset({'launching', 'draining', 'leaving'}),
        'draining': frozenset({'launching'}),  # an MPI call that did not start
        'leaving': frozenset({'starting'}),  # a release that failed
    },
    'held': {
        None: frozenset({'reserved', 'leaving'}),
        'reserved': frozenset({None}),
        'leaving': frozenset({None}),
    },
}
"""Phase changes allowed within each role (a new block, a pool connecting, a drain starting)."""

ENTRY: dict[Role, frozenset[Phase | None]] = {
    'pool': frozenset({None, 'launching', 'arriving'}),
    'held': frozenset({None}),
}
"""The phases a node may have when it takes a role (other roles have none)."""

EXITS: dict[Role, frozenset[Phase | None]] = {
    'pool': frozenset({None, 'draining', 'leaving'}),
    'held': frozenset({None, 'reserved', 'leaving'}),
}
"""The phases from which a node may take another role (but ``free`` or ``fencing``: a death)."""

BUSY: frozenset[Phase] = frozenset({'launching', 'arriving', 'draining', 'leaving', 'reserved'})
"""Phases in which one step of a Director has the node: no other step takes it."""


class OwnershipError(HpcToolCallingError, RuntimeError):
    """A node would have two owners, or changed owner in a way the rule forbids."""


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who owns a node, and the step it is at.

    Attributes:
        role: See the module's list.
        director: The Director (``pool``, ``mpi``, ``held``), the giver of
            a ``moving`` node, or the silent Director of a ``fencing`` one;
            ``None`` when ``free``.
        call: The MPI call's label (``mpi`` only).
        to: The receiver of a ``moving`` node.
        phase: See the module's list (``None``: not followed, or held and waiting).
        lender: The Director that lent it (a borrowed node), else ``None``.

    """

    role: Role
    director: str | None = None
    call: str | None = None
    to: str | None = None
    phase: Phase | None = None
    lender: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ALLOWED:
            raise OwnershipError(f'unknown owner role {self.role!r}; one of {sorted(ALLOWED)}')
        if (self.role == 'free') != (self.director is None):
            raise OwnershipError(f'a {self.role} node needs a Director iff it is not free')
        if (self.role == 'mpi') != (self.call is not None):
            raise OwnershipError('an MPI owner names its call, and only it does')
        if self.phase is not None and self.phase not in PHASES.get(self.role, {}):
            raise OwnershipError(f'a {self.role} node has no phase {self.phase!r}')

    @property
    def owned(self) -> bool:
        """Whether a Director has the node (``pool``, ``mpi`` or ``held``)."""
        return self.role in ('pool', 'mpi', 'held')

    @property
    def busy(self) -> bool:
        """Whether a step of its Director has the node (``BUSY``)."""
        return self.phase in BUSY

    def __str__(self) -> str:
        if self.role == 'free':
            return 'free'
        if self.role == 'moving':
            return f'moving {self.director} -> {self.to}'
        suffix = f' ({self.call})' if self.call else ''
        phase = f' {self.phase}' if self.phase else ''
        return f'{self.role}{phase} of {self.director}{suffix}'


FREE = Owner('free')

EVENT_ROLES: dict[str, Role] = {
    'start': 'pool',
    'moved': 'pool',
    'back': 'pool',
    'reclaimed': 'pool',
    'home': 'pool',
    'kept': 'pool',
    'moving': 'moving',
    'fencing': 'fencing',
    'free': 'free',
    'lost': 'free',
    'joined': 'free',
    'left': 'free',
}
"""The move journal's events (``actors.store.moves``): the role each leaves its node in."""


def event_of(before: Owner | None, after: Owner) -> str:
    """The name of a change: a journal event between owners, else the new role or phase."""
    if before is None:
        return 'free' if after.role == 'free' else 'start'
    if after.role in ('moving', 'fencing', 'free') and before.role != 'fencing':
        return after.role
    if before.role in ('moving', 'fencing', 'free'):
        return _ARRIVALS[before.role, after.role == 'free' or after.director == before.to]
    return after.role if after.role != before.role else after.phase or after.role


_ARRIVALS: dict[tuple[Role, bool], str] = {
    ('moving', True): 'moved',
    ('moving', False): 'back',
    ('fencing', True): 'lost',
    ('fencing', False): 'kept',
    ('free', True): 'reclaimed',
    ('free', False): 'reclaimed',
}
"""A node's event as it leaves ``moving``, ``fencing`` or ``free`` (to its receiver/nobody?)."""


@dataclasses.dataclass(frozen=True)
class Change:
    """One change of a node's owner or phase.

    Attributes:
        node: The node.
        before: Its owner before (``None``: the view did not know it).
        after: Its owner after (``FREE`` when a Director's view forgets it).
        at: Unix time of the change.
        why: Short reason (``move``, ``borrow``, ``mpi``, ``lost``, ...).
        event: Its name (``event_of``, or the journal event the changer gave).

    """

    node: str
    before: Owner | None
    after: Owner
    at: float
    why: str
    event: str = ''


@dataclasses.dataclass
class _Node:
    """What the view knows of one node (only this module changes it)."""

    owner: Owner
    block: str | None = None
    host: str | None = None
    job: str | None = None
    since: float = dataclasses.field(default_factory=time.monotonic)
    event: str = ''
    retry_at: float = 0.0
    refused: dict[str, float] = dataclasses.field(default_factory=dict)


class NodeOwnership:
    """The owners of a set of nodes, changed only as ``ALLOWED`` and ``PHASES`` say.

    Args:
        owners: Each node's first owner.
        keep_history: Remember every change in ``history`` (tests and reports).
        listener: Called with every change, once it is made (the coordinator's journal).

    """

    def __init__(
        self,
        owners: Mapping[str, Owner] = {},
        *,
        keep_history: bool = False,
        listener: Callable[[Change], None] | None = None,
    ) -> None:
        self._nodes: dict[str, _Node] = {node: _Node(owner) for node, owner in owners.items()}
        self.history: list[Change] | None = [] if keep_history else None
        self.listener = listener

    @classmethod
    def of(
        cls, director: str, nodes: Iterable[str], *, keep_history: bool = False
    ) -> NodeOwnership:
        """Nodes all owned by ``director``'s pool."""
        owners = {node: Owner('pool', director) for node in nodes}
        return cls(owners, keep_history=keep_history)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def owner(self, node: str) -> Owner:
        """The owner of ``node``.

        Raises:
            OwnershipError: If the node is not one of these.

        """
        return self._node(node).owner

    def _node(self, node: str) -> _Node:
        try:
            return self._nodes[node]
        except KeyError:
            raise OwnershipError(f'node {node!r} is not one of {sorted(self._nodes)}') from None

    def nodes(
        self, *roles: Role, director: str | None = None, phases: Iterable[Phase | None] = ()
    ) -> list[str]:
        """The nodes in ``roles`` (all if none), of ``director``, in ``phases`` if given."""
        wanted = set(phases)
        return [
            node
            for node, known in self._nodes.items()
            if (not roles or known.owner.role in roles)
            and (director is None or known.owner.director == director)
            and (not wanted or known.owner.phase in wanted)
        ]

    def owners(self) -> dict[str, Owner]:
        """A copy of every node's owner."""
        return {node: known.owner for node, known in self._nodes.items()}

    def lenders(self) -> dict[str, str]:
        """Borrowed nodes -> the Director that lent each."""
        return {n: k.owner.lender for n, k in self._nodes.items() if k.owner.lender is not None}

    def block(self, node: str) -> str | None:
        """The block of ``node``'s pool (``None``: none started, or it stopped)."""
        return self._node(node).block

    def blocks(self) -> dict[str, str]:
        """Every node with a block -> its block."""
        return {n: k.block for n, k in self._nodes.items() if k.block is not None}

    def host(self, node: str) -> str | None:
        """The other host a pool of ``node``'s block reported (``None``: none did)."""
        return self._node(node).host

    def job(self, node: str) -> str | None:
        """The extra batch job ``node`` belongs to (``None``: the run's own job)."""
        known = self._nodes.get(node)
        return None if known is None else known.job

    def jobs(self) -> dict[str, str]:
        """Every node of an extra batch job -> that job."""
        return {n: k.job for n, k in self._nodes.items() if k.job is not None}

    def since(self, node: str) -> float:
        """``time.monotonic()`` of ``node``'s last change of owner."""
        return self._node(node).since

    def last_event(self, node: str) -> str:
        """The name of ``node``'s last change of owner (``''``: none since this view began)."""
        return self._node(node).event

    def refused_until(self, node: str, director: str) -> float:
        """``time.monotonic()`` before which ``node`` is not offered to ``director`` again."""
        return self._node(node).refused.get(director, 0.0)

    def retry_at(self, node: str) -> float:
        """``time.monotonic()`` before which ``node`` is not offered again (a pool failed there)."""
        return self._node(node).retry_at

    # Data of a node that are not its owner (no change record).

    def set_block(self, node: str, block: str | None) -> None:
        """``node``'s pool runs in ``block`` now (``None``: it stopped)."""
        self._node(node).block = block

    def set_host(self, node: str, host: str | None) -> None:
        """A pool of ``node``'s block reported ``host`` (``None``: forget it)."""
        self._node(node).host = host

    def set_job(self, node: str, job: str | None) -> None:
        """``node`` belongs to the extra batch job ``job`` (``None``: the run's own)."""
        self._node(node).job = job

    def set_retry(self, node: str, at: float) -> None:
        """Offer ``node`` again only after ``at`` (``time.monotonic()``)."""
        self._node(node).retry_at = at

    def refuse(self, node: str, director: str, until: float) -> None:
        """Offer ``node`` to ``director`` again only after ``until`` (no pool started there)."""
        self._node(node).refused[director] = until

    def lend(self, node: str, lender: str | None) -> None:
        """``node``'s Director says who lent it (the coordinator learns it from its reports)."""
        known = self._node(node)
        known.owner = dataclasses.replace(known.owner, lender=lender)

    # Changes of owner.

    def change(self, node: str, after: Owner, why: str, *, event: str = '') -> Change:
        """Give ``node`` to ``after`` (another owner, or the same in another phase).

        Raises:
            OwnershipError: If the rule forbids it (a pool taking an MPI
                call's node, a node moving to two receivers, a pool serving
                before its block started, ...).

        """
        known = self._node(node)
        before = known.owner
        if not _allowed(before, after):
            raise OwnershipError(f'node {node!r}: {before} cannot become {after} ({why})')
        known.owner = after
        change = self._changed(Change(node, before, after, time.time(), why, event))
        if after.role != before.role or after.director != before.director:
            known.since, known.event = time.monotonic(), change.event
        return change

    def become(
        self,
        node: str,
        role: Role | None = None,
        phase: Phase | None = None,
        *,
        why: str,
        call: str | None = None,
    ) -> Change:
        """Change ``node``'s role (kept if ``None``) and phase, same Director and lender."""
        before = self.owner(node)
        after = dataclasses.replace(before, role=role or before.role, phase=phase, call=call)
        return self.change(node, after, why)

    def add(self, node: str, owner: Owner, why: str, *, event: str = '') -> Change:
        """Take on a node this view did not know (a Director adopting a moved node)."""
        if node in self._nodes:
            raise OwnershipError(f'node {node!r} is already {self._nodes[node].owner}')
        if owner.phase not in ENTRY.get(owner.role, {None}):
            raise OwnershipError(f'node {node!r} cannot arrive as {owner}')
        self._nodes[node] = _Node(owner)
        change = self._changed(Change(node, None, owner, time.time(), why, event))
        self._nodes[node].event = change.event
        return change

    def remove(self, node: str, why: str) -> Owner:
        """Forget a node this view gave away (it is ``moving`` to another Director)."""
        before = self.owner(node)
        if before.role not in ('pool', 'held', 'free') or before.phase not in (None, 'leaving'):
            raise OwnershipError(f'node {node!r} is {before}; only a pool or held node moves')
        del self._nodes[node]
        self._changed(Change(node, before, FREE, time.time(), why))
        return before

    def join(self, node: str, job: str, why: str) -> Change:
        """A node of the extra batch job ``job`` joins the job's nodes, ``free``."""
        change = self.add(node, FREE, why, event='joined')
        self._nodes[node].job = job
        return change

    def leave(self, node: str, why: str) -> Change:
        """A ``free`` node leaves the run with its batch job (the node is forgotten)."""
        before = self.owner(node)
        if before.role != 'free':
            raise OwnershipError(f'node {node!r} is {before}; only a free node leaves the run')
        del self._nodes[node]
        return self._changed(Change(node, before, FREE, time.time(), why, 'left'))

    def _changed(self, change: Change) -> Change:
        if not change.event:
            change = dataclasses.replace(change, event=event_of(change.before, change.after))
        if self.history is not None:
            self.history.append(change)
        if self.listener is not None:
            self.listener(change)
        return change


def _allowed(before: Owner, after: Owner) -> bool:
    """Whether ``before`` may become ``after`` (``ALLOWED``, ``PHASES``, one Director)."""
    if after.role == before.role:
        steps = PHASES.get(before.role, {}).get(before.phase, frozenset())
        return (after.director, after.to) == (before.director, before.to) and after.phase in steps
    if after.role not in ALLOWED[before.role] or after.phase not in ENTRY.get(after.role, {None}):
        return False
    if after.role == 'free':
        return True  # a Director that dies loses its nodes in any phase
    if after.role != 'fencing' and before.phase not in EXITS.get(before.role, {None}):
        return False
    if before.role == 'moving':
        return after.director in (before.director, before.to)
    return before.role == 'free' or after.director == before.director


def check_layout(
    job_nodes: Iterable[str],
    views: Mapping[str, Iterable[str]],
    *,
    moving: Iterable[str] = (),
    free: Iterable[str] = (),
) -> None:
    """Check that each node of the job has exactly one owner.

    Args:
        job_nodes: Every node of the batch job.
        views: Each Director's nodes (from its status or its ownership).
        moving: Nodes between two Directors.
        free: Nodes nobody owns.

    Raises:
        OwnershipError: Naming every node with no owner or more than one.

    """
    seen: dict[str, list[str]] = {node: [] for node in job_nodes}
    for name, nodes in [*views.items(), ('moving', moving), ('free', free)]:
        for node in nodes:
            if node not in seen:
                raise OwnershipError(f'{name} holds {node!r}, which is not a node of the job')
            seen[node].append(name)
    wrong = {node: owners for node, owners in seen.items() if len(owners) != 1}
    if wrong:
        said = ', '.join(f'{node}: {owners or "nobody"}' for node, owners in sorted(wrong.items()))
        raise OwnershipError(f'each node needs exactly one owner; {said}')
