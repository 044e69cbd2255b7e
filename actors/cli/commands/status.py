"""``launch.py status RUN_DIR``: every Director's partition, slots, queue and throughput."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

from actors.cli.parser import Parser
from actors.client.status_query import DirectorReport
from actors.client.status_query import ExchangeUnreachableError
from actors.client.status_query import query
from actors.common.errors import ConfigurationError
from actors.store.jobs import JobRecord
from actors.store.jobs import read_jobs
from actors.store.manifest import RunManifest
from actors.store.moves import read_layout_record

PIPED_WIDTH = 160
"""Console columns when stdout is not a terminal (the table has ten columns)."""


def build_parser() -> Parser:
    """The subcommand's flags."""
    parser = Parser(
        prog='launch.py status',
        description=(
            'Show the Directors of a running run: partition, slots, queue and recent '
            'throughput. The run must use a networked exchange (redis://, http(s)://).'
        ),
    )
    parser.add_argument('run_dir', metavar='RUN_DIR', help='the run directory of a running run')
    parser.add_argument('--json', action='store_true', help='print one JSON document')
    parser.add_argument(
        '--timeout',
        type=float,
        default=10.0,
        help='seconds to wait for each Director (default: 10)',
    )
    return parser


def main(argv: list[str]) -> int:
    """Ask every Director of the run and print the answers; 1 if one did not answer."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error(f'--timeout {args.timeout} is invalid; give seconds > 0')
    # A failed connection leaves aiohttp/redis objects whose finalizers log
    # tracebacks; the one-line error below says everything.
    logging.getLogger('asyncio').setLevel(logging.CRITICAL)
    try:
        manifest = RunManifest.read(args.run_dir)
        reports = asyncio.run(query(manifest, timeout=args.timeout))
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    except ExchangeUnreachableError as e:
        print(f'{parser.prog}: {e}', file=sys.stderr)
        return 1
    if args.json:
        print(render_json(reports))
    else:
        render_status(manifest, reports)
    return 0 if all(r.status is not None for r in reports) else 1


def render_json(reports: Sequence[DirectorReport]) -> str:
    """One JSON list: each Director's status, or why it gave none."""
    return json.dumps(
        [
            {
                'director': r.entry.name,
                'partition': r.entry.partition.index,
                'status': r.status.to_dict() if r.status else None,
                'problem': r.problem,
            }
            for r in reports
        ],
        indent=2,
    )


def _node(node: str, state: str | None) -> str:
    """A node and what it does, unless it just serves (``n3 draining``, ``n1``)."""
    return node if state in (None, 'serving') else f'{node} {state}'


def render_status(manifest: RunManifest, reports: Sequence[DirectorReport]) -> None:
    """Print one row per Director."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f'run {manifest.run_dir} (exchange {manifest.exchange}, site {manifest.site})',
        title_justify='left',
    )
    columns = ('director', 'partition', 'nodes', 'slots', 'workers', 'queued', 'running')
    for column in (*columns, 'done', 'failed', 'calls/s'):
        table.add_column(column, no_wrap=column != 'nodes')
    for r in reports:
        nodes = escape(', '.join(r.entry.partition.nodes))
        if r.status is None:
            table.add_row(
                r.entry.name,
                str(r.entry.partition.index),
                nodes,
                f'[red]{escape(r.problem or "no answer")}[/red]',
            )
            continue
        st = r.status
        # The nodes it owns now (they move between Directors), what each is doing, and how
        # many moved.
        nodes = escape(', '.join(_node(node, st.node_states.get(node)) for node in st.nodes))
        if st.moves_in or st.moves_out:
            nodes += f' ({st.moves_in} in, {st.moves_out} out)'
        if st.borrowed:
            nodes += f' [{len(st.borrowed)} borrowed]'
        table.add_row(
            st.director,
            str(st.partition),
            nodes,
            str(st.slots),
            str(st.workers_connected),
            str(st.queued),
            str(st.running),
            str(st.done),
            str(st.failed),
            f'{st.recent_throughput:.1f} (last {st.throughput_window:g}s)',
        )
    console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    console.print(table)
    between = _between_directors(read_layout_record(manifest.run_dir))
    if between:
        console.print(escape(between), soft_wrap=True)
    jobs = read_jobs(manifest.run_dir)
    if jobs:
        console.print(jobs_table(jobs.values()))


def jobs_table(jobs: Iterable[JobRecord]) -> Any:
    """The run's extra batch jobs: state, nodes, node-hours (a ``rich`` table)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title='extra batch jobs', title_justify='left')
    for column in ('job', 'state', 'nodes', 'node-hours', 'why it ended'):
        table.add_column(column, no_wrap=column != 'nodes')
    total = 0.0
    for record in jobs:
        nodes = ', '.join(record.nodes) or f'({record.nodes_asked} asked)'
        total += record.node_hours()
        table.add_row(
            escape(record.job),
            record.phase,
            escape(nodes),
            f'{record.node_hours():.3f}',
            escape(record.why),
        )
    table.caption = f'{total:.3f} node-hours in extra jobs'
    return table


def _between_directors(record: dict[str, Any] | None) -> str:
    """Nodes no Director serves now (free, fencing) and nodes lent, from the last layout."""
    if record is None:
        return ''
    said = []
    if record['free']:
        said.append('free ' + ', '.join(record['free']))
    if record['fencing']:
        said.append('fencing ' + ', '.join(f'{n} ({d})' for n, d in record['fencing'].items()))
    if record['loans']:
        said.append('lent ' + ', '.join(f'{n} (by {d})' for n, d in record['loans'].items()))
    return ('nodes between Directors: ' + '; '.join(said)) if said else ''
