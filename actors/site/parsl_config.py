"""Build a fresh Parsl configuration for one Director's partition.

Parsl configs are stateful (executors and providers keep their sockets and
job tables), so every Director gets a new [`Config`][parsl.config.Config] with
its own ``run_dir``. Workers are confined to the partition's nodes through the
launcher, never by mutating this process's environment:

* ``mpiexec``: ``worker_init`` exports ``PBS_NODEFILE=<partition nodefile>``
  for the block's shell only; Parsl's ``MpiExecLauncher`` starts one worker
  pool per host listed there.
* ``srun``: ``SrunLauncher`` with ``--nodelist=<partition hosts>``.
* ``fork`` (a simulated job): ``PBS_NODEFILE`` as for ``mpiexec``; the
  block's shell starts one pool per host listed there
  ([`ForkLauncher`][actors.site.fork_launcher.ForkLauncher]).

With ``mpi=True`` the config also holds an ``MPIExecutor`` for multi-node
tool calls: one worker pool on the Director's host (``SimpleLauncher``, started
on the first MPI call) whose MPI task scheduler hands out the partition's
nodes, read from ``$PBS_NODEFILE`` (or ``$SLURM_NODELIST`` on Slurm), which
the block's shell sets to the partition only.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shlex
import sys
from collections.abc import Callable

import hostlist
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.executors import MPIExecutor
from parsl.launchers import MpiExecLauncher
from parsl.launchers import SimpleLauncher
from parsl.launchers.base import Launcher
from parsl.providers import LocalProvider

from actors.common.errors import ConfigurationError
from actors.common.private import private_dir
from actors.job.partition import Partition
from actors.job.partition import write_partition
from actors.site.addresses import worker_address
from actors.site.fork_launcher import ForkLauncher
from actors.site.lean_imports import python_path
from actors.site.lean_imports import shadow_dir
from actors.site.node_provider import NodeProvider
from actors.site.profile import SiteProfile
from actors.site.srun_launcher import BlockSrunLauncher
from actors.worker.control import CONTROL_DIR_VARIABLE


def executor_label(partition: Partition) -> str:
    """Parsl executor label for a partition's executor."""
    return f'partition-{partition.index}'


def mpi_executor_label(partition: Partition) -> str:
    """Parsl executor label for a partition's MPI executor."""
    return f'partition-{partition.index}-mpi'


def make_launcher(profile: SiteProfile, partition: Partition, job: str | None = None) -> Launcher:
    """The Parsl launcher that starts one worker pool per partition node.

    ``job`` names the extra batch job the nodes belong to (``None``: the
    run's own): on Slurm the pools start as a step of that job.
    """
    if profile.launcher == 'srun':
        nodelist = hostlist.collect_hostlist(list(partition.nodes))
        overrides = (
            f'--nodes={partition.size} --ntasks-per-node=1 '
            f'--nodelist={shlex.quote(nodelist)} {profile.launcher_args}'
        )
        return BlockSrunLauncher(overrides=overrides.strip(), job=job)
    if profile.launcher == 'fork':
        return ForkLauncher()
    return MpiExecLauncher(
        debug=False,
        bind_cmd=profile.bind_cmd,
        overrides=profile.launcher_args,
    )


def _block_environment(
    work_dir: str | os.PathLike[str],
    control_dir: str | None,
) -> list[str]:
    """First lines of every block's script: its directories and Python environment."""
    # The Director's Python environment (with mpiexec from the mpich wheel and
    # process_worker_pool.py) comes first, whether or not a venv is activated.
    # MpiExecLauncher writes its de-duplicated hostfile to the current
    # directory: keep it (and the tools' files) in the run directory.
    bin_dir = os.path.dirname(sys.executable)
    lines = [f'cd {shlex.quote(str(work_dir))}', f'export PATH={shlex.quote(bin_dir)}:"$PATH"']
    if control_dir is not None:
        lines.append(f'export {CONTROL_DIR_VARIABLE}={shlex.quote(control_dir)}')
    return lines


def make_worker_init(
    profile: SiteProfile,
    partition: Partition,
    work_dir: str | os.PathLike[str],
    control_dir: str | None = None,
) -> str:
    """Shell lines run in the block's script before the launcher."""
    lines = _block_environment(work_dir, control_dir)
    if profile.launcher in ('mpiexec', 'fork'):
        lines.append(f'export PBS_NODEFILE={shlex.quote(partition.nodefile)}')
    if profile.worker_init:
        lines.append(profile.worker_init)
    lines.extend(_lean_lines(profile, work_dir))
    return '\n'.join(lines)


