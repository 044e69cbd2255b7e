"""The blocks of a Director's executors: watch their processes, replace and release them.

``watch_parsl_processes`` tells the parent-death watchdog
(``actors.execution.watchdog``) about the interchange and every block of an
executor; ``release_parsl`` stops Parsl and whatever of it is left before
letting the watchdog go, and stops a lost pool's orphans (``block_leftovers``).
Whether a block is healthy is ``actors.execution.block_health``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from collections.abc import Iterable
from concurrent.futures import wait
from typing import Any

import psutil

from actors.common.processes import wait_exited
from actors.common.timing import CLEANUP_TIMEOUT
from actors.common.timing import STOP_GRACE
from actors.execution.interchange import on_daemon_thread
from actors.execution.node_blocks import block_leftovers
from actors.execution.node_blocks import block_names
from actors.execution.watchdog import Watchdog
from actors.execution.watchdog import reap
from actors.execution.watchdog import targets

logger = logging.getLogger(__name__)


def parsl_processes(executor: Any) -> tuple[set[int], set[int]]:
    """An HTEX's live interchange and block process trees, and the blocks' process groups."""
    trees: set[int] = set()
    groups: set[int] = set()
    interchange = getattr(executor, 'interchange_proc', None)
    if interchange is not None and interchange.poll() is None:
        trees.add(interchange.pid)
    provider = getattr(executor, 'provider', None)
    for job in list(getattr(provider, 'resources', {}).values()):
        pid = job.get('remote_pid')
        if not pid:
            continue
        trees.add(int(pid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            groups.add(os.getpgid(int(pid)))
    return trees, groups


def _processes_of(executors: Iterable[Any]) -> tuple[set[int], set[int]]:
    """Trees and process groups of every executor, never the Director's own group."""
    trees: set[int] = set()
    groups: set[int] = set()
    for executor in executors:
        more_trees, more_groups = parsl_processes(executor)
        trees |= more_trees
        groups |= more_groups
    groups.discard(os.getpgid(0))
    return trees, groups


def watch_parsl_processes(watchdog: Watchdog, executor: Any) -> None:
    """Tell ``watchdog`` about an HTEX's interchange and its blocks' processes."""
    trees, groups = parsl_processes(executor)
    watchdog.watch(trees=sorted(trees), groups=sorted(groups))


def release_parsl(
    watchdog: Watchdog | None,
    executors: Iterable[Any],
    cleanup: Callable[[], Any] | None = None,
    settle: float = STOP_GRACE,
    cleanup_timeout: float = CLEANUP_TIMEOUT,
) -> int:
    """Stop Parsl, make sure none of its processes is left, then release ``watchdog``.

    ``DataFlowKernel.cleanup`` shuts the executors down one after another and
    stops at the first error: an executor after it (the MPI executor) would
    keep its interchange. Whatever of ``executors`` still runs after
    ``cleanup`` (or, when it is ``None``, after a failed start) is stopped
    here, before the watchdog lets go.

    Processes of the executors' blocks that no tree or group holds any more
    (``block_leftovers``) go the same way.

    A successful ``cleanup`` does not wait for the blocks: ``LocalProvider.cancel``
    sends SIGTERM to each block's process group and returns. ``mpiexec`` then
    passes the signal on to its proxies, which stop the worker pools, and exits
    after them, tens of milliseconds later. The processes of the executors
    (taken before ``cleanup``, while the block's process tree is whole) are
    given ``settle`` seconds to exit on their own; only what still runs after
    that is stopped here (SIGTERM, then SIGKILL) and logged as a warning.

    ``cleanup`` runs on a daemon thread and gets ``cleanup_timeout`` seconds:
    with a dead interchange it blocks forever (see ``InterchangeWatch``), and
    the Director must still stop what is left and exit.

    Args:
        watchdog: The Director's parent-death watchdog; ``None`` when the
            Director goes on with another DFK (nothing to release then).
        executors: Every executor of the DFK (or of the config it failed on).
        cleanup: ``dfk.cleanup``, if there is a DFK.
        settle: Seconds the processes get to exit after a successful ``cleanup``.
        cleanup_timeout: Seconds ``cleanup`` may take.

    Returns:
        How many leftover processes had to be stopped here.

    """
    executors = list(executors)
    stopped = 0
    before: list[psutil.Process] = []
    cleaned = False
    try:
        if cleanup is not None:
            before = targets(*_processes_of(executors))
            _bounded(cleanup, cleanup_timeout)
            cleaned = True
    except Exception:
        logger.exception('Parsl cleanup failed; stopping what is left of its processes')
    finally:
        trees, groups = _processes_of(executors)
        names = set().union(*(block_names(e) for e in executors))
        if cleaned:
            before = wait_exited(
                [*before, *targets(trees, groups), *block_leftovers(names)], timeout=settle
            )
        else:
            before = block_leftovers(names)
        stopped = reap(trees, groups, grace=STOP_GRACE, also=before)
        if stopped:
            logger.warning('stopped %d Parsl process(es) that outlived cleanup', stopped)
        if watchdog is not None:
            watchdog.stop()
    return stopped


def _bounded(function: Callable[[], Any], timeout: float) -> None:
    """Run ``function`` on a daemon thread; raise if it fails or takes over ``timeout`` s."""
    outcome = on_daemon_thread(function, 'parsl-cleanup')
    if not wait([outcome], timeout).done:
        raise TimeoutError(f'Parsl cleanup did not finish within {timeout:.0f}s')
    outcome.result()
