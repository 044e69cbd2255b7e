"""A worker block that can never start ends the run in bounded time, with the block's error."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest

from actors.execution.blocks import MAX_FAILED_STARTS
from actors.execution.blocks import BlockStartGuard
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(150)

BOUND = 90.0
"""Seconds within which such a run ends (measured here: ~16 s for 3 failed blocks)."""


def test_a_launcher_typo_ends_the_run_with_the_launchers_own_error(tmp_path: pathlib.Path):
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / 'launch.py'),
            # MPICH's mpiexec of a simulated PBS job (the local site's launcher takes no flags).
            '--site',
            'pbs',
            '--launcher-args',
            '-launcher nosuch',
            '--json',
            '--iterations',
            '1',
            '--duration',
            '0',
            '--partitions',
            '1',
            '--simulate-nodes',
            '1',
            '--run-dir',
            str(tmp_path / 'run'),
        ],
        capture_output=True,
        text=True,
        timeout=BOUND + 30,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-2000:]
    assert elapsed < BOUND
    assert 'ended before any worker pool connected' in done.stdout
    assert 'unrecognized launcher: nosuch' in done.stdout  # the block's own stderr
    assert '"status": "lost"' in done.stdout


class _Job:
    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.state = type('State', (), {'name': 'FAILED'})()
        self.exit_code = 1
        self.message = None
        self.stderr_path = None


class _Executor:
    label = 'htex'


def test_the_guard_ignores_blocks_once_a_pool_has_connected():
    failures = []
    guard = BlockStartGuard(failures.append)
    guard.connected = True
    guard(_Executor(), {str(i): _Job(True) for i in range(MAX_FAILED_STARTS + 2)})
    assert not failures
    fresh = BlockStartGuard(failures.append)
    fresh(_Executor(), {'0': _Job(True), '1': _Job(False)})
    assert not failures
    fresh(_Executor(), {str(i): _Job(True) for i in range(MAX_FAILED_STARTS)})
    fresh(_Executor(), {str(i): _Job(True) for i in range(MAX_FAILED_STARTS + 1)})
    assert len(failures) == 1 and 'htex' in str(failures[0])
