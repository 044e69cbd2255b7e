"""The journal of node moves: who owned each node of the job, and when.

``<run>/nodes/moves.jsonl`` gets one line per change of a node's owner in
the coordinator's view of the job (a [`Change`][actors.job.ownership.Change]
of its node state machine: ``{"at", "node", "from", "to", "event", "why"}``;
``from``/``to`` are Director names or ``null`` for nobody), flushed before
the coordinator goes on; ``<run>/nodes/layout.json`` is the latest layout (each Director's nodes),
replaced atomically after each change. ``--resume`` and a Director that
restarts start from the layout; ``launch.py report`` draws the lines.

Events: ``start`` (the first layout), ``moving`` (released by ``from``),
``moved`` (adopted by ``to``), ``back`` (the receiver could not start a
pool; the giver took it again), ``free`` (nobody took it), ``lost`` (its
Director stopped answering and was fenced), ``reclaimed`` (a free node given
out again), ``fencing`` (its Director stopped answering; its pools are being
stopped), ``kept`` (its Director answered again before the fence was
confirmed), ``home`` (a borrowed node went back to its lender when its
borrower restarted). ``EVENT_ROLES`` (``actors.job.ownership``) says the
role each leaves its node in.

The layout also says which nodes are on loan (``loans``: node -> lender) and
which are being fenced (``fencing``: node -> silent Director). A layout with
a node under two owners is never written (the last good one stays).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from actors.common.names import director_name
from actors.common.private import open_private
from actors.common.private import private_dir
from actors.common.private import write_private
from actors.job.ownership import Change
from actors.job.ownership import OwnershipError
from actors.job.ownership import check_layout
from actors.job.partition import Partition
from actors.job.partition import write_partition
from actors.store.json_lines import read_json_lines

logger = logging.getLogger(__name__)

MOVES_FILE = 'moves.jsonl'
LAYOUT_FILE = 'layout.json'


def nodes_dir(run_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Where a run keeps its node journal."""
    return pathlib.Path(run_dir, 'nodes')


class MoveJournal:
    """Append node moves and keep the latest layout.

    Args:
        run_dir: The run directory.

    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.directory = private_dir(nodes_dir(run_dir))
        self._file = open_private(self.directory / MOVES_FILE, 'a')

    def write(self, change: Change) -> dict[str, Any]:
        """Append one change of the coordinator's node state machine (flushed)."""
        giver, receiver = ends(change)
        return self.record(change.event, change.node, giver, receiver, change.why, at=change.at)

    def record(
        self,
        event: str,
        node: str,
        giver: str | None,
        receiver: str | None,
        why: str = '',
        *,
        at: float | None = None,
    ) -> dict[str, Any]:
        """Append one change of a node's owner (flushed)."""
        line = {
            'at': time.time() if at is None else at,
            'node': node,
            'from': giver,
            'to': receiver,
            'event': event,
            'why': why,
        }
        self._file.write(json.dumps(line) + '\n')
        self._file.flush()
        return line

    def write_layout(
        self,
        layout: Mapping[str, Sequence[str]],
        free: Sequence[str] = (),
        *,
        fencing: Mapping[str, str] | None = None,
        loans: Mapping[str, str] | None = None,
        jobs: Mapping[str, str] | None = None,
    ) -> bool:
        """Replace the latest layout, unless a node in it has two owners.

        Args:
            layout: Each Director's nodes.
            free: Nodes nobody owns.
            fencing: Nodes whose silent Director is being fenced -> that Director.
            loans: Borrowed nodes -> their lender (the borrower lists them).
            jobs: Nodes of extra batch jobs -> their job.

        Returns:
            Whether it was written (a breach is logged and the last good layout kept).

        """
        fencing = dict(fencing or {})
        try:
            check_layout(
                {n for nodes in layout.values() for n in nodes} | set(free) | set(fencing),
                layout,
                free=free,
                moving=fencing,
            )
        except OwnershipError as e:
            logger.error('%s: not written, the last good layout stays: %s', LAYOUT_FILE, e)
            return False
        record = {
            'directors': {d: list(n) for d, n in layout.items()},
            'free': list(free),
            'fencing': fencing,
            'loans': dict(loans or {}),
            'jobs': dict(jobs or {}),
        }
        write_private(self.directory / LAYOUT_FILE, json.dumps(record, indent=1))
        return True

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def ends(change: Change) -> tuple[str | None, str | None]:
    """The ``from`` and ``to`` of a change's journal line (Directors, or ``None``: nobody).

    A move names its giver and receiver throughout; a failed one (``back``,
    ``free``) comes from the receiver; anything else from the node's last
    Director to its next.
    """
    before, after = change.before, change.after
    if before is None:
        return None, after.director
    if after.role == 'moving':
        return after.director, after.to
    if before.role == 'moving':
        giver, receiver = before.director, before.to
        if after.owned:
            return (receiver if after.director == giver else giver), after.director
        return receiver, None
    if after.role == 'fencing':
        return after.director, None
    return before.director, after.director


