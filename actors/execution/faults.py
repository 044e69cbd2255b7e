"""Director-side guards of Parsl's processes.

``watch_parsl_processes`` tells the parent-death watchdog
(``actors.execution.watchdog``) about the interchange and every block of an executor;
``release_parsl`` stops Parsl and whatever of it is left before letting the
watchdog go; ``BlockDoctor`` replaces a block that lost all its worker pools.
Both also stop a lost pool's orphans (``block_leftovers``). ``InterchangeWatch``
notices an interchange that exits under a running executor, and
``ask_interchange`` sends it commands that cannot hang on its death.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import InvalidStateError
from concurrent.futures import wait
from typing import Any
from typing import TypeVar

import psutil
from parsl.executors.errors import BadStateException

from actors.common.processes import exited
from actors.common.processes import wait_exited
from actors.common.timing import STOP_GRACE
from actors.execution.watchdog import Watchdog
from actors.execution.watchdog import reap
from actors.execution.watchdog import targets

logger = logging.getLogger(__name__)

T = TypeVar('T')

"""Seconds a block's processes get to exit on their own after ``DataFlowKernel.cleanup``."""

CLEANUP_TIMEOUT = 60.0
"""Seconds ``DataFlowKernel.cleanup`` may take before what is left of Parsl is stopped by hand."""

LOST_CLEANUP_TIMEOUT = 5.0
"""The same for a DFK whose interchange died: its cleanup can block forever (see
``InterchangeWatch``), so it gets only long enough to stop its other executors."""


UNBLOCK_TIMEOUT = 5.0
"""Seconds a command to a lost interchange gets to fail once its context is terminated."""

_GUARD_LOCK = threading.Lock()

COMMAND_TIMEOUT = 30.0
"""Seconds ``ask_interchange`` waits for a live interchange's answer."""

LOST_POLL = 0.1
"""Seconds between looks, while waiting for an interchange's answer, at whether it was lost."""


class InterchangeLost(RuntimeError):
    """An executor's interchange exited while the executor was still in use."""


class InterchangeWatch:
    """Report an interchange that exits while its executor is in use.

    Parsl does not notice a dead interchange: the tasks it held never
    resolve, and every later command to it (status polls, scaling, the
    ``DataFlowKernel.cleanup``) blocks forever on a socket with no peer.
    One daemon thread per watched executor waits on its interchange (a child
    of this process) and, if it exits before ``release``, calls
    ``on_lost(executor, error)`` at once, so that the owner can fail the
    executor (``set_bad_state_and_fail_all``) before anything else blocks.

    Args:
        on_lost: Called on the watching thread with the executor and an
            ``InterchangeLost`` naming the interchange and its exit code.

    """

    def __init__(self, on_lost: Callable[[Any, InterchangeLost], None]) -> None:
        self._on_lost = on_lost
        self._released = threading.Event()

    def watch(self, executor: Any) -> None:
        """Start watching ``executor``'s interchange (no-op without one).

        Its command client's close is made safe for a death first
        (``guard_command_client``).
        """
        process = getattr(executor, 'interchange_proc', None)
        if process is None:
            return
        guard_command_client(executor)
        threading.Thread(
            target=self._wait,
            args=(executor, process),
            name=f'interchange-watch-{executor.label}',
            daemon=True,
        ).start()

    def release(self) -> None:
        """The interchanges are being stopped on purpose: report nothing more."""
        self._released.set()

    def _wait(self, executor: Any, process: Any) -> None:
        code = process.wait()
        if self._released.is_set():
            return
        error = InterchangeLost(
            f'the interchange of executor {executor.label!r} (pid {process.pid}) '
            f'exited with code {code}',
        )
        logger.error('%s', error)
        try:
            self._on_lost(executor, error)
        except Exception:
            logger.exception('handling the loss of %s failed', executor.label)


class QuietInterchangeLoss(logging.Filter):
    """Drop Parsl's log records about tasks failed by a lost interchange.

    The Director logs the loss once and reruns the calls; Parsl would log an
    error with a traceback for every task the interchange held.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but those whose exception is an interchange loss."""
        error = record.exc_info[1] if record.exc_info else None
        return interchange_loss(error) is None


