"""``launch.py mcp`` answers before its Directors are up; per-call servers each get their own run.

An MCP host gives a server's first answer about 60 s, less than worker pools
can take to start, and langchain-mcp-adapters' default client starts a new
stdio server for every tool call. Each test runs real servers, reached with
the MCP SDK's own stdio client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pathlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client

from actors.store.journal import final_by_key
from actors.store.journal import read_run
from tests.mcp_servers import REPO
from tests.mcp_servers import SMALL_JOB
from tests.mcp_servers import stdio_session

pytestmark = pytest.mark.timeout(240)

READY = 'Directors ready'


async def wait_text(path: pathlib.Path, pattern: str, timeout: float = 60) -> re.Match[str]:
    """Wait until the file ``path`` holds ``pattern`` (a server's stderr)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text())
        if found:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(f'{pattern!r} not in {path} within {timeout}s: {path.read_text()}')


AT_BARRIER = """
import pathlib, sys, time
sys.path.insert(0, sys.argv[1])
from actors.cli.main import main
import actors.cli.commands.mcp, actors.cli.plan, actors.cli.run, actors.mcp.server  # imported now
barrier = pathlib.Path(sys.argv[2])
pathlib.Path(sys.argv[3]).touch()
while not barrier.exists():
    time.sleep(0.005)
sys.exit(main(sys.argv[4:]))
"""
"""``launch.py``'s own ``main(ARGS)``, run once ``BARRIER`` exists (``python -c AT_BARRIER REPO
BARRIER WAITING ARGS``): the slow imports are done before it, so servers let go together
start their runs in the same instant."""


@contextlib.asynccontextmanager
async def session_at_barrier(
    cwd: pathlib.Path, barrier: pathlib.Path, waiting: pathlib.Path, *args: str, errlog: Any
) -> AsyncIterator[ClientSession]:
    """``launch.py mcp ARGS`` started in ``cwd`` (its ``runs/``) at ``barrier``, as a host would."""
    argv = ['-c', AT_BARRIER, str(REPO), str(barrier), str(waiting), 'mcp', *args]
    params = StdioServerParameters(command=sys.executable, args=argv, cwd=str(cwd))
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def test_initialize_answers_while_the_directors_start(redis_server: Any, tmp_path: pathlib.Path):
    """initialize and tools/list answer while start-up is held; a first call waits, then runs.

    Start-up is held for real: the run's Redis exchange is stopped (SIGSTOP), so
    the server cannot launch its Directors until it is continued.
    """
    run_dir = tmp_path / 'run'
    err = tmp_path / 'mcp.err'
    exchange = f'redis://127.0.0.1:{redis_server.port}'
    args = (*SMALL_JOB, '--run-dir', str(run_dir), '--exchange', exchange)
    assert redis_server.proc is not None
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def main() -> Any:
        with open(err, 'w') as errlog:
            async with stdio_session(*args, errlog=errlog) as session:
                # initialize has been answered: the server serves, its Directors are not up.
                await wait_text(err, r'serving MCP on stdio')
                assert READY not in err.read_text()
                listed = {t.name for t in (await session.list_tools()).tools}
                assert 'mock_md' in listed
                first = asyncio.create_task(
                    session.call_tool(
                        'mock_md',
                        {'duration': 0.2, 'call_key': 'early'},
                        progress_callback=on_progress,
                    )
                )
                # The call is in, waiting for start-up, and says so.
                while not progress:
                    assert not first.done()
                    await asyncio.sleep(0.05)
                assert 'starting the Directors' in (progress[0][2] or '')
                assert READY not in err.read_text()
                redis_server.proc.send_signal(signal.SIGCONT)
                result = await asyncio.wait_for(first, 120)
                assert READY in err.read_text()
                return result

    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        result = anyio.run(main)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert not result.isError, result.content
    assert result.structuredContent['status'] == 'ok'
    assert result.structuredContent['node'] in ('sim-node-001', 'sim-node-002')
    assert list(final_by_key(read_run(run_dir))) == ['early']
    # One request's progress increases throughout, start-up wait included.
    done = [p[0] for p in progress]
    assert all(a < b for a, b in itertools.pairwise(done)), done


def test_a_failed_start_is_told_to_the_first_call(tmp_path: pathlib.Path):
    """Directors that cannot come up: initialize still answers, a call names why, exit 2."""
    not_a_run = tmp_path / 'not-a-run'
    not_a_run.mkdir()
    err = tmp_path / 'mcp.err'

    async def main() -> Any:
        with open(err, 'w') as errlog:
            async with stdio_session('--attach', str(not_a_run), errlog=errlog) as session:
                assert (await session.list_tools()).tools
                called = await session.call_tool('mock_md', {'duration': 0})
                status = await session.call_tool('directors_status', {})
                return called, status

    called, status = anyio.run(main)
    for result in (called, status):
        assert result.isError
        text = result.content[0].text
        assert text.startswith('the Directors did not start: ConfigurationError: ')
        assert str(not_a_run) in text
    said = err.read_text()
    assert 'the Directors did not start' in said
    # Once its client left, the server ended as a refused start always has.
    assert re.search(r'launch\.py mcp: error: .*not-a-run', said), said


def test_servers_started_at_once_get_their_own_run_dirs(tmp_path: pathlib.Path):
    """Two servers without --run-dir, let go in the same instant (a client per call): two runs.

    Both are let go just after a second begins, so both name their run after
    that second and contend for it; each must take its own.
    """
    barrier = tmp_path / 'go'
    job = ('--simulate-nodes', '1', '--partitions', '1', '--workers-per-node', '1')

    async def one(index: int) -> tuple[pathlib.Path, dict[str, Any]]:
        err = tmp_path / f'mcp-{index}.err'
        waiting = tmp_path / f'waiting-{index}'
        with open(err, 'w') as errlog:
            async with session_at_barrier(
                tmp_path, barrier, waiting, *job, errlog=errlog
            ) as session:
                said = await wait_text(err, r'run dir (\S+); serving MCP')
                result = await session.call_tool('mock_md', {'seed': index, 'call_key': 'k'})
                assert not result.isError, result.content
                return pathlib.Path(said.group(1)), result.structuredContent

    async def let_go() -> None:
        while not all((tmp_path / f'waiting-{i}').exists() for i in (0, 1)):
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.05 - time.time() % 1)  # just after the next second begins
        barrier.touch()

    async def main() -> list[tuple[pathlib.Path, dict[str, Any]]]:
        # initialize waits for the barrier: let go from a task of its own.
        releasing = asyncio.create_task(let_go())
        ran = list(await asyncio.gather(one(0), one(1)))
        await releasing
        return ran

    (first, a), (second, b) = anyio.run(main)
    assert first != second
    assert first.parent == second.parent == (tmp_path / 'runs').resolve()
    # The same second: one run has its name, the other the next suffix.
    assert sorted([first.name, second.name]) == sorted([first.name[:15], first.name[:15] + '-2'])
    # Each run's journal holds its own call only.
    for run, result, seed in ((first, a, 0), (second, b, 1)):
        final = final_by_key(read_run(run))
        assert list(final) == ['k'] and final['k']['params']['seed'] == seed
        assert result['params']['seed'] == seed
