"""The interchange of a Director's executors: notice its death, ask it without hanging.

Parsl does not notice when an executor's interchange dies: the tasks it held
never resolve, and every later command to it blocks forever.
``InterchangeWatch`` notices an interchange that exits under a running
executor, ``fail_executor`` fails what it held at once, and
``ask_interchange`` sends it commands that cannot hang on its death.
With ``actors.execution.executor_app`` and ``actors.execution.blocks`` this
is the only code that reads Parsl's HTEX internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import InvalidStateError
from typing import Any
from typing import TypeVar

import psutil
from parsl.executors.errors import BadStateException

from actors.common.errors import ExecutionError
from actors.common.processes import exited
from actors.common.timing import COMMAND_TIMEOUT
from actors.common.timing import LOST_POLL
from actors.common.timing import UNBLOCK_TIMEOUT

logger = logging.getLogger(__name__)


_GUARD_LOCK = threading.Lock()


class InterchangeLost(ExecutionError, RuntimeError):
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
    fail_tasks(executor, error)
    unblock_commands(executor)


def fail_dfk(dfk: Any, error: InterchangeLost) -> None:
    """Fail every task the executors of ``dfk`` hold (those with an interchange)."""
    # A list: an MPI executor may be joining the DFK on another thread.
    for each in list(dfk.executors.values()):
        if has_interchange(each):
            try:
                fail_executor(each, error)
            except Exception:
                logger.exception('failing executor %s failed', each.label)


def fail_tasks(executor: Any, error: InterchangeLost) -> int:
    """Fail every task ``executor`` still holds with ``error``; how many there were."""
    failed = 0
    for future in list(executor.tasks.values()):
        if not future.done():
            with contextlib.suppress(InvalidStateError):
                # Parsl leaves BadStateException.__init__ unannotated.
                lost = BadStateException(executor, error)  # type: ignore[no-untyped-call]
                future.set_exception(lost)
                failed += 1
    return failed


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


T = TypeVar('T')


def on_daemon_thread(function: Callable[[], T], name: str) -> Future[T]:
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
    answer = asyncio.wrap_future(on_daemon_thread(question, 'interchange-command'))
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


async def connected_managers(executor: Any) -> list[dict[str, Any]] | None:
    """The worker pools connected to ``executor``'s interchange; ``None`` if it is lost."""
    return await ask_interchange(executor, executor.connected_managers)


def interchange_exited(executor: Any) -> bool:
    """Whether ``executor``'s interchange (a child of this process) has exited.

    Asked of the system, not of the ``Popen``: the watch thread may have
    reaped it and not yet recorded its exit code (on a busy machine, for a
    while).
    """
    process = getattr(executor, 'interchange_proc', None)
    if process is None:
        return False
    if process.returncode is not None:
        return True
    try:
        return exited(psutil.Process(process.pid))
    except psutil.NoSuchProcess:
        return True


def has_interchange(executor: Any) -> bool:
    """Whether ``executor`` started an interchange process (an HTEX that was started)."""
    return getattr(executor, 'interchange_proc', None) is not None
