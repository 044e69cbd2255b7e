"""Unit tests of the Director's parts, each on its own (no Parsl, no agent)."""

from __future__ import annotations

import asyncio
import math
import pathlib
import time
from concurrent.futures import Future
from typing import Any

import pytest

from actors.common.errors import ConfigurationError
from actors.common.limits import check_key
from actors.common.limits import check_timeout
from actors.common.names import director_name
from actors.common.results import CallResult
from actors.director.batch import Batch
from actors.director.checks import CallChecks
from actors.director.checks import batch_keys
from actors.director.checks import expand_batch
from actors.director.checks import expected_seconds
from actors.director.context import DirectorContext
from actors.director.drain import WalltimeDrain
from actors.director.ledger import Ledger
from actors.director.options import DirectorOptions
from actors.director.outcomes import Outcomes
from actors.job.partition import simulated_nodes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions
from actors.job.walltime import Walltime
from actors.site.profile import load_site
from actors.worker.control import CancelFiles
from actors.worker.run import run_tool
from actors.worker.wire import pack_outcome

pytestmark = pytest.mark.timeout(30)


def _result(key: str | None, status: str = 'ok', **fields: object) -> CallResult:
    now = time.time()
    return CallResult(
        call_id='director-0-0',
        director='director-0',
        partition=0,
        action='md_sim',
        tool='mock_md',
        params={},
        ok=status == 'ok',
        start=now,
        end=now,
        call_key=key,
        status=status,
        **fields,
    )


# Options.


def test_options_are_checked_and_round_trip_through_the_manifest_record():
    options = DirectorOptions(workers_per_node=3, retries=1, walltime=Walltime(123.0, 5.0))
    record = options.to_record()
    assert record['walltime'] == {'end': 123.0, 'margin': 5.0}
    assert DirectorOptions.from_record(record) == options
    assert DirectorOptions.from_record({'retries': 4, 'unknown': 1}).retries == 4
    assert director_name(3) == 'director-3'


@pytest.mark.parametrize(
    ('changes', 'message'),
    [
        ({'retries': -1}, 'retries must be an integer >= 0'),
        ({'workers_per_node': 0}, 'workers_per_node must be an integer from 1 to 1024'),
        ({'tool': 'nope'}, "unknown tool 'nope'"),
        ({'drain_timeout': math.inf}, 'drain_timeout must be seconds >= 0'),
        ({'journal_sync': 'sometimes'}, "journal sync mode 'sometimes'"),
    ],
)
def test_bad_options_are_named(changes, message):
    with pytest.raises(ConfigurationError, match=message):
        DirectorOptions().replace(**changes)


def test_a_bad_recorded_option_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match='retries'):
        DirectorOptions.from_record({'retries': 'two'})
    with pytest.raises(ConfigurationError, match='must be a mapping'):
        DirectorOptions.from_record(['retries'])  # type: ignore[arg-type]


# Request checks.


def test_checks_route_calls_that_name_a_tool_or_resources():
    checks = CallChecks('director-0', 'mock_md', nodes=2)
    assert not checks.routed([{'duration': 1}])
    assert checks.routed([{'tool': 'ase_md'}])
    assert checks.routed([{'duration': 1}, {'num_nodes': 1}])
    prepared = checks.prepare_call({'tool': 'mpi_probe', 'num_nodes': 2})
    assert prepared.tool.name == 'mpi_probe' and prepared.resources is not None
    assert prepared.resources.num_nodes == 2


def test_checks_refuse_what_cannot_run_here():
    checks = CallChecks('director-0', 'mock_md', nodes=2, mpi=False)
    with pytest.raises(ConfigurationError, match='mpi=False'):
        checks.prepare('mpi_probe', {})
    with pytest.raises(ConfigurationError, match='apply only to MPI tools'):
        checks.prepare('mock_md', {'num_nodes': 1})
    with pytest.raises(ConfigurationError, match='must be a mapping'):
        checks.prepare('mock_md', [1])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match='cannot be sent to a worker'):
        checks.fast_calls([{'seed': (lambda: 1)}])
    with pytest.raises(ConfigurationError, match="bad parameters for tool 'mock_md'"):
        checks.fast_calls([{'colour': 'red'}])


def test_batch_arguments_and_keys():
    shared = {'duration': 0}
    calls = expand_batch(3, shared)
    assert len(calls) == 3 and calls[0] is calls[2]
    assert batch_keys(2, None, 'b') == ['b/0', 'b/1']
    assert batch_keys(2, None, None) == [None, None]
    with pytest.raises(ConfigurationError, match='unique'):
        batch_keys(2, ['a', 'a'], None)
    with pytest.raises(ConfigurationError, match='does not match'):
        expand_batch(2, [{}])
    with pytest.raises(ConfigurationError, match='timeout must be'):
        check_timeout(math.nan)
    with pytest.raises(ConfigurationError, match='call key'):
        check_key('')
    assert expected_seconds({'duration': 2}, None) == 2.0
    assert expected_seconds({'duration': 2}, 5) == 5


