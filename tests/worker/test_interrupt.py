"""Stopping calls that run inside the worker process (``actors.worker.interrupt``).

Each case runs the guard in a real forked process that plays the Parsl
worker (``PARSL_WORKER_RANK`` set), with real cancel files, signals,
subprocesses and, for a tool that ignores the stop, a real SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import subprocess
import time
from typing import Any

import psutil
import pytest

from actors.common.timing import STOP_GRACE
from actors.tools.registry import TOOLS
from actors.tools.registry import register_tool
from actors.worker.control import CONTROL_DIR_VARIABLE
from actors.worker.control import CancelFiles
from actors.worker.control import stop_marker
from actors.worker.interrupt import run_interruptible
from actors.worker.wire import read_outcome

pytestmark = pytest.mark.timeout(60)

FORK = multiprocessing.get_context('fork')


def sleep_in_child(seconds: float = 60.0, pid_file: str = '') -> str:
    """Run ``sleep`` as a child process (a tool that starts a program).

    Args:
        seconds: How long the child sleeps.
        pid_file: Where to write the child's PID.

    """
    child = subprocess.Popen(['sleep', str(seconds)])
    pathlib.Path(pid_file).write_text(str(child.pid))
    child.wait()
    return 'slept'


def stubborn(seconds: float = 60.0) -> str:
    """A tool that swallows every interruption, as a stuck C call would.

    Args:
        seconds: How long it keeps sleeping, interruptions or not.

    """
    end = time.time() + seconds
    while time.time() < end:
        try:
            time.sleep(0.05)
        except BaseException:
            pass
    return 'never stopped'


def _worker(queue: Any, name: str, params: dict[str, Any], control: Any, directory: str) -> None:
    os.environ['PARSL_WORKER_RANK'] = '0'
    os.environ[CONTROL_DIR_VARIABLE] = directory
    queue.put(run_interruptible(name, params, control))
    # A worker lives on after the call: report that it was not killed.
    queue.put('alive')


def _outcome(queue: Any, timeout: float) -> dict[str, Any]:
    """The outcome the worker function returned, as bytes (what Parsl carries)."""
    packed = queue.get(timeout=timeout)
    assert isinstance(packed, bytes), packed
    return read_outcome(packed)


def _start(name: str, params: dict[str, Any], control: Any, files: CancelFiles) -> tuple[Any, Any]:
    queue = FORK.Queue()
    process = FORK.Process(target=_worker, args=(queue, name, params, control, files.directory))
    process.start()
    return process, queue


@pytest.fixture(autouse=True)
def _test_tools():
    register_tool('test_sleep_child')(sleep_in_child)
    register_tool('test_stubborn')(stubborn)
    yield
    TOOLS.pop('test_sleep_child', None)
    TOOLS.pop('test_stubborn', None)


def test_a_cancel_stops_a_running_call_and_the_worker_lives(tmp_path: pathlib.Path):
    files = CancelFiles(tmp_path / 'control')
    control = files.control('k', None)
    process, queue = _start('mock_md', {'duration': 60}, control, files)
    time.sleep(0.5)
    assert files.cancel('k', 'cancelled by the caller') == 1
    outcome = _outcome(queue, 10)
    assert queue.get(timeout=5) == 'alive'
    process.join(timeout=5)
    assert process.exitcode == 0
    assert outcome['status'] == 'cancelled' and outcome['error_type'] == 'Cancelled'
    assert outcome['error_message'] == 'cancelled by the caller (while running)'
    assert outcome['end'] - outcome['start'] < 5
    assert files.stopped(control) == ('cancelled', 'cancelled by the caller')


def test_cancel_all_stops_queued_and_running_calls(tmp_path: pathlib.Path):
    files = CancelFiles(tmp_path / 'control')
    files.cancel_all('the Director is shutting down')
    control = files.control(None, None)
    process, queue = _start('mock_md', {'duration': 60}, control, files)
    outcome = _outcome(queue, 10)
    process.join(timeout=5)
    assert outcome['status'] == 'cancelled'
    assert outcome['error_message'] == 'the Director is shutting down (before it started)'


def test_a_timeout_stops_the_call_and_its_child_processes(tmp_path: pathlib.Path):
    files = CancelFiles(tmp_path / 'control')
    pid_file = tmp_path / 'child.pid'
    control = files.control(None, 1.0)
    process, queue = _start('test_sleep_child', {'pid_file': str(pid_file)}, control, files)
    outcome = _outcome(queue, 15)
    assert queue.get(timeout=5) == 'alive'
    process.join(timeout=5)
    assert outcome['status'] == 'timed_out' and outcome['error_type'] == 'TimedOut'
    assert 1.0 <= outcome['end'] - outcome['start'] < 5
    # The guard terminated the tool's child; once the worker is gone nothing
    # of the call runs.
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_a_call_that_ignores_the_stop_is_killed_with_its_worker(tmp_path: pathlib.Path):
    files = CancelFiles(tmp_path / 'control')
    control = files.control(None, 0.5)
    process, queue = _start('test_stubborn', {'seconds': 60}, control, files)
    process.join(timeout=0.5 + STOP_GRACE + 10)
    assert process.exitcode == -9, 'the stubborn worker was not killed'
    assert queue.empty()
    # The Director side learns why the worker died: no retry, a timed-out result.
    status, reason = files.stopped(control)
    assert status == 'timed_out'
    assert 'timeout of 0.5s' in reason and 'worker killed' in reason
    assert pathlib.Path(stop_marker(files.directory, control[0])).exists()


def test_an_unstopped_call_is_not_reported_as_stopped(tmp_path: pathlib.Path):
    files = CancelFiles(tmp_path / 'control')
    control = files.control('k', None)
    process, queue = _start('mock_md', {'duration': 0.1, 'seed': 3}, control, files)
    outcome = _outcome(queue, 10)
    process.join(timeout=5)
    assert outcome['status'] == 'ok' and outcome['ok']
    assert files.stopped(control) is None
    assert files.stopped(None) is None
    files.forget('k', control)
    assert files.cancel('k', 'too late') == 0
    files.close()
    assert not (tmp_path / 'control').exists()
