"""``launch.py report RUN_DIR``: a PNG timeline of every call and each partition's utilization."""

from __future__ import annotations

from actors.cli.job_bands import job_lines
from actors.cli.node_owners import node_lines
from actors.cli.parser import Parser
from actors.cli.report import render_report
from actors.common.errors import ConfigurationError


def build_parser() -> Parser:
    """The subcommand's flags."""
    parser = Parser(
        prog='launch.py report',
        description=(
            'Draw a Gantt timeline of every call on every node (coloured by Director) '
            "and each partition's utilization, from the run's journal or results.jsonl."
        ),
    )
    parser.add_argument('run_dir', metavar='RUN_DIR', help='the run directory')
    parser.add_argument(
        '--output',
        '-o',
        metavar='PNG',
        help='where to write the PNG (default: RUN_DIR/report.png)',
    )
    return parser


def main(argv: list[str]) -> int:
    """Draw the report and print one line about it; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = render_report(args.run_dir, args.output)
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    usage = ', '.join(f'partition {i} {u:.1%}' for i, u in report.utilization.items())
    print(
        f'{report.path}: {report.bars} calls on {len(report.lanes)} worker slots over '
        f'{report.span:.2f}s; utilization {usage}'
        + (f'; {report.unplaced} record(s) never reached a worker' if report.unplaced else ''),
    )
    if report.nodes:
        print('node owners (seconds each Director owned it; moves):')
        print('\n'.join(node_lines(report.nodes)))
    if report.jobs:
        print('extra batch jobs:')
        print('\n'.join(job_lines(report.jobs)))
    return 0