PARSL_TASK_LOGGERS = ('parsl.dataflow.dflow', 'parsl.executors.status_handling')
"""Parsl's loggers that report each failed task (and the executor's bad state)."""


def quiet_interchange_losses() -> None:
    """Put ``QuietInterchangeLoss`` on Parsl's task loggers (once per process)."""
    for name in PARSL_TASK_LOGGERS:
        parsl_logger = logging.getLogger(name)
        if not any(isinstance(f, QuietInterchangeLoss) for f in parsl_logger.filters):
            parsl_logger.addFilter(QuietInterchangeLoss())


def fail_executor(executor: Any, error: InterchangeLost) -> None:
    """Mark ``executor`` bad and fail every task it still holds with ``error``.

    Parsl's ``set_bad_state_and_fail_all`` walks the executor's task table
    while its result thread may still remove a task from it, and stops at
    that change; whatever it did not reach is failed here.
    """
    try:
        executor.set_bad_state_and_fail_all(error)
    except Exception as e:
        logger.warning('%s: failing its tasks was interrupted (%s); going on', executor.label, e)
    for future in list(executor.tasks.values()):
        if not future.done():
            with contextlib.suppress(InvalidStateError):
                future.set_exception(BadStateException(executor, error))
    unblock_commands(executor)


def unblock_commands(executor: Any) -> None:
    """Fail the commands waiting on a dead interchange's reply; close its command client.

    The same term-first close that ``guard_command_client`` gives Parsl's
    own shutdown, so that whichever of the two comes first does it once.
    """
    close = guard_command_client(executor)
    if close is not None:
        close()


def guard_command_client(executor: Any) -> _TermFirstClose | None:
    """Make every close of ``executor``'s command client safe for a command left waiting.

    A command in flight when the interchange dies waits for a reply forever,
    holding the client's lock (``CommandClient.run``); Parsl's own ``close``
    closes the socket under it and terminates the context, which can abort
    the whole process inside libzmq, and two threads terminating one
    context at once (a lost DFK's cleanup racing the Director) can too. The
    client's ``close`` is replaced by ``_TermFirstClose``: once, under a
    lock, the context is terminated first (the waiting ``recv`` raises
    ``ContextTerminated``), then the socket is closed when the lock is free,
    which lets the termination finish. Later commands fail at once.

    Returns:
        The client's close (the one installed before, if any), or ``None``
        without a client.

    """
    client = getattr(executor, 'command_client', None)
    if client is None:
        return None
    # One close per client even when the loss and a new watch race to guard it.
    with _GUARD_LOCK:
        if not isinstance(client.close, _TermFirstClose):
            client.close = _TermFirstClose(client, executor.label)
        return client.close


class _TermFirstClose:
    """``CommandClient.close`` done safely, once (see ``guard_command_client``).

    Args:
        client: Parsl's ``CommandClient``.
        label: Its executor's label (for the log).
        timeout: Seconds a waiting command gets to fail once the context
            is being terminated; past it the socket is left open rather
            than closed under the command.

    """

    def __init__(self, client: Any, label: str, timeout: float = UNBLOCK_TIMEOUT) -> None:
        self._client = client
        self._label = label
        self._timeout = timeout
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self) -> None:
        """Close the client (a second call waits for the first and returns)."""
        client = self._client
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client.ok = False
            terminate = threading.Thread(
                target=client.zmq_context.term, name='command-close', daemon=True
            )
            terminate.start()
            if not client._lock.acquire(timeout=self._timeout):
                logger.warning('%s: a command to its interchange does not return', self._label)
                return
            try:
                client.zmq_socket.close()
            finally:
                client._lock.release()
            terminate.join(self._timeout)


def interchange_loss(error: BaseException | None) -> InterchangeLost | None:
    """The ``InterchangeLost`` behind a task's error, if its interchange died.

    A task held by the interchange fails with Parsl's ``BadStateException``
    (``set_bad_state_and_fail_all``); one submitted afterwards with the
    executor's exception itself.
    """
    if isinstance(error, InterchangeLost):
        return error
    if isinstance(error, BadStateException):
        cause = getattr(getattr(error, 'executor', None), 'executor_exception', None)
        if isinstance(cause, InterchangeLost):
            return cause
    return None


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


