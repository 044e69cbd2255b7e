"""The node state machine (``actors.job.ownership``): its rule, the move protocol, its one home.

Milliseconds, no Parsl: the machine's transitions, the coordinator's move
protocol as changes of one job-wide view, and a check that no module but
``actors/job/ownership.py`` assigns a node's owner or state.
"""

from __future__ import annotations

import ast
import logging
import pathlib

import pytest

from actors.cli.node_owners import FENCING
from actors.cli.node_owners import LOST
from actors.cli.node_owners import MOVING
from actors.cli.node_owners import OWNED
from actors.cli.node_owners import ownership_intervals
from actors.director.node_pools import NodePools
from actors.job.ownership import ALLOWED
from actors.job.ownership import FREE
from actors.job.ownership import PHASES
from actors.job.ownership import Change
from actors.job.ownership import NodeOwnership
from actors.job.ownership import Owner
from actors.job.ownership import OwnershipError
from actors.store.moves import MoveJournal
from actors.store.moves import read_moves
from tests.conftest import REPO

ROOT = REPO / 'actors'
MACHINE = ROOT / 'job' / 'ownership.py'


def _director(*nodes: str) -> NodeOwnership:
    view = NodeOwnership.of('d0', nodes, keep_history=True)
    for node in nodes:
        view.become(node, phase='launching', why='block')
        view.set_block(node, f'b-{node}')
        view.become(node, phase='starting', why='block started')
    return view


def test_a_pool_serves_only_after_its_block_started():
    view = NodeOwnership({'a': Owner('pool', 'd0', phase='launching')})
    with pytest.raises(OwnershipError, match='pool launching of d0 cannot become pool serving'):
        view.become('a', phase='serving', why='connected')
    view.become('a', phase='starting', why='block started')
    view.become('a', phase='serving', why='connected')
    assert view.owner('a').busy is False
    assert view.nodes('pool', phases=['serving']) == ['a']


def test_an_mpi_call_takes_only_a_drained_node_and_gives_it_back_as_held():
    view = _director('a', 'b')
    with pytest.raises(OwnershipError, match='cannot become mpi'):
        view.become('a', 'mpi', why='mpi', call='c')  # its pool still runs
    with pytest.raises(OwnershipError, match='cannot become held'):
        view.become('a', 'held', why='drained')  # not drained first
    view.become('a', phase='draining', why='drain for MPI')
    assert view.owner('a').busy
    view.become('a', 'held', why='drained for MPI')
    view.become('a', 'mpi', why='mpi', call='c')
    view.become('a', 'held', why='mpi ended')
    view.become('a', 'pool', 'launching', why='pool back')
    assert [c.event for c in view.history or [] if c.node == 'a'][-5:] == [
        'draining',
        'held',
        'mpi',
        'held',
        'pool',
    ]


def test_a_held_node_reserved_for_a_call_is_busy_until_the_call_starts():
    view = NodeOwnership({'a': Owner('held', 'd0')})
    view.become('a', phase='reserved', why='chosen for c')
    assert view.owner('a').busy
    with pytest.raises(OwnershipError, match='cannot become held leaving'):
        view.become('a', phase='leaving', why='release')  # another step has it
    view.become('a', 'mpi', why='mpi', call='c')


def test_a_node_leaves_a_director_only_drained_and_arrives_only_as_arriving():
    view = _director('a')
    with pytest.raises(OwnershipError, match='only a pool or held node moves'):
        view.remove('a', 'moved out')  # its pool still serves
    view.become('a', phase='leaving', why='release')
    assert view.remove('a', 'moved out').phase == 'leaving'
    with pytest.raises(OwnershipError, match='cannot arrive as pool serving'):
        view.add('a', Owner('pool', 'd0', phase='serving'), 'moved in')
    view.add('a', Owner('pool', 'd0', phase='arriving', lender='d1'), 'borrowed')
    view.set_block('a', 'b7')
    view.become('a', phase='serving', why='connected')
    assert view.lenders() == {'a': 'd1'}
    assert view.blocks() == {'a': 'b7'}


