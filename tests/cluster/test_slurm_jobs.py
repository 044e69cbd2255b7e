"""SlurmJobs on the namespace Slurm cluster, and steps started in another job's nodes.

SlurmJobs runs ``sbatch``/``squeue``/``scancel`` itself, as it does inside a
run's allocation, so each call here runs a small Python program on the
controller ``ctl`` (where the Slurm commands and ``SLURM_CONF`` are); every
call is a new ``SlurmJobs``, which knows nothing of earlier submissions.

The last tests are for the run's growth: from inside its own allocation, a
run starts steps on the nodes of its extra jobs with
``srun --jobid=<extra job> --nodes=1 --ntasks=1 --nodelist=<node> --overlap``
under an environment without the allocation's ``SLURM_*`` variables (but
``SLURM_CONF``). Skipped when the cluster is not up.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.slurm_cluster import CONTROLLER
from tests.slurm_cluster import NODES
from tests.slurm_cluster import REPO
from tests.slurm_cluster import on_host
from tests.slurm_cluster import popen_on_host
from tests.slurm_cluster import slurm_cluster  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures('slurm_cluster')]

# One SlurmJobs call on the controller; prints its result as JSON.
DRIVER = """
import json, sys
from actors.site.batch_jobs.base import JobRequest, SubmitRefused
from actors.site.batch_jobs.parsl_jobs import SlurmJobs

jobs = SlurmJobs(sys.argv[1])
op, args = sys.argv[2], sys.argv[3:]
if op == 'submit':
    nodes, walltime, name, queue, account = args
    request = JobRequest(int(nodes), float(walltime), name, queue, account)
    try:
        print(json.dumps({'id': jobs.submit(request)}))
    except SubmitRefused as exc:
        print(json.dumps({'refused': str(exc)}))
elif op == 'states':
    states = jobs.states(args)
    print(json.dumps({k: [s.phase, list(s.nodes), s.reason] for k, s in states.items()}))
elif op == 'cancel':
    jobs.cancel(args[0])
    print('{}')
"""

# Runs "$@" with none of the allocation's SLURM_* variables but SLURM_CONF: srun reads
# them as defaults for the new step (node and task counts, CPUs per task, memory,
# distribution...), and they describe this allocation, not the job the step goes to.
CLEAN = """
clean() (
    for name in $(env | sed -n 's/^\\(SLURM_[A-Za-z0-9_]*\\)=.*/\\1/p'); do
        [ "$name" = SLURM_CONF ] || unset "$name"
    done
    exec "$@"
)
"""


def slurm_jobs(script_dir: pathlib.Path, op: str, *args: str) -> Any:
    """Run one ``SlurmJobs`` call on the controller (a new instance each time): its result."""
    proc = on_host(
        CONTROLLER,
        [sys.executable, '-c', DRIVER, str(script_dir), op, *args],
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def submit(script_dir: pathlib.Path, nodes: int, *, queue: str = '', account: str = '') -> str:
    """Submit a job through SlurmJobs; its id."""
    answer = slurm_jobs(script_dir, 'submit', str(nodes), '600', 'hpc-test', queue, account)
    assert 'id' in answer, answer
    return str(answer['id'])


def state_of(script_dir: pathlib.Path, job_id: str) -> tuple[str, list[str], str]:
    """A job's phase, nodes and reason, from a new SlurmJobs."""
    phase, nodes, reason = slurm_jobs(script_dir, 'states', job_id)[job_id]
    return phase, nodes, reason


def wait_for_phase(
    script_dir: pathlib.Path, job_id: str, phase: str, *, timeout: float = 60.0
) -> tuple[str, list[str], str]:
    """Poll a job's state until it is in ``phase`` (bounded)."""
    deadline = time.monotonic() + timeout
    state = state_of(script_dir, job_id)
    while state[0] != phase:
        assert time.monotonic() < deadline, f'job {job_id} still {state} after {timeout:g}s'
        time.sleep(0.2)
        state = state_of(script_dir, job_id)
    return state


@pytest.fixture
def job_ids() -> Iterator[list[str]]:
    """Ids of jobs a test started: all cancelled after it, whatever happened."""
    ids: list[str] = []
    yield ids
    if ids:
        on_host(CONTROLLER, ['scancel', *ids], timeout=30)