def _on_daemon_thread(function: Callable[[], T], name: str) -> Future[T]:
    """Run ``function`` on a new daemon thread; its outcome as a future.

    A daemon thread, not an executor's: a call that never returns (a Parsl
    command to a dead interchange) must not keep the process from exiting.
    """
    outcome: Future[T] = Future()

    def run() -> None:
        if not outcome.set_running_or_notify_cancel():
            return
        try:
            result = function()
        except BaseException as e:
            outcome.set_exception(e)
        else:
            outcome.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return outcome


def _bounded(function: Callable[[], Any], timeout: float) -> None:
    """Run ``function`` on a daemon thread; raise if it fails or takes over ``timeout`` s."""
    outcome = _on_daemon_thread(function, 'parsl-cleanup')
    if not wait([outcome], timeout).done:
        raise TimeoutError(f'Parsl cleanup did not finish within {timeout:.0f}s')
    outcome.result()


async def ask_interchange(executor: Any, question: Callable[[], T]) -> T | None:
    """Ask ``executor``'s interchange ``question`` (a Parsl command); ``None`` if it is lost.

    A Parsl command waits for the interchange's reply with no time limit,
    holding the executor's command lock: one in flight when the interchange
    dies never returns, and neither does any command after it. So the
    question runs on a daemon thread, and the caller stops waiting as soon
    as the executor is marked bad (``InterchangeWatch`` reports the death
    at once); a live interchange answers in milliseconds, however busy. One
    that is alive but does not answer within ``COMMAND_TIMEOUT`` gets
    ``None`` too (with a warning).
    """
    if executor.bad_state_is_set:
        return None
    answer = asyncio.wrap_future(_on_daemon_thread(question, 'interchange-command'))
    deadline = time.monotonic() + COMMAND_TIMEOUT
    try:
        while not executor.bad_state_is_set and time.monotonic() < deadline:
            done, _ = await asyncio.wait({answer}, timeout=LOST_POLL)
            if done and not executor.bad_state_is_set:
                return answer.result()
        if not executor.bad_state_is_set:
            logger.warning(
                '%s: its interchange did not answer within %.0fs', executor.label, COMMAND_TIMEOUT
            )
        return None
    finally:
        if not answer.done():
            answer.cancel()
        elif not answer.cancelled():
            # Failed by unblock_commands, or not waited for: the loss is what the caller learns.
            answer.exception()


class BlockDoctor:
    """Replace a block whose worker pools were all lost.

    When a pool dies, ``mpiexec`` (and so the block's job) can live on,
    waiting for the pool's orphaned workers; the provider keeps reporting the
    block as running and Parsl's strategy never replaces it. Once the
    interchange has given up on every pool of a block (after
    ``heartbeat_threshold``), the doctor cancels the block's job and kills
    what is left of it; the strategy (``min_blocks=1``) then starts a new
    block, and the lost calls' retries run there. A block that still has a
    live pool keeps running: retries use the surviving pools.
    """

    def __init__(self) -> None:
        self._had_managers: set[str] = set()

    def check(self, executor: Any, managers: list[dict[str, Any]]) -> list[str]:
        """Cancel blocks that lost every pool; returns their block IDs.

        Args:
            executor: The HTEX executor.
            managers: Its ``connected_managers()`` (see ``ask_interchange``).

        """
        live = {str(m['block_id']) for m in managers if m.get('active', True)}
        self._had_managers |= live
        broken = []
        for block_id, job_id in list(executor.blocks_to_job_id.items()):
            status = executor._status.get(block_id)
            if (
                block_id in self._had_managers
                and block_id not in live
                and status is not None
                and not status.terminal
            ):
                broken.append((block_id, job_id))
        for block_id, job_id in broken:
            logger.warning('block %s lost all its worker pools; replacing it', block_id)
            self._had_managers.discard(block_id)
            job = executor.provider.resources.get(job_id, {})
            pid = job.get('remote_pid')
            trees = {int(pid)} if pid else set()
            groups: set[int] = set()
            with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
                groups.add(os.getpgid(int(pid)))
            groups.discard(os.getpgid(0))
            executor.provider.cancel([job_id])
            reap(trees, groups, grace=1.0, also=block_leftovers(block_names(executor, [job_id])))
        return [block_id for block_id, _ in broken]
