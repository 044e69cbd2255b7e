"""``launch.py mcp`` over HTTP reclaims idle sessions; what they started lives on.

A session with no request in flight for the idle timeout (30 minutes;
``$HPC_TOOL_CALLING_MCP_SESSION_IDLE_TIMEOUT`` seconds) is closed: its id then
answers 404, and a new session fetches the calls the old one started by key.
"""

from __future__ import annotations

import json
import pathlib
import re
import time

import anyio
import httpx
import pytest

from actors.common.errors import ConfigurationError
from actors.mcp import transport
from tests.mcp_servers import SMALL_JOB
from tests.mcp_servers import http_server
from tests.mcp_servers import http_session
from tests.mcp_servers import initialize_request

pytestmark = [pytest.mark.timeout(180)]

HELLO = initialize_request('idle')
IDLE = 2.0
"""Seconds of idleness after which the test's server closes a session."""


def _wait_for(log: pathlib.Path, pattern: str, timeout: float) -> re.Match[str]:
    """Wait until the server's log says ``pattern`` (it logs each session it reclaims)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError(f'{pattern!r} not in {log} within {timeout}s:\n{log.read_text()[-3000:]}')


def test_an_idle_session_is_reclaimed_and_its_calls_live_on(
    run_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(transport.IDLE_TIMEOUT_VARIABLE, str(IDLE))
    log = run_dir.parent / 'mcp.log'
    args = (*SMALL_JOB, '--run-dir', str(run_dir), '--log-level', 'INFO')
    with http_server(*args, log=log) as srv:
        headers = {
            'Authorization': f'Bearer {srv.token}',
            'Accept': 'application/json, text/event-stream',
            'Content-Type': 'application/json',
        }
        with httpx.Client(headers=headers, timeout=120) as client:
            opened = client.post(srv.url, content=json.dumps(HELLO))
            assert opened.status_code == 200, opened.text
            session = opened.headers['mcp-session-id']
            ids = {'Mcp-Session-Id': session}
            note = {'jsonrpc': '2.0', 'method': 'notifications/initialized'}
            assert client.post(srv.url, content=json.dumps(note), headers=ids).status_code == 202
            submit = {
                'jsonrpc': '2.0',
                'id': 1,
                'method': 'tools/call',
                'params': {
                    'name': 'submit',
                    'arguments': {
                        'tool': 'mock_md',
                        'arguments': {'duration': 0},
                        'call_key': 'left-behind',
                    },
                },
            }
            started = client.post(srv.url, content=json.dumps(submit), headers=ids)
            assert started.status_code == 200, started.text
            # Nothing more on this session: the server closes it once it is idle.
            _wait_for(log, rf'Session {session} idle timeout', timeout=60)
            ping = {'jsonrpc': '2.0', 'id': 2, 'method': 'ping'}
            gone = client.post(srv.url, content=json.dumps(ping), headers=ids)
            assert gone.status_code == 404, gone.text

        async def come_back() -> None:
            async with http_session(srv.url, token=srv.token) as fresh:
                fetched = await fresh.call_tool(
                    'call_result', {'call_key': 'left-behind', 'wait': 60}
                )
                assert fetched.structuredContent['state']['state'] == 'completed'

        anyio.run(come_back)


def test_idle_timeout_default_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(transport.IDLE_TIMEOUT_VARIABLE, raising=False)
    assert transport.idle_timeout_from_environment() == 30 * 60
    monkeypatch.setenv(transport.IDLE_TIMEOUT_VARIABLE, '90')
    assert transport.idle_timeout_from_environment() == 90
    for bad in ('0', '-5', 'nan', 'inf', 'soon'):
        monkeypatch.setenv(transport.IDLE_TIMEOUT_VARIABLE, bad)
        with pytest.raises(ConfigurationError, match='positive number'):
            transport.idle_timeout_from_environment()
