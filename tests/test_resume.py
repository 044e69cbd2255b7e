"""Kill the client mid-run, then resume: no finished result is lost or run twice."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from actors.journal import read_run
from actors.watchdog import ORPHAN_BOUND
from tests.conftest import REPO
from tests.conftest import parsl_processes_of

pytestmark = pytest.mark.timeout(240)

LAUNCH = str(REPO / 'launch.py')


def test_killed_client_loses_nothing_and_resume_finishes(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    iterations = 10
    args = [
        '--simulate-nodes', '2', '--partitions', '1', '--workers-per-node', '1',
        '--iterations', str(iterations), '--duration', '1', '--run-dir', str(run_dir),
    ]  # fmt: skip
    client = subprocess.Popen(
        [sys.executable, LAUNCH, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    journal = run_dir / 'journal' / 'director-0.jsonl'
    deadline = time.time() + 150
    while time.time() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        assert client.poll() is None, client.stderr.read()
        time.sleep(0.1)
    else:
        pytest.fail('no results were journaled in time')
    parsl_before = parsl_processes_of(run_dir)
    assert parsl_before, 'the Director had no Parsl processes'
    client.send_signal(signal.SIGKILL)
    client.wait()
    killed_at = time.time()
    first_line = client.stderr.readline()
    client.stderr.close()
    assert first_line.strip() == f'launch.py: run dir {run_dir}'
    # The parent-death watchdog stops the interchange and the worker pools.
    while parsl_processes_of(run_dir) and time.time() < killed_at + ORPHAN_BOUND + 5:
        time.sleep(0.1)
    orphan_time = time.time() - killed_at
    assert not parsl_processes_of(run_dir), 'Parsl processes outlived the killed client'
    assert orphan_time <= ORPHAN_BOUND + 1
    before = {r['call_key']: r for r in read_run(run_dir)}
    assert len(before) >= 3 and all(r['status'] == 'ok' for r in before.values())

    resumed = subprocess.run(
        [sys.executable, LAUNCH, '--resume', str(run_dir), '--json'],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    results = json.loads(resumed.stdout)['results']
    keys = [r['call_key'] for r in results]
    expected = ['director-0/md_sim/0'] + [f'director-0/md_sim_batch/{i}' for i in range(iterations)]
    assert keys == expected
    assert all(r['status'] == 'ok' for r in results)
    # Every result journaled before the kill is reported as it was, not run again.
    by_key = {r['call_key']: r for r in results}
    for key, record in before.items():
        assert by_key[key] == record
    journaled = read_run(run_dir)
    ok_keys = [r['call_key'] for r in journaled if r['status'] == 'ok']
    assert sorted(ok_keys) == sorted(expected), 'a call ran twice or is missing'
    assert os.path.exists(run_dir / 'manifest.json')
