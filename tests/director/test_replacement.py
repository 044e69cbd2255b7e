"""Replacing a lost DFK, against fakes of the DFK (no Parsl): milliseconds per test.

The real-pool tests (``test_interchange_loss.py``) kill a real interchange;
these pin the rules: how many replacements, what happens to parked calls when
one fails or the Director stops, one replacement at a time.
"""

from __future__ import annotations

import asyncio

import pytest

from actors.director.replacement import Replacement
from actors.execution.interchange import InterchangeLost

pytestmark = pytest.mark.timeout(10)

LOST = InterchangeLost('interchange died')


class FakeDfks:
    """Starts, releases and fails fake DFKs, recording the order of events."""

    def __init__(self, *, start_fails: bool = False) -> None:
        self.events: list[str] = []
        self.started = 0
        self.start_fails = start_fails
        self.let_start = asyncio.Event()
        self.let_start.set()

    async def start(self) -> None:
        await self.let_start.wait()
        if self.start_fails:
            self.events.append('start failed')
            raise RuntimeError('no new DFK')
        self.started += 1
        self.events.append(f'started dfk-{self.started}')

    async def release(self, dfk: str) -> None:
        self.events.append(f'released {dfk}')

    def fail(self, dfk: str, error: InterchangeLost) -> None:
        self.events.append(f'failed {dfk}')

    def fail_leftovers(self, dfk: str, error: InterchangeLost) -> None:
        self.events.append(f'leftovers {dfk}')

    def replacement(self, max_restarts: int = 3) -> Replacement:
        made = Replacement(
            'director-t',
            start=self.start,
            release=self.release,
            fail=self.fail,
            fail_leftovers=self.fail_leftovers,
            max_restarts=max_restarts,
        )
        made.loop = asyncio.get_running_loop()
        return made


class ParkedCall:
    """A call parked for the replacement: ran again, or given up."""

    def __init__(self) -> None:
        self.outcome: str | None = None

    def park(self, replacement: Replacement) -> bool:
        return replacement.park(self._rerun, self._give_up)

    def _rerun(self) -> None:
        assert self.outcome is None, 'answered twice'
        self.outcome = 'rerun'

    def _give_up(self) -> None:
        assert self.outcome is None, 'answered twice'
        self.outcome = 'given up'


async def _settle(replacement: Replacement) -> None:
    """Until no replacement is under way (each step is a few loop turns)."""
    while replacement.replacing:
        await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_a_lost_dfk_is_replaced_and_its_parked_calls_run_again_once():
    async def main() -> None:
        dfks = FakeDfks()
        replacement = dfks.replacement()
        dfks.let_start.clear()
        replacement.lost('dfk-0', LOST)
        assert replacement.replacing and replacement.is_lost('dfk-0')
        calls = [ParkedCall() for _ in range(20)]  # over INLINE_SUBMIT: reruns on a thread
        assert all(call.park(replacement) for call in calls)
        assert {call.outcome for call in calls} == {None}  # they wait for the new DFK
        dfks.let_start.set()
        await _settle(replacement)
        while {call.outcome for call in calls} != {'rerun'}:
            await asyncio.sleep(0.001)
        assert dfks.events[0] == 'failed dfk-0'  # before the replacement releases it
        assert set(dfks.events[1:3]) == {'started dfk-1', 'released dfk-0'}
        assert dfks.events[3] == 'leftovers dfk-0'
        assert replacement.restarts == 1 and replacement.broken is None
        # The same loss reported again (another executor of the DFK) changes nothing.
        replacement.lost('dfk-0', LOST)
        assert replacement.restarts == 1 and not replacement.replacing
        # Parked with no replacement under way: it runs at once.
        late = ParkedCall()
        assert late.park(replacement) and late.outcome == 'rerun'

    asyncio.run(main())