def read_moves(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every recorded change, in order (a torn last line is skipped)."""
    return read_json_lines(nodes_dir(run_dir) / MOVES_FILE)


def read_layout_record(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The whole latest layout record (``directors``, ``free``, ``fencing``, ``loans``, ``jobs``).

    A layout written before loans and fencing were recorded reads with none.
    """
    path = nodes_dir(run_dir) / LAYOUT_FILE
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    directors = record.get('directors')
    if not directors:
        return None
    return {
        'directors': {str(d): [str(n) for n in nodes] for d, nodes in directors.items()},
        'free': [str(n) for n in record.get('free', [])],
        'fencing': {str(n): str(d) for n, d in record.get('fencing', {}).items()},
        'loans': {str(n): str(d) for n, d in record.get('loans', {}).items()},
        'jobs': {str(n): str(j) for n, j in record.get('jobs', {}).items()},
    }


def nodes_of_this_run(run_dir: str | os.PathLike[str]) -> set[str]:
    """Every node the latest layout places, if it was written after the run's partitions.

    A coordinator restarted by its Manager mid-run learns from it which nodes
    the job has; a layout older than the partitions belongs to an earlier
    run (``--resume`` in a new allocation may have other nodes).
    """
    path = nodes_dir(run_dir) / LAYOUT_FILE
    nodefiles = list(pathlib.Path(run_dir, 'partitions').glob('*.nodes'))
    try:
        newer = path.stat().st_mtime > max(
            (os.stat(f).st_mtime for f in nodefiles), default=float('inf')
        )
    except OSError:
        return set()
    record = read_layout_record(run_dir) if newer else None
    if record is None:
        return set()
    placed = {n for nodes in record['directors'].values() for n in nodes}
    return placed | set(record['free']) | set(record['fencing'])


def read_layout(run_dir: str | os.PathLike[str]) -> dict[str, list[str]] | None:
    """The latest layout (each Director's nodes), or ``None`` if no node ever moved."""
    record = read_layout_record(run_dir)
    return None if record is None else record['directors']


def current_nodes(
    director: str, partition: Any, run_dir: str | os.PathLike[str]
) -> dict[str, str | None]:
    """The nodes a (re)starting Director owns: the layout's, if written after its partition.

    A Director restarted by its Manager mid-run must not take back nodes
    that moved to others (nor nodes it had borrowed: the coordinator sends
    them home to their lender); a new run (or ``--resume``, which writes the
    partitions from the layout) writes its nodefiles after any old layout.

    Returns:
        Each node -> the extra batch job it belongs to (``None``: the run's own).

    """
    path = nodes_dir(run_dir) / LAYOUT_FILE
    try:
        newer = path.stat().st_mtime > os.stat(partition.nodefile).st_mtime
    except OSError:
        newer = False
    record = read_layout_record(run_dir) if newer else None
    if record is None or director not in record['directors']:
        return dict.fromkeys(partition.nodes)
    nodes = [n for n in record['directors'][director] if n not in record['loans']]
    return {n: record['jobs'].get(n) for n in nodes}


def resumed_partitions(partitions: list[Any], run_dir: pathlib.Path) -> list[Any]:
    """The partitions of a resumed elastic run: each Director's nodes in the last layout.

    Borrowed nodes go home to their lender. A node under two Directors (a
    layout written before the writer refused such layouts) goes to one of
    them, with a warning: the Director whose partition it came from, else the
    first by name. Nodes that were free or being fenced go to the Directors
    with the fewest.
    """
    record = read_layout_record(run_dir)
    if record is None or not all(isinstance(p, Partition) for p in partitions):
        return partitions
    home = {n: director_name(p.index) for p in partitions for n in p.nodes}
    names = {director_name(p.index): p.index for p in partitions}
    owners: dict[str, list[str]] = {}
    for director, nodes in record['directors'].items():
        for node in nodes:
            lender = record['loans'].get(node)
            owner = lender if lender in names else director
            if node in home and owner in names and owner not in owners.get(node, []):
                owners.setdefault(node, []).append(owner)
    parts: dict[int, list[str]] = {p.index: [] for p in partitions}
    for node, candidates in owners.items():
        owner = candidates[0]
        if len(candidates) > 1:
            owner = home[node] if home[node] in candidates else min(candidates)
            logger.warning(
                '%s: node %s was under %s; resumed under %s only',
                LAYOUT_FILE,
                node,
                ' and '.join(sorted(candidates)),
                owner,
            )
        parts[names[owner]].append(node)
    for node in sorted(set(home) - set(owners)):
        smallest = min(parts, key=lambda index: len(parts[index]))
        parts[smallest].append(node)
    return [write_partition(index, nodes, run_dir) for index, nodes in sorted(parts.items())]
