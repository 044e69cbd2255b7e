"""Node moves in ``launch.py report`` (ownership chart, per-node summary) and the progress bars."""

from __future__ import annotations

import io
import json
import pathlib
import struct
from typing import Any

import pytest
from rich.console import Console

from actors.cli.commands import report as report_command
from actors.cli.node_owners import FREE
from actors.cli.node_owners import LOST
from actors.cli.node_owners import MOVING
from actors.cli.node_owners import OWNED
from actors.cli.node_owners import Ownership
from actors.cli.node_owners import node_lines
from actors.cli.node_owners import node_owners
from actors.cli.node_owners import ownership_intervals
from actors.cli.progress import DirectorBars
from actors.cli.progress import describe
from actors.cli.progress import make_progress
from actors.cli.report import render_report
from actors.common.results import DirectorStatus


def move(at: float, node: str, event: str, giver: str | None, receiver: str | None) -> dict:
    return {'at': at, 'node': node, 'from': giver, 'to': receiver, 'event': event, 'why': ''}


@pytest.mark.timeout(10)
def test_a_start_owns_the_node_until_the_end():
    intervals = ownership_intervals([move(10, 'n1', 'start', None, 'd0')], end_time=30)
    assert intervals == [Ownership('n1', 'd0', OWNED, 10, 30)]
    # No journal, no intervals.
    assert ownership_intervals([], end_time=30) == []


@pytest.mark.timeout(10)
def test_a_move_leaves_the_node_to_nobody_until_it_arrives():
    moves = [
        move(10, 'n1', 'start', None, 'd0'),
        move(10, 'n2', 'start', None, 'd1'),
        move(15, 'n1', 'moving', 'd0', 'd1'),
        move(17, 'n1', 'moved', 'd0', 'd1'),
    ]
    assert ownership_intervals(moves, end_time=20) == [
        Ownership('n1', 'd0', OWNED, 10, 15),
        Ownership('n2', 'd1', OWNED, 10, 20),
        Ownership('n1', None, MOVING, 15, 17),
        Ownership('n1', 'd1', OWNED, 17, 20),
    ]


@pytest.mark.timeout(10)
def test_a_failed_move_goes_back_to_the_giver():
    moves = [
        move(0, 'n1', 'start', None, 'd0'),
        move(5, 'n1', 'moving', 'd0', 'd1'),
        # The receiver could not start a pool: `to` is the giver, who took it back.
        move(8, 'n1', 'back', 'd1', 'd0'),
    ]
    intervals = ownership_intervals(moves, end_time=10)
    assert intervals == [
        Ownership('n1', 'd0', OWNED, 0, 5),
        Ownership('n1', None, MOVING, 5, 8),
        Ownership('n1', 'd0', OWNED, 8, 10),
    ]
    summary = node_owners(intervals, moves)['n1']
    assert summary.owned == {'d0': 7}
    assert (summary.moving, summary.unowned, summary.moves, summary.back) == (3, 0, 0, 1)


@pytest.mark.timeout(10)
def test_a_lost_director_leaves_its_nodes_unowned_until_reclaimed():
    moves = [
        move(0, 'n1', 'start', None, 'd0'),
        move(0, 'n2', 'start', None, 'd1'),
        move(4, 'n1', 'lost', 'd0', None),
        move(6, 'n1', 'reclaimed', None, 'd1'),
        move(7, 'n2', 'lost', 'd1', None),
        # A second 'nobody' line with the same state extends the interval.
        move(8, 'n2', 'lost', 'd1', None),
    ]
    intervals = ownership_intervals(moves, end_time=9)
    assert intervals == [
        Ownership('n1', 'd0', OWNED, 0, 4),
        Ownership('n2', 'd1', OWNED, 0, 7),
        Ownership('n1', None, LOST, 4, 6),
        Ownership('n1', 'd1', OWNED, 6, 9),
        Ownership('n2', None, LOST, 7, 9),
    ]
    summary = node_owners(intervals, moves)
    assert summary['n1'].owned == {'d0': 4, 'd1': 3}
    assert summary['n1'].unowned == 2 and summary['n1'].lost == 1
    assert summary['n2'].owned == {'d1': 7} and summary['n2'].lost == 2
    lines = node_lines(summary)
    assert lines[0] == '  n1: d0 4.0s, d1 3.0s; 0 moves, 1 lost, 2.0s unowned'


@pytest.mark.timeout(10)
def test_free_nodes_odd_lines_and_late_events():
    moves = [
        move(0, 'n1', 'start', None, 'd0'),
        move(2, 'n1', 'free', 'd1', None),
        {'at': 3, 'node': 'n1', 'event': 'teleported'},
        move(4, 'n1', 'moved', 'd0', None),
        # After the last call: the chart runs to it.
        move(12, 'n1', 'reclaimed', None, 'd0'),
    ]
    assert ownership_intervals(moves, end_time=10) == [
        Ownership('n1', 'd0', OWNED, 0, 2),
        Ownership('n1', None, FREE, 2, 12),
    ]


