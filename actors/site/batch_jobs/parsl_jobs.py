"""Slurm and PBS Pro jobs through Parsl's own providers.

A job submitted here runs nothing of ours: its script sleeps for the walltime,
so it holds its nodes until the scheduler ends it (walltime) or we cancel it;
the Directors start their pools inside it. Submitting and cancelling go
through Parsl's providers (``sbatch``/``scancel``, ``qsub``/``qdel``). Parsl's
own status polling knows only the jobs its provider submitted, and a run
re-adopts jobs from its journal after a restart, so ``states`` asks the
scheduler itself (``squeue``, ``qstat``) through the provider's command runner.

Every read or write of a provider's attributes is in this module. The parsing
of the schedulers' answers is in pure functions (``parse_squeue``,
``parse_qstat``, ``exec_hosts``) that the unit tests call directly.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import shlex
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import hostlist
from parsl.jobs.states import JobState as ParslJobState
from parsl.jobs.states import JobStatus
from parsl.launchers import SimpleLauncher
from parsl.providers import PBSProProvider
from parsl.providers import SlurmProvider
from parsl.providers.cluster_provider import ClusterProvider
from parsl.providers.errors import SubmitException

from actors.common.errors import ConfigurationError
from actors.common.errors import ExecutionError
from actors.site.batch_jobs.base import PROVIDER_SCHEDULERS
from actors.site.batch_jobs.base import BatchJobs
from actors.site.batch_jobs.base import JobPhase
from actors.site.batch_jobs.base import JobRequest
from actors.site.batch_jobs.base import JobState
from actors.site.batch_jobs.base import SubmitRefused

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30
"""Seconds a scheduler command (``sbatch``, ``squeue``, ``qstat``...) may take."""


# Slurm's job states (squeue's %T), by what they mean for the nodes. CONFIGURING has nodes
# that are still booting: no step starts there yet. COMPLETING has ended (its nodes are
# being cleaned up; no new step starts). SUSPENDED and STOPPED may resume, but nothing
# runs on their nodes meanwhile. Anything else (and any state Slurm adds later) has ended.
SLURM_PENDING = frozenset(
    {
        'PENDING',
        'CONFIGURING',
        'REQUEUED',
        'REQUEUE_FED',
        'REQUEUE_HOLD',
        'RESV_DEL_HOLD',
        'SUSPENDED',
        'STOPPED',
    }
)
SLURM_RUNNING = frozenset({'RUNNING', 'RESIZING', 'SIGNALING'})

# PBS Pro's job_state letters. E (exiting) counts as ended: the job's script is over
# (walltime or qdel) and PBS is tearing it down, so no new work starts on its nodes; a
# run that waited for R -> F would count nodes it can no longer use. T (transit) and M
# (moved) are on their way to a queue; S and U (suspended) may run again.
PBS_PENDING = frozenset({'Q', 'H', 'W', 'T', 'M', 'S', 'U'})
PBS_RUNNING = frozenset({'R', 'B'})

# squeue's fields, split on a character none of them holds (an empty node list of a
# pending job would shift whitespace-split fields).
SQUEUE_FORMAT = '%i|%T|%N|%S|%r'


def walltime_text(seconds: float, *, whole_minutes: bool = False) -> str:
    """A walltime in seconds as ``HH:MM:SS`` (hours may exceed 99).

    Args:
        seconds: The walltime (rounded up to a whole second, at least one).
        whole_minutes: Round up to whole minutes (at least one): Parsl's
            Slurm provider drops the seconds, and ``--time=0`` means no limit.

    Returns:
        The walltime as the schedulers write it.

    Raises:
        ConfigurationError: ``seconds`` is not a positive finite number.

    """
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f'walltime {seconds!r}: give a positive number of seconds')
    total = max(1, math.ceil(seconds))
    if whole_minutes:
        total = 60 * math.ceil(total / 60)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f'{hours:02d}:{minutes:02d}:{secs:02d}'


def _seconds_of(text: str) -> int:
    """``HH:MM:SS`` as seconds."""
    hours, minutes, secs = (int(part) for part in text.split(':'))
    return 3600 * hours + 60 * minutes + secs


def one_line(*texts: str | None) -> str:
    """The first non-empty text, its lines stripped and joined with ``; ``."""
    for text in texts:
        lines = [line.strip() for line in (text or '').splitlines() if line.strip()]
        if lines:
            return '; '.join(lines)
    return ''


def parse_squeue(output: str, job_ids: Sequence[str]) -> dict[str, JobState]:
    """Each job's state from ``squeue -h -t all -o '%i|%T|%N|%S|%r'``.

    Args:
        output: squeue's standard output.
        job_ids: The jobs asked about; one squeue no longer lists has ended
            (Slurm forgets a finished job after ``MinJobAge``).

    Returns:
        A state for every id of ``job_ids``.

    """
    states = dict.fromkeys(job_ids, JobState('ended', reason='no longer known to Slurm'))
    for line in output.splitlines():
        fields = line.strip().split('|', 4)
        if len(fields) != 5 or fields[0] not in states:
            continue
        job_id, state, nodelist, start, reason = fields
        reason = '' if reason == 'None' else reason
        phase = _slurm_phase(state)
        if phase == 'running':
            nodes = tuple(hostlist.expand_hostlist(nodelist)) if nodelist else ()
            states[job_id] = JobState('running', nodes, reason, started=_slurm_time(start))
        elif phase == 'pending':
            states[job_id] = JobState('pending', reason=f'{state} ({reason})' if reason else state)
        else:
            states[job_id] = JobState('ended', reason=f'{state} ({reason})' if reason else state)
    return states


def _slurm_time(text: str) -> float | None:
    """Unix time of squeue's ``%S`` (``2026-12-07T08:00:00``, local time), if it is one."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None  # N/A, Unknown


