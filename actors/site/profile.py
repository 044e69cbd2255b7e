"""Per-machine site profiles, loaded from ``configs/<site>/site.toml``.

A profile is data, not code: scheduler, launcher and its flags, workers and
accelerators per node, the network interface workers use to reach the
interchange. Adding a machine means adding a folder with a ``site.toml``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import tomllib
from typing import Any
from typing import Literal

from actors.common.errors import ConfigurationError

CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[2] / 'configs'
"""Default location of the site folders (the repository's ``configs/``)."""

Scheduler = Literal['none', 'pbs', 'slurm']
LauncherKind = Literal['mpiexec', 'srun', 'fork']

_HYDRA_FORK = re.compile(r'(^|\s)--?launcher[=\s]+fork(\s|$)')
_SCHEDULERS = ('none', 'pbs', 'slurm')
_LAUNCHERS = ('mpiexec', 'srun', 'fork')
_MPI_LAUNCHERS = ('mpiexec', 'srun', 'aprun')


@dataclasses.dataclass(frozen=True)
class SiteProfile:
    """How Directors place Parsl workers on one machine.

    Attributes:
        name: Site name (the folder name under ``configs/``).
        description: One line for humans.
        scheduler: Batch scheduler that provides the node list.
        launcher: ``mpiexec`` (one worker pool per node through the
            partition's nodefile), ``srun`` (``--nodelist`` of the partition)
            or ``fork`` (a simulated job: one pool per node of the nodefile,
            all on this machine, started by the block's shell;
            [`ForkLauncher`][actors.site.fork_launcher.ForkLauncher]).
        launcher_args: Extra launcher flags, e.g. ``--ppn 1 --cpu-bind depth``.
        bind_cmd: Flag that the launcher uses to switch CPU binding off
            (``--bind-to`` for MPICH hydra, ``--cpu-bind`` for Cray PALS).
        mpi_launcher: Launcher of multi-node (MPI) tool calls: ``mpiexec``,
            ``srun`` or ``aprun`` (Parsl's MPI mode builds ``$PARSL_MPI_PREFIX``
            with it).
        mpi_launcher_options: Extra flags appended to every MPI call's launch
            prefix, e.g. ``-launcher fork`` to simulate nodes on one machine.
        workers_per_node: Parsl workers (tool slots) per node.
        cores_per_worker: Cores one worker claims; small values let a
            simulated job oversubscribe a laptop.
        accelerators_per_node: GPUs/tiles/GCDs per node (0 for none).
        accelerators: Explicit accelerator IDs to pin workers to; empty means
            ``range(accelerators_per_node)`` when that is > 0.
        interface: Network interface whose address workers connect to; an
            empty string means loopback on a simulated job and, in a real
            job, the address this host's own name resolves to
            (``actors.site.addresses``).
        encrypted: Worker pools and interchanges talk CurveZMQ with keys
            private to the run directory (Parsl's ``encrypted=True``), so that
            no other user on the job's network can register as a pool or read
            the calls; ``false`` only for a single-user machine.
        worker_init: Shell lines run before workers start (modules, venvs).
        queue: Default queue/partition for the endpoint template.
        walltime: Default walltime ``HH:MM:SS`` for the endpoint template.
        strategy_period: Seconds between Parsl scaling-strategy passes; a short
            period starts the first block sooner.
        prefetch_capacity: Tasks each worker pool holds beyond its idle
            workers, so a worker that finishes starts the next call at once
            instead of waiting for the interchange (0 for long calls of
            uneven length, where a prefetched task could wait behind one).
        heartbeat_period: Seconds between worker-pool heartbeats.
        heartbeat_threshold: Seconds of silence before a pool is declared lost.
        lean_imports: Keep modules that Parsl's processes never use (the
            Globus Compute SDK) out of the interchange, worker pools and
            workers (``actors.site.lean_imports``); off if a tool needs them.
        notes: What is uncertain about the values for the real machine.

    """

    name: str
    description: str = ''
    scheduler: Scheduler = 'none'
    launcher: LauncherKind = 'mpiexec'
    launcher_args: str = ''
    bind_cmd: str = '--bind-to'
    mpi_launcher: str = 'mpiexec'
    mpi_launcher_options: str = ''
    workers_per_node: int = 4
    cores_per_worker: float = 1.0
    accelerators_per_node: int = 0
    accelerators: tuple[str, ...] = ()
    interface: str = ''
    encrypted: bool = True
    worker_init: str = ''
    queue: str = ''
    walltime: str = '01:00:00'
    strategy_period: float = 0.2
    prefetch_capacity: int = 0
    heartbeat_period: int = 5
    heartbeat_threshold: int = 30
    lean_imports: bool = True
    notes: str = ''

    def __post_init__(self) -> None:
        if self.scheduler not in _SCHEDULERS:
            raise ConfigurationError(
                f'site {self.name!r}: scheduler {self.scheduler!r} is not one of '
                f'{", ".join(_SCHEDULERS)}',
            )
        if self.launcher not in _LAUNCHERS:
            raise ConfigurationError(
                f'site {self.name!r}: launcher {self.launcher!r} is not one of '
                f'{", ".join(_LAUNCHERS)}',
            )
        if self.launcher == 'fork' and self.launcher_args.strip():
            raise ConfigurationError(
                f'site {self.name!r}: the fork launcher of a simulated job takes no launcher '
                f'arguments (got {self.launcher_args!r}); to try mpiexec flags, simulate a PBS '
                'job with --site pbs (see README)',
            )
        if self.mpi_launcher not in _MPI_LAUNCHERS:
            raise ConfigurationError(
                f'site {self.name!r}: mpi_launcher {self.mpi_launcher!r} is not one of '
                f'{", ".join(_MPI_LAUNCHERS)}',
            )
        if self.workers_per_node < 1:
            raise ConfigurationError(
                f'site {self.name!r}: workers_per_node must be >= 1, got {self.workers_per_node}',
            )
        if self.prefetch_capacity < 0:
            raise ConfigurationError(
                f'site {self.name!r}: prefetch_capacity must be >= 0, got {self.prefetch_capacity}',
            )
        if not isinstance(self.lean_imports, bool):
            raise ConfigurationError(
                f'site {self.name!r}: lean_imports must be true or false, '
                f'got {self.lean_imports!r}',
            )
        if not isinstance(self.encrypted, bool):
            raise ConfigurationError(
                f'site {self.name!r}: encrypted must be true or false, got {self.encrypted!r}',
            )
        if self.cores_per_worker <= 0:
            raise ConfigurationError(
                f'site {self.name!r}: cores_per_worker must be > 0, got {self.cores_per_worker}',
            )

    @property
    def simulated_hosts(self) -> bool:
        """Whether every pool runs on this machine (fork launcher, or hydra's ``-launcher fork``).

        Such pools all report this machine's name, not the node they stand for.
        """
        return self.launcher == 'fork' or bool(_HYDRA_FORK.search(self.launcher_args))

    @property
    def mpi_in_one_job(self) -> bool:
        """Whether an MPI call's ranks are one step of one batch job (``srun``).

        A step cannot span two jobs: such a call's nodes all come from the run's
        own job or all from one extra job.
        """
        return self.mpi_launcher == 'srun'

    def with_overrides(self, **changes: Any) -> SiteProfile:
        """Return a copy with some fields replaced (``None`` values ignored)."""
        return dataclasses.replace(
            self,
            **{k: v for k, v in changes.items() if v is not None},
        )


def available_sites(configs_dir: str | os.PathLike[str] = CONFIGS_DIR) -> list[str]:
    """Names of the sites that have a ``site.toml`` under ``configs_dir``."""
    root = pathlib.Path(configs_dir)
    return sorted(p.parent.name for p in root.glob('*/site.toml'))


def load_site(
    name: str,
    configs_dir: str | os.PathLike[str] = CONFIGS_DIR,
) -> SiteProfile:
    """Load ``configs/<name>/site.toml`` into a [`SiteProfile`][actors.site.profile.SiteProfile].

    Raises:
        ConfigurationError: If the site is unknown or its file is invalid.

    """
    sites = available_sites(configs_dir)
    if name not in sites:
        raise ConfigurationError(
            f'unknown site {name!r}; choose one of: {", ".join(sites)}',
        )
    path = pathlib.Path(configs_dir, name, 'site.toml')
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError(f'{path}: invalid TOML ({e})') from None
    fields = {f.name for f in dataclasses.fields(SiteProfile)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigurationError(
            f'{path}: unknown key(s) {", ".join(unknown)}; '
            f'valid keys: {", ".join(sorted(fields - {"name"}))}',
        )
    if 'accelerators' in data:
        data['accelerators'] = tuple(str(a) for a in data['accelerators'])
    try:
        return SiteProfile(name=name, **data)
    except TypeError as e:
        raise ConfigurationError(f'{path}: {e}') from None
