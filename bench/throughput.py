"""No-op tool calls: one Director's ``md_sim_batch`` vs the same calls on Parsl.

Both sides use the same Parsl configuration (``build_config`` for the same
partition and site) and the same worker function, in the same run, with
alternating rounds so that machine noise hits both alike. Each side is warmed
up first, so start-up time is not counted.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import statistics
import tempfile
import time

from academy.exchange import LocalExchangeFactory
from academy.manager import Manager
from parsl.app.app import python_app
from parsl.dataflow.dflow import DataFlowKernel

from actors.client import call
from actors.client import launch_directors
from actors.client import wait_ready
from actors.parsl_config import build_config
from actors.partition import simulated_nodes
from actors.partition import split_nodes
from actors.partition import write_partitions
from actors.sites import load_site
from actors.tools import run_tool

logger = logging.getLogger(__name__)

WORKERS_PER_NODE = 2
NODES = 1


def _setup(root: pathlib.Path):
    partition = write_partitions(split_nodes(simulated_nodes(NODES), count=1), root)[0]
    return partition, load_site('local')


def parsl_rate(root: pathlib.Path, calls: int, rounds: int) -> list[float]:
    """Calls/s of ``calls`` no-op tasks submitted straight to a Parsl DFK."""
    partition, profile = _setup(root / 'parsl')
    config = build_config(
        partition, profile, root / 'parsl' / 'runinfo', workers_per_node=WORKERS_PER_NODE
    )
    dfk = DataFlowKernel(config)
    try:
        app = python_app(run_tool, data_flow_kernel=dfk)
        for f in [app('mock_md', {}) for _ in range(100)]:
            f.result()
        rates = []
        for _ in range(rounds):
            start = time.perf_counter()
            futures = [app('mock_md', {}) for _ in range(calls)]
            for future in futures:
                future.result()
            rates.append(calls / (time.perf_counter() - start))
        return rates
    finally:
        dfk.cleanup()


async def _director_rate(root: pathlib.Path, calls: int, rounds: int) -> list[float]:
    partition, profile = _setup(root / 'director')
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        (handle,) = await launch_directors(
            manager, [partition], profile, str(root / 'director'), workers_per_node=WORKERS_PER_NODE
        )
        await wait_ready(manager, [handle], timeout=120)
        await call(manager, handle, 'md_sim_batch', iterations=100)
        rates = []
        for _ in range(rounds):
            start = time.perf_counter()
            results = await call(manager, handle, 'md_sim_batch', iterations=calls)
            rates.append(calls / (time.perf_counter() - start))
            assert len(results) == calls and all(r.ok for r in results)
        return rates


def director_rate(root: pathlib.Path, calls: int, rounds: int) -> list[float]:
    """Calls/s of ``calls`` no-op calls through one Director's md_sim_batch."""
    return asyncio.run(_director_rate(root, calls, rounds))


def main(calls: int = 5000, rounds: int = 3) -> float:
    """Measure both sides, print the rates and the ratio; return the ratio."""
    with tempfile.TemporaryDirectory(prefix='bench-throughput-') as tmp:
        root = pathlib.Path(tmp)
        parsl_rates: list[float] = []
        director_rates: list[float] = []
        # Alternate sides so that drifting machine load hits both.
        for i in range(rounds):
            parsl_rates += parsl_rate(root / f'p{i}', calls, 1)
            director_rates += director_rate(root / f'd{i}', calls, 1)
    parsl = statistics.median(parsl_rates)
    director = statistics.median(director_rates)
    ratio = director / parsl
    print(
        f'throughput: {calls} no-op calls, {NODES} node x {WORKERS_PER_NODE} workers, '
        f'median of {rounds} rounds'
    )
    print(
        f'  direct parsl : {parsl:8.0f} calls/s  (rounds: '
        f'{", ".join(f"{r:.0f}" for r in parsl_rates)})'
    )
    print(
        f'  director     : {director:8.0f} calls/s  (rounds: '
        f'{", ".join(f"{r:.0f}" for r in director_rates)})'
    )
    print(f'throughput ratio (director/parsl): {ratio:.3f}')
    return ratio
