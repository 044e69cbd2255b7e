"""Which scheduler a run's extra jobs go to, and ending the jobs a run left behind.

A job's scheduler is recorded with it in the jobs journal (``slurm``, ``pbs``,
``simulated``): a job is always asked about and cancelled through the
scheduler that took it, whatever the run's growth policy says now.
"""

from __future__ import annotations

import logging
import os
import time

from actors.coordinator.growth import GrowthPolicy
from actors.site.batch_jobs.base import BatchJobs
from actors.site.batch_jobs.simulated import SimulatedJobs
from actors.store.jobs import JobJournal
from actors.store.jobs import JobRecord
from actors.store.jobs import jobs_dir
from actors.store.jobs import live_jobs

logger = logging.getLogger(__name__)


def open_scheduler(policy: GrowthPolicy, run_dir: str) -> BatchJobs:
    """The scheduler new extra jobs go to (the simulated one with the policy's settings)."""
    if policy.scheduler == 'simulated':
        return SimulatedJobs(
            str(jobs_dir(run_dir)),
            start_after=policy.simulated_start_after,
            capacity=policy.simulated_capacity,
            owner_mark=os.path.abspath(run_dir),
        )
    return scheduler_for(policy.scheduler, run_dir)


def scheduler_for(kind: str, run_dir: str) -> BatchJobs:
    """The scheduler named ``kind`` for the jobs of ``run_dir``.

    Raises:
        ConfigurationError: If ``kind`` is no scheduler this package knows.

    """
    if kind == 'simulated':
        return SimulatedJobs(str(jobs_dir(run_dir)), owner_mark=os.path.abspath(run_dir))
    # Parsl only where a real scheduler is used: the coordinator's process stays light.
    from actors.site.batch_jobs.parsl_jobs import batch_jobs_for

    return batch_jobs_for(kind, str(jobs_dir(run_dir) / 'scripts'))


def end_leftover_jobs(run_dir: str) -> list[JobRecord]:
    """Cancel the run's extra jobs that the journal says may still run; the jobs it ended.

    What ``launch.py cleanup`` does, and a run does once its coordinator
    stopped (had it died, its jobs would hold their nodes to their walltime).
    """
    live = live_jobs(run_dir)
    if not live:
        return []
    ended = []
    schedulers: dict[str, BatchJobs] = {}
    journal = JobJournal(run_dir)
    try:
        for record in live:
            try:
                if record.scheduler not in schedulers:
                    schedulers[record.scheduler] = scheduler_for(record.scheduler, run_dir)
                schedulers[record.scheduler].cancel(record.job)
            except Exception as e:
                logger.warning('extra job %s: cancel failed: %s', record.job, e)
                continue
            journal.write('cancel', record.job, why='cleanup')
            record.ended, record.why = time.time(), 'cleanup'
            journal.write('ended', record.job, why='cleanup', node_hours=record.node_hours())
            ended.append(record)
    finally:
        journal.close()
    return ended