@pytest.mark.timeout(120)
def test_two_node_job_runs_on_two_cluster_nodes_then_cancel_ends_it(
    tmp_path: pathlib.Path, job_ids: list[str]
):
    job_id = submit(tmp_path, 2)
    job_ids.append(job_id)
    _, nodes, _ = wait_for_phase(tmp_path, job_id, 'running')
    assert len(nodes) == 2 and len(set(nodes)) == 2 and set(nodes) <= set(NODES), nodes
    # The job's script is Parsl's, written where it was told.
    assert any(p.name.startswith('hpc-test.') for p in tmp_path.iterdir())
    assert slurm_jobs(tmp_path, 'cancel', job_id) == {}
    wait_for_phase(tmp_path, job_id, 'ended', timeout=30)
    # Cancelling a job that has ended is no error.
    assert slurm_jobs(tmp_path, 'cancel', job_id) == {}


@pytest.mark.timeout(90)
def test_a_refused_submission_says_why_in_one_line(tmp_path: pathlib.Path, job_ids: list[str]):
    # This cluster has no accounting storage (AccountingStorageEnforce=none): sbatch takes
    # any account, so a bad account cannot be refused here; a bad partition is.
    answer = slurm_jobs(tmp_path, 'submit', '1', '600', 'hpc-test', 'nowhere', '')
    job_ids.extend([answer['id']] if 'id' in answer else [])
    assert 'refused' in answer, answer
    message = answer['refused']
    assert '\n' not in message
    assert message.startswith("sbatch refused job 'hpc-test' (1 nodes): sbatch: error:"), message
    assert 'invalid partition' in message.lower(), message


@pytest.mark.timeout(90)
def test_more_nodes_than_the_partition_has_waits_and_says_why(
    tmp_path: pathlib.Path, job_ids: list[str]
):
    # With EnforcePartLimits=NO (Slurm's default) sbatch takes such a job; it never runs.
    job_id = submit(tmp_path, len(NODES) + 5)
    job_ids.append(job_id)
    _, nodes, reason = wait_for_phase(tmp_path, job_id, 'pending')
    assert nodes == [] and 'PartitionConfig' in reason, reason
    slurm_jobs(tmp_path, 'cancel', job_id)
    wait_for_phase(tmp_path, job_id, 'ended', timeout=30)


@pytest.mark.timeout(120)
def test_a_job_waits_pending_while_the_cluster_is_full(tmp_path: pathlib.Path, job_ids: list[str]):
    holder = submit(tmp_path, len(NODES))
    job_ids.append(holder)
    wait_for_phase(tmp_path, holder, 'running')
    waiting = submit(tmp_path, 1)
    job_ids.append(waiting)
    phase, nodes, reason = state_of(tmp_path, waiting)
    assert (phase, nodes) == ('pending', []), (phase, nodes, reason)
    assert 'Resources' in reason or 'Priority' in reason, reason
    slurm_jobs(tmp_path, 'cancel', waiting)
    wait_for_phase(tmp_path, waiting, 'ended', timeout=30)


@pytest.mark.timeout(120)
def test_a_new_instance_knows_a_job_it_never_submitted(tmp_path: pathlib.Path, job_ids: list[str]):
    proc = on_host(
        CONTROLLER,
        ['sbatch', '--parsable', '-N', '1', '-o', '/dev/null', '--wrap', 'sleep 600'],
        check=True,
    )
    job_id = proc.stdout.strip().split(';')[0]
    job_ids.append(job_id)
    _, nodes, _ = wait_for_phase(tmp_path, job_id, 'running')
    assert len(nodes) == 1 and nodes[0] in NODES
    # An id Slurm never had is an ended job, alone or among others.
    assert state_of(tmp_path, '999999')[0] == 'ended'
    both = slurm_jobs(tmp_path, 'states', job_id, '999999')
    assert both[job_id][0] == 'running' and both['999999'][0] == 'ended', both
    slurm_jobs(tmp_path, 'cancel', job_id)
    wait_for_phase(tmp_path, job_id, 'ended', timeout=30)


