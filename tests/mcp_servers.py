"""``launch.py mcp`` as the tests run it: a subprocess, reached with the MCP SDK's own clients."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from mcp import ClientSession
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from actors.mcp.transport import TOKEN_FILE_VARIABLE

REPO = pathlib.Path(__file__).resolve().parent.parent
SMALL_JOB = ('--simulate-nodes', '2', '--partitions', '1', '--workers-per-node', '2')
"""One Director on a simulated 2-node job with 2 workers per node: 4 slots."""


def initialize_request(client: str) -> dict[str, Any]:
    """A raw JSON-RPC ``initialize`` request from a client named ``client`` (id 0)."""
    return {
        'jsonrpc': '2.0',
        'id': 0,
        'method': 'initialize',
        'params': {
            'protocolVersion': '2025-06-18',
            'capabilities': {},
            'clientInfo': {'name': client, 'version': '0'},
        },
    }


class HttpServer:
    """``launch.py mcp --http 127.0.0.1:0 ARGS`` until ``stop()``; ``url`` once it serves.

    Its generated bearer token goes to a file next to ``log`` (never the user's own);
    ``token`` is what it says clients must send.
    """

    def __init__(self, *args: str, log: pathlib.Path) -> None:
        self.log = log
        env = {**os.environ, TOKEN_FILE_VARIABLE: str(log.with_suffix('.token'))}
        with open(log, 'wb') as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / 'launch.py'), 'mcp', '--http', '127.0.0.1:0', *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
        self.url = self._wait_url(timeout=120)
        said = re.search(r'TOKEN from (\S+)\n', self.log.read_text())
        assert said, self.log.read_text()
        self.token_file = pathlib.Path(said.group(1))
        self.token = self.token_file.read_text().strip()

    def _wait_url(self, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = re.search(r'serving MCP on (http://\S+)', self.log.read_text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f'launch.py mcp exited: {self.log.read_text()}')
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f'launch.py mcp did not start: {self.log.read_text()}')

    def stop(self) -> int:
        """SIGTERM (it stops its Directors, as on Ctrl-C); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


@contextlib.contextmanager
def http_server(*args: str, log: pathlib.Path) -> Any:
    """An ``HttpServer`` that is stopped at the end of the block."""
    server = HttpServer(*args, log=log)
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def http_session(
    url: str, token: str | None = None, **session: Any
) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session over Streamable HTTP."""
    headers = {'Authorization': f'Bearer {token}'} if token else None
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=300)) as client,
        streamable_http_client(url, http_client=client) as (read, write, _),
        ClientSession(read, write, **session) as mcp_session,
    ):
        await mcp_session.initialize()
        yield mcp_session


@contextlib.asynccontextmanager
async def stdio_session(*args: str, errlog: Any = None) -> AsyncIterator[ClientSession]:
    """``launch.py mcp ARGS`` as a stdio subprocess of the SDK's client, initialized."""
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(REPO / 'launch.py'), 'mcp', *args],
        cwd=str(REPO),
    )
    async with (
        stdio_client(params, errlog=errlog or sys.stderr) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session
