"""``launch.py mcp`` against hostile input: every value it takes can be written back.

A lone UTF-16 surrogate, a 5,000-digit integer, 100,000-deep nesting, NaN and
Infinity, bytes that are not UTF-8 or not JSON: each gets a JSON-RPC error
naming the problem, with the request's id, on stdio and over HTTP; and the
server answers everyone afterwards. The SDK's client cannot send these
values (it serialises strictly), so they go as raw bytes; the SDK's client
then shows the server still serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import mcp.types as mt
import pytest

from tests.mcp_servers import REPO
from tests.mcp_servers import SMALL_JOB
from tests.mcp_servers import http_server
from tests.mcp_servers import http_session
from tests.mcp_servers import initialize_request

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings('ignore:The experimental tasks API is deprecated'),
]

HELLO = initialize_request('hostile')
INITIALIZED = {'jsonrpc': '2.0', 'method': 'notifications/initialized'}
ACCEPT = 'application/json, text/event-stream'


def _call(request_id: int, arguments: bytes) -> bytes:
    """A raw ``tools/call`` of mock_md whose arguments object is ``arguments``, as sent."""
    head = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
    return head.encode() + b'"params":{"name":"mock_md","arguments":' + arguments + b'}}'


DEEP = b'[' * 100_000 + b']' * 100_000
HOSTILE: list[tuple[str, bytes, int, tuple[str, ...]]] = [
    (
        'surrogate call_key',
        _call(101, b'{"duration":0,"call_key":"\\ud800"}'),
        -32600,
        ('lone UTF-16 surrogate', 'params.arguments.call_key', '\\ud800'),
    ),
    (
        'surrogate argument',
        _call(102, b'{"duration":0,"\\udfff":1}'),
        -32600,
        ('lone UTF-16 surrogate', 'key', '\\udfff'),
    ),
    (
        '5000-digit integer',
        _call(103, b'{"duration":' + b'9' * 5000 + b'}'),
        -32600,
        ('5000 digits', 'params.arguments.duration'),
    ),
    (
        '100000-deep nesting',
        _call(104, b'{"duration":0,"x":' + DEEP + b'}'),
        -32600,
        ('nested more than',),
    ),
    ('NaN', _call(105, b'{"duration":NaN}'), -32700, ('NaN', 'params.arguments.duration')),
    (
        'Infinity',
        _call(106, b'{"duration":-Infinity}'),
        -32700,
        ('Infinity', 'params.arguments.duration'),
    ),
    (
        'overflowing float',
        _call(107, b'{"duration":1e999}'),
        -32600,
        ('1e999', 'params.arguments.duration'),
    ),
    ('not UTF-8', _call(108, b'{"duration":0,"x":"\xff\xfe"}'), -32700, ('not UTF-8',)),
    ('not JSON', _call(109, b'{"duration":0'), -32700, ('not JSON',)),
]
"""(what, raw message, JSON-RPC error code, what the error message says)."""


def _id(raw: bytes) -> int:
    return int(raw.split(b'"id":')[1].split(b',')[0])


def check_refusal(what: str, reply: dict[str, Any], raw: bytes, code: int, says: tuple[str, ...]):
    """``reply`` is the JSON-RPC error for ``raw``: its id, the code, a short message naming it."""
    assert reply.get('id') == _id(raw), (what, reply)
    error = reply['error']
    assert error['code'] == code, (what, error)
    for fragment in says:
        assert fragment in error['message'], (what, error['message'])
    assert len(error['message']) < 400, (what, error['message'])


# stdio


class StdioPeer:
    """``launch.py mcp`` on stdio, spoken to in raw lines (what a hostile client sends)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def send(self, raw: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(raw + b'\n')
        await self.proc.stdin.drain()

    async def reply(self, request_id: int | None, timeout: float = 120) -> dict[str, Any]:
        """The next reply carrying ``request_id`` (notifications on the way are skipped)."""
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            assert line, 'the server closed stdout'
            message = json.loads(line)
            if 'id' in message and message.get('method') is None:
                assert message['id'] == request_id, message
                return message

    async def ask(self, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request = {'jsonrpc': '2.0', 'id': request_id, 'method': method, 'params': params}
        await self.send(json.dumps(request).encode())
        return await self.reply(request_id)


@contextlib.asynccontextmanager
async def stdio_peer(*args: str, errlog: pathlib.Path) -> AsyncIterator[StdioPeer]:
    with open(errlog, 'wb') as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / 'launch.py'),
            'mcp',
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            limit=1 << 20,
        )
    peer = StdioPeer(proc)
    try:
        await peer.send(json.dumps(HELLO).encode())
        hello = await peer.reply(0)
        assert 'result' in hello, hello
        await peer.send(json.dumps(INITIALIZED).encode())
        yield peer
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # end of input: the server stops its Directors and exits
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def test_stdio_answers_every_hostile_line_and_serves_on(run_dir: pathlib.Path) -> None:
    async def main() -> None:
        args = (*SMALL_JOB, '--run-dir', str(run_dir))
        async with stdio_peer(*args, errlog=run_dir.parent / 'stdio.err') as peer:
            for what, raw, code, says in HOSTILE:
                await peer.send(raw)
                check_refusal(what, await peer.reply(_id(raw), timeout=30), raw, code, says)
            # Not JSON-RPC (a method that is no string): an error with its id, not silence.
            await peer.send(b'{"jsonrpc":"2.0","id":120,"method":7}')
            shape = await peer.reply(120)
            assert shape['error']['code'] == -32600
            # The server serves on: a call runs, tasks/list and an unknown key answer.
            ran = await peer.ask(
                200,
                'tools/call',
                {'name': 'mock_md', 'arguments': {'duration': 0, 'call_key': 'k'}},
            )
            assert ran['result']['structuredContent']['status'] == 'ok', ran
            tasks = await peer.ask(201, 'tasks/list', {})
            assert [t['taskId'] for t in tasks['result']['tasks']] == ['k'], tasks
            unknown = await peer.ask(
                202, 'tools/call', {'name': 'call_status', 'arguments': {'call_key': 'nope'}}
            )
            assert unknown['result']['isError'], unknown
            assert "'nope'" in unknown['result']['content'][0]['text']

    anyio.run(main)
    # Nothing hostile reached the book: only the good call is recorded, and it reads back.
    book = (run_dir / 'mcp' / 'calls.jsonl').read_bytes().splitlines()
    assert {json.loads(line)['key'] for line in book} == {'k'}


