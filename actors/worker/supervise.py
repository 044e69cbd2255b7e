"""Worker side of cancellation and timeouts.

Parsl's ``AppFuture.cancel()`` does not stop a task that is running, so a
Director that must stop a call runs it supervised: the Parsl worker forks
the tool into a child process of its own session and watches it. The child
is killed (its whole process group: SIGTERM, then SIGKILL after
``STOP_GRACE``) when the call's timeout passes or when the Director drops a
cancel file for it (``actors.worker.control``: the run directory is on the job's
shared file system, so this reaches any node). The worker then returns a ``cancelled`` or
``timed_out`` result and is free for the next call.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import select
import signal
import time
from collections.abc import Mapping
from typing import Any

from actors.common.processes import stop_child_group
from actors.common.timing import CANCEL_POLL
from actors.common.where import current_node
from actors.worker.control import STOP_ERROR_TYPES
from actors.worker.control import Control
from actors.worker.control import cancel_reason
from actors.worker.control import cancelled_by
from actors.worker.control import worker_control_dir
from actors.worker.run import run_tool
from actors.worker.wire import pack_outcome

PR_SET_PDEATHSIG = 1


def run_supervised(
    name: str,
    params: Mapping[str, Any],
    control: Control,
) -> bytes:
    """Run ``run_tool(name, params)`` in a child process that can be stopped.

    Args:
        name: Tool name.
        params: Tool parameters.
        control: The call's number (for its cancel file) and timeout.

    Returns:
        ``run_tool``'s description of the call, with ``status`` set to
        ``ok``, ``failed``, ``cancelled`` or ``timed_out``; packed by
        [`pack_outcome`][actors.worker.wire.pack_outcome].

    """
    return pack_outcome(_supervise(name, params, control))


def _supervise(name: str, params: Mapping[str, Any], control: Control) -> dict[str, Any]:
    call, timeout = control
    directory = worker_control_dir()
    poll = CANCEL_POLL
    start = time.time()
    cancelled = cancelled_by(directory, call)
    if cancelled:
        return stopped_outcome(
            'cancelled', f'{cancel_reason(cancelled)} (before it started)', start
        )
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        os.close(read_end)
        os.setsid()
        _die_with(parent)
        code = 0
        try:
            outcome = run_tool(name, params)
            data = pickle.dumps(outcome)
        except BaseException as e:  # the outcome could not be pickled, ...
            data = pickle.dumps(
                stopped_outcome(
                    'failed', f'{type(e).__name__}: {e}', start, error_type=type(e).__name__
                ),
            )
            code = 1
        with os.fdopen(write_end, 'wb') as pipe:
            pipe.write(data)
        os._exit(code)
    os.close(write_end)
    deadline = None if timeout is None else start + float(timeout)
    chunks: list[bytes] = []
    with os.fdopen(read_end, 'rb', buffering=0) as pipe:
        while True:
            wait = poll if deadline is None else max(0.0, min(poll, deadline - time.time()))
            ready, _, _ = select.select([pipe], [], [], wait)
            if ready:
                chunk = pipe.read(1 << 16)
                if chunk:
                    chunks.append(chunk)
                    continue
                break  # EOF: the child is done
            if timeout is not None and deadline is not None and time.time() >= deadline:
                stop_child_group(pid)
                return stopped_outcome(
                    'timed_out',
                    f'the tool ran longer than its timeout of {float(timeout):g}s and was stopped',
                    start,
                    child=pid,
                )
            cancelled = cancelled_by(directory, call)
            if cancelled:
                stop_child_group(pid)
                reason = f'{cancel_reason(cancelled)} (while running)'
                return stopped_outcome('cancelled', reason, start, pid)
    _, status = os.waitpid(pid, 0)
    try:
        outcome = pickle.loads(b''.join(chunks))
    except Exception:
        reason = (
            f'signal {os.WTERMSIG(status)}'
            if os.WIFSIGNALED(status)
            else f'exit status {os.waitstatus_to_exitcode(status)}'
        )
        return stopped_outcome(
            'failed', f'the tool process died ({reason})', start, pid, 'ToolDied'
        )
    outcome['status'] = 'ok' if outcome['ok'] else 'failed'
    return outcome


def _die_with(parent: int) -> None:
    """Make this (tool) process die with the worker that forked it (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def stopped_outcome(
    status: str,
    message: str,
    start: float,
    child: int | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    """The outcome of a call that was stopped (or never ran): ``run_tool``'s shape."""
    return {
        'node': current_node(),
        'worker': int(os.environ.get('PARSL_WORKER_RANK', '-1')),
        'pid': child or os.getpid(),
        'start': start,
        'end': time.time(),
        'ok': False,
        'value': None,
        'status': status,
        'error_type': error_type or STOP_ERROR_TYPES.get(status, 'ToolError'),
        'error_message': message,
    }
