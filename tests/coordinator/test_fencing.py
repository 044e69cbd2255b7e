"""Never two owners: a silent Director is fenced before its nodes move; layouts single-owned."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from actors.execution.fence import fence_dir
from actors.execution.fence import fenced
from actors.execution.fence import request_fence
from actors.execution.fence import states
from actors.execution.watchdog import LINEAGE_VARIABLE
from actors.job.partition import write_partitions
from actors.store.moves import LAYOUT_FILE
from actors.store.moves import MoveJournal
from actors.store.moves import current_nodes
from actors.store.moves import nodes_dir
from actors.store.moves import read_layout
from actors.store.moves import read_layout_record
from actors.store.moves import read_moves
from actors.store.moves import resumed_partitions
from tests.conftest import REPO
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

SILENCE = 15.0
"""Seconds of silence after which these tests' coordinators fence a Director."""


# The layout file.


def test_a_layout_with_a_node_under_two_directors_is_not_written(tmp_path: pathlib.Path):
    journal = MoveJournal(tmp_path)
    try:
        assert journal.write_layout({'director-0': ['a'], 'director-1': ['b']}, free=['c'])
        assert not journal.write_layout({'director-0': ['a', 'b'], 'director-1': ['b']})
        assert not journal.write_layout({'director-0': ['a']}, free=['a'])
        assert not journal.write_layout({'director-0': ['a']}, fencing={'a': 'director-1'})
    finally:
        journal.close()
    # The last good layout stays.
    assert read_layout(tmp_path) == {'director-0': ['a'], 'director-1': ['b']}


def _write_raw(run_dir: pathlib.Path, record: dict[str, Any]) -> None:
    nodes_dir(run_dir).mkdir(parents=True, exist_ok=True)
    (nodes_dir(run_dir) / LAYOUT_FILE).write_text(json.dumps(record))


def test_resume_repairs_a_layout_with_a_node_under_two_directors(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
):
    first = write_partitions([['a', 'b'], ['c', 'd'], ['e']], tmp_path)
    # Written by an older coordinator: b and e under two Directors each (an old format: no loans).
    _write_raw(
        tmp_path,
        {'directors': {'director-0': ['a', 'b'], 'director-1': ['c', 'd', 'b', 'e'],
                       'director-2': ['e']}, 'free': []},
    )  # fmt: skip
    resumed = resumed_partitions(list(first), tmp_path)
    # b goes home to director-0 (its partition), e to director-2 (its partition).
    assert [p.nodes for p in resumed] == [('a', 'b'), ('c', 'd'), ('e',)]
    said = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert any('node b was under director-0 and director-1' in m for m in said), said
    assert any('node e was under director-1 and director-2' in m for m in said), said
    all_nodes = [n for p in resumed for n in p.nodes]
    assert sorted(all_nodes) == list('abcde')


def test_borrowed_nodes_go_home_on_resume_and_on_a_restart(tmp_path: pathlib.Path):
    first = write_partitions([['a', 'b'], ['c', 'd']], tmp_path)
    journal = MoveJournal(tmp_path)
    # director-1 borrowed a and b from director-0 for an MPI call.
    journal.write_layout(
        {'director-0': [], 'director-1': ['c', 'd', 'a', 'b']},
        loans={'a': 'director-0', 'b': 'director-0'},
    )
    journal.close()
    # A restarted director-1 starts without them (the coordinator sends them home).
    assert current_nodes('director-1', first[1], tmp_path) == {'c': None, 'd': None}
    # A Director whose nodes all left starts with none, not its old partition.
    assert current_nodes('director-0', first[0], tmp_path) == {}
    assert read_layout_record(tmp_path)['loans'] == {'a': 'director-0', 'b': 'director-0'}
    resumed = resumed_partitions(list(first), tmp_path)
    assert [p.nodes for p in resumed] == [('a', 'b'), ('c', 'd')]


# The watchdog's side of a fence.

_DIRECTOR = """
import os, subprocess, sys, time
from actors.execution.watchdog import Watchdog
dog = Watchdog(fence=(sys.argv[1], 'director-7'))
dog.start()
pool = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
dog.watch(trees=[pool.pid])
print(dog.pid, pool.pid, flush=True)
time.sleep(600)
"""


