"""A run whose files cannot be written at start-up ends with one line, not tracebacks."""

from __future__ import annotations

import errno
import json
import pathlib
import pickle
import subprocess
import sys

import pytest

from actors.common.errors import describe_os_error
from actors.director.startup import DirectorStartError
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(150)

ONE_CALL = ('--iterations', '1', '--duration', '0', '--partitions', '1', '--simulate-nodes', '1')
SHORT = 8
"""Lines of stderr a failed start may take: the run dir, Academy's one-line records, the end."""


def _launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    'where',
    [(), ('--executor', 'process', '--exchange', 'http')],
    ids=['in-process', 'director-processes'],
)
def test_a_journal_that_cannot_be_made_is_one_line_and_resume_finishes(
    tmp_path: pathlib.Path, where: tuple[str, ...]
):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    journal = run_dir / 'journal'
    journal.symlink_to(tmp_path / 'nowhere' / 'journal')  # dangling: mkdir fails, even as root
    done = _launch('--quiet', *where, *ONE_CALL, '--run-dir', str(run_dir))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-3000:]
    assert 'Traceback' not in done.stderr, done.stderr[-3000:]
    assert len(lines) <= SHORT, done.stderr
    assert lines[-1] == (
        f'launch.py: failed: DirectorStartError: director-0 could not start: {journal}: '
        f'File exists (EEXIST); finished calls are in {run_dir}/journal; '
        f'finish with: launch.py --resume {run_dir}'
    )
    journal.unlink()  # fixed: the hint works
    resumed = _launch('--resume', str(run_dir), '--json')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r['status'] for r in json.loads(resumed.stdout)['results']] == ['ok', 'ok']


def test_a_run_dir_that_cannot_be_laid_out_is_one_line(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'partitions').symlink_to(tmp_path / 'nowhere')
    done = _launch('--quiet', *ONE_CALL, '--run-dir', str(run_dir))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f'launch.py: error: cannot prepare the run: {run_dir}/partitions: File exists (EEXIST); '
        'nothing was started\n'
    )


def test_os_errors_are_described_by_path_reason_and_errno_name():
    full = OSError(errno.ENOSPC, 'No space left on device', '/x/journal/director-0.jsonl')
    assert describe_os_error(full) == (
        '/x/journal/director-0.jsonl: No space left on device (ENOSPC)'
    )
    read_only = OSError(errno.EROFS, 'Read-only file system', '/x', None, '/y')
    assert describe_os_error(read_only) == '/x -> /y: Read-only file system (EROFS)'
    error = DirectorStartError.from_os_error('director-1', full)
    assert str(error) == (
        'director-1 could not start: /x/journal/director-0.jsonl: No space left on device (ENOSPC)'
    )
    # It crosses from a Director process to the client (concurrent.futures pickles it).
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
