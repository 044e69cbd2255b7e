"""``launch.py cleanup RUN_DIR``: end the run's extra batch jobs that may still hold nodes."""

from __future__ import annotations

import json
import pathlib

from actors.cli.job_bands import job_lines
from actors.cli.parser import Parser
from actors.coordinator.schedulers import end_leftover_jobs
from actors.store.jobs import read_jobs


def build_parser() -> Parser:
    """The subcommand's flags."""
    parser = Parser(
        prog='launch.py cleanup',
        description=(
            'Cancel the extra batch jobs a run asked for (--grow-max-jobs) that its journal '
            'says may still be queued or running: after its coordinator died, they would '
            'hold their nodes to their walltime.'
        ),
    )
    parser.add_argument('run_dir', metavar='RUN_DIR', help='the run directory')
    parser.add_argument('--json', action='store_true', help='print one JSON document')
    return parser


def main(argv: list[str]) -> int:
    """Cancel the leftover jobs and say which; 0 when none is left."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run_dir = pathlib.Path(args.run_dir)
    if not (run_dir / 'manifest.json').is_file() and not (run_dir / 'jobs').is_dir():
        parser.exit(2, f'{parser.prog}: error: {args.run_dir!r} is not a run directory\n')
    ended = end_leftover_jobs(args.run_dir)
    left = [r for r in read_jobs(args.run_dir).values() if r.ended is None]
    if args.json:
        print(json.dumps({'cancelled': [r.job for r in ended], 'left': [r.job for r in left]}))
    else:
        print(f'{len(ended)} extra job(s) cancelled' + (':' if ended else ''))
        if ended:
            print('\n'.join(job_lines(ended)))
        if left:
            print(f'{len(left)} could not be cancelled: {", ".join(r.job for r in left)}')
    return 0 if not left else 1
