"""Multi-node MPI tool calls through one Director on a simulated 4-node partition.

Mixed sizes (1,2,3,2,1,4 nodes, repeated) of ``mpi_probe`` calls that hold
their nodes for ``DURATION`` seconds each, all sent at once; the Director
admits each call only when its nodes are free (first come, first served).
Reports:

* node utilisation: node-seconds the calls asked for / (nodes x makespan);
  1.0 is the unreachable ideal, FIFO admission of mixed sizes leaves gaps;
* per-call overhead: call wall time (as the Director saw it) minus DURATION,
  for calls sent one at a time (admission + Parsl MPI mode + mpiexec).

``python -m bench mpi`` runs the pattern x3 (``--calls`` and ``--rounds`` do not apply).
"""

from __future__ import annotations

import asyncio
import pathlib
import statistics
import tempfile
import time
from typing import Any

from academy.exchange import LocalExchangeFactory
from academy.manager import Manager

from actors.client.calls import call
from actors.client.calls import launch_directors
from actors.client.calls import wait_ready
from actors.job.partition import simulated_nodes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions
from actors.site.profile import load_site

NODES = 4
SIZES = (1, 2, 3, 2, 1, 4)
DURATION = 1.0
SERIAL_CALLS = 5


async def _run(root: pathlib.Path, repeats: int) -> tuple[float, float, list[float]]:
    partition = write_partitions(split_nodes(simulated_nodes(NODES), count=1), root)[0]
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        (handle,) = await launch_directors(
            manager, [partition], load_site('local'), str(root), workers_per_node=1
        )
        await wait_ready(manager, [handle], timeout=120)
        # Warm up: the MPI worker pool starts with the first MPI call.
        await call(manager, handle, 'call_tool', 'mpi_probe', {'num_nodes': 1})
        overheads = []
        for _ in range(SERIAL_CALLS):
            start = time.time()
            result = await call(manager, handle, 'call_tool', 'mpi_probe', {'num_nodes': 1})
            assert result.ok, result.error_message
            overheads.append(time.time() - start)
        sizes = list(SIZES) * repeats
        start = time.time()
        results = await asyncio.gather(
            *(
                call(
                    manager,
                    handle,
                    'call_tool',
                    'mpi_probe',
                    {'duration': DURATION, 'num_nodes': n},
                )
                for n in sizes
            ),
        )
        makespan = time.time() - start
        assert all(r.ok for r in results), [r.error_message for r in results]
        demand = sum(sizes) * DURATION
        return makespan, demand / (NODES * makespan), overheads


def main(calls: int = 0, rounds: int = 3) -> float:
    """Run the mixed-size workload; print and return the node utilisation."""
    del calls
    with tempfile.TemporaryDirectory(prefix='bench-mpi-') as tmp:
        makespan, utilisation, overheads = asyncio.run(_run(pathlib.Path(tmp), rounds))
    count = len(SIZES) * rounds
    print(
        f'mpi: {count} calls of sizes {",".join(map(str, SIZES))} (x{rounds}) '
        f'holding their nodes {DURATION:.1f}s each, {NODES}-node partition'
    )
    print(f'  makespan           : {makespan:6.2f} s')
    print(
        f'  per-call overhead  : {statistics.median(overheads):6.3f} s median of '
        f'{len(overheads)} serial 1-node calls'
    )
    print(f'mpi node utilisation: {utilisation:.3f}')
    return utilisation


def run(root: pathlib.Path, options: Any) -> tuple[dict[str, Any], list[Any]]:
    """``python -m bench``'s entry: the mixed workload x3; results, no target rows."""
    del options  # the pattern is fixed: x3, as described in the README
    rounds = 3
    makespan, utilisation, overheads = asyncio.run(_run(root, rounds))
    print(
        f'mpi: {len(SIZES) * rounds} calls of sizes {",".join(map(str, SIZES))} (x{rounds}), '
        f'{NODES}-node partition: makespan {makespan:.2f}s, node utilisation '
        f'{utilisation:.3f}, per-call overhead {statistics.median(overheads):.3f}s',
    )
    return {
        'mpi_node_utilisation': utilisation,
        'mpi_makespan_s': makespan,
        'mpi_overhead_s': statistics.median(overheads),
    }, []
