"""The leftover-process check itself: it must see a live DFK's processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest
from parsl.app.app import python_app
from parsl.dataflow.dflow import DataFlowKernel

from actors.site.parsl_config import build_config
from actors.site.profile import load_site
from actors.worker.run import run_tool
from tests.conftest import REPO
from tests.conftest import _names_path_under
from tests.conftest import end_processes
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


ORPHAN_MAKER = """
import pathlib, sys
from parsl.app.app import python_app
from parsl.dataflow.dflow import DataFlowKernel
from actors.site.parsl_config import build_config
from actors.site.parsl_config import executor_label
from actors.site.profile import load_site
from actors.worker.run import run_tool
from tests.helpers import make_partitions

run_dir = pathlib.Path(sys.argv[1])
(partition,) = make_partitions(run_dir, nodes=1, partitions=1)
dfk = DataFlowKernel(build_config(partition, load_site('local'), run_dir / 'parsl', mpi=True))
# Not on the MPI executor, which needs a resource specification.
app = python_app(run_tool, data_flow_kernel=dfk, executors=[executor_label(partition)])
assert app('mock_md', {}).result()['ok']
print('ready', flush=True)
sys.stdin.read()
"""


def test_check_sees_reparented_interchanges_by_their_files(tmp_path, tmp_path_factory):
    """A DFK's process killed without cleanup: its interchanges go to init, still found."""
    base = tmp_path_factory.getbasetemp()
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    owner = subprocess.Popen(
        [sys.executable, '-c', ORPHAN_MAKER, str(run_dir)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout.readline().strip() == 'ready'
        interchanges = [p for p in psutil.Process(owner.pid).children() if _is_interchange(p)]
        # The partition's executor and the MPI executor.
        assert len(interchanges) == 2
    finally:
        owner.kill()
        owner.wait()
    for proc in interchanges:
        assert os.getpid() not in {p.pid for p in proc.parents()}, 'not re-parented'
        assert str(run_dir) not in ' '.join(proc.cmdline())
    found = parsl_processes_of(base)
    try:
        assert {p.pid for p in interchanges} <= {p.pid for p in found}
    finally:
        end_processes(found)
    assert parsl_processes_of(base) == []


def test_check_ignores_other_sessions_temp_dirs():
    assert _names_path_under(
        'pool.py --logdir=/tmp/pytest-of-u/pytest-1/t0/run', '/tmp/pytest-of-u/pytest-1'
    )
    assert _names_path_under('mpiexec -f /tmp/pytest-of-u/pytest-1', '/tmp/pytest-of-u/pytest-1')
    assert not _names_path_under(
        'pool.py --logdir=/tmp/pytest-of-u/pytest-12/t0/run', '/tmp/pytest-of-u/pytest-1'
    )


def _is_interchange(proc: psutil.Process) -> bool:
    return 'HTEX interchange' in ' '.join(proc.cmdline())
