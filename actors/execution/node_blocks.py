"""One node's block of a Director's HTEX: start it pinned, hold it, stop it.

Parsl has no API to move a node between executors (parsl#798); it has the
pieces, which this module puts together for one block at a time:

* start: ``scale_out_facade(1)`` while the executor's
  [`NodeProvider`][actors.site.node_provider.NodeProvider] is pinned to the
  node, so the new block's one pool runs there;
* hold: the interchange's ``HOLD_MANAGER`` command (``_hold_block``) for the
  block's pool, which then gets no new task while its running ones finish;
* stop: the provider's ``cancel`` of the block's job (SIGTERM to its process
  group), its status marked ``SCALED_IN`` as Parsl's own ``scale_in`` does,
  and whatever the pool left reaped (``block_leftovers``): the one way a
  Director's block is stopped, whether it moves, drains or lost its pools;
* diagnose: [`BlockDoctor`][actors.execution.node_blocks.BlockDoctor] names
  the blocks whose every pool was lost while their job runs on.

With ``actors.execution.interchange``, ``executor_app`` and ``blocks`` this
is the only code that reads Parsl's HTEX internals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Any

from parsl.jobs.states import JobState
from parsl.jobs.states import JobStatus

from actors.common.errors import ExecutionError
from actors.execution.blocks import block_leftovers
from actors.execution.blocks import block_names
from actors.execution.interchange import ask_interchange
from actors.execution.watchdog import reap

logger = logging.getLogger(__name__)


class NodeBlockError(ExecutionError, RuntimeError):
    """A node's block could not be started."""


def start_node_block(executor: Any, node: str) -> str:
    """Start a block whose one worker pool runs on ``node``; its block ID.

    Raises:
        NodeBlockError: If the provider refused the block (its error).

    """
    provider = executor.provider
    with provider.pinned(node):
        started = executor.scale_out_facade(1)
    if not started:
        failed = [s for s in executor._status.values() if s.state == JobState.FAILED]
        reason = failed[-1].message if failed else 'the provider returned no job'
        raise NodeBlockError(f'{executor.label}: no block could start on {node}: {reason}')
    return str(started[0])


def block_state(executor: Any, block_id: str) -> JobStatus | None:
    """The last polled status of a block (``None`` if Parsl does not know it)."""
    status: JobStatus | None = executor._status.get(block_id)
    return status


def block_pid(executor: Any, block_id: str) -> int | None:
    """The process ID of a block's script (``None`` once it is gone)."""
    job_id = executor.blocks_to_job_id.get(block_id)
    job = executor.provider.resources.get(job_id, {}) if job_id is not None else {}
    pid = job.get('remote_pid')
    return int(pid) if pid else None


def block_of_manager(manager: dict[str, Any]) -> str:
    """The block a connected manager (from ``connected_managers``) belongs to."""
    return str(manager['block_id'])


async def hold_block(executor: Any, block_id: str, managers: list[dict[str, Any]]) -> None:
    """Send no new task to the block's pools (``managers``: those connected now)."""
    for manager in managers:
        if block_of_manager(manager) == block_id and manager.get('active', True):
            await ask_interchange(
                executor, functools.partial(executor._hold_manager, manager['manager'])
            )


def stop_node_block(executor: Any, block_id: str) -> None:
    """Cancel a block's job, mark it scaled in, and reap what its pool left."""
    job_id = executor.blocks_to_job_id.get(block_id)
    if job_id is None:
        return
    pid = block_pid(executor, block_id)
    names = block_names(executor, [job_id])
    trees = {pid} if pid else set()
    groups: set[int] = set()
    with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
        groups.add(os.getpgid(pid))  # type: ignore[arg-type]
    groups.discard(os.getpgid(0))
    try:
        executor.provider.cancel([job_id])
    except Exception:
        logger.exception('%s: cancelling block %s failed', executor.label, block_id)
    status = JobStatus(JobState.SCALED_IN)
    executor._status[block_id] = status
    executor._simulated_status[block_id] = status
    reap(trees, groups, grace=1.0, also=block_leftovers(names))


class BlockDoctor:
    """Name the blocks whose worker pools were all lost while their job runs on.

    When a pool dies, ``mpiexec`` (and so the block's job) can live on,
    waiting for the pool's orphaned workers; the provider keeps reporting the
    block as running and nothing would replace it. Once the interchange has
    given up on every pool of a block (after ``heartbeat_threshold``), the
    doctor names it; the Director stops it (``stop_node_block``) and starts
    another on its node, where the lost calls' retries run. A block that
    still has a live pool keeps running: retries use the surviving pools.
    """

    def __init__(self) -> None:
        self._had_managers: set[str] = set()

    def check(self, executor: Any, managers: list[dict[str, Any]]) -> list[str]:
        """The blocks that had a pool and lost every one (each named once).

        Args:
            executor: The HTEX executor.
            managers: Its ``connected_managers()`` (see ``ask_interchange``).

        """
        # Held pools (a node being drained) are listed inactive, and are not lost.
        live = {block_of_manager(m) for m in managers}
        self._had_managers |= live
        broken = []
        for block_id in list(executor.blocks_to_job_id):
            status = block_state(executor, block_id)
            if (
                block_id in self._had_managers
                and block_id not in live
                and status is not None
                and not status.terminal
            ):
                logger.warning('block %s lost all its worker pools; replacing it', block_id)
                self._had_managers.discard(block_id)
                broken.append(block_id)
        return broken
