"""The call runner against a fake executor (no Parsl, no worker process): milliseconds.

The fake hands out the runner's calls as ``Call`` futures and finishes them
when the test says so, running the worker's own ``run_tool`` and
``pack_outcome`` in this process, or failing them with Parsl's own error
class as a dying interchange does; the DFK's replacement is the real
``Replacement`` over fake DFKs. The real-pool tests (``test_director.py``,
``test_interchange_loss.py``) run the same paths on real Parsl.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from parsl.executors.errors import BadStateException

from actors.director.admission import NodeAdmission
from actors.director.checks import CallChecks
from actors.director.command_files import CommandFiles
from actors.director.context import DirectorContext
from actors.director.drain import WalltimeDrain
from actors.director.ledger import Ledger
from actors.director.options import DirectorOptions
from actors.director.outcomes import Outcomes
from actors.director.replacement import Replacement
from actors.director.runner import CallRunner
from actors.execution.executor_app import Call
from actors.execution.interchange import InterchangeLost
from actors.site.profile import load_site
from actors.store.journal import journal_path
from actors.store.journal import read_journal
from actors.worker.control import CancelFiles
from actors.worker.run import run_tool
from actors.worker.wire import pack_outcome
from tests.helpers import make_partitions

pytestmark = pytest.mark.timeout(20)

LOST = InterchangeLost('interchange died (the test)')


class FakeExecutor:
    """Takes calls as a Director's executor app does; the test finishes them."""

    label = 'fake-htex'

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def app(self, tool: str, params: dict[str, Any], control: Any) -> Call:
        call = Call((tool, params, control), {}, {})
        call.attempts = 1
        self.calls.append(call)
        return call

    def pending(self) -> list[Call]:
        return [call for call in self.calls if not call.done()]

    def finish(self, calls: list[Call] | None = None) -> int:
        """Run each pending call's tool here, as a worker would; how many ran."""
        ran = calls if calls is not None else self.pending()
        for call in ran:
            tool, params, _ = call.args
            call.set_result(pack_outcome(run_tool(tool, params)))
        return len(ran)

    def lose(self, error: InterchangeLost = LOST) -> int:
        """Fail every pending call as a dying interchange does; how many.

        As Parsl's ``set_bad_state_and_fail_all``: a ``BadStateException``
        of the executor, whose ``executor_exception`` is the loss.
        """
        self.executor_exception = error
        lost = self.pending()
        for call in lost:
            call.set_exception(BadStateException(self, error))
        return len(lost)


class FakeHost:
    """The part of ``DfkHost`` the runner uses: apps, refusal, the replacement."""

    def __init__(self, executor: FakeExecutor) -> None:
        self.app = self.supervised_app = self.command_app = executor.app
        self.mpi_app = None
        self.new_dfks = asyncio.Event()
        self.replacement = Replacement(
            'director-t',
            start=self.new_dfks.wait,
            release=_nothing,
            fail=lambda dfk, error: None,
            fail_leftovers=lambda dfk, error: None,
        )
        self.replacement.loop = asyncio.get_running_loop()

    def refusal(self, mpi: bool) -> InterchangeLost | None:
        if self.replacement.broken is not None:
            return self.replacement.broken
        return LOST if self.replacement.replacing else None


async def _nothing(_: Any) -> None:
    return None


@pytest.fixture
def context(tmp_path: pathlib.Path) -> DirectorContext:
    (partition,) = make_partitions(tmp_path, nodes=1, partitions=1)
    return DirectorContext(
        partition, load_site('local'), str(tmp_path / 'run'), DirectorOptions(retries=1), 't'
    )


@pytest.fixture
def parts(context: DirectorContext) -> Iterator[dict[str, Any]]:
    cancels = CancelFiles(context.control_dir)
    ledger = Ledger(context.name, 'off')
    ledger.open(context.run_dir)
    made = {
        'context': context,
        'cancels': cancels,
        'ledger': ledger,
        'outcomes': Outcomes(context, cancels),
        'drain': WalltimeDrain(context, cancels, ledger),
        'admission': NodeAdmission(1),
        'command_files': CommandFiles(pathlib.Path(context.run_dir, 'calls')),
    }
    yield made
    ledger.close()
    cancels.close()


def _runner(parts: dict[str, Any], executor: FakeExecutor) -> tuple[CallRunner, FakeHost]:
    host = FakeHost(executor)
    given = {k: v for k, v in parts.items() if k != 'context'}
    return CallRunner(parts['context'], host=host, **given), host  # type: ignore[arg-type]


async def _until(predicate: Any) -> None:
    """Turn the loop until ``predicate()`` holds (the test's timeout bounds it)."""
    while not predicate():
        await asyncio.sleep(0.001)


def test_a_batch_is_answered_in_order_once_every_call_is_journaled(parts: dict[str, Any]):
    async def main() -> None:
        executor = FakeExecutor()
        runner, _ = _runner(parts, executor)
        calls = [{'duration': 0.0} for _ in range(20)]  # over INLINE_SUBMIT: a thread submits
        keys = [f'k{i}' for i in range(20)]
        batch = asyncio.ensure_future(runner.run_batch('md_sim_batch', calls, keys, None))
        await _until(lambda: len(executor.calls) == 20)
        assert not batch.done()
        executor.finish(executor.calls[::-1])  # finishing out of order
        results = await batch
        assert [r.call_key for r in results] == keys and all(r.ok for r in results)
        assert runner.fast_calls == 20 and runner.ledger.counts() == (0, 20, 0)
        context = parts['context']
        journaled = read_journal(journal_path(context.run_dir, context.name))
        assert {record['call_key'] for record in journaled} == set(keys)

    asyncio.run(main())