def _slurm_phase(state: str) -> JobPhase:
    """The phase of a Slurm job state (``RUNNING``, ``CANCELLED``...)."""
    if state in SLURM_RUNNING:
        return 'running'
    if state in SLURM_PENDING:
        return 'pending'
    return 'ended'


def _pbs_time(text: str) -> float | None:
    """Unix time of qstat's ``stime`` (``Mon Dec  7 08:00:00 2026``, local time), if it is one."""
    try:
        return time.mktime(time.strptime(' '.join(text.split()), '%a %b %d %H:%M:%S %Y'))
    except ValueError:
        return None


def exec_hosts(exec_host: str) -> tuple[str, ...]:
    """The hosts of PBS's ``exec_host`` (``n1/0*8+n2/0*8`` -> ``n1``, ``n2``).

    A host with several chunks is named once; domains are dropped (PBS may
    write ``n1.cluster.org``; the pools know the short name).
    """
    hosts: dict[str, None] = {}
    for chunk in exec_host.split('+'):
        host = chunk.strip().split('/', 1)[0].split('.', 1)[0]
        if host:
            hosts[host] = None
    return tuple(hosts)


def parse_qstat(output: str, job_ids: Sequence[str]) -> dict[str, JobState]:
    """Each job's state from ``qstat -x -f -F json`` (PBS Pro).

    Args:
        output: qstat's standard output (empty when it knew none of the jobs).
        job_ids: The jobs asked about, as ``qsub`` gave them
            (``123.server.domain``); qstat may name them shorter
            (``123.server``), so they are matched on the sequence number. A
            job qstat does not list has ended.

    Returns:
        A state for every id of ``job_ids``.

    Raises:
        ValueError: The output is not qstat's JSON.

    """
    jobs: dict[str, Any] = json.loads(output).get('Jobs', {}) if output.strip() else {}
    by_number = {_pbs_number(key): value for key, value in jobs.items()}
    states: dict[str, JobState] = {}
    for job_id in job_ids:
        job = jobs.get(job_id, by_number.get(_pbs_number(job_id)))
        if job is None:
            states[job_id] = JobState('ended', reason='no longer known to PBS')
            continue
        letter = str(job.get('job_state', ''))
        comment = str(job.get('comment', ''))
        if letter in PBS_RUNNING:
            states[job_id] = JobState(
                'running',
                exec_hosts(str(job.get('exec_host', ''))),
                started=_pbs_time(str(job.get('stime', ''))),
            )
        elif letter in PBS_PENDING:
            states[job_id] = JobState('pending', reason=comment or f'job_state {letter}')
        else:
            states[job_id] = JobState('ended', reason=comment or f'job_state {letter}')
    return states


def _pbs_number(job_id: str) -> str:
    """A PBS job id's sequence number (``123.server.domain`` -> ``123``)."""
    return job_id.split('.', 1)[0]


