"""What CurveZMQ encryption of the worker pools costs: encrypted vs plain, same run.

Worker pools talk to their interchange with CurveZMQ by default
(``SiteProfile.encrypted``, Parsl's ``encrypted=True``, keys in the run
directory); ``encrypted=false`` in a site profile or ``--unencrypted-workers``
turns it off. Two Directors live side by side in one process, each on its own
simulated 1-node partition with 2 workers and its own run directory, built
from the ``local`` profile: one encrypted, one with
``with_overrides(encrypted=False)``. Next to them, two Director-less DFKs with
the same two profiles, whose executors take no-op calls straight from this
thread (``executor_no_op``): HTEX's own cost, without the Director's per-call
work diluting the difference. Every side is warmed (every worker has run a
call) before timing, and the run checks that exactly the encrypted sides
made CurveZMQ certificates.

Then rounds, the sides taking turns in ABBA order (encrypted first in even
rounds, plain first in odd ones) so that a machine drifting during a pair of
rounds favours neither:

* no-op batches: ``options.calls`` no-op calls at once (``md_sim_batch``; on
  the executors, as many submitted at once) -> calls/s and the per-round
  ratio encrypted / plain; and the CPU time per call: the CPU clocks of this
  process and of the side's own interchange, worker pool and workers (found
  by their run directory) over the batch, divided by the calls. On 2 cores a
  no-op call is CPU-bound across those processes, and their CPU time is
  steadier than calls/s on a shared VM (other guests and other users' jobs
  move the wall clock more than this tree's CPU seconds); the difference
  encrypted - plain is what encryption costs per no-op call;
* round trips: no-op calls one at a time, the sides alternating call by
  call, p50 and p99 per round and over all rounds;
* calls that take seconds: a batch of 8 calls of 1 s on the 2 workers (ideal
  4 s), the caller's wall time from ``md_sim_batch`` to its results -> the
  makespan ratio encrypted / plain.

Two setups of the same code differ by up to ~10% in CPU per no-op call for
no reason of their own (an A/A run, both sides plain, once showed +56 to
+132 us per call in all 6 rounds of one pair of setups), so the rounds are
split over ``SESSIONS`` sessions, each with fresh Directors, DFKs and pools, the
encrypted side created first in even sessions and the plain side first in
odd ones; the per-session medians are printed so that such a bias shows.

Every value is printed per round with its median and spread (min to max).
The targets: the seconds-long batch's makespan ratio <= 1.02 (what
encryption must not cost a real workload), and the no-op throughput ratio
>= 0.75. The latter is a floor, not a goal: no-op calls are where
encryption weighs most, yet the medians of 6 runs were 0.91-1.15 (their 36
rounds pooled: 0.967) when this benchmark was written, and A/A runs (both
sides plain) landed as low as 0.84 under load; 0.75 is below that noise
and above the ~0.71 that the old claim of "~40% per task" would give
(``bench/HISTORY.md``, 2026-12-06).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import psutil
from academy.exchange import LocalExchangeFactory

from actors.site.parsl_config import executor_label
from actors.site.profile import SiteProfile
from bench.common import Options
from bench.common import Ratio
from bench.common import directors
from bench.common import executor_no_op
from bench.common import parsl_dfk
from bench.common import partitions
from bench.common import percentile
from bench.common import profile
from bench.common import wait_parsl_workers
from bench.common import wait_workers

NODES = 1
WORKERS_PER_NODE = 2
WARMUP = 100
ROUND_TRIPS = 100
ROUND_TRIPS_QUICK = 50
LONG_CALLS = 8
LONG_DURATION = 1.0
MAKESPAN_TARGET = 1.02
THROUGHPUT_FLOOR = 0.75
SESSIONS = 2
"""Fresh Directors and DFKs this many times, created in the other order each time."""
SIDES = ('encrypted', 'plain')
LAYERS = ('director', 'executor')
"""``director``: through a Director; ``executor``: straight to a Director-less DFK's HTEX."""

