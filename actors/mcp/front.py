"""The Directors an MCP server serves: launched for it, or those of a running run.

Either way the server sees a [`Front`][actors.mcp.front.Front]: the Directors'
handles, a dispatcher that routes calls to the one with free capacity, and
the run directory where their journals (and the server's own records) live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from academy.handle import Handle
from academy.manager import Manager

from actors.calling.calls import call
from actors.client.dispatcher import Dispatcher
from actors.client.status_query import joined
from actors.common.timing import CANCEL_TIMEOUT
from actors.common.timing import JOIN_TIMEOUT
from actors.store.manifest import RunManifest

if TYPE_CHECKING:
    from actors.calling.calls import DirectorHandle

logger = logging.getLogger(__name__)


class Front:
    """The Directors behind the server.

    Args:
        handles: One handle per Director, in partition order.
        run_dir: The run directory (journals, manifest, the server's records).
        manager: The Manager that launched them (``None`` when attached).

    """

    def __init__(
        self, handles: Sequence[DirectorHandle], run_dir: str, manager: Manager[Any] | None = None
    ) -> None:
        self.handles = list(handles)
        self.run_dir = run_dir
        self.manager = manager
        self.dispatcher = Dispatcher(self.handles, manager=manager)

    async def cancel(
        self, index: int, *, call_key: str | None = None, prefix: str | None = None
    ) -> int:
        """Tell Director ``index`` to stop a call (``call_key``) or every ``prefix/...`` call.

        Through [`call`][actors.calling.calls.call], as every call to a Director:
        a Director that restarts meanwhile is asked again, one that stopped
        for good answers at once.

        Returns:
            How many calls it stopped (0 if it could not be reached).

        """
        handle = self.handles[index]
        key = {'call_key': call_key} if call_key is not None else {'batch_key': prefix}
        try:
            return await asyncio.wait_for(
                call(self.manager, handle, 'cancel', **key), CANCEL_TIMEOUT
            )
        except Exception as e:
            logger.warning('could not cancel %s on Director %d: %s', key, index, e)
            return 0


@contextlib.asynccontextmanager
async def attached(run_dir: str) -> AsyncIterator[Front]:
    """The Directors of a running run, through its manifest and exchange.

    Raises:
        ConfigurationError: If the run dir holds no readable manifest, its
            exchange cannot be joined from another process, or it needs a
            password that is not given (``HPC_TOOL_CALLING_EXCHANGE_PASSWORD``).
        ExchangeUnreachableError: If the exchange does not answer.

    """
    manifest = RunManifest.read(run_dir)
    async with joined(manifest, 'launch-mcp', JOIN_TIMEOUT) as client:
        handles: list[DirectorHandle] = [
            Handle(entry.agent_id(), exchange=client, ignore_context=True)
            for entry in manifest.directors
        ]
        yield Front(handles, str(run_dir))
