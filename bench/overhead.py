"""Single-call overhead: one ``md_sim`` round trip vs one direct Parsl submit -> result.

One no-op call at a time. The Director and a direct DFK (same config, same
partition shape) live side by side and take turns call by call; the overhead
is the Director's percentile minus Parsl's at p50 and p99. Measured on the
local (in-process) exchange and on Academy's HTTP exchange spawned on
127.0.0.1, where the exchange's own HTTP round trips are part of the cost.
A no-op Academy agent in the same manager, called in the same rotation, shows
how much of the overhead is Academy's own action round trip.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from typing import Any

from academy.agent import Agent
from academy.agent import action

from actors.client.exchange import open_exchange
from bench.common import Options
from bench.common import Ratio
from bench.common import directors
from bench.common import parsl_dfk
from bench.common import partitions
from bench.common import percentile
from bench.common import wait_parsl_workers
from bench.common import wait_workers

WORKERS_PER_NODE = 1
WARMUP = 30
TARGET_P50_MS_LOCAL = 0.5


class Echo(Agent):
    """The cheapest Academy action: Academy's own round trip, nothing else."""

    @action
    async def echo(self) -> None:
        """Return at once."""


async def measure(root: pathlib.Path, exchange: str, calls: int) -> dict[str, list[float]]:
    """Seconds per call for ``calls`` alternating calls on each side."""
    director_part = partitions(root / 'director', 1, 1)[0]
    parsl_part = partitions(root / 'parsl', 1, 1)[0]
    times: dict[str, list[float]] = {'director': [], 'parsl': [], 'academy': []}
    with open_exchange(exchange) as factory:
        async with directors(root / 'director', [director_part], WORKERS_PER_NODE, factory) as (
            manager,
            handles,
        ):
            (handle,) = handles
            echo = await manager.launch(Echo)
            with parsl_dfk(root, parsl_part, WORKERS_PER_NODE) as app:
                await wait_workers(handles)
                wait_parsl_workers(app, WORKERS_PER_NODE)
                for i in range(WARMUP + calls):
                    director = await _director_call(handle)
                    parsl = _parsl_call(app)
                    start = time.perf_counter()
                    await echo.echo()
                    academy = time.perf_counter() - start
                    if i >= WARMUP:
                        times['director'].append(director)
                        times['parsl'].append(parsl)
                        times['academy'].append(academy)
    return times


async def _director_call(handle: Any) -> float:
    start = time.perf_counter()
    result = await handle.md_sim()
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f'Director no-op call failed: {result}')
    return elapsed


def _parsl_call(app: Any) -> float:
    # Blocking on purpose: the fastest way to wait for one Parsl result.
    start = time.perf_counter()
    outcome = app('mock_md', {}).result()
    elapsed = time.perf_counter() - start
    if not outcome['ok']:
        raise RuntimeError(f'direct Parsl no-op call failed: {outcome}')
    return elapsed


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """Measure on the local and the HTTP exchange; return results and ratio rows."""
    calls = 150 if options.quick else 500
    results: dict[str, Any] = {'overhead_calls': calls}
    rows: list[Ratio] = []
    print(f'overhead: {calls} sequential no-op calls per side, alternating, 1 worker')
    for exchange in ('local', 'http'):
        times = asyncio.run(measure(root / exchange, exchange, calls))
        stats = {}
        for q in (50, 99):
            director = percentile(times['director'], q) * 1000
            parsl = percentile(times['parsl'], q) * 1000
            stats[q] = director - parsl
            results[f'overhead_p{q}_ms_{exchange}'] = director - parsl
            results[f'roundtrip_p{q}_ms_{exchange}_director'] = director
            results[f'roundtrip_p{q}_ms_{exchange}_parsl'] = parsl
            academy = percentile(times['academy'], q) * 1000
            results[f'academy_roundtrip_p{q}_ms_{exchange}'] = academy
            print(
                f'  {exchange:5s} p{q}: director {director:7.2f} ms, parsl {parsl:7.2f} ms, '
                f'overhead {director - parsl:+7.2f} ms  (a no-op Academy action: {academy:.2f} ms)',
            )
        if exchange == 'local':
            rows.append(
                Ratio('overhead_p50_ms_local', stats[50], TARGET_P50_MS_LOCAL, True, ' ms'),
            )
    return results, rows
