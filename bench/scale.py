"""Scale: batch size, Director count, and memory per in-flight call.

* batches: one Director runs no-op batches of 1k, 10k and 100k calls, and a
  direct DFK the same batches, alternating; per-call time is median batch
  wall time / calls.
* directors: 8 Directors in one process, each on its own 1-node partition,
  next to 8 direct DFKs; the first 1, 2, 4 and 8 of each share the same
  number of calls at the same time, in slices, the sides taking turns slice
  by slice and the counts taking turns too; per-call time is median wall
  time / all calls. Direct Parsl runs its side twice: through the DFKs
  (``python_app``) and straight to their executors, packed the way the
  Directors submit (``actors.execution.executor_app``, ``actors.worker.wire``).
* memory: the worker pools are paused (SIGSTOP) so that N calls stay in
  flight; the Python memory they hold (``tracemalloc``) is divided by N, for a
  Director's ``md_sim_batch`` and for the same calls on a direct DFK.

Targets: the Director / direct Parsl per-call ratio flat within 10% across
batch sizes (the absolute per-call times are printed and saved too: they follow
the machine, direct Parsl's spread as much, 12.5% against the ratio's 3.8% in
the full run of 2026-12-02). For the Director counts likewise, the per-call time as
such is not the layer's: more Directors bring more interchanges, worker
pools and workers onto the same cores, so it moves with the count on both
sides; what must stay flat within 10% is the Director's per-call time
relative to Parsl's executors doing the same under the same load, i.e. the
layer's cost per call must not grow with the number of Directors. Its
baseline is the executors, not the DFKs, because the Directors submit to
the executors: through a DFK, Parsl's own per-task cost in the one process
grows with the count, and a ratio to it would fall with the count for a
reason that is not the layer's. Each count's ratio is the median of its
repeats' ratios. Every variant is printed and saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pathlib
import signal
import statistics
import time
import tracemalloc
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import psutil

from actors.site.parsl_config import executor_label
from bench.common import Options
from bench.common import Ratio
from bench.common import directors
from bench.common import executor_no_op
from bench.common import parsl_dfk
from bench.common import partitions
from bench.common import profile
from bench.common import wait_parsl_workers
from bench.common import wait_workers

WORKERS_PER_NODE = 2
BATCHES = (1_000, 10_000, 100_000)
QUICK_BATCHES = (1_000, 10_000)
DIRECTOR_COUNTS = (1, 2, 4, 8)
FLATNESS_TARGET = 0.10
MEMORY_TARGET_BYTES = 2048
WARMUP = 100


def flatness(per_call: list[float]) -> float:
    """How far the slowest per-call time is above the fastest (0.1 = 10%)."""
    return max(per_call) / min(per_call) - 1


async def _timed_batch(handles: list[Any], calls: int) -> float:
    """Wall time of ``calls`` no-op calls on every Director at once."""
    start = time.perf_counter()
    batches = await asyncio.gather(*(h.md_sim_batch(iterations=calls) for h in handles))
    wall = time.perf_counter() - start
    if not all(len(b) == calls and all(r.ok for r in b) for b in batches):
        raise RuntimeError(f'a call of a {calls}-call batch failed')
    return wall


def _row(calls: int, walls: list[float], **extra: Any) -> dict[str, Any]:
    wall = statistics.median(walls)
    return {
        **extra,
        'calls': calls,
        'wall_s': wall,
        'per_call_ms': wall / calls * 1000,
        'calls_per_s': calls / wall,
        'repeats': len(walls),
        'walls_s': walls,
    }


def _parsl_batch(app: Any, calls: int) -> float:
    start = time.perf_counter()
    futures = [app('mock_md', {}) for _ in range(calls)]
    if not all(f.result()['ok'] for f in futures):
        raise RuntimeError(f'a direct Parsl call of a {calls}-call batch failed')
    return time.perf_counter() - start


async def batch_sweep(
    root: pathlib.Path, sizes: tuple[int, ...], repeats: dict[int, int]
) -> list[dict[str, Any]]:
    """One Director, growing no-op batches, and the same on a direct DFK, alternating.

    Returns:
        Per size: the Director's median wall and per-call time, and Parsl's.

    """
    rows = []
    director_part = partitions(root / 'director', 1, 1)[0]
    parsl_part = partitions(root / 'parsl', 1, 1)[0]
    async with directors(root / 'director', [director_part], WORKERS_PER_NODE) as (_, handles):
        with parsl_dfk(root, parsl_part, WORKERS_PER_NODE) as app:
            await wait_workers(handles)
            wait_parsl_workers(app, WORKERS_PER_NODE)
            await _timed_batch(handles, WARMUP)
            _parsl_batch(app, WARMUP)
            for size in sizes:
                walls: list[float] = []
                parsl_walls: list[float] = []
                for _ in range(repeats.get(size, 1)):
                    walls.append(await _timed_batch(handles, size))
                    # The Director is idle meanwhile: blocking the loop is fine.
                    parsl_walls.append(_parsl_batch(app, size))
                parsl_ms = statistics.median(parsl_walls) / size * 1000
                rows.append(
                    _row(size, walls, parsl_per_call_ms=parsl_ms, parsl_walls_s=parsl_walls)
                )
    return rows


def _parsl_batches(apps: list[Any], calls: int) -> float:
    """Wall time of ``calls`` no-op calls on every direct DFK at once."""
    start = time.perf_counter()
    futures = [app('mock_md', {}) for _ in range(calls) for app in apps]
    if not all(f.result()['ok'] for f in futures):
        raise RuntimeError(f'a direct Parsl call of a {calls}-call batch failed')
    return time.perf_counter() - start


def _executor_batches(executors: list[Any], calls: int) -> float:
    """Wall time of ``calls`` no-op calls straight to every direct DFK's executor at once."""
    start = time.perf_counter()
    futures = [executor_no_op(e) for _ in range(calls) for e in executors]
    if not all(f.result()['ok'] for f in futures):
        raise RuntimeError(f'a direct executor call of a {calls}-call batch failed')
    return time.perf_counter() - start


