"""A Director's interchange dies: its calls rerun on a new DataFlowKernel, nothing hangs.

Parsl alone never notices a dead interchange: the tasks it held never resolve
and ``DataFlowKernel.cleanup`` blocks forever. These tests kill the real
interchange of a running Director.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from collections.abc import Iterator
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
import zmq
from parsl.executors.errors import BadStateException
from parsl.executors.high_throughput.errors import CommandClientBadError
from parsl.executors.high_throughput.zmq_pipes import CommandClient

from actors.calling.calls import call
from actors.execution import interchange as interchange_module
from actors.execution.blocks import release_parsl
from actors.execution.interchange import InterchangeLost
from actors.execution.interchange import InterchangeWatch
from actors.execution.interchange import QuietInterchangeLoss
from actors.execution.interchange import ask_interchange
from actors.execution.interchange import fail_executor
from actors.execution.interchange import guard_command_client
from actors.execution.interchange import interchange_loss
from actors.execution.interchange import unblock_commands
from actors.store.journal import journal_path
from actors.store.journal import read_journal
from tests.helpers import is_interchange
from tests.helpers import running_directors
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(150)


def interchanges() -> list[psutil.Process]:
    """Live interchanges started by this test process (its Directors run in it)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and is_interchange(child):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


async def wait_status(manager, handle, ready, what: str) -> None:
    """Poll the Director's status until ``ready(status)``."""
    deadline = time.monotonic() + 60
    while not ready(await call(manager, handle, 'status')):
        assert time.monotonic() < deadline, f'{what} never happened'
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def warm_director(run_dir: pathlib.Path) -> AsyncIterator[tuple[Any, Any, psutil.Process]]:
    """One Director on one node that has run a call, and its interchange."""
    async with running_directors(run_dir, nodes=1, partitions=1) as (manager, (handle,), _):
        await call(manager, handle, 'md_sim')
        (interchange,) = interchanges()
        yield manager, handle, interchange


def mpi_probe(manager, handle, num_nodes: int) -> asyncio.Future:
    """An MPI call holding ``num_nodes`` nodes for 3 s, under way."""
    return asyncio.ensure_future(
        call(manager, handle, 'call_tool', 'mpi_probe', {'duration': 3, 'num_nodes': num_nodes}),
    )


def test_killed_interchange_is_replaced_and_calls_rerun(run_dir: pathlib.Path):
    calls = 6

    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1, retries=2) as (
            manager,
            (handle,),
            _,
        ):
            batch = asyncio.ensure_future(
                call(manager, handle, 'md_sim_batch', iterations=calls, params={'duration': 1.5}),
            )
            single = asyncio.ensure_future(
                call(manager, handle, 'call_tool', 'mock_md', {'duration': 0.5}),
            )
            (interchange,) = interchanges()
            await wait_status(manager, handle, lambda s: s.running >= 2, 'two running calls')
            interchange.kill()
            results = await asyncio.wait_for(batch, 60)
            tool_result = await asyncio.wait_for(single, 60)
            status = await call(manager, handle, 'status')
            after = await call(manager, handle, 'md_sim_batch', iterations=2, params={})
            return interchange.pid, results, tool_result, status, after, interchanges()

    old, results, tool_result, status, after, now = asyncio.run(main())
    assert all(r.ok and r.status == 'ok' for r in results), results
    # The calls the dead interchange held ran again, on the new DFK.
    assert any(r.attempts == 2 for r in results), [r.attempts for r in results]
    assert tool_result.ok, tool_result
    assert status.failed == 0 and status.workers_connected == 2
    assert all(r.ok for r in after)
    assert [p.pid for p in now] != [old]
    journaled = list(read_journal(journal_path(run_dir, 'director-0')))
    assert {j['call_id'] for j in journaled} >= {r.call_id for r in [*results, tool_result]}


