"""Fault injection with real processes: lost workers and pools, cancellation, timeouts."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal

import psutil
import pytest

from actors.calling.calls import call
from actors.store.journal import journal_path
from actors.store.journal import read_journal
from tests.helpers import busy_workers
from tests.helpers import pools_of
from tests.helpers import running_directors
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(150)


def test_killed_worker_is_retried_and_nothing_is_lost(run_dir: pathlib.Path):
    calls = 6

    async def main():
        async with running_directors(run_dir, nodes=2, partitions=1, retries=2, supervise=True) as (
            manager,
            (handle,),
            _,
        ):
            batch = asyncio.ensure_future(
                call(manager, handle, 'md_sim_batch', iterations=calls, params={'duration': 2}),
            )
            (victim, *_) = await wait_for(lambda: busy_workers(run_dir), timeout=30)
            os.kill(victim.pid, signal.SIGKILL)
            results = await batch
            status = await call(manager, handle, 'status')
            return victim.pid, results, status

    victim, results, status = asyncio.run(main())
    assert len(results) == calls
    assert all(r.ok and r.status == 'ok' for r in results), results
    # The call that was on the killed worker ran again somewhere else.
    assert max(r.attempts for r in results) == 2
    assert sum(r.attempts == 2 for r in results) >= 1
    assert status.done == calls and status.failed == 0
    journaled = list(read_journal(journal_path(run_dir, 'director-0')))
    assert len(journaled) == calls
    assert {j['call_id'] for j in journaled} == {r.call_id for r in results}
    assert victim not in {r.pid for r in results}


def test_killed_pool_is_replaced_and_calls_rerun(run_dir: pathlib.Path):
    calls = 4

    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1, retries=2, supervise=True) as (
            manager,
            (handle,),
            _,
        ):
            batch = asyncio.ensure_future(
                call(manager, handle, 'md_sim_batch', iterations=calls, params={'duration': 2}),
            )
            await wait_for(lambda: busy_workers(run_dir), timeout=30)
            (pool,) = pools_of(run_dir)
            pool.kill()
            results = await batch
            # The executor is not disabled: later calls run on the new pool.
            after = await call(manager, handle, 'md_sim_batch', iterations=2, params={})
            return pool.pid, results, after

    old_pool, results, after = asyncio.run(main())
    assert len(results) == calls
    assert all(r.ok for r in results), results
    assert any(r.attempts > 1 for r in results)
    assert all(r.ok for r in after)
    # A tool process runs under a worker of the replacement pool.
    assert all(psutil.pid_exists(old_pool) is False or r.pid != old_pool for r in after)


def test_application_errors_are_not_retried(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1, retries=3) as (
            manager,
            (handle,),
            _,
        ):
            return await call(manager, handle, 'md_sim', fail='the tool broke')

    result = asyncio.run(main())
    assert not result.ok
    assert result.status == 'failed'
    assert result.error_type == 'RuntimeError'
    assert result.attempts == 1


def _timed_call_and_keyed_batch(manager, handle) -> tuple[asyncio.Future, asyncio.Future]:
    """Two 60 s calls: one with a 1 s timeout (key 't'), one batch with key 'b'."""
    timed = asyncio.ensure_future(
        call(manager, handle, 'md_sim', duration=60, timeout=1.0, call_key='t'),
    )
    batch = asyncio.ensure_future(
        call(manager, handle, 'md_sim_batch', iterations=1, params={'duration': 60}, batch_key='b'),
    )
    return timed, batch


def test_timeout_and_cancel_stop_the_tool_process(run_dir: pathlib.Path):
    async def main():
        async with running_directors(
            run_dir, nodes=1, partitions=1, workers_per_node=2, supervise=True
        ) as (
            manager,
            (handle,),
            _,
        ):
            timed, batch = _timed_call_and_keyed_batch(manager, handle)
            await wait_for(lambda: len(busy_workers(run_dir)) == 2, timeout=30)
            tools = [c.pid for w in busy_workers(run_dir) for c in w.children()]
            timed_result = await timed
            cancelled = await call(manager, handle, 'cancel', batch_key='b')
            (batch_result,) = await batch
            # Client-side cancellation of an awaiting call stops it on the node too.
            client_side = asyncio.ensure_future(
                call(manager, handle, 'md_sim', duration=60, call_key='c'),
            )
            await wait_for(lambda: len(busy_workers(run_dir)) == 1, timeout=30)
            client_tools = [c.pid for w in busy_workers(run_dir) for c in w.children()]
            client_side.cancel()
            with pytest.raises(asyncio.CancelledError):
                await client_side
            await wait_for(lambda: not busy_workers(run_dir), timeout=10)
            # The slots are free: two quick calls run at once.
            quick = await call(manager, handle, 'md_sim_batch', iterations=2, params={})
            return timed_result, cancelled, batch_result, tools + client_tools, quick

    timed, cancelled, batch_result, tools, quick = asyncio.run(main())
    assert timed.status == 'timed_out' and timed.error_type == 'TimedOut'
    assert 1.0 <= timed.wall_time < 10
    assert cancelled == 1
    assert batch_result.status == 'cancelled' and batch_result.call_key == 'b/0'
    assert batch_result.wall_time < 30
    assert len(tools) == 3
    assert not [pid for pid in tools if psutil.pid_exists(pid)]
    assert all(r.ok for r in quick)
    statuses = [j['status'] for j in read_journal(journal_path(run_dir, 'director-0'))]
    assert sorted(statuses) == ['cancelled', 'cancelled', 'ok', 'ok', 'timed_out']


def test_cancel_and_timeout_stop_calls_running_in_the_worker(run_dir: pathlib.Path):
    """Without supervision the tool runs in the worker itself and still stops."""

    async def running(manager, handle) -> int:
        return (await call(manager, handle, 'status')).running

    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1, workers_per_node=2) as (
            manager,
            (handle,),
            _,
        ):
            timed, batch = _timed_call_and_keyed_batch(manager, handle)
            timed_result = await timed
            for _ in range(100):
                if await running(manager, handle) == 1:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the batch's call is inside the tool now
            cancelled = await call(manager, handle, 'cancel', batch_key='b')
            (batch_result,) = await batch
            client_side = asyncio.ensure_future(
                call(manager, handle, 'md_sim', duration=60, call_key='c'),
            )
            await asyncio.sleep(1.0)
            client_side.cancel()
            with pytest.raises(asyncio.CancelledError):
                await client_side
            # The slots are free again: two quick calls run at once.
            quick = await call(manager, handle, 'md_sim_batch', iterations=2, params={})
            after = {w.pid for pool in pools_of(run_dir) for w in pool.children()}
            return after, timed_result, cancelled, batch_result, quick

    after, timed, cancelled, batch_result, quick = asyncio.run(main())
    assert timed.status == 'timed_out' and timed.error_type == 'TimedOut', timed
    assert 1.0 <= timed.wall_time < 10 and timed.attempts == 1
    assert cancelled == 1
    assert batch_result.status == 'cancelled' and batch_result.call_key == 'b/0'
    assert batch_result.error_message == 'cancelled by the caller (while running)'
    assert batch_result.wall_time < 30
    assert all(r.ok for r in quick)
    # Stopped by a signal inside the tool: no worker had to be killed.
    assert {timed.pid, batch_result.pid} | {r.pid for r in quick} <= after
    statuses = [j['status'] for j in read_journal(journal_path(run_dir, 'director-0'))]
    assert sorted(statuses) == ['cancelled', 'cancelled', 'ok', 'ok', 'timed_out']
