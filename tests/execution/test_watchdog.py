"""Releasing Parsl: nothing outlives a failed cleanup or a failed start."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import psutil
import pytest
from parsl.app.app import python_app
from parsl.dataflow.dflow import DataFlowKernel

from actors.common.processes import wait_exited
from actors.execution.blocks import release_parsl
from actors.execution.node_blocks import block_leftovers
from actors.execution.watchdog import LINEAGE_VARIABLE
from actors.execution.watchdog import Lineage
from actors.execution.watchdog import Watchdog
from actors.execution.watchdog import reap
from actors.site.parsl_config import build_config
from actors.site.parsl_config import executor_label
from actors.site.parsl_config import mpi_executor_label
from actors.site.profile import load_site
from actors.worker.control import CONTROL_DIR_VARIABLE
from actors.worker.run import run_tool
from tests.conftest import parsl_processes_of
from tests.helpers import make_partitions

pytestmark = pytest.mark.timeout(90)


def test_failed_cleanup_leaves_no_interchange(run_dir, monkeypatch, caplog):
    """DFK cleanup that stops at the first executor's error: the MPI interchange still goes."""
    (partition,) = make_partitions(run_dir, nodes=1, partitions=1)
    watchdog = Watchdog()
    watchdog.start()
    dfk = DataFlowKernel(build_config(partition, load_site('local'), run_dir / 'parsl', mpi=True))
    main = dfk.executors[executor_label(partition)]
    mpi = dfk.executors[mpi_executor_label(partition)]
    try:
        app = python_app(run_tool, data_flow_kernel=dfk, executors=[main.label])
        assert app('mock_md', {}).result()['ok']
        interchanges = [main.interchange_proc, mpi.interchange_proc]
        shutdown = main.shutdown

        def failing_shutdown(*args, **kwargs):
            shutdown(*args, **kwargs)
            raise RuntimeError('injected: the first executor failed to shut down')

        # DataFlowKernel.cleanup shuts the executors down in order, the MPI executor last.
        monkeypatch.setattr(main, 'shutdown', failing_shutdown)
        with caplog.at_level(logging.WARNING, logger='actors.execution.blocks'):
            stopped = release_parsl(watchdog, list(dfk.executors.values()), dfk.cleanup)
        assert stopped >= 1
        assert f'stopped {stopped} Parsl process(es) that outlived cleanup' in caplog.text
        assert all(proc.poll() is not None for proc in interchanges)
        assert parsl_processes_of(run_dir) == []
        assert watchdog.pid is None  # released
    finally:
        # The rest of the MPI executor's shutdown (its threads); its interchange is gone.
        mpi.shutdown(timeout=1)
        watchdog.stop()


def test_normal_cleanup_ends_every_process_quietly(run_dir, caplog):
    """After a normal cleanup the block's processes end on Parsl's own SIGTERM: no warning."""
    (partition,) = make_partitions(run_dir, nodes=2, partitions=1)
    watchdog = Watchdog()
    watchdog.start()
    dfk = DataFlowKernel(build_config(partition, load_site('local'), run_dir / 'parsl'))
    executor = dfk.executors[executor_label(partition)]
    try:
        app = python_app(run_tool, data_flow_kernel=dfk, executors=[executor.label])
        assert app('mock_md', {}).result()['ok']
        assert parsl_processes_of(run_dir)  # interchange, mpiexec, its proxies, the pools
    except BaseException:
        release_parsl(watchdog, list(dfk.executors.values()), dfk.cleanup)
        raise
    with caplog.at_level(logging.WARNING, logger='actors.execution.blocks'):
        stopped = release_parsl(watchdog, list(dfk.executors.values()), dfk.cleanup)
    assert stopped == 0
    assert 'outlived cleanup' not in caplog.text
    assert parsl_processes_of(run_dir) == []
    assert watchdog.pid is None


def test_a_zombie_counts_as_exited():
    """A killed process that its parent has not reaped yet is neither waited for nor signalled."""
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        proc = psutil.Process(child.pid)
        proc.kill()
        while proc.status() != psutil.STATUS_ZOMBIE:  # reading /proc does not reap it
            time.sleep(0.01)
        assert wait_exited([proc], timeout=30) == []
        assert reap({child.pid}, set(), grace=30) == 0
        assert proc.status() == psutil.STATUS_ZOMBIE
    finally:
        child.kill()
        child.wait()


def _sleeper(**env: str) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if k not in (LINEAGE_VARIABLE, 'JOBNAME')}
    environ.pop(CONTROL_DIR_VARIABLE, None)
    return subprocess.Popen(
        [sys.executable, '-c', 'import time; time.sleep(60)'], env={**environ, **env}
    )


def test_a_lost_pools_orphans_are_found_by_their_block():
    """Orphans look like any Python: a block's JOBNAME and control directory give them away."""
    parent = str(os.getpid())
    lineage = Lineage(os.getpid(), until=time.time() + 60)
    block = _sleeper(JOBNAME='parsl.partition-0.block-0.1', **{CONTROL_DIR_VARIABLE: '/c'})
    other_block = _sleeper(JOBNAME='parsl.partition-0.block-1.2', **{CONTROL_DIR_VARIABLE: '/c'})
    ours_not_a_block = _sleeper(**{LINEAGE_VARIABLE: parent})
    orphan = _sleeper(**{LINEAGE_VARIABLE: parent, CONTROL_DIR_VARIABLE: '/c'})
    children = [block, other_block, ours_not_a_block, orphan]
    try:
        deadline = time.monotonic() + 30
        # The environment is readable once the interpreter has exec'ed.
        while not all(psutil.Process(c.pid).environ() for c in children):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        found = block_leftovers({'parsl.partition-0.block-0.1'})
        assert [p.pid for p in found] == [block.pid]
        assert block_leftovers(set()) == []
        # The parent-death watchdog: a block's process of the dead Director, not its other ones.
        assert lineage.holds(psutil.Process(orphan.pid))
        assert not lineage.holds(psutil.Process(ours_not_a_block.pid))
        assert not lineage.holds(psutil.Process(block.pid))
    finally:
        for child in children:
            child.kill()
            child.wait()
