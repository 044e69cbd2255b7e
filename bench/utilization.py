"""Utilization: do the Directors keep every slot of their partitions busy?

2 Directors x 4 slots (a simulated 4-node job, 2 nodes x 2 workers per
partition) run 200 calls of 0.2 s, 100 per Director through ``md_sim_batch``
at the same time. The makespan (first call start to last call end, from the
workers' own timestamps) is compared with the ideal ``ceil(N / slots) x d``
per Director. The same shape on two direct DFKs is measured for reference.
Both sides start once every worker has run a warm-up call (``wait_workers``):
worker processes boot seconds after their pool registers, and that boot
skew, not the layer, used to dominate the makespan (``startup`` measures it).
"""

from __future__ import annotations

import asyncio
import math
import pathlib
from collections.abc import Sequence
from typing import Any

from bench.common import Options
from bench.common import Ratio
from bench.common import directors
from bench.common import parsl_dfk
from bench.common import partitions
from bench.common import wait_parsl_workers
from bench.common import wait_workers

NODES = 4
DIRECTORS = 2
WORKERS_PER_NODE = 2
CALLS = 200
DURATION = 0.2
TARGET = 1.03


def ideal_makespan(calls: int, slots: int, duration: float) -> float:
    """The makespan of ``calls`` equal calls on ``slots`` perfectly fed slots."""
    return math.ceil(calls / slots) * duration


def makespan(spans: Sequence[tuple[float, float]]) -> float:
    """First start to last end of ``(start, end)`` pairs."""
    return max(end for _, end in spans) - min(start for start, _ in spans)


async def director_spans(root: pathlib.Path) -> list[tuple[float, float]]:
    """Run the calls through the Directors; every call's (start, end)."""
    parts = partitions(root, NODES, DIRECTORS)
    per_director = CALLS // DIRECTORS
    async with directors(root, parts, WORKERS_PER_NODE) as (_, handles):
        await wait_workers(handles)
        batches = await asyncio.gather(
            *(
                h.md_sim_batch(iterations=per_director, params={'duration': DURATION})
                for h in handles
            ),
        )
    results = [r for batch in batches for r in batch]
    if not all(r.ok for r in results):
        raise RuntimeError('a utilization call failed')
    return [(r.start, r.end) for r in results]


def parsl_spans(root: pathlib.Path) -> list[tuple[float, float]]:
    """The same calls straight on one DFK per partition."""
    parts = partitions(root, NODES, DIRECTORS)
    per_dfk = CALLS // DIRECTORS
    slots = WORKERS_PER_NODE * parts[0].size
    with (
        parsl_dfk(root, parts[0], WORKERS_PER_NODE) as first,
        parsl_dfk(root, parts[1], WORKERS_PER_NODE) as second,
    ):
        wait_parsl_workers(first, slots)
        wait_parsl_workers(second, slots)
        params = {'duration': DURATION}
        futures = [app('mock_md', params) for app in (first, second) for _ in range(per_dfk)]
        outcomes = [f.result() for f in futures]
    return [(o['start'], o['end']) for o in outcomes]


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """Measure the Directors' and direct Parsl's makespans; return results and ratio row."""
    del options  # already small: about 5 s of work per side
    slots = NODES * WORKERS_PER_NODE // DIRECTORS
    ideal = ideal_makespan(CALLS // DIRECTORS, slots, DURATION)
    director = makespan(asyncio.run(director_spans(root / 'director'))) / ideal
    parsl = makespan(parsl_spans(root / 'parsl')) / ideal
    print(
        f'utilization: {DIRECTORS} Directors x {slots} slots, {CALLS} calls of {DURATION}s, '
        f'ideal makespan {ideal:.2f}s',
    )
    print(f'  director makespan/ideal: {director:.3f}   direct parsl: {parsl:.3f}')
    results = {
        'utilization_makespan_ratio': director,
        'utilization_makespan_ratio_parsl': parsl,
        'utilization_ideal_s': ideal,
    }
    return results, [Ratio('utilization_makespan_ratio', director, TARGET, at_most=True)]
