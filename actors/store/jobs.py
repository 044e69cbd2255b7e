"""The journal of a run's extra batch jobs: every job, its nodes and its node-hours.

``<run>/jobs/jobs.jsonl`` gets one line per event of an extra job, flushed
before the coordinator goes on: ``submitted`` (its request), ``refused``
(the scheduler's one line), ``started`` (its nodes), ``ended`` (why, and the
node-hours it used), ``cancel`` (the run asked the scheduler to end it). The
nodes' own arrivals and departures are in the move journal (``joined``,
``left``). ``--resume`` and ``launch.py cleanup`` read it to find the jobs
that may still run; ``launch.py report`` draws them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import time
from typing import Any

from actors.common.private import open_private
from actors.common.private import private_dir
from actors.store.json_lines import read_json_lines

logger = logging.getLogger(__name__)

JOBS_FILE = 'jobs.jsonl'


def jobs_dir(run_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Where a run keeps its extra jobs' journal (and a simulated scheduler's queue)."""
    return pathlib.Path(run_dir, 'jobs')


@dataclasses.dataclass
class JobRecord:
    """One extra batch job, as its journal lines tell it.

    Attributes:
        job: Its id in the scheduler.
        scheduler: ``slurm``, ``pbs`` or ``simulated``.
        nodes_asked: Nodes it asked for.
        walltime: Its walltime in seconds.
        submitted: Unix time it was submitted.
        started: Unix time it started (``None``: never).
        ended: Unix time it ended (``None``: it may still run).
        nodes: Its nodes once started.
        why: Why it ended (``idle``, ``walltime``, ``ended by the scheduler``, ...).
        cancel_asked: Whether the run asked the scheduler to end it.

    """

    job: str
    scheduler: str
    nodes_asked: int
    walltime: float
    submitted: float
    started: float | None = None
    ended: float | None = None
    nodes: list[str] = dataclasses.field(default_factory=list)
    why: str = ''
    cancel_asked: bool = False

    @property
    def phase(self) -> str:
        """``pending``, ``running`` or ``ended``, as far as the journal knows."""
        if self.ended is not None:
            return 'ended'
        return 'pending' if self.started is None else 'running'

    def node_hours(self, now: float | None = None) -> float:
        """Node-hours it used so far (from its start to its end, or ``now``)."""
        if self.started is None:
            return 0.0
        end = self.ended if self.ended is not None else (time.time() if now is None else now)
        return len(self.nodes) * max(end - self.started, 0.0) / 3600.0


class JobJournal:
    """Append the events of a run's extra jobs.

    Args:
        run_dir: The run directory.

    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.directory = private_dir(jobs_dir(run_dir))
        self._file = open_private(self.directory / JOBS_FILE, 'a')

    def write(self, event: str, job: str, **fields: Any) -> None:
        """Append one event of ``job`` (flushed)."""
        line = {'at': time.time(), 'event': event, 'job': job, **fields}
        self._file.write(json.dumps(line) + '\n')
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def read_job_events(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every event of the journal, in order (a torn last line is skipped)."""
    return read_json_lines(jobs_dir(run_dir) / JOBS_FILE)


def read_jobs(run_dir: str | os.PathLike[str]) -> dict[str, JobRecord]:
    """Each extra job of the run (by id), folded from its journal."""
    jobs: dict[str, JobRecord] = {}
    for line in read_job_events(run_dir):
        job_id, event = str(line.get('job')), line.get('event')
        if event == 'submitted':
            jobs[job_id] = JobRecord(
                job=job_id,
                scheduler=str(line.get('scheduler', '')),
                nodes_asked=int(line.get('nodes_asked', 0)),
                walltime=float(line.get('walltime', 0.0)),
                submitted=float(line['at']),
            )
            continue
        record = jobs.get(job_id)
        if record is None:
            continue
        if event == 'started':
            record.started = float(line.get('started', line['at']))
            record.nodes = [str(n) for n in line.get('nodes', [])]
        elif event == 'ended':
            record.ended = float(line['at'])
            record.why = str(line.get('why', ''))
        elif event == 'cancel':
            record.cancel_asked = True
    return jobs


def live_jobs(run_dir: str | os.PathLike[str]) -> list[JobRecord]:
    """The run's extra jobs that may still run or wait (none ended in the journal)."""
    return [record for record in read_jobs(run_dir).values() if record.phase != 'ended']
