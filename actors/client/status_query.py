"""Ask the Directors of a running run for their status, from another process.

``launch.py status RUN_DIR`` reads the run's manifest (exchange and agent
IDs), joins the same exchange as a new user and calls every Director's
``status`` action. Only networked exchanges that outlive the launching
process's view of them can be re-joined: ``redis://`` and ``http(s)://`` URLs
(and the hosted exchange). Academy's in-process exchange and an HTTP exchange
that ``launch.py --exchange http`` spawned for itself cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from typing import Any

from academy.exchange.mailbox_status import MailboxStatus
from academy.handle import Handle
from redis.exceptions import ConnectionError as RedisConnectionError

from actors.calling.calls import call
from actors.client.exchange import open_exchange
from actors.client.exchange import require_password
from actors.common.errors import CallError
from actors.common.errors import ConfigurationError
from actors.common.results import DirectorStatus
from actors.store.manifest import DirectorEntry
from actors.store.manifest import RunManifest

if TYPE_CHECKING:
    from actors.calling.calls import DirectorHandle

UNREACHABLE = {
    'local': 'the in-process exchange "local"',
    'http': 'an HTTP exchange spawned for the run on a port that was not recorded',
}


class ExchangeUnreachableError(CallError, OSError):
    """The run's exchange did not accept a connection."""


@dataclasses.dataclass
class DirectorReport:
    """One Director's answer, or why there is none.

    Attributes:
        entry: The Director as the manifest lists it.
        status: Its status, if it answered.
        problem: Why it did not answer.

    """

    entry: DirectorEntry
    status: DirectorStatus | None = None
    problem: str | None = None


def check_reachable(manifest: RunManifest) -> None:
    """Refuse runs whose exchange another process cannot join.

    Raises:
        ConfigurationError: If the run's exchange is in-process or spawned.

    """
    reason = UNREACHABLE.get(manifest.exchange)
    if reason is not None:
        raise ConfigurationError(
            f'run {manifest.run_dir} uses {reason}: its Directors can be reached only '
            'from the launching process. Start runs with --exchange redis://HOST:PORT '
            'or --exchange http://HOST:PORT to query them with `launch.py status`',
        )


async def _ask(client: Any, entry: DirectorEntry, timeout: float) -> DirectorReport:
    agent_id = entry.agent_id()
    mailbox = await client.status(agent_id)
    if mailbox == MailboxStatus.TERMINATED:
        return DirectorReport(entry, problem='the Director has stopped (the run is over)')
    if mailbox == MailboxStatus.MISSING:
        return DirectorReport(entry, problem='the exchange does not know this Director')
    handle: DirectorHandle = Handle(agent_id, exchange=client, ignore_context=True)
    try:
        status = await asyncio.wait_for(call(None, handle, 'status'), timeout)
    except TimeoutError:
        return DirectorReport(entry, problem=f'no answer within {timeout:g}s')
    return DirectorReport(entry, status=status)


@contextlib.asynccontextmanager
async def joined(manifest: RunManifest, name: str, timeout: float) -> AsyncIterator[Any]:
    """A user client of a recorded run's exchange, for another process to reach its Directors.

    Raises:
        ConfigurationError: If the run's exchange cannot be joined from here,
            or needs a password that is not given.
        ExchangeUnreachableError: If the exchange does not answer.

    """
    check_reachable(manifest)
    require_password(manifest.exchange, manifest.exchange_needs_password, manifest.run_dir)
    with open_exchange(manifest.exchange) as factory:
        try:
            client = await asyncio.wait_for(
                factory.create_user_client(name=name, start_listener=True),
                timeout,
            )
        except (OSError, TimeoutError, RedisConnectionError) as e:
            raise ExchangeUnreachableError(
                f'cannot join the exchange {manifest.exchange} of run {manifest.run_dir}: '
                f'{e or type(e).__name__} (is the run, or its exchange, still up?)',
            ) from None
        async with client:
            yield client


async def query(manifest: RunManifest, timeout: float = 10.0) -> list[DirectorReport]:
    """Every Director's status (or why it has none), in partition order.

    Raises:
        ConfigurationError: If the run's exchange cannot be joined from here,
            or needs a password that is not given.
        ExchangeUnreachableError: If the exchange does not answer.

    """
    async with joined(manifest, 'launch-status', timeout) as client:
        return list(await asyncio.gather(*(_ask(client, d, timeout) for d in manifest.directors)))
