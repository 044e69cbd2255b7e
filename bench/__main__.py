"""``python -m bench [NAME ...]``: run benchmarks and print their ratios."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bench import mpi
from bench import throughput

BENCHMARKS = {'throughput': throughput, 'mpi': mpi}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benchmarks (default: all)."""
    parser = argparse.ArgumentParser(prog='python -m bench', description=__doc__)
    parser.add_argument(
        'names',
        nargs='*',
        metavar='NAME',
        help=f'benchmarks to run: {", ".join(BENCHMARKS)} (default: all)',
    )
    parser.add_argument('--calls', type=int, default=5000, help='calls per measurement')
    parser.add_argument('--rounds', type=int, default=3, help='alternating rounds per side')
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f'unknown benchmark {unknown[0]!r}; choose from {", ".join(BENCHMARKS)}')
    for name in args.names or list(BENCHMARKS):
        BENCHMARKS[name].main(calls=args.calls, rounds=args.rounds)
    return 0


if __name__ == '__main__':
    sys.exit(main())
