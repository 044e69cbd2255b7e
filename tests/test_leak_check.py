"""The leftover-process check itself: it must see a live DFK's processes."""

from __future__ import annotations

import time

import pytest
from parsl.app.app import python_app
from parsl.dataflow.dflow import DataFlowKernel

from actors.parsl_config import build_config
from actors.sites import load_site
from actors.tools import run_tool
from tests.conftest import parsl_processes_of
from tests.helpers import make_partitions

pytestmark = pytest.mark.timeout(60)


def _names(procs) -> set[str]:
    found = set()
    for proc in procs:
        cmdline = ' '.join(proc.cmdline())
        if 'HTEX interchange' in cmdline:
            found.add('interchange')
        if 'process_worker_pool.py' in cmdline:
            found.add('worker pool')
    return found


def test_check_sees_a_running_dfk_and_its_cleanup(run_dir, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    (partition,) = make_partitions(run_dir, nodes=1, partitions=1)
    dfk = DataFlowKernel(build_config(partition, load_site('local'), run_dir / 'parsl'))
    try:
        app = python_app(run_tool, data_flow_kernel=dfk)
        assert app('mock_md', {}).result()['ok']
        assert _names(parsl_processes_of(base)) == {'interchange', 'worker pool'}
    finally:
        dfk.cleanup()
    deadline = time.time() + 15
    while parsl_processes_of(base) and time.time() < deadline:
        time.sleep(0.2)
    assert parsl_processes_of(base) == []
