"""Calls straight to a real HTEX executor of a private DFK (``actors.execution.executor_app``)."""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from parsl.dataflow.dflow import DataFlowKernel
from parsl.executors.high_throughput.errors import WorkerLost

from actors.common.errors import ConfigurationError
from actors.common.timing import SEND_TIMEOUT
from actors.director.context import DirectorContext
from actors.director.options import DirectorOptions
from actors.director.outcomes import Outcomes
from actors.execution.blocks import release_parsl
from actors.execution.executor_app import ExecutorApp
from actors.execution.executor_app import TaskNotSent
from actors.execution.executor_app import check_retries
from actors.execution.interchange import InterchangeLost
from actors.execution.interchange import fail_executor
from actors.execution.interchange import interchange_loss
from actors.site.parsl_config import build_config
from actors.site.profile import load_site
from actors.worker.control import CancelFiles
from tests.conftest import REPO
from tests.helpers import make_partitions

pytestmark = pytest.mark.timeout(120)


def add(a: int, b: int) -> int:
    return a + b


def apply(func: Any, value: Any) -> Any:
    return func(value)


def fail(message: str) -> None:
    raise ValueError(message)


def exit_until(marker: str, exits: int, control: object = None) -> int:
    """Kill this worker (as a crashing tool would) on the first ``exits`` runs.

    ``control`` stands where the Director's worker functions take theirs.
    """
    path = pathlib.Path(marker)
    runs = len(path.read_text()) if path.exists() else 0
    path.write_text('x' * (runs + 1))
    if runs < exits:
        os._exit(1)
    return os.getpid()


@pytest.fixture
def dfk(run_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DataFlowKernel]:
    """A private DFK per test (the leak check ends every test with none running).

    Its workers import this module for the functions above (Parsl sends
    functions by reference), so the repository goes on their ``PYTHONPATH``.
    """
    current = os.environ.get('PYTHONPATH')
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(REPO), current])))
    (partition,) = make_partitions(run_dir, nodes=1, partitions=1)
    kernel = DataFlowKernel(
        build_config(partition, load_site('local'), run_dir / 'parsl', workers_per_node=2)
    )
    try:
        yield kernel
    finally:
        # A DFK whose interchange died cannot clean up by itself (actors.execution.blocks).
        release_parsl(None, list(kernel.executors.values()), kernel.cleanup)


def _app(dfk: DataFlowKernel, func: Any, **options: Any) -> ExecutorApp:
    (label,) = [label for label in dfk.executors if label != '_parsl_internal']
    return ExecutorApp(dfk.executors[label], dfk.submitter_lock, func, **options)


def test_calls_return_what_the_function_returned(dfk: DataFlowKernel):
    app = _app(dfk, add)
    calls = [app(i, b=1) for i in range(50)]
    assert [call.result(timeout=60) for call in calls] == [i + 1 for i in range(50)]
    assert all(call.attempts == 1 for call in calls)
    # Arguments go pickled (actors.worker.wire); those pickle cannot carry, with dill.
    assert _app(dfk, apply)(lambda x: x * 2, 21).result(timeout=60) == 42
    # Submitted calls are running: like a Parsl task, they cannot be cancelled.
    assert not calls[0].cancel()
    # A tool's own error is the call's error, and never retried.
    failed = _app(dfk, fail, retries=3)('bad input')
    with pytest.raises(ValueError, match='bad input'):
        failed.result(timeout=60)
    assert failed.attempts == 1
    # So is a submit the executor refuses: the caller is not interrupted.
    refused = _app(dfk, add)(1, 2, parsl_resource_specification={'no_such_key': 1})
    error = refused.exception(timeout=5)
    assert error is not None and 'no_such_key' in str(error)
    assert refused.attempts == 1


def test_a_lost_worker_is_retried_until_the_retries_run_out(
    dfk: DataFlowKernel,
    tmp_path: pathlib.Path,
):
    recovered = _app(dfk, exit_until, retries=2)(str(tmp_path / 'a'), 2)
    assert isinstance(recovered.result(timeout=90), int)
    assert recovered.attempts == 3
    given_up = _app(dfk, exit_until, retries=1)(str(tmp_path / 'b'), 5)
    with pytest.raises(WorkerLost):
        given_up.result(timeout=90)
    assert given_up.attempts == 2


def test_the_director_does_not_retry_a_call_it_stopped(
    dfk: DataFlowKernel,
    tmp_path: pathlib.Path,
):
    """A worker killed to stop its call (actors.worker.interrupt) is not a lost worker."""
    (partition,) = make_partitions(tmp_path, nodes=1, partitions=1)
    options = DirectorOptions(retries=3)
    context = DirectorContext(
        partition, load_site('local'), str(tmp_path / 'director'), options, 't'
    )
    cancels = CancelFiles(context.control_dir)
    try:
        app = _app(
            dfk,
            exit_until,
            retries=context.retries,
            stopped_on_purpose=Outcomes(context, cancels).stopped_on_purpose,
        )
        stopped, lost = cancels.control('stopped', None), cancels.control('lost', None)
        assert cancels.cancel('stopped', 'cancelled by the caller') == 1
        stopped_call = app(str(tmp_path / 'stopped'), 1, stopped)
        lost_call = app(str(tmp_path / 'lost'), 1, lost)
        assert isinstance(stopped_call.exception(timeout=90), WorkerLost)
        assert stopped_call.attempts == 1
        assert isinstance(lost_call.result(timeout=90), int)
        assert lost_call.attempts == 2
    finally:
        cancels.close()


def test_a_dead_interchange_fails_calls_instead_of_blocking(dfk: DataFlowKernel):
    app = _app(dfk, add)
    assert app(1, 1).result(timeout=60) == 2
    interchange = app.executor.interchange_proc
    interchange.kill()
    interchange.wait(timeout=10)
    # Let ZeroMQ see the connection close: a task sent before it does is queued for
    # the dead peer, not refused (seen once on a loaded CI machine).
    time.sleep(1.0)
    # Nothing has told Parsl yet: the send finds no interchange and gives up.
    started = time.monotonic()
    unsent = app(1, 2)
    assert time.monotonic() - started < SEND_TIMEOUT + 5
    assert isinstance(unsent.exception(timeout=5), TaskNotSent)
    # Once the loss is known, a call fails at once with it (the Director reruns those).
    fail_executor(app.executor, InterchangeLost('killed by the test'))
    refused = app(1, 3)
    assert interchange_loss(refused.exception(timeout=5)) is not None
    assert refused.attempts == 1


@pytest.mark.parametrize('bad', [-1, '2', True, 1.5])
def test_bad_retry_counts_are_named(bad: Any):
    with pytest.raises(ConfigurationError, match=rf'retries must be an integer >= 0, got {bad!r}'):
        check_retries(bad)
