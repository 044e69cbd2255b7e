"""What ends a pending call besides its answer: a restarted Director, a lost mailbox.

**A restarted Director** while calls to it were pending. The Manager restarts a
Director that died under the same identity (the same mailbox); the new
incarnation knows nothing of the requests the old one held, and they would wait
for ever. Each Director draws a new incarnation id when it starts. A
[`RestartWatch`][actors.calling.watches.RestartWatch] asks one Director for it
every [`RESTART_PROBE`][actors.common.timing.RESTART_PROBE] seconds while calls
to it are pending (one question per Director, whatever the number of calls),
and tells each pending call when the incarnation that took it is gone.

A call sent while the watch's last answer is fresh (younger than one probe
interval) takes that answer as the incarnation that received it; otherwise the
watch asks first. So a call that ends within the interval costs no question at
all, and a busy client asks each Director once per interval.

**A forgotten mailbox**: the exchange lost the mailboxes a pending call needs.
A Redis server restarted without persistence (or an HTTP exchange restarted
with its in-memory backend) comes back empty. Academy's listeners go on waiting
on the new server, a Director's answer to a caller whose mailbox is gone fails
in the Director (``BadEntityIdError``, logged there), and the caller would wait
forever, although the result is in the Director's journal.

So every call waits under a watch: one task per exchange client asks the
exchange every [`EXCHANGE_POLL`][actors.common.timing.EXCHANGE_POLL] seconds,
while calls are pending, whether it still knows the client's own mailbox and
the mailboxes of the agents the calls wait on, and whether the client still
listens. A missing mailbox, an exchange that no longer answers (after its
transport's own retries) or a listener that ended resolves the watch of the
calls it concerns with the reason, and the caller raises
[`ExchangeStateLostError`][actors.calling.watches.ExchangeStateLostError].
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

from academy.exchange.mailbox_status import MailboxStatus
from academy.handle import Handle
from academy.identifier import EntityId

from actors.common.errors import CallError
from actors.common.lost_mailbox import LOST_STATE
from actors.common.lost_mailbox import lost_mailbox
from actors.common.timing import EXCHANGE_POLL
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
    """The shared [`RestartWatch`][actors.calling.watches.RestartWatch] of a Director."""
    watches = _WATCHES.setdefault(handle.exchange, {})
    watch = watches.get(handle.agent_id)
    if watch is None:
        watch = watches[handle.agent_id] = RestartWatch(handle)
    return watch


class ExchangeStateLostError(CallError, ConnectionError):
    """The exchange lost a call's mailboxes: its answer can never arrive."""


class _Watch:
    """The pending calls of one exchange client, and the task that checks on them."""

    def __init__(self, exchange: Any) -> None:
        # Weakly: the watch is the value of a weak mapping keyed by the exchange.
        self._exchange = weakref.ref(exchange)
        self.waiting: dict[EntityId, set[asyncio.Future[str]]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, agent_id: EntityId) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(agent_id, set()).add(future)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=f'mailbox-watch-{id(self)}')
        return future

    def discard(self, agent_id: EntityId, future: asyncio.Future[str]) -> None:
        futures = self.waiting.get(agent_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self.waiting[agent_id]

    async def _run(self) -> None:
        # Ends by itself once nothing waits; the next call starts a new one.
        while self.waiting:
            await asyncio.sleep(EXCHANGE_POLL)
            exchange = self._exchange()
            if exchange is None or not self.waiting:
                return
            problem = self._listener_problem(exchange) or await self._mailbox_problem(
                exchange, exchange.client_id, 'this client'
            )
            if problem is not None:
                self._resolve(exchange, list(self.waiting), problem)
                continue
            for agent_id in list(self.waiting):
                problem = await self._mailbox_problem(exchange, agent_id, str(agent_id))
                if problem is not None:
                    self._resolve(exchange, [agent_id], problem)

    @staticmethod
    def _listener_problem(exchange: Any) -> str | None:
        # A user client's listener task; an agent's is its runtime's.
        task = getattr(exchange, '_listener_task', None)
        if task is None or not task.done():
            return None
        error = None if task.cancelled() else task.exception()
        if lost_mailbox(error) is not None:
            # Academy's listener met the loss before this watch asked.
            return f'the exchange no longer knows the mailbox of this client: {LOST_STATE}'
        return f'this client stopped listening to the exchange ({error!r})'

    @staticmethod
    async def _mailbox_problem(exchange: Any, uid: EntityId, whose: str) -> str | None:
        try:
            status = await exchange.status(uid)
        except Exception as e:
            return f'the exchange does not answer ({type(e).__name__}: {e})'
        if status == MailboxStatus.MISSING:
            return f'the exchange no longer knows the mailbox of {whose} ({uid}): {LOST_STATE}'
        return None

    def _resolve(self, exchange: Any, agent_ids: list[EntityId], problem: str) -> None:
        logger.error('%s: %s', exchange.client_id, problem)
        for agent_id in agent_ids:
            for future in self.waiting.pop(agent_id, set()):
                if not future.done():
                    future.set_result(problem)


_watches: weakref.WeakKeyDictionary[Any, _Watch] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def mailbox_watch(exchange: Any, agent_id: EntityId) -> Iterator[asyncio.Future[str]]:
    """Watch the mailboxes of a call from ``exchange``'s client to ``agent_id``.

    Yields:
        A future that resolves to the reason once the call's answer can no
        longer arrive (it never resolves while all is well).

    """
    watch = _watches.get(exchange)
    if watch is None:
        watch = _watches[exchange] = _Watch(exchange)
    future = watch.add(agent_id)
    try:
        yield future
    finally:
        watch.discard(agent_id, future)
        future.cancel()