Series = dict[str, list[float]]
"""Per-round values by key (``<measure>_<layer>_<side>``); round trips hold every call."""


def side_order(round_index: int) -> tuple[str, str]:
    """Which side goes first in a round: ABBA (encrypted first in even rounds)."""
    return SIDES if round_index % 2 == 0 else (SIDES[1], SIDES[0])


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of ``values``."""
    return statistics.median(values), min(values), max(values)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two sides measured in the same rounds."""
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def session_rounds(rounds: int, sessions: int = SESSIONS) -> list[range]:
    """Global round indices of each session: ``rounds`` split as evenly as possible."""
    size, rest = divmod(rounds, sessions)
    bounds = [0]
    for s in range(sessions):
        bounds.append(bounds[-1] + size + (1 if s < rest else 0))
    return [range(bounds[s], bounds[s + 1]) for s in range(sessions) if bounds[s + 1] > bounds[s]]


def per_round(values: Sequence[float], rounds: int) -> list[list[float]]:
    """Split round-trip times recorded round after round into ``rounds`` equal lists."""
    size, rest = divmod(len(values), rounds)
    if rest:
        raise ValueError(f'{len(values)} values do not split into {rounds} rounds')
    return [list(values[i * size : (i + 1) * size]) for i in range(rounds)]


def check_certificates(root: pathlib.Path) -> None:
    """Raise unless exactly the encrypted sides' executors made CurveZMQ certificates."""
    for layer in LAYERS:
        for side in SIDES:
            made = any((root / f'{layer}-{side}').rglob('certificates'))
            if made != (side == 'encrypted'):
                raise RuntimeError(
                    f'{layer} {side}: CurveZMQ certificates {"found" if made else "missing"}',
                )