def test_a_keyed_call_runs_once_a_twin_shares_it_and_a_journaled_one_replays(
    parts: dict[str, Any],
):
    async def main() -> None:
        executor = FakeExecutor()
        runner, _ = _runner(parts, executor)
        first = asyncio.ensure_future(runner.run_batch('md_sim', [{}], ['same'], None))
        await _until(lambda: len(executor.calls) == 1)
        twin = asyncio.ensure_future(runner.run_batch('md_sim', [{}], ['same'], None))
        await asyncio.sleep(0.01)
        assert len(executor.calls) == 1  # the twin waits for the running call
        executor.finish()
        (one,), (two,) = await first, await twin
        assert one.call_id == two.call_id and one.ok
        (replayed,) = await runner.run_batch('md_sim', [{}], ['same'], None)
        assert replayed.call_id == one.call_id and len(executor.calls) == 1

    asyncio.run(main())


def test_calls_of_a_lost_interchange_wait_for_the_new_dfk_and_run_again_once(
    parts: dict[str, Any],
):
    async def main() -> None:
        executor = FakeExecutor()
        runner, host = _runner(parts, executor)
        batch = asyncio.ensure_future(
            runner.run_batch('md_sim_batch', [{}] * 3, ['a', 'b', 'c'], None)
        )
        await _until(lambda: len(executor.calls) == 3)
        executor.finish(executor.calls[:1])  # one finished before the loss
        host.replacement.lost('dfk-0', LOST)
        assert executor.lose() == 2  # parked: nothing is sent while the DFK is replaced
        await asyncio.sleep(0.01)
        assert len(executor.calls) == 3 and not batch.done()
        host.new_dfks.set()
        await _until(lambda: len(executor.calls) == 5)
        executor.finish()
        results = await batch
        assert [r.ok for r in results] == [True] * 3
        assert [r.attempts for r in results] == [1, 2, 2]  # the rerun counted

    asyncio.run(main())


def test_a_call_lost_past_its_retries_is_answered_lost(parts: dict[str, Any]):
    async def main() -> None:
        executor = FakeExecutor()
        runner, host = _runner(parts, executor)  # retries=1
        host.new_dfks.set()
        batch = asyncio.ensure_future(runner.run_batch('md_sim', [{}], ['a'], None))
        for n in range(2):
            await _until(lambda n=n: len(executor.calls) == n + 1)
            host.replacement.lost(f'dfk-{n}', LOST)
            executor.lose()
        (result,) = await batch
        assert result.status == 'lost' and not result.ok and result.attempts == 2
        assert 'interchange died' in (result.error_message or '')
        assert len(executor.calls) == 2

    asyncio.run(main())


def test_the_routed_path_waits_for_the_replacement_and_sends_the_call_again(
    parts: dict[str, Any],
):
    async def main() -> None:
        executor = FakeExecutor()
        runner, host = _runner(parts, executor)
        prepared = CallChecks.of(parts['context']).prepare('mock_md', {'duration': 0.0})
        routed = asyncio.ensure_future(runner.run('call_tool', prepared, 'r1'))
        await _until(lambda: len(executor.calls) == 1)
        host.replacement.lost('dfk-0', LOST)
        executor.lose()
        await asyncio.sleep(0.01)
        assert len(executor.calls) == 1 and not routed.done()
        host.new_dfks.set()
        await _until(lambda: len(executor.calls) == 2)
        executor.finish()
        result = await routed
        assert result.ok and result.attempts == 2 and result.tool == 'mock_md'

    asyncio.run(main())


def test_a_broken_director_answers_parked_and_new_calls_lost(parts: dict[str, Any]):
    async def main() -> None:
        executor = FakeExecutor()
        runner, host = _runner(parts, executor)
        batch = asyncio.ensure_future(runner.run_batch('md_sim', [{}], ['a'], None))
        await _until(lambda: len(executor.calls) == 1)
        host.replacement.lost('dfk-0', LOST)
        executor.lose()
        host.replacement.give_up('dfk-1', InterchangeLost('blocks never start'))
        (parked,) = await batch
        assert parked.status == 'lost'
        (refused,) = await runner.run_batch('md_sim', [{}], ['b'], None)
        assert refused.status == 'lost' and 'blocks never start' in (refused.error_message or '')
        assert len(executor.calls) == 1  # nothing more was sent

    asyncio.run(main())


def test_no_call_is_left_in_flight(parts: dict[str, Any]):
    async def main() -> None:
        executor = FakeExecutor()
        runner, _ = _runner(parts, executor)
        calls = asyncio.gather(
            *(runner.run_batch('md_sim', [{}], [None], None) for _ in range(5)),
            runner.run('call_tool', CallChecks.of(parts['context']).prepare('mock_md', {})),
        )
        await _until(lambda: len(executor.calls) == 6)
        executor.finish()
        await calls
        assert runner.ledger.counts() == (0, 6, 0)

    asyncio.run(main())
