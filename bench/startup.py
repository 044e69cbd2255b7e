"""Start-up: Director launch -> first result, vs a Parsl DFK with Parsl's defaults.

The Director side times ``manager.launch`` of one Director until its first
``md_sim`` result is back. The reference times ``DataFlowKernel(config)``
until its first no-op result, with the same config except Parsl's default
``strategy_period`` (the site profile shortens it so that the first block
is started at once instead of at the first strategy pass). Sides alternate.
"""

from __future__ import annotations

import asyncio
import inspect
import pathlib
import statistics
import time
from typing import Any

from academy.exchange import LocalExchangeFactory
from academy.manager import Manager
from parsl.app.app import python_app
from parsl.config import Config
from parsl.dataflow.dflow import DataFlowKernel

from actors.client.launch import launch_directors
from actors.site.parsl_config import build_config
from actors.worker.run import run_tool
from bench.common import Options
from bench.common import Ratio
from bench.common import partitions
from bench.common import profile

WORKERS_PER_NODE = 2
TARGET = 0.4


def parsl_default_strategy_period() -> float:
    """Parsl's own default ``strategy_period`` (seconds)."""
    return inspect.signature(Config).parameters['strategy_period'].default


async def director_first_result(root: pathlib.Path) -> float:
    """Seconds from launching a Director to its first ``md_sim`` result."""
    part = partitions(root, 1, 1)[0]
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        start = time.perf_counter()
        (handle,) = await launch_directors(
            manager, [part], profile(), str(root), workers_per_node=WORKERS_PER_NODE
        )
        result = await handle.md_sim()
        elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f'first Director call failed: {result}')
    return elapsed


def parsl_first_result(root: pathlib.Path) -> float:
    """Seconds from creating a DFK with Parsl's defaults to its first result."""
    part = partitions(root, 1, 1)[0]
    site = profile().with_overrides(strategy_period=parsl_default_strategy_period())
    config = build_config(part, site, root / 'parsl', workers_per_node=WORKERS_PER_NODE)
    start = time.perf_counter()
    dfk = DataFlowKernel(config)
    try:
        outcome = python_app(run_tool, data_flow_kernel=dfk)('mock_md', {}).result()
        elapsed = time.perf_counter() - start
    finally:
        dfk.cleanup()
    if not outcome['ok']:
        raise RuntimeError(f'first Parsl call failed: {outcome}')
    return elapsed


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """Alternate both sides; return results and the ratio row."""
    rounds = 1 if options.quick else min(options.rounds, 3)
    director_times: list[float] = []
    parsl_times: list[float] = []
    for i in range(rounds):
        parsl_times.append(parsl_first_result(root / f'parsl-{i}'))
        director_times.append(asyncio.run(director_first_result(root / f'director-{i}')))
    director = statistics.median(director_times)
    parsl = statistics.median(parsl_times)
    ratio = director / parsl
    print(
        f'startup: launch -> first result, median of {rounds}; Parsl defaults use '
        f'strategy_period={parsl_default_strategy_period()}s, the site profile '
        f'{profile().strategy_period}s',
    )
    print(f'  director {director:.2f}s  ({", ".join(f"{t:.2f}" for t in director_times)})')
    print(f'  parsl    {parsl:.2f}s  ({", ".join(f"{t:.2f}" for t in parsl_times)})')
    print(f'  ratio (director/parsl defaults): {ratio:.3f}')
    results = {
        'startup_ratio': ratio,
        'startup_s_director': director,
        'startup_s_parsl_defaults': parsl,
        'startup_rounds_director': director_times,
        'startup_rounds_parsl_defaults': parsl_times,
    }
    return results, [Ratio('startup_ratio', ratio, TARGET, at_most=True)]
