"""Parent-death watchdog: no Parsl process outlives its Director.

A Director's interchange is a child of the Director's process and its worker
pools run under a ``LocalProvider`` block script (``mpiexec`` in a process
group of its own). If the Director's process dies by any signal, none of
them notice for a long time. Each Director therefore starts one small
watchdog process (in its own session, so signals aimed at the Director's
process group spare it) and tells it, through a pipe, which process trees
and process groups to look after. The watchdog checks every
``PARENT_POLL`` seconds, and at once when the pipe closes, whether the
Director is still its parent; when it is not, it sends SIGTERM to
everything it watches, waits ``STOP_GRACE`` seconds and sends SIGKILL to what
is left.

A Director can die before it has told the watchdog anything: while its
``DataFlowKernel`` is being built, executors start their interchanges one
after another. Starting the watchdog therefore puts the Director process's
PID in the environment (``LINEAGE_VARIABLE``), which every process it starts
from then on inherits (interchanges, block scripts, ``mpiexec``, worker
pools); the watchdog also stops every Parsl process that carries its dead
parent's PID there.

Bound: everything is gone within ``ORPHAN_BOUND`` seconds of the Director's
death.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable

import psutil

from actors.common.processes import family
from actors.common.processes import stop_processes
from actors.common.timing import PARENT_POLL
from actors.common.timing import STOP_GRACE
from actors.worker.control import CONTROL_DIR_VARIABLE

logger = logging.getLogger(__name__)

LINEAGE_VARIABLE = 'ACTORS_DIRECTOR_PROCESS'
"""Environment variable naming the Director process that started a process."""
PARSL_MARKERS = ('interchange', 'process_worker_pool', 'mpiexec', 'hydra_pmi_proxy')
"""Command-line words of Parsl's processes (the interchange retitles itself)."""


class Watchdog:
    """The Director's side: start the watchdog and tell it what to watch."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._sent: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The watchdog's process ID (``None`` before start)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the watchdog process for this (the Director's) process."""
        # Inherited by every process started from now on (see the module).
        os.environ[LINEAGE_VARIABLE] = str(os.getpid())
        self._proc = subprocess.Popen(
            [sys.executable, '-m', 'actors.execution.watchdog', '--parent', str(os.getpid())],
            stdin=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )

    def watch(self, trees: Iterable[int] = (), groups: Iterable[int] = ()) -> None:
        """Add process trees (a PID and its descendants) and process groups."""
        own_group = os.getpgid(0)
        lines = [('tree', pid) for pid in trees]
        lines += [('group', g) for g in groups if g not in (own_group, 0, 1)]
        with self._lock:
            new = [item for item in lines if item not in self._sent]
            if not new or self._proc is None or self._proc.stdin is None:
                return
            try:
                self._proc.stdin.write(''.join(f'{k} {v}\n' for k, v in new).encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                logger.warning('parent-death watchdog %s is gone', self._proc.pid)
                return
            self._sent.update(new)

    def stop(self) -> None:
        """Release the watch (the Director shut its processes down itself)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            assert proc.stdin is not None
            proc.stdin.write(b'stop\n')
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Parsl processes started by process ``parent`` (alive until ``until``)."""

    parent: int
    until: float

    def holds(self, proc: psutil.Process) -> bool:
        """Whether ``proc`` is a Parsl process that ``parent`` (or a child) started.

        Parsl's processes are known by their command line; anything a block
        started (a lost pool's orphaned helpers too) by its control directory.
        """
        try:
            if proc.create_time() > self.until:
                return False  # the PID's process could not have started it
            environ = proc.environ()
            if environ.get(LINEAGE_VARIABLE) != str(self.parent):
                return False
            if CONTROL_DIR_VARIABLE in environ:
                return True
            cmdline = ' '.join(proc.cmdline())
            return any(marker in cmdline for marker in PARSL_MARKERS)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    def roots(self) -> set[int]:
        """PIDs of this user's Parsl processes of this lineage."""
        uid = os.getuid()
        found = set()
        for proc in psutil.process_iter(['uids']):
            uids = proc.info['uids']
            if uids is not None and uids.real == uid and self.holds(proc):
                found.add(proc.pid)
        return found


def targets(
    trees: Iterable[int],
    groups: Iterable[int],
    lineage: Lineage | None = None,
) -> list[psutil.Process]:
    """The running processes of ``trees`` and ``groups`` (and ``lineage``'s), with descendants."""
    roots = set(trees)
    if lineage is not None:
        roots |= lineage.roots()
    return family(roots, groups)


def reap(
    trees: Iterable[int],
    groups: Iterable[int],
    grace: float = STOP_GRACE,
    lineage: Lineage | None = None,
    also: Iterable[psutil.Process] = (),
) -> int:
    """SIGTERM everything watched, then SIGKILL what is left after ``grace``.

    Args:
        trees: PIDs whose process trees go.
        groups: Process groups that go.
        grace: Seconds between SIGTERM and SIGKILL.
        lineage: Also the trees of the Parsl processes of this lineage.
        also: Further processes that go (``psutil`` objects: a PID reused
            meanwhile is not signalled).

    Returns:
        How many running processes were signalled (zombies are not counted).

    """
    trees, groups = set(trees), set(groups)
    return stop_processes(lambda: targets(trees, groups, lineage), grace=grace, also=also)


def _serve(parent: int) -> int:
    trees: set[int] = set()
    groups: set[int] = set()
    stdin = sys.stdin.buffer
    buffer = b''
    while True:
        if os.getppid() != parent:
            break
        ready, _, _ = select.select([stdin], [], [], PARENT_POLL)
        if not ready:
            continue
        chunk = os.read(stdin.fileno(), 4096)
        if not chunk:
            # Pipe closed without 'stop': the Director died (or forgot).
            break
        buffer += chunk
        *lines, buffer = buffer.split(b'\n')
        for line in lines:
            kind, _, value = line.decode().partition(' ')
            if kind == 'stop':
                return 0
            if kind == 'tree':
                trees.add(int(value))
            elif kind == 'group':
                groups.add(int(value))
    noticed = time.time()
    count = reap(trees, groups, lineage=Lineage(parent, noticed))
    logger.warning(
        'Director process %d died: stopped %d Parsl process(es) in %.1fs',
        parent,
        count,
        time.time() - noticed,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the watchdog (``python -m actors.execution.watchdog --parent PID``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--parent', type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s watchdog: %(message)s')
    # Signals sent to the Director's session (Ctrl-C, SIGHUP) must not stop us, nor the
    # SIGTERM a batch scheduler sends every process of a cancelled job at once (scancel,
    # qdel): we stop the Director's Parsl processes once it is gone, then exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _serve(args.parent)


if __name__ == '__main__':
    sys.exit(main())
