"""Elastic nodes: do idle nodes move to the Director with the work, and what does a move cost?

On a 4-node job (2 partitions x 2 nodes x 2 workers per node), simulated on
this machine or, with ``--site``, the first 4 nodes of a real allocation,
measured in the same run:

1. Imbalanced load (``Options.imbalanced``, ``--imbalanced``): Director 0 gets
   ``LIGHT`` calls of ``SECONDS``, Director 1 gets ``HEAVY``, all sent at once; static partitions
   (``elastic=False``) against elastic ones. Job utilisation is busy
   slot-seconds (each call's end - start) / (all 8 slots x makespan, first
   call sent to last call ended). With the default floor of 1 node per
   Director the idle Director keeps a node, so the tail can use at most 3/4
   of the job: the target is measured with ``floor=0``; the ``floor=1``
   figure is printed too.
2. Move time: from the giver's last call ending on a node (idle there) to the
   receiver's first call starting on it, from the calls' recorded nodes and
   times; the moves journal splits it into the coordinator's decision plus
   the giver's release (idle -> ``moving``), the receiver's pool start
   (``moving`` -> ``moved``) and its workers' boot plus dispatch (``moved`` ->
   first call).
3. Balanced load (``BALANCED`` calls of 1 s per Director): elastic makespan
   over static, repeated ``rounds`` times (this VM is noisy: the spread is
   reported).
4. MPI calls mixed with single-slot calls on one Director (4 nodes x 2
   workers): a check, from the calls' nodes and times, that no node ran
   single-slot calls while an MPI call held it, and never more than
   ``workers_per_node`` single-slot calls at once.

Every Director starts measuring once each of its workers has run a warm-up
call (worker boot is ``startup``'s business, not this benchmark's).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import pathlib
import statistics
import time
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from academy.exchange import LocalExchangeFactory
from academy.manager import Manager

from actors.calling.calls import call
from actors.client.launch import launch_directors
from actors.client.launch import wait_ready
from actors.common.results import CallResult
from actors.coordinator.policy import ElasticPolicy
from actors.store.moves import read_moves
from bench.common import READY_TIMEOUT
from bench.common import Options
from bench.common import Ratio
from bench.common import job_nodes
from bench.common import partitions
from bench.common import profile

NODES = 4
DIRECTORS = 2
WORKERS_PER_NODE = 2
SLOTS = NODES * WORKERS_PER_NODE
BALANCED, BALANCED_S = 36, 1.0
MPI_CALLS = ((1, 2.0), (2, 2.0), (1, 1.5), (2, 2.0), (1, 2.0), (2, 1.5))
SINGLE_CALLS, SINGLE_S = 20, 1.0
WARM_S = 1.0

# Only policy timings are tuned; patience 0 would let a Director that merely
# paused between two waves give its nodes away.
POLICY = {'patience': 0.2, 'settle': 5.0, 'period': 0.1}

TARGET_UTILISATION = 0.90
TARGET_RATIO = 1.5
TARGET_BALANCED = 1.03


@dataclasses.dataclass(frozen=True)
class Span:
    """What the checks need of one call: where, when, and whether it was an MPI call."""

    director: str
    nodes: tuple[str, ...]
    start: float
    end: float
    mpi: bool = False

    @classmethod
    def of(cls, result: CallResult) -> Span:
        """The span of a finished call."""
        if result.nodes:
            return cls(result.director, tuple(result.nodes), result.start, result.end, True)
        return cls(result.director, (str(result.node),), result.start, result.end)


def utilisation(spans: Sequence[Span], slots: int, sent: float) -> float:
    """Busy slot-seconds / (``slots`` x makespan from ``sent`` to the last end)."""
    busy = sum(s.end - s.start for s in spans)
    return busy / (slots * (max(s.end for s in spans) - sent))


def move_times(spans: Iterable[Span], giver: str, receiver: str) -> dict[str, tuple[float, float]]:
    """For each node that went from ``giver`` to ``receiver``: (idle since, first call there).

    A node is idle at the giver from the end of the giver's last call on it;
    its move ends when the receiver's first call on it starts.
    """
    last_end: dict[str, float] = {}
    first_start: dict[str, float] = {}
    spans = list(spans)
    for s in spans:
        for node in s.nodes:
            if s.director == giver:
                last_end[node] = max(last_end.get(node, s.end), s.end)
    for s in spans:
        for node in s.nodes:
            if s.director == receiver and node in last_end and s.start >= last_end[node]:
                first_start[node] = min(first_start.get(node, s.start), s.start)
    return {node: (last_end[node], first_start[node]) for node in sorted(first_start)}


def journal_times(moves: Iterable[Mapping[str, Any]], since: float) -> dict[str, dict[str, float]]:
    """Each node's first ``moving`` and ``moved`` times after ``since`` (from the moves journal)."""
    found: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for move in moves:
        if move['at'] >= since and move['event'] in ('moving', 'moved'):
            found[move['node']].setdefault(move['event'], move['at'])
    return dict(found)


