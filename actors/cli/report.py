"""Where the nodes' time went: a Gantt timeline of every call of a run.

``launch.py report RUN_DIR`` reads the run's call records (one
``CallResult.to_dict()`` per line) from the Directors' journals
``<run_dir>/journal/*.jsonl`` if there are any, else from the client-side
``<run_dir>/results.jsonl`` that ``launch.py`` writes, and draws one lane per
worker slot of every node, a bar per call coloured by Director (idle time is
the blank between bars), and each partition's utilization below it.

When nodes moved between Directors (``<run_dir>/nodes/moves.jsonl``, see
[`actors.store.moves`][actors.store.moves]), a second chart under the Gantt,
on the same time axis, shows who owned each node of the job when: a bar per
Director's ownership in that Director's colour, hatched grey while a node was
moving, light grey while nobody owned it (from the first call, or from the
first move if one came earlier). A static run has no moves file and no such
chart.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

from actors.cli.job_bands import draw_jobs
from actors.cli.node_owners import FENCING
from actors.cli.node_owners import FREE
from actors.cli.node_owners import LOST
from actors.cli.node_owners import MOVING
from actors.cli.node_owners import NodeOwners
from actors.cli.node_owners import Ownership
from actors.cli.node_owners import count
from actors.cli.node_owners import node_owners
from actors.cli.node_owners import ownership_intervals
from actors.common.errors import ConfigurationError
from actors.store.jobs import JobRecord
from actors.store.jobs import read_jobs
from actors.store.journal import JOURNAL_DIR
from actors.store.journal import read_journal
from actors.store.manifest import MANIFEST_NAME
from actors.store.manifest import RunManifest
from actors.store.moves import read_moves

logger = logging.getLogger(__name__)

RESULTS_NAME = 'results.jsonl'
REPORT_NAME = 'report.png'


@dataclasses.dataclass(frozen=True)
class ReportCall:
    """One call record placed on the timeline.

    Attributes:
        director: Director that ran it.
        partition: Its partition index.
        node: Node the worker ran on.
        worker: Worker rank within the node's pool.
        start: Unix time the tool started.
        end: Unix time the tool ended.
        ok: Whether it succeeded.

    """

    director: str
    partition: int
    node: str
    worker: int
    start: float
    end: float
    ok: bool


@dataclasses.dataclass
class Report:
    """What a rendered report shows.

    Attributes:
        path: The PNG written.
        source: The files the records came from.
        bars: Bars drawn (one per call that ran on a worker).
        unplaced: Records without a node (never reached a worker).
        lanes: Worker slots on the time axis, as ``(node, worker)``.
        utilization: Busy fraction of each partition's slots, by partition.
        span: Seconds from the first call start to the last call end.
        nodes: Who owned each node and how often it moved, by node (empty
            for a static run: no node moved).
        jobs: The run's extra batch jobs (empty if it never grew).

    """

    path: pathlib.Path
    source: list[pathlib.Path]
    bars: int
    unplaced: int
    lanes: list[tuple[str, int]]
    utilization: dict[int, float]
    span: float
    nodes: dict[str, NodeOwners] = dataclasses.field(default_factory=dict)
    jobs: list[JobRecord] = dataclasses.field(default_factory=list)


def record_files(run_dir: str | os.PathLike[str]) -> list[pathlib.Path]:
    """The journals of a run if it has any, else its client-side results file.

    Raises:
        ConfigurationError: If the run directory holds neither.

    """
    root = pathlib.Path(run_dir)
    if not root.is_dir():
        raise ConfigurationError(
            f'run directory {str(run_dir)!r} does not exist; give the directory '
            'that launch.py printed (or passed with --run-dir)',
        )
    journals = sorted(root.joinpath(JOURNAL_DIR).glob('*.jsonl'))
    if journals:
        return journals
    results = root / RESULTS_NAME
    if results.is_file():
        return [results]
    raise ConfigurationError(
        f'{str(run_dir)!r} has no {JOURNAL_DIR}/*.jsonl and no {RESULTS_NAME}; '
        'give the run directory of a launch.py run that has finished calls',
    )


def read_records(files: Iterable[pathlib.Path]) -> list[dict[str, Any]]:
    """Every whole record of every file, read as the Directors read their journals.

    Lines that are not a whole JSON object (a torn last line, bytes that are
    not UTF-8) are skipped with a warning naming them (``read_journal``).

    Raises:
        ConfigurationError: If a file cannot be read.

    """
    records: list[dict[str, Any]] = []
    for path in files:
        try:
            records.extend(read_journal(path))
        except OSError as e:
            raise ConfigurationError(f'{path} cannot be read: {e.strerror}') from None
    return records


def place(records: Iterable[dict[str, Any]]) -> tuple[list[ReportCall], int]:
    """Calls that ran on a worker, and how many records did not."""
    calls: list[ReportCall] = []
    unplaced = 0
    for r in records:
        if r.get('node') is None or r.get('worker') is None or not r.get('end'):
            unplaced += 1
            continue
        calls.append(
            ReportCall(
                director=str(r['director']),
                partition=int(r['partition']),
                node=str(r['node']),
                worker=int(r['worker']),
                start=float(r['start']),
                end=float(r['end']),
                ok=bool(r.get('ok')),
            ),
        )
    return calls, unplaced


def partition_nodes(run_dir: pathlib.Path, calls: Sequence[ReportCall]) -> dict[int, list[str]]:
    """Each partition's nodes: from the manifest if there is one, else as seen."""
    nodes: dict[int, list[str]] = collections.defaultdict(list)
    if run_dir.joinpath(MANIFEST_NAME).is_file():
        for entry in RunManifest.read(run_dir).directors:
            nodes[entry.partition.index] = list(entry.partition.nodes)
    seen: dict[int, set[str]] = collections.defaultdict(set)
    for call in calls:
        seen[call.partition].add(call.node)
    for index, names in seen.items():
        # Nodes the manifest does not list (or no manifest): in name order.
        nodes[index] += sorted(names - set(nodes[index]))
    return dict(sorted(nodes.items()))


