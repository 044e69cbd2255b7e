"""PoolMonitor: one question to the interchange at a time, its answer shared by every reader."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.execution.pool_monitor import PoolMonitor

pytestmark = pytest.mark.timeout(30)


class Interchange:
    """Answers ``connected_managers`` when told to (``answer``), counting questions."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[list[dict[str, Any]] | None]] = []
        self.asked = 0

    async def ask(self) -> list[dict[str, Any]] | None:
        self.asked += 1
        future: asyncio.Future[list[dict[str, Any]] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.pending.append(future)
        return await future

    async def answer(self, managers: list[dict[str, Any]] | None) -> None:
        while not self.pending:
            await asyncio.sleep(0)
        self.pending.pop(0).set_result(managers)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def manager(block: str, tasks: int = 0) -> dict[str, Any]:
    return {'block_id': block, 'hostname': f'host-{block}', 'tasks': tasks, 'active': True}


def test_readers_at_once_share_one_question():
    async def main():
        interchange, clock = Interchange(), Clock()
        monitor = PoolMonitor(interchange.ask, clock)
        readers = [asyncio.ensure_future(monitor.look(max_age=1.0)) for _ in range(5)]
        await interchange.answer([manager('0', 2), manager('1')])
        snapshots = await asyncio.gather(*readers)
        return interchange.asked, snapshots

    asked, snapshots = asyncio.run(main())
    assert asked == 1
    assert all(s is snapshots[0] for s in snapshots)
    assert snapshots[0].by_block() == {'0': [manager('0', 2)], '1': [manager('1')]}


def test_a_fresh_enough_snapshot_is_reused_and_a_stale_one_is_not():
    async def main():
        interchange, clock = Interchange(), Clock()
        monitor = PoolMonitor(interchange.ask, clock)
        first = asyncio.ensure_future(monitor.look())
        await interchange.answer([manager('0')])
        first_snapshot = await first
        clock.now += 0.4
        reused = await monitor.look(max_age=0.5)
        clock.now += 0.2  # 0.6 s old now
        renewed = asyncio.ensure_future(monitor.look(max_age=0.5))
        await interchange.answer([manager('0', 1)])
        return interchange.asked, first_snapshot, reused, await renewed

    asked, first, reused, renewed = asyncio.run(main())
    assert asked == 2
    assert reused is first
    assert renewed.serial == first.serial + 1
    assert renewed.managers == (manager('0', 1),)


def test_a_question_sent_before_a_change_does_not_answer_a_reader_after_it():
    """A drain holds a pool, then must see a snapshot asked after the hold."""

    async def main():
        interchange, clock = Interchange(), Clock()
        monitor = PoolMonitor(interchange.ask, clock)
        early = asyncio.ensure_future(monitor.look())
        await asyncio.sleep(0)
        clock.now += 0.1  # the hold happens here
        after_hold = asyncio.ensure_future(monitor.look(max_age=0.0))
        await interchange.answer([manager('0', 3)])  # the early question
        await interchange.answer([manager('0', 0)])  # the one after the hold
        return interchange.asked, await early, await after_hold

    asked, early, after_hold = asyncio.run(main())
    assert asked == 2
    assert early.managers == (manager('0', 3),)
    assert after_hold.managers == (manager('0', 0),)
    assert after_hold.taken_at > early.taken_at


def test_after_waits_for_a_snapshot_asked_after_the_one_seen():
    async def main():
        interchange = Interchange()
        monitor = PoolMonitor(interchange.ask)  # the real clock: after() sleeps on it
        first = asyncio.ensure_future(monitor.look())
        await interchange.answer([])
        seen = await first
        waiter = asyncio.ensure_future(monitor.after(seen, interval=0.05))
        await interchange.answer([manager('0')])
        return seen, await waiter, interchange.asked

    seen, following, asked = asyncio.run(main())
    assert asked == 2
    assert following.taken_at >= seen.taken_at + 0.05
    assert following.managers == (manager('0'),)


def test_a_lost_interchange_answers_none_and_keeps_the_last_snapshot():
    async def main():
        interchange, clock = Interchange(), Clock()
        monitor = PoolMonitor(interchange.ask, clock)
        first = asyncio.ensure_future(monitor.look())
        await interchange.answer([manager('0')])
        known = await first
        clock.now += 1.0
        lost = asyncio.ensure_future(monitor.look())
        await interchange.answer(None)
        return known, await lost, monitor.latest

    known, lost, latest = asyncio.run(main())
    assert lost is None
    assert latest is known


def test_a_reader_given_up_does_not_cancel_the_question_for_the_others():
    async def main():
        interchange, clock = Interchange(), Clock()
        monitor = PoolMonitor(interchange.ask, clock)
        impatient = asyncio.ensure_future(monitor.look(max_age=1.0))
        patient = asyncio.ensure_future(monitor.look(max_age=1.0))
        await asyncio.sleep(0)
        impatient.cancel()
        await interchange.answer([manager('0')])
        return await patient, interchange.asked

    snapshot, asked = asyncio.run(main())
    assert snapshot is not None and snapshot.managers == (manager('0'),)
    assert asked == 1
