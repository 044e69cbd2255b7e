"""Walltime awareness: when the batch job's allocation ends.

The end comes from a flag (``launch.py --walltime``), else the scheduler:
Slurm's ``SLURM_JOB_END_TIME`` (Unix time; Slurm 23.02 and later), else the
job's end time as ``squeue`` tells it (older Slurm sets no variable: 22.05's
``salloc`` and ``sbatch`` do not), or ``PBS_WALLTIME`` (seconds, set by
Torque/PBS; counted from the time the launcher starts, which is a little
after the job started, so keep a margin).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import subprocess
import time
from collections.abc import Mapping

from actors.common.errors import ConfigurationError
from actors.common.timing import SQUEUE_TIMEOUT

logger = logging.getLogger(__name__)


def parse_duration(text: str) -> float:
    """Seconds in ``SECONDS``, ``MM:SS``, ``HH:MM:SS`` or ``D-HH:MM:SS``.

    Raises:
        ConfigurationError: If ``text`` is not such a duration.

    """
    spec = text.strip()
    try:
        days = 0
        if '-' in spec[1:]:
            head, spec = spec.split('-', 1)
            days = int(head)
        parts = [float(p) for p in spec.split(':')]
        if not 1 <= len(parts) <= 3 or days < 0:
            raise ValueError(spec)
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + part
        seconds += days * 86400
    except ValueError:
        raise ConfigurationError(
            f'walltime {text!r} is not a duration; give SECONDS, HH:MM:SS or D-HH:MM:SS',
        ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f'walltime {text!r} must be a positive duration')
    return seconds


def allocation_end(
    walltime: str | None = None,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
) -> float | None:
    """Unix time the allocation ends, or ``None`` if unknown.

    Args:
        walltime: Remaining time from ``now`` (overrides the environment).
        env: Environment to read the scheduler's variables from.
        now: Current time (default: ``time.time()``).

    Raises:
        ConfigurationError: If the flag or a scheduler variable is malformed.

    """
    env = os.environ if env is None else env
    now = time.time() if now is None else now
    if walltime is not None:
        return now + parse_duration(walltime)
    end = env.get('SLURM_JOB_END_TIME')
    if end:
        try:
            return float(end)
        except ValueError:
            raise ConfigurationError(
                f'SLURM_JOB_END_TIME={end!r} is not a Unix time',
            ) from None
    if env.get('SLURM_JOB_ID'):
        return slurm_job_end(env['SLURM_JOB_ID'])
    pbs = env.get('PBS_WALLTIME')
    if pbs:
        return now + parse_duration(pbs)
    return None


def slurm_job_end(job_id: str) -> float | None:
    """Unix time a Slurm job ends, from ``squeue`` (``None``: no limit, or no answer)."""
    command = ['squeue', '--noheader', f'--jobs={job_id}', '--format=%e']
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.warning('cannot ask squeue when job %s ends (%s); no walltime drain', job_id, e)
        return None
    text = done.stdout.strip()
    try:
        # Slurm prints the cluster's local time, without a zone.
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        if done.returncode != 0:
            logger.warning(
                'squeue could not tell when job %s ends (%s); no walltime drain',
                job_id,
                (done.stderr.strip() or f'exit {done.returncode}')[:200],
            )
        return None  # 'N/A', 'NONE', 'Unknown': no time limit


@dataclasses.dataclass(frozen=True)
class Walltime:
    """A Director's view of its allocation's end.

    Attributes:
        end: Unix time the allocation ends (``None``: no limit).
        margin: Seconds before ``end`` at which the Director drains: it
            stops admitting calls and cancels the calls still running.

    """

    end: float | None = None
    margin: float = 30.0

    def __post_init__(self) -> None:
        if not (self.margin >= 0 and math.isfinite(self.margin)):
            raise ConfigurationError(
                f'drain margin {self.margin!r} is invalid; give seconds >= 0',
            )

    @property
    def drain_at(self) -> float | None:
        """Unix time draining starts."""
        return None if self.end is None else self.end - self.margin

    def refusal(self, expected: float | None, now: float | None = None) -> str | None:
        """Why a call expected to take ``expected`` seconds cannot run, or ``None``."""
        if self.end is None:
            return None
        now = time.time() if now is None else now
        left = self.end - self.margin - now
        if left <= 0:
            return f'the allocation is draining (ends in {self.end - now:.0f}s)'
        if expected is not None and expected > left:
            return (
                f'the call declares {expected:g}s but only {left:.0f}s are left '
                f'before the allocation drains ({self.margin:g}s before its end)'
            )
        return None