def side_processes(run_dir: pathlib.Path) -> list[psutil.Process]:
    """The interchange and the worker pool, with its workers, of the executor under ``run_dir``.

    The interchange is a child of this process with its log open under
    ``run_dir``; the pool is started by its block's shell (not a child) and
    names its log directory on its command line.
    """
    mark = f'{run_dir}{os.sep}'
    me = os.getpid()
    interchanges: list[psutil.Process] = []
    pools: list[psutil.Process] = []
    for proc in psutil.process_iter(['ppid', 'cmdline']):
        with contextlib.suppress(psutil.Error):
            cmdline = ' '.join(proc.info['cmdline'] or ())
            if 'process_worker_pool' in cmdline and mark in cmdline:
                pools += [proc, *proc.children(recursive=True)]
            elif proc.info['ppid'] == me and any(
                f.path.startswith(mark) for f in proc.open_files()
            ):
                interchanges.append(proc)
    if len(interchanges) != 1 or len(pools) < 1 + WORKERS_PER_NODE:
        raise RuntimeError(
            f'{run_dir}: expected 1 interchange and a pool with {WORKERS_PER_NODE} workers, '
            f'found {len(interchanges)} interchange(s) and {len(pools)} pool process(es)',
        )
    return interchanges + pools


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds the processes (all their threads) have used so far.

    Read from each process's CPU-time clock (``clock_gettime`` on Linux's
    per-process clock id: nanoseconds); where there is none, from
    ``cpu_times`` (clock ticks, 10 ms each: too coarse for one batch).
    """
    total = 0.0
    for proc in processes:
        try:
            total += time.clock_gettime(process_clock(proc.pid))
        except OSError:
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def process_clock(pid: int) -> int:
    """Linux's clock id of a process's CPU time (``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``)."""
    return (~pid << 3) | 2


def _fmt(values: Sequence[float], spec: str) -> str:
    median, low, high = spread(values)
    return (
        f'median {median:{spec}} ({low:{spec}} to {high:{spec}}); '
        f'rounds {", ".join(f"{v:{spec}}" for v in values)}'
    )


async def _director_batch(handle: Any, calls: int) -> None:
    results = await handle.md_sim_batch(iterations=calls)
    if len(results) != calls or not all(r.ok for r in results):
        raise RuntimeError('a Director no-op call failed')


async def _executor_batch(executor: Any, calls: int) -> None:
    # Blocking on purpose: the Directors are idle meanwhile.
    futures = [executor_no_op(executor) for _ in range(calls)]
    for future in futures:
        if not future.result()['ok']:
            raise RuntimeError(f'executor no-op call failed: {future.result()}')


async def _timed(
    batch: Awaitable[None],
    processes: Sequence[psutil.Process],
    calls: int,
) -> tuple[float, float]:
    """Calls/s and CPU microseconds per call of one batch."""
    cpu = cpu_seconds(processes)
    start = time.perf_counter()
    await batch
    wall = time.perf_counter() - start
    return calls / wall, (cpu_seconds(processes) - cpu) / calls * 1e6


async def _director_round_trip(handle: Any) -> float:
    start = time.perf_counter()
    result = await handle.md_sim()
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f'Director no-op call failed: {result}')
    return elapsed


async def _executor_round_trip(executor: Any) -> float:
    start = time.perf_counter()
    outcome = executor_no_op(executor).result()
    elapsed = time.perf_counter() - start
    if not outcome['ok']:
        raise RuntimeError(f'executor no-op call failed: {outcome}')
    return elapsed


async def _director_makespan(handle: Any) -> float:
    start = time.perf_counter()
    results = await handle.md_sim_batch(
        iterations=LONG_CALLS,
        params={'duration': LONG_DURATION},
    )
    wall = time.perf_counter() - start
    if len(results) != LONG_CALLS or not all(r.ok for r in results):
        raise RuntimeError('a seconds-long call failed')
    return wall


async def measure(root: pathlib.Path, calls: int, rounds: int, round_trips: int) -> Series:
    """Run every round on every side, in fresh sessions; the raw per-round values.

    Two setups of the same code differ by a few percent for no reason of
    their own (process placement, creation order; an A/A run with both sides
    plain showed up to 12% in CPU per call for one session), so the rounds
    are split over sessions, each with new Directors, DFKs and pools, the
    encrypted side created first in even sessions and the plain side in odd
    ones. Round indices run on across sessions, so the order stays ABBA.
    """
    series: Series = defaultdict(list)
    for s, indices in enumerate(session_rounds(rounds)):
        await _session(
            root / f'session-{s}',
            creation=side_order(s),
            indices=indices,
            rounds=rounds,
            calls=calls,
            round_trips=round_trips,
            series=series,
        )
    return series


async def _session(
    root: pathlib.Path,
    *,
    creation: tuple[str, str],
    indices: range,
    rounds: int,
    calls: int,
    round_trips: int,
    series: Series,
) -> None:
    encrypted = {'encrypted': True, 'plain': False}
    sites: dict[str, SiteProfile] = {
        side: profile().with_overrides(encrypted=encrypted[side]) for side in creation
    }
    handles: dict[str, Any] = {}
    executors: dict[str, Any] = {}
    apps: list[Any] = []
    # One exchange for both Managers: a handle sends through the exchange of
    # the Manager entered last, which must know both sides' Directors.
    factory = LocalExchangeFactory()
    async with contextlib.AsyncExitStack() as stack:
        for side, site in sites.items():
            director_root = root / f'director-{side}'
            part = partitions(director_root, NODES, 1)[0]
            _, (handles[side],) = await stack.enter_async_context(
                directors(director_root, [part], WORKERS_PER_NODE, factory, site),
            )
            executor_root = root / f'executor-{side}'
            executor_part = partitions(executor_root, NODES, 1)[0]
            app = stack.enter_context(
                parsl_dfk(executor_root, executor_part, WORKERS_PER_NODE, site),
            )
            apps.append(app)
            executors[side] = app.data_flow_kernel.executors[executor_label(executor_part)]
        await wait_workers(list(handles.values()))
        for app in apps:
            wait_parsl_workers(app, NODES * WORKERS_PER_NODE)
        check_certificates(root)
        me = psutil.Process()
        processes = {
            (layer, side): [me, *side_processes(root / f'{layer}-{side}')]
            for layer in LAYERS
            for side in SIDES
        }
        batches: dict[str, Callable[[str, int], Awaitable[None]]] = {
            'director': lambda side, n: _director_batch(handles[side], n),
            'executor': lambda side, n: _executor_batch(executors[side], n),
        }
        trips: dict[str, Callable[[str], Awaitable[float]]] = {
            'director': lambda side: _director_round_trip(handles[side]),
            'executor': lambda side: _executor_round_trip(executors[side]),
        }
        for layer in LAYERS:
            for side in SIDES:
                await batches[layer](side, WARMUP)
        for i in indices:
            order = side_order(i)
            for layer in LAYERS:
                for side in order:
                    rate, cpu = await _timed(
                        batches[layer](side, calls),
                        processes[layer, side],
                        calls,
                    )
                    series[f'rate_{layer}_{side}'].append(rate)
                    series[f'cpu_{layer}_{side}'].append(cpu)
            for _ in range(round_trips):
                for layer in LAYERS:
                    for side in order:
                        series[f'rtt_{layer}_{side}'].append(await trips[layer](side))
            for side in order:
                series[f'makespan_{side}'].append(await _director_makespan(handles[side]))
            print(
                f'  round {i + 1}/{rounds} done ({" then ".join(order)}; '
                f'this session created {creation[0]} first)',
                flush=True,
            )


def _report_throughput(series: Series, rounds: int, results: dict[str, Any]) -> float:
    """Print and save the no-op throughput and CPU rows; the Director's median ratio."""
    for layer in LAYERS:
        enc, plain = series[f'rate_{layer}_encrypted'], series[f'rate_{layer}_plain']
        ratios = paired_ratios(enc, plain)
        cpu_enc, cpu_plain = series[f'cpu_{layer}_encrypted'], series[f'cpu_{layer}_plain']
        added = [e - p for e, p in zip(cpu_enc, cpu_plain, strict=True)]
        cpu_ratios = paired_ratios(cpu_enc, cpu_plain)
        print(f'  no-op batches, {layer}:')
        print(f'    calls/s encrypted      : {_fmt(enc, ".0f")}')
        print(f'    calls/s plain          : {_fmt(plain, ".0f")}')
        print(f'    ratio encrypted/plain  : {_fmt(ratios, ".3f")}')
        print(f'    CPU us/call encrypted  : {_fmt(cpu_enc, ".0f")}')
        print(f'    CPU us/call plain      : {_fmt(cpu_plain, ".0f")}')
        print(f'    CPU added by encryption: {_fmt(added, "+.0f")} us/call')
        by_session = [statistics.median(added[r.start : r.stop]) for r in session_rounds(rounds)]
        print(f'    ... median per session : {", ".join(f"{v:+.0f}" for v in by_session)} us/call')
        print(f'    CPU ratio encr./plain  : {_fmt(cpu_ratios, ".3f")}')
        results[f'encryption_throughput_ratio_{layer}'] = statistics.median(ratios)
        results[f'encryption_throughput_ratio_rounds_{layer}'] = ratios
        results[f'encryption_throughput_rounds_{layer}_encrypted'] = enc
        results[f'encryption_throughput_rounds_{layer}_plain'] = plain
        results[f'encryption_cpu_us_per_call_rounds_{layer}_encrypted'] = cpu_enc
        results[f'encryption_cpu_us_per_call_rounds_{layer}_plain'] = cpu_plain
        results[f'encryption_cpu_added_us_per_call_{layer}'] = statistics.median(added)
        results[f'encryption_cpu_ratio_{layer}'] = statistics.median(cpu_ratios)
        results[f'encryption_cpu_added_us_per_call_sessions_{layer}'] = by_session
    ratio = results['encryption_throughput_ratio_director']
    results['encryption_throughput_ratio'] = ratio
    return ratio


