"""Block health: the rule table, and a block that can never start ends the run with its error."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest

from actors.execution.block_health import MAX_FAILED_STARTS
from actors.execution.block_health import BlockFacts
from actors.execution.block_health import Remedy
from actors.execution.block_health import failed_starts_after
from actors.execution.block_health import judge
from actors.execution.block_health import never_starts
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(150)

BOUND = 90.0
"""Seconds within which such a run ends (measured here: ~16 s for 3 failed blocks)."""


def test_a_launcher_typo_ends_the_run_with_the_launchers_own_error(tmp_path: pathlib.Path):
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / 'launch.py'),
            # MPICH's mpiexec of a simulated PBS job (the local site's launcher takes no flags).
            '--site',
            'pbs',
            '--launcher-args',
            '-launcher nosuch',
            '--json',
            '--iterations',
            '1',
            '--duration',
            '0',
            '--partitions',
            '1',
            '--simulate-nodes',
            '1',
            '--run-dir',
            str(tmp_path / 'run'),
        ],
        capture_output=True,
        text=True,
        timeout=BOUND + 30,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-2000:]
    assert elapsed < BOUND
    assert 'ended before any worker pool connected' in done.stdout
    assert 'unrecognized launcher: nosuch' in done.stdout  # the block's own stderr
    assert '"status": "lost"' in done.stdout


class _Job:
    state = type('State', (), {'name': 'FAILED'})()
    exit_code = 1
    message = 'launcher error'
    stderr_path = None


def _facts(**given) -> BlockFacts:
    return BlockFacts(
        **{'node': 'n1', 'block': '0', 'connected': False, 'ended': False, 'live_pools': 0} | given
    )


def test_the_rule_table_names_one_remedy_per_way_a_block_goes_wrong():
    assert judge(_facts()) is None  # starting: no pool yet, its job runs
    assert judge(_facts(connected=True, live_pools=1)) is None  # serving
    lost = judge(_facts(connected=True, live_pools=0))
    assert lost is not None and (lost.name, lost.remedy) == ('pools lost', Remedy.RESTART)
    ended = judge(_facts(connected=True, live_pools=1, ended=True))
    assert ended is not None and (ended.name, ended.remedy) == ('ended', Remedy.RESTART)
    placed = judge(_facts(stranger='other-host', live_pools=1))
    assert placed is not None and (placed.name, placed.remedy) == ('misplaced', Remedy.RESTART)
    # Before its pool ever served, the last of MAX_FAILED_STARTS gives the node up.
    for failed in range(MAX_FAILED_STARTS - 1):
        early = judge(_facts(ended=True, failed_starts=failed))
        assert early is not None and early.remedy is Remedy.RESTART
        assert failed_starts_after(_facts(ended=True, failed_starts=failed)) == failed + 1
    for way in ({'ended': True}, {'stranger': 'other-host'}):
        last = judge(_facts(failed_starts=MAX_FAILED_STARTS - 1, **way))
        assert last is not None and (last.name, last.remedy) == (
            'never starts',
            Remedy.GIVE_UP_NODE,
        )
    # A block whose pool served once starts the count again.
    served = _facts(connected=True, ended=True, failed_starts=MAX_FAILED_STARTS - 1)
    assert judge(served).remedy is Remedy.RESTART  # type: ignore[union-attr]
    assert failed_starts_after(served) == 0


def test_the_director_gives_up_only_when_no_block_started_anywhere():
    given = {'ever_connected': False, 'given_up': 2, 'left': 0, 'last': _Job()}
    error = never_starts('htex', **given)
    assert error is not None and 'htex' in str(error) and 'launcher error' in str(error)
    assert 'ended before any worker pool connected' in str(error)
    assert never_starts('htex', **(given | {'ever_connected': True})) is None
    assert never_starts('htex', **(given | {'left': 1})) is None  # a node is still tried
    assert never_starts('htex', **(given | {'given_up': 0})) is None  # all moved away
