"""Multi-node MPI tool calls through one Director: first come, first served vs backfill.

Two workloads on a simulated 4-node partition, each run by a Director that
admits first come, first served and by one that backfills (EASY), taking
turns in the same run:

* the fixed pattern: sizes 1,2,3,2,1,4 (x3), each call holding its nodes
  ``PATTERN_S`` seconds;
* a seeded random mix: sizes 1-4 nodes, durations 1-6 s.

Every call is an ``mpi_probe`` that holds its nodes for its ``duration`` (the
duration each call declares); all are sent at once. Reports node utilisation
(node-seconds asked for / (nodes x makespan)) for each, and the 1-node call
overhead: wall time of a call sent alone minus its duration (admission +
Parsl's MPI mode + ``mpiexec``). Calls are long enough that this overhead is
under 10% of a call.
"""

from __future__ import annotations

import asyncio
import pathlib
import random
import statistics
import time
from typing import Any

from academy.exchange import LocalExchangeFactory
from academy.manager import Manager

from actors.calling.calls import call
from actors.client.launch import launch_directors
from actors.client.launch import wait_ready
from actors.job.partition import simulated_nodes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions
from actors.site.profile import load_site
from bench.common import Ratio

NODES = 4
SIZES = (1, 2, 3, 2, 1, 4)
PATTERN_S = 4.0
MIX_SEED = 2026
MIX_CALLS = 24
SERIAL_CALLS = 5
TARGET_UTILISATION = 0.85
TARGET_RATIO = 1.25


def pattern(repeats: int, duration: float = PATTERN_S) -> list[tuple[int, float]]:
    """The fixed pattern: ``(nodes, seconds)`` per call."""
    return [(n, duration) for n in SIZES * repeats]


def random_mix(count: int, seed: int = MIX_SEED) -> list[tuple[int, float]]:
    """A seeded mix of sizes 1-4 nodes and durations 1-6 s."""
    rng = random.Random(seed)
    return [(rng.randint(1, NODES), float(rng.randint(1, 6))) for _ in range(count)]


async def _director(manager: Manager[Any], root: pathlib.Path, backfill: bool) -> Any:
    partition = write_partitions(split_nodes(simulated_nodes(NODES), count=1), root)[0]
    (handle,) = await launch_directors(
        manager,
        [partition],
        load_site('local'),
        str(root),
        workers_per_node=1,
        mpi_backfill=backfill,
    )
    await wait_ready(manager, [handle], timeout=120)
    # Warm up: the MPI worker pool starts with the first MPI call.
    await call(manager, handle, 'call_tool', 'mpi_probe', {'num_nodes': 1})
    return handle


async def _workload(manager: Manager[Any], handle: Any, calls: list[tuple[int, float]]) -> float:
    """Node utilisation of ``calls``, all sent at once."""
    start = time.time()
    results = await asyncio.gather(
        *(
            call(manager, handle, 'call_tool', 'mpi_probe', {'duration': d, 'num_nodes': n})
            for n, d in calls
        ),
    )
    makespan = time.time() - start
    failed = [r.error_message for r in results if not r.ok]
    if failed:
        raise RuntimeError(f'MPI calls failed: {failed[:3]}')
    return sum(n * d for n, d in calls) / (NODES * makespan)


async def _overheads(manager: Manager[Any], handle: Any) -> list[float]:
    overheads = []
    for _ in range(SERIAL_CALLS):
        start = time.time()
        result = await call(manager, handle, 'call_tool', 'mpi_probe', {'num_nodes': 1})
        if not result.ok:
            raise RuntimeError(f'MPI call failed: {result.error_message}')
        overheads.append(time.time() - start)
    return overheads


async def measure(root: pathlib.Path, repeats: int, mix: int) -> dict[str, Any]:
    """Both workloads on both Directors, alternating; utilisations and overheads."""
    workloads = {'pattern': pattern(repeats), 'mix': random_mix(mix)}
    found: dict[str, Any] = {}
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        fcfs = await _director(manager, root / 'fcfs', backfill=False)
        backfill = await _director(manager, root / 'backfill', backfill=True)
        found['overheads'] = await _overheads(manager, backfill)
        for name, calls in workloads.items():
            # FCFS first for one workload, backfill first for the other (drift cancels).
            order = [('fcfs', fcfs), ('backfill', backfill)]
            for side, handle in order if name == 'pattern' else order[::-1]:
                found[f'{name}_{side}'] = await _workload(manager, handle, calls)
        status = await call(manager, backfill, 'status')
        found['backfilled'] = status.mpi_backfilled
    return found


def run(root: pathlib.Path, options: Any) -> tuple[dict[str, Any], list[Ratio]]:
    """``python -m bench mpi``: utilisations with and without backfill, and the targets."""
    repeats, mix = (2, 12) if options.quick else (3, MIX_CALLS)
    print(
        f'mpi: {NODES}-node partition; pattern {",".join(map(str, SIZES))} x{repeats} '
        f'({PATTERN_S:g}s each) and a random mix of {mix} calls (1-4 nodes, 1-6 s, seed '
        f'{MIX_SEED}); first come, first served vs backfill'
    )
    found = asyncio.run(measure(root, repeats, mix))
    overhead = statistics.median(found['overheads'])
    results: dict[str, Any] = {'mpi_overhead_s': overhead, 'mpi_backfilled': found['backfilled']}
    rows = []
    for name in ('pattern', 'mix'):
        fcfs, packed = found[f'{name}_fcfs'], found[f'{name}_backfill']
        results[f'mpi_{name}_utilisation_fcfs'] = fcfs
        results[f'mpi_{name}_utilisation_backfill'] = packed
        results[f'mpi_{name}_backfill_ratio'] = packed / fcfs
        print(
            f'  {name:7s}: node utilisation first come first served {fcfs:.3f}, '
            f'backfill {packed:.3f} ({packed / fcfs:.2f}x)'
        )
        rows.append(Ratio(f'mpi.{name}_utilisation', packed, TARGET_UTILISATION, False))
        rows.append(Ratio(f'mpi.{name}_backfill_ratio', packed / fcfs, TARGET_RATIO, False, 'x'))
    # Kept for comparisons with earlier runs (the fixed pattern's utilisation).
    results['mpi_node_utilisation'] = found['pattern_backfill']
    print(
        f'  1-node call overhead (admission + Parsl MPI mode + mpiexec): {overhead:.3f}s '
        f'median of {SERIAL_CALLS} ({overhead / 1.0:.0%} of a 1 s call); '
        f'{found["backfilled"]} calls backfilled'
    )
    return results, rows