class _HoldLauncher(SimpleLauncher):
    """Parsl's SimpleLauncher without its warning about blocks of several nodes.

    The warning is for worker pools (one per node); this job's script is
    meant to run once, on the first node, while the others are just held.
    """

    def __call__(
        self, command: str, tasks_per_node: int, nodes_per_block: int, script_dir: str = ''
    ) -> str:
        return command


class _ParslJobs(BatchJobs):
    """What Slurm and PBS share: one Parsl provider per submission, commands through Parsl.

    Args:
        script_dir: Where the providers write the job scripts (and the jobs
            their stdout and stderr); created if missing.

    """

    submit_command = ''
    """The scheduler's submit command, for messages."""

    def __init__(self, script_dir: str) -> None:
        self.script_dir = os.path.abspath(script_dir)
        self._control: ClusterProvider | None = None

    def _provider(self, request: JobRequest | None) -> ClusterProvider:
        """A provider for ``request`` (None: for status and cancel only)."""
        raise NotImplementedError

    def _ready(self, provider: ClusterProvider) -> ClusterProvider:
        """``provider`` with this instance's script directory and command timeout."""
        os.makedirs(self.script_dir, exist_ok=True)
        provider.script_dir = self.script_dir
        provider.cmd_timeout = COMMAND_TIMEOUT
        return provider

    def _control_provider(self) -> ClusterProvider:
        """The provider that runs status and cancel commands (made once)."""
        if self._control is None:
            self._control = self._ready(self._provider(None))
        return self._control

    def _run(self, command: str) -> tuple[int, str, str]:
        """Run a scheduler command through Parsl's runner: exit code, stdout, stderr.

        Raises:
            ExecutionError: The command did not finish in time.

        """
        try:
            code, stdout, stderr = self._control_provider().execute_wait(command)
        except subprocess.TimeoutExpired as exc:
            raise ExecutionError(f'{self.kind}: `{command}` took over {exc.timeout:g}s') from exc
        return int(code), str(stdout), str(stderr)

    def submit(self, request: JobRequest) -> str:
        """Submit a job that sleeps on its nodes for the walltime; its id.

        Raises:
            SubmitRefused: The scheduler refused it (its own words, one line).
            ExecutionError: The scheduler did not answer in time (the job may
                or may not be queued).

        """
        try:
            provider = self._ready(self._provider(request))
            seconds = _seconds_of(provider.walltime)
            job_id = provider.submit(f'sleep {seconds}', 1, job_name=request.name)
        except SubmitException as exc:
            why = one_line(exc.stderr, exc.stdout, exc.message)
            raise SubmitRefused(
                f'{self.submit_command} refused job {request.name!r} ({request.nodes} nodes): {why}'
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ExecutionError(
                f'{self.kind}: submitting job {request.name!r} took over {exc.timeout:g}s'
            ) from exc
        if not job_id:
            raise ExecutionError(f'{self.submit_command} gave no job id for {request.name!r}')
        logger.info('%s job %s: %d nodes for %ss', self.kind, job_id, request.nodes, seconds)
        return str(job_id)

    def cancel(self, job_id: str) -> None:
        """Cancel a job through the provider; a job that has ended already is fine.

        Raises:
            ExecutionError: The cancel failed and the job has not ended.

        """
        provider = self._control_provider()
        # Parsl's cancel records the new status of the jobs its provider knows; a job
        # re-adopted after a restart is unknown to it, so it is entered (and dropped after).
        provider.resources.setdefault(
            job_id,
            {
                'job_id': job_id,
                'status': JobStatus(ParslJobState.UNKNOWN),
                'job_stdout_path': None,
                'job_stderr_path': None,
            },
        )
        try:
            (cancelled,) = provider.cancel([job_id])
        except subprocess.TimeoutExpired as exc:
            raise ExecutionError(f'{self.kind}: cancelling job {job_id} timed out') from exc
        finally:
            provider.resources.pop(job_id, None)
        if cancelled:
            return
        # The scheduler said no: fine if the job is over, else the job still holds nodes.
        state = self.states([job_id])[job_id]
        if state.phase != 'ended':
            raise ExecutionError(f'{self.kind}: could not cancel job {job_id} ({state.phase})')


class SlurmJobs(_ParslJobs):
    """Jobs on Slurm, through Parsl's ``SlurmProvider`` (``sbatch``, ``squeue``, ``scancel``).

    Args:
        script_dir: Where the job scripts (and the jobs' output) go.

    """

    kind = 'slurm'
    submit_command = 'sbatch'

    def _provider(self, request: JobRequest | None) -> ClusterProvider:
        # Each provider runs `sacct -X` when made (to choose its status command, which we
        # do not use): one quick command per submission.
        if request is None:
            return SlurmProvider(launcher=_HoldLauncher(), cmd_timeout=COMMAND_TIMEOUT)
        return SlurmProvider(
            partition=request.queue or None,
            account=request.account or None,
            nodes_per_block=request.nodes,
            walltime=walltime_text(request.walltime, whole_minutes=True),
            # exclusive (Parsl's default): the nodes are the run's alone.
            exclusive=True,
            launcher=_HoldLauncher(),
            cmd_timeout=COMMAND_TIMEOUT,
        )

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Each job's state, from ``squeue`` (also for jobs another instance submitted).

        Raises:
            ExecutionError: squeue failed.

        """
        if not job_ids:
            return {}
        ids = ','.join(job_ids)
        command = f'squeue -h -t all -j {shlex.quote(ids)} -o {shlex.quote(SQUEUE_FORMAT)}'
        code, stdout, stderr = self._run(command)
        if code != 0:
            # squeue asked about one job Slurm has forgotten fails, where a list with
            # some forgotten ones just leaves them out.
            if 'Invalid job id' in stderr:
                return parse_squeue('', job_ids)
            raise ExecutionError(f'squeue exited {code}: {one_line(stderr, stdout)}')
        return parse_squeue(stdout, job_ids)


class PBSJobs(_ParslJobs):
    """Jobs on PBS Pro, through Parsl's ``PBSProProvider`` (``qsub``, ``qstat``, ``qdel``).

    Args:
        script_dir: Where the job scripts (and the jobs' output) go.

    """

    kind = 'pbs'
    submit_command = 'qsub'

    def _provider(self, request: JobRequest | None) -> ClusterProvider:
        if request is None:
            return PBSProProvider(launcher=_HoldLauncher(), cmd_timeout=COMMAND_TIMEOUT)
        return PBSProProvider(
            queue=request.queue or None,
            account=request.account or None,
            nodes_per_block=request.nodes,
            walltime=walltime_text(request.walltime),
            # One chunk per node, each node the job's alone (PBS would pack chunks).
            scheduler_options='#PBS -l place=scatter:excl',
            launcher=_HoldLauncher(),
            cmd_timeout=COMMAND_TIMEOUT,
        )

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Each job's state, from ``qstat -x -f -F json`` (also jobs another instance submitted).

        Raises:
            ExecutionError: qstat failed, other than for jobs it no longer knows.

        """
        if not job_ids:
            return {}
        ids = ' '.join(shlex.quote(job_id) for job_id in job_ids)
        code, stdout, stderr = self._run(f'qstat -x -f -F json {ids}')
        # qstat exits non-zero when it knows some of the jobs not, and still prints the
        # others: only an answer that is not its JSON, or another error, is a failure.
        errors = [line for line in stderr.splitlines() if line.strip()]
        unknown_only = bool(errors) and all('Unknown Job Id' in line for line in errors)
        if code != 0 and not unknown_only:
            raise ExecutionError(f'qstat exited {code}: {one_line(stderr, stdout)}')
        try:
            return parse_qstat(stdout, job_ids)
        except ValueError as exc:
            raise ExecutionError(f'qstat gave no JSON: {one_line(stdout, stderr)}') from exc


def batch_jobs_for(scheduler: str, script_dir: str) -> BatchJobs:
    """The batch jobs of a scheduler.

    Args:
        scheduler: ``slurm`` or ``pbs``.
        script_dir: Where the job scripts go.

    Returns:
        The scheduler's :class:`BatchJobs`.

    Raises:
        ConfigurationError: ``scheduler`` is neither.

    """
    if scheduler == 'slurm':
        return SlurmJobs(script_dir)
    if scheduler == 'pbs':
        return PBSJobs(script_dir)
    raise ConfigurationError(
        f'batch scheduler {scheduler!r} is not supported (one of {", ".join(PROVIDER_SCHEDULERS)})'
    )
