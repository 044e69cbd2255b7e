"""Helpers that start real Directors (real Parsl workers) for the tests."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

from academy.exchange import LocalExchangeFactory
from academy.exchange.cloud.client import wait_connection
from academy.manager import Manager

from actors.client.launch import launch_directors
from actors.client.launch import wait_ready
from actors.job.partition import Partition
from actors.job.partition import simulated_nodes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions
from actors.site.profile import load_site


def make_partitions(run_dir: pathlib.Path, nodes: int = 4, partitions: int = 2) -> list[Partition]:
    return write_partitions(split_nodes(simulated_nodes(nodes), count=partitions), run_dir)


@contextlib.asynccontextmanager
async def running_directors(
    run_dir: pathlib.Path,
    *,
    nodes: int = 4,
    partitions: int = 2,
    workers_per_node: int = 2,
    factory: Any = None,
    executor: Any = None,
    profile: Any = None,
    **options: Any,
) -> AsyncIterator[tuple[Manager[Any], list[Any], list[Partition]]]:
    parts = make_partitions(run_dir, nodes, partitions)
    manager = await Manager.from_exchange_factory(
        factory or LocalExchangeFactory(),
        executors=executor,
    )
    async with manager:
        handles = await launch_directors(
            manager,
            parts,
            profile or load_site('local'),
            str(run_dir),
            workers_per_node=workers_per_node,
            **options,
        )
        await wait_ready(manager, handles, timeout=90)
        yield manager, handles, parts


def pools_of(run_dir: pathlib.Path) -> list[Any]:
    """Live Parsl worker pools (managers) started for ``run_dir``."""
    import psutil

    pools = []
    for proc in psutil.process_iter(['cmdline', 'status']):
        argv = proc.info['cmdline'] or []
        if (
            proc.info['status'] != psutil.STATUS_ZOMBIE
            and len(argv) > 1
            and 'python' in pathlib.Path(argv[0]).name
            and argv[1].endswith('process_worker_pool.py')
            and str(run_dir) in ' '.join(argv)
        ):
            pools.append(proc)
    return pools


async def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> Any:
    """Poll ``predicate()`` until it returns something truthy."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f'condition not met within {timeout}s: {predicate}')


def busy_workers(run_dir: pathlib.Path) -> list[Any]:
    """Worker processes (children of a pool) that are running a tool right now."""
    import psutil

    busy = []
    for pool in pools_of(run_dir):
        try:
            for worker in pool.children():
                if worker.children():
                    busy.append(worker)
        except psutil.NoSuchProcess:
            continue
    return busy


class Server:
    """A server process started (and restarted) by the test on a fixed port."""

    def __init__(self, argv: list[str], port: int, log: pathlib.Path) -> None:
        self.argv, self.port, self.log = argv, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, 'ab') as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log)
        wait_connection('127.0.0.1', self.port, timeout=30)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=30)


def is_interchange(proc: Any) -> bool:
    """Whether ``proc`` is Parsl's interchange (not any process whose arguments say so:
    a watchdog's run dir is named after its test, which may say "interchange")."""
    return any(
        part.endswith('interchange.py') or part.startswith('parsl: HTEX interchange')
        for part in proc.cmdline()
    )


def director_processes(root: int) -> list[Any]:
    """Descendants of ``root`` that own an interchange (Director processes)."""
    import psutil

    found = []
    for child in psutil.Process(root).children(recursive=True):
        try:
            if any(is_interchange(c) for c in child.children()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def start_launch(*args: str) -> subprocess.Popen[str]:
    """Start ``launch.py ARGS`` as a client process to kill; its stderr is a pipe."""
    from tests.conftest import REPO

    return subprocess.Popen(
        [sys.executable, str(REPO / 'launch.py'), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def resume_json(run_dir: pathlib.Path) -> tuple[list[dict[str, Any]], str]:
    """Run ``launch.py --resume RUN_DIR --json``; its results and its stderr."""
    import json

    from tests.conftest import REPO

    resumed = subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), '--resume', str(run_dir), '--json'],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    return json.loads(resumed.stdout)['results'], resumed.stderr
