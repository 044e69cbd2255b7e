"""The Director's arguments in either form: ours, or the seed pattern's ``(run_dir, nodefile)``.

The pattern this project grew from (academy-agents' ``agentic_blueprint_catalog``,
``hpc_hierarchical/complete.py``) launches each Director with
``manager.launch(Director, args=(run_dir, nodefile))``: a run directory and a
file naming the Director's slice of the batch job. Its client code must run
unchanged, so [`director_args`][actors.director.seed_args.director_args]
turns that pair into the ``(partition, profile, run_dir)`` the Director
takes otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from actors.common.errors import ConfigurationError
from actors.common.errors import describe_os_error
from actors.common.errors import quoted
from actors.job.partition import Partition
from actors.job.partition import PartitionRequest
from actors.job.partition import read_nodefile
from actors.job.partition import write_partition
from actors.site.profile import SiteProfile
from actors.site.profile import load_site

SEED_INDEX = 0
"""Partition index of a seed-style Director: it knows only its own slice, in its own run dir."""


def site_for(environ: Mapping[str, str] | None = None) -> str:
    """The site profile for a Director that was not given one.

    The batch system the Director runs in says how to reach the nodes: a PBS
    job (``$PBS_NODEFILE``) gets the generic ``pbs`` profile (``mpiexec``), a
    Slurm job (``$SLURM_JOB_NODELIST``) the ``slurm`` one (``srun``), and
    anywhere else the nodes are made up: the simulated ``local`` site.
    """
    env = os.environ if environ is None else environ
    if env.get('PBS_NODEFILE'):
        return 'pbs'
    if env.get('SLURM_JOB_NODELIST'):
        return 'slurm'
    return 'local'


def seed_partition(run_dir: str | os.PathLike[str], nodefile: str | os.PathLike[str]) -> Partition:
    """The partition of a seed-style Director: the nodefile's hosts, its copy under ``run_dir``.

    The copy (``<run_dir>/partitions/partition-0.nodes``, de-duplicated) is the
    one the Director's launcher reads and may rewrite when nodes move: the
    caller's file is only read.

    Raises:
        ConfigurationError: If the nodefile is missing, unreadable, empty or
            malformed, or the run directory cannot be made (naming the path).

    """
    nodes = read_nodefile(nodefile)
    try:
        return write_partition(SEED_INDEX, nodes, run_dir)
    except OSError as e:
        raise ConfigurationError(
            f"run_dir {str(run_dir)!r} cannot hold the Director's files: {describe_os_error(e)}"
        ) from None


def director_args(
    partition: Any,
    profile: Any,
    run_dir: Any,
    environ: Mapping[str, str] | None = None,
) -> tuple[Partition | PartitionRequest, SiteProfile, str]:
    """The Director's ``(partition, profile, run_dir)`` from either form of its arguments.

    Args:
        partition: A [`Partition`][actors.job.partition.Partition] or
            [`PartitionRequest`][actors.job.partition.PartitionRequest]; in the
            seed's form, the run directory.
        profile: A [`SiteProfile`][actors.site.profile.SiteProfile]; in the
            seed's form, the nodefile's path.
        run_dir: The run directory; ``None`` in the seed's form.
        environ: Environment that names the batch system (default: this process's).

    Returns:
        The partition, the site profile and the run directory (absolute in the
        seed's form, where the Director's files then live).

    Raises:
        ConfigurationError: If the arguments are neither form, or the seed's
            nodefile or run directory is unusable; the message names the value.

    """
    paths = (str, os.PathLike)
    if run_dir is None and isinstance(partition, paths) and isinstance(profile, paths):
        if not os.fspath(partition) or not os.fspath(profile):
            raise ConfigurationError(
                f'Director(run_dir, nodefile): both must be non-empty paths, got '
                f'run_dir={quoted(partition)}, nodefile={quoted(profile)}'
            )
        directory = os.path.abspath(os.path.expanduser(os.fspath(partition)))
        part = seed_partition(directory, os.path.expanduser(os.fspath(profile)))
        return part, load_site(site_for(environ)), directory
    if (
        isinstance(partition, (Partition, PartitionRequest))
        and isinstance(profile, SiteProfile)
        and isinstance(run_dir, paths)
    ):
        return partition, profile, os.fspath(run_dir)
    raise ConfigurationError(
        'Director takes (run_dir, nodefile), as the seed pattern launches it, or '
        f'(partition, profile, run_dir); got ({_kind(partition)}, {_kind(profile)}'
        + (f', {_kind(run_dir)})' if run_dir is not None else ')')
    )


def _kind(value: Any) -> str:
    """A value for an error message: its type and a short repr."""
    return f'{type(value).__name__} {quoted(value, 60)}'
