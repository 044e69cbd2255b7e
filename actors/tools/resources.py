"""Per-call MPI resources: what an MPI call asks for, checked against its partition.

Parsl's MPI mode (``MPIExecutor``) hands each task a set of whole nodes, but
it has traps that must never reach users:

* a task that asks for more nodes than the block has waits forever;
* a task without ``num_nodes`` runs without an allocation and the pool's
  manager crashes on its result (parsl#3427), losing it;
* a backlog task that does not fit is re-queued recursively until
  ``RecursionError`` kills the result thread, losing results.

So the Director checks every request against its partition before anything
is submitted ([`resolve_resources`][actors.tools.resources.resolve_resources])
and hands Parsl a call only when its nodes are free
([`NodeAdmission`][actors.director.admission.NodeAdmission]): Parsl's own
backlog then stays empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from actors.common.errors import ConfigurationError

RESOURCE_KEYS = ('num_nodes', 'ranks_per_node', 'num_ranks')
"""Call arguments that describe MPI resources rather than tool parameters."""

MAX_RANKS_PER_NODE = 1024

RESOURCE_SCHEMA: dict[str, Any] = {
    'num_nodes': {
        'type': 'integer',
        'minimum': 1,
        'description': 'Whole nodes of the partition the call runs on (default 1).',
    },
    'ranks_per_node': {
        'type': 'integer',
        'minimum': 1,
        'maximum': MAX_RANKS_PER_NODE,
        'description': 'MPI ranks on each node (default 1, or num_ranks / num_nodes).',
    },
    'num_ranks': {
        'type': 'integer',
        'minimum': 1,
        'description': 'Total MPI ranks; needs num_nodes and must be a multiple of it.',
    },
}
"""JSON-schema properties of the resource arguments of an MPI tool."""


@dataclasses.dataclass(frozen=True)
class MPIResources:
    """Whole nodes and ranks for one MPI call.

    Attributes:
        num_nodes: Nodes the call gets to itself.
        ranks_per_node: MPI ranks started on each node.
        launcher_options: Extra launcher flags from the site profile.

    """

    num_nodes: int
    ranks_per_node: int
    launcher_options: str = ''

    @property
    def num_ranks(self) -> int:
        """Total MPI ranks."""
        return self.num_nodes * self.ranks_per_node

    def parsl_spec(self) -> dict[str, Any]:
        """The ``parsl_resource_specification`` for Parsl's MPI mode."""
        spec: dict[str, Any] = {
            'num_nodes': self.num_nodes,
            'ranks_per_node': self.ranks_per_node,
            'num_ranks': self.num_ranks,
        }
        if self.launcher_options:
            spec['launcher_options'] = self.launcher_options
        return spec

    def environment(
        self, mpi_launcher: str, nodes: list[str], job: str | None = None
    ) -> dict[str, str]:
        """The MPI variables of a call placed on ``nodes`` by the Director.

        Parsl's MPI mode sets them from the places its own scheduler chose;
        the Director picks the nodes (it owns and drained them), so the
        call's command gets them built for those, by Parsl's own composer.
        Nodes of an extra batch job (``job``) get ``srun``'s step in that job.
        """
        from parsl.executors.high_throughput.mpi_prefix_composer import compose_all

        spec = {**self.parsl_spec(), 'num_nodes': len(nodes)}
        variables = compose_all(mpi_launcher, spec, nodes)
        if job is not None and mpi_launcher == 'srun':
            for name in ('PARSL_MPI_PREFIX', 'PARSL_SRUN_PREFIX'):
                if variables.get(name, '').startswith('srun '):
                    variables[name] = f'srun --jobid={job} --overlap ' + variables[name][5:]
        variables['PARSL_MPI_NODELIST'] = ','.join(nodes)
        variables['PARSL_NUM_NODES'] = str(len(nodes))
        return variables

    def to_dict(self) -> dict[str, int]:
        """The resources as call arguments."""
        return {
            'num_nodes': self.num_nodes,
            'ranks_per_node': self.ranks_per_node,
            'num_ranks': self.num_ranks,
        }


def split_resources(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate a call's tool parameters from its MPI resource arguments."""
    params = {k: v for k, v in arguments.items() if k not in RESOURCE_KEYS}
    resources = {k: v for k, v in arguments.items() if k in RESOURCE_KEYS}
    return params, resources


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f'{name} must be a positive integer, got {value!r}')
    return value


def resolve_resources(
    tool: str,
    requested: Mapping[str, Any],
    partition_size: int,
    *,
    launcher_options: str = '',
) -> MPIResources:
    """Turn a call's resource arguments into a request that surely fits.

    Args:
        tool: Tool name, for error messages.
        requested: ``num_nodes``, ``ranks_per_node`` and/or ``num_ranks``;
            missing values default to one node and one rank per node.
        partition_size: Nodes in the Director's partition.
        launcher_options: Extra MPI launcher flags from the site profile.

    Raises:
        ConfigurationError: If the request can never run on the partition
            or is inconsistent; the message says what would be valid.

    """
    unknown = sorted(set(requested) - set(RESOURCE_KEYS))
    if unknown:
        raise ConfigurationError(
            f'{tool}: unknown resource argument(s) {", ".join(unknown)}; '
            f'valid: {", ".join(RESOURCE_KEYS)}',
        )
    num_ranks = requested.get('num_ranks')
    if num_ranks is not None and requested.get('num_nodes') is None:
        raise ConfigurationError(
            f'{tool}: num_ranks={num_ranks!r} needs num_nodes too (Parsl loses such a call); '
            f'give num_nodes=1..{partition_size} and num_ranks a multiple of it',
        )
    num_nodes = _positive_int('num_nodes', requested.get('num_nodes', 1))
    if num_nodes > partition_size:
        raise ConfigurationError(
            f'{tool}: num_nodes={num_nodes} is more than the {partition_size} node(s) of '
            f'this partition; give num_nodes=1..{partition_size}',
        )
    per_node = requested.get('ranks_per_node')
    if per_node is not None:
        per_node = _positive_int('ranks_per_node', per_node)
        if per_node > MAX_RANKS_PER_NODE:
            raise ConfigurationError(
                f'ranks_per_node={per_node} is more than {MAX_RANKS_PER_NODE}',
            )
    if num_ranks is not None:
        num_ranks = _positive_int('num_ranks', num_ranks)
        if num_ranks % num_nodes:
            raise ConfigurationError(
                f'{tool}: num_ranks={num_ranks} is not a multiple of num_nodes={num_nodes}; '
                'every node runs the same number of ranks',
            )
        if per_node is not None and per_node * num_nodes != num_ranks:
            raise ConfigurationError(
                f'{tool}: num_ranks={num_ranks} != num_nodes={num_nodes} x '
                f'ranks_per_node={per_node}; give two of the three',
            )
        per_node = num_ranks // num_nodes
        if per_node > MAX_RANKS_PER_NODE:
            raise ConfigurationError(
                f'{tool}: num_ranks={num_ranks} means {per_node} ranks per node, '
                f'more than {MAX_RANKS_PER_NODE}',
            )
    return MPIResources(num_nodes, per_node or 1, launcher_options)