def _elastic_run(root: pathlib.Path, *, moves: bool) -> pathlib.Path:
    """A finished run's results.jsonl; with ``moves``, node n2 moved from d0 to d1."""
    t0 = 1000.0

    def record(director: str, partition: int, node: str, start: float, end: float) -> dict:
        return {
            'call_id': f'{director}-{node}-{start}',
            'director': director,
            'partition': partition,
            'node': node,
            'worker': 0,
            'start': t0 + start,
            'end': t0 + end,
            'ok': True,
        }

    calls = [
        record('director-0', 0, 'n1', 0, 4),
        record('director-0', 0, 'n2', 0, 2),
        record('director-1', 1, 'n3', 0, 6),
        record('director-1', 1, 'n2', 4, 6),
    ]
    root.mkdir()
    root.joinpath('results.jsonl').write_text(''.join(json.dumps(c) + '\n' for c in calls))
    if moves:
        lines: list[dict[str, Any]] = [
            move(t0 - 1, 'n1', 'start', None, 'director-0'),
            move(t0 - 1, 'n2', 'start', None, 'director-0'),
            move(t0 - 1, 'n3', 'start', None, 'director-1'),
            move(t0 + 2.5, 'n2', 'moving', 'director-0', 'director-1'),
            move(t0 + 3.5, 'n2', 'moved', 'director-0', 'director-1'),
        ]
        root.joinpath('nodes').mkdir()
        root.joinpath('nodes', 'moves.jsonl').write_text(
            ''.join(json.dumps(m) + '\n' for m in lines),
        )
    return root


def png_size(path: pathlib.Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG file'
    return struct.unpack('>II', data[16:24])


@pytest.mark.timeout(60)
def test_report_draws_node_ownership_under_the_gantt(tmp_path: pathlib.Path, capsys):
    static = render_report(_elastic_run(tmp_path / 'static', moves=False))
    elastic = render_report(_elastic_run(tmp_path / 'elastic', moves=True))
    # A static run: no ownership chart, no per-node summary.
    assert static.nodes == {}
    assert elastic.bars == static.bars == 4
    # The node that moved gets its lanes once.
    assert elastic.lanes == [('n1', 0), ('n2', 0), ('n3', 0)]
    static_size, elastic_size = png_size(static.path), png_size(elastic.path)
    assert elastic_size[0] == static_size[0] == 1200
    assert elastic_size[1] > static_size[1]

    n2 = elastic.nodes['n2']
    # From the layout (1 s before the first call) to the last call end (6 s after it).
    assert n2.owned == pytest.approx({'director-0': 3.5, 'director-1': 2.5})
    assert n2.moving == pytest.approx(1.0) and n2.moves == 1
    assert elastic.nodes['n1'].owned == pytest.approx({'director-0': 7.0})

    assert report_command.main([str(tmp_path / 'elastic')]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f'{elastic.path}: 4 calls on 3 worker slots')
    assert out[1].startswith('node owners')
    assert out[3] == '  n2: director-0 3.5s, director-1 2.5s; 1 move, 1.0s moving'
    assert report_command.main([str(tmp_path / 'static')]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def _status(director: str, nodes: list[str], done: int = 0, **extra: Any) -> DirectorStatus:
    return DirectorStatus(
        director=director,
        partition=0,
        nodes=nodes,
        slots=2 * len(nodes),
        workers_connected=0,
        queued=0,
        running=0,
        done=done,
        failed=0,
        **extra,
    )


@pytest.mark.timeout(10)
def test_progress_bars_show_each_directors_nodes():
    assert describe(_status('director-1', ['a'])) == 'director-1 [1 node]'
    lent = _status('director-1', ['a', 'b', 'c'], borrowed={'c': 'director-0'})
    assert describe(lent) == 'director-1 [3 nodes +1 borrowed]'

    progress = make_progress(Console(file=io.StringIO(), width=200))
    bars = DirectorBars(
        progress,
        [_status('director-0', ['a', 'b']), _status('director-1', ['c'])],
        [10, 10],
    )
    descriptions = [progress.tasks[t].description for t in bars.tasks]
    assert descriptions == ['director-0 [2 nodes]', 'director-1 [1 node]']
    # Node b moves to director-1 for an MPI call; a failed poll leaves its bar as it was.
    bars.update(
        [
            _status('director-0', ['a'], done=3),
            _status('director-1', ['c', 'b'], borrowed={'b': 'director-0'}),
        ],
    )
    bars.update([_status('director-0', ['a'], done=4), TimeoutError('no answer')])
    descriptions = [progress.tasks[t].description for t in bars.tasks]
    assert descriptions == ['director-0 [1 node]', 'director-1 [2 nodes +1 borrowed]']
    assert progress.tasks[bars.tasks[0]].completed == 4


@pytest.mark.timeout(10)
def test_status_names_the_nodes_no_director_serves(tmp_path: pathlib.Path):
    from actors.cli.commands.status import _between_directors
    from actors.store.moves import MoveJournal
    from actors.store.moves import read_layout_record

    assert _between_directors(read_layout_record(tmp_path)) == ''  # no node ever moved
    journal = MoveJournal(tmp_path)
    journal.write_layout(
        {'director-0': ['a'], 'director-1': ['c', 'b']},
        ['d'],
        fencing={'e': 'director-2'},
        loans={'b': 'director-0'},
    )
    journal.close()
    assert _between_directors(read_layout_record(tmp_path)) == (
        'nodes between Directors: free d; fencing e (director-2); lent b (by director-0)'
    )
