"""Stopping processes and what they started: the one helper every part uses.

A process that looks alive may be a zombie (exited, not yet reaped): no signal
stops it and it holds nothing, so it counts as exited here. A PID that was
reused by another process counts as exited too (``psutil`` checks the start
time).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from collections.abc import Iterable

import psutil

from actors.common.timing import STOP_GRACE


def exited(proc: psutil.Process) -> bool:
    """Whether ``proc`` has exited: gone, or a zombie waiting for its parent to reap it."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_exited(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for ``procs`` to exit; returns those still running.

    Unlike ``psutil.wait_procs``, a zombie counts as exited (see ``exited``).
    """
    alive = [proc for proc in procs if not exited(proc)]
    deadline = time.monotonic() + timeout
    interval = 0.005
    while alive and time.monotonic() < deadline:
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 2, 0.05)
        alive = [proc for proc in alive if not exited(proc)]
    return alive


def family(trees: Iterable[int] = (), groups: Iterable[int] = ()) -> list[psutil.Process]:
    """The running processes of the trees rooted at ``trees`` and of process ``groups``.

    A group member's descendants count too: ``mpiexec`` starts its proxies,
    and they the worker pools, in process groups of their own. The calling
    process is never part of it.
    """
    roots = set(trees)
    wanted = set(groups)
    me = os.getpid()
    if wanted:
        for proc in psutil.process_iter():
            try:
                if proc.pid != me and os.getpgid(proc.pid) in wanted:
                    roots.add(proc.pid)
            except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
                continue
    procs: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                procs[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    procs.pop(me, None)
    return [proc for proc in procs.values() if not exited(proc)]


def stop_processes(
    find: Callable[[], Iterable[psutil.Process]],
    *,
    grace: float = STOP_GRACE,
    also: Iterable[psutil.Process] = (),
) -> int:
    """SIGTERM what ``find`` returns, then SIGKILL what is left after ``grace``.

    With ``grace`` 0 the processes get SIGKILL only (a tool being stopped the
    hard way). ``find`` is asked again before SIGKILL: children started
    meanwhile (a pool restarting a worker) go too.

    Args:
        find: Returns the processes to stop (e.g. ``lambda: family([pid])``).
        grace: Seconds between SIGTERM and SIGKILL, and to wait after SIGKILL.
        also: Further processes that go (``psutil`` objects: a PID reused
            meanwhile is not signalled).

    Returns:
        How many running processes were signalled (zombies are not counted).

    """
    found = {p.pid: p for p in also if not exited(p)}
    found |= {p.pid: p for p in find()}
    procs = list(found.values())
    if grace > 0:
        _signal(procs, signal.SIGTERM)
        alive = wait_exited(procs, timeout=grace)
    else:
        alive = procs
    left = {p.pid: p for p in alive} | {p.pid: p for p in find()}
    _signal(left.values(), signal.SIGKILL)
    wait_exited(left.values(), timeout=grace)
    return len(procs)


def kill_tree(pid: int, *, wait: float = 5.0) -> None:
    """SIGKILL a process and everything it started (an ``mpiexec`` and its ranks)."""
    procs = family([pid])
    _signal(procs, signal.SIGKILL)
    wait_exited(procs, timeout=wait)


def stop_child_group(pid: int, *, grace: float = STOP_GRACE) -> None:
    """Stop a forked child that leads its own process group, and reap it.

    The group's other members (the tool's own children) go too, even if the
    child itself already exited.
    """
    stop_processes(lambda: family([pid], groups=[pid]), grace=grace)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _signal(procs: Iterable[psutil.Process], signum: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(signum)