def shared(spans: Sequence[Span]) -> int:
    """Single-slot calls that ran on a node some MPI call used in the run (what the check tests)."""
    mpi_nodes = {node for s in spans if s.mpi for node in s.nodes}
    return sum(1 for s in spans if not s.mpi and s.nodes[0] in mpi_nodes)


def oversubscribed(spans: Sequence[Span], workers_per_node: int) -> list[str]:
    """Node-instants where a node ran single-slot calls with an MPI call, or too many.

    At every call start on a node (the only instants at which a node's load
    grows), counts the calls running there: a violation is an MPI call
    together with any other call, or more than ``workers_per_node``
    single-slot calls. Calls that end at the instant another starts do not
    overlap it.
    """
    by_node: dict[str, list[Span]] = collections.defaultdict(list)
    for s in spans:
        for node in s.nodes:
            by_node[node].append(s)
    found = []
    for node, here in sorted(by_node.items()):
        for instant in sorted({s.start for s in here}):
            running = [s for s in here if s.start <= instant < s.end]
            mpi = sum(s.mpi for s in running)
            single = len(running) - mpi
            if (mpi and len(running) > 1) or single > workers_per_node:
                found.append(f'{node} at {instant:.3f}: {mpi} MPI + {single} single-slot')
    return found


# Running the Directors.


async def _group(
    manager: Manager[Any], root: pathlib.Path, elastic: bool, policy: ElasticPolicy | None
) -> Any:
    parts = partitions(root, NODES, DIRECTORS)
    handles = await launch_directors(
        manager,
        parts,
        profile(),
        str(root),
        elastic=elastic,
        policy=policy,
        workers_per_node=WORKERS_PER_NODE,
    )
    await wait_ready(manager, handles, timeout=READY_TIMEOUT)
    await _warm(manager, handles)
    return handles


