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

Fencing: a Director that stops answering without dying still runs calls on
its nodes. Given a fence directory (``--fence DIR --name DIRECTOR``), the
watchdog says in ``DIR`` whether it is watching, and on the coordinator's
request (``actors.execution.fence``) stops everything it watches, SIGKILLs the
Director (so it cannot wake up and use nodes it lost) and confirms.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import pathlib
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
from actors.execution.fence import request_path
from actors.execution.fence import state_path
from actors.execution.fence import write_state
from actors.worker.control import CONTROL_DIR_VARIABLE

logger = logging.getLogger(__name__)

LINEAGE_VARIABLE = 'ACTORS_DIRECTOR_PROCESS'
"""Environment variable naming the Director process that started a process."""
PARSL_MARKERS = ('interchange', 'process_worker_pool', 'mpiexec', 'hydra_pmi_proxy')
"""Command-line words of Parsl's processes (the interchange retitles itself)."""


class Watchdog:
    """The Director's side: start the watchdog and tell it what to watch.

    Args:
        fence: The fence directory and the Director's name (no fencing without).

    """

    def __init__(self, fence: tuple[str | os.PathLike[str], str] | None = None) -> None:
        self._fence = fence
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
        argv = [sys.executable, '-m', 'actors.execution.watchdog', '--parent', str(os.getpid())]
        if self._fence is not None:
            argv += ['--fence', str(self._fence[0]), '--name', self._fence[1]]
        self._proc = subprocess.Popen(
            argv,
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


def _serve(parent: int, state: pathlib.Path | None = None) -> int:
    trees: set[int] = set()
    groups: set[int] = set()
    stdin = sys.stdin.buffer
    buffer = b''
    if state is not None:
        _say(state, 'watching', director=parent, watchdog=os.getpid())
    why = 'died'
    while True:
        if os.getppid() != parent:
            break
        if state is not None and request_path(state).exists():
            why = 'fenced'
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
        if not _read_lines(lines, trees, groups):
            # The Director stopped its Parsl processes itself.
            if state is not None:
                _say(state, 'stopped', director=parent, why='stop', stopped=0)
            return 0
    noticed = time.time()
    if why == 'fenced':
        _kill_parent(parent)
    count = reap(trees, groups, lineage=Lineage(parent, noticed))
    logger.warning(
        'Director process %d %s: stopped %d Parsl process(es) in %.1fs',
        parent,
        why,
        count,
        time.time() - noticed,
    )
    if state is not None:
        _say(state, 'stopped', director=parent, why=why, stopped=count)
        request_path(state).unlink(missing_ok=True)
    return 0


def _say(state: pathlib.Path, what: str, **fields: int | str) -> None:
    """Write the fence state; a full or broken disk is one line (no fence is confirmed then)."""
    try:
        write_state(state, what, **fields)
    except OSError as e:
        logger.warning('cannot write the fence state %s (%s): %s', state, what, e)


def _read_lines(lines: list[bytes], trees: set[int], groups: set[int]) -> bool:
    """Add the trees and groups the Director named; False once it says ``stop``."""
    for line in lines:
        kind, _, value = line.decode().partition(' ')
        if kind == 'stop':
            return False
        if kind == 'tree':
            trees.add(int(value))
        elif kind == 'group':
            groups.add(int(value))
    return True


def _kill_parent(parent: int) -> None:
    """SIGKILL the (silent) Director and wait until it is gone (STONITH)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(parent, signal.SIGKILL)
    deadline = time.monotonic() + STOP_GRACE * 5
    # Its exit reparents us (it may stay a zombie until its own parent reaps it).
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """Run the watchdog (``python -m actors.execution.watchdog --parent PID``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--parent', type=int, required=True)
    parser.add_argument('--fence', help='the fence directory (actors.execution.fence)')
    parser.add_argument('--name', help="the Director's name (with --fence)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s watchdog: %(message)s')
    # Signals sent to the Director's session (Ctrl-C, SIGHUP) must not stop us, nor the
    # SIGTERM a batch scheduler sends every process of a cancelled job at once (scancel,
    # qdel): we stop the Director's Parsl processes once it is gone, then exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    state = None
    if args.fence and args.name:
        state = state_path(args.fence, args.name, args.parent)
    return _serve(args.parent, state)


if __name__ == '__main__':
    sys.exit(main())
