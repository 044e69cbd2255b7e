"""Notice that a Director restarted while calls to it were pending.

The Manager restarts a Director that died under the same identity (the same
mailbox); the new incarnation knows nothing of the requests the old one
held, and they would wait for ever. Each Director draws a new incarnation id
when it starts. A [`RestartWatch`][actors.calling.restarts.RestartWatch] asks
one Director for it every
[`RESTART_PROBE`][actors.common.timing.RESTART_PROBE] seconds while calls to it
are pending (one question per Director, whatever the number of calls), and
tells each pending call when the incarnation that took it is gone.

A call sent while the watch's last answer is fresh (younger than one probe
interval) takes that answer as the incarnation that received it; otherwise
the watch asks first. So a call that ends within the interval costs no
question at all, and a busy client asks each Director once per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import TYPE_CHECKING
from typing import Any

from academy.handle import Handle

from actors.common.timing import RESTART_PROBE
from actors.common.timing import RESTART_PROBE_TIMEOUT
from actors.director.startup import quiet_start_failures

if TYPE_CHECKING:
    from academy.agent import Agent

    from actors.director.actions import DirectorAction

logger = logging.getLogger(__name__)

INCARNATION_ACTION: DirectorAction = 'incarnation_id'
"""The Director's action that names its incarnation."""


class RestartWatch:
    """The incarnation of one Director, asked for while calls to it are pending.

    Args:
        handle: The Director's handle.
        interval: Seconds between two questions.
        timeout: Seconds an answer may take before the question is asked again.

    """

    def __init__(
        self,
        handle: Handle[Agent],
        interval: float = RESTART_PROBE,
        timeout: float = RESTART_PROBE_TIMEOUT,
    ) -> None:
        self.handle = handle
        self.interval = interval
        self.timeout = timeout
        self.seen: str | None = None
        """The last incarnation the Director named."""
        self.supported = True
        """False once the agent turned out to have no incarnation (not a Director)."""
        self._seen_at = float('-inf')
        self._waiters: dict[asyncio.Future[str], str | None] = {}
        self._poller: asyncio.Task[None] | None = None
        quiet_start_failures()  # a question cancelled is not an error in Academy's log

    async def restarted(self) -> str:
        """Return the new incarnation once the one that took a call just sent is gone.

        Never returns for an agent without incarnations (the caller's other
        waits decide then).
        """
        since = self.seen if time.monotonic() - self._seen_at < self.interval else None
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = since
        self._ensure_polling()
        try:
            return await waiter
        finally:
            self._waiters.pop(waiter, None)
            if not self._waiters and self._poller is not None:
                # Nobody waits: no question may outlive the calls (nor the exchange,
                # whose client would log a refused connection with its traceback).
                self._poller.cancel()
                self._poller = None

    def _ensure_polling(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        """Ask for the incarnation while anybody waits; wake who waits on an older one."""
        first = True
        while self._waiters and self.supported:
            if not first or all(since is not None for since in self._waiters.values()):
                await asyncio.sleep(self.interval)
            first = False
            incarnation = await self._ask()
            if incarnation is None:
                continue
            for waiter, since in list(self._waiters.items()):
                if waiter.done():
                    continue
                if since is None:
                    self._waiters[waiter] = incarnation  # the one that took the call
                elif since != incarnation:
                    waiter.set_result(incarnation)

    async def _ask(self) -> str | None:
        """The Director's incarnation now; ``None`` if it did not say within the timeout."""
        question = asyncio.ensure_future(_asked(self.handle))
        try:
            done, _ = await asyncio.wait({question}, timeout=self.timeout)
        except asyncio.CancelledError:
            _discard(question)
            raise
        if not done:
            _discard(question)
            return None  # busy, restarting, or an exchange outage: ask again
        try:
            incarnation = question.result()
        except AttributeError as e:
            # An agent without the action (not a Director): nothing to watch.
            logger.debug('%s has no incarnation: %s', self.handle.agent_id, e)
            self.supported = False
            return None
        except Exception as e:
            logger.debug('asking %s for its incarnation: %r', self.handle.agent_id, e)
            return None
        self.seen, self._seen_at = incarnation, time.monotonic()
        return incarnation


async def _asked(handle: Handle[Agent]) -> str:
    """The Director's incarnation; a question cancelled ends as a cancellation.

    Academy tells the agent that a cancelled request is withdrawn; if that
    fails (the Director is gone at the client's exit), the request would end
    with that error instead, and ``asyncio.run`` reports it as unhandled.
    """
    try:
        return await handle.action(INCARNATION_ACTION)
    except Exception as e:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from e
        raise


def _discard(question: asyncio.Future[Any]) -> None:
    """Cancel an unanswered question and consume what it ends with."""

    def consume(future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            with contextlib.suppress(BaseException):
                future.exception()

    question.cancel()
    question.add_done_callback(consume)


_WATCHES: weakref.WeakKeyDictionary[Any, dict[Any, RestartWatch]] = weakref.WeakKeyDictionary()
"""One watch per Director per exchange client (dropped with the client)."""


def restart_watch(handle: Handle[Agent]) -> RestartWatch:
    """The shared [`RestartWatch`][actors.calling.restarts.RestartWatch] of a Director."""
    watches = _WATCHES.setdefault(handle.exchange, {})
    watch = watches.get(handle.agent_id)
    if watch is None:
        watch = watches[handle.agent_id] = RestartWatch(handle)
    return watch
