"""The dispatcher routes around a Director that is gone and says so."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from actors.client.dispatcher import DirectorUnavailableError
from actors.client.dispatcher import Dispatcher
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(150)


def test_calls_go_around_a_stopped_director(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=2, partitions=2) as (manager, handles, _):
            dispatcher = Dispatcher(handles, status_timeout=5)
            first = await dispatcher.dispatch({'name': 'mock_md', 'arguments': {}})
            await manager.shutdown(handles[0], blocking=True, timeout=60)
            results = await dispatcher.dispatch_many(
                [{'name': 'mock_md', 'arguments': {'seed': i}} for i in range(4)],
            )
            statuses = await dispatcher.statuses()
            unavailable = dict(dispatcher.unavailable)
            await manager.shutdown(handles[1], blocking=True, timeout=60)
            with pytest.raises(DirectorUnavailableError) as none_left:
                await dispatcher.dispatch({'name': 'mock_md', 'arguments': {}})
            return first, results, statuses, unavailable, none_left.value

    first, results, statuses, unavailable, none_left = asyncio.run(main())
    assert first.ok
    assert all(r.ok and r.director == 'director-1' for r in results)
    assert [s.director for s in statuses] == ['director-1']
    assert list(unavailable) == [0]
    assert 'Director 0' in str(none_left) and 'Director 1' in str(none_left)
