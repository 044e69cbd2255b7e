"""The Director's node admission for MPI calls: Parsl's MPI mode only sees calls that fit.

A call that Parsl's ``MPIExecutor`` cannot place at once goes to its backlog,
whose retry loop recurses until ``RecursionError`` and drops results
(``actors.tools.resources``); so the Director hands Parsl an MPI call only
once its nodes are free.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from actors.common.errors import ConfigurationError


class NodeAdmission:
    """Counts a partition's free nodes; admits MPI calls first come, first served.

    A call waits until its nodes are free and no earlier call is still
    waiting, so a large call is never starved by a stream of small ones.
    Used from one event loop (the Director's actions).

    Args:
        total: Nodes of the partition.

    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Calls waiting for nodes."""
        return len(self._waiting)

    async def acquire(self, nodes: int) -> None:
        """Wait until ``nodes`` nodes are free and no earlier call waits, then take them.

        Raises:
            ConfigurationError: If ``nodes`` can never fit.

        """
        if not 1 <= nodes <= self.total:
            raise ConfigurationError(
                f'cannot reserve {nodes} node(s) of a {self.total}-node partition',
            )
        if not self._waiting and nodes <= self.free:
            self.free -= nodes
            return
        future = asyncio.get_running_loop().create_future()
        entry = (nodes, future)
        self._waiting.append(entry)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                # Admitted just as the caller gave up: give the nodes back.
                self.release(nodes)
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
                self._wake()
            raise

    def release(self, nodes: int) -> None:
        """Give back nodes of a call that finished."""
        self.free += nodes
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            nodes, future = self._waiting.popleft()
            if future.done():
                continue  # Cancelled while waiting.
            self.free -= nodes
            future.set_result(None)