def test_past_the_restart_budget_the_director_breaks_and_refuses():
    async def main() -> None:
        dfks = FakeDfks()
        replacement = dfks.replacement(max_restarts=2)
        for n in range(2):
            replacement.lost(f'dfk-{n}', LOST)
            await _settle(replacement)
        assert replacement.restarts == 2 and replacement.broken is None
        waiting = ParkedCall()
        dfks.let_start.clear()
        replacement.lost('dfk-2', LOST)  # the third loss: not replaced
        assert not replacement.replacing and replacement.broken is LOST
        assert dfks.events[-1] == 'failed dfk-2' and dfks.started == 2
        assert not waiting.park(replacement) and waiting.outcome is None  # refused at once
        assert not await replacement.up()

    asyncio.run(main())


def test_a_replacement_that_cannot_start_gives_up_every_parked_call():
    async def main() -> None:
        dfks = FakeDfks(start_fails=True)
        replacement = dfks.replacement()
        dfks.let_start.clear()
        replacement.lost('dfk-0', LOST)
        calls = [ParkedCall() for _ in range(3)]
        for call in calls:
            call.park(replacement)
        dfks.let_start.set()
        await _settle(replacement)
        assert [call.outcome for call in calls] == ['given up'] * 3
        assert replacement.broken is LOST
        assert 'released dfk-0' in dfks.events and 'leftovers dfk-0' in dfks.events

    asyncio.run(main())


def test_stopping_waits_for_the_replacement_under_way_then_gives_up_the_rest():
    async def main() -> None:
        dfks = FakeDfks()
        replacement = dfks.replacement()
        dfks.let_start.clear()
        replacement.lost('dfk-0', LOST)
        await asyncio.sleep(0)  # the replacement task begins
        stopping = asyncio.ensure_future(replacement.begin_stop())
        await asyncio.sleep(0)
        assert not stopping.done()  # a DFK started after a cancel would leak: it waits
        parked = ParkedCall()
        parked.park(replacement)
        dfks.let_start.set()
        await stopping
        assert dfks.started == 1 and parked.outcome == 'rerun'
        assert replacement.broken is not None  # no DFK after the stop
        replacement.lost('dfk-1', LOST)  # lost while stopping: not replaced
        assert dfks.started == 1 and not replacement.replacing
        assert not ParkedCall().park(replacement)

    asyncio.run(main())


def test_a_loss_reported_after_the_stop_began_is_not_replaced():
    async def main() -> None:
        dfks = FakeDfks()
        replacement = dfks.replacement()
        replacement.lost('dfk-0', LOST)  # scheduled on the loop, not begun yet
        waiting = ParkedCall()
        waiting.park(replacement)
        await replacement.begin_stop()
        await asyncio.sleep(0)
        assert dfks.started == 0 and waiting.outcome == 'given up'
        assert not replacement.replacing

    asyncio.run(main())


def test_losses_of_a_replacement_while_one_is_under_way_are_replaced_in_turn():
    async def main() -> None:
        dfks = FakeDfks()
        replacement = dfks.replacement()
        dfks.let_start.clear()
        replacement.lost('dfk-0', LOST)
        replacement.lost('dfk-1', LOST)  # the new one dies as it starts
        parked = ParkedCall()
        parked.park(replacement)
        dfks.let_start.set()
        await _settle(replacement)
        # The parked call goes to the last replacement only, once.
        assert parked.outcome == 'rerun' and dfks.started == 2 and replacement.restarts == 2

    asyncio.run(main())


def test_giving_up_answers_the_parked_and_refuses_new_calls():
    async def main() -> None:
        dfks = FakeDfks()
        replacement = dfks.replacement()
        dfks.let_start.clear()
        replacement.lost('dfk-0', LOST)
        parked = ParkedCall()
        parked.park(replacement)
        never = InterchangeLost('blocks never start')
        replacement.give_up('dfk-1', never)
        assert parked.outcome == 'given up' and replacement.broken is never
        assert replacement.is_lost('dfk-1') and 'failed dfk-1' in dfks.events
        replacement.give_up('dfk-1', LOST)  # once only
        assert replacement.broken is never
        dfks.let_start.set()
        await _settle(replacement)

    asyncio.run(main())
