"""A dispatcher ensemble of the default tool takes the fast path, with the same results."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from actors.calling.calls import call
from actors.client import dispatcher as dispatcher_module
from actors.client.dispatcher import Dispatcher
from actors.store.journal import final_by_key
from actors.store.journal import read_run
from actors.tools.registry import DEFAULT_TOOL
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(150)

SAME = ('action', 'tool', 'params', 'status', 'ok', 'call_key')
"""What a call's result says about the call (not where or when it ran)."""


def test_an_ensemble_of_the_default_tool_takes_the_fast_path(run_dir: pathlib.Path):
    arguments = [{'duration': 0, 'seed': i} for i in range(4)]
    fast_keys = [f'fast/{i}' for i in range(4)]
    routed_keys = [f'routed/{i}' for i in range(4)]

    async def main() -> None:
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, handles, _):
            (handle,) = handles
            dispatcher = Dispatcher(handles, manager=manager)
            before = await call(manager, handle, 'status')
            assert before.tool == DEFAULT_TOOL
            fast = await dispatcher.run_batch(DEFAULT_TOOL, arguments, call_keys=fast_keys)
            after = await call(manager, handle, 'status')
            # The Director's own count: every call of the ensemble went its fast path.
            assert after.fast_calls - before.fast_calls == len(arguments)
            # The same calls named by their tool (how the dispatcher sent them before) are
            # routed one by one: the count stays.
            named = [{**a, 'tool': DEFAULT_TOOL} for a in arguments]
            routed = await call(
                manager, handle, 'md_sim_batch', params=named, call_keys=routed_keys
            )
            assert (await call(manager, handle, 'status')).fast_calls == after.fast_calls
            for a, b in zip(fast, routed, strict=True):
                assert a.ok and b.ok
                assert {f: getattr(a, f) for f in SAME if f != 'call_key'} == {
                    f: getattr(b, f) for f in SAME if f != 'call_key'
                }
            # Journaled alike: the routed keys sent again through the dispatcher's fast path
            # are answered from the journal (a key journaled with other parameters or another
            # tool would be refused), with the routed results.
            again = await dispatcher.run_batch(DEFAULT_TOOL, arguments, call_keys=routed_keys)
            assert [r.call_id for r in again] == [r.call_id for r in routed]
            assert (await call(manager, handle, 'status')).fast_calls == after.fast_calls + 4

        journal = final_by_key(read_run(run_dir))
        for fast_key, routed_key in zip(fast_keys, routed_keys, strict=True):
            a, b = journal[fast_key], journal[routed_key]
            assert (a['action'], a['tool'], a['params']) == (b['action'], b['tool'], b['params'])

    asyncio.run(main())


def test_a_single_call_of_the_default_tool_takes_the_fast_path(run_dir: pathlib.Path):
    async def main() -> None:
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, handles, _):
            (handle,) = handles
            dispatcher = Dispatcher(handles, manager=manager)
            before = (await call(manager, handle, 'status')).fast_calls
            one = await dispatcher.run_tool(DEFAULT_TOOL, {'duration': 0, 'seed': 7}, call_key='k')
            assert (await call(manager, handle, 'status')).fast_calls == before + 1
            # The result a routed call_tool gave: the action the client called, the tool, its
            # parameters as given.
            assert (one.ok, one.action, one.tool, one.params) == (
                True,
                'call_tool',
                DEFAULT_TOOL,
                {'duration': 0, 'seed': 7},
            )
            # Journaled as a routed call of the tool is: the routed md_sim(tool=...) under the
            # same key is answered from the journal (not refused for other parameters).
            again = await call(
                manager, handle, 'md_sim', tool=DEFAULT_TOOL, duration=0, seed=7, call_key='k'
            )
            assert again.call_id == one.call_id

    asyncio.run(main())


def test_with_one_director_a_call_costs_no_status_round_trip(
    run_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    # Statuses too old to reuse at once: only the one-Director rule can spare the round trips.
    monkeypatch.setattr(dispatcher_module, 'ROUTING_STATUS_AGE', 0.0)

    async def main() -> int:
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, handles, _):
            dispatcher = Dispatcher(handles, manager=manager)
            asked = 0
            answering = dispatcher._answering

            async def counted():  # type: ignore[no-untyped-def]
                nonlocal asked
                asked += 1
                return await answering()

            dispatcher._answering = counted  # type: ignore[method-assign]
            for i in range(5):
                result = await dispatcher.run_tool(DEFAULT_TOOL, {'duration': 0, 'seed': i})
                assert result.ok
            return asked

    assert asyncio.run(main()) == 1
