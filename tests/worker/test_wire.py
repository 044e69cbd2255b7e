"""Outcomes travel as bytes from worker to Director, whatever the tool returned."""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import pickle
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from parsl.serialize import deserialize
from parsl.serialize import serialize
from parsl.serialize.facade import unpack_apply_message
from parsl.serialize.facade import unpack_buffers

from actors.director.context import DirectorContext
from actors.director.options import DirectorOptions
from actors.director.outcomes import Outcomes
from actors.job.partition import simulated_nodes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions
from actors.site.profile import load_site
from actors.worker.control import CancelFiles
from actors.worker.run import run_tool
from actors.worker.supervise import run_supervised
from actors.worker.wire import UNREADABLE
from actors.worker.wire import UNSERIALIZABLE
from actors.worker.wire import pack_call
from actors.worker.wire import pack_outcome
from actors.worker.wire import read_outcome

pytestmark = pytest.mark.timeout(30)


def _through_parsl(value: object) -> object:
    """What the Director gets back when a worker function returns ``value``."""
    return deserialize(serialize(value))


def test_a_call_goes_to_its_worker_with_pickled_arguments():
    args = ('mock_md', {'seed': 3, 'steps': [1, 2]}, (7, None))
    packed = pack_call(run_tool, args, {'flag': True})
    func, args_header, kwargs_header = (b.split(b'\n', 1)[0] for b in unpack_buffers(packed))
    # The function as Parsl sends it; the arguments under the plugin's header.
    assert func == serialize(run_tool).split(b'\n', 1)[0]
    assert args_header == kwargs_header == b'actors.worker.wire PickleSerializer'
    # What a worker's Parsl reads back (its default task runner unpacks this way).
    assert unpack_apply_message(packed) == [run_tool, args, {'flag': True}]


def test_arguments_pickle_cannot_carry_go_with_parsls_dill():
    packed = pack_call(run_tool, (lambda x: x * 2,), {})
    func, args, kwargs = unpack_apply_message(packed)
    assert func is run_tool and args[0](21) == 42 and kwargs == {}
    assert unpack_buffers(packed)[1].split(b'\n', 1)[0] == serialize(1).split(b'\n', 1)[0]


def test_arguments_of_the_running_scripts_classes_go_with_dill(monkeypatch: pytest.MonkeyPatch):
    # A class defined in the script that submits: a worker cannot import it by name.
    point = type('Point', (), {'__module__': '__main__'})
    monkeypatch.setattr(sys.modules['__main__'], 'Point', point, raising=False)
    assert b'__main__' in pickle.dumps(point())  # pickle takes it, by reference
    packed = pack_call(run_tool, (point(),), {})
    assert unpack_buffers(packed)[1].split(b'\n', 1)[0] == serialize(1).split(b'\n', 1)[0]


def test_an_outcome_goes_through_parsl_as_pickle_bytes():
    outcome = run_tool('mock_md', {'seed': 3})
    packed = pack_outcome(outcome)
    assert isinstance(packed, bytes)
    assert read_outcome(_through_parsl(packed)) == outcome


def test_a_supervised_call_returns_its_outcome_packed():
    packed = run_supervised('mock_md', {'seed': 2}, (0, None))
    assert isinstance(packed, bytes)
    outcome = read_outcome(packed)
    assert outcome['ok'] and outcome['status'] == 'ok'
    assert outcome['value'] == run_tool('mock_md', {'seed': 2})['value']


def test_an_outcome_pickle_cannot_carry_goes_as_dill_bytes():
    outcome = run_tool('mock_md', {})
    outcome['value'] = lambda x: x + 1  # pickle refuses lambdas; dill does not
    packed = pack_outcome(outcome)
    assert isinstance(packed, bytes)
    received = read_outcome(_through_parsl(packed))
    assert received['value'](1) == 2
    assert received['node'] == outcome['node'] and received['ok']


def test_an_outcome_nothing_can_carry_is_a_failed_outcome_saying_so():
    outcome = run_tool('mock_md', {})
    outcome['value'] = (step for step in range(3))  # neither pickle nor dill dumps generators
    received = read_outcome(_through_parsl(pack_outcome(outcome)))
    assert received['ok'] is False and received['status'] == 'failed'
    assert received['error_type'] == UNSERIALIZABLE
    assert 'generator' in received['error_message']
    assert received['node'] == outcome['node'] and received['start'] == outcome['start']


@pytest.fixture
def worker_only_module(tmp_path: pathlib.Path) -> Iterator[tuple[Any, Callable[[], None]]]:
    """A module the workers could import, and a way to make the Director unable to."""
    (tmp_path / 'only_on_workers.py').write_text(
        'class Trajectory:\n    frames = 3\n\n\nscale = lambda x: 2 * x\n',
    )
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()

    def forget() -> None:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(tmp_path))
        sys.modules.pop('only_on_workers', None)

    try:
        yield importlib.import_module('only_on_workers'), forget
    finally:
        forget()


def _packed_with_value(module: Any, name: str) -> bytes:
    outcome = run_tool('mock_md', {})
    value = getattr(module, name)
    outcome['value'] = value() if isinstance(value, type) else value
    return pack_outcome(outcome)


@pytest.mark.parametrize('name', ['Trajectory', 'scale'])
def test_an_outcome_the_director_cannot_load_is_a_lost_outcome(
    worker_only_module: tuple[Any, Callable[[], None]],
    name: str,
):
    module, forget = worker_only_module
    # An instance goes with pickle, the module's lambda with dill: both by reference.
    packed = _packed_with_value(module, name)
    forget()
    before = time.time()
    outcome = read_outcome(_through_parsl(packed))
    assert outcome['ok'] is False and outcome['status'] == 'lost'
    assert outcome['error_type'] == UNREADABLE
    assert "No module named 'only_on_workers'" in outcome['error_message']
    assert 'importable' in outcome['error_message']
    assert outcome['node'] is None and outcome['start'] is None and outcome['end'] >= before


def test_the_director_answers_an_unreadable_outcome_with_a_lost_result(
    tmp_path: pathlib.Path,
    worker_only_module: tuple[Any, Callable[[], None]],
):
    module, forget = worker_only_module
    packed = _packed_with_value(module, 'Trajectory')
    forget()
    (partition,) = write_partitions(split_nodes(simulated_nodes(1), count=1), tmp_path)
    context = DirectorContext(partition, load_site('local'), str(tmp_path), DirectorOptions(), 't')
    outcomes = Outcomes(context, CancelFiles(context.control_dir))
    finished: Future[bytes] = Future()
    finished.set_result(packed)
    submitted = time.time()
    result = outcomes.result('md_sim', {}, finished, submitted)
    assert not result.ok and result.status == 'lost'
    assert result.error_type == UNREADABLE and 'only_on_workers' in (result.error_message or '')
    assert result.start == submitted and result.end >= submitted
    readable: Future[bytes] = Future()
    readable.set_result(pack_outcome(run_tool('mock_md', {'seed': 1})))
    assert outcomes.result('md_sim', {'seed': 1}, readable, submitted).ok