# Ledger and batch.


def test_the_ledger_replays_final_keys_and_counts(tmp_path: pathlib.Path):
    ledger = Ledger('director-0', 'off')
    ledger.open(str(tmp_path))
    try:
        answered: Future[CallResult] = Future()
        ledger.answer(_result('k'), answered)
        assert answered.result(timeout=5).call_key == 'k'
        lost: Future[CallResult] = Future()
        ledger.answer(_result('gone', status='lost'), lost)
        lost.result(timeout=5)
        assert ledger.replayed('k') is not None
        assert ledger.replayed('gone') is None  # lost calls run again
        running: Future[CallResult] = Future()
        ledger.claim('twin', running)
        assert ledger.running('twin') is running
        running.set_result(_result('twin'))
        assert ledger.running('twin') is None
        call: Future[object] = Future()
        ledger.track(call)
        assert ledger.counts() == (1, 0, 0)
        ledger.settled(call, ok=False)
        assert ledger.counts() == (0, 0, 1)
    finally:
        ledger.close()
    reopened = Ledger('director-0', 'off')
    reopened.open(str(tmp_path))
    try:
        assert reopened.replayed('k') is not None
    finally:
        reopened.close()


def test_a_batch_is_answered_once_all_results_are_journaled(tmp_path: pathlib.Path):
    ledger = Ledger('director-0', 'off')
    ledger.open(str(tmp_path))

    async def main() -> list[CallResult]:
        batch = Batch(ledger, 'md_sim_batch', [{}, {}], ['a', None], asyncio.get_running_loop())
        batch.add()
        batch.add()
        shared: Future[CallResult] = Future()
        batch.journal(1, _result(None), None)
        assert not batch.done.done()
        batch.journal(0, _result('a'), shared)
        batch.submitted()
        results = await asyncio.wait_for(batch.done, 5)
        assert shared.result(timeout=1).call_key == 'a'
        return results

    try:
        results = asyncio.run(main())
    finally:
        ledger.close()
    assert [r.call_key for r in results] == ['a', None]
    assert ledger.replayed('a') is not None


# Outcomes and drain.


def _context(tmp_path: pathlib.Path, **changes: Any) -> DirectorContext:
    (partition,) = write_partitions(split_nodes(simulated_nodes(1), count=1), tmp_path)
    options = DirectorOptions(tool='mock_md', **changes)
    return DirectorContext(partition, load_site('local'), str(tmp_path), options, 'test')


def test_outcomes_name_a_loss_and_a_stop(tmp_path: pathlib.Path):
    cancels = CancelFiles(tmp_path / 'control')
    outcomes = Outcomes(_context(tmp_path, retries=2), cancels)
    finished: Future[bytes] = Future()
    finished.set_result(pack_outcome(run_tool('mock_md', {'seed': 1})))
    ok = outcomes.result('md_sim', {'seed': 1}, finished, time.time(), 'k')
    assert ok.ok and ok.status == 'ok' and ok.call_id == 'director-0-0'
    failed: Future[bytes] = Future()
    failed.set_exception(RuntimeError('pool gone'))
    lost = outcomes.result('md_sim', {}, failed, time.time())
    assert lost.status == 'lost' and 'retried 2 time(s)' in (lost.error_message or '')
    refused = outcomes.refused('md_sim', {}, 'r', 'no time left')
    assert refused.status == 'refused' and refused.error_type == 'WalltimeExceeded'
    assert refused.call_id == 'director-0-2'
    cancels.close()


def test_the_drain_refuses_calls_that_do_not_fit_and_stops_at_the_margin(
    tmp_path: pathlib.Path,
):
    cancels = CancelFiles(tmp_path / 'control')
    context = _context(tmp_path, walltime=Walltime(time.time() + 1.3, 1.0))
    drain = WalltimeDrain(context, cancels, Ledger(context.name, 'off'))
    assert drain.refusal({'duration': 60}, None) is not None
    assert drain.refusal({'duration': 0}, None) is None
    control = cancels.control('k', None)
    asyncio.run(asyncio.wait_for(drain.run(), 5))
    assert drain.draining
    assert drain.refusal({}, None) == 'the Director is draining'
    assert cancels.stopped(control) is not None
    cancels.close()