def make_mpi_worker_init(
    profile: SiteProfile,
    partition: Partition,
    work_dir: str | os.PathLike[str],
    control_dir: str | None = None,
) -> str:
    """Shell lines that point Parsl's MPI task scheduler at the partition's nodes."""
    lines = _block_environment(work_dir, control_dir)
    if profile.scheduler == 'slurm':
        nodelist = hostlist.collect_hostlist(list(partition.nodes))
        lines.append(f'export SLURM_NODELIST={shlex.quote(nodelist)}')
    else:
        # The scheduler prefers $SLURM_NODELIST; only the partition counts here.
        lines.append('unset SLURM_NODELIST')
        lines.append(f'export PBS_NODEFILE={shlex.quote(partition.nodefile)}')
    if profile.worker_init:
        lines.append(profile.worker_init)
    lines.extend(_lean_lines(profile, work_dir))
    return '\n'.join(lines)


def _lean_lines(profile: SiteProfile, work_dir: str | os.PathLike[str]) -> list[str]:
    """Shell lines that keep ``actors.site.lean_imports.SHADOWED`` out of the block's processes.

    Last, so that a ``module load`` in the profile's ``worker_init`` cannot undo them.
    """
    if not profile.lean_imports:
        return []
    directory = shlex.quote(str(shadow_dir(work_dir)))
    return [f'export PYTHONPATH={directory}"${{PYTHONPATH:+:$PYTHONPATH}}"']


def interchange_command(profile: SiteProfile, work_dir: str | os.PathLike[str]) -> list[str]:
    """How an executor starts its interchange (a child of the Director's process).

    Parsl's own interchange script, run by this interpreter: never looked up on
    ``PATH`` (Parsl's default), which misses it when the venv is not activated
    (an MCP host or a batch script naming ``.venv/bin/python`` directly). The
    shadows of ``actors.site.lean_imports`` come first on ``PYTHONPATH`` unless
    the profile turns them off.
    """
    # In a session of its own: a Ctrl-C at the terminal (SIGINT to the foreground process
    # group) is the Director's to handle; it stops the interchange in order, not mid-poll
    # with a traceback.
    command = [sys.executable, '-c', _OWN_SESSION, _interchange_script()]
    if not profile.lean_imports:
        return command
    path = python_path(shadow_dir(work_dir), os.environ.get('PYTHONPATH'))
    return ['env', f'PYTHONPATH={path}', *command]


