from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from actors.client.exchange import free_port
from actors.worker.control import CONTROL_DIR_VARIABLE
from tests.helpers import Server

REPO = pathlib.Path(__file__).resolve().parent.parent
# The interchange renames itself with setproctitle ('parsl: HTEX interchange').
PARSL_PROCESS_MARKERS = (
    'interchange.py',
    'HTEX interchange',
    'process_worker_pool.py',
    'mpiexec',
    'hydra_pmi_proxy',
)
LEAK_GRACE = 15.0
"""Seconds a test's Parsl processes get to exit after the test before they count as leaked."""

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


def _is_parsl_process(proc: psutil.Process) -> bool:
    """A Parsl process by its command line, or anything a block started (by its environment)."""
    try:
        cmdline = ' '.join(proc.cmdline())
        if any(marker in cmdline for marker in PARSL_PROCESS_MARKERS):
            return True
        # A lost pool's orphaned multiprocessing helpers look like any Python.
        return CONTROL_DIR_VARIABLE in proc.environ()
    except _GONE:
        return False


def _under(path: str, base: str) -> bool:
    """Whether ``path`` is ``base`` or inside it (``/x/pytest-1`` is not in ``/x/pytest-12``)."""
    return path == base or path.startswith(base + os.sep)


def _names_path_under(cmdline: str, base: str) -> bool:
    """Whether ``cmdline`` names ``base`` or a path inside it."""
    return re.search(re.escape(base) + r'(?=/|\s|$|[\'"])', cmdline) is not None


def _touches(proc: psutil.Process, base: str) -> bool:
    """Whether the process works in ``base``: its cwd or an open file is under it.

    An interchange re-parented to init after its Director died has no run
    directory on its command line; its log file (``interchange.log`` in the
    run directory) is still open, and a block's ``mpiexec`` runs in the run
    directory.
    """
    try:
        if _under(proc.cwd(), base):
            return True
        return any(_under(f.path, base) for f in proc.open_files())
    except _GONE:
        return False


def parsl_processes_of(base: pathlib.Path) -> list[psutil.Process]:
    """Live Parsl processes that belong to ``base`` (a test's or the session's temp dir).

    A process is ours if it is a descendant of this pytest process, names a
    path under ``base`` on its command line (worker pools: their log dir),
    or works there (cwd or an open file: interchanges, also re-parented
    ones). Processes of other pytest sessions (other ``basetemp``) are not.
    """
    ours: list[psutil.Process] = []
    me = os.getpid()
    uid = os.getuid()
    marker = str(base)
    for proc in psutil.process_iter(['pid', 'cmdline', 'status', 'uids']):
        info = proc.info
        if info['status'] == psutil.STATUS_ZOMBIE or info['uids'] is None:
            continue
        if info['uids'].real != uid or not _is_parsl_process(proc):
            continue
        try:
            parents = {p.pid for p in proc.parents()}
        except _GONE:
            continue
        if (
            me in parents
            or _names_path_under(' '.join(info['cmdline'] or []), marker)
            or _touches(proc, marker)
        ):
            ours.append(proc)
    return ours


def _describe(proc: psutil.Process) -> str:
    try:
        return f'{proc.pid} (ppid {proc.ppid()}): {" ".join(proc.cmdline())[:160]}'
    except _GONE:
        return f'{proc.pid}: (exited)'


def end_processes(procs: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL after 3 s, exactly these processes (by PID)."""
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except _GONE:
            pass
    _, alive = psutil.wait_procs(procs, timeout=3)
    for proc in alive:
        try:
            proc.kill()
        except _GONE:
            pass
    psutil.wait_procs(alive, timeout=3)


@pytest.fixture(autouse=True)
def no_leftover_processes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Fail a test that leaves an interchange, worker pool or mpiexec running.

    Only this session's processes count (those under its ``basetemp``, or
    its descendants). The leftovers are named in the failure, then ended so
    that the next tests start clean.
    """
    base = tmp_path_factory.getbasetemp()
    yield
    deadline = time.time() + LEAK_GRACE
    left = parsl_processes_of(base)
    while left and time.time() < deadline:
        time.sleep(0.25)
        left = parsl_processes_of(base)
    if left:
        described = [_describe(p) for p in left]
        end_processes(left)
        pytest.fail(
            f'{request.node.name} left {len(left)} Parsl process(es) running '
            f'(now ended): {described}',
            pytrace=False,
        )


@pytest.fixture
def redis_server(tmp_path: pathlib.Path) -> Iterator[Server]:
    """A Redis server (persistent, restartable) on a free port of 127.0.0.1."""
    redis = shutil.which('redis-server')
    if redis is None:
        pytest.skip('redis-server is not installed (.ci/run installs it with apt-get)')
    port = free_port()
    data = tmp_path / 'redis'
    data.mkdir()
    argv = [redis, '--port', str(port), '--bind', '127.0.0.1', '--dir', str(data)]
    argv += ['--appendonly', 'yes', '--appendfsync', 'always', '--save', '']
    server = Server(argv, port, tmp_path / 'redis.log')
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http_exchange(tmp_path: pathlib.Path) -> Iterator[Server]:
    """Academy's HTTP exchange (in-memory backend) on a free port of 127.0.0.1."""
    port = free_port()
    config = tmp_path / 'exchange.toml'
    config.write_text(f'host = "127.0.0.1"\nport = {port}\n')
    argv = [sys.executable, '-m', 'academy.exchange.cloud', '--config', str(config)]
    server = Server(argv, port, tmp_path / 'exchange.log')
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def run_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / 'run'
    path.mkdir()
    return path


@pytest.fixture
def python() -> str:
    return sys.executable


def pytest_configure(config: pytest.Config) -> None:
    """Made-up test hosts resolve on loopback for the session (``tests/made_up_hosts.py``)."""
    from tests.made_up_hosts import made_up_hosts
    from tests.made_up_hosts import resolve_locally

    config.made_up_hosts_unresolved = resolve_locally(made_up_hosts())  # type: ignore[attr-defined]
