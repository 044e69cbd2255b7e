"""One owner per node: who holds each node of the batch job, and the rule that there is one.

At every instant each node of the job has exactly one owner:

* ``pool``: a Director's single-slot worker pool runs there (starting,
  serving, or draining: taking no new calls while its running ones finish);
* ``mpi``: a Director's running MPI call (its ranks, and nothing else);
* ``held``: a Director keeps it, with no pool and no call, for its waiting
  MPI calls (between two MPI calls, so as not to restart a pool between them);
* ``moving``: released by one Director and not yet adopted by the next;
* ``free``: nobody (the job's coordinator gives it to a Director).

A node runs single-slot work only while a pool owns it, MPI ranks only
while an MPI call owns it: so a node is never oversubscribed. The allowed
changes are in ``ALLOWED``; anything else raises
[`OwnershipError`][actors.job.ownership.OwnershipError]. Each Director keeps
a [`NodeOwnership`][actors.job.ownership.NodeOwnership] of the nodes it owns
(it forgets a node once it is ``moving``); the job's coordinator keeps one
of the whole job, where a node owned by a Director is ``pool`` of it.
[`check_layout`][actors.job.ownership.check_layout] checks the
Directors' views against each other and the job.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Literal

Role = Literal['pool', 'mpi', 'held', 'moving', 'free']

ALLOWED: dict[Role, frozenset[Role]] = {
    'free': frozenset({'pool', 'held'}),
    'pool': frozenset({'held', 'moving', 'free'}),
    'held': frozenset({'pool', 'mpi', 'moving', 'free'}),
    'mpi': frozenset({'held', 'free'}),
    'moving': frozenset({'pool', 'held', 'free'}),
}
"""Owner changes allowed from each role (any owner may lose a node to ``free`` when it dies)."""


class OwnershipError(RuntimeError):
    """A node would have two owners, or changed owner in a way the rule forbids."""


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who owns a node.

    Attributes:
        role: See the module's list.
        director: The Director (``pool``, ``mpi``, ``held``), or the giver of
            a ``moving`` node; ``None`` when ``free``.
        call: The MPI call's label (``mpi`` only).
        to: The receiver of a ``moving`` node.

    """

    role: Role
    director: str | None = None
    call: str | None = None
    to: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ALLOWED:
            raise OwnershipError(f'unknown owner role {self.role!r}; one of {sorted(ALLOWED)}')
        if (self.role == 'free') != (self.director is None):
            raise OwnershipError(f'a {self.role} node needs a Director iff it is not free')
        if (self.role == 'mpi') != (self.call is not None):
            raise OwnershipError('an MPI owner names its call, and only it does')

    def __str__(self) -> str:
        if self.role == 'free':
            return 'free'
        if self.role == 'moving':
            return f'moving {self.director} -> {self.to}'
        suffix = f' ({self.call})' if self.call else ''
        return f'{self.role} of {self.director}{suffix}'


FREE = Owner('free')


@dataclasses.dataclass(frozen=True)
class Change:
    """One change of a node's owner.

    Attributes:
        node: The node.
        before: Its owner before.
        after: Its owner after.
        at: Unix time of the change.
        why: Short reason (``move``, ``borrow``, ``mpi``, ``lost``, ...).

    """

    node: str
    before: Owner
    after: Owner
    at: float
    why: str


class NodeOwnership:
    """The owners of a set of nodes, changed only as ``ALLOWED`` says.

    Args:
        owners: Each node's first owner.
        keep_history: Remember every change in ``history`` (tests and reports).

    """

    def __init__(self, owners: Mapping[str, Owner], *, keep_history: bool = False) -> None:
        self._owners: dict[str, Owner] = dict(owners)
        self.history: list[Change] | None = [] if keep_history else None

    @classmethod
    def of(cls, director: str, nodes: Iterable[str], **kwargs: bool) -> NodeOwnership:
        """Nodes all owned by ``director``'s pool."""
        return cls({node: Owner('pool', director) for node in nodes}, **kwargs)

    def __contains__(self, node: object) -> bool:
        return node in self._owners

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, node: str) -> Owner:
        """The owner of ``node``.

        Raises:
            OwnershipError: If the node is not one of these.

        """
        try:
            return self._owners[node]
        except KeyError:
            raise OwnershipError(f'node {node!r} is not one of {sorted(self._owners)}') from None

    def nodes(self, *roles: Role, director: str | None = None) -> list[str]:
        """The nodes in ``roles`` (all if none), of ``director`` if given, in a stable order."""
        return [
            node
            for node, owner in self._owners.items()
            if (not roles or owner.role in roles)
            and (director is None or owner.director == director)
        ]

    def owners(self) -> dict[str, Owner]:
        """A copy of every node's owner."""
        return dict(self._owners)

    def change(self, node: str, after: Owner, why: str) -> Change:
        """Give ``node`` to ``after``.

        Raises:
            OwnershipError: If the rule forbids it (a pool taking an MPI
                call's node, a node moving to two receivers, ...).

        """
        before = self.owner(node)
        if after.role == 'free' or before.role == 'free':
            passes = True
        elif before.role == 'moving':
            passes = after.director in (before.director, before.to)
        else:
            passes = after.director == before.director
        if after.role not in ALLOWED[before.role] or not passes:
            raise OwnershipError(f'node {node!r}: {before} cannot become {after} ({why})')
        self._owners[node] = after
        change = Change(node, before, after, time.time(), why)
        if self.history is not None:
            self.history.append(change)
        return change

    def add(self, node: str, owner: Owner, why: str) -> Change:
        """Take on a node this view did not know (a Director adopting a moved node)."""
        if node in self._owners:
            raise OwnershipError(f'node {node!r} is already {self._owners[node]}')
        self._owners[node] = owner
        arrived = Owner('moving', 'elsewhere', to=owner.director)
        change = Change(node, arrived, owner, time.time(), why)
        if self.history is not None:
            self.history.append(change)
        return change

    def remove(self, node: str, why: str) -> Owner:
        """Forget a node this view gave away (it is ``moving`` to another Director)."""
        before = self.owner(node)
        if before.role not in ('pool', 'held', 'free'):
            raise OwnershipError(f'node {node!r} is {before}; only a pool or held node moves')
        del self._owners[node]
        if self.history is not None:
            self.history.append(Change(node, before, FREE, time.time(), why))
        return before


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
