"""``launch.py mcp`` with the MCP SDK's own clients, over stdio and Streamable HTTP.

Every test runs a real server subprocess with real Directors (Parsl pools on
a simulated job) and talks to it only through the protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pathlib
import stat
import subprocess
import sys
import time
from typing import Any

import anyio
import httpx
import jsonschema
import mcp.types as mt
import pytest

from actors.store.journal import read_run
from actors.tools.registry import TOOLS
from actors.tools.schemas import tool_spec
from tests.mcp_servers import REPO
from tests.mcp_servers import SMALL_JOB
from tests.mcp_servers import http_server
from tests.mcp_servers import http_session
from tests.mcp_servers import stdio_session

pytestmark = [
    pytest.mark.timeout(240),
    # MCP tasks are deprecated in the SDK (they leave the spec for an extension); still served.
    pytest.mark.filterwarnings('ignore:The experimental tasks API is deprecated'),
]

EXTRA_TOOLS = {
    'ensemble',
    'directors_status',
    'submit',
    'call_status',
    'call_result',
    'cancel_call',
}


def journaled(run_dir: pathlib.Path, key: str) -> list[dict[str, Any]]:
    """Every journal record (all Directors) of ``key``."""
    return [r for r in read_run(run_dir) if r.get('call_key') == key]


async def wait_sent(session: Any, key: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until the server has sent call ``key`` to a Director and it runs there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await session.call_tool('call_status', {'call_key': key})
        if not state.isError and state.structuredContent['directors']:
            status = await session.call_tool('directors_status', {})
            if status.structuredContent['directors'][0]['running'] >= 1:
                return state.structuredContent
        await asyncio.sleep(0.2)
    raise TimeoutError(f'{key} was not running within {timeout}s')


async def check_bad_arguments(session: Any) -> None:
    """Bad calls come back as tool errors naming each bad argument; nothing runs."""
    bad = await session.call_tool('mock_md', {'duration': 'soon', 'temprature': 3})
    assert bad.isError
    text = bad.content[0].text
    assert "'temprature' was unexpected" in text
    assert "duration: 'soon' is not of type 'number'" in text
    assert 'valid arguments: duration, temperature' in text
    nan = await session.call_tool('ase_md', {'temperature': float('inf')})
    assert nan.isError
    assert 'temperature' in nan.content[0].text
    ensemble = await session.call_tool(
        'ensemble',
        {'tool': 'mock_md', 'arguments': [{'duration': 0}, {'steps': -1}, {'seed': 'x'}]},
    )
    assert ensemble.isError
    assert 'arguments[1]' in ensemble.content[0].text
    assert 'arguments[2]' in ensemble.content[0].text
    assert 'arguments[0]' not in ensemble.content[0].text
    unknown = await session.call_tool('no_such_tool', {})
    assert unknown.isError
    assert 'mock_md' in unknown.content[0].text
    missing = await session.call_tool('call_result', {'call_key': 'never'})
    assert missing.isError
    assert "'never'" in missing.content[0].text


def test_stdio_tools_schemas_results_and_restart(run_dir: pathlib.Path) -> None:
    """Typed tools, checked results, bad arguments, outputs by reference; a restart answers."""
    errlog = open(run_dir.parent / 'mcp-stdio.err', 'w')

    async def first() -> dict[str, Any]:
        args = (*SMALL_JOB, '--run-dir', str(run_dir), '--inline-limit', '10')
        async with stdio_session(*args, errlog=errlog) as session:
            listed = {t.name: t for t in (await session.list_tools()).tools}
            assert set(listed) == set(TOOLS) | EXTRA_TOOLS
            for tool in listed.values():
                jsonschema.Draft202012Validator.check_schema(tool.inputSchema)
                if tool.outputSchema is not None:
                    jsonschema.Draft202012Validator.check_schema(tool.outputSchema)
            for name in TOOLS:
                # The Directors' own schema, plus the control arguments.
                own = tool_spec(name).parameters['properties']
                assert set(listed[name].inputSchema['properties']) == {*own, 'call_key', 'timeout'}
                assert listed[name].execution.taskSupport == 'optional'

            result = await session.call_tool('mock_md', {'duration': 0.2, 'call_key': 'first'})
            assert not result.isError, result.content
            content = result.structuredContent
            jsonschema.validate(content, listed['mock_md'].outputSchema)
            assert content['status'] == 'ok'
            assert content['call_key'] == 'first'
            assert content['node'] in ('sim-node-001', 'sim-node-002')
            # Above --inline-limit: the value is a resource link, readable by the client.
            assert content['value'] is None
            link = content['value_ref']
            read = await session.read_resource(link['uri'])
            assert read.contents[0].mimeType == 'application/json'  # as the listing says
            value = json.loads(read.contents[0].text)
            assert value == journaled(run_dir, 'first')[0]['value']
            resources = {str(r.uri) for r in (await session.list_resources()).resources}
            assert {link['uri'], 'hpc://status'} <= resources

            await check_bad_arguments(session)
            # Nothing bad was submitted: the Director ran one call.
            status = await session.call_tool('directors_status', {})
            assert status.structuredContent['directors'][0]['done'] == 1
            return content

    async def restarted(before: dict[str, Any]) -> None:
        args = ('--resume', str(run_dir))
        async with stdio_session(*args, errlog=errlog) as session:
            again = await session.call_tool('mock_md', {'duration': 0.2, 'call_key': 'first'})
            assert not again.isError
            assert again.structuredContent['call_id'] == before['call_id']
            assert again.structuredContent['start'] == before['start']
            fetched = await session.call_tool('call_result', {'call_key': 'first'})
            assert fetched.structuredContent['state']['state'] == 'completed'
            other = await session.call_tool('mock_md', {'duration': 1, 'call_key': 'first'})
            assert other.isError
            assert "call_key 'first' already names another call" in other.content[0].text

    try:
        before = anyio.run(first)
        anyio.run(restarted, before)
    finally:
        errlog.close()
    assert len(journaled(run_dir, 'first')) == 1


def test_http_ensemble_progress_tasks_and_submit(run_dir: pathlib.Path) -> None:
    """An ensemble reports progress; MCP tasks and submit/call_result run durable calls."""
    with http_server(*SMALL_JOB, '--run-dir', str(run_dir), log=run_dir.parent / 'mcp.log') as srv:

        async def main() -> None:
            async with http_session(srv.url, token=srv.token) as session:
                progress: list[tuple[float, float | None, str | None]] = []

                async def on_progress(done: float, total: float | None, message: str | None):
                    progress.append((done, total, message))

                sets = [{'duration': 0.3, 'seed': i} for i in range(12)]
                result = await session.call_tool(
                    'ensemble',
                    {'tool': 'mock_md', 'arguments': sets, 'call_key': 'ens'},
                    progress_callback=on_progress,
                )
                assert not result.isError, result.content
                content = result.structuredContent
                assert content['counts'] == {'ok': 12}
                assert [r['params']['seed'] for r in content['results']] == list(range(12))
                assert [r['call_key'] for r in content['results']] == [
                    f'ens/{i}' for i in range(12)
                ]
                done = [p[0] for p in progress]
                # MCP: each notification's progress MUST increase (heartbeats included).
                assert all(a < b for a, b in itertools.pairwise(done)), done
                assert len({d for d in done if 0 < d < 12}) >= 1  # seen part-way
                assert progress[-1][:2] == (pytest.approx(12), 12)
                assert 'director-0' in progress[-1][2]

                # MCP tasks: the request returns at once; the task id is the call key.
                created = await session.experimental.call_tool_as_task(
                    'mock_md', {'duration': 0.5, 'seed': 7}
                )
                task_id = created.task.taskId
                states = [s.status async for s in session.experimental.poll_task(task_id)]
                assert states[-1] == 'completed'
                payload = await session.experimental.get_task_result(task_id, mt.CallToolResult)
                assert payload.structuredContent['status'] == 'ok'
                assert payload.structuredContent['call_key'] == task_id
                listed = await session.experimental.list_tasks()
                assert task_id in {t.taskId for t in listed.tasks}

                # The same, by hand, for clients without tasks.
                submitted = await session.call_tool(
                    'submit', {'tool': 'mock_md', 'arguments': {'duration': 0.3}}
                )
                key = submitted.structuredContent['call_key']
                assert submitted.structuredContent['state'] == 'working'
                now = await session.call_tool('call_result', {'call_key': key, 'wait': 0})
                assert now.structuredContent['result'] is None
                later = await session.call_tool('call_result', {'call_key': key, 'wait': 60})
                assert later.structuredContent['state']['state'] == 'completed'
                assert later.structuredContent['result']['status'] == 'ok'

        anyio.run(main)
    assert len(journaled(run_dir, 'ens/11')) == 1


def test_http_cancel_stops_the_tool(run_dir: pathlib.Path) -> None:
    """notifications/cancelled, tasks/cancel and cancel_call all stop the running tool."""
    with http_server(*SMALL_JOB, '--run-dir', str(run_dir), log=run_dir.parent / 'mcp.log') as srv:

        async def main() -> None:
            async with http_session(srv.url, token=srv.token) as session:
                # notifications/cancelled: the SDK's client does not send it when a
                # request is abandoned, so it is sent here with the request's id.
                request_id = session._request_id
                call = asyncio.ensure_future(
                    session.call_tool('mock_md', {'duration': 120, 'call_key': 'long'})
                )
                await asyncio.sleep(0.1)  # the call takes its id before anything else is sent
                await wait_sent(session, 'long')
                await session.send_notification(
                    mt.ClientNotification(
                        mt.CancelledNotification(
                            params=mt.CancelledNotificationParams(
                                requestId=request_id, reason='test'
                            ),
                        ),
                    ),
                )
                with pytest.raises(Exception, match='cancelled'):
                    await asyncio.wait_for(call, 30)
                after = await session.call_tool('call_result', {'call_key': 'long', 'wait': 30})
                assert after.structuredContent['state']['state'] == 'cancelled'
                assert after.structuredContent['result']['status'] == 'cancelled'

                created = await session.experimental.call_tool_as_task(
                    'mock_md', {'duration': 120, 'call_key': 'task-long'}
                )
                await wait_sent(session, 'task-long')
                cancelled = await session.experimental.cancel_task(created.task.taskId)
                assert cancelled.status == 'cancelled'

                await session.call_tool(
                    'submit', {'tool': 'mock_md', 'arguments': {'duration': 120}, 'call_key': 's'}
                )
                await wait_sent(session, 's')
                stopped = await session.call_tool('cancel_call', {'call_key': 's'})
                assert not stopped.isError
                end = await session.call_tool('call_result', {'call_key': 's', 'wait': 30})
                assert end.structuredContent['result']['status'] == 'cancelled'
                # Every tool stopped: no worker holds a call any more.
                status = await session.call_tool('directors_status', {})
                assert status.structuredContent['directors'][0]['running'] == 0

        started = time.monotonic()
        anyio.run(main)
        assert time.monotonic() - started < 100  # not the 3 x 120 s the tools would take
    for key in ('long', 'task-long', 's'):
        (record,) = journaled(run_dir, key)
        assert record['status'] == 'cancelled'


def test_http_disconnect_then_reconnect_gets_the_result(run_dir: pathlib.Path) -> None:
    """A client that leaves mid-call loses nothing: a new session fetches the one run's result."""
    with http_server(*SMALL_JOB, '--run-dir', str(run_dir), log=run_dir.parent / 'mcp.log') as srv:

        async def leave_mid_call() -> None:
            async with http_session(srv.url, token=srv.token) as session:
                call = asyncio.ensure_future(
                    session.call_tool('mock_md', {'duration': 3, 'call_key': 'left'})
                )
                await wait_sent(session, 'left')
                call.cancel()  # the client goes away; nothing tells the server to cancel

        async def come_back() -> None:
            async with http_session(srv.url, token=srv.token) as session:
                fetched = await session.call_tool('call_result', {'call_key': 'left', 'wait': 60})
                assert fetched.structuredContent['state']['state'] == 'completed'
                first = fetched.structuredContent['result']
                again = await session.call_tool('mock_md', {'duration': 3, 'call_key': 'left'})
                assert again.structuredContent['call_id'] == first['call_id']

        anyio.run(leave_mid_call)
        anyio.run(come_back)
    (record,) = journaled(run_dir, 'left')
    assert record['status'] == 'ok'