def _report_round_trips(series: Series, rounds: int, results: dict[str, Any]) -> None:
    """Print and save p50 and p99 per round and pooled, and their differences."""
    for layer in LAYERS:
        print(f'  round trips, {layer} (ms):')
        enc_all = series[f'rtt_{layer}_encrypted']
        plain_all = series[f'rtt_{layer}_plain']
        for q in (50, 99):
            enc_q = [percentile(r, q) * 1000 for r in per_round(enc_all, rounds)]
            plain_q = [percentile(r, q) * 1000 for r in per_round(plain_all, rounds)]
            diff = [e - p for e, p in zip(enc_q, plain_q, strict=True)]
            pooled = (percentile(enc_all, q) - percentile(plain_all, q)) * 1000
            print(f'    p{q} encrypted : {_fmt(enc_q, ".2f")}')
            print(f'    p{q} plain     : {_fmt(plain_q, ".2f")}')
            print(f'    p{q} difference: {_fmt(diff, "+.3f")}; all calls pooled {pooled:+.3f}')
            results[f'encryption_rtt_p{q}_ms_{layer}_encrypted'] = percentile(enc_all, q) * 1000
            results[f'encryption_rtt_p{q}_ms_{layer}_plain'] = percentile(plain_all, q) * 1000
            results[f'encryption_rtt_p{q}_diff_ms_{layer}'] = pooled
            results[f'encryption_rtt_p{q}_diff_ms_rounds_{layer}'] = diff


