"""One process drives a run directory at a time.

Two ``launch.py --resume RUN`` (or ``launch.py mcp --resume RUN``) at once
would start Directors with the same names on the same journals and nodes:
every unfinished call would run twice. Whoever drives a run (``launch.py``,
``--resume``, ``mcp``, ``mcp --resume``) therefore holds an exclusive POSIX
record lock (``fcntl.lockf``, which NFS and Lustre honour too) on
``<run_dir>/run.lock`` for as long as it runs; a second one is refused, naming
the holder. The kernel drops the lock when its process dies, however it dies,
so a lock file left by a dead process is simply taken over. Attaching to a
run's Directors (``launch.py mcp --attach``, ``status``) drives nothing and
takes no lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import socket
import sys
import time

from actors.common.errors import ConfigurationError

LOCK_NAME = 'run.lock'

_held: dict[pathlib.Path, int] = {}
"""Run dirs this process holds -> the open descriptor that holds the lock."""


class RunDirInUseError(ConfigurationError):
    """Another live process drives this run directory."""


def lock_run_dir(run_dir: pathlib.Path) -> None:
    """Hold ``run_dir``'s lock until ``release_run_dir`` or this process ends.

    Raises:
        RunDirInUseError: If another live process holds it (named in the message).

    """
    run_dir = run_dir.resolve()
    if run_dir in _held:
        return
    path = run_dir / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder(descriptor)
        os.close(descriptor)
        if e.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        raise RunDirInUseError(
            f'run dir {run_dir} is in use by {holder}: one process drives a run at a time; '
            'wait for it to end (or stop it), then --resume; to watch it, use '
            f'`launch.py status {run_dir}` or `launch.py mcp --attach {run_dir}`',
        ) from None
    record = {
        'pid': os.getpid(),
        'host': socket.gethostname(),
        'command': ' '.join(sys.argv[:2]),
        'since': time.time(),
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(record).encode() + b'\n', 0)
    _held[run_dir] = descriptor


def holds(run_dir: pathlib.Path) -> bool:
    """Whether this process holds ``run_dir``'s lock."""
    return run_dir.resolve() in _held


def release_run_dir(run_dir: pathlib.Path) -> None:
    """Let another process drive ``run_dir`` (nothing if this process does not hold it)."""
    descriptor = _held.pop(run_dir.resolve(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing drops the lock


def _holder(descriptor: int) -> str:
    """Who holds the lock, as its holder wrote it (``pid N on HOST (COMMAND)``)."""
    try:
        record = json.loads(os.pread(descriptor, 4096, 0) or b'{}')
        return f'pid {int(record["pid"])} on {record["host"]} ({record["command"]})'
    except (OSError, ValueError, KeyError, TypeError):
        return 'another process'
