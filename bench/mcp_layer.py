"""The MCP layer's cost: a no-op tool call through ``launch.py mcp`` vs an Academy handle.

Three paths to the same kind of Director (a simulated 1-node job, 1 worker),
measured in the same run, call by call in rotation:

- ``stdio``: the SDK's client -> ``launch.py mcp`` (a subprocess) over stdio;
- ``http``: the SDK's client -> ``launch.py mcp --http 127.0.0.1:0``;
- ``academy``: ``call_tool`` on a Director's handle in this process.

Each MCP server runs its own Director in its own process, so the difference
is what the MCP layer adds: JSON-RPC on a pipe or HTTP, the schema check, the
durable call book and the dispatcher. Then 1,000 no-op calls go to the HTTP
server as one ``ensemble`` call and as 1,000 ``tools/call`` requests sent at
once: the ensemble's speed-up is the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import re
import secrets
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

from bench.common import Options
from bench.common import Ratio
from bench.common import directors
from bench.common import partitions
from bench.common import percentile
from bench.common import wait_workers

REPO = pathlib.Path(__file__).resolve().parent.parent
JOB = ('--simulate-nodes', '1', '--partitions', '1', '--workers-per-node', '1')
WARMUP = 20
TARGET_ENSEMBLE_SPEEDUP = 2.0
START_TIMEOUT = 120.0


@contextlib.contextmanager
def _http_server(run_dir: pathlib.Path) -> Any:
    """``launch.py mcp --http 127.0.0.1:0``; yields its URL and bearer token."""
    log = run_dir.with_suffix('.log')
    token = secrets.token_hex(32)
    token_file = run_dir.with_suffix('.token')
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    with open(log, 'wb') as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, str(REPO / 'launch.py'), 'mcp', '--http', '127.0.0.1:0'),
                *(*JOB, '--run-dir', str(run_dir), '--token-file', str(token_file)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (found := re.search(r'serving MCP on (http://\S+)', log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'launch.py mcp did not start: {log.read_text()}')
            time.sleep(0.1)
        yield found.group(1), token
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def _http_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    headers = {'Authorization': f'Bearer {token}'}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=600)) as client,
        streamable_http_client(url, http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def _stdio_session(run_dir: pathlib.Path, errlog: Any) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(REPO / 'launch.py'), 'mcp', *JOB, '--run-dir', str(run_dir)],
        cwd=str(REPO),
    )
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def _mcp_call(session: ClientSession) -> float:
    start = time.perf_counter()
    result = await session.call_tool('mock_md', {})
    elapsed = time.perf_counter() - start
    if result.isError or not result.structuredContent['ok']:
        raise RuntimeError(f'MCP no-op call failed: {result.content}')
    return elapsed


async def _academy_call(handle: Any) -> float:
    start = time.perf_counter()
    result = await handle.call_tool('mock_md', {})
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f'Academy no-op call failed: {result}')
    return elapsed


async def measure(root: pathlib.Path, calls: int, ensemble: int) -> dict[str, Any]:
    """Round trips per path, then one ensemble against ``ensemble`` separate calls."""
    times: dict[str, list[float]] = {'stdio': [], 'http': [], 'academy': []}
    part = partitions(root / 'academy', 1, 1)[0]
    with (
        open(root / 'stdio.log', 'w') as errlog,
        _http_server(root / 'http') as (url, token),
    ):
        async with (
            directors(root / 'academy', [part], 1) as (_, handles),
            _stdio_session(root / 'stdio', errlog) as stdio,
            _http_session(url, token) as http,
        ):
            (handle,) = handles
            await wait_workers(handles)
            for i in range(WARMUP + calls):
                stdio_time = await _mcp_call(stdio)
                http_time = await _mcp_call(http)
                academy_time = await _academy_call(handle)
                if i >= WARMUP:
                    times['stdio'].append(stdio_time)
                    times['http'].append(http_time)
                    times['academy'].append(academy_time)
            sets = [{} for _ in range(ensemble)]
            start = time.perf_counter()
            one = await http.call_tool('ensemble', {'tool': 'mock_md', 'arguments': sets})
            one_call = time.perf_counter() - start
            if one.isError or one.structuredContent['counts'] != {'ok': ensemble}:
                raise RuntimeError(f'ensemble failed: {one.content[0]}')
            start = time.perf_counter()
            separate = await asyncio.gather(*(http.call_tool('mock_md', {}) for _ in sets))
            many_calls = time.perf_counter() - start
            if any(r.isError for r in separate):
                raise RuntimeError('a separate call failed')
    return {'times': times, 'ensemble_s': one_call, 'separate_s': many_calls}


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """Measure the three paths and the ensemble; return results and ratio rows."""
    calls = 60 if options.quick else 300
    ensemble = 200 if options.quick else 1000
    print(
        f'mcp: {calls} sequential no-op calls per path (stdio, http, academy), in rotation; '
        f'then {ensemble} calls as one ensemble vs {ensemble} tools/call requests at once'
    )
    found = asyncio.run(measure(root, calls, ensemble))
    results: dict[str, Any] = {'mcp_calls': calls, 'mcp_ensemble_calls': ensemble}
    for q in (50, 99):
        academy = percentile(found['times']['academy'], q) * 1000
        results[f'mcp_roundtrip_p{q}_ms_academy'] = academy
        for path in ('stdio', 'http'):
            mcp = percentile(found['times'][path], q) * 1000
            results[f'mcp_roundtrip_p{q}_ms_{path}'] = mcp
            results[f'mcp_overhead_p{q}_ms_{path}'] = mcp - academy
            print(
                f'  {path:5s} p{q}: mcp {mcp:7.2f} ms, academy handle {academy:7.2f} ms, '
                f'MCP layer {mcp - academy:+7.2f} ms'
            )
    speedup = found['separate_s'] / found['ensemble_s']
    results['mcp_ensemble_s'] = found['ensemble_s']
    results['mcp_separate_s'] = found['separate_s']
    results['mcp_ensemble_speedup'] = speedup
    print(
        f'  {ensemble} calls: one ensemble {found["ensemble_s"]:.2f}s '
        f'({ensemble / found["ensemble_s"]:.0f} calls/s), {ensemble} separate calls '
        f'{found["separate_s"]:.2f}s ({ensemble / found["separate_s"]:.0f} calls/s): '
        f'{speedup:.1f}x'
    )
    return results, [
        Ratio('mcp_ensemble_speedup', speedup, TARGET_ENSEMBLE_SPEEDUP, False, 'x'),
    ]
