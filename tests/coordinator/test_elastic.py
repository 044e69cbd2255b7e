"""Nodes follow the work: the ownership rule, the policy, and real moves between Directors."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import pathlib
from typing import Any

import pytest

from actors.calling.calls import call
from actors.coordinator.policy import ElasticPolicy
from actors.coordinator.policy import Load
from actors.coordinator.policy import plan_moves
from actors.job.ownership import NodeOwnership
from actors.job.ownership import Owner
from actors.job.ownership import OwnershipError
from actors.job.ownership import check_layout
from actors.site.profile import load_site
from actors.store.moves import read_layout
from actors.store.moves import read_moves
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(30)


# The rule.


def test_a_node_changes_owner_only_as_the_rule_allows():
    view = NodeOwnership.of('d0', ['a', 'b'], keep_history=True)
    with pytest.raises(OwnershipError, match="'a': pool of d0 cannot become mpi of d0"):
        view.change('a', Owner('mpi', 'd0', call='c'), 'mpi')  # not drained first
    view.change('a', Owner('held', 'd0'), 'drained')
    view.change('a', Owner('mpi', 'd0', call='c'), 'mpi')
    with pytest.raises(OwnershipError, match='cannot become pool of d1'):
        view.change('a', Owner('pool', 'd1'), 'steal')
    with pytest.raises(OwnershipError, match='only a pool or held node moves'):
        view.remove('a', 'moved out')
    with pytest.raises(OwnershipError, match='already pool of d0'):
        view.add('b', Owner('pool', 'd0'), 'twice')
    view.change('a', Owner('held', 'd0'), 'mpi ended')
    view.change('a', Owner('pool', 'd0'), 'pool back')
    assert [c.after.role for c in view.history] == ['held', 'mpi', 'held', 'pool']
    with pytest.raises(OwnershipError, match="unknown owner role 'boss'"):
        Owner('boss', 'd0')  # type: ignore[arg-type]


def test_check_layout_names_every_node_with_no_or_two_owners():
    check_layout('abcd', {'d0': 'ab', 'd1': 'c'}, moving=['d'])
    with pytest.raises(OwnershipError, match=r"b: \['d0', 'd1'\].*d: nobody"):
        check_layout('abcd', {'d0': 'ab', 'd1': 'bc'})
    with pytest.raises(OwnershipError, match="holds 'z', which is not a node"):
        check_layout('ab', {'d0': 'abz'})


# The policy.


def _load(name: str, nodes: str, idle: str = '', queued: int = 0, **more: Any) -> Load:
    return Load(name, tuple(nodes), tuple(idle), queued, workers_per_node=2, **more)


def _plan(loads, policy=None, now=100.0, calm=None, arrived=None):
    return plan_moves(
        loads, policy or ElasticPolicy(), now=now, calm_since=calm or {}, arrived=arrived or {}
    )


def test_idle_nodes_go_to_the_director_with_a_queue_down_to_the_floor():
    moves = _plan([_load('d0', 'ab', idle='ab'), _load('d1', 'cd', queued=30)])
    assert [(m.giver, m.receiver, m.nodes, m.why) for m in moves] == [('d0', 'd1', ('a',), 'load')]
    moves = _plan(
        [_load('d0', 'ab', idle='ab'), _load('d1', 'cd', queued=30)], ElasticPolicy(floor=0)
    )
    assert moves[0].nodes == ('a', 'b')


def test_no_move_for_a_balanced_load_or_a_small_queue():
    assert _plan([_load('d0', 'ab', queued=8), _load('d1', 'cd', queued=8)]) == []
    # Two queued calls fit the idle slots the receiver has: nothing moves.
    assert _plan([_load('d0', 'ab', idle='ab'), _load('d1', 'cd', idle='c', queued=2)]) == []


def test_hysteresis_patience_and_settle_keep_nodes_from_ping_ponging():
    loads = [_load('d0', 'abc', idle='abc'), _load('d1', 'd', queued=30)]
    # The giver had queued calls 0.5 s ago: not calm long enough.
    assert _plan(loads, calm={'d0': 99.5}) == []
    # Node a arrived 2 s ago: it stays; b goes.
    moves = _plan(loads, arrived={'a': 98.0})
    assert moves[0].nodes == ('b', 'c')


def test_min_and_max_per_director():
    policy = ElasticPolicy(minimum={'d0': 2}, maximum={'d1': 3})
    moves = _plan([_load('d0', 'abcd', idle='abcd'), _load('d1', 'e', queued=40)], policy)
    assert moves[0].nodes == ('a', 'b')  # d1 may own 3; d0 keeps 2
    with pytest.raises(Exception, match=r"maximum\['d1'\] = 0 is below its floor 1"):
        ElasticPolicy(maximum={'d1': 0})


def test_an_mpi_call_borrows_and_the_node_goes_home_after():
    moves = _plan([_load('d0', 'ab', idle='ab'), _load('d1', 'cd', mpi_need=2)])
    # The lender's floor too: the call needs the whole job.
    assert [(m.receiver, m.nodes, m.why) for m in moves] == [('d1', ('a', 'b'), 'borrow')]
    home = _plan([_load('d0', 'a', queued=4), _load('d1', 'bcd', idle='b', borrowed={'b': 'd0'})])
    assert [(m.giver, m.receiver, m.nodes, m.why) for m in home] == [('d1', 'd0', ('b',), 'return')]


def test_a_draining_director_neither_gives_nor_takes():
    loads = [_load('d0', 'ab', idle='ab', draining=True), _load('d1', 'cd', queued=30)]
    assert _plan(loads) == []


# Real moves.


def _overlaps(results, workers_per_node: int) -> dict[str, int]:
    """The most calls that ran at once on each node (from their recorded nodes and times)."""
    events = collections.defaultdict(list)
    for r in results:
        for node in r.nodes or [r.node]:
            weight = workers_per_node if r.nodes else 1  # an MPI call takes the whole node
            events[node] += [(r.start, weight), (r.end, -weight)]
    most = {}
    for node, changes in events.items():
        level = peak = 0
        for _, step in sorted(changes, key=lambda e: (e[0], e[1])):
            level += step
            peak = max(peak, level)
        most[node] = peak
    return most


def _batch(manager, handle, calls: int, duration: float):
    """``calls`` mock MD calls of ``duration`` seconds as one ``md_sim_batch``."""
    return call(manager, handle, 'md_sim_batch', iterations=calls, params={'duration': duration})


@contextlib.asynccontextmanager
async def watching_layout(manager, handles, parts):
    """Check, all along the ``with`` block, that no node is owned twice; yields the samples."""
    job = [n for p in parts for n in p.nodes]
    seen: list = []
    stop = asyncio.Event()
    watch = asyncio.create_task(_watch_layout(manager, handles, job, seen, stop))
    try:
        yield seen
    finally:
        stop.set()
        await watch


async def _views(manager, handles) -> dict[str, list[str]]:
    statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
    return {s.director: s.nodes for s in statuses}


async def _watch_layout(manager, handles, job_nodes, seen: list, stop: asyncio.Event):
    """Check, every 0.1 s, that no node is owned by two Directors at once."""
    while not stop.is_set():
        views = await _views(manager, handles)
        owned = [n for nodes in views.values() for n in nodes]
        if len(owned) != len(set(owned)):
            # Two statuses are not one instant: a node handed back between the two
            # answers shows twice once. A node really owned twice stays so.
            await asyncio.sleep(0.5)
            views = await _views(manager, handles)
            owned = [n for nodes in views.values() for n in nodes]
        assert len(owned) == len(set(owned)), views
        assert set(owned) <= set(job_nodes)
        seen.append(views)
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
def test_nodes_move_to_the_director_with_work_and_no_node_is_oversubscribed(run_dir: pathlib.Path):
    async def main():
        policy = ElasticPolicy(floor=0, patience=0.5, settle=2.0, period=0.2)
        async with running_directors(run_dir, policy=policy) as (manager, handles, parts):
            async with watching_layout(manager, handles, parts) as seen:
                light = _batch(manager, handles[0], 2, 1)
                heavy = _batch(manager, handles[1], 40, 1)
                results = await asyncio.gather(light, heavy)
                statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
                layout = await handles.coordinator.node_layout()
            return parts, results, statuses, layout, seen

    parts, (light, heavy), statuses, layout, seen = asyncio.run(main())
    assert all(r.ok for r in light + heavy)
    assert len({r.call_id for r in heavy}) == len(heavy) == 40
    # Director 1 ran calls on nodes of partition 0 once they moved.
    assert {r.node for r in heavy} & set(parts[0].nodes)
    assert statuses[1].moves_in >= 1 and statuses[0].moves_out >= 1
    assert layout['violations'] == [] and layout['moves'] >= 1
    assert max(_overlaps(light + heavy, 2).values()) <= 2
    assert len(seen) > 5
    moved = [m for m in read_moves(run_dir) if m['event'] == 'moved']
    assert moved and all(m['from'] == 'director-0' and m['to'] == 'director-1' for m in moved)
    layout_file = read_layout(run_dir)
    assert sorted(n for nodes in layout_file.values() for n in nodes) == sorted(
        n for p in parts for n in p.nodes
    )


@pytest.mark.timeout(180)
def test_nodes_move_on_a_simulated_pbs_job(run_dir: pathlib.Path):
    # mpiexec (hydra, fork launcher) starts each node's pool, as PALS would on a PBS job.
    profile = load_site('pbs').with_overrides(launcher_args='-launcher fork --ppn 1')

    async def main():
        policy = ElasticPolicy(floor=0, patience=0.5, settle=2.0, period=0.2)
        async with running_directors(run_dir, policy=policy, profile=profile) as (
            manager,
            handles,
            parts,
        ):
            heavy = await _batch(manager, handles[1], 30, 1)
            return parts, heavy

    parts, heavy = asyncio.run(main())
    assert all(r.ok for r in heavy) and len(heavy) == 30
    assert {r.node for r in heavy} & set(parts[0].nodes)
    assert max(_overlaps(heavy, 2).values()) <= 2


@pytest.mark.timeout(120)
def test_static_partitions_keep_their_nodes(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, elastic=False) as (manager, handles, parts):
            heavy = await _batch(manager, handles[1], 8, 0.5)
            return parts, heavy, handles.coordinator

    parts, heavy, coordinator = asyncio.run(main())
    assert coordinator is None
    assert {r.node for r in heavy} <= set(parts[1].nodes)
    assert not (run_dir / 'nodes' / 'moves.jsonl').exists()


# Faults.


async def _first_event(run_dir: pathlib.Path, event: str, timeout: float = 60) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = [m for m in read_moves(run_dir) if m['event'] == event]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f'no {event!r} in the move journal within {timeout}s')


@pytest.mark.timeout(180)
def test_a_node_whose_pool_will_not_start_at_the_receiver_goes_back(run_dir: pathlib.Path):
    # Director 1's blocks cannot start on sim-node-002 (Director 0's blocks can).
    refuse = (
        'case "$PWD" in */director-1) '
        'grep -qx sim-node-002 "$PBS_NODEFILE" && { echo refused >&2; exit 3; };; esac'
    )
    profile = load_site('local').with_overrides(worker_init=refuse)

    async def main():
        policy = ElasticPolicy(floor=0, patience=0.3, settle=1.0, period=0.2)
        async with running_directors(run_dir, policy=policy, profile=profile) as (
            manager,
            handles,
            parts,
        ):
            async with watching_layout(manager, handles, parts):
                heavy = asyncio.ensure_future(_batch(manager, handles[1], 30, 1))
                back = await _first_event(run_dir, 'back', timeout=90)
                results = await heavy
                statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
            return back, results, statuses

    back, results, statuses = asyncio.run(main())
    assert back['node'] == 'sim-node-002' and back['to'] == 'director-0'
    assert all(r.ok for r in results) and len(results) == 30
    assert 'sim-node-002' in statuses[0].nodes
    assert 'sim-node-002' not in {r.node for r in results}
    assert 'sim-node-001' in statuses[1].nodes


@pytest.mark.timeout(120)
def test_a_leaving_node_past_its_deadline_reruns_its_calls_once(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, partitions=1, nodes=2) as (manager, (h,), _):
            batch = asyncio.ensure_future(_batch(manager, h, 4, 3))

            async def busy_node() -> str | None:
                # Wait for the state (every call held by a pool), not for a guessed time.
                status = await call(manager, h, 'status')
                if status.running < 4 or batch.done():
                    return None
                load = await call(manager, h, 'node_load')
                busy = [n for n in load.nodes if n not in load.idle]
                return busy[0] if busy else None

            busy, left = None, []
            for _ in range(600):
                busy = await busy_node()
                if busy is not None:
                    # The pool running the calls leaves (once the Director sees it serving).
                    left = await call(
                        manager, h, 'release_nodes', [busy], keep=0, idle_only=False,
                        deadline=0.5,
                    )  # fmt: skip
                    if left:
                        break
                await asyncio.sleep(0.1)
            assert busy is not None, 'no pool ran the calls within 60 s'
            results = await batch
            status = await call(manager, h, 'status')
            return busy, left, results, status

    busy, left, results, status = asyncio.run(main())
    assert left == [busy]
    assert busy not in status.nodes and len(status.nodes) == 1 and status.moves_out == 1
    # Every call answered once, ok; the ones stopped on the leaving node ran again.
    assert len(results) == 4 and all(r.ok for r in results)
    assert len({r.call_id for r in results}) == 4
    assert any(r.attempts > 1 for r in results)
    assert all(r.node != busy for r in results if r.attempts > 1)


@pytest.mark.timeout(180)
def test_a_director_that_stops_loses_its_nodes_to_the_others(run_dir: pathlib.Path):
    async def main():
        policy = ElasticPolicy(patience=0.3, settle=1.0, period=0.2, dead_after=15.0)
        async with running_directors(run_dir, policy=policy) as (manager, handles, parts):
            heavy = asyncio.ensure_future(_batch(manager, handles[1], 40, 1))
            # Mid-run, while nodes move to director-1: director-0 goes away.
            await _first_event(run_dir, 'moving')
            await manager.shutdown(handles[0].agent_id, blocking=True)
            await _first_event(run_dir, 'reclaimed', timeout=60)
            results = await heavy
            status = await call(manager, handles[1], 'status')
            layout = await handles.coordinator.node_layout()
            return parts, results, status, layout

    parts, results, status, layout = asyncio.run(main())
    assert all(r.ok for r in results) and len(results) == 40
    assert sorted(status.nodes) == sorted(n for p in parts for n in p.nodes)
    assert layout['dead'] == ['director-0'] and layout['violations'] == []
    lost = [m['node'] for m in read_moves(run_dir) if m['event'] == 'lost']
    assert lost and set(lost) <= set(parts[0].nodes)


@pytest.mark.timeout(120)
def test_leaving_while_nodes_move_leaves_no_parsl_process(run_dir: pathlib.Path):
    async def main():
        policy = ElasticPolicy(floor=0, patience=0.2, settle=1.0, period=0.1)
        async with running_directors(run_dir, policy=policy) as (manager, handles, _):
            heavy = asyncio.ensure_future(_batch(manager, handles[1], 40, 1))
            await _first_event(run_dir, 'moving')
        heavy.cancel()
        with contextlib.suppress(BaseException):
            await heavy

    asyncio.run(main())
    # The leak check (conftest) finds no interchange, pool or mpiexec left.
    events = [m['event'] for m in read_moves(run_dir)]
    assert 'moving' in events


# MPI calls and nodes.


def _mpi(manager, handle, nodes: int, duration: float = 1.0):
    arguments = {'duration': duration, 'num_nodes': nodes, 'ranks_per_node': 2}
    return call(manager, handle, 'call_tool', 'mpi_probe', arguments)


@pytest.mark.timeout(180)
def test_mpi_and_single_slot_calls_never_share_a_node(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=4, partitions=1) as (manager, (h,), _):
            single = _batch(manager, h, 16, 1)
            mpi = [_mpi(manager, h, n) for n in (2, 1, 3, 2)]
            results = await asyncio.gather(single, *mpi)
            status = await call(manager, h, 'status')
            return results[0], results[1:], status

    single, mpi, status = asyncio.run(main())
    assert all(r.ok for r in single + mpi), [r.error_message for r in single + mpi]
    for r in mpi:
        # The ranks ran on exactly the nodes the Director drained for the call.
        assert r.value['hosts'] == sorted(r.nodes)
        assert len(r.nodes) == r.resources['num_nodes']
    # From the calls' recorded nodes and times: no node ever held more than its 2 slots.
    assert max(_overlaps(single + mpi, 2).values()) <= 2
    # A node drained for an MPI call let its running calls finish: none was stopped and rerun.
    assert [r.attempts for r in single] == [1] * 16
    # After the MPI calls every node has its pool back.
    assert set(status.node_roles.values()) == {'pool'} and status.slots == 8


@pytest.mark.timeout(180)
def test_an_mpi_call_larger_than_its_director_borrows_nodes_and_gives_them_back(
    run_dir: pathlib.Path,
):
    async def main():
        policy = ElasticPolicy(patience=0.3, settle=1.0, period=0.2)
        async with running_directors(run_dir, policy=policy) as (manager, handles, parts):
            result = await _mpi(manager, handles[1], 3)
            returned = await _first_event(run_dir, 'moved', timeout=60)
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline:
                if any(m['why'] == 'return' for m in read_moves(run_dir) if m['event'] == 'moved'):
                    break
                await asyncio.sleep(0.2)
            statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
            return parts, result, returned, statuses

    parts, result, first_move, statuses = asyncio.run(main())
    assert result.ok, result.error_message
    assert len(result.nodes) == 3 and set(result.nodes) & set(parts[0].nodes)
    assert result.value['hosts'] == sorted(result.nodes)
    assert first_move['why'] == 'borrow' and first_move['to'] == 'director-1'
    whys = [m['why'] for m in read_moves(run_dir) if m['event'] == 'moved']
    assert 'return' in whys
    assert sorted(statuses[0].nodes) == sorted(parts[0].nodes)


# Across processes, and durable.


@pytest.mark.timeout(240)
def test_nodes_move_between_directors_in_separate_processes(run_dir: pathlib.Path):
    from academy.exchange.cloud.client import spawn_http_exchange

    from actors.client.deploy import ProcessPerAgentExecutor
    from actors.client.exchange import free_port

    async def main():
        policy = ElasticPolicy(floor=0, patience=0.5, settle=2.0, period=0.2)
        with spawn_http_exchange('127.0.0.1', free_port(), timeout=30) as factory:
            async with running_directors(
                run_dir, factory=factory, executor=ProcessPerAgentExecutor(), policy=policy
            ) as (manager, handles, parts):
                heavy = await _batch(manager, handles[1], 30, 1)
                return parts, heavy

    parts, heavy = asyncio.run(main())
    assert all(r.ok for r in heavy) and len(heavy) == 30
    assert {r.node for r in heavy} & set(parts[0].nodes)
    moved = [m for m in read_moves(run_dir) if m['event'] == 'moved']
    assert moved and {m['to'] for m in moved} == {'director-1'}


def test_resume_starts_from_the_last_layout(tmp_path: pathlib.Path):
    from actors.job.partition import write_partitions
    from actors.store.moves import MoveJournal
    from actors.store.moves import resumed_partitions

    first = write_partitions([['a', 'b'], ['c', 'd'], ['e']], tmp_path)
    journal = MoveJournal(tmp_path)
    # b moved to director-1; director-2 died and its node e is free.
    journal.write_layout({'director-0': ['a'], 'director-1': ['c', 'd', 'b']}, free=['e'])
    journal.close()
    resumed = resumed_partitions(list(first), tmp_path)
    # The free node goes to the Director with the fewest.
    assert [p.nodes for p in resumed] == [('a',), ('c', 'd', 'b'), ('e',)]
    for p in resumed:
        assert pathlib.Path(p.nodefile).read_text().split() == list(p.nodes)


@pytest.mark.timeout(400)
def test_moves_racing_a_walltime_drain_lose_no_call(run_dir: pathlib.Path):
    import time

    from actors.job.walltime import Walltime

    async def attempt(lead: float, duration: float, where: pathlib.Path):
        policy = ElasticPolicy(floor=0, patience=0.3, settle=1.0, period=0.2)
        # The drain begins `lead` s after the launch, while nodes move and calls still wait.
        walltime = Walltime(time.time() + lead + 32, 32)
        async with running_directors(where, policy=policy, walltime=walltime) as (
            manager,
            handles,
            parts,
        ):
            if time.time() > walltime.drain_at - 4:
                return None  # the start took the time meant for moves: not the race
            async with watching_layout(manager, handles, parts):
                heavy = await _batch(manager, handles[1], 60, duration)
                statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
            return heavy, statuses

    # A busy machine starts Directors slowly: give the race more time rather than miss it
    # (and calls long enough that the drain still finds them waiting).
    for lead, duration in ((10.0, 1.0), (30.0, 2.5), (90.0, 7.0)):
        outcome = asyncio.run(attempt(lead, duration, run_dir / f'lead-{lead:.0f}'))
        if outcome is not None:
            break
    assert outcome is not None, 'the Directors never started 4 s before the drain'
    heavy, statuses = outcome
    # Every call answered once: run, or refused by the drain; none lost.
    assert len(heavy) == 60 and len({r.call_id for r in heavy}) == 60
    assert {r.status for r in heavy} <= {'ok', 'refused', 'cancelled'}, {r.status for r in heavy}
    assert any(r.ok for r in heavy) and all(s.draining for s in statuses)
    assert statuses[1].moves_in >= 1


@pytest.mark.timeout(120)
def test_a_restarted_coordinator_frees_a_node_that_was_moving(run_dir: pathlib.Path):
    """The coordinator dies between a release and the adoption: its successor frees the node."""
    from actors.client.launch import launch_coordinator
    from tests.helpers import wait_for

    async def main():
        # Slow moves: nothing moves by itself while the test plays the dead coordinator.
        policy = ElasticPolicy(floor=0, patience=3600, settle=3600, period=0.2)
        async with running_directors(run_dir, policy=policy) as (manager, handles, parts):
            await wait_for(lambda: read_layout(run_dir), timeout=30)  # its first layout
            await manager.shutdown(handles.coordinator, blocking=True, timeout=30)
            node = parts[0].nodes[-1]
            # What the dead coordinator had started: the giver released the node (once
            # its pool is seen idle: node_load looks at the pools).
            while not (await call(manager, handles[0], 'node_load')).idle or (
                await call(manager, handles[0], 'release_nodes', [node], keep=0) != [node]
            ):
                await asyncio.sleep(0.1)
            successor = await launch_coordinator(
                manager, handles, str(run_dir), ElasticPolicy(floor=0, orphan_grace=1.0)
            )

            async def placed() -> dict[str, Any] | None:
                layout = await successor.node_layout()
                owners = [d for d, nodes in layout['directors'].items() if node in nodes]
                return layout if owners else None

            layout = None
            while layout is None:
                layout = await placed()
                await asyncio.sleep(0.2)
            statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
            return node, layout, statuses

    node, layout, statuses = asyncio.run(main())
    assert layout['violations'] == []
    assert sum(node in s.nodes for s in statuses) == 1  # one owner, with a pool there
    events = [m for m in read_moves(run_dir) if m['node'] == node]
    assert [m['event'] for m in events][-2:] == ['free', 'reclaimed'], events
    assert events[-2]['why'] == 'owned by nobody after a coordinator restart'