def _report_makespan(series: Series, results: dict[str, Any]) -> float:
    """Print and save the seconds-long batches' wall times; the median ratio."""
    enc, plain = series['makespan_encrypted'], series['makespan_plain']
    ratios = paired_ratios(enc, plain)
    ideal = LONG_CALLS / (NODES * WORKERS_PER_NODE) * LONG_DURATION
    print(f'  {LONG_CALLS} calls of {LONG_DURATION:g}s, caller wall time (s; ideal {ideal:g}):')
    print(f'    encrypted : {_fmt(enc, ".3f")}')
    print(f'    plain     : {_fmt(plain, ".3f")}')
    print(f'    ratio encrypted/plain: {_fmt(ratios, ".4f")}')
    results['encryption_makespan_ratio'] = statistics.median(ratios)
    results['encryption_makespan_ratio_rounds'] = ratios
    results['encryption_makespan_rounds_encrypted'] = enc
    results['encryption_makespan_rounds_plain'] = plain
    return results['encryption_makespan_ratio']


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """Measure both sides; print every round; return results and the ratio rows."""
    calls = min(options.calls, 1000) if options.quick else options.calls
    rounds = min(options.rounds, 4) if options.quick else options.rounds
    round_trips = ROUND_TRIPS_QUICK if options.quick else ROUND_TRIPS
    print(
        f'encryption: CurveZMQ vs plain, {NODES} node x {WORKERS_PER_NODE} workers per side, '
        f'{rounds} rounds ABBA; {calls}-call no-op batches, {round_trips} round trips, '
        f'{LONG_CALLS} calls of {LONG_DURATION:g}s',
        flush=True,
    )
    series = asyncio.run(measure(root, calls, rounds, round_trips))
    results: dict[str, Any] = {
        'encryption_calls': calls,
        'encryption_rounds': rounds,
        'encryption_round_trips': round_trips,
    }
    throughput = _report_throughput(series, rounds, results)
    _report_round_trips(series, rounds, results)
    makespan = _report_makespan(series, results)
    return results, [
        Ratio('encryption_throughput_ratio', throughput, THROUGHPUT_FLOOR, at_most=False),
        Ratio('encryption_makespan_ratio', makespan, MAKESPAN_TARGET, at_most=True),
    ]
