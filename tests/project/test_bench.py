"""The benchmark suite's own arithmetic (the benchmarks themselves run with ``python -m bench``)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections import namedtuple

import psutil
import pytest

from bench.__main__ import steal_fraction
from bench.common import Ratio
from bench.common import percentile
from bench.elastic import Span
from bench.elastic import journal_times
from bench.elastic import move_times
from bench.elastic import oversubscribed
from bench.elastic import shared
from bench.elastic import utilisation
from bench.encryption import check_certificates
from bench.encryption import cpu_seconds
from bench.encryption import paired_ratios
from bench.encryption import per_round
from bench.encryption import session_rounds
from bench.encryption import side_order
from bench.encryption import side_processes
from bench.encryption import spread
from bench.scale import flatness
from bench.utilization import ideal_makespan
from bench.utilization import makespan
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(30)


def test_ratio_targets():
    assert Ratio('a', 0.96, 0.95, at_most=False).met
    assert not Ratio('a', 0.94, 0.95, at_most=False).met
    assert Ratio('b', 0.5, 0.5, at_most=True).met
    assert not Ratio('b', 0.51, 0.5, at_most=True).met
    assert not Ratio('c', math.nan, 1.0, at_most=True).met


def test_ideal_makespan_and_makespan():
    # 100 calls of 0.2 s on 4 slots: 25 waves.
    assert ideal_makespan(100, 4, 0.2) == pytest.approx(5.0)
    assert ideal_makespan(101, 4, 0.2) == pytest.approx(5.2)
    assert makespan([(10.0, 10.2), (10.1, 10.5), (9.9, 10.0)]) == pytest.approx(0.6)


def test_percentile_and_flatness():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    assert flatness([1.0, 1.05, 1.1]) == pytest.approx(0.1)


def test_unknown_benchmark_is_rejected(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'bench', 'nosuch', '--output', str(tmp_path / 'x.json')],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown benchmark 'nosuch'" in result.stderr
    assert not (tmp_path / 'x.json').exists()


def test_steal_fraction():
    times = namedtuple('times', 'user system idle steal')
    assert steal_fraction(times(1, 1, 1, 1), times(4, 2, 3, 4)) == pytest.approx(3 / 9)
    assert steal_fraction(times(1, 1, 1, 1), times(1, 1, 1, 1)) == 0.0
    # Platforms that report no steal time give 0.
    plain = namedtuple('plain', 'user idle')
    assert steal_fraction(plain(0, 0), plain(1, 1)) == 0.0


def test_elastic_utilisation_and_move_times():
    spans = [
        Span('d0', ('a',), 10.0, 12.0),
        Span('d0', ('a',), 12.0, 14.0),
        Span('d1', ('c',), 10.0, 16.0),
        Span('d1', ('a',), 17.5, 19.0),  # a moved: idle at 14.0, first call at 17.5
        Span('d1', ('a',), 18.0, 20.0),
    ]
    # 2 + 2 + 6 + 1.5 + 2 busy slot-seconds on 2 slots from 10.0 to 20.0.
    assert utilisation(spans, 2, 10.0) == pytest.approx(13.5 / 20.0)
    assert move_times(spans, 'd0', 'd1') == {'a': (14.0, 17.5)}
    assert move_times(spans, 'd1', 'd0') == {}
    journal = [
        {'at': 1.0, 'node': 'a', 'event': 'start'},
        {'at': 15.0, 'node': 'a', 'event': 'moving'},
        {'at': 17.0, 'node': 'a', 'event': 'moved'},
        {'at': 30.0, 'node': 'a', 'event': 'moving'},  # a later move does not count
    ]
    assert journal_times(journal, since=10.0) == {'a': {'moving': 15.0, 'moved': 17.0}}


def test_elastic_oversubscription_check():
    fine = [
        Span('d', ('a', 'b'), 0.0, 2.0, mpi=True),
        Span('d', ('a',), 2.0, 3.0),  # starts as the MPI call ends
        Span('d', ('a',), 2.5, 3.5),
        Span('d', ('c',), 0.0, 3.0),
    ]
    assert oversubscribed(fine, 2) == []
    assert shared(fine) == 2  # the calls on a; c never ran an MPI call
    crowded = [*fine, Span('d', ('b',), 1.0, 1.5), Span('d', ('a',), 2.6, 2.7)]
    assert oversubscribed(crowded, 2) == [
        'a at 2.600: 0 MPI + 3 single-slot',
        'b at 1.000: 1 MPI + 1 single-slot',
    ]


def test_encryption_arithmetic():
    # ABBA: encrypted first in even rounds, so every pair of rounds is symmetric.
    sides = [side for i in range(4) for side in side_order(i)]
    assert ''.join(side[0] for side in sides) == 'eppeeppe'
    # Rounds split over sessions; their indices run on, so ABBA holds across them.
    assert session_rounds(6) == [range(0, 3), range(3, 6)]
    assert session_rounds(5) == [range(0, 3), range(3, 5)]
    assert session_rounds(1) == [range(0, 1)]
    assert spread([3.0, 1.0, 2.0, 10.0]) == (2.5, 1.0, 10.0)
    assert paired_ratios([2.0, 3.0], [4.0, 3.0]) == [0.5, 1.0]
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])
    assert per_round([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3) == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    with pytest.raises(ValueError):
        per_round([1.0, 2.0, 3.0], 2)


def test_encryption_certificates_check(tmp_path):
    for layer in ('director', 'executor'):
        (tmp_path / f'{layer}-encrypted' / 'run' / 'certificates').mkdir(parents=True)
        (tmp_path / f'{layer}-plain' / 'run').mkdir(parents=True)
    check_certificates(tmp_path)
    (tmp_path / 'executor-plain' / 'run' / 'certificates').mkdir()
    with pytest.raises(RuntimeError, match='executor plain: CurveZMQ certificates found'):
        check_certificates(tmp_path)
    # A process's CPU clock, read by process id, is its own CPU time.
    assert cpu_seconds([psutil.Process()]) == pytest.approx(time.process_time(), abs=0.05)
    # No interchange or pool runs under an empty directory: its CPU cannot be counted.
    with pytest.raises(RuntimeError, match='found 0 interchange'):
        side_processes(tmp_path)
