"""Discover the nodes of a batch job and split them into partitions.

The node list comes from, in order of precedence: an explicit nodes file,
``$PBS_NODEFILE``, ``$SLURM_JOB_NODELIST`` (a compressed Slurm hostlist), or a
simulated job of N made-up nodes on this machine. Partitions are contiguous
slices of the de-duplicated list; each gets its own nodefile in the run
directory so that no two Directors (or two jobs) share a path.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from collections.abc import Mapping
from collections.abc import Sequence

import hostlist

from actors.common.errors import ConfigurationError
from actors.common.private import private_dir
from actors.common.private import write_private

SIMULATED_NODE_PREFIX = 'sim-node-'


@dataclasses.dataclass(frozen=True)
class NodeSource:
    """Where the job's node list came from.

    Attributes:
        kind: One of ``nodes-file``, ``pbs``, ``slurm``, ``simulated``.
        detail: The file path, hostlist expression or node count.

    """

    kind: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Partition:
    """A contiguous slice of the batch job's nodes owned by one Director.

    Attributes:
        index: Position of the partition (0-based).
        nodes: Host names in the partition, in job order.
        nodefile: Path of the file listing ``nodes``, one per line.

    """

    index: int
    nodes: tuple[str, ...]
    nodefile: str

    @property
    def size(self) -> int:
        """Number of nodes in the partition."""
        return len(self.nodes)


_HOST_NAME = re.compile(r'[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?')
"""A host name as nodefiles give it (also an IPv4 address)."""


def dedupe(hosts: Sequence[str]) -> list[str]:
    """Drop repeated and blank host names, keeping first-seen order.

    PBS nodefiles list a host once per rank, so duplicates are expected.
    """
    return list(dict.fromkeys(h.strip() for h in hosts if h.strip()))


def read_nodefile(path: str | os.PathLike[str]) -> list[str]:
    """Read a nodefile (one host per line, duplicates allowed).

    Raises:
        ConfigurationError: If the file is missing, unreadable or lists no host.

    """
    file = pathlib.Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ConfigurationError(
            f'nodes file {str(path)!r} does not exist; give a file with one host name per line',
        ) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ConfigurationError(
            f'nodes file {str(path)!r} cannot be read ({e.__class__.__name__}); '
            'give a readable text file with one host name per line',
        ) from None
    lines = [line.split('#', 1)[0].strip() for line in text.splitlines()]
    for number, line in enumerate(lines, start=1):
        if line and not _HOST_NAME.fullmatch(line):
            shown = line if len(line) <= 80 else line[:77] + '...'
            raise ConfigurationError(
                f'nodes file {str(path)!r} line {number}: {shown!r} is not one host name; '
                'give one host name per line (letters, digits, ".", "-", "_"), without '
                'slot counts or other fields',
            )
    nodes = dedupe(lines)
    if not nodes:
        raise ConfigurationError(
            f'nodes file {str(path)!r} lists no host; give a file with one host name per line',
        )
    return nodes


def expand_slurm_hostlist(expression: str) -> list[str]:
    """Expand a compressed Slurm hostlist such as ``nid[001-004,007]``.

    Raises:
        ConfigurationError: If the expression is malformed or empty.

    """
    try:
        nodes = hostlist.expand_hostlist(expression)
    except hostlist.BadHostlist as e:
        raise ConfigurationError(
            f'SLURM_JOB_NODELIST={expression!r} is not a valid Slurm hostlist '
            f'({e}); expected e.g. "nid[001-004,007]"',
        ) from None
    nodes = dedupe(nodes)
    if not nodes:
        raise ConfigurationError(
            f'SLURM_JOB_NODELIST={expression!r} names no host',
        )
    return nodes


MAX_SIMULATED_NODES = 256
"""Most nodes of a simulated job: each one runs a worker pool on this machine."""


def simulated_nodes(count: int) -> list[str]:
    """Made-up host names for a simulated job of ``count`` nodes."""
    if not 1 <= count <= MAX_SIMULATED_NODES:
        raise ConfigurationError(
            f'--simulate-nodes {count} is invalid; a simulated job has 1 to '
            f'{MAX_SIMULATED_NODES} nodes (each one is a worker pool on this machine)',
        )
    return [f'{SIMULATED_NODE_PREFIX}{i:03d}' for i in range(1, count + 1)]


def discover_nodes(
    *,
    nodes_file: str | None = None,
    simulate: int | None = None,
    environ: Mapping[str, str] | None = None,
    default_simulated: int = 4,
) -> tuple[list[str], NodeSource]:
    """Find the batch job's nodes.

    Args:
        nodes_file: Explicit nodefile; wins over everything else.
        simulate: Explicit simulated node count; wins over the environment.
        environ: Environment to read scheduler variables from.
        default_simulated: Node count when nothing else names the nodes.

    Returns:
        The de-duplicated node list and where it came from.

    """
    env = os.environ if environ is None else environ
    if nodes_file is not None:
        return read_nodefile(nodes_file), NodeSource('nodes-file', nodes_file)
    if simulate is not None:
        return simulated_nodes(simulate), NodeSource('simulated', str(simulate))
    if env.get('PBS_NODEFILE'):
        path = env['PBS_NODEFILE']
        return read_nodefile(path), NodeSource('pbs', path)
    if env.get('SLURM_JOB_NODELIST'):
        expression = env['SLURM_JOB_NODELIST']
        return expand_slurm_hostlist(expression), NodeSource('slurm', expression)
    return (
        simulated_nodes(default_simulated),
        NodeSource('simulated', str(default_simulated)),
    )


def parse_sizes(text: str) -> list[int]:
    """Parse ``--partition-sizes`` such as ``"1,3"``.

    Raises:
        ConfigurationError: If any entry is not a positive integer.

    """
    sizes: list[int] = []
    for part in text.split(','):
        try:
            size = int(part)
        except ValueError:
            raise ConfigurationError(
                f'--partition-sizes {text!r}: {part.strip()!r} is not an integer; '
                'expected comma-separated positive integers such as "1,3"',
            ) from None
        if size < 1:
            raise ConfigurationError(
                f'--partition-sizes {text!r}: every size must be >= 1, got {size}',
            )
        sizes.append(size)
    return sizes


def split_nodes(
    nodes: Sequence[str],
    *,
    count: int | None = None,
    sizes: Sequence[int] | None = None,
) -> list[list[str]]:
    """Split nodes into contiguous, disjoint partitions.

    Args:
        nodes: De-duplicated node list.
        count: Number of partitions of near-equal size (the first ones take
            one extra node when the split is uneven).
        sizes: Explicit partition sizes; must add up to ``len(nodes)``.

    Raises:
        ConfigurationError: If the split is impossible.

    """
    if count is not None and sizes is not None:
        raise ConfigurationError(
            'give either --partitions or --partition-sizes, not both',
        )
    if not nodes:
        raise ConfigurationError('the batch job has no nodes to partition')
    if sizes is None:
        count = 2 if count is None else count
        if count < 1:
            raise ConfigurationError(
                f'--partitions {count} is invalid; need at least 1 partition',
            )
        if count > len(nodes):
            raise ConfigurationError(
                f'--partitions {count} is more than the {len(nodes)} node(s) in '
                f'the job; choose 1..{len(nodes)}',
            )
        base, extra = divmod(len(nodes), count)
        sizes = [base + (1 if i < extra else 0) for i in range(count)]
    elif sum(sizes) != len(nodes) or any(s < 1 for s in sizes):
        raise ConfigurationError(
            f'--partition-sizes {",".join(map(str, sizes))} add up to '
            f'{sum(sizes)} but the job has {len(nodes)} node(s); sizes must be '
            f'>= 1 and add up to {len(nodes)}',
        )
    parts: list[list[str]] = []
    start = 0
    for size in sizes:
        parts.append(list(nodes[start : start + size]))
        start += size
    return parts


def write_partition(
    index: int,
    nodes: Sequence[str],
    run_dir: str | os.PathLike[str],
) -> Partition:
    """Write one partition's nodefile to ``run_dir/partitions/partition-<index>.nodes``.

    The file is written to a temporary name and renamed, so a reader never
    sees half a nodefile.
    """
    directory = pathlib.Path(run_dir, 'partitions')
    private_dir(directory)
    nodefile = directory / f'partition-{index}.nodes'
    write_private(nodefile, ''.join(f'{n}\n' for n in nodes))
    return Partition(index, tuple(nodes), str(nodefile.resolve()))


def write_partitions(
    parts: Sequence[Sequence[str]],
    run_dir: str | os.PathLike[str],
) -> list[Partition]:
    """Write one nodefile per partition under ``run_dir/partitions``."""
    return [write_partition(index, nodes, run_dir) for index, nodes in enumerate(parts)]


JOB_ID_VARIABLES = ('PBS_JOBID', 'SLURM_JOB_ID', 'COBALT_JOBID', 'FLUX_JOB_ID')
"""Scheduler variables that name the current batch job, most common first."""


def job_run_dir(
    run_dir: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
) -> pathlib.Path:
    """A directory for this batch job under ``run_dir`` (``~`` is expanded).

    Inside a batch job this is ``<run_dir>/job-<job id>``, so two jobs that
    share ``run_dir`` (on a shared filesystem) never share nodefiles; outside
    one it is ``run_dir`` itself.
    """
    env = os.environ if environ is None else environ
    base = pathlib.Path(os.path.expanduser(os.fspath(run_dir))).resolve()
    for name in JOB_ID_VARIABLES:
        job_id = env.get(name, '').strip()
        if job_id:
            safe = ''.join(c if c.isalnum() or c in '._-' else '_' for c in job_id)
            return base / f'job-{safe}'
    return base


@dataclasses.dataclass(frozen=True)
class PartitionRequest:
    """A Director's slice of the batch job, resolved where the Director runs.

    A client that cannot see the job's nodes (a laptop submitting through
    Globus Compute) sends each Director a request; the Director discovers
    the nodes on the lead node and keeps slice ``index`` of the same split
    every other Director computes, so the slices are disjoint.

    Attributes:
        index: Which slice this Director owns (0-based).
        count: Number of near-equal slices (as ``--partitions``).
        sizes: Explicit slice sizes (as ``--partition-sizes``).
        nodes_file: Explicit nodefile; default ``$PBS_NODEFILE`` or
            ``$SLURM_JOB_NODELIST``.

    """

    index: int
    count: int | None = None
    sizes: tuple[int, ...] | None = None
    nodes_file: str | None = None

    def __post_init__(self) -> None:
        total = len(self.sizes) if self.sizes is not None else self.count
        if total is None:
            raise ConfigurationError('a partition request needs count or sizes')
        if not 0 <= self.index < total:
            raise ConfigurationError(
                f'partition index {self.index} is out of range; '
                f'there are {total} partition(s) (0..{total - 1})',
            )

    def resolve(
        self,
        run_dir: str | os.PathLike[str],
        environ: Mapping[str, str] | None = None,
    ) -> Partition:
        """Discover the job's nodes, split them, write this slice's nodefile.

        Args:
            run_dir: Run directory; the nodefile goes to
                ``job_run_dir(run_dir)/partitions/``.
            environ: Environment to read scheduler variables from.

        Raises:
            ConfigurationError: If the job has no node list or the split
                does not fit it.

        """
        env = os.environ if environ is None else environ
        if self.nodes_file is None and not (
            env.get('PBS_NODEFILE') or env.get('SLURM_JOB_NODELIST')
        ):
            raise ConfigurationError(
                'no batch job here: neither PBS_NODEFILE nor SLURM_JOB_NODELIST is set '
                'where the Director runs, and no nodes_file was given; run the Directors '
                'inside a batch job (a Globus Compute endpoint with a PBS/Slurm provider)',
            )
        nodes, _ = discover_nodes(nodes_file=self.nodes_file, environ=env)
        parts = split_nodes(nodes, count=self.count, sizes=self.sizes)
        return write_partition(self.index, parts[self.index], job_run_dir(run_dir, env))


def resolve_partition(
    partition: Partition | PartitionRequest,
    run_dir: str,
) -> tuple[Partition, str]:
    """The Director's partition and run directory where it runs.

    A [`Partition`][actors.job.partition.Partition] is used as given; a
    [`PartitionRequest`][actors.job.partition.PartitionRequest] is resolved
    against the batch job's nodes and moves the run directory into the
    job's own directory.
    """
    if isinstance(partition, Partition):
        return partition, run_dir
    return partition.resolve(run_dir), str(job_run_dir(run_dir))
