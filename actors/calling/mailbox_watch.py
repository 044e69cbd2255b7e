"""Noticing that the exchange has lost the mailboxes a pending call needs.

A Redis server restarted without persistence (or an HTTP exchange restarted
with its in-memory backend) comes back empty. Academy's listeners go on
waiting on the new server, a Director's answer to a caller whose mailbox is
gone fails in the Director (``BadEntityIdError``, logged there), and the
caller would wait forever, although the result is in the Director's journal.

So every call waits under a watch: one task per exchange client asks the
exchange every [`EXCHANGE_POLL`][actors.common.timing.EXCHANGE_POLL] seconds,
while calls are pending, whether it still knows the client's own mailbox and
the mailboxes of the agents the calls wait on, and whether the client still
listens. A missing mailbox, an exchange that no longer answers (after its
transport's own retries) or a listener that ended resolves the watch of the
calls it concerns with the reason, and the caller raises
[`ExchangeStateLostError`][actors.calling.mailbox_watch.ExchangeStateLostError].
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterator
from typing import Any

from academy.exchange.mailbox_status import MailboxStatus
from academy.identifier import EntityId

from actors.common.errors import CallError
from actors.common.lost_mailbox import LOST_STATE
from actors.common.lost_mailbox import lost_mailbox
from actors.common.timing import EXCHANGE_POLL

logger = logging.getLogger(__name__)


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
