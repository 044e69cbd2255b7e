"""``python -m bench [NAME ...]``: run benchmarks, print their ratios, write JSON.

Every ratio compares the Director layer with Parsl measured in the same run
on the same machine; absolute numbers are printed too but the ratios are the
targets. Results go to ``bench-results.json`` (``--output``) so that later
runs can be compared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import psutil

from actors.common.errors import ConfigurationError
from bench import cli
from bench import elastic
from bench import encryption
from bench import grow
from bench import mcp_layer
from bench import mpi
from bench import overhead
from bench import scale
from bench import startup
from bench import throughput
from bench import utilization
from bench.common import SITE
from bench.common import AllocationError
from bench.common import Options
from bench.common import Ratio
from bench.common import use_site

BENCHMARKS: dict[str, ModuleType] = {
    'throughput': throughput,
    'overhead': overhead,
    'utilization': utilization,
    'startup': startup,
    'scale': scale,
    'mpi': mpi,
    'mcp': mcp_layer,
    'cli': cli,
    'elastic': elastic,
    'encryption': encryption,
    'grow': grow,
}

REAL_SITE = ('elastic', 'grow')
"""Benchmarks that run on a real allocation (``--site``); the others simulate their job."""


def render_table(rows: Sequence[Ratio]) -> None:
    """Print the ratios table: value, target, met or not."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title='ratios measured in this run', title_justify='left')
    for column in ('ratio', 'value', 'target', 'met'):
        table.add_column(column, no_wrap=True)
    for row in rows:
        value = f'{row.value:.1%}' if 'flatness' in row.name else f'{row.value:.3f}{row.unit}'
        target = f'{row.target:.0%}' if 'flatness' in row.name else f'{row.target:g}{row.unit}'
        table.add_row(
            row.name,
            value,
            f'{"<=" if row.at_most else ">="} {target}',
            '[green]yes[/green]' if row.met else '[red]no[/red]',
        )
    Console(width=None if sys.stdout.isatty() else 100).print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benchmarks (default: all); exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(prog='python -m bench', description=__doc__)
    parser.add_argument(
        'names',
        nargs='*',
        metavar='NAME',
        help=f'benchmarks to run: {", ".join(BENCHMARKS)} (default: all)',
    )
    parser.add_argument('--quick', action='store_true', help='smaller sizes (a few minutes)')
    parser.add_argument('--calls', type=int, default=3000, help='calls per throughput batch')
    parser.add_argument(
        '--rounds', type=int, default=6, help='alternating throughput/startup rounds per side'
    )
    parser.add_argument(
        '--imbalanced',
        type=_imbalanced,
        default=Options.imbalanced,
        metavar='LIGHT,HEAVY,SECONDS',
        help="elastic's uneven load: calls to Director 0 and to Director 1, seconds each "
        '(default 8,72,2)',
    )
    parser.add_argument(
        '--site',
        default=SITE,
        help=f'site profile (default {SITE}, a simulated job); another runs inside a batch '
        f'allocation on its nodes, only for: {", ".join(REAL_SITE)}',
    )
    parser.add_argument('--output', default='bench-results.json', help='JSON results file')
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f'unknown benchmark {unknown[0]!r}; choose from {", ".join(BENCHMARKS)}')
    if args.calls < 1 or args.rounds < 1:
        parser.error('--calls and --rounds must be >= 1')
    if args.site != SITE:
        if not args.names or set(args.names) - set(REAL_SITE):
            parser.error(f'--site {args.site} runs only: {", ".join(REAL_SITE)} (name it)')
        try:
            use_site(args.site)
        except ConfigurationError as e:
            parser.error(str(e))
    logging.basicConfig(level=logging.WARNING)
    options = Options(
        quick=args.quick, calls=args.calls, rounds=args.rounds, imbalanced=args.imbalanced
    )
    results: dict[str, Any] = {
        'created': time.time(),
        'host': platform.node(),
        'python': platform.python_version(),
        'quick': args.quick,
        'site': args.site,
        'load_average_before': os.getloadavg(),
        'seconds': {},
        'steal_fraction': {},
    }
    rows: list[Ratio] = []
    with tempfile.TemporaryDirectory(prefix='bench-') as tmp:
        for name in args.names or list(BENCHMARKS):
            start, cpu_before = time.perf_counter(), psutil.cpu_times()
            try:
                found, ratios = BENCHMARKS[name].run(_fresh_dir(tmp, name), options)
            except AllocationError as e:
                parser.exit(2, f'python -m bench: {name}: {e}\n')
            results['seconds'][name] = time.perf_counter() - start
            stolen = steal_fraction(cpu_before, psutil.cpu_times())
            results['steal_fraction'][name] = stolen
            results.update(found)
            rows += ratios
            print(
                f'  ({name} took {results["seconds"][name]:.0f}s; '
                f'CPU stolen by other VMs: {stolen:.1%})',
                flush=True,
            )
    results['load_average_after'] = os.getloadavg()
    results['targets'] = {
        row.name: {'value': row.value, 'target': row.target, 'at_most': row.at_most, 'met': row.met}
        for row in rows
    }
    with open(args.output, 'w') as out:
        json.dump(results, out, indent=2)
    print(f'results written to {args.output}')
    render_table(rows)
    if 'throughput_ratio' in results:
        # A stable last line for scripts that compare runs.
        print(f'throughput ratio (director/parsl): {results["throughput_ratio"]:.3f}')
    return 0 if all(row.met for row in rows) else 1


def steal_fraction(before: Any, after: Any) -> float:
    """Share of CPU time the hypervisor gave to other guests between two ``cpu_times()``.

    A shared VM's speed drifts with it; it is saved next to the results so
    that a noisy run can be told from a slow layer (0 where not reported).
    """
    total = sum(after) - sum(before)
    stolen = getattr(after, 'steal', 0.0) - getattr(before, 'steal', 0.0)
    return stolen / total if total > 0 else 0.0


def _imbalanced(text: str) -> tuple[int, int, float]:
    """``--imbalanced LIGHT,HEAVY,SECONDS``: two call counts >= 1 and a duration > 0."""
    try:
        light, heavy, seconds = text.split(',')
        load = (int(light), int(heavy), float(seconds))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not LIGHT,HEAVY,SECONDS') from None
    if min(load[:2]) < 1 or not load[2] > 0:
        raise argparse.ArgumentTypeError(f'{text!r}: counts must be >= 1 and seconds > 0')
    return load


def _fresh_dir(tmp: str, name: str) -> pathlib.Path:
    path = pathlib.Path(tmp, name)
    path.mkdir()
    return path


if __name__ == '__main__':
    sys.exit(main())