def _other_job(tmp_path: pathlib.Path, job_ids: list[str], *, busy: bool) -> tuple[str, str]:
    """A running 2-node job and its first node; ``busy``: a step holds all its CPUs there.

    Without ``busy`` the job is SlurmJobs' own (its script sleeps); with it, a plain
    sbatch job whose script runs a 2-node step, as a job with one pool per node would.
    """
    if busy:
        script = 'srun -N 2 --ntasks-per-node=1 sleep 600'
        proc = on_host(
            CONTROLLER,
            ['sbatch', '--parsable', '-N', '2', '--exclusive', '-o', '/dev/null', '--wrap', script],
            check=True,
        )
        job_id = proc.stdout.strip().split(';')[0]
    else:
        job_id = submit(tmp_path, 2)
    job_ids.append(job_id)
    _, nodes, _ = wait_for_phase(tmp_path, job_id, 'running')
    if busy:
        deadline = time.monotonic() + 30
        while f'{job_id}.0 ' not in on_host(CONTROLLER, ['squeue', '-h', '-s', '-o', '%i ']).stdout:
            assert time.monotonic() < deadline, f'step {job_id}.0 did not start'
            time.sleep(0.2)
    return job_id, nodes[0]


def _in_allocation(script: str, *, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run a shell script on ctl inside a new 2-node allocation (``salloc``)."""
    return on_host(
        CONTROLLER,
        ['salloc', '-N', '2', '--exclusive', 'sh', '-c', CLEAN + script],
        cwd=REPO,
        timeout=timeout,
    )


def _step(other: str, node: str, command: str) -> str:
    return f'srun --jobid={other} --nodes=1 --ntasks=1 --nodelist={node} --overlap {command}'


@pytest.mark.timeout(150)
def test_a_step_starts_on_a_node_of_another_job(tmp_path: pathlib.Path, job_ids: list[str]):
    other, node = _other_job(tmp_path, job_ids, busy=False)
    # SLURM_CPUS_PER_TASK=4 stands for an allocation on bigger nodes than the other job's
    # (these have 2 CPUs). Slurm 22.05's srun does not read it (23.11 does again, as -c 4,
    # and would refuse the step), so here the inherited environment works too; the run
    # cleans it all the same.
    script = f"""
        export SLURM_CPUS_PER_TASK=4
        echo "allocation $SLURM_JOB_ID on $SLURM_JOB_NODELIST"
        echo "inherited: $({_step(other, node, 'hostname')} 2>&1 | tr '\\n' ' ')"
        echo "cleaned: $(clean {_step(other, node, 'hostname')})"
    """
    proc = _in_allocation(script)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = dict(line.split(': ', 1) for line in proc.stdout.splitlines() if ': ' in line)
    assert lines['cleaned'].strip() == node, out
    assert lines['inherited'].strip() == node, out
    assert re.search(r'allocation \d+ on n\[', proc.stdout), out


@pytest.mark.timeout(150)
def test_a_step_starts_on_a_busy_node_of_another_job_only_with_overlap(
    tmp_path: pathlib.Path, job_ids: list[str]
):
    other, node = _other_job(tmp_path, job_ids, busy=True)
    without = _step(other, node, 'hostname').replace(' --overlap', '')
    # Without --overlap srun waits for the CPUs the other job's step holds: it is
    # stopped after 10 s (timeout's exit status 124).
    script = f"""
        clean timeout 10 {without} >/dev/null 2>&1; echo "without: $?"
        echo "with: $(clean {_step(other, node, 'hostname')})"
    """
    proc = _in_allocation(script)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = dict(line.split(': ', 1) for line in proc.stdout.splitlines() if ': ' in line)
    assert lines['without'].strip() == '124', out
    assert lines['with'].strip() == node, out


@pytest.mark.timeout(150)
def test_cancelling_the_other_job_ends_the_step(tmp_path: pathlib.Path, job_ids: list[str]):
    other, node = _other_job(tmp_path, job_ids, busy=False)
    script = f"""
        clean {_step(other, node, 'sleep 600')} >/dev/null 2>&1
        echo "step exited: $?"
    """
    proc = popen_on_host(
        CONTROLLER,
        ['salloc', '-N', '2', '--exclusive', 'sh', '-c', CLEAN + script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # The step shows up in the other job (its batch step aside).
        deadline = time.monotonic() + 60
        steps = ''
        while not re.search(rf'^{other}\.\d+ {node}$', steps, re.MULTILINE):
            assert time.monotonic() < deadline, f'no step in job {other}: {steps!r}'
            time.sleep(0.2)
            steps = on_host(CONTROLLER, ['squeue', '-h', '-s', '-j', other, '-o', '%i %N']).stdout
        started = time.monotonic()
        assert slurm_jobs(tmp_path, 'cancel', other) == {}
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    code = int(stdout.split('step exited: ')[1].split()[0])
    assert code != 0, stdout + stderr
    assert took < 30, took
    wait_for_phase(tmp_path, other, 'ended', timeout=30)
