"""Parsing the schedulers' answers and the walltime, without a scheduler."""

from __future__ import annotations

import datetime
import json

import pytest

from actors.common.errors import ConfigurationError
from actors.site.batch_jobs.base import JobState
from actors.site.batch_jobs.parsl_jobs import PBSJobs
from actors.site.batch_jobs.parsl_jobs import SlurmJobs
from actors.site.batch_jobs.parsl_jobs import batch_jobs_for
from actors.site.batch_jobs.parsl_jobs import exec_hosts
from actors.site.batch_jobs.parsl_jobs import one_line
from actors.site.batch_jobs.parsl_jobs import parse_qstat
from actors.site.batch_jobs.parsl_jobs import parse_squeue
from actors.site.batch_jobs.parsl_jobs import walltime_text

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ('exec_host', 'hosts'),
    [
        ('n1/0*8+n2/0*8', ('n1', 'n2')),
        ('x1000c0s0b0n0/0*64', ('x1000c0s0b0n0',)),
        ('n1.cluster.org/0+n1.cluster.org/1+n3.cluster.org/0', ('n1', 'n3')),
        ('', ()),
    ],
)
def test_exec_host_gives_each_host_once_without_domain(exec_host: str, hosts: tuple[str, ...]):
    assert exec_hosts(exec_host) == hosts


def _qstat(jobs: dict[str, dict[str, str]]) -> str:
    return json.dumps({'timestamp': 1, 'pbs_version': '2022.1', 'Jobs': jobs})


def test_qstat_states_by_job_state_letter():
    output = _qstat(
        {
            '1.pbs01': {'job_state': 'Q', 'comment': 'Not Running: Insufficient resources'},
            '2.pbs01': {
                'job_state': 'R',
                'exec_host': 'n1/0*8+n2/0*8',
                'stime': 'Mon Dec  7 08:00:00 2026',
            },
            '3.pbs01': {'job_state': 'H'},
            '4.pbs01': {'job_state': 'E', 'exec_host': 'n3/0'},
            '5.pbs01': {'job_state': 'F', 'comment': 'Job run at ... and finished'},
            '6.pbs01': {'job_state': 'Z'},
        }
    )
    ids = ['1.pbs01.example.org', '2.pbs01', '3.pbs01', '4.pbs01', '5.pbs01', '6.pbs01', '7.pbs01']
    states = parse_qstat(output, ids)
    assert states == {
        '1.pbs01.example.org': JobState('pending', reason='Not Running: Insufficient resources'),
        '2.pbs01': JobState(
            'running',
            ('n1', 'n2'),
            started=datetime.datetime(2026, 12, 7, 8, 0, 0).timestamp(),
        ),
        '3.pbs01': JobState('pending', reason='job_state H'),
        # Exiting: the script is over, nothing new starts on its nodes.
        '4.pbs01': JobState('ended', reason='job_state E'),
        '5.pbs01': JobState('ended', reason='Job run at ... and finished'),
        '6.pbs01': JobState('ended', reason='job_state Z'),
        '7.pbs01': JobState('ended', reason='no longer known to PBS'),
    }


def test_qstat_without_output_means_every_job_ended():
    assert parse_qstat('', ['9.pbs']) == {
        '9.pbs': JobState('ended', reason='no longer known to PBS')
    }


def test_qstat_garbage_is_an_error():
    with pytest.raises(ValueError):
        parse_qstat('qstat: bad things', ['9.pbs'])


def test_squeue_lines_map_to_phases_and_nodes():
    output = '\n'.join(
        [
            '11|RUNNING|n[1-2],gpu07|2026-12-07T08:00:00|None',
            '12|PENDING||N/A|Resources',
            '13|CANCELLED|n3|2026-12-07T08:00:00|None',
            '14|COMPLETING|n4|2026-12-07T08:00:00|NonZeroExitCode',
            '15|CONFIGURING|n[5-6]|2026-12-07T08:00:00|None',
            '16|TIMEOUT|n1|2026-12-07T08:00:00|TimeLimit',
            '17|SOME_NEW_STATE||N/A|None',
            '99|RUNNING|n9|2026-12-07T08:00:00|None',  # not asked about
            '',
        ]
    )
    ids = ['11', '12', '13', '14', '15', '16', '17', '18']
    assert parse_squeue(output, ids) == {
        '11': JobState(
            'running',
            ('n1', 'n2', 'gpu07'),
            started=datetime.datetime(2026, 12, 7, 8, 0, 0).timestamp(),
        ),
        '12': JobState('pending', reason='PENDING (Resources)'),
        '13': JobState('ended', reason='CANCELLED'),
        '14': JobState('ended', reason='COMPLETING (NonZeroExitCode)'),
        '15': JobState('pending', reason='CONFIGURING'),
        '16': JobState('ended', reason='TIMEOUT (TimeLimit)'),
        '17': JobState('ended', reason='SOME_NEW_STATE'),
        '18': JobState('ended', reason='no longer known to Slurm'),
    }


@pytest.mark.parametrize(
    ('seconds', 'text', 'minutes_text'),
    [
        (1, '00:00:01', '00:01:00'),
        (0.2, '00:00:01', '00:01:00'),
        (59.5, '00:01:00', '00:01:00'),
        (61, '00:01:01', '00:02:00'),
        (3600, '01:00:00', '01:00:00'),
        (86400 * 5 + 1, '120:00:01', '120:01:00'),
    ],
)
def test_walltime_rounds_up(seconds: float, text: str, minutes_text: str):
    assert walltime_text(seconds) == text
    assert walltime_text(seconds, whole_minutes=True) == minutes_text


@pytest.mark.parametrize('seconds', [0, -5, float('inf'), float('nan')])
def test_walltime_must_be_positive(seconds: float):
    with pytest.raises(ConfigurationError, match='walltime'):
        walltime_text(seconds)


def test_one_line_joins_the_first_text_that_says_something():
    stderr = 'sbatch: error: invalid partition specified: nope\n\nsbatch: error: Batch job failed\n'
    assert one_line('', stderr, 'x') == (
        'sbatch: error: invalid partition specified: nope; sbatch: error: Batch job failed'
    )
    assert one_line(None, '  \n') == ''


def test_factory_gives_each_scheduler(tmp_path):
    assert isinstance(batch_jobs_for('slurm', str(tmp_path)), SlurmJobs)
    assert isinstance(batch_jobs_for('pbs', str(tmp_path)), PBSJobs)


def test_factory_names_a_bad_scheduler_and_the_valid_ones(tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        batch_jobs_for('lsf', str(tmp_path))
    message = str(caught.value)
    assert "'lsf'" in message
    assert 'slurm' in message and 'pbs' in message
