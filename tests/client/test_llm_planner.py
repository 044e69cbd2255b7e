"""The model-driven planner: the real ``openai`` client, a scripted server, real Directors."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from actors.calling.calls import call
from actors.cli.main import main
from actors.client.dispatcher import Dispatcher
from actors.client.exchange import free_port
from actors.client.llm_planner import LLMPlanner
from actors.client.model_endpoint import ModelEndpointError
from actors.client.model_endpoint import ModelOptions
from actors.director.specs import export
from tests.conftest import REPO
from tests.helpers import running_directors
from tests.scripted_openai import USAGE
from tests.scripted_openai import ScriptedOpenAI
from tests.scripted_openai import text
from tests.scripted_openai import tool_calls

pytestmark = pytest.mark.timeout(90)

ANSWER = 'The energy changes fastest between 1200 and 2100 K.'


def _options(url: str, **overrides: object) -> ModelOptions:
    return ModelOptions(url=url, model='scripted', retries=0, **overrides)  # type: ignore[arg-type]


async def _campaign(manager, handles, options: ModelOptions, **kwargs):
    planner = await manager.launch(
        LLMPlanner,
        args=(handles, options),
        kwargs={'tool': 'mock_md', 'arguments': {'steps': 20}, **kwargs},
    )
    return await call(manager, planner, 'run_campaign')


async def _all_workers_connected(handles, timeout: float = 60) -> None:
    """Wait until every worker slot has registered (a call would queue behind a late one)."""
    dispatcher = Dispatcher(handles)
    deadline = time.monotonic() + timeout
    while not all(s.workers_connected >= s.slots for s in await dispatcher.statuses()):
        assert time.monotonic() < deadline, 'workers did not connect'
        await asyncio.sleep(0.1)


def _tool_messages(request: dict) -> list[dict]:
    """The tool messages at the end of a request, after the last assistant turn."""
    messages = request['messages']
    last = max(i for i, m in enumerate(messages) if m['role'] == 'assistant')
    assistant, tools = messages[last], messages[last + 1 :]
    assert [m['role'] for m in tools] == ['tool'] * len(tools)
    # Every tool call of the turn is answered, in order, under its own id.
    assert [m['tool_call_id'] for m in tools] == [c['id'] for c in assistant['tool_calls']]
    return [json.loads(m['content']) for m in tools]


def test_one_batch_per_turn_errors_go_back_and_a_retry_runs(run_dir: pathlib.Path):
    grid = [300, 1200, 2100, 3000]
    script = [
        tool_calls(
            *(('mock_md', {'temperature': t, 'steps': 20, 'duration': 1.5}) for t in grid),
            ('mock_md', {'temperature': 1650, 'steps': -5}),
            content='coarse grid first',
        ),
        tool_calls(
            ('mock_md', {'temperature': 1650, 'steps': 20}),  # the corrected retry
            ('mock_md', '{"temperature": 2400,'),  # malformed JSON
            ('md_sim', {'duration': 0}),  # not offered
        ),
        text(ANSWER),
    ]

    async def main():
        async with running_directors(run_dir, nodes=2, partitions=2, workers_per_node=2) as (
            manager,
            handles,
            _,
        ):
            await _all_workers_connected(handles)
            with ScriptedOpenAI(script) as server:
                report = await _campaign(manager, handles, _options(server.url))
            statuses = await Dispatcher(handles).statuses()
            return report, server.chats, statuses

    report, requests, statuses = asyncio.run(main())

    # What the client sent first: the campaign tool and status, with their exported schemas.
    exported = {t['function']['name']: t for t in export('openai')}
    first = requests[0]
    assert first['model'] == 'scripted'
    assert first['tools'] == [exported['mock_md'], exported['status']]
    assert first['messages'][0]['role'] == 'system'
    assert 'at most 8 turns and 64 tool calls' in first['messages'][0]['content']
    goal = first['messages'][1]['content']
    assert '`mock_md`' in goal and '{"steps": 20}' in goal

    # Turn 1: the four grid calls ran at the same time, on both Directors.
    grid_results = report.results[:4]
    assert [r.params['temperature'] for r in grid_results] == grid
    assert max(r.start for r in grid_results) < min(r.end for r in grid_results)
    assert {r.director for r in grid_results} == {'director-0', 'director-1'}
    answers = _tool_messages(requests[1])
    assert [a['ok'] for a in answers] == [True] * 4 + [False]
    assert answers[0]['value']['temperature'] == 300 and 'energy' in answers[0]['value']
    assert answers[0]['director'] in {'director-0', 'director-1'}
    assert answers[4]['ran'] is False
    assert (
        "bad arguments for 'mock_md': steps: -5 is less than the minimum of 0"
        in (answers[4]['error'])
    )
    assert requests[1]['messages'][2]['content'] == 'coarse grid first'

    # Turn 2: the retry ran; the malformed and the unknown call went back as errors.
    answers = _tool_messages(requests[2])
    assert answers[0]['ok'] and answers[0]['value']['temperature'] == 1650
    assert 'not valid JSON' in answers[1]['error'] and answers[1]['ran'] is False
    assert answers[2]['error'] == "unknown tool 'md_sim'; available: mock_md, status"

    assert len(requests) == 3
    assert report.final_answer == ANSWER and report.budget_hit is None
    assert report.stopped == 'the model answered after 3 turn(s)'
    assert (report.steps, report.calls_sent, report.invalid_calls, report.retries) == (3, 5, 3, 1)
    assert [i['name'] for i in report.invalid] == ['mock_md', 'mock_md', 'md_sim']
    assert [p['temperature'] for p in report.points] == [300, 1200, 1650, 2100, 3000]
    assert report.steepest is not None
    assert report.usage == {k: 3 * v for k, v in USAGE.items()}
    assert [r['round'] for r in report.rounds] == [1, 2]
    assert report.rounds[0]['reasons'][0] == 'coarse grid first'
    # Nothing was submitted for the refused calls.
    assert sum(s.done for s in statuses) == 5 and sum(s.failed for s in statuses) == 0
    assert all(r.ok for r in report.results)
    json.dumps(report.to_dict())


def test_a_batch_offered_to_the_model_answers_every_result(run_dir: pathlib.Path):
    grid = [300, 900, 1500]
    script = [
        tool_calls(
            ('md_sim_batch', {'params': [{'temperature': t, 'steps': 20} for t in grid]}),
            content='one batch',
        ),
        text(ANSWER),
    ]

    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1, workers_per_node=2) as (
            manager,
            handles,
            _,
        ):
            with ScriptedOpenAI(script) as server:
                report = await _campaign(
                    manager,
                    handles,
                    _options(server.url),
                    offered=['mock_md', 'md_sim_batch', 'status'],
                )
            return report, server.chats

    report, requests = asyncio.run(main())
    (answer,) = _tool_messages(requests[1])
    # One row per call, in order, each what a single call's answer says.
    assert [row['ok'] for row in answer] == [True] * 3
    assert [row['value']['temperature'] for row in answer] == grid
    assert all(row['director'] == 'director-0' for row in answer)
    assert [r.params['temperature'] for r in report.results] == grid
    assert [p['temperature'] for p in report.points] == grid


def test_budgets_and_a_failing_endpoint(run_dir: pathlib.Path):
    def one_more(body: dict, index: int) -> dict:
        return tool_calls(('mock_md', {'temperature': 300 + 100 * index, 'steps': 5}))

    two_calls = tool_calls(
        ('mock_md', {'temperature': 300, 'steps': 5}),
        ('mock_md', {'temperature': 600, 'steps': 5}),
    )
    three_calls = tool_calls(
        ('mock_md', {'temperature': 900, 'steps': 5}),
        ('mock_md', {'temperature': 1200, 'steps': 5}),
        ('mock_md', {'temperature': 1500, 'steps': 5}),
    )

    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1, workers_per_node=2) as (
            manager,
            handles,
            _,
        ):
            with ScriptedOpenAI([one_more], repeat=True) as steps_server:
                options = _options(steps_server.url, max_steps=3)
                by_steps = await _campaign(manager, handles, options)
            with ScriptedOpenAI([two_calls, three_calls, text(ANSWER)]) as calls_server:
                options = _options(calls_server.url, max_calls=3)
                by_calls = await _campaign(manager, handles, options)
            refused_url = f'http://127.0.0.1:{free_port()}/v1'
            with pytest.raises(ModelEndpointError) as refused:
                await _campaign(manager, handles, _options(refused_url))
            with ScriptedOpenAI([text(ANSWER)], delay=3) as slow_server:
                with pytest.raises(ModelEndpointError) as slow:
                    await _campaign(manager, handles, _options(slow_server.url, timeout=0.5))
            # A byte every 0.3 s never trips a read timeout of 1 s; the request's deadline does.
            with ScriptedOpenAI([text(ANSWER)], trickle=0.3) as trickling:
                with pytest.raises(ModelEndpointError) as trickled:
                    await _campaign(manager, handles, _options(trickling.url, timeout=1))
            assert 'did not finish its answer within 2s (--llm-timeout 1s' in str(trickled.value)
            return (
                by_steps,
                steps_server.chats,
                by_calls,
                calls_server.chats,
                (refused_url, str(refused.value)),
                (slow_server.url, str(slow.value)),
            )

    by_steps, steps_requests, by_calls, calls_requests, refused, slow = asyncio.run(main())

    # The step budget: three turns, each with a call that ran, and no answer.
    assert len(steps_requests) == 3
    assert (by_steps.steps, by_steps.calls_sent, by_steps.budget_hit) == (3, 3, 'steps')
    assert by_steps.final_answer is None
    assert by_steps.stopped == 'step budget spent: 3 turn(s) without a final answer'
    assert [p['temperature'] for p in by_steps.points] == [300, 400, 500]

    # The call budget: 2 calls, then 1 of 3; the model is not asked again.
    assert len(calls_requests) == 2
    assert (by_calls.steps, by_calls.calls_sent, by_calls.budget_hit) == (2, 3, 'calls')
    assert by_calls.final_answer is None
    assert by_calls.stopped == 'call budget spent: 3 tool call(s) sent'
    assert [r.params['temperature'] for r in by_calls.results] == [300, 600, 900]

    url, message = refused
    assert message == f'cannot reach the model endpoint {url} (connection refused)'
    url, message = slow
    assert message == f'the model endpoint {url} did not answer within 0.5s'


@pytest.fixture
def in_process_cli(monkeypatch: pytest.MonkeyPatch):
    """``main()`` in this process, without a key in the environment; the umask restored."""
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)


LOCAL = 'http://127.0.0.1:8000/v1'
BAD_FLAGS = [
    (['--llm', LOCAL, '--model', 'm'], '--llm drives the planner of a campaign; add --campaign'),
    (['--campaign', '--llm', LOCAL], '--llm needs --model NAME'),
    (['--campaign', '--llm', 'ftp://host/v1', '--model', 'm'], "'ftp://host/v1' is not an http(s)"),
    (['--campaign', '--llm', 'host:8000', '--model', 'm'], 'is not an http(s) URL'),
    (['--model', 'm'], '--model goes with --campaign --llm URL'),
    (['--campaign', '--llm', LOCAL, '--model', 'm', '--llm-max-steps', '0'], '--llm-max-steps 0'),
    (['--campaign', '--llm', LOCAL, '--model', 'm', '--llm-max-calls', '-1'], '--llm-max-calls -1'),
    (
        ['--campaign', '--llm', 'https://llm.example.org/v1', '--model', 'm'],
        '--llm https://llm.example.org/v1: no API key in $OPENAI_API_KEY; export the key in '
        'that variable (or name another with --llm-key-env)',
    ),
    (
        ['--campaign', '--llm', 'https://a:b@llm.example.org/v1', '--model', 'm'],
        '--llm https://llm.example.org/v1: no API key',
    ),
    (
        ['--campaign', '--llm', 'https://llm.example.org/v1', '--model', 'm', '--llm-key-env', 'K'],
        'no API key in $K; export the key in that variable\n',
    ),
    (
        ['--campaign', '--llm', 'https://x.org/v1', '--model', 'm', '--llm-key-env', 'sk-12-ab'],
        '--llm-key-env takes the NAME of an environment variable',
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(('args', 'message'), BAD_FLAGS)
def test_bad_model_flags_exit_2_with_one_line(args, message, tmp_path, in_process_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, '--tool', 'mock_md', '--run-dir', str(tmp_path / 'run')])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count('\n') == 1 and err.startswith('launch.py: error: '), err
    assert message in err
    assert 'sk-12-ab' not in err and 'a:b@' not in err
    assert not (tmp_path / 'run').exists()


@pytest.mark.timeout(30)
def test_a_refused_connection_is_one_line_before_any_director(tmp_path, in_process_cli, capsys):
    url = f'http://127.0.0.1:{free_port()}/v1'
    started = time.monotonic()
    args = ['--campaign', '--llm', url, '--model', 'm', '--tool', 'mock_md']
    with pytest.raises(SystemExit) as exit_info:
        main([*args, '--run-dir', str(tmp_path / 'run')])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1] == (
        f'launch.py: error: cannot reach the model endpoint {url} (connection refused); '
        'check --llm and the server'
    )
    assert not (tmp_path / 'run' / 'journal').exists()  # no Director started
    assert time.monotonic() - started < 15


@pytest.mark.timeout(120)
def test_launch_campaign_with_llm_end_to_end_json(tmp_path: pathlib.Path):
    script = [
        tool_calls(
            ('mock_md', {'temperature': 300, 'steps': 50}),
            ('mock_md', {'temperature': 1200, 'steps': 50}),
            ('mock_md', {'temperature': 2100, 'steps': 50, 'seed': 'one'}),
        ),
        tool_calls(('mock_md', {'temperature': 2100, 'steps': 50, 'seed': 1})),
        text(ANSWER),
    ]
    env = {**os.environ, 'TEST_LLM_KEY': 'key-from-the-environment'}
    env.pop('OPENAI_API_KEY', None)
    with ScriptedOpenAI(script) as server:
        args = ['--campaign', '--llm', server.url, '--model', 'scripted', '--tool', 'mock_md']
        args += ['--steps', '50', '--llm-key-env', 'TEST_LLM_KEY', '--simulate-nodes', '2']
        args += ['--partitions', '2', '--json', '--run-dir', str(tmp_path / 'run')]
        result = subprocess.run(
            [sys.executable, str(REPO / 'launch.py'), *args],
            capture_output=True,
            text=True,
            timeout=100,
            stdin=subprocess.DEVNULL,
            env=env,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    campaign = document['campaign']
    assert campaign['tool'] == 'mock_md' and campaign['model'] == 'scripted'
    assert campaign['url'] == server.url
    assert campaign['final_answer'] == ANSWER
    assert (campaign['steps'], campaign['max_steps'], campaign['budget_hit']) == (3, 8, None)
    assert (campaign['calls_sent'], campaign['invalid_calls'], campaign['retries']) == (3, 1, 1)
    assert "seed: 'one' is not of type 'integer'" in campaign['invalid'][0]['error']
    assert campaign['usage'] == {k: 3 * v for k, v in USAGE.items()}
    assert [p['temperature'] for p in campaign['points']] == [300, 1200, 2100]
    assert [r['params']['steps'] for r in document['results']] == [50, 50, 50]
    assert all(r['ok'] for r in document['results'])
    # The key came from the named variable, and went nowhere else.
    assert {h['authorization'] for h in server.headers} == {'Bearer key-from-the-environment'}
    assert 'key-from-the-environment' not in result.stdout + result.stderr
    assert 'key-from-the-environment' not in (tmp_path / 'run' / 'manifest.json').read_text()
