"""A run dir on a read-only file system: one line, exit 2, for every way of resuming it."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

ROOT = REPO

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which('unshare') is None,
        reason='needs root and unshare(1) to mount a read-only file system',
    ),
]


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    run = tmp_path_factory.mktemp('ro') / 'run'
    subprocess.run(
        [sys.executable, 'launch.py', '--run-dir', str(run), '--simulate-nodes', '1',
         '--partitions', '1', '--iterations', '1', '--duration', '0', '--quiet'],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return run


@pytest.mark.parametrize('command', [['--resume'], ['mcp', '--resume']])
def test_resuming_a_read_only_run_dir_says_so_in_one_line(
    finished_run: pathlib.Path, command: list[str]
):
    # Root writes through file modes: only a read-only mount refuses it.
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    done = subprocess.run(
        ['unshare', '-m', 'sh', '-c', script, 'sh', str(finished_run),
         sys.executable, 'launch.py', *command, str(finished_run)],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert 'Read-only file system (EROFS); nothing was started' in lines[0]
    assert str(finished_run) in lines[0]
