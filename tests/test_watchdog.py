"""Releasing Parsl: nothing outlives a failed cleanup or a failed start."""

from __future__ import annotations

import pytest
from parsl.app.app import python_app
from parsl.dataflow.dflow import DataFlowKernel

from actors.faults import release_parsl
from actors.parsl_config import build_config
from actors.parsl_config import executor_label
from actors.parsl_config import mpi_executor_label
from actors.sites import load_site
from actors.tools import run_tool
from actors.watchdog import Watchdog
from tests.conftest import parsl_processes_of
from tests.helpers import make_partitions

pytestmark = pytest.mark.timeout(90)


def test_failed_cleanup_leaves_no_interchange(run_dir, monkeypatch):
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
        stopped = release_parsl(watchdog, list(dfk.executors.values()), dfk.cleanup)
        assert stopped >= 1
        assert all(proc.poll() is not None for proc in interchanges)
        assert parsl_processes_of(run_dir) == []
        assert watchdog.pid is None  # released
    finally:
        # The rest of the MPI executor's shutdown (its threads); its interchange is gone.
        mpi.shutdown(timeout=1)
        watchdog.stop()