def test_killed_mpi_interchange_reruns_the_mpi_call(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=2, partitions=1, retries=1) as (
            manager,
            (handle,),
            _,
        ):
            # The MPI executor's interchange is the one that appears after the
            # call (a clean-clone CI run once found two already up here).
            before = {p.pid for p in interchanges()}
            mpi = mpi_probe(manager, handle, 2)
            (mpi_interchange,) = await wait_for(
                lambda: [p for p in interchanges() if p.pid not in before],
                timeout=60,
            )
            await asyncio.sleep(2)
            mpi_interchange.kill()
            result = await asyncio.wait_for(mpi, 90)
            after = await call(manager, handle, 'md_sim')
            return result, after

    result, after = asyncio.run(main())
    assert result.ok and result.status == 'ok', result
    assert result.attempts == 2
    # The rerun got both nodes again (the admission released them when the first run was lost).
    assert sorted(result.nodes) == ['sim-node-001', 'sim-node-002']
    assert result.value['hosts'] == sorted(result.nodes)
    assert after.ok


def test_both_interchanges_dying_together_make_one_replacement(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=2, partitions=1, retries=1) as (
            manager,
            (handle,),
            _,
        ):
            (first,) = interchanges()
            mpi = mpi_probe(manager, handle, 1)
            both = await wait_for(lambda: len(interchanges()) == 2 and interchanges(), timeout=60)
            # The MPI call holds its node (so it is submitted), then runs for a while.
            await wait_status(manager, handle, lambda s: s.mpi_nodes_free == 1, 'the MPI call')
            batch = asyncio.ensure_future(
                call(manager, handle, 'md_sim_batch', iterations=4, params={'duration': 1}),
            )
            await asyncio.sleep(1.5)
            for interchange in both:
                # The Director may already be stopping the second, having seen the first die.
                with contextlib.suppress(psutil.NoSuchProcess):
                    interchange.kill()
            # Reaped by the Director's watch threads: the loss is known.
            await wait_for(lambda: not any(p.is_running() for p in both), timeout=10)
            await asyncio.sleep(0.2)
            # Sent while the DFK is being replaced: refused by the lost one, run on the new one.
            during = asyncio.ensure_future(
                call(manager, handle, 'md_sim_batch', iterations=3, params={}),
            )
            results = await asyncio.wait_for(asyncio.gather(mpi, batch, during), 90)
            return first.pid, results, interchanges()

    first, (mpi, batch, during), now = asyncio.run(main())
    assert mpi.ok and mpi.attempts == 2, mpi
    assert all(r.ok for r in batch), batch
    assert all(r.ok and r.attempts == 1 for r in during), during
    # One new DFK (its main interchange, and the MPI one the rerun started), not two.
    assert first not in {p.pid for p in now} and len(now) == 2


def test_lost_calls_without_retries_say_why_and_the_director_goes_on(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1, retries=0) as (
            manager,
            (handle,),
            _,
        ):
            batch = asyncio.ensure_future(
                call(manager, handle, 'md_sim_batch', iterations=2, params={'duration': 3}),
            )
            (interchange,) = interchanges()
            await wait_status(manager, handle, lambda s: s.running >= 2, 'two running calls')
            interchange.kill()
            results = await asyncio.wait_for(batch, 30)
            # The replacement DFK takes the next calls.
            after = await asyncio.wait_for(call(manager, handle, 'md_sim'), 60)
            return results, after

    results, after = asyncio.run(main())
    assert [r.status for r in results] == ['lost', 'lost']
    assert all('interchange' in r.error_message and 'exited' in r.error_message for r in results)
    assert after.ok