# HTTP


def _sse_or_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a Streamable HTTP reply (a JSON body or an SSE event)."""
    if response.headers['content-type'].startswith('application/json'):
        return response.json()
    for line in response.text.splitlines():
        if line.startswith('data:') and line[5:].strip():
            message = json.loads(line[5:])
            if 'id' in message and 'method' not in message:
                return message
    raise AssertionError(response.text)


def test_http_answers_every_hostile_body_and_serves_everyone(run_dir: pathlib.Path) -> None:
    with http_server(*SMALL_JOB, '--run-dir', str(run_dir), log=run_dir.parent / 'mcp.log') as srv:

        async def main() -> None:
            headers = {
                'Authorization': f'Bearer {srv.token}',
                'Accept': ACCEPT,
                'Content-Type': 'application/json',
            }
            async with (
                http_session(srv.url, token=srv.token) as bystander,
                httpx.AsyncClient(headers=headers, timeout=120) as raw,
            ):
                first = await bystander.call_tool('mock_md', {'duration': 0, 'call_key': 'before'})
                assert first.structuredContent['status'] == 'ok'
                opened = await raw.post(srv.url, content=json.dumps(HELLO))
                assert opened.status_code == 200, opened.text
                session = {'Mcp-Session-Id': opened.headers['mcp-session-id']}
                sent = await raw.post(srv.url, content=json.dumps(INITIALIZED), headers=session)
                assert sent.status_code == 202, sent.text
                for what, body, code, says in HOSTILE:
                    for extra in (session, {}):  # in a session, and opening one
                        answer = await raw.post(srv.url, content=body, headers=extra)
                        assert answer.status_code == 400, (what, answer.status_code, answer.text)
                        check_refusal(what, answer.json(), body, code, says)

                # Everyone is served afterwards: the raw session, the bystander, a new client.
                listed = await raw.post(
                    srv.url,
                    content=json.dumps({'jsonrpc': '2.0', 'id': 300, 'method': 'tasks/list'}),
                    headers=session,
                )
                assert listed.status_code == 200, listed.text
                tasks = _sse_or_json(listed)['result']['tasks']
                assert [t['taskId'] for t in tasks] == ['before']
                assert [t.taskId for t in (await bystander.experimental.list_tasks()).tasks] == [
                    'before'
                ]
                unknown = await bystander.call_tool('call_status', {'call_key': 'nope'})
                assert unknown.isError and "'nope'" in unknown.content[0].text
                async with http_session(srv.url, token=srv.token) as newcomer:
                    after = await newcomer.call_tool(
                        'mock_md', {'duration': 0, 'call_key': 'after'}
                    )
                    assert after.structuredContent['status'] == 'ok'
                    tasks_now = await newcomer.experimental.list_tasks()
                    assert {t.taskId for t in tasks_now.tasks} == {'before', 'after'}

        anyio.run(main)
    book = (run_dir / 'mcp' / 'calls.jsonl').read_bytes().splitlines()
    assert {json.loads(line)['key'] for line in book} == {'before', 'after'}


def test_http_body_over_the_limit_is_refused_unread(run_dir: pathlib.Path) -> None:
    """A body over the limit gets 413 and a JSON-RPC error; the server serves on."""
    from actors.mcp.strict import MAX_MESSAGE_BYTES

    with http_server(*SMALL_JOB, '--run-dir', str(run_dir), log=run_dir.parent / 'mcp.log') as srv:
        headers = {'Authorization': f'Bearer {srv.token}', 'Accept': ACCEPT}
        huge = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b'a' * MAX_MESSAGE_BYTES
        answer = httpx.post(srv.url, content=huge + b'"}}', headers=headers, timeout=120)
        assert answer.status_code == 413
        assert answer.json()['error']['code'] == -32600
        assert str(MAX_MESSAGE_BYTES) in answer.json()['error']['message']

        async def main() -> None:
            async with http_session(srv.url, token=srv.token) as session:
                await session.send_ping()

        anyio.run(main)


def test_refusals_name_the_problem_within_bounds() -> None:
    """Unit: each message says what and where, quotes at most ~120 characters, keeps the id."""
    from actors.mcp.strict import Refused
    from actors.mcp.strict import check

    for what, raw, code, says in HOSTILE:
        with pytest.raises(Refused) as refused:
            check(raw)
        check_refusal(what, json.loads(refused.value.reply()), raw, code, says)
    # A surrogate *pair* is one character, not a lone surrogate: taken.
    good = check(_call(1, b'{"duration":0,"call_key":"\\ud83d\\ude00"}'))
    assert isinstance(good.root, mt.JSONRPCRequest)
    assert good.root.params['arguments']['call_key'] == '\U0001f600'
    # An id after 100,000 levels is still found for the reply.
    late = b'{"jsonrpc":"2.0","method":"ping","params":{"x":' + DEEP + b'},"id":"late"}'
    with pytest.raises(Refused) as refused:
        check(late)
    assert refused.value.request_id == 'late'


def test_the_book_keeps_only_what_it_can_write(tmp_path: pathlib.Path) -> None:
    """Unit: behind the transport, the book itself refuses a call it could not record."""
    import types

    from actors.common.errors import ConfigurationError
    from actors.mcp.book import CallBook
    from actors.mcp.outputs import Outputs

    async def main() -> None:
        book = CallBook(types.SimpleNamespace(run_dir=str(tmp_path)), Outputs(str(tmp_path)))
        book.open()
        try:
            refused = [
                ('\ud800', {'duration': 0}, 'lone UTF-16 surrogate'),
                ('nan', {'duration': float('nan')}, '/duration: float NaN'),
                ('text', {'fail': 'x\udcff'}, '/fail: a string with lone surrogates'),
            ]
            for key, arguments, says in refused:
                with pytest.raises(ConfigurationError, match=says):
                    book.submit('mock_md', arguments, call_key=key)
            assert book.entries == {}
        finally:
            await book.close()
        assert (tmp_path / 'mcp' / 'calls.jsonl').read_bytes() == b''

    anyio.run(main)


def test_a_reply_that_cannot_be_written_becomes_an_error_with_its_id() -> None:
    """Unit: the outgoing check: an unwritable response goes out as -32603, not lost."""
    from mcp.shared.message import SessionMessage

    from actors.mcp.checked_io import writable
    from actors.mcp.checked_io import writable_only

    bad = mt.JSONRPCResponse(jsonrpc='2.0', id=5, result={'x': '\ud800'})
    notice = mt.JSONRPCNotification(jsonrpc='2.0', method='n', params={'x': '\ud800'})
    good = mt.JSONRPCResponse(jsonrpc='2.0', id=6, result={'x': 'fine'})

    async def main() -> list[SessionMessage]:
        out, received = anyio.create_memory_object_stream[SessionMessage](10)
        async with writable_only(out) as send:
            for root in (bad, notice, good):
                await send.send(SessionMessage(mt.JSONRPCMessage(root)))
        return [m async for m in received]

    passed = anyio.run(main)
    assert [m.message.root.id for m in passed] == [5, 6]  # the notification was dropped
    error = passed[0].message.root
    assert isinstance(error, mt.JSONRPCError)
    assert error.error.code == mt.INTERNAL_ERROR
    assert 'could not be written as JSON' in error.error.message
    passed[0].message.model_dump_json()  # and this one can be
    assert writable(SessionMessage(mt.JSONRPCMessage(good))) is not None