def test_block_and_host_are_data_of_the_node_not_changes():
    view = _director('a')
    count = len(view.history or [])
    view.set_host('a', 'elsewhere')
    view.set_block('a', None)
    assert (view.host('a'), view.block('a')) == ('elsewhere', None)
    assert len(view.history or []) == count


def test_every_role_and_phase_in_the_tables_is_known():
    assert set(ALLOWED) == {'pool', 'mpi', 'held', 'moving', 'fencing', 'free'}
    for role, steps in PHASES.items():
        assert role in ALLOWED
        for after in steps.values():
            assert after <= set(steps)


# The move protocol, as the coordinator's job-wide view sees it.


def _job() -> tuple[NodeOwnership, list[Change]]:
    records: list[Change] = []
    job = NodeOwnership(listener=records.append)
    for node, director in (('a', 'd0'), ('b', 'd0'), ('c', 'd1')):
        job.add(node, Owner('pool', director), 'first layout')
    return job, records


def test_a_move_is_released_then_adopted_one_record_each():
    job, records = _job()
    job.change('a', Owner('moving', 'd0', to='d1'), 'move')
    with pytest.raises(OwnershipError, match='cannot become pool of d2'):
        job.change('a', Owner('pool', 'd2'), 'steal')  # neither its giver nor receiver
    job.change('a', Owner('pool', 'd1'), 'move')
    assert [(r.node, r.event) for r in records] == [
        ('a', 'start'),
        ('b', 'start'),
        ('c', 'start'),
        ('a', 'moving'),
        ('a', 'moved'),
    ]
    assert job.nodes(director='d1') == ['a', 'c']


def test_a_move_whose_pool_will_not_start_goes_back_or_free():
    job, records = _job()
    job.change('a', Owner('moving', 'd0', to='d1'), 'move')
    job.change('a', Owner('pool', 'd0'), 'no pool started')
    job.change('b', Owner('moving', 'd0', to='d1'), 'move')
    job.change('b', FREE, 'no pool started')
    job.change('b', Owner('pool', 'd1', lender=None), 'free node')
    assert [r.event for r in records[3:]] == ['moving', 'back', 'moving', 'free', 'reclaimed']


def test_a_silent_directors_nodes_are_fenced_then_lost_or_kept():
    job, records = _job()
    job.change('a', Owner('fencing', 'd0'), 'no answer')
    job.change('b', Owner('fencing', 'd0'), 'no answer')
    with pytest.raises(OwnershipError, match='cannot become pool of d1'):
        job.change('a', Owner('pool', 'd1'), 'reclaimed')  # not before the fence is confirmed
    job.change('a', FREE, 'fenced')
    job.change('b', Owner('pool', 'd0'), 'answers again')
    assert [r.event for r in records[3:]] == ['fencing', 'fencing', 'lost', 'kept']
    assert job.nodes('fencing') == []


def test_a_borrowed_node_goes_home_through_moving():
    job, records = _job()
    job.change('a', Owner('moving', 'd0', to='d1'), 'borrow')
    job.change('a', Owner('pool', 'd1', lender='d0'), 'borrow')
    job.change('a', Owner('moving', 'd1', to='d0'), 'home')
    job.change('a', Owner('pool', 'd0'), 'home', event='home')
    assert [r.event for r in records[3:]] == ['moving', 'moved', 'moving', 'home']


