"""Fencing a silent Director through its watchdog: the files both sides use.

A Director that stops answering without dying (SIGSTOP, a hung process, a
node under memory pressure) still has worker pools running calls on its
nodes. Before the coordinator gives those nodes to another Director, the
silent Director's watchdog (its own session, not stopped with it) must stop
them, and the Director itself (so that it cannot wake later and use nodes it
lost). The two sides meet in ``<run>/nodes/fence``:

* ``<director>.<pid>.state``: written by the watchdog of the Director process
  ``pid``: ``watching`` while it watches, ``stopped`` once nothing of that
  process runs any more (it shut down, it died and was reaped, or it was
  fenced), with ``why``, ``at`` and how many processes it stopped;
* ``<director>.<pid>.request``: written by the coordinator: fence that
  process (stop its Parsl processes, SIGKILL it, then say ``stopped``).

A fence is confirmed when no incarnation of the Director is ``watching``.
A watchdog that cannot answer (gone with its node) confirms nothing: the
nodes then stay where they are.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

from actors.common.errors import ExecutionError
from actors.common.private import private_dir
from actors.common.private import write_private

STATE_SUFFIX = '.state'
REQUEST_SUFFIX = '.request'


class SharedProcessError(ExecutionError, RuntimeError):
    """The Director to fence runs in the process that asks (it cannot be killed alone)."""


def fence_dir(run_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Where a run's fence files go."""
    return pathlib.Path(run_dir, 'nodes', 'fence')


def state_path(directory: str | os.PathLike[str], director: str, pid: int) -> pathlib.Path:
    """The state file of the watchdog of Director process ``pid``."""
    return pathlib.Path(directory, f'{director}.{pid}{STATE_SUFFIX}')


def request_path(state: pathlib.Path) -> pathlib.Path:
    """The fence request that goes with a state file."""
    return state.with_suffix(REQUEST_SUFFIX)


def write_state(path: pathlib.Path, state: str, **fields: Any) -> None:
    """Replace a watchdog's state file atomically."""
    private_dir(path.parent)
    record = {'state': state, 'at': time.time(), **fields}
    write_private(path, json.dumps(record))


def read_state(path: pathlib.Path) -> dict[str, Any] | None:
    """A state file's record (``None`` if absent or torn)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def states(run_dir: str | os.PathLike[str], director: str) -> dict[int, dict[str, Any]]:
    """Each known process of ``director`` -> its watchdog's last state."""
    found = {}
    for path in fence_dir(run_dir).glob(f'{director}.*{STATE_SUFFIX}'):
        pid = path.name[len(director) + 1 : -len(STATE_SUFFIX)]
        record = read_state(path)
        if pid.isdigit() and record is not None:
            found[int(pid)] = record
    return found


def request_fence(run_dir: str | os.PathLike[str], director: str) -> list[int] | None:
    """Ask the watchdog of every watching process of ``director`` to fence it; their PIDs.

    ``None`` when no watchdog of it ever said anything: nothing can confirm a fence.
    """
    known = states(run_dir, director)
    if not known:
        return None
    watching = [pid for pid, s in known.items() if s['state'] == 'watching']
    if os.getpid() in watching:
        # A Director in the asker's own process (a thread executor): the fence would
        # SIGKILL the whole run. Nothing is asked, so nothing confirms it.
        raise SharedProcessError(
            f'{director} runs in this process (pid {os.getpid()}): fencing it would kill the '
            'whole run (run Directors in processes of their own: --executor process)'
        )
    for pid in watching:
        path = request_path(state_path(fence_dir(run_dir), director, pid))
        write_private(path, json.dumps({'at': time.time(), 'pid': pid}))
    return watching


def fenced(run_dir: str | os.PathLike[str], director: str, pids: list[int]) -> float | None:
    """When the last of ``pids`` was confirmed stopped (``None`` while one is not)."""
    known = states(run_dir, director)
    confirmed = [known[pid]['at'] for pid in pids if known.get(pid, {}).get('state') == 'stopped']
    if len(confirmed) < len(pids):
        return None
    return max(confirmed, default=time.time())


def withdraw(run_dir: str | os.PathLike[str], director: str, pids: list[int]) -> None:
    """Remove the fence requests for ``pids`` (fenced, or the Director answers again)."""
    for pid in pids:
        path = request_path(state_path(fence_dir(run_dir), director, pid))
        path.unlink(missing_ok=True)
