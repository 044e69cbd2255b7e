"""A disk that fills up mid-run: one line naming the journal, its calls kept, ``--resume`` finishes.

For real: ``launch.py`` runs in a private mount namespace (``unshare -m``) with
its run dir on a 4 MB tmpfs mounted there, and the test fills that file system
(through ``/proc/PID/root``) once the journal holds a few finished calls. No
code of ours is mocked: the journal's writes fail with ENOSPC as they would on
a full parallel file system. The same namespace then frees the space and runs
``launch.py --resume`` on the run dir.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from actors.cli.output import write_results
from actors.cli.report import RESULTS_NAME
from actors.common.errors import describe_os_error
from actors.common.results import CallResult
from actors.store.journal import read_journal
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(240)

ITERATIONS = 40
"""Calls in the batch (plus one lone md_sim): about 10 s of work on two slots."""


def _cannot_mount() -> str | None:
    if shutil.which('unshare') is None:
        return 'unshare (util-linux) is not installed'
    probe = subprocess.run(
        ['unshare', '-m', 'mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', '/mnt'],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f'cannot mount a tmpfs in a mount namespace here: {probe.stderr.strip()}'
    return None


def _tracebacks(stderr: str) -> list[str]:
    """The tracebacks in ``stderr``, each as its text up to its last line."""
    return re.findall(r'^Traceback \(most recent call last\):\n(?:[ \t].*\n)*.*$', stderr, re.M)


def _lines(path: pathlib.Path) -> int:
    try:
        return path.read_bytes().count(b'\n')
    except OSError:
        return 0


@pytest.mark.skipif(_cannot_mount() is not None, reason=str(_cannot_mount()))
def test_a_disk_full_mid_run_is_one_line_and_resume_finishes(tmp_path: pathlib.Path):
    mnt, out = tmp_path / 'mnt', tmp_path / 'out'
    mnt.mkdir()
    out.mkdir()
    run_dir = mnt / 'run'
    launch = [sys.executable, str(REPO / 'launch.py')]
    flags = ['--simulate-nodes', '1', '--partitions', '1', '--workers-per-node', '2']
    flags += ['--iterations', str(ITERATIONS), '--duration', '0.5', '--run-dir', str(run_dir)]
    q = shlex.quote
    # The namespace lives as long as this script: both runs see the same tmpfs, and the
    # journals are copied out before it goes.
    script = '\n'.join(
        [
            'set -u',
            f'mount -t tmpfs -o size=4m tmpfs {q(str(mnt))} || exit 97',
            f'{shlex.join(launch + flags)} >{q(str(out / "first.out"))} '
            f'2>{q(str(out / "first.err"))} </dev/null',
            f'echo $? >{q(str(out / "first.rc"))}',
            f'cp {q(str(run_dir / "journal" / "director-0.jsonl"))} {q(str(out / "first.jsonl"))}',
            f'rm -f {q(str(mnt / "fill"))}',
            f'{shlex.join([*launch, "--resume", str(run_dir), "--json"])} '
            f'>{q(str(out / "resume.out"))} 2>{q(str(out / "resume.err"))} </dev/null',
            f'echo $? >{q(str(out / "resume.rc"))}',
            f'cp {q(str(run_dir / "journal" / "director-0.jsonl"))} {q(str(out / "final.jsonl"))}',
        ]
    )
    process = subprocess.Popen(['unshare', '-m', 'sh', '-c', script], stdin=subprocess.DEVNULL)
    try:
        # unshare execs sh in the new namespace: its /proc root sees the tmpfs.
        inside = pathlib.Path(f'/proc/{process.pid}/root') / str(mnt).lstrip('/')
        journal = inside / 'run' / 'journal' / 'director-0.jsonl'
        deadline = time.monotonic() + 90
        while _lines(journal) < 3:
            assert process.poll() is None, 'the run ended before the disk filled'
            assert time.monotonic() < deadline, 'no calls were journaled'
            time.sleep(0.05)
        before = _lines(journal)
        with pytest.raises(OSError, match='No space left on device'):
            with open(inside / 'fill', 'wb') as fill:
                while True:
                    fill.write(b'\0' * 65536)
                    fill.flush()
        assert process.wait(timeout=200) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # The first run: one line naming the journal and the --resume that finishes it.
    err = (out / 'first.err').read_text()
    assert (out / 'first.rc').read_text().strip() == '1', err
    assert _tracebacks(err) == [], err
    journal_path = run_dir / 'journal' / 'director-0.jsonl'
    assert err.strip().splitlines()[-1] == (
        f'launch.py: failed: OSError: {journal_path}: No space left on device (ENOSPC); '
        f'finished calls are in {run_dir}/journal; finish with: launch.py --resume {run_dir}'
    ), err
    # The journal's failure is said once, not once per call (41 calls failed to commit).
    assert err.count('cannot write the journal: ') == 1, err
    assert f'{journal_path}: No space left on device (ENOSPC)' in err

    # What was journaled before the disk filled is kept, whole.
    kept = list(read_journal(out / 'first.jsonl'))
    assert len(kept) >= before >= 3
    assert all(r['status'] == 'ok' for r in kept)

    # With space again, --resume runs only the rest: every call ok, none twice.
    resumed = json.loads((out / 'resume.out').read_text())
    resume_err = (out / 'resume.err').read_text()
    assert (out / 'resume.rc').read_text().strip() == '0', resume_err
    assert len(resumed['results']) == ITERATIONS + 1
    assert all(r['ok'] for r in resumed['results'])
    final = [r for r in read_journal(out / 'final.jsonl') if r['status'] == 'ok']
    keys = [r['call_key'] for r in final]
    assert len(keys) == len(set(keys)) == ITERATIONS + 1
    assert {r['call_key'] for r in kept} <= set(keys)


@pytest.mark.timeout(10)
@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='no /dev/full')
def test_results_on_a_full_disk_name_their_file(tmp_path: pathlib.Path):
    # /dev/full fails every write with ENOSPC, as a full disk does, and names no file.
    (tmp_path / RESULTS_NAME).symlink_to('/dev/full')
    result = CallResult('c1', 'director-0', 0, 'md_sim', 'md_sim', {}, True, status='ok')
    with pytest.raises(OSError) as raised:
        write_results(tmp_path, [result])
    assert describe_os_error(raised.value) == (
        f'{tmp_path / RESULTS_NAME}: No space left on device (ENOSPC)'
    )
