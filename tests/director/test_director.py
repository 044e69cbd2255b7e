from __future__ import annotations

import asyncio
import math
import pathlib

import pytest

from actors.calling.calls import call
from actors.common.errors import ConfigurationError
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(120)


def test_two_directors_in_one_process_share_the_job(run_dir: pathlib.Path):
    calls, duration, slots = 8, 1.0, 4

    async def main():
        async with running_directors(run_dir, nodes=4, partitions=2, workers_per_node=2) as (
            manager,
            handles,
            parts,
        ):
            per_director = await asyncio.gather(
                *(
                    call(
                        manager, h, 'md_sim_batch', iterations=calls, params={'duration': duration}
                    )
                    for h in handles
                ),
            )
            single = await asyncio.gather(
                *(call(manager, h, 'md_sim', duration=0) for h in handles)
            )
            statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
            return parts, per_director, single, statuses

    parts, per_director, single, statuses = asyncio.run(main())

    assert not set(parts[0].nodes) & set(parts[1].nodes)
    for part, results, one, status in zip(parts, per_director, single, statuses, strict=True):
        assert len(results) == calls
        assert all(r.ok for r in results), results
        assert one.ok and one.action == 'md_sim'
        for r in [*results, one]:
            assert r.partition == part.index
            assert r.director == f'director-{part.index}'
            assert r.node in part.nodes, f'{r.node} is not in partition {part.nodes}'
        # Every node of the partition got work: the launcher placed a pool on each.
        assert {r.node for r in results} == set(part.nodes)
        # K calls of d seconds on S slots take ~ceil(K/S)*d, not K*d.
        makespan = max(r.end for r in results) - min(r.start for r in results)
        ideal = math.ceil(calls / slots) * duration
        assert ideal <= makespan + 0.05
        # Halfway between parallel and serial: robust to a loaded CI machine,
        # yet fails if calls queue behind each other.
        serial = calls * duration
        assert makespan < (ideal + serial) / 2, f'makespan {makespan:.2f}s, ideal {ideal:.2f}s'
        assert status.done == calls + 1 and status.failed == 0
        assert status.slots == slots and status.nodes == list(part.nodes)
    # Both Directors worked at the same time.
    first, second = per_director
    assert min(r.start for r in first) < max(r.end for r in second)
    assert min(r.start for r in second) < max(r.end for r in first)


def test_failed_call_does_not_lose_the_batch(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, (handle,), _):
            return await call(
                manager,
                handle,
                'md_sim_batch',
                params=[
                    {'duration': 0.1},
                    {'fail': 'no such molecule'},
                    {'duration': 0.1, 'seed': 3},
                ],
            )

    results = asyncio.run(main())
    assert [r.ok for r in results] == [True, False, True]
    failed = results[1]
    assert failed.error_type == 'RuntimeError'
    assert 'no such molecule' in failed.error_message
    assert failed.node == 'sim-node-001'
    assert results[2].params == {'duration': 0.1, 'seed': 3}
    assert len({r.call_id for r in results}) == 3


def test_bad_arguments_are_rejected_before_submission(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, (handle,), _):
            errors = []
            for action, kwargs in [
                ('md_sim', {'no_such_param': 1}),
                ('md_sim_batch', {'iterations': -1}),
                ('md_sim_batch', {'iterations': 'four'}),
                ('md_sim_batch', {'iterations': 3, 'params': [{}, {}]}),
                ('md_sim_batch', {'params': [{'duration': 0}, {'bogus': 2}]}),
                ('md_sim_batch', {'params': 'duration=1'}),
            ]:
                with pytest.raises(ConfigurationError) as info:
                    await call(manager, handle, action, **kwargs)
                errors.append(str(info.value))
            status = await call(manager, handle, 'status')
            still_serving = await call(manager, handle, 'md_sim', duration=0)
            # The pattern's own client: md_sim_batch() bare runs its default of 4 calls.
            bare = await call(manager, handle, 'md_sim_batch')
            return errors, status, still_serving, bare

    errors, status, still_serving, bare = asyncio.run(main())
    assert 'no_such_param' in errors[0]
    assert 'between 0 and' in errors[1]
    assert "'four'" in errors[2]
    assert 'does not match' in errors[3]
    assert 'bogus' in errors[4]
    assert 'list of mappings' in errors[5]
    assert len(bare) == 4 and all(r.ok for r in bare)
    # Nothing was submitted for any rejected call, and the Director still serves.
    assert status.done == 0 and status.failed == 0 and status.queued == 0
    assert still_serving.ok