async def _warm(manager: Manager[Any], handles: Sequence[Any]) -> None:
    """Every worker runs a call, every Director at once, so that none looks calm meanwhile.

    A burst of calls is briefly ``queued`` before the pools hold them; a
    Director warmed alone while the other sat idle could be given a node.
    Each Director gets one call per slot (no lasting queue) at a time.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        statuses = [await call(manager, h, 'status') for h in handles]
        if all(s.workers_connected >= s.slots for s in statuses):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f'workers did not all connect: {statuses}')
        await asyncio.sleep(0.1)
    seen: list[set[tuple[str | None, int | None]]] = [set() for _ in handles]
    while any(len(s) < status.slots for s, status in zip(seen, statuses, strict=True)):
        if time.monotonic() > deadline:
            raise TimeoutError(f'not every worker ran a call: {seen}')
        batches = await asyncio.gather(
            *(
                call(manager, h, 'md_sim_batch', iterations=s.slots, params={'duration': WARM_S})
                for h, s in zip(handles, statuses, strict=True)
            ),
        )
        for found, batch in zip(seen, batches, strict=True):
            found.update((r.node, r.worker) for r in batch if r.ok)


async def _batches(
    manager: Manager[Any], handles: Sequence[Any], counts: Sequence[int], duration: float
) -> tuple[float, list[Span]]:
    """``counts[i]`` calls of ``duration`` to Director ``i``, all at once; (sent at, spans)."""
    sent = time.time()
    batches = await asyncio.gather(
        *(
            call(manager, h, 'md_sim_batch', iterations=n, params={'duration': duration})
            for h, n in zip(handles, counts, strict=True)
        ),
    )
    results = [r for batch in batches for r in batch]
    failed = [r.error_message for r in results if not r.ok]
    if failed:
        raise RuntimeError(f'{len(failed)} calls failed: {failed[:3]}')
    return sent, [Span.of(r) for r in results]


async def _side(
    root: pathlib.Path,
    label: str,
    elastic: bool,
    policy: ElasticPolicy | None,
    balanced_rounds: int,
    *,
    load: tuple[int, int, float],
) -> dict[str, Any]:
    """One group of Directors: balanced rounds first (nodes stay put), then the imbalanced load."""
    found: dict[str, Any] = {'balanced': []}
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        handles = await _group(manager, root, elastic, policy)
        first = [await call(manager, h, 'status') for h in handles]
        names = [s.director for s in first]
        if any(s.moves_in or s.moves_out for s in first):
            print(f'  {label}: WARNING: nodes moved during the warm-up: {[s.nodes for s in first]}')
        for i in range(balanced_rounds):
            sent, spans = await _batches(manager, handles, [BALANCED] * DIRECTORS, BALANCED_S)
            found['balanced'].append(max(s.end for s in spans) - sent)
            print(
                f'  {label}: balanced round {i + 1}/{balanced_rounds}: makespan '
                f'{found["balanced"][-1]:.2f}s',
                flush=True,
            )
        before = [tuple((await call(manager, h, 'status')).nodes) for h in handles]
        light, heavy, seconds = load
        sent, spans = await _batches(manager, handles, [light, heavy], seconds)
        statuses = [await call(manager, h, 'status') for h in handles]
    found.update(
        names=names,
        sent=sent,
        spans=spans,
        before=before,
        after=[tuple(s.nodes) for s in statuses],
        moves_in=[s.moves_in for s in statuses],
        moves_out=[s.moves_out for s in statuses],
        journal=read_moves(root) if elastic else [],
    )
    found['utilisation'] = utilisation(spans, SLOTS, sent)
    found['makespan'] = max(s.end for s in spans) - sent
    print(
        f'  {label}: imbalanced {light}+{heavy} calls of {seconds:g}s: makespan '
        f'{found["makespan"]:.2f}s, job utilisation {found["utilisation"]:.3f}; nodes '
        f'{" / ".join(",".join(n) for n in found["after"])}',
        flush=True,
    )
    return found


async def _mpi_mix(root: pathlib.Path) -> tuple[list[Span], int]:
    """MPI and single-slot calls at once on one Director; (spans, workers per node)."""
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        parts = partitions(root, NODES, 1)
        handles = await launch_directors(
            manager, parts, profile(), str(root), workers_per_node=WORKERS_PER_NODE
        )
        await wait_ready(manager, handles, timeout=READY_TIMEOUT)
        await _warm(manager, handles)
        (handle,) = handles
        # The MPI worker pool starts with the first MPI call.
        await call(manager, handle, 'call_tool', 'mpi_probe', {'num_nodes': 1})
        mpi = [
            call(manager, handle, 'call_tool', 'mpi_probe', {'duration': d, 'num_nodes': n})
            for n, d in MPI_CALLS
        ]
        single = call(
            manager,
            handle,
            'md_sim_batch',
            iterations=SINGLE_CALLS,
            params={'duration': SINGLE_S},
        )
        *mpi_results, single_results = await asyncio.gather(*mpi, single)
    results = [*mpi_results, *single_results]
    failed = [r.error_message for r in results if not r.ok]
    if failed:
        raise RuntimeError(f'{len(failed)} calls failed: {failed[:3]}')
    return [Span.of(r) for r in results], WORKERS_PER_NODE


async def measure(
    root: pathlib.Path, rounds: int, load: tuple[int, int, float] = Options.imbalanced
) -> dict[str, Any]:
    """Every part, one group of Directors at a time (``load``: the imbalanced calls)."""
    found: dict[str, Any] = {}
    sides = (
        ('static', False, None),
        ('elastic floor=0', True, ElasticPolicy(floor=0, **POLICY)),
        ('elastic floor=1', True, ElasticPolicy(floor=1, **POLICY)),
    )
    for label, elastic, policy in sides:
        # Balanced rounds only for the static and floor=0 sides (the floor changes nothing there).
        balanced = rounds if label != 'elastic floor=1' else 0
        print(f'  {label}: starting Directors', flush=True)
        found[label] = await _side(
            root / label.replace(' ', '-').replace('=', ''),
            label,
            elastic,
            policy,
            balanced,
            load=load,
        )
    print('  mpi mix: starting one Director', flush=True)
    found['mpi'] = await _mpi_mix(root / 'mpi')
    return found


def _spread(values: Sequence[float]) -> str:
    return f'{min(values):.3f}-{max(values):.3f}' if len(values) > 1 else f'{values[0]:.3f}'


def _moves(side: Mapping[str, Any]) -> dict[str, Any]:
    """Move times of the imbalanced elastic run: from the calls, split by the journal."""
    giver, receiver = side['names']
    pairs = move_times(side['spans'], giver, receiver)
    journal = journal_times(side['journal'], side['sent'])
    totals, decide, adopt, boot = [], [], [], []
    for node, (idle, first) in pairs.items():
        totals.append(first - idle)
        times = journal.get(node, {})
        if 'moving' in times and 'moved' in times:
            decide.append(times['moving'] - idle)
            adopt.append(times['moved'] - times['moving'])
            boot.append(first - times['moved'])
    return {'nodes': list(pairs), 'total': totals, 'decide': decide, 'adopt': adopt, 'boot': boot}


def _median_max(values: Sequence[float]) -> str:
    if not values:
        return 'none'
    return f'median {statistics.median(values):.2f}s, max {max(values):.2f}s'


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """``python -m bench elastic``: static vs elastic partitions, move times, the MPI check."""
    rounds = 1 if options.quick else 3
    light, heavy, seconds = options.imbalanced
    nodes = job_nodes(NODES)  # a real allocation too small is refused before anything starts
    print(
        f'elastic: {DIRECTORS} partitions x {NODES // DIRECTORS} nodes x {WORKERS_PER_NODE} '
        f'workers on {",".join(nodes)} (site {profile().name}); imbalanced {light} vs {heavy} '
        f'calls of {seconds:g}s, balanced {BALANCED}+{BALANCED} calls of {BALANCED_S:g}s '
        f'x{rounds}; policy {POLICY}',
        flush=True,
    )
    found = asyncio.run(measure(root, rounds, options.imbalanced))
    static, elastic, floor1 = found['static'], found['elastic floor=0'], found['elastic floor=1']
    ratio = elastic['utilisation'] / static['utilisation']
    moves = _moves(elastic)
    moves1 = _moves(floor1)
    balanced = [e / s for s, e in zip(static['balanced'], elastic['balanced'], strict=True)]
    balanced_ratio = statistics.median(balanced)
    spans, wpn = found['mpi']
    violations = oversubscribed(spans, wpn)

    print(
        f'  imbalanced job utilisation: static {static["utilisation"]:.3f}, elastic floor=0 '
        f'{elastic["utilisation"]:.3f} ({ratio:.2f}x; the target), elastic floor=1 '
        f'{floor1["utilisation"]:.3f} ({floor1["utilisation"] / static["utilisation"]:.2f}x; '
        f'the idle Director keeps 1 node, so the tail uses at most 3/4 of the job)'
    )
    print(
        f'  makespans: static {static["makespan"]:.2f}s, floor=0 {elastic["makespan"]:.2f}s, '
        f'floor=1 {floor1["makespan"]:.2f}s (ideal {(light + heavy) * seconds / SLOTS:.1f}s)'
    )
    for label, m in (('floor=0', moves), ('floor=1', moves1)):
        print(
            f'  node move ({label}, {len(m["total"])} nodes {",".join(m["nodes"])}): idle at '
            f'the giver -> first call at the receiver {_median_max(m["total"])}; of which '
            f'decision + release {_median_max(m["decide"])}, pool start '
            f'{_median_max(m["adopt"])}, worker boot + dispatch {_median_max(m["boot"])}'
        )
    print(
        f'  balanced makespan elastic/static: median {balanced_ratio:.3f} of {len(balanced)} '
        f'(spread {_spread(balanced)}; static {_spread(static["balanced"])}s, elastic '
        f'{_spread(elastic["balanced"])}s)'
    )
    singles = sum(not s.mpi for s in spans)
    print(
        f'  mpi mix: {len(spans) - singles} MPI calls + {singles} single-slot calls on '
        f'{NODES} nodes x {wpn} ({shared(spans)} single-slot calls ran on nodes MPI calls '
        f'used): oversubscribed: {len(violations)} node-instants '
        f'({"pass" if not violations else "FAIL"})'
    )
    for line in violations[:10]:
        print(f'    {line}')
    results = {
        'elastic_site': profile().name,
        'elastic_nodes': nodes,
        'elastic_imbalanced': [light, heavy, seconds],
        'elastic_utilisation_static': static['utilisation'],
        'elastic_utilisation': elastic['utilisation'],
        'elastic_utilisation_floor1': floor1['utilisation'],
        'elastic_utilisation_ratio': ratio,
        'elastic_makespans_s': {
            'static': static['makespan'],
            'floor0': elastic['makespan'],
            'floor1': floor1['makespan'],
        },
        'elastic_move_s': moves,
        'elastic_move_s_floor1': moves1,
        'elastic_moves_in': {'floor0': elastic['moves_in'], 'floor1': floor1['moves_in']},
        'elastic_balanced_ratio': balanced_ratio,
        'elastic_balanced_ratios': balanced,
        'elastic_balanced_makespans_s': {
            'static': static['balanced'],
            'elastic': elastic['balanced'],
        },
        'elastic_mpi_oversubscribed': len(violations),
        'elastic_mpi_violations': violations,
        'elastic_mpi_shared_calls': shared(spans),
    }
    rows = [
        Ratio('elastic.utilisation', elastic['utilisation'], TARGET_UTILISATION, False),
        Ratio('elastic.utilisation_ratio', ratio, TARGET_RATIO, False, 'x'),
        Ratio('elastic.balanced_makespan_ratio', balanced_ratio, TARGET_BALANCED, True, 'x'),
        Ratio('elastic.mpi_oversubscribed', float(len(violations)), 0, True),
    ]
    return results, rows
