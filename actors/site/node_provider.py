"""A provider whose every block is one worker pool pinned to one named node.

Parsl starts the blocks of an executor all alike: one ``LocalProvider``
block spans ``nodes_per_block`` nodes and its launcher places a pool on
each. A node that moves between Directors must have a block of its own, so
[`NodeProvider`][actors.site.node_provider.NodeProvider] is a
``LocalProvider`` with ``nodes_per_block=1`` whose next block is pinned
(``pinned``) to a node: its script gets that node's own ``worker_init``
(``$PBS_NODEFILE`` naming only it, for ``mpiexec`` and the simulated job) and
launcher (``srun --nodelist=<node>``), from ``block_for(node)``. Blocks are
started by the Director (``actors.execution.node_blocks``), never by
Parsl's strategy (the config's ``strategy='none'``), except, for a DFK used
without a Director, one block per ``init_nodes`` at start.

Parsl's job-status poller asks the provider for its jobs' status on its own
thread while a Director starts and stops blocks on others;
``LocalProvider`` walks its job table unlocked, so a block submitted mid-walk
broke the poll (``dictionary changed size during iteration``). Every call
into the provider (``submit``, ``status``, ``cancel``, ``pinned``) holds the
provider's one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from parsl.launchers import SimpleLauncher
from parsl.launchers.base import Launcher
from parsl.providers import LocalProvider


class NodeProvider(LocalProvider):
    """``LocalProvider`` blocks of one node each, started on the node named by ``pinned``.

    Args:
        block_for: A node's ``(worker_init, launcher)``.
        max_blocks: The most blocks at once (the job's nodes).
        init_nodes: Nodes whose blocks Parsl's strategy starts with the DFK
            (a block asked for unpinned takes the next); a Director passes
            none and starts every block itself.

    """

    def __init__(
        self,
        block_for: Callable[[str], tuple[str, Launcher]],
        max_blocks: int,
        init_nodes: Sequence[str] = (),
    ) -> None:
        super().__init__(
            nodes_per_block=1,
            init_blocks=len(init_nodes),
            min_blocks=0,
            max_blocks=max(max_blocks, 1),
            parallelism=1,
            launcher=SimpleLauncher(),
            worker_init='',
        )
        self._block_for = block_for
        self._lock = threading.RLock()
        self._next: str | None = None
        self._init_nodes = list(init_nodes)
        self.node_of_job: dict[str, str] = {}
        """Provider job ID -> the node its block runs on."""

    def block(self, node: str) -> tuple[str, Launcher]:
        """The ``worker_init`` and launcher of a block on ``node``."""
        return self._block_for(node)

    def pinned(self, node: str) -> _Pinned:
        """Hold the provider for a block started on ``node`` (``with provider.pinned(node):``)."""
        return _Pinned(self, node)

    def submit(self, command: str, tasks_per_node: int, job_name: str = 'parsl.node') -> Any:
        """Start the block on the pinned node; a block nobody pinned is refused."""
        with self._lock:
            node = self._next
            if node is None and self._init_nodes:
                node = self._init_nodes.pop(0)
            if node is None:
                raise RuntimeError(
                    'NodeProvider: a block was asked for without a node to pin it to'
                )
            self.worker_init, self.launcher = self.block(node)
            job_id = super().submit(command, tasks_per_node, job_name=f'{job_name}.{_safe(node)}')
            self.node_of_job[str(job_id)] = node
            return job_id

    def status(self, job_ids: Sequence[Any]) -> list[Any]:
        """``LocalProvider.status``, never while another thread submits or cancels."""
        with self._lock:
            return super().status(job_ids)

    def cancel(self, job_ids: Sequence[Any]) -> list[bool]:
        """``LocalProvider.cancel``, never while another thread submits or polls."""
        with self._lock:
            return super().cancel(job_ids)


class _Pinned:
    def __init__(self, provider: NodeProvider, node: str) -> None:
        self._provider = provider
        self._node = node

    def __enter__(self) -> None:
        self._provider._lock.acquire()
        self._provider._next = self._node

    def __exit__(self, *exc: object) -> None:
        self._provider._next = None
        self._provider._lock.release()


def _safe(node: str) -> str:
    return ''.join(c if c.isalnum() or c in '-_' else '_' for c in node)