def _paired(director: list[float], baseline: list[float]) -> float:
    """The median of the ratios of repeats that ran back to back."""
    return statistics.median(d / b for d, b in zip(director, baseline, strict=True))


async def director_sweep(
    root: pathlib.Path, counts: tuple[int, ...], calls: int, repeats: int, slices: int
) -> list[dict[str, Any]]:
    """The first ``n`` of ``max(counts)`` Directors at once, ``calls / n`` calls each.

    Every count runs the same ``calls`` in all, so that each per-call time
    averages over as many calls and as long a wall time (a count of 1 with
    the per-Director batch of a count of 8 would be measured over an eighth
    of the time, and scatter more).

    All Directors start once and stay up, next to as many direct DFKs (the
    same partitions' shape) that run the same calls straight to their
    executors and through the DFKs, so that each count's per-call time has
    baselines measured under the same load. The ``calls`` of one repeat are
    cut into ``slices`` and the three sides take turns slice by slice
    (D E P, P E D, ...): this machine's speed drifts by tens of percent
    within seconds, and sides run seconds apart would see different machines.
    The counts take turns too, forwards then backwards (1, 2, 4, 8, 8, 4, 2,
    1, ...). Returns, per count, the median of ``repeats``.
    """
    if any(calls % (count * slices) for count in counts):
        raise ValueError(
            f'calls={calls} must split evenly into {slices} slices for each of the '
            f'Director counts {counts}'
        )
    most = max(counts)
    director_parts = partitions(root / 'director', most, most)
    parsl_parts = partitions(root / 'parsl', most, most)
    async with directors(root / 'director', director_parts, WORKERS_PER_NODE) as (_, handles):
        with contextlib.ExitStack() as stack:
            apps = [stack.enter_context(parsl_dfk(root, p, WORKERS_PER_NODE)) for p in parsl_parts]
            executors = [
                app.data_flow_kernel.executors[executor_label(part)]
                for app, part in zip(apps, parsl_parts, strict=True)
            ]
            await wait_workers(handles)
            for app in apps:
                wait_parsl_workers(app, WORKERS_PER_NODE)

            # The Directors are idle while Parsl runs: blocking the loop is fine.
            async def director_side(count: int, batch: int) -> float:
                return await _timed_batch(handles[:count], batch)

            async def executor_side(count: int, batch: int) -> float:
                return _executor_batches(executors[:count], batch)

            async def dfk_side(count: int, batch: int) -> float:
                return _parsl_batches(apps[:count], batch)

            # The executors, the target's baseline, run next to the Directors.
            sides = {'director': director_side, 'executors': executor_side, 'dfks': dfk_side}
            walls: dict[str, dict[int, list[float]]] = {
                name: {count: [] for count in counts} for name in sides
            }
            for side in sides.values():
                await side(most, WARMUP)
            turn = 0
            for i in range(repeats):
                for count in counts if i % 2 == 0 else reversed(counts):
                    batch = calls // count // slices
                    spent = dict.fromkeys(sides, 0.0)
                    for _ in range(slices):
                        order = list(sides) if turn % 2 == 0 else list(reversed(sides))
                        turn += 1
                        for name in order:
                            spent[name] += await sides[name](count, batch)
                    for name, wall in spent.items():
                        walls[name][count].append(wall)
    return [
        _row(
            calls,
            walls['director'][count],
            directors=count,
            parsl_per_call_ms=statistics.median(walls['dfks'][count]) / calls * 1000,
            parsl_walls_s=walls['dfks'][count],
            executor_per_call_ms=statistics.median(walls['executors'][count]) / calls * 1000,
            executor_walls_s=walls['executors'][count],
            ratio_to_executors=_paired(walls['director'][count], walls['executors'][count]),
            ratio_to_dfks=_paired(walls['director'][count], walls['dfks'][count]),
        )
        for count in counts
    ]


