"""Who owned each node of the job when: intervals from the journal of node moves.

Built from ``<run>/nodes/moves.jsonl`` ([`actors.store.moves`][actors.store.moves]),
read in the node state machine's vocabulary: each event leaves its node in the
role ``EVENT_ROLES`` ([`actors.job.ownership`][actors.job.ownership]) says;
``launch.py report`` draws them under its Gantt chart and prints a line per node.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

from actors.job.ownership import EVENT_ROLES
from actors.job.ownership import Role

logger = logging.getLogger(__name__)

OWNED = 'owned'
"""A Director owned the node."""
MOVING = 'moving'
"""Released by one Director, not yet adopted by another: nobody served it."""
FREE = 'free'
"""Nobody owned the node."""
LOST = 'lost'
"""Nobody owned the node: its Director stopped answering."""
FENCING = 'fencing'
"""Its Director stopped answering and is being fenced: nobody may use the node."""
GONE = 'gone'
"""The node left the run with its extra batch job: no interval until it joins again."""

_STATE_OF_ROLE: dict[Role, str] = {
    'pool': OWNED,
    'moving': MOVING,
    'fencing': FENCING,
    'free': FREE,
}


def _state_of(event: str) -> str | None:
    """The report's state after a journal event (``None``: an event it does not know)."""
    role = EVENT_ROLES.get(event)
    if role is None:
        return None
    if event == 'left':
        return GONE
    return LOST if event == 'lost' else _STATE_OF_ROLE[role]


class Ownership(NamedTuple):
    """One interval of one node's ownership.

    Attributes:
        node: The node.
        owner: The Director that owned it (``None`` unless ``state`` is ``owned``).
        state: ``owned``, ``moving``, ``fencing``, ``free`` or ``lost``.
        start: Unix time the interval began.
        end: Unix time it ended.

    """

    node: str
    owner: str | None
    state: str
    start: float
    end: float


@dataclasses.dataclass
class NodeOwners:
    """One node's owners over a run.

    Attributes:
        owned: Seconds each Director owned it, by Director.
        moving: Seconds it spent between two Directors.
        unowned: Seconds nobody owned it (fencing, free or lost).
        moves: Times it moved to another Director (``moved`` events).
        back: Times a move failed and the giver took it back.
        lost: Times its Director stopped answering while owning it.

    """

    owned: dict[str, float] = dataclasses.field(default_factory=dict)
    moving: float = 0.0
    unowned: float = 0.0
    moves: int = 0
    back: int = 0
    lost: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field."""
        return dataclasses.asdict(self)


def ownership_intervals(
    moves: Iterable[Mapping[str, Any]],
    end_time: float,
) -> list[Ownership]:
    """Who owned each node when, from the node journal's lines.

    Each event sets the node's state from its ``at`` on (``EVENT_ROLES``):
    ``start``, ``moved``, ``back``, ``reclaimed``, ``home`` and ``kept`` give
    it to ``to``; ``moving`` leaves it to nobody until it arrives;
    ``fencing``, ``free`` and ``lost`` leave it to nobody; ``joined`` brings
    a node of an extra batch job in free, ``left`` ends its intervals.
    An event that does not change the node's owner or state extends the
    current interval. Lines of unknown events are skipped with a warning.

    Args:
        moves: The journal's lines (``read_moves``), in the order written.
        end_time: Unix time the last intervals end (the run's end); a
            later event extends them to that event.

    Returns:
        The intervals of positive length, by start time then node.

    """
    current: dict[str, tuple[str | None, str, float]] = {}
    intervals: list[Ownership] = []
    last = end_time
    for move in sorted(moves, key=lambda m: float(m['at'])):
        state = _state_of(str(move.get('event')))
        owner = move.get('to') if state == OWNED else None
        if state is None or (state == OWNED and owner is None):
            logger.warning('skipping a node move the report does not understand: %s', move)
            continue
        node, at = str(move['node']), float(move['at'])
        owner = None if owner is None else str(owner)
        last = max(last, at)
        before = current.get(node)
        if before is not None:
            was, was_state, since = before
            if (was, was_state) == (owner, state):
                continue
            if at > since:
                intervals.append(Ownership(node, was, was_state, since, at))
        if state == GONE:
            current.pop(node, None)
            continue
        current[node] = (owner, state, at)
    for node, (owner, state, since) in current.items():
        if last > since:
            intervals.append(Ownership(node, owner, state, since, last))
    return sorted(intervals, key=lambda i: (i.start, i.node))


def node_owners(
    intervals: Iterable[Ownership],
    moves: Iterable[Mapping[str, Any]],
) -> dict[str, NodeOwners]:
    """Each node's time with each Director and its moves, by node name."""
    summary: dict[str, NodeOwners] = collections.defaultdict(NodeOwners)
    for interval in intervals:
        mine = summary[interval.node]
        length = interval.end - interval.start
        if interval.owner is not None:
            mine.owned[interval.owner] = mine.owned.get(interval.owner, 0.0) + length
        elif interval.state == MOVING:
            mine.moving += length
        else:
            mine.unowned += length
    for move in moves:
        mine = summary[str(move['node'])]
        event = move.get('event')
        if event == 'moved':
            mine.moves += 1
        elif event == 'back':
            mine.back += 1
        elif event == 'lost':
            mine.lost += 1
    return dict(sorted(summary.items()))


def node_lines(nodes: Mapping[str, NodeOwners]) -> list[str]:
    """One line per node for the terminal: each owner's seconds, then the moves."""
    lines = []
    for node, owners in nodes.items():
        held = ', '.join(f'{d} {t:.1f}s' for d, t in owners.owned.items()) or 'no owner'
        extra = [count(owners.moves, 'move')]
        if owners.back:
            extra.append(f'{owners.back} back')
        if owners.lost:
            extra.append(f'{owners.lost} lost')
        if owners.moving:
            extra.append(f'{owners.moving:.1f}s moving')
        if owners.unowned:
            extra.append(f'{owners.unowned:.1f}s unowned')
        lines.append(f'  {node}: {held}; {", ".join(extra)}')
    return lines


def count(n: int, noun: str) -> str:
    """``1 move``, ``2 moves``."""
    return f'{n} {noun}{"" if n == 1 else "s"}'