def test_the_journal_is_the_changes_one_line_each_and_the_report_reads_it(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
):
    journal = MoveJournal(tmp_path)
    job = NodeOwnership(listener=journal.write)
    job.add('a', Owner('pool', 'd0'), 'first layout')
    job.add('b', Owner('pool', 'd1'), 'first layout')
    job.change('a', Owner('moving', 'd0', to='d1'), 'move')
    job.change('a', Owner('pool', 'd0'), 'no pool started')
    job.change('a', Owner('moving', 'd0', to='d1'), 'move')
    job.change('a', Owner('pool', 'd1', lender='d0'), 'borrow')
    job.change('b', Owner('fencing', 'd1'), 'no answer')
    job.change('b', FREE, 'fenced')
    job.change('b', Owner('pool', 'd0'), 'free node')
    journal.close()
    lines = read_moves(tmp_path)
    assert [(m['event'], m['from'], m['to']) for m in lines] == [
        ('start', None, 'd0'),
        ('start', None, 'd1'),
        ('moving', 'd0', 'd1'),
        ('back', 'd1', 'd0'),
        ('moving', 'd0', 'd1'),
        ('moved', 'd0', 'd1'),
        ('fencing', 'd1', None),
        ('lost', 'd1', None),
        ('reclaimed', None, 'd0'),
    ]
    with caplog.at_level(logging.WARNING):
        intervals = ownership_intervals(lines, end_time=lines[-1]['at'] + 1)
    assert not caplog.records  # the report knows every event the machine writes
    states = {(i.node, i.state) for i in intervals}
    assert {('a', OWNED), ('b', OWNED)} <= states
    assert states <= {('a', OWNED), ('a', MOVING), ('b', OWNED), ('b', FENCING), ('b', LOST)}


# Nothing else assigns node state.

MUTATORS = {'add', 'discard', 'remove', 'pop', 'update', 'append', 'clear', 'setdefault'}

NODE_STATE = {
    'actors/director/node_pools.py': {
        '_busy',
        '_leaving',
        '_connected',
        '_blocks',
        '_misplaced',
        'borrowed',
    },
    'actors/coordinator/agent.py': {
        'layout',
        'job_nodes',
        'moving',
        'free',
        'loans',
        '_arrived',
        '_retry_at',
        '_refused',
    },
    'actors/coordinator/fencing.py': {'nodes'},
}
"""Node state these modules kept beside the machine, and must not again."""


def _python_files() -> list[pathlib.Path]:
    return sorted(p for p in ROOT.rglob('*.py') if p != MACHINE)


def _assigned_attributes(tree: ast.AST) -> set[str]:
    """Attributes of ``self`` assigned, or mutated by a call or a subscript, in ``tree``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in MUTATORS:
                targets = [node.func.value]
        for target in targets:
            inner = target
            while isinstance(inner, ast.Subscript):
                inner = inner.value
            if isinstance(inner, ast.Attribute):
                names.add(inner.attr)
    return names


def test_only_the_machine_touches_its_records():
    for path in _python_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == '_nodes':
                pytest.fail(f'{path}: reads or writes the machine records (._nodes)')
            if isinstance(node, ast.Name) and node.id == '_Node':
                pytest.fail(f'{path}: makes a machine record (_Node)')
        assert 'owner' not in _assigned_attributes(tree), f'{path} assigns an owner'


def test_no_module_keeps_node_state_beside_the_machine():
    for relative, names in NODE_STATE.items():
        tree = ast.parse((ROOT.parent / relative).read_text())
        kept = _assigned_attributes(tree) & names
        assert not kept, f'{relative} keeps node state beside the machine: {sorted(kept)}'


def test_a_directors_report_says_what_each_node_does():
    view = _director('a', 'b', 'c')
    view.become('a', phase='serving', why='pool connected')
    view.become('b', phase='draining', why='drain for MPI')
    view.become('b', 'held', why='drained for MPI')
    view.become('b', 'mpi', why='mpi', call='c1')
    pools = NodePools('d0', view, executor=lambda: None)
    report = pools.report()
    assert report.node_roles == {'a': 'pool', 'b': 'mpi', 'c': 'pool'}
    assert report.node_states == {'a': 'serving', 'b': 'mpi', 'c': 'starting'}
    assert report.pool_nodes == 2 and report.idle == ['a']
