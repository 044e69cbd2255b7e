"""How a Director runs: one frozen options object for the Director, the CLI and the manifest.

The same object is built by ``launch.py`` from its flags (``actors.cli.plan``),
passed by [`launch_directors`][actors.client.launch.launch_directors] to every
Director it starts, taken by [`Director`][actors.director.agent.Director], and
recorded in the run's manifest (``to_record``/``from_record``) so that
``--resume`` starts new Directors the way the first ones ran.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from actors.common.errors import ConfigurationError
from actors.execution.executor_app import check_retries
from actors.job.walltime import Walltime
from actors.store.journal import DEFAULT_SYNC
from actors.store.journal import SyncMode
from actors.store.journal import check_sync_mode
from actors.tools.registry import DEFAULT_TOOL
from actors.tools.registry import get_tool

__all__ = ['MAX_WORKERS', 'DirectorOptions']

MAX_WORKERS = 1024
"""Most worker slots per node (Aurora's nodes have 208 hardware threads)."""


@dataclasses.dataclass(frozen=True)
class DirectorOptions:
    """How a Director runs its partition's calls.

    Every value is checked here, so that a bad one fails the launch (in the
    client), not the agent's start-up on a remote node.

    Attributes:
        workers_per_node: Overrides the site profile's workers (slots) per node.
        tool: Tool that ``md_sim`` and ``md_sim_batch`` run unless a call
            names another with ``tool=...``.
        drain_timeout: Seconds to let in-flight calls finish at shutdown
            before they are cancelled.
        retries: How many times a call whose worker, worker pool or
            interchange was lost is run again; tool errors are never
            retried. A lost interchange also makes the Director replace its
            whole DFK (at most ``PARSL_RESTARTS`` times).
        supervise: Run every call in a child process of its worker, so
            that a tool that crashes (segfault, ``os._exit``) fails its call
            instead of losing the worker. Off by default: forking per call
            costs ~10x in throughput of short calls. Either way ``cancel``
            and ``timeout=`` stop running calls (``actors.worker.interrupt``).
        walltime: The allocation's end and drain margin (default: none).
        journal_sync: When journal commits are fsync'ed: ``after-answer``
            (default), ``before-answer`` or ``off`` (see
            [`SyncMode`][actors.store.journal.SyncMode]); every result is
            written to the file before its caller is answered either way.
        mpi: Allow multi-node (MPI) tools. Their ``MPIExecutor`` (an
            interchange of its own, then a worker pool) starts with the
            first MPI call, so a Director that runs none pays nothing.
        mpi_backfill: Let a waiting MPI call start ahead of a blocked
            earlier one when it cannot delay it (EASY backfill, see
            [`NodeQueue`][actors.director.admission.NodeQueue]); ``False``
            admits them first come, first served.
        max_nodes: The most nodes the Director may own at once: the job's
            nodes when they move between Directors (an MPI call may then ask
            for more than the Director's first partition and borrow the
            rest); ``None`` keeps it to its partition.

    """

    workers_per_node: int | None = None
    tool: str = DEFAULT_TOOL
    drain_timeout: float = 10.0
    retries: int = 2
    supervise: bool = False
    walltime: Walltime = dataclasses.field(default_factory=Walltime)
    journal_sync: SyncMode = DEFAULT_SYNC
    mpi: bool = True
    mpi_backfill: bool = True
    max_nodes: int | None = None

    def __post_init__(self) -> None:
        workers = self.workers_per_node
        if workers is not None and (
            isinstance(workers, bool)
            or not isinstance(workers, int)
            or not 1 <= workers <= MAX_WORKERS
        ):
            raise ConfigurationError(
                f'workers_per_node must be an integer from 1 to {MAX_WORKERS} (or None), '
                f'got {workers!r}',
            )
        get_tool(self.tool)
        if (
            isinstance(self.drain_timeout, bool)
            or not isinstance(self.drain_timeout, (int, float))
            or not math.isfinite(self.drain_timeout)
            or self.drain_timeout < 0
        ):
            raise ConfigurationError(
                f'drain_timeout must be seconds >= 0, got {self.drain_timeout!r}',
            )
        if self.max_nodes is not None and (
            isinstance(self.max_nodes, bool)
            or not isinstance(self.max_nodes, int)
            or self.max_nodes < 1
        ):
            raise ConfigurationError(
                f'max_nodes must be a positive integer (or None), got {self.max_nodes!r}'
            )
        check_retries(self.retries)
        check_sync_mode(self.journal_sync)
        if not isinstance(self.walltime, Walltime):
            raise ConfigurationError(
                f'walltime must be a Walltime, got {type(self.walltime).__name__}',
            )

    def replace(self, **changes: Any) -> DirectorOptions:
        """A copy with ``changes`` (checked like the original)."""
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        """Plain data for the run's manifest."""
        record = dataclasses.asdict(self)
        record['walltime'] = {'end': self.walltime.end, 'margin': self.walltime.margin}
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DirectorOptions:
        """Options recorded by ``to_record`` (unknown keys are ignored).

        Raises:
            ConfigurationError: If a recorded value is invalid.

        """
        if not isinstance(record, Mapping):
            raise ConfigurationError(
                f'recorded Director options must be a mapping, got {type(record).__name__}',
            )
        names = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in record.items() if key in names}
        walltime = values.get('walltime')
        if isinstance(walltime, Mapping):
            try:
                values['walltime'] = Walltime(**walltime)
            except TypeError as e:
                raise ConfigurationError(
                    f'recorded walltime {walltime!r} is invalid: {e}',
                ) from None
        try:
            return cls(**values)
        except TypeError as e:
            raise ConfigurationError(f'recorded Director options are invalid: {e}') from None
