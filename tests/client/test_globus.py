"""The Globus Compute path: Directors started through the endpoint's own code."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import time
import uuid

import pytest
from globus_compute_sdk.errors import TaskExecutionFailed

from actors.calling.calls import DirectorFailedError
from actors.cli.parser import build_parser
from actors.cli.plan import plan_run
from actors.cli.run import run
from actors.client.globus import ensure_logged_in
from actors.client.globus import make_globus_executor
from actors.client.globus import require_academy_login
from actors.common.errors import ConfigurationError
from actors.job.partition import PartitionRequest
from actors.job.partition import job_run_dir
from tests.compute_endpoint import EndpointTaskExecutor
from tests.conftest import REPO

HOSTS = ['x1000c0s0b0n0', 'x1000c0s0b0n1', 'x1000c0s0b1n0', 'x1000c0s0b1n1', 'x1000c0s1b0n0']


def _pbs_job(tmp_path: pathlib.Path, job_id: str) -> dict[str, str]:
    nodefile = tmp_path / 'PBS_NODEFILE'
    # PBS lists every host once per rank.
    nodefile.write_text(''.join(f'{h}\n{h}\n' for h in HOSTS))
    return {'PBS_NODEFILE': str(nodefile), 'PBS_JOBID': job_id}


@pytest.mark.timeout(240)
def test_directors_start_through_execute_task_and_answer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = _pbs_job(tmp_path, '4242.fake-pbs-server')
    remote_dir = tmp_path / 'endpoint-home' / 'runs'
    args = build_parser().parse_args(
        [
            '--executor',
            'globus-compute',
            '--endpoint',
            str(uuid.uuid4()),
            '--exchange',
            'http',
            '--site',
            'local',
            '--partition-sizes',
            '2,3',
            '--run-dir',
            str(remote_dir),
            '--iterations',
            '4',
            '--duration',
            '0.2',
        ],
    )
    plan = plan_run(args)
    assert all(isinstance(p, PartitionRequest) for p in plan.partitions)
    executor = EndpointTaskExecutor(3, tmp_path / 'endpoint-tasks', job)
    results = asyncio.run(run(plan, executor=executor))

    # Two Directors and the node coordinator ran as endpoint tasks in processes
    # other than this one.
    assert len(executor.task_ids) == 3
    assert len(executor.worker_pids) == 3
    assert os.getpid() not in executor.worker_pids

    # Each resolved its own slice of the job's nodes on the "lead node".
    parts = {p.index: p for p in plan.partitions}
    assert list(parts[0].nodes) == HOSTS[:2]
    assert list(parts[1].nodes) == HOSTS[2:]
    job_dir = remote_dir / 'job-4242.fake-pbs-server'
    for index, part in parts.items():
        nodefile = job_dir / 'partitions' / f'partition-{index}.nodes'
        assert nodefile.read_text().split() == list(part.nodes)
        assert (job_dir / 'parsl' / f'director-{index}').is_dir()

    assert len(results) == 2 * (1 + 4)
    for r in results:
        assert r.ok, r
        assert r.node in parts[r.partition].nodes
    assert sorted(r.action for r in results).count('md_sim') == 2
    assert {r.action for r in results} == {'md_sim', 'md_sim_batch'}
    assert (tmp_path / 'runs').is_dir()  # the client's manifest


@pytest.mark.timeout(120)
def test_director_outside_a_batch_job_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(
        [
            '--executor',
            'globus-compute',
            '--endpoint',
            str(uuid.uuid4()),
            '--exchange',
            'http',
            '--run-dir',
            str(tmp_path / 'remote'),
        ],
    )
    plan = plan_run(args)
    # The endpoint's processes inherit this environment: no batch job in it.
    monkeypatch.delenv('PBS_NODEFILE', raising=False)
    monkeypatch.delenv('SLURM_JOB_NODELIST', raising=False)
    executor = EndpointTaskExecutor(2, tmp_path / 'tasks', {})
    # The Director's error comes back through the endpoint's result message.
    with pytest.raises(
        (DirectorFailedError, TaskExecutionFailed),
        match='neither PBS_NODEFILE nor SLURM_JOB_NODELIST',
    ):
        asyncio.run(run(plan, executor=executor))


def _remote_plan(*flags: str):
    base = ['--executor', 'globus-compute', '--endpoint', str(uuid.uuid4()), '--exchange', 'http']
    return plan_run(build_parser().parse_args([*base, *flags]))


@pytest.mark.timeout(30)
def test_a_remote_run_takes_the_same_work_flags_as_a_local_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The client's own batch job (if any) says nothing of the endpoint's.
    monkeypatch.setenv('SLURM_JOB_END_TIME', str(time.time() + 60))
    plan = _remote_plan(
        *('--retries', '5', '--restarts', '3', '--timeout', '30', '--supervise'),
        *('--journal-sync', 'before-answer', '--quiet', '--iterations', '7'),
    )
    options = plan.director
    assert (options.retries, plan.restarts, plan.timeout, options.supervise) == (5, 3, 30.0, True)
    assert (options.journal_sync, plan.progress, plan.iterations) == ('before-answer', False, 7)
    assert options.walltime.end is None
    start = time.time()
    options = _remote_plan('--walltime', '01:00:00', '--drain-margin', '45').director
    assert options.walltime.end is not None
    assert start + 3600 <= options.walltime.end <= time.time() + 3600
    assert options.walltime.margin == 45
    assert options.journal_sync == 'after-answer'


def test_partition_requests_are_disjoint_and_job_unique(tmp_path):
    job_a = _pbs_job(tmp_path, '1.pbs')
    parts = [PartitionRequest(i, count=3).resolve(tmp_path, job_a) for i in range(3)]
    seen: set[str] = set()
    for part in parts:
        assert not seen & set(part.nodes)
        seen |= set(part.nodes)
        assert pathlib.Path(part.nodefile).is_relative_to(tmp_path / 'job-1.pbs')
    assert seen == set(HOSTS)
    # Another job sharing the run directory gets its own nodefiles.
    job_b = {**job_a, 'PBS_JOBID': '2.pbs'}
    other = PartitionRequest(0, count=3).resolve(tmp_path, job_b)
    assert other.nodefile != parts[0].nodefile
    assert job_run_dir(tmp_path, {'SLURM_JOB_ID': '77'}) == tmp_path.resolve() / 'job-77'
    assert job_run_dir(tmp_path, {'PBS_JOBID': '9.pbs/../../x'}).parent == tmp_path.resolve()


def test_partition_request_on_a_slurm_job(tmp_path):
    env = {'SLURM_JOB_NODELIST': 'nid[001-004,007]', 'SLURM_JOB_ID': '123456'}
    first = PartitionRequest(0, sizes=(1, 4)).resolve(tmp_path, env)
    second = PartitionRequest(1, sizes=(1, 4)).resolve(tmp_path, env)
    assert first.nodes == ('nid001',)
    assert second.nodes == ('nid002', 'nid003', 'nid004', 'nid007')
    assert pathlib.Path(second.nodefile).parent == tmp_path.resolve() / 'job-123456' / 'partitions'


def test_partition_request_errors(tmp_path):
    with pytest.raises(ConfigurationError, match='index 2 is out of range'):
        PartitionRequest(2, count=2)
    with pytest.raises(ConfigurationError, match='needs count or sizes'):
        PartitionRequest(0)
    job = _pbs_job(tmp_path, '3.pbs')
    with pytest.raises(ConfigurationError, match='more than the 5 node'):
        PartitionRequest(0, count=6).resolve(tmp_path, job)
    with pytest.raises(ConfigurationError, match='add up to 4 but the job has 5'):
        PartitionRequest(0, sizes=(2, 2)).resolve(tmp_path, job)
    with pytest.raises(ConfigurationError, match='neither PBS_NODEFILE nor SLURM_JOB_NODELIST'):
        PartitionRequest(0, count=1).resolve(tmp_path, {})


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """A HOME with no stored Globus tokens and no client credentials."""
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.delenv('ACADEMY_HOME', raising=False)
    for name in (
        'GLOBUS_COMPUTE_CLIENT_ID',
        'GLOBUS_COMPUTE_CLIENT_SECRET',
        'ACADEMY_GLOBUS_CLIENT_ID',
        'ACADEMY_GLOBUS_CLIENT_SECRET',
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / 'home'


@pytest.mark.timeout(30)
def test_sdk_executor_without_credentials_fails_fast(no_credentials):
    with pytest.raises(ConfigurationError, match='no Globus credentials for Globus Compute'):
        make_globus_executor(str(uuid.uuid4()), {'account': 'x'}, interactive=lambda: False)
    with pytest.raises(ConfigurationError, match='no Globus credentials for the Academy exchange'):
        require_academy_login(interactive=lambda: False)


@pytest.mark.timeout(30)
def test_half_set_client_credentials_are_refused(no_credentials, monkeypatch):
    monkeypatch.setenv('GLOBUS_COMPUTE_CLIENT_SECRET', 'secret-without-id')
    with pytest.raises(ConfigurationError, match='GLOBUS_COMPUTE_CLIENT_ID'):
        make_globus_executor(str(uuid.uuid4()), {}, interactive=lambda: False)


@pytest.mark.timeout(30)
def test_logged_in_apps_are_left_alone():
    class ClientIdentity:
        """Not a UserApp: client credentials log in without a user."""

    ensure_logged_in(ClientIdentity(), 'svc', 'hint', interactive=lambda: False)


CLI_NO_CREDENTIALS = [
    (['--exchange', 'http'], 'no Globus credentials for Globus Compute'),
    # Default exchange (hosted): the Globus Compute login is checked first.
    ([], 'no Globus credentials for Globus Compute'),
    (['--site', 'aurora', '--set', 'account=ok', '--set', 'queue=$(reboot)'], "queue: '$(reboot)'"),
    (['--site', 'aurora', '--exchange', 'http'], "'account' is a required property"),
    (['--simulate-nodes', '4', '--exchange', 'http'], '--simulate-nodes cannot be used'),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(('args', 'message'), CLI_NO_CREDENTIALS)
def test_cli_globus_compute_fails_with_one_line(args, message, no_credentials, tmp_path):
    # stdin is an open pipe that never sends anything: a login prompt would hang.
    with subprocess.Popen(
        [
            sys.executable,
            str(REPO / 'launch.py'),
            '--executor',
            'globus-compute',
            '--endpoint',
            str(uuid.uuid4()),
            *args,
        ],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f'launch.py {args} hung waiting for a login')
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert out == ''


@pytest.mark.timeout(60)
def test_cli_hosted_exchange_without_credentials_fails_fast(no_credentials, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), '--executor', 'process', '--exchange', 'hosted'],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'no Globus credentials for the Academy exchange' in lines[0]
