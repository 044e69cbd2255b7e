"""Exchange outages: a Redis server restarted mid-run, an HTTP exchange that dies."""

from __future__ import annotations

import asyncio
import pathlib
import time

import pytest

from actors.client.calls import call
from actors.client.exchange import redis_factory
from actors.store.journal import journal_path
from actors.store.journal import read_journal
from actors.store.journal import read_run
from tests.conftest import parsl_processes_of
from tests.helpers import Server
from tests.helpers import busy_workers
from tests.helpers import resume_json
from tests.helpers import running_directors
from tests.helpers import start_launch
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)


def test_redis_restart_mid_run_loses_nothing(run_dir: pathlib.Path, redis_server: Server):
    calls, duration, outage = 4, 1.5, 5.0

    async def main():
        factory = redis_factory('127.0.0.1', redis_server.port)
        async with running_directors(
            run_dir, nodes=1, partitions=1, factory=factory, supervise=True
        ) as (
            manager,
            (handle,),
            _,
        ):
            batch = asyncio.ensure_future(
                call(
                    manager,
                    handle,
                    'md_sim_batch',
                    iterations=calls,
                    params={'duration': duration},
                    batch_key='b',
                ),
            )
            await wait_for(lambda: busy_workers(run_dir), timeout=60)
            redis_server.stop()
            stopped = time.time()
            await asyncio.sleep(outage)
            redis_server.start()
            restarted = time.time()
            results = await asyncio.wait_for(batch, timeout=90)
            after = await asyncio.wait_for(call(manager, handle, 'md_sim', duration=0), 30)
            return stopped, restarted, results, after

    stopped, restarted, results, after = asyncio.run(main())
    assert [r.call_key for r in results] == [f'b/{i}' for i in range(calls)]
    assert all(r.ok for r in results), results
    # Calls finished while the exchange was down, and their answers still arrived.
    assert any(stopped < r.end < restarted for r in results), [r.end for r in results]
    assert after.ok
    journaled = [j['call_key'] for j in read_journal(journal_path(run_dir, 'director-0'))]
    assert sorted(journaled, key=str) == sorted([*(r.call_key for r in results), None], key=str)


def test_http_exchange_death_fails_clearly_and_resume_recovers(
    tmp_path: pathlib.Path,
    http_exchange: Server,
):
    run_dir = tmp_path / 'run'
    iterations = 8
    args = [
        '--exchange', f'http://127.0.0.1:{http_exchange.port}',
        '--simulate-nodes', '1', '--partitions', '1', '--workers-per-node', '1',
        '--iterations', str(iterations), '--duration', '1', '--run-dir', str(run_dir),
    ]  # fmt: skip
    client = start_launch(*args)
    journal = journal_path(run_dir, 'director-0')
    deadline = time.time() + 150
    while len(list(read_journal(journal))) < 2:
        assert time.time() < deadline, 'no results were journaled in time'
        assert client.poll() is None
        time.sleep(0.1)
    # Its backend is in memory: every mailbox is gone with it.
    http_exchange.stop(kill=True)
    _, stderr = client.communicate(timeout=90)
    assert client.returncode == 1
    last = stderr.strip().splitlines()
    failure = [line for line in last if line.startswith('launch.py: failed:')]
    assert failure, stderr[-2000:]
    assert f'--resume {run_dir}' in failure[0]
    while parsl_processes_of(run_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert not parsl_processes_of(run_dir)
    before = {r['call_key']: r for r in read_run(run_dir)}
    assert before

    http_exchange.start()  # a fresh, empty exchange on the same address
    results, _ = resume_json(run_dir)
    expected = ['director-0/md_sim/0'] + [f'director-0/md_sim_batch/{i}' for i in range(iterations)]
    assert [r['call_key'] for r in results] == expected
    assert all(r['ok'] for r in results)
    for r in results:
        if r['call_key'] in before:
            assert r == before[r['call_key']]
    ok_keys = [r['call_key'] for r in read_run(run_dir) if r['ok']]
    assert sorted(ok_keys) == sorted(expected)
