"""Outcomes travel pickled from worker to Director, with a way back for the odd ones."""

from __future__ import annotations

import pathlib
import sys
import time
from concurrent.futures import Future

import pytest
from parsl.serialize import deserialize
from parsl.serialize import serialize

from actors.director import Director
from actors.partition import simulated_nodes
from actors.partition import split_nodes
from actors.sites import load_site
from actors.tools import run_tool
from actors.wire import UNREADABLE
from actors.wire import pack_outcome
from actors.wire import read_outcome

pytestmark = pytest.mark.timeout(30)


def _through_parsl(value: object) -> object:
    """What the Director gets back when a worker function returns ``value``."""
    return deserialize(serialize(value))


def test_an_outcome_goes_through_parsl_as_pickle_bytes():
    outcome = run_tool('mock_md', {'seed': 3})
    packed = pack_outcome(outcome)
    assert isinstance(packed, bytes)
    assert read_outcome(_through_parsl(packed)) == outcome


def test_an_outcome_pickle_cannot_carry_goes_as_the_mapping_for_dill():
    outcome = run_tool('mock_md', {})
    outcome['value'] = lambda x: x + 1  # pickle refuses lambdas; Parsl's dill does not
    packed = pack_outcome(outcome)
    assert packed is outcome
    received = read_outcome(_through_parsl(packed))
    assert received['value'](1) == 2
    assert received['node'] == outcome['node']


@pytest.fixture
def worker_only_class(tmp_path: pathlib.Path):
    """Pickled instance of a class whose module the Director cannot import."""
    module = tmp_path / 'only_on_workers.py'
    module.write_text('class Trajectory:\n    frames = 3\n')
    sys.path.insert(0, str(tmp_path))
    try:
        import only_on_workers  # type: ignore[import-not-found]

        outcome = run_tool('mock_md', {})
        outcome['value'] = only_on_workers.Trajectory()
        packed = pack_outcome(outcome)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop('only_on_workers', None)
    return packed


def test_an_outcome_the_director_cannot_unpickle_is_a_failed_outcome(worker_only_class: bytes):
    before = time.time()
    outcome = read_outcome(worker_only_class)
    assert outcome['ok'] is False and outcome['status'] == 'failed'
    assert outcome['error_type'] == UNREADABLE
    assert "No module named 'only_on_workers'" in outcome['error_message']
    assert 'importable' in outcome['error_message']
    assert outcome['node'] is None and outcome['start'] >= before


def test_the_director_answers_an_unreadable_outcome_with_a_failed_result(
    tmp_path: pathlib.Path,
    worker_only_class: bytes,
):
    (partition,) = split_nodes(simulated_nodes(1), count=1)
    director = Director(partition, load_site('local'), str(tmp_path))
    finished: Future[bytes] = Future()
    finished.set_result(worker_only_class)
    result = director._result('md_sim', {}, finished, time.time())
    assert not result.ok and result.status == 'failed'
    assert result.error_type == UNREADABLE
    assert 'only_on_workers' in (result.error_message or '')
    readable: Future[bytes] = Future()
    readable.set_result(pack_outcome(run_tool('mock_md', {'seed': 1})))
    assert director._result('md_sim', {'seed': 1}, readable, time.time()).ok
