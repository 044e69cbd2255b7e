"""The journal of node moves: who owned each node of the job, and when.

``<run>/nodes/moves.jsonl`` gets one line per change of a node's owner
(``{"at", "node", "from", "to", "event", "why"}``; ``from``/``to`` are
Director names or ``null`` for nobody), flushed before the coordinator goes
on; ``<run>/nodes/layout.json`` is the latest layout (each Director's nodes),
replaced atomically after each change. ``--resume`` and a Director that
restarts start from the layout; ``launch.py report`` draws the lines.

Events: ``start`` (the first layout), ``moving`` (released by ``from``),
``moved`` (adopted by ``to``), ``back`` (the receiver could not start a
pool; the giver took it again), ``free`` (nobody took it), ``lost`` (its
Director stopped answering), ``reclaimed`` (a free node given out again).
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

from actors.common.private import open_private
from actors.common.private import private_dir
from actors.common.private import write_private
from actors.director.options import director_name
from actors.job.partition import Partition
from actors.job.partition import write_partition

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

    def record(
        self,
        event: str,
        node: str,
        giver: str | None,
        receiver: str | None,
        why: str = '',
    ) -> dict[str, Any]:
        """Append one change of a node's owner (flushed)."""
        line = {
            'at': time.time(),
            'node': node,
            'from': giver,
            'to': receiver,
            'event': event,
            'why': why,
        }
        self._file.write(json.dumps(line) + '\n')
        self._file.flush()
        return line

    def write_layout(self, layout: Mapping[str, Sequence[str]], free: Sequence[str] = ()) -> None:
        """Replace the latest layout."""
        record = {'directors': {d: list(n) for d, n in layout.items()}, 'free': list(free)}
        write_private(self.directory / LAYOUT_FILE, json.dumps(record, indent=1))

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def read_moves(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every recorded change, in order (a torn last line is skipped)."""
    path = nodes_dir(run_dir) / MOVES_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    moves = []
    for line in text.splitlines():
        try:
            moves.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning('%s: skipping a torn line', path)
    return moves


def read_layout(run_dir: str | os.PathLike[str]) -> dict[str, list[str]] | None:
    """The latest layout (each Director's nodes), or ``None`` if no node ever moved."""
    path = nodes_dir(run_dir) / LAYOUT_FILE
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    directors = record.get('directors')
    return (
        {str(d): [str(n) for n in nodes] for d, nodes in directors.items()} if directors else None
    )


def current_nodes(director: str, partition: Any, run_dir: str | os.PathLike[str]) -> list[str]:
    """The nodes a (re)starting Director owns: the layout's, if written after its partition.

    A Director restarted by its Manager mid-run must not take back nodes
    that moved to others; a new run (or ``--resume``, which writes the
    partitions from the layout) writes its nodefiles after any old layout.
    """
    path = nodes_dir(run_dir) / LAYOUT_FILE
    try:
        newer = path.stat().st_mtime > os.stat(partition.nodefile).st_mtime
    except OSError:
        newer = False
    layout = read_layout(run_dir) if newer else None
    if layout is None or director not in layout:
        return list(partition.nodes)
    return layout[director]


def resumed_partitions(partitions: list[Any], run_dir: pathlib.Path) -> list[Any]:
    """The partitions of a resumed elastic run: each Director's nodes in the last layout.

    Nodes that were free (their Director died) go to the Directors with the fewest.
    """
    layout = read_layout(run_dir)
    if layout is None or not all(isinstance(p, Partition) for p in partitions):
        return partitions
    known = {n for p in partitions for n in p.nodes}  # type: ignore[union-attr]
    parts = {
        p.index: [n for n in layout.get(director_name(p.index), []) if n in known]
        for p in partitions
    }
    placed = {n for nodes in parts.values() for n in nodes}
    for node in sorted(known - placed):
        smallest = min(parts, key=lambda index: len(parts[index]))
        parts[smallest].append(node)
    return [write_partition(index, nodes, run_dir) for index, nodes in sorted(parts.items())]
