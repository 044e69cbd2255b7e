"""One executor's worker pools as its interchange last told them: asked once, shared.

A Director asks its interchange which pools are connected and what each
holds (``connected_managers``) for many reasons at once: its watch, a drain
waiting for a leaving node's calls, an adoption waiting for a new pool, the
coordinator's ``node_load``, ``status``. Each asking on its own meant several
commands a second to one interchange, each on a thread of its own, and
answers from different instants.
[`PoolMonitor`][actors.execution.pool_monitor.PoolMonitor] takes one
[`PoolSnapshot`][actors.execution.pool_monitor.PoolSnapshot] at a time and
hands it to everyone whose freshness it meets: a reader says how old an
answer it accepts (``look(max_age)``), or waits for the next one after the
snapshot it has seen (``after``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

Managers = list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class PoolSnapshot:
    """The connected pools at one instant.

    Attributes:
        managers: The interchange's record of each connected pool (its
            ``block_id``, ``hostname``, ``tasks``, ``active``, ...).
        taken_at: When the question was sent (``time.monotonic``): the
            answer is no older than this.
        serial: Increases with each snapshot of the monitor.

    """

    managers: tuple[Mapping[str, Any], ...]
    taken_at: float
    serial: int

    def by_block(self) -> dict[str, list[Mapping[str, Any]]]:
        """The pools of each block (a block's ID as Parsl names it)."""
        found: dict[str, list[Mapping[str, Any]]] = {}
        for manager in self.managers:
            found.setdefault(str(manager['block_id']), []).append(manager)
        return found


class PoolMonitor:
    """Takes snapshots of one executor's pools, one question at a time, for every reader.

    Args:
        ask: Asks the interchange (``connected_managers``); ``None`` when it
            cannot answer (it was lost).
        clock: The monotonic clock (a test's own).

    """

    def __init__(
        self,
        ask: Callable[[], Awaitable[Managers | None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self._clock = clock
        self._latest: PoolSnapshot | None = None
        self._asking: asyncio.Future[PoolSnapshot | None] | None = None
        self._asking_since = 0.0
        self._serial = 0
        self.questions = 0
        """How many times the interchange was asked."""

    @property
    def latest(self) -> PoolSnapshot | None:
        """The newest snapshot (``None`` before the first answer)."""
        return self._latest

    async def look(self, max_age: float = 0.0) -> PoolSnapshot | None:
        """A snapshot whose question was sent at most ``max_age`` seconds ago.

        The newest one if it is that fresh, else the question under way if it
        was sent recently enough, else a new question. ``None`` if the
        interchange cannot answer.
        """
        now = self._clock()
        latest = self._latest
        if latest is not None and now - latest.taken_at <= max_age:
            return latest
        asking = self._asking
        if asking is None or asking.done() or now - self._asking_since > max_age:
            self._asking_since = now
            asking = self._asking = asyncio.ensure_future(self._take(now))
        # Shielded: one reader given up (cancelled) does not cancel the others' answer.
        return await asyncio.shield(asking)

    async def after(self, seen: PoolSnapshot | None, interval: float) -> PoolSnapshot | None:
        """The first snapshot asked for at least ``interval`` seconds after ``seen``.

        What a step waiting for a change (a pool to connect, a node's calls to
        end) reads next, instead of sleeping and asking on its own.
        """
        if seen is not None:
            due = seen.taken_at + interval
            wait = due - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            return await self.look(max_age=self._clock() - due)
        return await self.look()

    async def _take(self, sent: float) -> PoolSnapshot | None:
        self.questions += 1
        managers = await self._ask()
        if managers is None:
            return None
        latest = self._latest
        if latest is not None and latest.taken_at > sent:
            return latest  # a later question was answered first
        self._serial += 1
        snapshot = PoolSnapshot(tuple(managers), sent, self._serial)
        self._latest = snapshot
        return snapshot
