"""The run-wide values every part of a Director shares, made once its partition is resolved."""

from __future__ import annotations

import dataclasses
import pathlib

from actors.common.names import director_name
from actors.director.options import DirectorOptions
from actors.job.partition import Partition
from actors.job.walltime import Walltime
from actors.site.profile import SiteProfile


@dataclasses.dataclass(frozen=True)
class DirectorContext:
    """Who a Director is and how it runs: one frozen value, handed to each part.

    The derived values (name, tool, slots per node, ...) are properties, so
    each has one source here.

    Attributes:
        partition: Its resolved partition (its first nodes; nodes move later).
        profile: The site profile that places its workers.
        run_dir: The run directory (resolved: a partition request moves it
            into the batch job's own directory).
        options: How it runs.
        incarnation: Changes each time the Director (re)starts.

    """

    partition: Partition
    profile: SiteProfile
    run_dir: str
    options: DirectorOptions
    incarnation: str

    @property
    def name(self) -> str:
        """The Director's name (``director-<index>``)."""
        return director_name(self.partition.index)

    @property
    def index(self) -> int:
        """Its partition's index."""
        return self.partition.index

    @property
    def tool(self) -> str:
        """The tool of calls that name none."""
        return self.options.tool

    @property
    def retries(self) -> int:
        """Reruns of a call whose worker, pool or interchange was lost."""
        return self.options.retries

    @property
    def walltime(self) -> Walltime:
        """The allocation's end and drain margin."""
        return self.options.walltime

    @property
    def workers_per_node(self) -> int:
        """Worker slots per node (the options', else the site profile's)."""
        return self.options.workers_per_node or self.profile.workers_per_node

    @property
    def most_nodes(self) -> int:
        """The most nodes one MPI call may ask for (the job's when nodes move)."""
        return max(self.partition.size, self.options.max_nodes or 0)

    @property
    def control_dir(self) -> pathlib.Path:
        """The cancel-file directory of this incarnation."""
        return pathlib.Path(self.run_dir, 'control', self.name, self.incarnation)
