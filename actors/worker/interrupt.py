"""Worker side of stopping a call that runs inside the Parsl worker itself.

Parsl's ``AppFuture.cancel()`` does not stop a running task, and forking a
supervised child per call (``actors.worker.supervise``) costs ~10x in throughput of
short calls. So every call of the default path runs in the worker process
under a cheap guard instead: one daemon thread per worker looks, while a
call runs, for the call's cancel file (``actors.worker.control``, written by the
Director on the job's shared file system) and for the call's deadline. To stop the call it sends
the worker's main thread a signal whose handler raises [`CallStopped`][]
inside the tool, which interrupts sleeps and blocking system calls, and
SIGTERM to the worker's child processes (a worker has none of its own: they
are the tool's); the tool's ``finally`` blocks run, and the worker answers
with a ``cancelled`` or ``timed_out`` result and is free for the next call.

A tool that does not return to the interpreter within ``STOP_GRACE``
(stuck in C code, or swallowing the exception) is stopped the hard way: the
guard writes a stop marker next to the cancel file, kills the worker's child
processes and then the worker itself. Parsl's worker pool starts a new
worker in its slot and reports ``WorkerLost``; the Director's retry
(``actors.execution.executor_app``) sees the marker and does not retry the
call, and the Director reports it as stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import psutil

from actors.common.timing import CANCEL_POLL
from actors.common.timing import STOP_GRACE
from actors.worker.control import Control
from actors.worker.control import cancel_reason
from actors.worker.control import cancelled_by
from actors.worker.control import worker_control_dir
from actors.worker.control import write_stop_marker
from actors.worker.run import run_command
from actors.worker.run import run_tool
from actors.worker.supervise import stopped_outcome
from actors.worker.wire import pack_outcome

logger = logging.getLogger(__name__)

# CANCEL_POLL: only busy workers look, one ``stat`` per look: at 10,000 busy
# workers this is 20,000 metadata operations per second on the shared file system.

STOP_SIGNAL = signal.SIGUSR2


class CallStopped(BaseException):
    """Raised inside a running tool to stop it.

    A ``BaseException`` so that a tool's ``except Exception`` does not
    swallow it.

    Args:
        status: ``cancelled`` or ``timed_out``.
        reason: Why the call was stopped, for the result.

    """

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Guard:
    """Watches the call running in this worker process (one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._control: Control | None = None
        self._directory: str | None = None
        self._started = 0.0
        self._request: tuple[str, str] | None = None
        self._requested_at = 0.0
        self._raised = False
        self._thread: threading.Thread | None = None
        self._main = threading.main_thread().ident
        self._can_signal = False
        self._handler_installed = False
        self._in_tool = False

    def run(self, body: Callable[[], dict[str, Any]], control: Control) -> dict[str, Any]:
        """Run ``body`` (one call) under watch; its outcome with a ``status``."""
        start = time.time()
        self._directory = worker_control_dir()
        cancelled = cancelled_by(self._directory, control[0])
        if cancelled:
            reason = f'{cancel_reason(cancelled)} (before it started)'
            return stopped_outcome('cancelled', reason, start)
        self._arm()
        with self._lock:
            self._control = control
            self._started = start
            self._request = None
            self._raised = False
        try:
            self._in_tool = True
            outcome = body()
            # From here on the signal handler leaves this thread alone.
            self._in_tool = False
        except CallStopped:
            pass
        finally:
            self._in_tool = False
            with self._lock:
                request, self._control = self._request, None
        if request is not None:
            # Once the guard decided to stop the call, whatever the tool
            # returned under the stop is not its result.
            return stopped_outcome(request[0], request[1], start)
        outcome['status'] = 'ok' if outcome['ok'] else 'failed'
        return outcome

    def _arm(self) -> None:
        """Start the watcher thread; install the signal handler if we can."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._watch, name='call-guard', daemon=True)
            self._thread.start()
        # Signal handlers belong to the main thread (where Parsl's workers run
        # tasks); a call on another thread can only be stopped by _escalate.
        self._can_signal = threading.current_thread() is threading.main_thread()
        # Installed once per process: signal.getsignal costs as much as a no-op call.
        if self._can_signal and not self._handler_installed:
            signal.signal(STOP_SIGNAL, self._on_signal)
            self._handler_installed = True

    def _on_signal(self, signum: int, frame: Any) -> None:
        del signum, frame
        # No lock: this runs on the main thread, which may hold it.
        request = self._request
        if request is None or self._raised or not self._in_tool:
            return  # the call already finished, or was told once
        self._raised = True
        raise CallStopped(*request)

    def _watch(self) -> None:
        while True:
            time.sleep(CANCEL_POLL)
            with self._lock:
                control, started = self._control, self._started
                request, requested_at = self._request, self._requested_at
            if control is None:
                continue
            if request is None:
                request = _why_stop(self._directory, control, started)
                if request is None:
                    continue
                with self._lock:
                    if self._control is not control:
                        continue
                    self._request, self._requested_at = request, time.time()
                logger.info('stopping the running call: %s', request[1])
                # Before any signal: should this worker die of the stop (an
                # mpiexec passing SIGTERM to its process group), Parsl's retry
                # handler must see a call stopped on purpose, not a lost one.
                write_stop_marker(self._directory, control[0], *request)
                # A worker has no children of its own: these are the tool's.
                _signal_children(signal.SIGTERM)
                if self._can_signal and self._main is not None:
                    signal.pthread_kill(self._main, STOP_SIGNAL)
            elif time.time() - requested_at > STOP_GRACE:
                self._escalate(control, request)

    def _escalate(self, control: Control, request: tuple[str, str]) -> None:
        """The tool ignored the signal: kill its processes and this worker."""
        if 'PARSL_WORKER_RANK' not in os.environ:
            # Not a Parsl worker that its pool replaces: never kill the host.
            logger.error('cannot stop a call outside a Parsl worker: %s', request[1])
            with self._lock:
                self._request = None
                self._control = None
            return
        status, reason = request
        write_stop_marker(self._directory, control[0], status, f'{reason} (worker killed)')
        logger.warning('the tool did not stop within %.0fs: killing its worker', STOP_GRACE)
        _signal_children(signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def _signal_children(signum: int) -> None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.send_signal(signum)


def _why_stop(directory: str | None, control: Control, started: float) -> tuple[str, str] | None:
    call, timeout = control
    if timeout is not None and time.time() - started >= timeout:
        return (
            'timed_out',
            f'the tool ran longer than its timeout of {timeout:g}s and was stopped',
        )
    cancelled = cancelled_by(directory, call)
    if cancelled:
        return 'cancelled', f'{cancel_reason(cancelled)} (while running)'
    return None


_guard = _Guard()


def run_interruptible(
    name: str,
    params: Mapping[str, Any],
    control: Control,
) -> bytes:
    """Run ``run_tool(name, params)`` in this worker so that it can be stopped.

    Args:
        name: Tool name.
        params: Tool parameters.
        control: The call's number (for its cancel file) and timeout.

    Returns:
        ``run_tool``'s description of the call, with ``status`` set to
        ``ok``, ``failed``, ``cancelled`` or ``timed_out``; packed by
        [`pack_outcome`][actors.worker.wire.pack_outcome].

    """
    return pack_outcome(_guard.run(lambda: run_tool(name, params), control))


def run_command_interruptible(
    name: str,
    params: Mapping[str, Any],
    control: Control,
    *,
    meta: str,
    out_file: str,
    err_file: str,
    parsl_resource_specification: Mapping[str, Any] | None = None,
    mpi_env: Mapping[str, str] | None = None,
) -> bytes:
    """Run a command tool's command line (``run_command``) so that it can be stopped.

    Args:
        name: Tool name.
        params: Tool parameters.
        control: The call's number (for its cancel file) and timeout.
        meta: Where ``run_command`` records where and when the call ran.
        out_file: The command's stdout file.
        err_file: The command's stderr file.
        parsl_resource_specification: An MPI call's resources (read by
            Parsl's MPI mode, which puts the launch prefix and the call's
            nodes in the worker's environment).
        mpi_env: The MPI variables for the nodes the Director gave the call
            (they replace those of Parsl's own choice).

    Returns:
        ``run_command``'s exit status (``ok``, ``returncode``), or a
        stopped call's outcome; ``status`` says which. Packed by
        [`pack_outcome`][actors.worker.wire.pack_outcome].

    """
    del parsl_resource_specification
    outcome = _guard.run(
        lambda: run_command(name, params, meta, out_file, err_file, env=mpi_env), control
    )
    return pack_outcome(outcome)