def test_a_failure_to_fail_the_lost_executor_still_replaces_it(
    run_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    def broken(executor, error):
        raise RuntimeError('cannot fail the executor')

    monkeypatch.setattr(interchange_module, 'fail_executor', broken)

    async def main():
        async with warm_director(run_dir) as (manager, handle, interchange):
            interchange.kill()
            await wait_for(lambda: not interchange.is_running(), timeout=10)
            return await asyncio.wait_for(call(manager, handle, 'md_sim'), 60)

    result = asyncio.run(main())
    assert result.ok, (result.status, result.error_type, result.error_message)


def test_shutdown_right_after_the_interchange_died_does_not_hang(run_dir: pathlib.Path):
    async def main():
        async with warm_director(run_dir) as (_, _, interchange):
            interchange.kill()
            await wait_for(lambda: not interchange.is_running(), timeout=10)
            started = time.monotonic()
        return time.monotonic() - started

    took = asyncio.run(main())
    # Bounded by LOST_CLEANUP_TIMEOUT plus reaping, not forever.
    assert took < 30


def test_status_asked_as_the_interchange_dies_still_answers(run_dir: pathlib.Path):
    async def main():
        async with warm_director(run_dir) as (manager, handle, interchange):
            # Stopped, it takes commands but never answers: status (and the
            # watch loop, which asks every second) wait for a reply...
            interchange.suspend()
            try:
                asked = asyncio.ensure_future(call(manager, handle, 'status'))
                await asyncio.sleep(1.5)
                waited = not asked.done()
            finally:
                # ... that never comes once it is dead.
                interchange.kill()
            status = await asyncio.wait_for(asked, 10)
            after = await asyncio.wait_for(call(manager, handle, 'md_sim'), 60)
            later = await asyncio.wait_for(call(manager, handle, 'status'), 10)
            return waited, status, after, later

    waited, status, after, later = asyncio.run(main())
    assert waited
    assert status.workers_connected == 0
    assert after.ok
    # The new interchange answers.
    assert later.workers_connected == later.slots


def test_ask_interchange_stops_waiting_once_the_executor_is_lost():
    never = threading.Event()
    executor = SimpleNamespace(bad_state_is_set=False)

    async def lose_soon() -> None:
        await asyncio.sleep(0.3)
        executor.bad_state_is_set = True

    async def main():
        answered = await ask_interchange(executor, lambda: ['manager'])
        started = time.monotonic()
        loser = asyncio.ensure_future(lose_soon())
        unanswered = await asyncio.wait_for(ask_interchange(executor, never.wait), 5)
        await loser
        took = time.monotonic() - started
        not_asked = await ask_interchange(executor, lambda: pytest.fail('asked a lost executor'))
        return answered, unanswered, took, not_asked

    try:
        answered, unanswered, took, not_asked = asyncio.run(main())
    finally:
        never.set()
    assert answered == ['manager']
    assert unanswered is None and took < 2
    assert not_asked is None


def test_ask_interchange_passes_on_a_failed_command():
    def broken() -> None:
        raise RuntimeError('command channel is bad')

    executor = SimpleNamespace(bad_state_is_set=False)
    with pytest.raises(RuntimeError, match='command channel is bad'):
        asyncio.run(ask_interchange(executor, broken))


@contextlib.contextmanager
def waiting_command() -> Iterator[tuple[CommandClient, threading.Thread, list[BaseException]]]:
    """A real Parsl command client whose command the 'interchange' took and never answers."""
    client = CommandClient('127.0.0.1', (50000, 60000))
    context = zmq.Context()
    interchange = context.socket(zmq.REP)
    interchange.setsockopt(zmq.LINGER, 0)
    interchange.connect(f'tcp://127.0.0.1:{client.port}')
    failures: list[BaseException] = []

    def ask() -> None:
        try:
            client.run('MANAGERS')
        except BaseException as e:
            failures.append(e)

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    try:
        interchange.recv()
        time.sleep(0.02)
        yield client, asking, failures
    finally:
        interchange.close()
        context.term()


def test_unblock_commands_fails_a_command_left_without_a_reply():
    with waiting_command() as (client, asking, failures):
        assert asking.is_alive()
        unblock_commands(SimpleNamespace(label='partition-0', command_client=client))
        asking.join(5)
        assert not asking.is_alive()
        assert [type(e) for e in failures] == [zmq.error.ContextTerminated]
        # Parsl's own shutdown closes it again without blocking; later commands fail at once.
        client.close()
        with pytest.raises(CommandClientBadError):
            client.run('MANAGERS')


@pytest.mark.parametrize('parsl_first', [True, False])
def test_parsl_shutdown_racing_the_unblock_closes_once(parsl_first: bool):
    # Parsl's close (a lost DFK's cleanup) and the Director's unblock at the same
    # moment, with a command waiting: unguarded, this aborted the process in libzmq.
    for _ in range(10):
        with waiting_command() as (client, asking, failures):
            executor = SimpleNamespace(label='partition-0', command_client=client)
            guard_command_client(executor)
            closers = [
                threading.Thread(target=client.close, daemon=True),
                threading.Thread(target=unblock_commands, args=(executor,), daemon=True),
            ]
            for closer in closers if parsl_first else reversed(closers):
                closer.start()
            for closer in closers:
                closer.join(10)
            asking.join(5)
            assert not any(t.is_alive() for t in [*closers, asking])
            assert [type(e) for e in failures] == [zmq.error.ContextTerminated]
            assert client.zmq_socket.closed and client.zmq_context.closed


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])


