"""Replacing a Director's lost DataFlowKernel, and the calls that wait for the new one.

When an interchange dies its DFK is lost: the calls it held fail at once,
and those that may run again are *parked* until a replacement DFK is up,
then run again there. [`Replacement`][actors.director.replacement.Replacement]
decides whether a lost DFK is replaced (at most ``PARSL_RESTARTS`` times, never
while the Director stops) or the Director is *broken* (every parked and new
call is answered with the loss), runs one replacement at a time, and keeps
the parked calls. It knows nothing of Parsl: how to start a DFK, release a
lost one and fail what it holds are the ``DfkHost``'s, handed in.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from actors.common.loop import call_soon
from actors.common.loop import resolve
from actors.execution.interchange import InterchangeLost

logger = logging.getLogger(__name__)

PARSL_RESTARTS = 3
"""How many times a Director replaces a DFK whose interchange died."""

INLINE_SUBMIT = 8
"""Up to this many submits (new calls, parked reruns) run on the event loop; more go to a thread."""

Parked = tuple[Callable[[], None], Callable[[], None]]
"""A call waiting for a replacement DFK: how to rerun it, and how to give up."""


class Replacement:
    """Whether a lost DFK is replaced, the replacement itself, and the parked calls.

    Args:
        name: The Director's name (for logs).
        start: Starts a new DFK (raises if it cannot).
        release: Stops a lost DFK's executors and processes.
        fail: Fails every task a DFK's executors hold, with the error (on a thread).
        fail_leftovers: Fails what a released DFK still holds (calls that
            reached it after ``fail``), so that none waits for it forever.
        max_restarts: Replacements allowed over the Director's life.

    """

    def __init__(
        self,
        name: str,
        *,
        start: Callable[[], Awaitable[None]],
        release: Callable[[Any], Awaitable[None]],
        fail: Callable[[Any, InterchangeLost], None],
        fail_leftovers: Callable[[Any, InterchangeLost], None],
        max_restarts: int = PARSL_RESTARTS,
    ) -> None:
        self.name = name
        self._start = start
        self._release = release
        self._fail = fail
        self._fail_leftovers = fail_leftovers
        self.max_restarts = max_restarts
        self.restarts = 0
        """Replacements begun so far."""
        self.broken: InterchangeLost | None = None
        """Why no DFK will run calls any more (``None`` while one does or will)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        """The Director's event loop (set when its first DFK starts)."""
        self._lock = threading.Lock()
        self._parked: list[Parked] = []
        self._lost: set[Any] = set()
        self._replacing = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._one_at_a_time = asyncio.Lock()
        self._stopping = False

    @property
    def replacing(self) -> bool:
        """Whether a replacement is under way (calls to Parsl wait for it)."""
        return self._replacing > 0

    def is_lost(self, dfk: Any) -> bool:
        """Whether ``dfk`` was lost (or given up): nothing new may start on it."""
        return dfk in self._lost

    def lost(self, dfk: Any, error: InterchangeLost) -> None:
        """``dfk``'s interchange died (on its watch thread): replace it, or break.

        The calls it held fail at once (Parsl would wait for them forever);
        the runner parks each one that may run again until the replacement is
        up.
        """
        with self._lock:
            if dfk in self._lost:
                return
            self._lost.add(dfk)
            broken = self.broken is not None
            replace = not self._stopping and not broken and self.restarts < self.max_restarts
            if replace:
                self.restarts += 1
                self._replacing += 1
            elif not broken:
                self.broken = error
            stopping = self._stopping
        # Failed (and their commands unblocked) before the replacement releases them.
        self._fail(dfk, error)
        if replace:
            assert self.loop is not None, 'no DFK was started'
            call_soon(self.loop, self._begin, dfk, error)
            return
        reason = (
            'the Director is stopping'
            if stopping
            else 'an earlier replacement failed'
            if broken
            else f'it was replaced {self.max_restarts} times already'
        )
        logger.error('%s: %s; not replaced: %s', self.name, error, reason)
        self.give_up_parked()

    def give_up(self, dfk: Any, error: InterchangeLost) -> None:
        """No DFK can run calls here (its blocks never start): fail what waits, refuse the rest.

        ``dfk`` is not replaced: a new one would fail the same way. Running and
        parked calls come back ``lost`` with ``error``; new calls are refused
        with it.
        """
        with self._lock:
            if self.broken is not None:
                return
            self.broken = error
            self._lost.add(dfk)
        self._fail(dfk, error)
        self.give_up_parked()

    def _begin(self, lost: Any, error: InterchangeLost) -> None:
        if self._stopping:
            # Shutdown began after the loss was reported: no new DFK.
            with self._lock:
                self._replacing -= 1
                self.broken = self.broken or error
            self.give_up_parked()
            return
        # Not a background task: shutdown waits for it rather than cancel it,
        # since a DFK that starts after a cancel would never be stopped.
        task = asyncio.create_task(self._replace(lost, error))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace(self, lost: Any, error: InterchangeLost) -> None:
        """Start a new DFK while the lost one is released; rerun the parked calls."""
        # One at a time: a replacement DFK can die while the one before is released.
        async with self._one_at_a_time:
            logger.warning(
                '%s: %s; starting a new DataFlowKernel (replacement %d of at most %d)',
                self.name,
                error,
                self.restarts,
                self.max_restarts,
            )
            started, released = await asyncio.gather(
                self._start(), self._release(lost), return_exceptions=True
            )
        if isinstance(released, BaseException):
            logger.error('%s: stopping the lost DFK failed: %s', self.name, released)
        self._fail_leftovers(lost, error)
        failed = isinstance(started, BaseException)
        with self._lock:
            self._replacing -= 1
            if failed:
                self.broken = self.broken or error
            # Another replacement still to come takes the parked calls.
            parked = [] if failed or self._replacing else self._parked
            if parked:
                self._parked = []
        if failed:
            logger.error('%s: cannot start a new DataFlowKernel: %s', self.name, started)
            self.give_up_parked()
            return
        logger.warning('%s: new DataFlowKernel up; rerunning %d call(s)', self.name, len(parked))
        reruns = [rerun for rerun, _ in parked]
        if len(reruns) <= INLINE_SUBMIT:
            run_each(reruns)
        else:
            # Thousands of submits would hold the event loop.
            await asyncio.to_thread(run_each, reruns)

    def park(self, rerun: Callable[[], None], give_up: Callable[[], None]) -> bool:
        """Rerun a call of a lost interchange on the next DFK; False if there is none."""
        with self._lock:
            if self.broken is not None:
                return False
            if self._replacing:
                self._parked.append((rerun, give_up))
                return True
        # The replacement is already up (this call failed after it started).
        rerun()
        return True

    def give_up_parked(self) -> None:
        """Answer every parked call with its loss (no DFK will run it)."""
        with self._lock:
            parked, self._parked = self._parked, []
        for _, give_up in parked:
            give_up()

    async def up(self) -> bool:
        """Wait for the DFK that replaces a lost one; False if none will come."""
        loop = asyncio.get_running_loop()
        up: asyncio.Future[bool] = loop.create_future()
        parked = self.park(
            lambda: call_soon(loop, resolve, up, True),
            lambda: call_soon(loop, resolve, up, False),
        )
        return parked and await up

    async def begin_stop(self) -> None:
        """From now on no DFK is replaced; wait for a replacement under way, give up the parked."""
        # Before any await: an interchange lost from now on is not replaced.
        self._stopping = True
        # A replacement under way finishes (a DFK started after a cancel would leak).
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        # No replacement DFK will come after this: answer what waits for one.
        with self._lock:
            self.broken = self.broken or InterchangeLost('the Director stopped')
        self.give_up_parked()


def run_each(callables: Sequence[Callable[[], None]]) -> None:
    """Call each of ``callables`` in turn."""
    for each in callables:
        each()
