"""The namespace Slurm cluster of ``.ci/slurm-cluster`` for the tests.

``.ci/slurm-cluster up`` starts a real Slurm cluster on this machine: the
controller ``ctl`` (also the login node: run ``salloc``/``sbatch``/``srun``
there) and the compute nodes ``n1``..``n4``, each in its own network and UTS
namespace, joined by a bridge on the private subnet 10.77.0.0/24 that has no
way out. The filesystem is shared (it is this machine's), so the repo, its
venv and ``tmp_path`` are visible on every node. Commands run on a host
through ``.ci/slurm-cluster exec HOST CMD...`` (:func:`on_host`,
:func:`popen_on_host`), which sets ``SLURM_CONF`` there; ``srun`` carries the
caller's environment (``PATH`` included) to the nodes.

Tests that need the cluster are marked ``slurm`` (registered in
``pyproject.toml`` under ``[tool.pytest.ini_options] markers``: ``MARKER``
below is the line) and use the session fixture :func:`slurm_cluster`, which
skips them with one line when the cluster is not up::

    from tests.slurm_cluster import slurm_cluster  # noqa: F401

    pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures('slurm_cluster')]
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / '.ci' / 'slurm-cluster'
CONTROLLER = 'ctl'
NODES = ('n1', 'n2', 'n3', 'n4')
HOSTS = (CONTROLLER, *NODES)
SUBNET = '10.77.0.0/24'
ADDRESSES = {
    'ctl': '10.77.0.10',
    'n1': '10.77.0.11',
    'n2': '10.77.0.12',
    'n3': '10.77.0.13',
    'n4': '10.77.0.14',
}
MARKER = 'slurm: needs the namespace Slurm cluster (.ci/slurm-cluster up); skipped when it is down'
"""The marker's registration line (``markers`` in ``pyproject.toml``)."""

FINISHED_STATES = frozenset(
    {
        'BOOT_FAIL',
        'CANCELLED',
        'COMPLETED',
        'DEADLINE',
        'FAILED',
        'NODE_FAIL',
        'OUT_OF_MEMORY',
        'PREEMPTED',
        'TIMEOUT',
    }
)
"""Job states after which a job never runs again."""


def cluster_available(timeout: float = 30.0) -> str | None:
    """Whether the cluster is up and its four nodes answer.

    Args:
        timeout: Seconds ``.ci/slurm-cluster status`` may take.

    Returns:
        None if the cluster is usable, else one line saying why not.
    """
    if not os.access(SCRIPT, os.X_OK):
        return f'{SCRIPT} is missing or not executable'
    if os.geteuid() != 0:
        return 'the Slurm cluster needs root (network namespaces)'
    try:
        proc = subprocess.run(
            [str(SCRIPT), 'status'],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f'.ci/slurm-cluster status took over {timeout:g}s'
    except OSError as exc:
        return f'.ci/slurm-cluster status failed to start: {exc}'
    if proc.returncode == 0:
        return None
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    last = lines[-1] if lines else f'status exited {proc.returncode}'
    return f'Slurm cluster not usable ({last}); start it with .ci/slurm-cluster up'


def host_argv(host: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` on ``host`` through ``.ci/slurm-cluster exec``.

    Args:
        host: ``ctl`` or one of ``n1``..``n4``.
        argv: The program and its arguments (no shell).

    Returns:
        The full command line.

    Raises:
        ValueError: ``host`` is not a cluster host or ``argv`` is empty.
    """
    if host not in HOSTS:
        raise ValueError(f'unknown host {host!r} (one of {", ".join(HOSTS)})')
    if not argv:
        raise ValueError('empty command')
    return [str(SCRIPT), 'exec', host, *argv]


def _environment(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """This process's environment with ``env`` on top (None: inherit as is)."""
    if env is None:
        return None
    return {**os.environ, **env}


def on_host(
    host: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    check: bool = False,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` on a cluster host and capture its output (text).

    Args:
        host: ``ctl`` or one of ``n1``..``n4``.
        argv: The program and its arguments (no shell).
        env: Variables set on top of this process's environment (``srun``
            then carries them to the nodes).
        cwd: Working directory (the filesystem is the same on every host).
        timeout: Seconds before the command is killed
            (:class:`subprocess.TimeoutExpired`).
        check: Raise :class:`subprocess.CalledProcessError` on a nonzero exit.
        input: Text for the command's stdin.

    Returns:
        The finished process, ``stdout`` and ``stderr`` as text.
    """
    return subprocess.run(
        host_argv(host, argv),
        env=_environment(env),
        cwd=cwd,
        timeout=timeout,
        check=check,
        input=input,
        capture_output=True,
        text=True,
    )


def popen_on_host(
    host: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    **popen_options: Any,
) -> subprocess.Popen[str]:
    """Start ``argv`` on a cluster host without waiting for it.

    The process keeps its pid through the namespace entry (every step execs),
    so signals sent to the returned process reach the command itself.

    Args:
        host: ``ctl`` or one of ``n1``..``n4``.
        argv: The program and its arguments (no shell).
        env: Variables set on top of this process's environment.
        cwd: Working directory.
        **popen_options: More :class:`subprocess.Popen` options (``stdout``,
            ``stderr``, ``start_new_session``...); text mode is on.

    Returns:
        The started process.
    """
    popen_options.setdefault('text', True)
    return subprocess.Popen(host_argv(host, argv), env=_environment(env), cwd=cwd, **popen_options)


def job_state(job_id: str, *, timeout: float = 30.0) -> str:
    """A job's state as the controller reports it (``PENDING``, ``COMPLETED``...).

    Args:
        job_id: The job's id (``sbatch --parsable`` prints it).
        timeout: Seconds ``scontrol`` may take.

    Returns:
        The job's ``JobState``.

    Raises:
        RuntimeError: ``scontrol`` does not know the job or gave no state.
    """
    proc = on_host(CONTROLLER, ['scontrol', '-o', 'show', 'job', job_id], timeout=timeout)
    match = re.search(r'\bJobState=(\S+)', proc.stdout)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f'scontrol show job {job_id}: {(proc.stderr or proc.stdout).strip()}')
    return match.group(1)


def wait_for_job(job_id: str, *, timeout: float = 90.0, interval: float = 0.2) -> str:
    """Poll a job's state until it is finished.

    Args:
        job_id: The job's id.
        timeout: Seconds to wait at most.
        interval: Seconds between polls.

    Returns:
        The finished state (one of :data:`FINISHED_STATES`).

    Raises:
        TimeoutError: The job did not finish in time (its last state is named).
    """
    deadline = time.monotonic() + timeout
    state = job_state(job_id)
    while state not in FINISHED_STATES:
        if time.monotonic() > deadline:
            raise TimeoutError(f'job {job_id} still {state} after {timeout:g}s')
        time.sleep(interval)
        state = job_state(job_id)
    return state


@pytest.fixture(scope='session')
def slurm_cluster() -> None:
    """Skip the test (one line) unless the namespace Slurm cluster is up."""
    reason = cluster_available()
    if reason is not None:
        pytest.skip(reason)
