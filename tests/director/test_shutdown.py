"""Closing a Manager whose agent stopped answering without dying ends within a bound."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import psutil
import pytest
from academy.agent import Agent
from academy.agent import action
from academy.exchange.cloud.client import spawn_http_exchange
from academy.manager import Manager

from actors.client.deploy import ProcessPerAgentExecutor
from actors.client.exchange import free_port
from actors.client.shutdown import closing
from actors.common.timing import KILL_WAIT
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)

BOUND = 3.0


class Idle(Agent):
    """An agent with nothing to do but answer."""

    @action
    async def pid(self) -> int:
        return os.getpid()


class HangsOnShutdown(Idle):
    """An agent whose shutdown never ends (a hung process)."""

    async def agent_on_shutdown(self) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize('how', ['stopped', 'hung'])
def test_a_silent_agent_is_named_and_killed_within_the_bound(
    how: str, caplog: pytest.LogCaptureFixture
):
    agent_class = Idle if how == 'stopped' else HangsOnShutdown

    async def main():
        with spawn_http_exchange('127.0.0.1', free_port(), timeout=30) as factory:
            manager = await Manager.from_exchange_factory(
                factory, executors=ProcessPerAgentExecutor(), max_retries=3
            )
            async with closing(manager, timeout=BOUND):
                quiet = await manager.launch(agent_class, name='silent-agent')
                answering = await manager.launch(Idle, name='answering-agent')
                agents = [psutil.Process(await h.pid()) for h in (quiet, answering)]
                if how == 'stopped':
                    agents[0].send_signal(signal.SIGSTOP)
                asked = time.monotonic()
            took = time.monotonic() - asked
            await wait_for(lambda: not any(_alive(p) for p in agents), 10)
            return took

    with caplog.at_level(logging.INFO):
        took = asyncio.run(main())
    assert took < BOUND + KILL_WAIT + 5, took
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        m.startswith('silent-agent did not stop within 3s') and m.endswith(': killed')
        for m in errors
    ), errors
    assert not any('answering-agent' in m for m in errors), errors
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
