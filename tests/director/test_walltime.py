"""Walltime: refuse calls that cannot finish, drain before the end, journal everything."""

from __future__ import annotations

import asyncio
import datetime
import os
import pathlib
import time

import pytest

from actors.calling.calls import call
from actors.common.errors import ConfigurationError
from actors.job.walltime import Walltime
from actors.job.walltime import allocation_end
from actors.job.walltime import parse_duration
from actors.store.journal import journal_path
from actors.store.journal import read_journal
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(150)


def test_allocation_end_from_flag_and_scheduler():
    now = 1000.0
    assert allocation_end('01:00:00', {}, now) == now + 3600
    assert allocation_end('90', {'SLURM_JOB_END_TIME': '5'}, now) == now + 90
    assert allocation_end(None, {'SLURM_JOB_END_TIME': '5000'}, now) == 5000.0
    assert allocation_end(None, {'PBS_WALLTIME': '120'}, now) == now + 120
    assert allocation_end(None, {}, now) is None
    assert parse_duration('1-00:00:01') == 86401
    assert Walltime(now + 100, 10).refusal(50, now) is None
    assert 'only 90s are left' in Walltime(now + 100, 10).refusal(95, now)
    assert 'draining' in Walltime(now + 100, 10).refusal(1, now + 95)


def test_director_refuses_late_calls_and_drains(run_dir: pathlib.Path):
    margin = 30.0
    end = time.time() + 45 + margin  # draining starts 45s from now

    async def main():
        async with running_directors(
            run_dir,
            nodes=1,
            partitions=1,
            workers_per_node=1,
            supervise=True,  # so that draining can stop the running call
            walltime=Walltime(end, margin),
        ) as (manager, (handle,), _):
            too_long = await call(manager, handle, 'md_sim', duration=3600, call_key='long')
            drain_at = end - margin
            assert drain_at - time.time() > 12, 'the Directors took too long to start'
            await asyncio.sleep(drain_at - 10 - time.time())
            # Each fits alone (8s < 10s left), but on one slot only the first does.
            batch = await call(
                manager,
                handle,
                'md_sim_batch',
                iterations=3,
                params={'duration': 8},
                batch_key='late',
            )
            after = await call(manager, handle, 'md_sim', duration=0, call_key='after')
            status = await call(manager, handle, 'status')
            return too_long, batch, after, status

    too_long, batch, after, status = asyncio.run(main())
    assert too_long.status == 'refused' and too_long.error_type == 'WalltimeExceeded'
    assert 'declares 3600s' in too_long.error_message
    assert [r.status for r in batch] == ['ok', 'cancelled', 'cancelled']
    assert all('walltime' in r.error_message for r in batch[1:])
    assert batch[0].end <= end - margin + 1
    assert after.status == 'refused' and 'draining' in after.error_message
    assert status.draining and status.walltime_end == end
    journal = journal_path(run_dir, 'director-0')
    journaled = {j['call_key']: j['status'] for j in read_journal(journal)}
    assert journaled == {
        'long': 'refused',
        'late/0': 'ok',
        'late/1': 'cancelled',
        'late/2': 'cancelled',
        'after': 'refused',
    }


@pytest.mark.parametrize('bad', ['', 'abc', '-5', '0', '1:2:3:4', 'inf', 'nan'])
def test_bad_walltime_is_rejected(bad: str):
    with pytest.raises(ConfigurationError, match='walltime'):
        parse_duration(bad)


@pytest.mark.parametrize(
    ('printed', 'code', 'expected'),
    [
        ('2026-12-06T19:01:48\n', 0, datetime.datetime(2026, 12, 6, 19, 1, 48).timestamp()),
        ('NONE\n', 0, None),
        ('', 1, None),
    ],
)
def test_slurm_without_end_time_variable_asks_squeue(
    printed, code, expected, tmp_path: pathlib.Path, monkeypatch
):
    # Slurm before 23.02 sets no SLURM_JOB_END_TIME, in salloc or sbatch.
    squeue = tmp_path / 'squeue'
    squeue.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\nprintf "{printed}"\nexit {code}\n')
    squeue.chmod(0o755)
    monkeypatch.setenv('PATH', f'{tmp_path}:{os.environ["PATH"]}')
    assert allocation_end(None, {'SLURM_JOB_ID': '42'}, 1000.0) == expected
    assert '--jobs=42' in (tmp_path / 'args').read_text()