@contextlib.contextmanager
def paused_pools(marker: pathlib.Path) -> Iterator[int]:
    """SIGSTOP the worker pools (and their workers) whose command line names ``marker``.

    The provider's launch script detaches the pools from this process, so they
    are found by their ``--logdir``, which lies under the benchmark's own
    temporary run directory.
    """
    stopped = []
    for proc in psutil.process_iter(['cmdline']):
        cmdline = ' '.join(proc.info['cmdline'] or [])
        if 'process_worker_pool' not in cmdline or str(marker) not in cmdline:
            continue
        try:
            stopped += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    if not stopped:
        raise RuntimeError(f'no worker pool of {marker} found to pause')
    for proc in stopped:
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield len(stopped)
    finally:
        for proc in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)


async def _settled_memory(in_flight: Callable[[], Awaitable[int]], calls: int) -> int:
    """Traced bytes once ``calls`` are in flight and memory has stopped growing."""
    deadline = time.monotonic() + 120
    last = -1
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        gc.collect()
        now = tracemalloc.get_traced_memory()[0]
        if await in_flight() >= calls and abs(now - last) < 0.005 * max(now, 1):
            return now
        last = now
    raise TimeoutError(f'{calls} calls did not settle in flight within 120 s')


async def director_memory(root: pathlib.Path, calls: int) -> float:
    """Bytes per in-flight call held by a Director (its DFK included)."""
    site = profile().with_overrides(heartbeat_threshold=300)
    async with directors(root, partitions(root, 1, 1), WORKERS_PER_NODE, site=site) as (
        _,
        handles,
    ):
        (handle,) = handles
        await wait_workers(handles)
        await handle.md_sim_batch(iterations=WARMUP)

        async def in_flight() -> int:
            status = await handle.status()
            return status.queued + status.running

        with paused_pools(root):
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                request = asyncio.ensure_future(handle.md_sim_batch(iterations=calls))
                held = await _settled_memory(in_flight, calls)
            finally:
                tracemalloc.stop()
        results = await request
    if len(results) != calls or not all(r.ok for r in results):
        raise RuntimeError('a call of the memory batch failed')
    return (held - base) / calls


