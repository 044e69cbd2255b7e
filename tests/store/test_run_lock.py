"""One process drives a run directory: a second is refused, naming the first; a dead one's
lock is taken over."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from actors.store.run_dirs import fresh_run_dir
from actors.store.run_lock import RunDirInUseError
from actors.store.run_lock import lock_run_dir
from actors.store.run_lock import release_run_dir
from tests.conftest import REPO
from tests.helpers import start_launch

pytestmark = pytest.mark.timeout(60)

HOLD = """
import pathlib, sys, time
from actors.store.run_lock import lock_run_dir
lock_run_dir(pathlib.Path(sys.argv[1]))
print('held', flush=True)
time.sleep(600)
"""

TRY = """
import pathlib, sys
from actors.store.run_lock import RunDirInUseError, lock_run_dir
try:
    lock_run_dir(pathlib.Path(sys.argv[1]))
except RunDirInUseError as e:
    print(e)
    sys.exit(2)
print('taken')
"""


def _try_lock(run_dir: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-c', TRY, str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_second_process_is_refused_until_the_first_lets_go(tmp_path: pathlib.Path):
    lock_run_dir(tmp_path)
    try:
        lock_run_dir(tmp_path)  # the holder again: nothing to do
        refused = _try_lock(tmp_path)
        assert refused.returncode == 2
        assert f'is in use by pid {os.getpid()} on ' in refused.stdout
    finally:
        release_run_dir(tmp_path)
    assert _try_lock(tmp_path).stdout.strip() == 'taken'


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: pathlib.Path):
    holder = subprocess.Popen(
        [sys.executable, '-c', HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == 'held'
        with pytest.raises(RunDirInUseError, match=f'in use by pid {holder.pid} '):
            lock_run_dir(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # Its lock file is still there, with its pid in it: the lock itself died with it.
    assert str(holder.pid) in (tmp_path / 'run.lock').read_text()
    lock_run_dir(tmp_path)
    release_run_dir(tmp_path)


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path: pathlib.Path):
    taken = [fresh_run_dir(tmp_path) for _ in range(3)]
    try:
        # The same second gives -2, -3; a new second starts again without a suffix.
        assert len(set(taken)) == 3 and all(p.parent == tmp_path for p in taken)
    finally:
        for path in taken:
            release_run_dir(path)


@pytest.mark.timeout(180)
def test_a_second_resume_of_a_running_run_exits_2_naming_the_first(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    first = start_launch(
        '--simulate-nodes', '2', '--partitions', '1', '--workers-per-node', '1',
        '--iterations', '20', '--duration', '1', '--run-dir', str(run_dir),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / 'manifest.json').exists() and time.monotonic() < deadline:
            assert first.poll() is None
            time.sleep(0.1)
        for command in (['--resume', str(run_dir)], ['mcp', '--resume', str(run_dir)]):
            second = subprocess.run(
                [sys.executable, str(REPO / 'launch.py'), *command],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            assert second.returncode == 2, second.stderr
            assert f'is in use by pid {first.pid} on ' in second.stderr
            assert second.stderr.count('\n') == 1, second.stderr  # one line, no traceback
        # The first run went on untouched.
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
        if first.stderr is not None:
            first.stderr.close()