def _fake_director(run_dir: pathlib.Path) -> tuple[subprocess.Popen[str], int, int]:
    """A process that starts a fencing watchdog and one watched 'pool'; (it, watchdog, pool)."""
    proc = subprocess.Popen(
        [sys.executable, '-c', _DIRECTOR, str(fence_dir(run_dir))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    dog, pool = (int(x) for x in proc.stdout.readline().split())
    return proc, dog, pool


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _never(predicate: Any, seconds: float) -> bool:
    """Whether ``predicate()`` stays falsy for ``seconds`` (checked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return False
        time.sleep(0.1)
    return True


def _end(proc: subprocess.Popen[str], *pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait(timeout=10)


def test_the_watchdog_fences_a_stopped_director_and_confirms(tmp_path: pathlib.Path):
    proc, dog, pool = _fake_director(tmp_path)
    try:
        asyncio.run(wait_for(lambda: states(tmp_path, 'director-7'), timeout=10))
        assert states(tmp_path, 'director-7')[proc.pid]['state'] == 'watching'
        os.kill(proc.pid, signal.SIGSTOP)  # silent, not dead
        pids = request_fence(tmp_path, 'director-7')
        assert pids == [proc.pid]
        at = asyncio.run(wait_for(lambda: fenced(tmp_path, 'director-7', pids), timeout=15))
        # Confirmed only once the pool and the Director itself are gone.
        assert _gone(pool) and _gone(proc.pid)
        assert at <= time.time()
        state = states(tmp_path, 'director-7')[proc.pid]
        assert state['why'] == 'fenced' and state['stopped'] >= 1
    finally:
        _end(proc, pool, dog)


def test_no_confirmation_from_a_watchdog_that_cannot_answer(tmp_path: pathlib.Path):
    proc, dog, pool = _fake_director(tmp_path)
    try:
        asyncio.run(wait_for(lambda: states(tmp_path, 'director-7'), timeout=10))
        os.kill(dog, signal.SIGSTOP)  # its node hung: the watchdog too
        os.kill(proc.pid, signal.SIGSTOP)
        pids = request_fence(tmp_path, 'director-7')
        # No state to wait for: the fence must not be confirmed all along this time.
        assert _never(lambda: fenced(tmp_path, 'director-7', pids), seconds=3)
        assert not _gone(pool)
        # Once it can answer again it fences.
        os.kill(dog, signal.SIGCONT)
        asyncio.run(wait_for(lambda: fenced(tmp_path, 'director-7', pids), timeout=15))
        assert _gone(pool) and _gone(proc.pid)
    finally:
        _end(proc, pool, dog)


def test_a_director_in_the_askers_own_process_is_never_fenced(tmp_path: pathlib.Path):
    """A thread executor runs Directors in the client's process: a fence would kill the run."""
    from actors.execution.fence import SharedProcessError
    from actors.execution.fence import state_path
    from actors.execution.fence import write_state

    write_state(state_path(fence_dir(tmp_path), 'director-0', os.getpid()), 'watching')
    with pytest.raises(SharedProcessError, match='fencing it would kill the whole run'):
        request_fence(tmp_path, 'director-0')
    assert not list(fence_dir(tmp_path).glob('*.request'))  # nothing asked: nothing killed


def test_a_director_that_shuts_down_says_so(tmp_path: pathlib.Path):
    from actors.execution.watchdog import Watchdog

    dog = Watchdog(fence=(fence_dir(tmp_path), 'director-8'))
    saved = os.environ.get(LINEAGE_VARIABLE)
    try:
        dog.start()
        asyncio.run(wait_for(lambda: states(tmp_path, 'director-8'), timeout=10))
        dog.stop()
    finally:
        if saved is None:
            os.environ.pop(LINEAGE_VARIABLE, None)
        else:
            os.environ[LINEAGE_VARIABLE] = saved
    assert states(tmp_path, 'director-8')[os.getpid()]['state'] == 'stopped'
    # Nothing watching: a fence is confirmed at once.
    assert request_fence(tmp_path, 'director-8') == []
    assert fenced(tmp_path, 'director-8', []) is not None
    # A Director no watchdog ever spoke for cannot be confirmed fenced.
    assert request_fence(tmp_path, 'director-9') is None


# Real Directors, each in its own process: one goes silent mid-run.


def _parsl_of(director_pid: int) -> list[psutil.Process]:
    """The Parsl processes (interchange, block scripts, pools) a Director process started."""
    from actors.execution.watchdog import Lineage

    lineage = Lineage(director_pid, time.time())
    return [p for p in psutil.process_iter() if lineage.holds(p)]


def _owned_twice(layout: dict[str, Any]) -> list[str]:
    owned = [n for nodes in layout['directors'].values() for n in nodes]
    owned += list(layout.get('free', [])) + list(layout.get('fencing', {}))
    return sorted({n for n in owned if owned.count(n) > 1})


async def _watch_owners(coordinator: Any, run_dir: pathlib.Path, bad: list, stop: asyncio.Event):
    """Sample the coordinator's layout and the layout file; note any node under two owners."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            layout = await asyncio.wait_for(coordinator.node_layout(), 5)
            bad += [('coordinator', n, layout) for n in _owned_twice(layout)]
        record = read_layout_record(run_dir)
        if record is not None:
            bad += [('layout.json', n, record) for n in _owned_twice(record)]
        await asyncio.sleep(0.2)


def _events(run_dir: pathlib.Path, event: str, nodes: Any) -> list[dict[str, Any]]:
    return [m for m in read_moves(run_dir) if m['event'] == event and m['node'] in set(nodes)]


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


@contextlib.asynccontextmanager
async def _directors_in_processes(run_dir: pathlib.Path, policy: Any) -> Any:
    """Two Directors (2 nodes each) and the coordinator, each in its own process (restartable)."""
    from academy.exchange.cloud.client import spawn_http_exchange
    from academy.manager import Manager

    from actors.client.deploy import ProcessPerAgentExecutor
    from actors.client.exchange import free_port
    from actors.client.launch import launch_directors
    from actors.client.launch import wait_ready
    from actors.site.profile import load_site
    from tests.helpers import make_partitions

    with spawn_http_exchange('127.0.0.1', free_port(), timeout=30) as factory:
        manager = await Manager.from_exchange_factory(
            factory, executors=ProcessPerAgentExecutor(), max_retries=2
        )
        async with manager:
            parts = make_partitions(run_dir, nodes=4, partitions=2)
            handles = await launch_directors(
                manager, parts, load_site('local'), str(run_dir), workers_per_node=2,
                policy=policy,
            )  # fmt: skip
            await wait_ready(manager, handles, timeout=120)
            yield manager, handles, parts


def _watching(run_dir: pathlib.Path, director: str) -> tuple[int, int]:
    """The PIDs of ``director``'s process and of its watchdog (from the watchdog's state)."""
    (pid,) = [p for p, s in states(run_dir, director).items() if s['state'] == 'watching']
    return pid, states(run_dir, director)[pid]['watchdog']


async def _unconfirmed_fence_holds(run_dir: pathlib.Path, coordinator: Any, nodes: list) -> None:
    """A fence its watchdog cannot confirm: the nodes are fenced and given to nobody."""
    from actors.common.timing import FENCE_WAIT
    from actors.common.timing import LOAD_TIMEOUT

    await wait_for(
        lambda: _events(run_dir, 'fencing', nodes), timeout=SILENCE + 2 * LOAD_TIMEOUT + 10
    )
    deadline = time.monotonic() + FENCE_WAIT + 3
    while time.monotonic() < deadline:
        assert not _events(run_dir, 'lost', nodes)
        assert not _events(run_dir, 'reclaimed', nodes)
        await asyncio.sleep(0.2)
    layout = await coordinator.node_layout()
    assert sorted(layout['fencing']) == sorted(nodes), layout


@pytest.mark.timeout(300)
def test_a_silent_director_is_fenced_before_its_nodes_move(run_dir: pathlib.Path):
    from actors.calling.calls import call
    from actors.coordinator.policy import ElasticPolicy
    from actors.store.journal import journal_path
    from actors.store.journal import read_journal

    async def main():
        policy = ElasticPolicy(patience=0.3, settle=1.0, period=0.2, dead_after=SILENCE)
        async with _directors_in_processes(run_dir, policy) as (manager, handles, parts):
            pending = asyncio.gather(
                call(manager, handles[0], 'md_sim_batch', iterations=12,
                     params={'duration': 2.0}, batch_key='silent'),
                call(manager, handles[1], 'md_sim_batch', iterations=16,
                     params={'duration': 1.0}, batch_key='busy'),
            )  # fmt: skip
            journal = journal_path(run_dir, 'director-0')
            await wait_for(lambda: len(list(read_journal(journal))) >= 1, timeout=90)
            pid, dog = _watching(run_dir, 'director-0')
            nodes = (await handles.coordinator.node_layout())['directors']['director-0']
            parsl = _parsl_of(pid)
            assert parsl and nodes
            bad: list = []
            stop = asyncio.Event()
            watch = asyncio.create_task(_watch_owners(handles.coordinator, run_dir, bad, stop))
            try:
                # Its node hangs: the Director and its watchdog stop answering.
                os.kill(dog, signal.SIGSTOP)
                os.kill(pid, signal.SIGSTOP)
                stopped_at = time.time()
                await _unconfirmed_fence_holds(run_dir, handles.coordinator, nodes)
                assert any(p.is_running() for p in parsl)  # its pools ran on, untouched
                # The watchdog wakes: it fences (pools and Director go), then confirms.
                os.kill(dog, signal.SIGCONT)
                await wait_for(lambda: states(run_dir, 'director-0')[pid]['state'] == 'stopped', 30)
                fence = states(run_dir, 'director-0')[pid]
                alive = [p.pid for p in parsl if not _gone(p.pid)]
                await wait_for(lambda: _events(run_dir, 'reclaimed', nodes), timeout=60)
                results = await asyncio.wait_for(pending, timeout=180)
                statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
            finally:
                _resume(dog)
                _resume(pid)
                stop.set()
                await watch
            return parts, nodes, stopped_at, fence, alive, results, statuses, bad

    parts, nodes, stopped_at, fence, alive, (silent, busy), statuses, bad = asyncio.run(main())
    assert fence['why'] == 'fenced' and fence['at'] > stopped_at + SILENCE
    # Its Parsl processes and the Director itself were gone when the fence was confirmed.
    assert alive == [] and _gone(fence['director'])
    # No node of it was given out before the confirmation.
    handed = _events(run_dir, 'lost', nodes) + _events(run_dir, 'reclaimed', nodes)
    handed += [m for m in _events(run_dir, 'moved', nodes) if m['at'] > stopped_at]
    assert handed and min(m['at'] for m in handed) >= fence['at']
    # No node under two owners in any sampled layout (the coordinator's or the file).
    assert bad == []
    # Every call ran: the restarted director-0 answered its keyed calls.
    assert len(silent) == 12 and all(r.ok for r in silent), silent
    assert len(busy) == 16 and all(r.ok for r in busy), busy
    owned = sorted(n for s in statuses for n in s.nodes)
    assert owned == sorted(n for p in parts for n in p.nodes)


@pytest.mark.timeout(300)
def test_nodes_borrowed_by_a_killed_director_go_home_after_its_restart(run_dir: pathlib.Path):
    from actors.calling.calls import call
    from actors.coordinator.policy import ElasticPolicy

    async def main():
        # A long settle: the borrowed node would not go home on its own in this test.
        policy = ElasticPolicy(patience=0.3, settle=600.0, period=0.2, dead_after=SILENCE)
        async with _directors_in_processes(run_dir, policy) as (manager, handles, parts):
            arguments = {'duration': 1.0, 'num_nodes': 3, 'ranks_per_node': 2}
            result = await call(manager, handles[1], 'call_tool', 'mpi_probe', arguments)
            loans = await wait_for(
                lambda: (read_layout_record(run_dir) or {}).get('loans'), timeout=30
            )  # fmt: skip
            first = await call(manager, handles[1], 'status')
            pid, _ = _watching(run_dir, 'director-1')
            os.kill(pid, signal.SIGKILL)
            home = await wait_for(lambda: _events(run_dir, 'home', loans), timeout=90)

            async def statuses() -> list[Any]:
                return await asyncio.gather(*(call(manager, h, 'status') for h in handles))

            deadline = time.monotonic() + 30
            after = await statuses()
            while sorted(after[0].nodes) != sorted(parts[0].nodes) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                after = await statuses()
            return parts, result, loans, first, home, after

    parts, result, loans, first, home, (lender, borrower) = asyncio.run(main())
    assert result.ok, result.error_message
    assert set(loans.values()) == {'director-0'} and set(loans) <= set(parts[0].nodes)
    assert borrower.incarnation != first.incarnation  # it was restarted
    assert {m['to'] for m in home} == {'director-0'}
    # The lender has its nodes back; the restarted borrower only its own.
    assert sorted(lender.nodes) == sorted(parts[0].nodes)
    assert sorted(borrower.nodes) == sorted(parts[1].nodes)
    assert read_layout_record(run_dir)['loans'] == {}


def test_the_coordinator_takes_no_reported_node_that_another_director_owns(
    tmp_path: pathlib.Path,
):
    from actors.coordinator.agent import NodeCoordinator
    from actors.coordinator.policy import Load

    async def main() -> NodeCoordinator:
        coordinator = NodeCoordinator([], str(tmp_path))
        await coordinator.agent_on_startup()
        try:
            coordinator.layout = {'director-0': ['a'], 'director-1': ['b', 'c']}
            coordinator.job_nodes = {'a', 'b', 'c'}
            # director-0 woke up (or restarted from an old layout) and claims b too.
            await coordinator._accept(Load('director-0', ('a', 'b')))
            coordinator._write_layout()
        finally:
            await coordinator.agent_on_shutdown()
        return coordinator

    coordinator = asyncio.run(main())
    assert coordinator.layout == {'director-0': ['a'], 'director-1': ['b', 'c']}
    assert any('b (director-1)' in v for v in coordinator.violations)
    assert read_layout(tmp_path) == {'director-0': ['a'], 'director-1': ['b', 'c']}