def test_interchange_watch_reports_an_exit_unless_released():
    lost: list[tuple[object, InterchangeLost]] = []
    reported = threading.Event()

    def on_lost(executor, error):
        lost.append((executor, error))
        reported.set()

    dying = SimpleNamespace(label='partition-7', interchange_proc=_sleeper())
    stopped = SimpleNamespace(label='partition-8', interchange_proc=_sleeper())
    watch = InterchangeWatch(on_lost)
    watch.watch(dying)
    watch.watch(SimpleNamespace(label='threads', interchange_proc=None))
    dying.interchange_proc.kill()
    assert reported.wait(10)
    ((executor, error),) = lost
    assert executor is dying
    assert "'partition-7'" in str(error) and str(dying.interchange_proc.pid) in str(error)

    quiet = InterchangeWatch(on_lost)
    quiet.watch(stopped)
    quiet.release()
    stopped.interchange_proc.terminate()
    stopped.interchange_proc.wait(10)
    time.sleep(0.2)
    assert len(lost) == 1


def test_interchange_loss_is_told_apart_from_other_failures():
    error = InterchangeLost('the interchange exited')
    executor = SimpleNamespace(executor_exception=error)
    wrapped = BadStateException(executor, error)
    assert interchange_loss(error) is error
    assert interchange_loss(wrapped) is error
    other = BadStateException(SimpleNamespace(executor_exception=RuntimeError('blocks')), 'x')
    assert interchange_loss(other) is None
    assert interchange_loss(RuntimeError('tool')) is None
    assert interchange_loss(None) is None


def test_release_parsl_gives_a_hanging_cleanup_a_bounded_time():
    never = threading.Event()
    child = _sleeper()
    executor = SimpleNamespace(interchange_proc=child, provider=None)
    started = time.monotonic()
    try:
        stopped = release_parsl(None, [executor], never.wait, settle=0.1, cleanup_timeout=0.5)
    finally:
        never.set()
    assert time.monotonic() - started < 10
    # The cleanup timed out: what it should have stopped is stopped here.
    assert stopped == 1
    assert child.wait(5) is not None


def test_parsl_task_errors_of_a_lost_interchange_are_not_logged_one_by_one():
    quiet = QuietInterchangeLoss()
    error = InterchangeLost('the interchange exited')
    lost = BadStateException(SimpleNamespace(executor_exception=error), error)

    def record(exception: BaseException | None) -> logging.LogRecord:
        exc_info = None if exception is None else (type(exception), exception, None)
        return logging.LogRecord('parsl.dataflow.dflow', logging.ERROR, '', 0, 'x', (), exc_info)

    assert not quiet.filter(record(lost))
    assert not quiet.filter(record(error))
    assert quiet.filter(record(RuntimeError('a tool failed')))
    assert quiet.filter(record(None))


def test_fail_executor_fails_what_parsl_did_not_reach():
    error = InterchangeLost('the interchange exited')
    held = [Future() for _ in range(3)]
    held[0].set_result('finished before')

    class Interrupted:
        label = 'partition-0'
        executor_exception = error

        def __init__(self) -> None:
            self.tasks = dict(enumerate(held))

        def set_bad_state_and_fail_all(self, exception):
            raise RuntimeError('dictionary changed size during iteration')

    executor = Interrupted()
    fail_executor(executor, error)
    assert held[0].result() == 'finished before'
    for future in held[1:]:
        assert isinstance(future.exception(), BadStateException)
        assert interchange_loss(future.exception()) is error
