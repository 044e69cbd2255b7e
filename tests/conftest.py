from __future__ import annotations

import os
import pathlib
import signal
import sys
import time

import psutil
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# The interchange renames itself with setproctitle ('parsl: HTEX interchange').
PARSL_PROCESS_MARKERS = (
    'interchange.py',
    'HTEX interchange',
    'process_worker_pool.py',
    'mpiexec',
    'hydra_pmi_proxy',
)


def _is_parsl_process(proc: psutil.Process) -> bool:
    try:
        cmdline = ' '.join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(marker in cmdline for marker in PARSL_PROCESS_MARKERS)


def parsl_processes_of(base: pathlib.Path) -> list[psutil.Process]:
    """Live Parsl processes that belong to this test session.

    Worker pools and launchers carry the run directory (under the session's
    temp dir) on their command line; the interchange is a child of a process
    of this session.
    """
    ours: list[psutil.Process] = []
    me = os.getpid()
    marker = str(base)
    for proc in psutil.process_iter(['pid', 'ppid', 'cmdline', 'status']):
        if proc.info['status'] == psutil.STATUS_ZOMBIE or not _is_parsl_process(proc):
            continue
        cmdline = ' '.join(proc.info['cmdline'] or [])
        try:
            parents = {p.pid for p in proc.parents()}
        except psutil.NoSuchProcess:
            continue
        if marker in cmdline or me in parents:
            ours.append(proc)
    return ours


@pytest.fixture(autouse=True)
def no_leftover_processes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Fail a test that leaves an interchange or worker pool running."""
    base = tmp_path_factory.getbasetemp()
    yield
    deadline = time.time() + 15
    left = parsl_processes_of(base)
    while left and time.time() < deadline:
        time.sleep(0.25)
        left = parsl_processes_of(base)
    if left:
        described = [f'{p.pid}: {" ".join(p.cmdline())[:120]}' for p in left]
        for proc in left:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        pytest.fail(f'{request.node.name} left Parsl processes running: {described}')


@pytest.fixture
def run_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / 'run'
    path.mkdir()
    return path


@pytest.fixture
def python() -> str:
    return sys.executable
