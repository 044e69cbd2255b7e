"""A simulated PBS job: made-up hosts in $PBS_NODEFILE, MPICH's fork launcher."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import REPO

HOSTS = ['x4102c5s0b0n0', 'x4102c5s1b0n0', 'x4102c5s2b0n0', 'x4102c5s3b0n0', 'x4102c5s4b0n0']


@pytest.mark.timeout(180)
def test_pbs_site_splits_the_nodefile_among_directors(tmp_path: pathlib.Path):
    nodefile = tmp_path / 'PBS_NODEFILE'
    # PBS repeats a host once per rank (here: 2 ranks per node).
    nodefile.write_text(''.join(f'{h}\n{h}\n' for h in HOSTS))
    env = {**os.environ, 'PBS_NODEFILE': str(nodefile), 'PBS_JOBID': '777.fake-pbs'}
    env.pop('SLURM_JOB_NODELIST', None)
    run_dir = tmp_path / 'run'
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / 'launch.py'),
            '--site',
            'pbs',
            '--launcher-args',
            '-launcher fork --ppn 1',
            '--workers-per-node',
            '2',
            '--partition-sizes',
            '2,3',
            # The split itself is checked: nodes stay where it put them.
            '--static',
            '--iterations',
            '6',
            '--duration',
            '0.2',
            '--run-dir',
            str(run_dir),
            '--json',
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc['node_source'] == {'kind': 'pbs', 'detail': str(nodefile)}
    parts = {p['index']: p for p in doc['partitions']}
    assert parts[0]['nodes'] == HOSTS[:2]
    assert parts[1]['nodes'] == HOSTS[2:]
    for part in parts.values():
        assert pathlib.Path(part['nodefile']).read_text().split() == part['nodes']
        assert pathlib.Path(part['nodefile']).is_relative_to(run_dir)
    assert len(doc['results']) == 2 * (1 + 6)
    used: dict[int, set[str]] = {0: set(), 1: set()}
    for r in doc['results']:
        assert r['ok'], r
        assert r['node'] in parts[r['partition']]['nodes'], r
        used[r['partition']].add(r['node'])
    # Calls never crossed partitions.
    assert not used[0] & used[1]
