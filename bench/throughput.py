"""No-op tool calls: one Director's ``md_sim_batch`` vs the same calls on Parsl.

Both sides use the same Parsl configuration (``build_config`` for a partition
of the same shape and site) and the same tool (``actors.tools.run_tool``; the
Director runs it under its stop guard, ``actors.interrupt``, which is part of
the layer measured), live side by side in one process, and take turns batch
by batch so that machine noise hits both alike. Each side is warmed up first,
so start-up time is not counted.
"""

from __future__ import annotations

import asyncio
import pathlib
import statistics
import time
from typing import Any

from bench.common import Options
from bench.common import Ratio
from bench.common import directors
from bench.common import parsl_dfk
from bench.common import partitions
from bench.common import wait_parsl_workers
from bench.common import wait_workers

WORKERS_PER_NODE = 2
NODES = 1
WARMUP = 100
TARGET = 0.95


def _parsl_batch(app: Any, calls: int) -> float:
    start = time.perf_counter()
    futures = [app('mock_md', {}) for _ in range(calls)]
    for future in futures:
        if not future.result()['ok']:
            raise RuntimeError(f'direct Parsl no-op call failed: {future.result()}')
    return calls / (time.perf_counter() - start)


async def _director_batch(handle: Any, calls: int) -> float:
    start = time.perf_counter()
    results = await handle.md_sim_batch(iterations=calls)
    rate = calls / (time.perf_counter() - start)
    if len(results) != calls or not all(r.ok for r in results):
        raise RuntimeError('a Director no-op call failed')
    return rate


async def measure(root: pathlib.Path, calls: int, rounds: int) -> tuple[list[float], list[float]]:
    """Calls/s of each round on each side: (direct Parsl, Director).

    Rounds go ABBA (Parsl first in even rounds, the Director first in odd
    ones) so that load drifting during a pair of rounds favours neither side.
    """
    parsl_part = partitions(root / 'parsl', NODES, 1)[0]
    director_part = partitions(root / 'director', NODES, 1)[0]
    parsl_rates: list[float] = []
    director_rates: list[float] = []
    async with directors(root / 'director', [director_part], WORKERS_PER_NODE) as (_, handles):
        (handle,) = handles
        with parsl_dfk(root, parsl_part, WORKERS_PER_NODE) as app:
            await wait_workers(handles)
            wait_parsl_workers(app, WORKERS_PER_NODE)
            _parsl_batch(app, WARMUP)
            await _director_batch(handle, WARMUP)
            for i in range(rounds):
                # The Director is idle while Parsl runs: blocking the loop is fine.
                if i % 2 == 0:
                    parsl_rates.append(_parsl_batch(app, calls))
                    director_rates.append(await _director_batch(handle, calls))
                else:
                    director_rates.append(await _director_batch(handle, calls))
                    parsl_rates.append(_parsl_batch(app, calls))
    return parsl_rates, director_rates


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """Measure both sides, print the rates; return results and the ratio row.

    The ratio is the median of the per-round ratios: each round's two sides
    ran back to back, under the same machine load.
    """
    calls = min(options.calls, 1500) if options.quick else options.calls
    rounds = min(options.rounds, 4) if options.quick else options.rounds
    parsl_rates, director_rates = asyncio.run(measure(root, calls, rounds))
    parsl = statistics.median(parsl_rates)
    director = statistics.median(director_rates)
    paired = [d / p for d, p in zip(director_rates, parsl_rates, strict=True)]
    ratio = statistics.median(paired)
    print(
        f'throughput: {calls} no-op calls per batch, {NODES} node x {WORKERS_PER_NODE} '
        f'workers, {rounds} alternating rounds (ABBA)',
    )
    print(f'  direct parsl : {parsl:8.0f} calls/s  ({", ".join(f"{r:.0f}" for r in parsl_rates)})')
    print(
        f'  director     : {director:8.0f} calls/s  '
        f'({", ".join(f"{r:.0f}" for r in director_rates)})',
    )
    print(
        f'  ratio (director/parsl), median of rounds: {ratio:.3f}  '
        f'({", ".join(f"{r:.3f}" for r in paired)})',
    )
    results = {
        'throughput_ratio': ratio,
        'throughput_ratio_rounds': paired,
        'throughput_calls_per_s_director': director,
        'throughput_calls_per_s_parsl': parsl,
        'throughput_rounds_director': director_rates,
        'throughput_rounds_parsl': parsl_rates,
        'throughput_calls': calls,
    }
    return results, [Ratio('throughput_ratio', ratio, TARGET, at_most=False)]
