"""A client that leaves right after an MPI call: nothing of the server's outlives it."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from tests.conftest import parsl_processes_of
from tests.helpers import wait_for
from tests.mcp_servers import SMALL_JOB
from tests.mcp_servers import stdio_session

pytestmark = pytest.mark.timeout(180)


def test_no_pool_outlives_the_server_after_an_mpi_call(run_dir: pathlib.Path):
    async def main():
        async with stdio_session('--run-dir', str(run_dir), *SMALL_JOB) as session:
            result = await session.call_tool('mpi_probe', {'num_nodes': 1, 'ranks_per_node': 2})
            assert not result.isError, result
            assert result.structuredContent['value']['size'] == 2
            # The node's pool comes back after the MPI call; the client leaves at once.
            assert parsl_processes_of(run_dir)
        # The SDK's client ends the server when it leaves: its Directors stop their pools,
        # or their watchdogs do; a pool waiting for a lost interchange would live ~30 s more.
        await wait_for(lambda: not parsl_processes_of(run_dir), timeout=10)

    asyncio.run(main())
