"""JSON tool calls through schema validation to Directors and back, and the mock planner."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest

from actors.calling.calls import call
from actors.client.dispatcher import Dispatcher
from actors.client.planner import Planner
from actors.client.planner import next_temperatures
from actors.common.errors import ConfigurationError
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(240)


def test_next_temperatures_bisects_the_steepest_intervals():
    points = [(300.0, 0.0), (1200.0, 0.1), (2100.0, 0.4), (3000.0, 0.5)]
    assert next_temperatures(points, 2, {t for t, _ in points}) == [
        (1650.0, 1200.0, 2100.0),
        (750.0, 300.0, 1200.0),
    ]
    # Already measured midpoints are skipped; too narrow intervals are not split.
    assert next_temperatures([(1.0, 0.0), (2.0, 5.0)], 1, set()) == []
    assert next_temperatures(points, 1, {1650.0})[0][0] == 750.0


def test_planner_campaign_and_dispatcher(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=2, partitions=2, workers_per_node=2) as (
            manager,
            handles,
            parts,
        ):
            planner = await manager.launch(
                Planner,
                args=(handles,),
                kwargs={
                    'temperatures': (300.0, 1500.0),
                    'rounds': 1,
                    'per_round': 1,
                    'arguments': {'steps': 20, 'size': 1, 'ensemble': 'langevin'},
                },
            )
            report = await call(manager, planner, 'run_campaign')

            # The same path from a client: a JSON tool call, as an LLM emits it.
            dispatcher = Dispatcher(handles)
            before = await dispatcher.statuses()
            errors = []
            for bad in [
                '{"name": "ase_md", "arguments": "{\\"temperature\\": -1}"}',
                {'name': 'ase_md', 'arguments': {'steps': 10, 'colour': 'red'}},
                {'name': 'no_such_tool', 'arguments': {}},
                {'name': 'ase_md', 'arguments': '{"steps": 10'},
                {'name': 'mpi_probe', 'arguments': {'num_nodes': 3}},  # the job has 2
            ]:
                with pytest.raises(ConfigurationError) as info:
                    await dispatcher.dispatch(bad)
                errors.append(str(info.value))
            with pytest.raises(ConfigurationError):
                # One bad call in a batch: none of them is submitted.
                await dispatcher.dispatch_many(
                    [{'name': 'mock_md', 'arguments': {}}, {'name': 'mock_md', 'arguments': 'x'}],
                )
            after_bad = await dispatcher.statuses()
            good = await dispatcher.dispatch(
                {
                    'id': 'call_0',
                    'type': 'function',
                    'function': {
                        'name': 'ase_md',
                        'arguments': json.dumps({'temperature': 450, 'steps': 10, 'size': 1}),
                    },
                },
            )
            mpi = await dispatcher.dispatch(
                {'name': 'mpi_probe', 'arguments': {'num_nodes': 1, 'ranks_per_node': 2}},
            )
            # Larger than either Director: routed anyway, the Director borrows a node.
            whole_job = await dispatcher.dispatch(
                {'name': 'mpi_probe', 'arguments': {'num_nodes': 2, 'ranks_per_node': 1}},
            )
            statuses = await dispatcher.dispatch({'name': 'status', 'arguments': '{}'})
            return parts, report, errors, before, after_bad, good, (mpi, whole_job), statuses

    parts, report, errors, before, after_bad, good, (mpi, whole_job), statuses = asyncio.run(main())

    # The campaign: 2 grid points, then the midpoint of the steepest interval.
    assert [r['temperatures'] for r in report.rounds] == [[300.0, 1500.0], [900.0]]
    assert len(report.results) == 3 and all(r.ok for r in report.results)
    assert [p['temperature'] for p in report.points] == [300.0, 900.0, 1500.0]
    energies = [p['mean_potential_energy'] for p in report.points]
    assert energies == sorted(energies)  # hotter crystal, higher potential energy
    for tool_call, result in zip(report.tool_calls, report.results, strict=True):
        assert tool_call['name'] == 'ase_md' and result.tool == 'ase_md'
        arguments = json.loads(tool_call['arguments'])  # a JSON string, as from an LLM
        assert result.params == arguments
        assert result.action == 'call_tool'
        assert result.value['atoms'] == 4 and result.value['ensemble'] == 'langevin'
    # The first round's two calls went to different Directors (both were free).
    assert {r.director for r in report.results[:2]} == {'director-0', 'director-1'}
    assert report.steepest is not None and report.steepest['dE_dT'] > 0
    json.dumps(report.to_dict())

    assert 'temperature: -1 is less than or equal to the minimum of 0' in errors[0]
    assert "'colour' was unexpected" in errors[1]
    assert "unknown tool 'no_such_tool'" in errors[2]
    assert 'not valid JSON' in errors[3]
    assert 'num_nodes=3 is more than any Director can take (2 node(s))' in errors[4]
    # Nothing was submitted for the rejected calls.
    assert [(s.done, s.failed, s.queued) for s in after_bad] == [
        (s.done, s.failed, s.queued) for s in before
    ]
    assert good.ok and good.params == {'temperature': 450, 'steps': 10, 'size': 1}
    assert good.node in {n for p in parts for n in p.nodes}
    assert mpi.ok and mpi.value['size'] == 2 and len(mpi.nodes) == 1
    assert whole_job.ok and sorted(whole_job.nodes) == sorted(n for p in parts for n in p.nodes)
    assert sum(s.done for s in statuses) == 3 + 3
