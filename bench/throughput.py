"""No-op tool calls: one Director's ``md_sim_batch`` vs the same calls on Parsl.

Both sides use the same Parsl configuration (``build_config`` for a partition
of the same shape and site) and the same tool (``actors.tools.registry.run_tool``; the
Director runs it under its stop guard, ``actors.worker.interrupt``, which is part of
the layer measured), live side by side in one process, and take turns batch
by batch so that machine noise hits both alike. Each side is warmed up first,
so start-up time is not counted.

For reference (no target) a third side submits the same calls straight to
the direct DFK's executor, below the DFK's task graph and packed as the
Director packs them (``actors.execution.executor_app``,
``actors.worker.wire``): the Director against it is what the layer itself costs.
"""

from __future__ import annotations

import asyncio
import pathlib
import statistics
import time
from typing import Any

from actors.site.parsl_config import executor_label
from bench.common import Options
from bench.common import Ratio
from bench.common import directors
from bench.common import executor_no_op
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


def _executor_batch(executor: Any, calls: int) -> float:
    start = time.perf_counter()
    futures = [executor_no_op(executor) for _ in range(calls)]
    for future in futures:
        if not future.result()['ok']:
            raise RuntimeError(f'executor no-op call failed: {future.result()}')
    return calls / (time.perf_counter() - start)


async def _director_batch(handle: Any, calls: int) -> float:
    start = time.perf_counter()
    results = await handle.md_sim_batch(iterations=calls)
    rate = calls / (time.perf_counter() - start)
    if len(results) != calls or not all(r.ok for r in results):
        raise RuntimeError('a Director no-op call failed')
    return rate


async def measure(
    root: pathlib.Path,
    calls: int,
    rounds: int,
) -> tuple[list[float], list[float], list[float]]:
    """Calls/s of each round on each side: (direct Parsl, Director, executor alone).

    Rounds go ABBA (Parsl first in even rounds, the Director first in odd
    ones) so that load drifting during a pair of rounds favours neither side;
    the executor-alone reference runs after each pair.
    """
    parsl_part = partitions(root / 'parsl', NODES, 1)[0]
    director_part = partitions(root / 'director', NODES, 1)[0]
    parsl_rates: list[float] = []
    director_rates: list[float] = []
    executor_rates: list[float] = []
    async with directors(root / 'director', [director_part], WORKERS_PER_NODE) as (_, handles):
        (handle,) = handles
        with parsl_dfk(root, parsl_part, WORKERS_PER_NODE) as app:
            await wait_workers(handles)
            wait_parsl_workers(app, WORKERS_PER_NODE)
            executor = app.data_flow_kernel.executors[executor_label(parsl_part)]
            _parsl_batch(app, WARMUP)
            _executor_batch(executor, WARMUP)
            await _director_batch(handle, WARMUP)
            for i in range(rounds):
                # The Director is idle while Parsl runs: blocking the loop is fine.
                if i % 2 == 0:
                    parsl_rates.append(_parsl_batch(app, calls))
                    director_rates.append(await _director_batch(handle, calls))
                else:
                    director_rates.append(await _director_batch(handle, calls))
                    parsl_rates.append(_parsl_batch(app, calls))
                executor_rates.append(_executor_batch(executor, calls))
    return parsl_rates, director_rates, executor_rates


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """Measure both sides, print the rates; return results and the ratio row.

    The ratio is the median of the per-round ratios: each round's two sides
    ran back to back, under the same machine load.
    """
    calls = min(options.calls, 1500) if options.quick else options.calls
    rounds = min(options.rounds, 4) if options.quick else options.rounds
    parsl_rates, director_rates, executor_rates = asyncio.run(measure(root, calls, rounds))
    parsl = statistics.median(parsl_rates)
    director = statistics.median(director_rates)
    executor = statistics.median(executor_rates)
    paired = [d / p for d, p in zip(director_rates, parsl_rates, strict=True)]
    ratio = statistics.median(paired)
    layer = statistics.median(d / e for d, e in zip(director_rates, executor_rates, strict=True))
    print(
        f'throughput: {calls} no-op calls per batch, {NODES} node x {WORKERS_PER_NODE} '
        f'workers, {rounds} alternating rounds (ABBA)',
    )
    print(
        f'  direct parsl   : {parsl:6.0f} calls/s  ({", ".join(f"{r:.0f}" for r in parsl_rates)})',
    )
    print(
        f'  director       : {director:6.0f} calls/s  '
        f'({", ".join(f"{r:.0f}" for r in director_rates)})',
    )
    print(
        f'  executor alone : {executor:6.0f} calls/s  '
        f"({', '.join(f'{r:.0f}' for r in executor_rates)}; the direct DFK's executor, "
        'submitted to as the Director does)',
    )
    print(
        f'  ratio (director/parsl), median of rounds: {ratio:.3f}  '
        f'({", ".join(f"{r:.3f}" for r in paired)})',
    )
    print(f'  director / executor alone (what the layer costs; no target): {layer:.3f}')
    results = {
        'throughput_ratio': ratio,
        'throughput_ratio_rounds': paired,
        'throughput_calls_per_s_director': director,
        'throughput_calls_per_s_parsl': parsl,
        'throughput_calls_per_s_executor': executor,
        'throughput_ratio_vs_executor': layer,
        'throughput_rounds_director': director_rates,
        'throughput_rounds_parsl': parsl_rates,
        'throughput_rounds_executor': executor_rates,
        'throughput_calls': calls,
    }
    return results, [Ratio('throughput_ratio', ratio, TARGET, at_most=False)]
