"""Stopping the agents a client launched, within a bound.

Academy's ``Manager.close`` asks every agent to shut down, then waits for
each without a bound: a Director or node coordinator that stopped answering
without dying (SIGSTOP, a hung process, a node under memory pressure) would
keep ``launch.py`` running for ever after its last call.
[`closing`][actors.client.shutdown.closing] gives them ``timeout`` seconds
after the request; an agent still running then is named in one line and,
where the executor can (a process per agent), killed: a Director's
watchdog then stops its Parsl processes. An agent that cannot be killed from
here (a thread, a Globus Compute task) fails the close with a
[`ShutdownTimeoutError`][actors.client.shutdown.ShutdownTimeoutError]
naming it, instead of a wait for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from academy.manager import Manager

from actors.common.errors import HpcToolCallingError
from actors.common.timing import KILL_WAIT
from actors.common.timing import SHUTDOWN_BOUND
from actors.common.timing import STOP_REQUEST_TIMEOUT
from actors.director.startup import ACADEMY_MANAGER_LOGGER

logger = logging.getLogger(__name__)


class ShutdownTimeoutError(HpcToolCallingError, RuntimeError):
    """Agents did not stop within the bound and could not be killed from here."""


@contextlib.asynccontextmanager
async def closing(manager: Manager[Any], timeout: float = SHUTDOWN_BOUND) -> AsyncIterator[Any]:
    """``async with manager``, whose close waits at most ``timeout`` seconds per agent.

    Raises:
        ShutdownTimeoutError: If an agent did not stop and could not be killed.

    """
    body_failed = False
    killed: list[str] = []
    left: list[str] = []
    try:
        async with manager:
            try:
                yield manager
            except BaseException:
                body_failed = True
                raise
            finally:
                killed, left = await _end_within(manager, timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not left or (task is not None and task.cancelling()):
            raise
        raise ShutdownTimeoutError(
            f'{", ".join(left)} did not stop within {timeout:.0f}s and cannot be killed from '
            'this process (a thread or a remote task): end it yourself',
        ) from None
    except Exception as e:
        if body_failed or not killed:
            raise
        # The killed agents' own failures: a consequence, named already.
        logger.debug('closing the Manager after killing %s: %r', ', '.join(killed), e)


async def _end_within(manager: Manager[Any], timeout: float) -> tuple[list[str], list[str]]:
    """Ask every running agent to stop; kill what is left after ``timeout``.

    Returns:
        The agents killed, and those that could not be (their tasks cancelled).

    """
    # Academy keeps its launched agents and its closed flag private.
    running = {acb.agent_id: acb.task for acb in manager._acbs.values() if not acb.task.done()}
    if not running:
        return [], []
    manager._closed.set()  # an agent killed below must not be restarted

    async def ask(agent_id: Any) -> None:
        try:
            await asyncio.wait_for(manager.get_handle(agent_id).shutdown(), STOP_REQUEST_TIMEOUT)
        except Exception as e:
            logger.debug('asking %s to stop: %r', agent_id, e)

    await asyncio.gather(*(ask(agent_id) for agent_id in running))
    _, stuck = await asyncio.wait(running.values(), timeout=timeout)
    if not stuck:
        return [], []
    names = [_name(a) for a, task in running.items() if task in stuck]
    killed = sum(_kill(executor) for executor in manager._executors.values())
    logger.error(
        '%s did not stop within %.0fs of being asked (a stopped or hung process?): %s',
        ', '.join(names),
        timeout,
        'killed' if killed else 'it cannot be killed from here',
    )
    if killed:
        with _quiet_kills():
            _, stuck = await asyncio.wait(stuck, timeout=KILL_WAIT)
    left = [_name(a) for a, task in running.items() if task in stuck]
    for task in stuck:
        task.cancel()
    return [n for n in names if n not in left], left


class _KilledAgents(logging.Filter):
    """Academy's record of an agent killed here: one line, not its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BrokenProcessPool):
            record.msg, record.args = f'{record.getMessage()} (killed: it did not stop)', ()
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def _quiet_kills() -> Iterator[None]:
    academy_logger = logging.getLogger(ACADEMY_MANAGER_LOGGER)
    quiet = _KilledAgents()
    academy_logger.addFilter(quiet)
    try:
        yield
    finally:
        academy_logger.removeFilter(quiet)


def _kill(executor: Any) -> int:
    kill = getattr(executor, 'kill', None)
    return kill() if callable(kill) else 0


def _name(agent_id: Any) -> str:
    return getattr(agent_id, 'name', None) or str(agent_id)
