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
  Director's block is stopped, whether it moves, drains or lost its pools.

Which block to restart, and when to give a node up, is the rule table's
(``actors.execution.block_health``).

With ``actors.execution.interchange``, ``executor_app`` and ``blocks`` this
is the only code that reads Parsl's HTEX internals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
from collections.abc import Iterable
from typing import Any

import psutil
from parsl.jobs.states import JobState
from parsl.jobs.states import JobStatus

from actors.common.errors import ExecutionError
from actors.common.processes import exited
from actors.common.processes import family
from actors.common.processes import stop_processes
from actors.execution.interchange import ask_interchange

logger = logging.getLogger(__name__)


class NodeBlockError(ExecutionError, RuntimeError):
    """A node's block could not be started."""


def block_names(executor: Any, job_ids: Iterable[str] | None = None) -> set[str]:
    """The ``JOBNAME`` of an executor's blocks (all it ever started, or ``job_ids``'s).

    ``LocalProvider`` exports it in each block's script, named after the script.
    """
    resources = getattr(getattr(executor, 'provider', None), 'resources', {})
    wanted = list(resources) if job_ids is None else list(job_ids)
    names = set()
    for job_id in wanted:
        script = resources.get(job_id, {}).get('script_path')
        if script:
            names.add(pathlib.Path(script).stem)
    return names


def block_leftovers(names: Iterable[str]) -> list[psutil.Process]:
    """Running processes of this user that the blocks named ``names`` started.

    A worker pool that dies (killed, out of memory) orphans its
    ``multiprocessing`` helpers, the manager server and the resource tracker:
    they leave every process tree and group Parsl knows of and would live
    until the batch job ends. Only their environment still names their block.
    """
    names = set(names)
    if not names:
        return []
    uid, me = os.getuid(), os.getpid()
    found = []
    for proc in psutil.process_iter(['uids']):
        uids = proc.info['uids']
        if proc.pid == me or uids is None or uids.real != uid:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get('JOBNAME') in names and not exited(proc):
                found.append(proc)
    return found


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
    stop_processes(lambda: family(trees, groups), grace=1.0, also=block_leftovers(names))
