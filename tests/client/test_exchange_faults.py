"""Exchange outages: a Redis server restarted mid-run, an HTTP exchange that dies."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import time

import pytest

from actors.calling.calls import call
from actors.client.exchange import free_port
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


LOST_EXCHANGE_BOUND = 45.0
"""Seconds from a Redis restart without persistence to the client's exit.

The client notices within ``EXCHANGE_POLL`` (2 s); its Directors (other
processes, which nobody can reach any more) notice within
``DIRECTOR_MAILBOX_POLL`` (5 s), give their calls the drain time (10 s) and
stop their DFK; measured here: ~5 s.
"""


def _volatile_redis(tmp_path: pathlib.Path) -> Server:
    """A Redis server that forgets everything when it restarts."""
    redis = shutil.which('redis-server')
    if redis is None:
        pytest.skip('redis-server is not installed (.ci/run installs it with apt-get)')
    port = free_port()
    argv = [redis, '--port', str(port), '--bind', '127.0.0.1', '--dir', str(tmp_path)]
    return Server([*argv, '--save', '', '--appendonly', 'no'], port, tmp_path / 'redis.log')


def _restart_mid_run(server: Server, run_dir: pathlib.Path, iterations: int) -> tuple[str, float]:
    """Run launch.py, restart ``server`` empty after its first result: stderr, seconds to exit."""
    args = [
        '--exchange', f'redis://127.0.0.1:{server.port}', '--executor', 'process',
        '--simulate-nodes', '1', '--partitions', '1', '--workers-per-node', '1',
        '--iterations', str(iterations), '--duration', '1.5', '--run-dir', str(run_dir),
    ]  # fmt: skip
    client = start_launch(*args)
    try:
        journal = journal_path(run_dir, 'director-0')
        deadline = time.time() + 150
        while not list(read_journal(journal)):
            assert time.time() < deadline, 'no result was journaled in time'
            assert client.poll() is None, client.communicate()[1][-2000:]
            time.sleep(0.1)
        # The rest are computed while the exchange has forgotten everyone.
        server.stop(kill=True)
        server.start()
        restarted = time.time()
        _, stderr = client.communicate(timeout=LOST_EXCHANGE_BOUND + 30)
        assert client.returncode == 1, stderr[-3000:]
        return stderr, time.time() - restarted
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def test_redis_restart_without_persistence_fails_with_the_resume_hint(tmp_path: pathlib.Path):
    server = _volatile_redis(tmp_path)
    server.start()
    run_dir, iterations = tmp_path / 'run', 3
    try:
        stderr, ended = _restart_mid_run(server, run_dir, iterations)
        assert ended < LOST_EXCHANGE_BOUND, (ended, stderr[-3000:])
        failure = [line for line in stderr.splitlines() if line.startswith('launch.py: failed:')]
        assert failure, stderr[-3000:]
        assert 'ExchangeStateLostError' in failure[0]
        assert 'restarted without persistence' in failure[0]
        assert f'finished calls are in {run_dir}/journal' in failure[0]
        assert failure[0].endswith(f'finish with: launch.py --resume {run_dir}')
        assert 'Traceback' not in stderr, stderr[-3000:]
        assert not parsl_processes_of(run_dir)  # the Directors stopped by themselves
        expected = ['director-0/md_sim/0'] + [
            f'director-0/md_sim_batch/{i}' for i in range(iterations)
        ]
        journal = journal_path(run_dir, 'director-0')
        journaled = {r['call_key']: r for r in read_journal(journal)}
        assert sorted(journaled) == sorted(expected)
        assert all(r['ok'] for r in journaled.values()), journaled

        results, resumed = resume_json(run_dir)  # on the restarted, empty server
        assert 'started 1 new Director' in resumed
        assert [r['call_key'] for r in results] == expected
        # Answered from the journal, not run again.
        assert [r['call_id'] for r in results] == [journaled[k]['call_id'] for k in expected]
        assert len(list(read_journal(journal))) == len(expected)
    finally:
        server.stop()


def test_academy_meeting_a_lost_mailbox_is_one_line_each(capsys: pytest.CaptureFixture[str]):
    """The Director's listener, its restart and the Manager meet the loss before the watch does."""
    import logging

    from academy.exception import BadEntityIdError
    from academy.identifier import AgentId
    from academy.logging.helpers import execute_and_log_traceback

    from actors.director.startup import quiet_start_failures

    quiet_start_failures()
    handler = logging.StreamHandler()
    logging.getLogger('academy').addHandler(handler)
    try:

        async def listener_meets_the_loss():
            # What Academy's Redis transport raises when its listener's mailbox vanished.
            lost = asyncio.get_running_loop().create_future()
            lost.set_exception(
                AssertionError(
                    'Status for mailbox AgentId<director-0> did not exist in Redis server. '
                    'This means that something incorrectly deleted the key.'
                )
            )
            with pytest.raises(AssertionError):
                await execute_and_log_traceback(lost)

        asyncio.run(listener_meets_the_loss())
        try:
            try:
                raise BadEntityIdError(AgentId.new())
            except BadEntityIdError as e:
                raise RuntimeError('the restarted agent could not start') from e
        except RuntimeError:
            logging.getLogger('academy.manager').exception('Restarting director-0 due to exception')
        try:
            raise ValueError('something else')
        except ValueError:
            logging.getLogger('academy.manager').exception('an unrelated failure')
    finally:
        logging.getLogger('academy').removeHandler(handler)
    stderr = capsys.readouterr().err
    lines = stderr.splitlines()
    assert lines[0].startswith('Background task raised an exception. (Status for mailbox')
    assert lines[1].startswith('Restarting director-0 due to exception (Unknown identifier')
    assert lines[2] == 'an unrelated failure'  # other failures keep their traceback
    assert stderr.count('Traceback') == 1 and 'ValueError: something else' in stderr


def test_a_client_listener_ended_by_the_loss_says_the_exchange_lost_its_state():
    """Academy's Redis listener can meet the lost mailbox before the client's watch asks."""
    import types

    from actors.calling.watches import _Watch

    async def listener_ended() -> str | None:
        async def listen() -> None:
            raise AssertionError(
                'Status for mailbox UserId<client> did not exist in Redis server. '
                'This means that something incorrectly deleted the key.'
            )

        listener = asyncio.create_task(listen())
        await asyncio.wait({listener})
        # What the watch reads of Academy's user client.
        return _Watch._listener_problem(types.SimpleNamespace(_listener_task=listener))

    problem = asyncio.run(listener_ended())
    assert problem is not None
    assert 'the exchange no longer knows the mailbox of this client' in problem
    assert 'restarted without persistence' in problem
