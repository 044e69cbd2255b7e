"""Client side: launch one Director per partition (and the node coordinator), wait until ready.

Apart from [`actors.calling.calls`][actors.calling.calls], the one call path,
because launching needs the Director and coordinator classes (and so Parsl)
where calling needs neither: the dispatcher and the MCP server call
Directors without loading Parsl.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from academy.handle import Handle
from academy.manager import Manager

from actors.calling.calls import DirectorFailedError
from actors.calling.calls import call
from actors.common.names import director_name
from actors.common.results import DirectorStatus
from actors.common.timing import STOPPED_SETTLE
from actors.coordinator.agent import COORDINATOR_NAME
from actors.coordinator.agent import NodeCoordinator
from actors.coordinator.growth import GrowthPolicy
from actors.coordinator.policy import ElasticPolicy
from actors.director.agent import Director
from actors.director.options import DirectorOptions
from actors.director.startup import quiet_start_failures
from actors.job.partition import Partition
from actors.job.partition import PartitionRequest
from actors.site.profile import SiteProfile
from actors.store.jobs import live_jobs

logger = logging.getLogger(__name__)


class DirectorGroup(list[Handle[Director]]):
    """The Directors' handles (a list), and the job's node coordinator when nodes move.

    Attributes:
        coordinator: The [`NodeCoordinator`][actors.coordinator.agent.NodeCoordinator]'s
            handle; ``None`` with ``elastic=False`` or one Director.

    """

    def __init__(
        self, handles: Sequence[Handle[Director]], coordinator: Handle[NodeCoordinator] | None
    ) -> None:
        super().__init__(handles)
        self.coordinator = coordinator


async def launch_directors(
    manager: Manager[Any],
    partitions: Sequence[Partition | PartitionRequest],
    profile: SiteProfile,
    run_dir: str,
    options: DirectorOptions | None = None,
    *,
    elastic: bool = True,
    policy: ElasticPolicy | None = None,
    growth: GrowthPolicy | None = None,
    **changes: Any,
) -> DirectorGroup:
    """Launch one Director per partition with the manager's default executor.

    A [`PartitionRequest`][actors.job.partition.PartitionRequest] is resolved by
    the Director where it runs (on a Globus Compute endpoint's batch job).

    Args:
        manager: The Academy manager that launches (and later stops) them.
        partitions: One partition (or request) per Director.
        profile: Site profile that says how to place workers.
        run_dir: The run directory every Director writes under.
        options: How every Director runs (default ``DirectorOptions()``).
        elastic: Move nodes between the Directors as their loads change
            (a [`NodeCoordinator`][actors.coordinator.agent.NodeCoordinator]
            is launched with them); ``False`` keeps the partitions fixed.
        policy: How nodes move (default ``ElasticPolicy()``).
        growth: Whether and how the run asks for more batch jobs (default: never).
        changes: Changes to ``options`` (``retries=3``, ``walltime=...``).

    Returns:
        The Directors' handles, in partition order (with ``.coordinator``).

    Raises:
        ConfigurationError: If an option is invalid; nothing is launched.

    """
    options = (options or DirectorOptions()).replace(**changes)
    policy = policy or ElasticPolicy()
    sizes = [p.size for p in partitions if isinstance(p, Partition)]
    growth = growth or GrowthPolicy()
    if elastic and options.max_nodes is None and len(sizes) == len(partitions):
        # An MPI call may borrow up to the whole job, and the extra jobs' nodes.
        options = options.replace(max_nodes=sum(sizes) + growth.extra_nodes)
    quiet_start_failures()  # a Director that cannot start is one line here too
    handles: list[Handle[Director]] = []
    for partition in partitions:
        handle = await manager.launch(
            Director,
            args=(partition, profile, run_dir),
            kwargs={'options': options},
            name=director_name(partition.index),
        )
        handles.append(handle)
    coordinator = (
        await launch_coordinator(manager, handles, run_dir, policy, growth) if elastic else None
    )
    return DirectorGroup(handles, coordinator)


async def launch_coordinator(
    manager: Manager[Any],
    handles: Sequence[Handle[Director]],
    run_dir: str,
    policy: ElasticPolicy | None = None,
    growth: GrowthPolicy | None = None,
) -> Handle[NodeCoordinator] | None:
    """Launch the job's node coordinator over ``handles``.

    ``None`` for fewer than two Directors, unless the run may grow (``growth``)
    or has extra jobs of an earlier start to take back or end.
    """
    growth = growth or GrowthPolicy()
    if len(handles) < 2 and not growth.enabled:
        if not await asyncio.to_thread(live_jobs, run_dir):
            return None
    return await manager.launch(
        NodeCoordinator,
        args=(list(handles), run_dir, policy or ElasticPolicy(), growth),
        name=COORDINATOR_NAME,
    )


async def wait_ready(
    manager: Manager[Any],
    handles: Sequence[Handle[Director]],
    timeout: float | None = None,
) -> list[DirectorStatus]:
    """Wait until every Director answers ``status`` (its DFK is up).

    Returns:
        Each Director's first status.

    """
    return await asyncio.wait_for(
        asyncio.gather(*(_first_status(manager, h) for h in handles)),
        timeout=timeout,
    )


async def _first_status(manager: Manager[Any], handle: Handle[Director]) -> DirectorStatus:
    """``status``, asked again while the Manager restarts a Director that failed to start."""
    while True:
        try:
            return await call(manager, handle, 'status')
        except DirectorFailedError:
            acb = manager._acbs.get(handle.agent_id)
            if acb is None or acb.task.done():
                raise
            logger.info('%s stopped while starting; waiting for its restart', handle.agent_id)
            await asyncio.sleep(STOPPED_SETTLE)