async def parsl_memory(root: pathlib.Path, calls: int) -> float:
    """Bytes per in-flight call held by a direct DFK and the caller's futures."""
    site = profile().with_overrides(heartbeat_threshold=300)
    part = partitions(root, 1, 1)[0]
    with parsl_dfk(root, part, WORKERS_PER_NODE, site=site) as app:
        wait_parsl_workers(app, WORKERS_PER_NODE)
        for future in [app('mock_md', {}) for _ in range(WARMUP)]:
            future.result()
        with paused_pools(root):
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                futures = [app('mock_md', {}) for _ in range(calls)]

                async def in_flight() -> int:
                    return sum(not f.done() for f in futures)

                held = await _settled_memory(in_flight, calls)
            finally:
                tracemalloc.stop()
        outcomes = [f.result() for f in futures]
    if not all(o['ok'] for o in outcomes):
        raise RuntimeError('a call of the Parsl memory batch failed')
    return (held - base) / calls


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """Run the three sweeps; return results and ratio rows."""
    sizes = QUICK_BATCHES if options.quick else BATCHES
    # Short batches are noisy: repeat them and take the median.
    repeats = {1_000: 3, 10_000: 1} if options.quick else {1_000: 5, 10_000: 3, 100_000: 1}
    in_flight = 2000 if options.quick else 10_000
    batches = asyncio.run(batch_sweep(root / 'batches', sizes, repeats))
    # Every count runs these calls in all, in slices that take turns with the baselines'.
    director_calls = 2000 if options.quick else 8000
    slices = 2 if options.quick else 8
    sweeps = 2 if options.quick else 4
    counts = asyncio.run(
        director_sweep(root / 'directors', DIRECTOR_COUNTS, director_calls, sweeps, slices)
    )
    director_bytes = asyncio.run(director_memory(root / 'memory-director', in_flight))
    parsl_bytes = asyncio.run(parsl_memory(root / 'memory-parsl', in_flight))
    batch_flat = flatness([row['per_call_ms'] for row in batches])
    batch_relative = flatness([row['per_call_ms'] / row['parsl_per_call_ms'] for row in batches])
    parsl_flat = flatness([row['parsl_per_call_ms'] for row in batches])
    count_flat = flatness([row['ratio_to_executors'] for row in counts])
    count_dfk = flatness([row['ratio_to_dfks'] for row in counts])
    count_raw = flatness([row['per_call_ms'] for row in counts])
    count_parsl = flatness([row['parsl_per_call_ms'] for row in counts])
    count_executor = flatness([row['executor_per_call_ms'] for row in counts])
    extra = director_bytes - parsl_bytes
    print('scale: one Director, growing batches (per-call time = median wall / calls)')
    for row in batches:
        print(
            f'  {row["calls"]:>7} calls: {row["wall_s"]:7.2f}s, {row["per_call_ms"]:.3f} ms/call'
            f'   (direct parsl {row["parsl_per_call_ms"]:.3f} ms/call, '
            f'ratio {row["per_call_ms"] / row["parsl_per_call_ms"]:.3f})',
        )
    print(
        f'  flatness (slowest/fastest - 1) of the director/parsl ratio: {batch_relative:.1%}   '
        f'(per-call time alone: director {batch_flat:.1%}, direct parsl {parsl_flat:.1%})',
    )
    print(
        f'scale: {DIRECTOR_COUNTS[-1]} Directors in one process, the first '
        f'{", ".join(map(str, DIRECTOR_COUNTS))} busy with {director_calls} calls in all '
        f'(next to {DIRECTOR_COUNTS[-1]} direct DFKs doing the same, through the DFKs and '
        f'straight to their executors, the sides taking turns in {slices} slices; '
        f'ratios: median of {sweeps} repeats)',
    )
    for row in counts:
        print(
            f'  {row["directors"]} Director(s): {row["calls"]:>6} calls, {row["wall_s"]:6.2f}s, '
            f'{row["per_call_ms"]:.3f} ms/call   (executors {row["executor_per_call_ms"]:.3f}, '
            f'ratio {row["ratio_to_executors"]:.3f}; DFKs {row["parsl_per_call_ms"]:.3f}, '
            f'ratio {row["ratio_to_dfks"]:.3f})',
        )
    print(
        f'  flatness (slowest/fastest - 1) of the director/executors ratio: {count_flat:.1%}   '
        f'(of the director/DFKs ratio {count_dfk:.1%}; per-call time alone: director '
        f'{count_raw:.1%}, executors {count_executor:.1%}, DFKs {count_parsl:.1%})',
    )
    print(
        f'scale: memory per in-flight call ({in_flight} in flight): '
        f'director {director_bytes:.0f} B, parsl {parsl_bytes:.0f} B, extra {extra:.0f} B',
    )
    results = {
        'scale': {
            'batches': batches,
            'batch_flatness': batch_flat,
            'batch_flatness_relative_to_parsl': batch_relative,
            'batch_flatness_parsl': parsl_flat,
            'directors': counts,
            'director_flatness': count_flat,
            'director_flatness_relative_to_dfks': count_dfk,
            'director_flatness_director_alone': count_raw,
            'director_flatness_parsl': count_parsl,
            'director_flatness_executors': count_executor,
            'memory_in_flight_calls': in_flight,
            'memory_bytes_per_call_director': director_bytes,
            'memory_bytes_per_call_parsl': parsl_bytes,
            'memory_extra_bytes_per_call': extra,
        },
    }
    rows = [
        # On the ratio, as for the Director counts: the absolute per-call time follows the
        # machine (direct Parsl's spreads as much), not the layer.
        Ratio('scale.batch_flatness', batch_relative, FLATNESS_TARGET, True),
        Ratio('scale.director_flatness', count_flat, FLATNESS_TARGET, True),
        Ratio('scale.memory_extra_bytes_per_call', extra, MEMORY_TARGET_BYTES, True, ' B'),
    ]
    return results, rows