HELLO = {
    'jsonrpc': '2.0',
    'id': 1,
    'method': 'initialize',
    'params': {
        'protocolVersion': '2025-06-18',
        'capabilities': {},
        'clientInfo': {'name': 'test', 'version': '0'},
    },
}
"""A raw ``initialize`` request, as a client without the SDK sends it."""
ACCEPT = {'Accept': 'application/json, text/event-stream'}


def test_http_bearer_token(run_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """With --token-file, a request without the token or with a wrong one gets 401."""
    token = 'a' * 24 + 'b' * 8
    token_file = tmp_path / 'token'
    token_file.write_text(token + '\n')
    token_file.chmod(0o600)
    args = (*SMALL_JOB, '--run-dir', str(run_dir), '--token-file', str(token_file))
    with http_server(*args, log=tmp_path / 'mcp.log') as srv:
        assert httpx.post(srv.url, json=HELLO, headers=ACCEPT).status_code == 401
        wrong = {**ACCEPT, 'Authorization': 'Bearer ' + 'x' * 32}
        assert httpx.post(srv.url, json=HELLO, headers=wrong).status_code == 401

        async def refused() -> None:
            async with http_session(srv.url) as session:
                await session.list_tools()

        with pytest.raises(BaseException):  # noqa: B017  (the SDK wraps the 401)
            anyio.run(refused)

        async def allowed() -> None:
            async with http_session(srv.url, token=token) as session:
                result = await session.call_tool('mock_md', {'duration': 0})
                assert result.structuredContent['status'] == 'ok'

        anyio.run(allowed)


def test_http_on_loopback_needs_a_token_by_default(run_dir: pathlib.Path, tmp_path: pathlib.Path):
    """No --token-file: a private token is made once, reused, and required; another
    local account reads neither the token nor anything the server serves."""
    with http_server(*SMALL_JOB, '--run-dir', str(run_dir), log=tmp_path / 'mcp.log') as srv:
        assert stat.S_IMODE(srv.token_file.stat().st_mode) == 0o600
        assert len(srv.token) == 64
        assert srv.token not in (tmp_path / 'mcp.log').read_text()  # the file is named, not it
        assert httpx.post(srv.url, json=HELLO, headers=ACCEPT).status_code == 401
        if os.geteuid() == 0 and os.path.exists('/usr/bin/python3'):
            # Another account on the same host (a login node's loopback is everyone's),
            # with the system's Python (the project's venv may be private to its owner).
            stranger = subprocess.run(
                ['/usr/bin/python3', '-c', NOBODY, srv.url, str(srv.token_file)],
                capture_output=True,
                text=True,
                timeout=60,
                user='nobody',
                check=False,
            )
            assert stranger.stdout.split() == ['token-unreadable', '401'], stranger.stderr

        async def allowed() -> None:
            async with http_session(srv.url, token=srv.token) as session:
                result = await session.call_tool('mock_md', {'duration': 0})
                assert result.structuredContent['status'] == 'ok'

        anyio.run(allowed)
        first = srv.token
    # The next server on this account reuses the same token (hosts' configs keep working).
    with http_server('--resume', str(run_dir), log=tmp_path / 'mcp.log') as again:
        assert again.token == first


NOBODY = """
import json, sys, urllib.error, urllib.request
try:
    open(sys.argv[2]).read()
    print('token-read')
except PermissionError:
    print('token-unreadable')
hello = {'jsonrpc': '2.0', 'id': 1, 'method': 'initialize', 'params': {}}
request = urllib.request.Request(
    sys.argv[1],
    data=json.dumps(hello).encode(),
    headers={'Accept': 'application/json, text/event-stream', 'Content-Type': 'application/json'},
)
try:
    print(urllib.request.urlopen(request, timeout=30).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""


def test_token_file_is_checked_before_it_is_read(tmp_path: pathlib.Path) -> None:
    done = _mcp('--http', '127.0.0.1:0', '--token-file', '/dev/zero')
    assert done.returncode == 2
    assert '/dev/zero: not a regular file' in done.stderr


def _mcp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), 'mcp', *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ('args', 'said'),
    [
        (('--http', '0.0.0.0:0'), 'needs a bearer token'),
        (('--http', '10.1.2.3:8765'), 'needs a bearer token'),
        (('--http', '127.0.0.1:99999'), 'port in 0..65535'),
        (('--http', 'nonsense'), 'give HOST:PORT'),
        (('--token-file', '/nonexistent'), '--token-file is for --http'),
        (('--http', '127.0.0.1:0', '--token-file', '/nonexistent/token'), 'No such file'),
        (('--inline-limit', '-1'), '--inline-limit -1'),
        (('--partitions', '0'), '--partitions'),
    ],
)
def test_bad_flags_refused_before_anything_starts(args: tuple[str, ...], said: str) -> None:
    done = _mcp(*args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert 'Traceback' not in done.stderr
    assert done.stdout == ''


def test_token_file_readable_by_others_refused(tmp_path: pathlib.Path) -> None:
    token_file = tmp_path / 'token'
    token_file.write_text('t' * 32)
    os.chmod(token_file, 0o644)
    done = _mcp('--http', '0.0.0.0:0', '--token-file', str(token_file))
    assert done.returncode == 2
    assert 'mode 0644 lets others read the token' in done.stderr
    assert f'chmod 600 {token_file}' in done.stderr


def test_attach_to_a_local_exchange_run_refused(run_dir: pathlib.Path) -> None:
    launched = subprocess.run(
        [
            *(sys.executable, str(REPO / 'launch.py'), *SMALL_JOB, '--run-dir', str(run_dir)),
            *('--duration', '0', '--iterations', '1', '--quiet', '--json'),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert launched.returncode == 0, launched.stderr
    done = _mcp('--attach', str(run_dir))
    assert done.returncode == 2
    assert 'in-process exchange' in done.stderr
    done = _mcp('--attach', str(run_dir), '--partitions', '3')
    assert done.returncode == 2
    assert 'launch.py flags (--partitions 3) do not apply' in done.stderr


def test_attach_serves_a_running_run(redis_server: Any, tmp_path: pathlib.Path) -> None:
    """--attach RUN_DIR serves the Directors of another server's run over its Redis exchange."""
    run_dir = tmp_path / 'run'
    exchange = f'redis://127.0.0.1:{redis_server.port}'
    owner_args = (*SMALL_JOB, '--run-dir', str(run_dir), '--exchange', exchange)
    with http_server(*owner_args, log=tmp_path / 'owner.log'):
        with http_server('--attach', str(run_dir), log=tmp_path / 'attached.log') as attached:

            async def main() -> None:
                async with http_session(attached.url, token=attached.token) as session:
                    result = await session.call_tool('mock_md', {'duration': 0.1, 'call_key': 'a'})
                    assert result.structuredContent['status'] == 'ok'
                    assert result.structuredContent['director'] == 'director-0'

            anyio.run(main)
    assert len(journaled(run_dir, 'a')) == 1


def test_progress_always_increases_even_while_nothing_finishes(monkeypatch) -> None:
    from actors.mcp import server as mcp_server

    now = [100.0]
    monkeypatch.setattr(mcp_server.time, 'monotonic', lambda: now[0])
    progress = mcp_server.Progress()
    values = [progress.value(0, 3)]
    for done, later in [(0, 0), (0, 5), (0, 600), (1, 0), (1, 0), (1, 30), (3, 0), (3, 0)]:
        now[0] += later
        values.append(progress.value(done, 3))
    assert all(a < b for a, b in itertools.pairwise(values)), values
    assert values[0] == 0 and 0 < values[3] < 1 and 1 <= values[4] < 2
    assert values[-2] == 3 and values[-1] > 3  # the total itself, first time all are done
