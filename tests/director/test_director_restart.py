"""Kill -9 a Director's process: its Parsl processes go, it restarts, no call is lost."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import time
from concurrent.futures.process import BrokenProcessPool

import psutil
import pytest
from academy.exchange.cloud.client import spawn_http_exchange
from academy.manager import Manager

from actors.calling.calls import DirectorFailedError
from actors.calling.calls import call
from actors.client.deploy import ProcessPerAgentExecutor
from actors.client.dispatcher import Dispatcher
from actors.client.exchange import free_port
from actors.client.launch import launch_directors
from actors.client.launch import wait_ready
from actors.common.timing import ORPHAN_BOUND
from actors.site.profile import load_site
from actors.store.journal import journal_path
from actors.store.journal import read_journal
from tests.conftest import parsl_processes_of
from tests.helpers import is_interchange
from tests.helpers import make_partitions
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)


def director_process(interchange_parent_of: int) -> psutil.Process | None:
    """The child of this test process that owns an interchange (the Director)."""
    for child in psutil.Process(interchange_parent_of).children(recursive=True):
        try:
            if any(is_interchange(c) for c in child.children()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


async def _kill_mid_call(run_dir: pathlib.Path, send):
    """Start ``send(manager, handle)``, kill the Director once 2 calls are journaled, await it."""
    with spawn_http_exchange('127.0.0.1', free_port(), timeout=30) as factory:
        manager = await Manager.from_exchange_factory(
            factory,
            executors=ProcessPerAgentExecutor(),
            max_retries=2,  # two attempts in all: one restart
        )
        async with manager:
            parts = make_partitions(run_dir, nodes=1, partitions=1)
            (handle,) = await launch_directors(
                manager, parts, load_site('local'), str(run_dir), workers_per_node=2
            )
            (first,) = await wait_ready(manager, [handle], timeout=120)
            pending = asyncio.ensure_future(send(manager, handle))
            journal = journal_path(run_dir, 'director-0')
            await wait_for(lambda: len(list(read_journal(journal))) >= 2, timeout=90)
            director = director_process(os.getpid())
            assert director is not None
            old_parsl = parsl_processes_of(run_dir)
            assert old_parsl
            director.send_signal(signal.SIGKILL)
            killed = time.time()
            await wait_for(
                lambda: not any(p.is_running() for p in old_parsl),
                timeout=ORPHAN_BOUND + 5,
            )
            orphan_time = time.time() - killed
            before = {r['call_key']: r for r in read_journal(journal)}
            try:
                results = await asyncio.wait_for(pending, timeout=150)
            except Exception as e:
                results = e
            status = await call(manager, handle, 'status')
            return first, before, results, status, orphan_time


def _sent_by(path: str, calls: int):
    """A keyed batch of ``calls`` sent through one client path."""

    async def send(manager, handle):
        if path == 'call':
            return await call(
                manager,
                handle,
                'md_sim_batch',
                iterations=calls,
                params={'duration': 1.5},
                batch_key='batch',
            )
        # The MCP server's and the planners' path.
        dispatcher = Dispatcher([handle], manager=manager if path == 'dispatcher' else None)
        return await dispatcher.run_batch(
            'mock_md',
            [{'duration': 1.5}] * calls,
            call_keys=[f'batch/{i}' for i in range(calls)],
        )

    return send


@pytest.mark.parametrize('path', ['call', 'dispatcher', 'dispatcher-in-an-agent'])
def test_killed_director_restarts_and_answers_pending_calls(run_dir: pathlib.Path, path: str):
    """Every client path sends a keyed call again to the restarted Director."""
    calls = 8
    first, before, results, status, orphan_time = asyncio.run(
        _kill_mid_call(run_dir, _sent_by(path, calls))
    )
    assert orphan_time <= ORPHAN_BOUND + 1
    assert status.incarnation != first.incarnation  # it was restarted
    assert not isinstance(results, Exception), results
    assert [r.call_key for r in results] == [f'batch/{i}' for i in range(calls)]
    assert all(r.ok for r in results), results
    # Calls finished before the kill were answered from the journal, the others re-ran.
    for r in results:
        if r.call_key in before:
            assert r.call_id == before[r.call_key]['call_id']
    ok_keys = [j['call_key'] for j in read_journal(journal_path(run_dir, 'director-0')) if j['ok']]
    assert sorted(ok_keys) == sorted(r.call_key for r in results)  # none ran twice


def test_a_call_without_keys_to_a_restarted_director_fails_saying_why(run_dir: pathlib.Path):
    """Not sent again (it may have run): a clear error instead of a wait for ever."""

    async def send(manager, handle):
        return await call(manager, handle, 'md_sim_batch', iterations=6, params={'duration': 1.5})

    first, _, error, status, _ = asyncio.run(_kill_mid_call(run_dir, send))
    assert status.incarnation != first.incarnation
    assert isinstance(error, DirectorFailedError), error
    assert 'restarted while the call was pending' in str(error)
    assert 'give call_key=' in str(error)


def test_director_killed_while_starting_leaves_no_interchange(run_dir: pathlib.Path):
    """Killed before its DataFlowKernel exists: every interchange started so far goes too."""

    async def main():
        with spawn_http_exchange('127.0.0.1', free_port(), timeout=30) as factory:
            manager = await Manager.from_exchange_factory(
                factory,
                executors=ProcessPerAgentExecutor(),
                max_retries=1,  # no restart: the kill ends this Director
            )
            # Academy re-raises the killed Director's failure when the manager closes.
            with pytest.raises(BrokenProcessPool):
                async with manager:
                    parts = make_partitions(run_dir, nodes=1, partitions=1)
                    await launch_directors(manager, parts, load_site('local'), str(run_dir))
                    # The first interchange exists while the DFK is still being built
                    # (the second executor's interchange, the first block come later).
                    (interchange, *_) = await wait_for(
                        lambda: [p for p in parsl_processes_of(run_dir) if _interchange(p)],
                        timeout=120,
                        interval=0.02,
                    )
                    director = psutil.Process(interchange.ppid())
                    started = director.children(recursive=True)
                    assert interchange.pid in {p.pid for p in started}
                    director.send_signal(signal.SIGKILL)
                    killed = time.time()

                    def left() -> list[int]:
                        # A fresh interchange may not have opened its log in run_dir yet:
                        # the processes seen at the kill count by PID.
                        alive = {p.pid for p in started if p.is_running() and not _zombie(p)}
                        return sorted(alive | {p.pid for p in parsl_processes_of(run_dir)})

                    while left() and time.time() < killed + ORPHAN_BOUND + 5:
                        await asyncio.sleep(0.1)
                    elapsed = time.time() - killed
            return elapsed, left()

    elapsed, leftover = asyncio.run(main())
    assert leftover == [], 'Parsl processes outlived the Director'
    assert elapsed <= ORPHAN_BOUND + 1


def _interchange(proc: psutil.Process) -> bool:
    try:
        return is_interchange(proc)
    except psutil.NoSuchProcess:
        return False


def _zombie(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