def utilization(calls: Sequence[ReportCall], nodes: dict[int, list[str]]) -> dict[int, float]:
    """Busy slot-seconds / (slots x span) of each partition that ran calls.

    A partition's slots are its nodes times the most workers seen on one of
    its nodes (pools are uniform within a partition); its span runs from its
    first call start to its last call end.
    """
    by_partition: dict[int, list[ReportCall]] = collections.defaultdict(list)
    for call in calls:
        by_partition[call.partition].append(call)
    result: dict[int, float] = {}
    for index, mine in sorted(by_partition.items()):
        workers: dict[str, set[int]] = collections.defaultdict(set)
        for call in mine:
            workers[call.node].add(call.worker)
        slots = len(nodes[index]) * max(len(w) for w in workers.values())
        span = max(c.end for c in mine) - min(c.start for c in mine)
        busy = sum(c.end - c.start for c in mine)
        result[index] = busy / (slots * span) if span > 0 else 1.0
    return result


def render_report(
    run_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
) -> Report:
    """Draw the run's timeline and utilization to a PNG.

    Args:
        run_dir: The run directory.
        output: PNG path (default ``<run_dir>/report.png``).

    Raises:
        ConfigurationError: If the run has no call records, or none ran.

    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    root = pathlib.Path(run_dir)
    files = record_files(root)
    calls, unplaced = place(read_records(files))
    if not calls:
        raise ConfigurationError(
            f'{", ".join(map(str, files))} hold no call that ran on a worker; nothing to draw',
        )
    nodes = partition_nodes(root, calls)
    workers: dict[str, set[int]] = collections.defaultdict(set)
    for call in calls:
        workers[call.node].add(call.worker)
    # A node that moved between partitions gets its lanes once (where first listed).
    lane_nodes = list(dict.fromkeys(node for index in nodes for node in nodes[index]))
    lanes = [(node, worker) for node in lane_nodes for worker in sorted(workers.get(node) or {0})]
    moves = read_moves(root)
    owned = ownership_intervals(moves, max(c.end for c in calls)) if moves else []
    directors = sorted(
        {c.director for c in calls} | {i.owner for i in owned if i.owner is not None},
        key=lambda d: (len(d), d),
    )
    colors = {d: plt.get_cmap('tab10')(i % 10) for i, d in enumerate(directors)}
    usage = utilization(calls, nodes)
    height = min(2.0 + 0.28 * len(lanes), 40.0)
    rows = lane_nodes + sorted({i.node for i in owned} - set(lane_nodes))
    jobs = list(read_jobs(root).values())
    fig, (gantt, ownership, job_axis, bars) = _figure(
        plt, height, len(rows) if owned else 0, len(jobs)
    )
    drawn, span = _draw_gantt(gantt, calls, lanes, colors)
    if job_axis is not None:
        draw_jobs(job_axis, jobs, t0=min(c.start for c in calls))
        gantt.set_xlabel('')
    if ownership is not None:
        _draw_owners(
            ownership, owned, moves, rows, colors, t0=min(c.start for c in calls), span=span
        )
        gantt.set_xlabel('')
    gantt.set_title(
        f'{len(calls)} calls on {len(lanes)} worker slots of '
        f'{len(lane_nodes)} nodes, {span:.2f}s'
        + (f' ({unplaced} never reached a worker)' if unplaced else ''),
    )
    owner = {c.partition: c.director for c in calls}
    _draw_utilization(bars, usage, [colors[owner[i]] for i in usage])
    fig.tight_layout()
    path = pathlib.Path(output) if output else root / REPORT_NAME
    try:
        fig.savefig(path, dpi=100)
    except (OSError, ValueError) as e:
        raise ConfigurationError(
            f'cannot write the report to {str(path)!r}: {e}; give -o FILE.png in a '
            'directory that exists',
        ) from None
    finally:
        plt.close(fig)
    return Report(
        path=path,
        source=files,
        bars=drawn,
        unplaced=unplaced,
        lanes=lanes,
        utilization=usage,
        span=span,
        nodes=node_owners(owned, moves),
        jobs=jobs,
    )


def _figure(plt: Any, height: float, owner_rows: int, jobs: int) -> tuple[Any, tuple[Any, ...]]:
    """The figure and its axes: the Gantt, node owners, extra jobs (``None`` if absent), bars."""
    heights = [height]
    if owner_rows:
        heights.append(min(1.2 + 0.3 * owner_rows, 20.0))
    if jobs:
        heights.append(1.0 + 0.35 * jobs)
    heights.append(2.2)
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(12, sum(heights)), gridspec_kw={'height_ratios': heights}
    )
    gantt, bars = axes[0], axes[-1]
    ownership = axes[1] if owner_rows else None
    job_axis = axes[-2] if jobs else None
    for shared in (ownership, job_axis):
        if shared is not None:
            shared.sharex(gantt)
    return fig, (gantt, ownership, job_axis, bars)


def _draw_owners(
    ax: Any,
    owned: Sequence[Ownership],
    moves: Sequence[dict[str, Any]],
    rows: Sequence[str],
    colors: dict[str, Any],
    *,
    t0: float,
    span: float,
) -> None:
    """The node-ownership chart, from the first call on (or the first move, if earlier)."""
    # The first layout is journaled while the Directors start, often seconds before
    # the first call: the chart begins at the first call unless a node moved earlier.
    since = min([t0] + [float(m['at']) for m in moves if m.get('event') != 'start'])
    shown = [i._replace(start=max(i.start, since)) for i in owned if i.end > since]
    _draw_ownership(ax, shown or owned, rows, colors, t0=t0, span=span)
    events = collections.Counter(str(m.get('event')) for m in moves)
    ax.set_title(
        f'who owned each node: {count(events["moved"], "move")}, '
        f'{events["back"]} taken back, {events["lost"]} lost with their Director',
    )


def _draw_gantt(
    ax: Any,
    calls: Sequence[ReportCall],
    lanes: Sequence[tuple[str, int]],
    colors: dict[str, Any],
) -> tuple[int, float]:
    """One lane per worker slot, one bar per call; returns (bars, span)."""
    from matplotlib.patches import Patch

    lane_of = {lane: i for i, lane in enumerate(lanes)}
    t0 = min(c.start for c in calls)
    span = max(c.end for c in calls) - t0
    segments: dict[tuple[int, str], list[tuple[float, float]]] = collections.defaultdict(list)
    failed: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
    for call in calls:
        lane = lane_of[(call.node, call.worker)]
        # Very short calls still get a visible sliver.
        segment = (call.start - t0, max(call.end - call.start, span * 1e-4))
        segments[(lane, call.director)].append(segment)
        if not call.ok:
            failed[lane].append(segment)
    for (lane, director), spans in segments.items():
        ax.broken_barh(spans, (lane - 0.4, 0.8), facecolors=colors[director], linewidth=0)
    for lane, spans in failed.items():
        ax.broken_barh(spans, (lane - 0.4, 0.8), facecolors='none', edgecolors='red')
    ax.set_yticks(range(len(lanes)), [f'{node} w{worker}' for node, worker in lanes])
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_xlim(0, span * 1.01 if span > 0 else 1)
    ax.set_xlabel('seconds since the first call started (blank = idle slot)')
    ax.grid(axis='x', alpha=0.3)
    for i in range(1, len(lanes)):
        if lanes[i][0] != lanes[i - 1][0]:
            ax.axhline(i - 0.5, color='grey', linewidth=0.5)
    legend = [Patch(color=color, label=d) for d, color in colors.items()]
    if failed:
        legend.append(Patch(facecolor='none', edgecolor='red', label='failed'))
    ax.legend(handles=legend, loc='upper left', bbox_to_anchor=(1.01, 1), fontsize='small')
    return sum(len(spans) for spans in segments.values()), span


def _draw_utilization(ax: Any, usage: dict[int, float], colors: Sequence[Any]) -> None:
    """One horizontal bar per partition: its utilization in percent."""
    drawn = ax.barh(
        [f'partition {i}' for i in usage], [u * 100 for u in usage.values()], color=colors
    )
    ax.bar_label(drawn, fmt='%.1f%%', padding=3)
    ax.set_xlim(0, 110)
    ax.invert_yaxis()
    ax.set_xlabel("utilization: busy slot-seconds / (slots x the partition's span), %")


def _draw_ownership(
    ax: Any,
    intervals: Sequence[Ownership],
    rows: Sequence[str],
    colors: dict[str, Any],
    *,
    t0: float,
    span: float,
) -> None:
    """One row per node, a bar per interval a Director owned it; widens the shared x axis."""
    from matplotlib.patches import Patch

    row_of = {node: i for i, node in enumerate(rows)}
    styles: dict[str, dict[str, Any]] = {
        MOVING: {'facecolors': 'lightgrey', 'edgecolors': 'grey', 'hatch': '////'},
        FREE: {'facecolors': '#eeeeee', 'edgecolors': 'none'},
        LOST: {'facecolors': '#eeeeee', 'edgecolors': 'red', 'hatch': 'xx'},
        FENCING: {'facecolors': '#eeeeee', 'edgecolors': 'orange', 'hatch': '..'},
    }
    for interval in intervals:
        row = row_of[interval.node]
        segment = [(interval.start - t0, interval.end - interval.start)]
        if interval.owner is not None:
            ax.broken_barh(
                segment, (row - 0.4, 0.8), facecolors=colors[interval.owner], linewidth=0
            )
        else:
            ax.broken_barh(segment, (row - 0.4, 0.8), linewidth=0.5, **styles[interval.state])
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_ylim(len(rows) - 0.5, -0.5)
    low = min(0.0, min(i.start for i in intervals) - t0)
    high = max(span, max(i.end for i in intervals) - t0)
    ax.set_xlim(low, high + 0.01 * (high - low) if high > low else low + 1)
    ax.set_xlabel('seconds since the first call started')
    ax.grid(axis='x', alpha=0.3)
    owners = {i.owner for i in intervals if i.owner is not None}
    legend = [Patch(color=color, label=d) for d, color in colors.items() if d in owners]
    labels = {
        MOVING: 'moving',
        FENCING: 'fencing (Director silent)',
        FREE: 'free',
        LOST: 'lost (Director gone)',
    }
    for state, label in labels.items():
        if any(i.state == state for i in intervals):
            style = styles[state]
            legend.append(
                Patch(
                    facecolor=style['facecolors'],
                    edgecolor=style['edgecolors'],
                    hatch=style.get('hatch'),
                    label=label,
                ),
            )
    ax.legend(handles=legend, loc='upper left', bbox_to_anchor=(1.01, 1), fontsize='small')
