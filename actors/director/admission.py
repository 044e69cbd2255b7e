"""The Director's node admission for MPI calls: Parsl's MPI mode only sees calls that fit.

A call that Parsl's ``MPIExecutor`` cannot place at once goes to its backlog,
whose retry loop recurses until ``RecursionError`` and drops results
(``actors.tools.resources``); so the Director hands Parsl an MPI call only
once its nodes are free.

Which waiting call goes next is [`NodeQueue`][actors.director.admission.NodeQueue]'s
rule: first come, first served, with backfill (EASY). The call at the head of
the queue gets a reservation: the earliest time enough nodes are free, from
the running calls' declared durations. A later call starts at once if it fits
the free nodes and either ends (by its own declared duration) before the
reservation, or leaves free at the reservation the nodes the head needs;
the largest such calls (nodes x duration) are started first.

Declared durations are a call's ``timeout`` (the Director stops it then),
else its ``duration`` argument (the mock and probe tools take that long).
Calls without one never delay a reservation: waiting, they may only take
nodes the head does not need at its reservation; running, their end is
unknown, so a head that needs their nodes gets no reservation and nothing
is backfilled past it (plain first come, first served).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from actors.common.errors import ConfigurationError


def declared_duration(params: Mapping[str, Any], timeout: float | None) -> float | None:
    """Seconds a call says it runs: its ``duration`` argument, at most its ``timeout``."""
    duration = params.get('duration')
    declared = [float(timeout)] if timeout is not None else []
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        declared.append(float(duration))
    return min(declared, default=None)


@dataclasses.dataclass
class Reservation:
    """When the head of the queue will start at the latest.

    Attributes:
        nodes: Nodes the head call needs.
        at: Clock time its nodes are free (from the running calls' durations).
        spare: Nodes free at that time beyond what the head needs.

    """

    nodes: int
    at: float
    spare: int


@dataclasses.dataclass
class _Request:
    ticket: int
    nodes: int
    duration: float | None


class NodeQueue:
    """Which MPI calls may start, given a partition's nodes (no asyncio; one thread).

    Args:
        total: Nodes MPI calls may use: a number, or a function that asks
            the Director's node ownership (its nodes change as they move).
        backfill: Let later calls start ahead of a blocked head when they
            cannot delay it; ``False`` is plain first come, first served.

    """

    def __init__(self, total: int | Callable[[], int], *, backfill: bool = True) -> None:
        self._total = total if callable(total) else (lambda: total)
        self.backfill = backfill
        self.backfilled = 0
        """Calls started ahead of an earlier waiting call."""
        self.reservation: Reservation | None = None
        self._waiting: list[_Request] = []
        self._running: dict[int, tuple[int, float]] = {}
        """Ticket -> (nodes, declared end; ``inf`` if none was declared)."""

    @property
    def total(self) -> int:
        """Nodes MPI calls may use now."""
        return self._total()

    @property
    def free(self) -> int:
        """Of those, nodes no admitted call holds."""
        return self.total - sum(nodes for nodes, _ in self._running.values())

    @property
    def waiting(self) -> int:
        """Calls waiting for nodes."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Admitted calls that have not finished."""
        return len(self._running)

    @property
    def head_nodes(self) -> int:
        """Nodes the first waiting call needs (0 if none waits)."""
        return self._waiting[0].nodes if self._waiting else 0

    def request(self, ticket: int, nodes: int, duration: float | None, now: float) -> list[int]:
        """Queue a call; returns the tickets that start now (maybe this one)."""
        self._waiting.append(_Request(ticket, nodes, duration))
        return self._schedule(now)

    def withdraw(self, ticket: int, now: float) -> list[int]:
        """Forget a waiting call (its caller gave up); returns the tickets that start now."""
        self._waiting = [r for r in self._waiting if r.ticket != ticket]
        return self._schedule(now)

    def finish(self, ticket: int, now: float) -> list[int]:
        """A running call ended: its nodes are free; returns the tickets that start now."""
        self._running.pop(ticket)
        return self._schedule(now)

    def recheck(self, now: float) -> list[int]:
        """The nodes changed (one arrived or left); returns the tickets that start now."""
        return self._schedule(now)

    def _start(self, request: _Request, now: float) -> None:
        self._waiting.remove(request)
        end = now + request.duration if request.duration is not None else math.inf
        self._running[request.ticket] = (request.nodes, end)

    def _schedule(self, now: float) -> list[int]:
        started = []
        while self._waiting and self._waiting[0].nodes <= self.free:
            head = self._waiting[0]
            self._start(head, now)
            started.append(head.ticket)
        self.reservation = None
        if not self._waiting:
            return started
        head = self._waiting[0]
        self.reservation = self._reserve(head.nodes, now)
        if not self.backfill or self.reservation is None:
            return started
        spare = self.reservation.spare
        # The largest calls (node-seconds) first: small ones fill what is left.
        free = self.free
        for request in sorted(self._waiting[1:], key=_area, reverse=True):
            if request.nodes > free:
                continue
            ends_first = (
                request.duration is not None and now + request.duration <= self.reservation.at
            )
            if ends_first or request.nodes <= spare:
                if not ends_first:
                    spare -= request.nodes
                self._start(request, now)
                free -= request.nodes
                self.backfilled += 1
                started.append(request.ticket)
        self.reservation.spare = spare
        return started

    def _reserve(self, nodes: int, now: float) -> Reservation | None:
        """The earliest time ``nodes`` nodes are free; ``None`` if that needs an undeclared end."""
        free = self.free
        ends = sorted(self._running.values(), key=lambda running: running[1])
        for index, (held, end) in enumerate(ends):
            if end == math.inf:
                return None
            free += held
            if free >= nodes and (index + 1 == len(ends) or ends[index + 1][1] > end):
                return Reservation(nodes, max(end, now), free - nodes)
        return None  # More nodes than the Director owns: it waits for some to arrive.


def _area(request: _Request) -> float:
    return request.nodes * (request.duration if request.duration is not None else 0.0)


@dataclasses.dataclass(frozen=True)
class AdmissionReport:
    """Where a Director's MPI calls stand (for its ``status`` and ``node_load``).

    Attributes:
        free: Nodes no MPI call holds.
        waiting: Calls waiting for nodes.
        running: Admitted calls that have not finished.
        reservation: The head waiting call's ``{"nodes", "in"}``, if it has one.
        backfilled: Calls started ahead of an earlier waiting call.
        head_needs: Nodes the head waiting call needs beyond the Director's (to borrow).
        most: The most nodes one call may ask for, if set.

    """

    free: int
    waiting: int
    running: int
    reservation: dict[str, float] | None
    backfilled: int
    head_needs: int
    most: int | None


class NodeAdmission:
    """Admits a Director's MPI calls onto its partition's nodes (one event loop).

    Args:
        total: Nodes MPI calls may use, or how to ask the Director's node
            ownership (see [`NodeQueue`][actors.director.admission.NodeQueue]).
        backfill: See [`NodeQueue`][actors.director.admission.NodeQueue].
        clock: Seconds, monotonic (tests pass their own).
        most: The most nodes one call may ask for (default ``total`` now); a
            call larger than the Director's nodes waits for nodes to arrive.

    """

    def __init__(
        self,
        total: int | Callable[[], int],
        *,
        backfill: bool = True,
        clock: Callable[[], float] = time.monotonic,
        most: int | None = None,
    ) -> None:
        self.queue = NodeQueue(total, backfill=backfill)
        self.most = most
        self.clock = clock
        self._tickets = itertools.count()
        self._admitted: dict[int, asyncio.Future[None]] = {}

    @property
    def total(self) -> int:
        """Nodes MPI calls may use now."""
        return self.queue.total

    @property
    def free(self) -> int:
        """Nodes no MPI call holds."""
        return self.queue.free

    @property
    def waiting(self) -> int:
        """Calls waiting for nodes."""
        return self.queue.waiting

    def reservation(self) -> dict[str, float] | None:
        """The head waiting call's reservation: ``{"nodes", "in"}`` (seconds from now)."""
        reserved = self.queue.reservation
        if reserved is None:
            return None
        return {'nodes': reserved.nodes, 'in': max(0.0, reserved.at - self.clock())}

    async def acquire(self, nodes: int, duration: float | None = None) -> int:
        """Wait until the call may start on ``nodes`` nodes; returns its ticket for ``release``.

        Args:
            nodes: Nodes the call needs.
            duration: Seconds it declares it runs (its timeout, or its
                ``duration`` argument); ``None`` if unknown.

        Raises:
            ConfigurationError: If ``nodes`` can never fit.

        """
        most = self.most if self.most is not None else self.total
        if not 1 <= nodes <= most:
            raise ConfigurationError(
                f'cannot reserve {nodes} node(s) of a {most}-node partition',
            )
        ticket = next(self._tickets)
        future = asyncio.get_running_loop().create_future()
        self._admitted[ticket] = future
        self._wake(self.queue.request(ticket, nodes, duration, self.clock()))
        try:
            await future
        except BaseException:
            self._admitted.pop(ticket, None)
            if future.done() and not future.cancelled():
                # Admitted just as the caller gave up: give the nodes back.
                self.release(ticket)
            else:
                self._wake(self.queue.withdraw(ticket, self.clock()))
            raise
        return ticket

    def release(self, ticket: int) -> None:
        """Give back the nodes of a call that finished."""
        self._wake(self.queue.finish(ticket, self.clock()))

    def recheck(self) -> None:
        """The Director's nodes changed: start what fits now."""
        self._wake(self.queue.recheck(self.clock()))

    def head_needs(self) -> int:
        """Nodes the head waiting call needs beyond the Director's (to borrow), or 0."""
        return max(self.queue.head_nodes - self.total, 0)

    def report(self) -> AdmissionReport:
        """Where its calls stand now."""
        return AdmissionReport(
            free=self.free,
            waiting=self.waiting,
            running=self.queue.running,
            reservation=self.reservation(),
            backfilled=self.queue.backfilled,
            head_needs=self.head_needs(),
            most=self.most,
        )

    def _wake(self, tickets: list[int]) -> None:
        for ticket in tickets:
            future = self._admitted.pop(ticket, None)
            if future is not None and not future.done():
                future.set_result(None)
            elif future is not None:
                # Its caller is gone: hand the nodes straight back.
                self._wake(self.queue.finish(ticket, self.clock()))
