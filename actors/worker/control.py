"""How a Director tells its workers to stop calls: cancel files.

Each Director incarnation owns a control directory on the job's shared file
system (``<run_dir>/control/<director>/<incarnation>``); its blocks export
it to the workers as ``$HPC_TOOL_CALLING_CONTROL_DIR``. A call carries only
its number and timeout (its ``Control``), a few bytes per task. To cancel
call ``n`` the Director writes ``<dir>/<n>.cancel``; to cancel every call
of the incarnation (shutdown, walltime drain) it writes ``<dir>/ALL.cancel``.
The files hold the reason. A worker that had to kill itself to stop a call
leaves ``<n>.cancel.stopped`` saying why, so that the Director neither
retries the call nor reports it as lost.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import pathlib
import shutil
import threading

from actors.common.errors import describe_os_error
from actors.common.private import private_dir
from actors.common.private import write_private

logger = logging.getLogger(__name__)

CONTROL_DIR_VARIABLE = 'HPC_TOOL_CALLING_CONTROL_DIR'
"""Environment variable that gives workers their Director's control directory."""

Control = tuple[int, 'float | None']
"""A call's number in its Director incarnation, and its timeout in seconds."""

ALL = 'ALL'

STOP_ERROR_TYPES = {'cancelled': 'Cancelled', 'timed_out': 'TimedOut'}
"""The ``error_type`` of a call stopped on purpose, by its ``status``."""


def cancel_file(directory: str, call: int | str) -> str:
    """The file whose existence cancels ``call``."""
    return f'{directory}/{call}.cancel'


def stop_marker(directory: str, call: int) -> str:
    """The marker a worker leaves when it had to kill itself to stop ``call``."""
    return f'{cancel_file(directory, call)}.stopped'


def worker_control_dir() -> str | None:
    """The control directory this worker's block exported, if any."""
    return os.environ.get(CONTROL_DIR_VARIABLE) or None


def cancelled_by(directory: str | None, call: int) -> str | None:
    """The written cancel file (the call's own or the incarnation's), if any."""
    if directory is None:
        return None
    for path in (cancel_file(directory, call), cancel_file(directory, ALL)):
        if os.path.exists(path):
            return path
    return None


def cancel_reason(path: str) -> str:
    """The reason the Director wrote into a cancel file."""
    try:
        with open(path, encoding='utf-8') as f:
            return f.read().strip() or 'cancelled'
    except OSError:
        return 'cancelled'


def write_stop_marker(directory: str | None, call: int, status: str, reason: str) -> None:
    """Record (worker side) that ``call`` was stopped by killing its worker."""
    if directory is None:
        return
    with contextlib.suppress(OSError):
        with open(stop_marker(directory, call), 'w', encoding='utf-8') as f:
            json.dump({'status': status, 'reason': reason}, f)


class CancelFiles:
    """The Director side: one incarnation's control directory.

    Args:
        directory: The control directory (created on first use, removed
            by ``close``).

    """

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = str(directory)
        self._lock = threading.Lock()
        self._by_key: dict[str, set[int]] = {}
        self._calls = itertools.count()
        self._made = False

    def _make(self) -> None:
        if not self._made:
            private_dir(self.directory)
            self._made = True

    def control(self, call_key: str | None, timeout: float | None) -> Control:
        """The ``Control`` of a new call; keyed calls can be cancelled by key."""
        self._make()
        call = next(self._calls)
        if call_key is not None:
            with self._lock:
                self._by_key.setdefault(call_key, set()).add(call)
        return call, timeout

    def forget(self, call_key: str, control: Control) -> None:
        """A keyed call finished: it can no longer be cancelled."""
        with self._lock:
            calls = self._by_key.get(call_key)
            if calls is not None:
                calls.discard(control[0])
                if not calls:
                    del self._by_key[call_key]

    def stopped(self, control: Control | None) -> tuple[str, str] | None:
        """Whether a call was stopped on purpose: ``(status, reason)`` or ``None``."""
        if control is None:
            return None
        call = control[0]
        # The caller's own words first; the worker's marker (written as it
        # starts to stop the call) also covers timeouts.
        path = cancelled_by(self.directory, call)
        if path is not None:
            return 'cancelled', cancel_reason(path)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            with open(stop_marker(self.directory, call), encoding='utf-8') as f:
                marker = json.load(f)
            return str(marker['status']), str(marker['reason'])
        return None

    def _cancel(self, calls: list[int], reason: str) -> int:
        self._make()
        for call in calls:
            write_private(cancel_file(self.directory, call), reason)
        logger.info('cancelled %d call(s): %s', len(calls), reason)
        return len(calls)

    def cancel(self, call_key: str, reason: str) -> int:
        """Cancel the in-flight calls with this key."""
        with self._lock:
            calls = list(self._by_key.get(call_key, ()))
        return self._cancel(calls, reason)

    def cancel_prefix(self, prefix: str, reason: str) -> int:
        """Cancel the in-flight calls whose key starts with ``prefix``."""
        with self._lock:
            calls = [c for k, cs in self._by_key.items() if k.startswith(prefix) for c in cs]
        return self._cancel(calls, reason)

    def cancel_all(self, reason: str) -> None:
        """Cancel every call of this incarnation, running, queued or still to come.

        A file system that takes no file (full, read-only) is one line: the
        Director still stops (shutdown, drain), and stopping its blocks ends
        the tool processes the file would have stopped.
        """
        path = cancel_file(self.directory, ALL)
        try:
            self._make()
            write_private(path, reason)
        except OSError as e:
            if e.filename is None:  # a write through a descriptor names no file
                e = OSError(e.errno, e.strerror, str(path))
            logger.warning('cannot cancel every call (%s): %s', reason, describe_os_error(e))
            return
        logger.info('cancelled every call: %s', reason)

    def close(self) -> None:
        """Remove the control directory (the incarnation's calls are over)."""
        shutil.rmtree(self.directory, ignore_errors=True)