_OWN_SESSION = (
    'import os, runpy, sys; os.setsid(); sys.argv = sys.argv[1:]; '
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
"""Runs the script named first on the command line in a new session (same process)."""


def _interchange_script() -> str:
    """Path of Parsl's interchange module (run as a script, as Parsl's ``interchange.py``)."""
    spec = importlib.util.find_spec('parsl.executors.high_throughput.interchange')
    if spec is None or spec.origin is None:  # pragma: no cover - Parsl is a dependency
        raise ConfigurationError('Parsl is installed without its HTEX interchange')
    return spec.origin


def make_mpi_executor(
    partition: Partition,
    profile: SiteProfile,
    work_dir: str | os.PathLike[str],
    control_dir: str | None = None,
    max_nodes: int | None = None,
) -> MPIExecutor:
    """An ``MPIExecutor`` for the Director's MPI calls, each on nodes the Director picks.

    Its single worker pool starts with the first MPI call and lives on the
    Director's host. Parsl's MPI task scheduler there hands out places from
    ``partition`` (``max_nodes`` of them: the most nodes one Director may
    hold); the Director admits a call only onto nodes it owns and drained
    (``actors.director.node_pools``) and sends their names with the call,
    whose command gets ``$PARSL_MPI_PREFIX`` built for them
    (``actors.tools.resources.mpi_environment``).
    """
    count = max(max_nodes or 0, partition.size)
    if count > partition.size:
        places = [f'mpi-place-{index}' for index in range(count)]
        partition = write_partition(partition.index, places, pathlib.Path(work_dir, 'mpi'))
    provider = LocalProvider(
        nodes_per_block=1,
        init_blocks=1,
        min_blocks=0,
        max_blocks=1,
        parallelism=1,
        launcher=SimpleLauncher(),
        worker_init=make_mpi_worker_init(profile, partition, work_dir, control_dir),
    )
    executor = MPIExecutor(
        label=mpi_executor_label(partition),
        provider=provider,
        address=worker_address(profile),
        max_workers_per_block=count,
        mpi_launcher=profile.mpi_launcher,
        heartbeat_period=profile.heartbeat_period,
        heartbeat_threshold=profile.heartbeat_threshold,
        block_error_handler=False,
        encrypted=profile.encrypted,
    )
    # Set after construction: MPIExecutor annotates this argument as a string
    # (typeguard-checked) though it is handed to Popen as HTEX's list.
    executor.interchange_launch_cmd = interchange_command(profile, work_dir)
    return executor


def build_config(
    partition: Partition,
    profile: SiteProfile,
    run_dir: str | os.PathLike[str],
    *,
    workers_per_node: int | None = None,
    mpi: bool = False,
    control_dir: str | None = None,
    max_nodes: int | None = None,
    director_starts_blocks: bool = False,
    job_of: Callable[[str], str | None] | None = None,
) -> Config:
    """Create a new Parsl config whose workers live only on the Director's nodes.

    The worker pools' executor has one block per node
    ([`NodeProvider`][actors.site.node_provider.NodeProvider]). With
    ``director_starts_blocks`` none starts with the DFK: the Director starts
    a block on each node it owns (``actors.execution.node_blocks``) and stops
    it when the node moves; else the DFK starts one per partition node.

    Args:
        partition: The Director's partition.
        profile: The machine's site profile.
        run_dir: Directory for this Director's Parsl logs and submit scripts.
        workers_per_node: Overrides ``profile.workers_per_node``.
        max_nodes: The most nodes the Director may own at once (default
            the partition's size).
        director_starts_blocks: Start no block with the DFK (a Director's).
        mpi: Also add the partition's ``MPIExecutor`` (labelled
            ``mpi_executor_label(partition)``) for multi-node calls.
        control_dir: The Director's control directory (``actors.worker.control``),
            exported to the workers so that they see cancel files.
        job_of: The extra batch job of a node (``None``: the run's own), whose
            block starts inside that job.

    Returns:
        A config for a private ``DataFlowKernel``; never pass it to
        ``parsl.load``.

    """
    slots = workers_per_node or profile.workers_per_node
    accelerators: tuple[str, ...] | int = profile.accelerators or (
        profile.accelerators_per_node if profile.accelerators_per_node > 0 else ()
    )
    run_path = pathlib.Path(run_dir)
    private_dir(run_path)
    work_dir = run_path.resolve()
    node_files = private_dir(run_path / 'nodes')

    def block_for(node: str) -> tuple[str, Launcher]:
        one = write_partition(partition.index, [node], node_files / _file_name(node))
        job = job_of(node) if job_of is not None else None
        launcher = make_launcher(profile, one, job)
        return make_worker_init(profile, one, work_dir, control_dir), launcher

    provider = NodeProvider(
        block_for,
        max_blocks=max(max_nodes or 0, partition.size),
        init_nodes=() if director_starts_blocks else partition.nodes,
    )
    executor = HighThroughputExecutor(
        label=executor_label(partition),
        provider=provider,
        address=worker_address(profile),
        max_workers_per_node=slots,
        cores_per_worker=profile.cores_per_worker,
        available_accelerators=accelerators,
        heartbeat_period=profile.heartbeat_period,
        heartbeat_threshold=profile.heartbeat_threshold,
        prefetch_capacity=profile.prefetch_capacity,
        interchange_launch_cmd=interchange_command(profile, run_path.resolve()),
        # Not Parsl's handler, which marks the executor bad for good at a lost
        # pool: a Director judges its blocks itself (actors.execution.block_health).
        block_error_handler=False,
        # A job's network is shared with every other user's jobs: without
        # CurveZMQ anyone reaching the port could register as a pool, read calls
        # and return pickles the Director loads. Keys live in the run dir (0700).
        encrypted=profile.encrypted,
    )
    executors: list[HighThroughputExecutor] = [executor]
    if mpi:
        executors.append(
            make_mpi_executor(partition, profile, work_dir, control_dir, max_nodes=max_nodes)
        )
    return Config(
        executors=executors,
        run_dir=str(run_path),
        # Blocks start and stop only when the Director says (its nodes move);
        # the MPI executor's one block starts with it (init_blocks).
        strategy='none',
        strategy_period=profile.strategy_period,
        max_idletime=float('inf'),
        initialize_logging=False,
        usage_tracking=0,
    )


def _file_name(node: str) -> str:
    return ''.join(c if c.isalnum() or c in '-_.' else '_' for c in node)
