"""Client side: launch one Director per partition and call their actions.

A call to a Director that died (for example because its Parsl executor could
not start) would wait forever on the exchange; every call made here races
against the Director's own task in the Manager and fails with the
Director's error instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from academy.handle import Handle
from academy.manager import Manager

from actors.director import Director
from actors.partition import Partition
from actors.partition import PartitionRequest
from actors.sites import SiteProfile
from actors.tools import DEFAULT_TOOL

logger = logging.getLogger(__name__)


class DirectorFailedError(RuntimeError):
    """A Director stopped before answering a call."""


async def launch_directors(
    manager: Manager[Any],
    partitions: Sequence[Partition | PartitionRequest],
    profile: SiteProfile,
    run_dir: str,
    *,
    workers_per_node: int | None = None,
    tool: str = DEFAULT_TOOL,
) -> list[Handle[Director]]:
    """Launch one Director per partition with the manager's default executor.

    A [`PartitionRequest`][actors.partition.PartitionRequest] is resolved by
    the Director where it runs (on a Globus Compute endpoint's batch job).
    """
    handles = []
    for partition in partitions:
        handle = await manager.launch(
            Director,
            args=(partition, profile, run_dir),
            kwargs={'workers_per_node': workers_per_node, 'tool': tool},
            name=f'director-{partition.index}',
        )
        handles.append(handle)
    return handles


async def call(
    manager: Manager[Any],
    handle: Handle[Any],
    action: str,
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Invoke ``action`` on a Director; fail if the Director dies meanwhile.

    Raises:
        DirectorFailedError: If the Director's task ended before answering.

    """
    request = asyncio.ensure_future(handle.action(action, *args, **kwargs))
    died = asyncio.ensure_future(
        manager.wait([handle], return_when=asyncio.FIRST_COMPLETED),
    )
    try:
        done, _ = await asyncio.wait(
            {request, died},
            return_when=asyncio.FIRST_COMPLETED,
        )
        if request in done:
            return request.result()
        request.cancel()
        error = _agent_error(manager, handle)
        raise DirectorFailedError(
            f'{action} on {handle.agent_id} failed: the Director stopped'
            + (f' ({type(error).__name__}: {error})' if error else ''),
        )
    finally:
        died.cancel()


def _agent_error(manager: Manager[Any], handle: Handle[Any]) -> BaseException | None:
    acb = manager._acbs.get(handle.agent_id)
    if acb is None or not acb.task.done() or acb.task.cancelled():
        return None
    return acb.task.exception()


async def wait_ready(
    manager: Manager[Any],
    handles: Sequence[Handle[Any]],
    timeout: float | None = None,
) -> list[Any]:
    """Wait until every Director answers ``status`` (its DFK is up).

    Returns:
        Each Director's first status.

    """
    return await asyncio.wait_for(
        asyncio.gather(*(call(manager, h, 'status') for h in handles)),
        timeout=timeout,
    )
