"""A model server that answers wrongly ends ``launch.py --campaign --llm`` with one line.

Real HTTP at the wire (the scripted server sends the bytes given), the real
``openai`` client, real Directors: each malformed reply (a string token count,
a ``null`` message, HTML, a truncated or empty body, ...) must end the run with
one line that says what the server sent, quoting at most a little of it, and
keep the calls that finished in the journal; never a traceback.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from actors.store.journal import read_run
from tests.conftest import REPO
from tests.scripted_openai import Raw
from tests.scripted_openai import ScriptedOpenAI
from tests.scripted_openai import as_is
from tests.scripted_openai import completion
from tests.scripted_openai import text
from tests.scripted_openai import tool_calls

FIRST = tool_calls(('mock_md', {'temperature': 300, 'steps': 5}))
"""A good first turn: one call that runs and is journaled before the bad reply."""

GOOD = completion(text('done'))
LONG_HTML = b'<html><head><title>502 Bad Gateway</title></head><body>' + b'x' * 5000 + b'</body>'


def _choice(message: object) -> dict:
    return {**GOOD, 'choices': [{'index': 0, 'message': message, 'finish_reason': 'stop'}]}


def _calls(calls: object) -> dict:
    return _choice({'role': 'assistant', 'content': None, 'tool_calls': calls})


BAD_REPLIES = {
    'string-token-count': (
        as_is({**GOOD, 'usage': {'prompt_tokens': 'many', 'total_tokens': 3}}),
        "sent usage.prompt_tokens that is not a number of tokens: 'many'",
    ),
    'null-message': (
        as_is(_choice(None)),
        "sent a chat completion whose choices[0].message is not an object: {'index': 0, "
        "'message': None",
    ),
    'no-choices': (
        as_is({**GOOD, 'choices': []}),
        'sent a chat completion with no choices: ',
    ),
    'html': (
        Raw(LONG_HTML, content_type='text/html; charset=utf-8'),
        "answered the chat request with a body that is not JSON (text/html): '<html><head>",
    ),
    'truncated-json': (
        Raw(json.dumps(GOOD).encode()[:50]),
        'answered the chat request with a body that is not JSON (application/json): \'{"id"',
    ),
    'empty-200': (Raw(b''), 'answered the chat request with an empty body'),
    'not-an-object': (as_is([GOOD]), 'sent a chat completion that is not a JSON object: [{'),
    'tool-calls-not-a-list': (
        as_is(_calls('mock_md')),
        "sent message tool_calls that are not a list: 'mock_md'",
    ),
    'tool-call-without-function': (
        as_is(_calls([{'id': 'c1', 'type': 'function', 'function': None}])),
        "sent tool_calls[0] without a function object: {'id': 'c1'",
    ),
}


def _launch(server: ScriptedOpenAI, run_dir: pathlib.Path, *more: str):
    args = ['--campaign', '--llm', server.url, '--model', 'scripted', '--tool', 'mock_md']
    args += ['--steps', '5', '--simulate-nodes', '1', '--partitions', '1', '--json']
    args += ['--run-dir', str(run_dir)]
    env = {k: v for k, v in os.environ.items() if k != 'OPENAI_API_KEY'}
    return subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), *args, '--llm-timeout', '2', *more],
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


def _last_line(stderr: str) -> str:
    assert 'Traceback' not in stderr, stderr
    return stderr.strip().splitlines()[-1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize('case', list(BAD_REPLIES))
def test_a_malformed_reply_ends_the_campaign_in_one_line(case: str, tmp_path: pathlib.Path):
    reply, said = BAD_REPLIES[case]
    run_dir = tmp_path / 'run'
    with ScriptedOpenAI([FIRST, reply]) as server:
        result = _launch(server, run_dir)
    assert len(server.chats) == 2  # no retry of a reply that came whole
    line = _last_line(result.stderr)
    assert result.returncode == 1, result.stderr
    failed = 'launch.py: failed: ModelEndpointError: the model endpoint'
    assert line.startswith(f'{failed} {server.url} '), line
    assert said in line, line
    assert line.endswith(f'calls are in {run_dir}/journal; run the campaign again to go on')
    assert len(line) < 450  # the quote is cut (the HTML page is 5 kB)
    # The call of the first turn finished and is kept.
    records = read_run(run_dir)
    assert [(r['status'], r['params']['temperature']) for r in records] == [('ok', 300)]


@pytest.mark.timeout(120)
def test_arguments_that_are_not_json_go_back_to_the_model(tmp_path: pathlib.Path):
    # The model's mistake, not the server's: the model gets the error and tries again.
    script = [
        tool_calls(('mock_md', '{"temperature": 300,'), ('mock_md', 17)),
        tool_calls(('mock_md', {'temperature': 300, 'steps': 5})),
        text('done'),
    ]
    with ScriptedOpenAI(script) as server:
        result = _launch(server, tmp_path / 'run')
    assert 'Traceback' not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    campaign = json.loads(result.stdout)['campaign']
    assert (campaign['invalid_calls'], campaign['calls_sent']) == (2, 1)
    assert 'not valid JSON' in campaign['invalid'][0]['error']
    assert campaign['final_answer'] == 'done'


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ('models', 'said'),
    [
        (
            {'models_reply': Raw(LONG_HTML, content_type='text/html')},
            "answered GET /models with a body that is not JSON (text/html): '<html><head>",
        ),
        (
            {'models_reply': as_is({'data': 'scripted'})},
            "sent a GET /models answer that is not a list of models: {'data': 'scripted'}",
        ),
        # A byte every 0.3 s never trips the 2 s read timeout: the request's deadline does.
        ({'models_trickle': 0.3}, 'did not answer GET /models within 6s'),
    ],
    ids=['html', 'not-a-list', 'trickle'],
)
def test_a_bad_model_list_is_one_line_before_any_director(
    models: dict, said: str, tmp_path: pathlib.Path
):
    with ScriptedOpenAI([GOOD], **models) as server:
        result = _launch(server, tmp_path / 'run')
    line = _last_line(result.stderr)
    assert result.returncode == 2, result.stderr
    assert line.startswith(f'launch.py: error: the model endpoint {server.url} '), line
    assert said in line and line.endswith('; check --llm and the server'), line
    assert len(line) < 450
    assert server.chats == []
    assert not (tmp_path / 'run' / 'journal').exists()  # no Director started


@pytest.mark.timeout(120)
def test_a_trickling_chat_answer_is_bounded_by_the_request_deadline(tmp_path: pathlib.Path):
    with ScriptedOpenAI([GOOD], trickle=0.3) as server:
        result = _launch(server, tmp_path / 'run', '--llm-timeout', '1')
    line = _last_line(result.stderr)
    assert result.returncode == 1, result.stderr
    assert 'did not finish its answer within' in line, line
    assert '(--llm-timeout 1s per attempt)' in line, line
