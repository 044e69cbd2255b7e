"""Whether the server's Directors are up yet: the call book once they are, or why not.

``launch.py mcp`` answers ``initialize`` and ``tools/list`` before its
Directors are up (an MCP host gives its server's first answer about 60 s,
less than worker pools can take to start), and brings them up in the
background. A request that needs them waits here: bounded, with a heartbeat
for progress, and told why if they never came up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from academy.exchange.client import exchange_context

from actors.common.errors import CallError
from actors.mcp.book import CallBook

HEARTBEAT = 5.0
"""Seconds between calls of a waiter's ``on_wait`` while the Directors start."""


class DirectorsUnavailableError(CallError, RuntimeError):
    """The Directors did not come up (start-up failed, or it outlasted the wait)."""


class Readiness:
    """The server's call book, set once its Directors are up.

    Args:
        limit: Seconds a request waits for the Directors at most.

    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.since = time.monotonic()
        self._book: CallBook | None = None
        self._exchange: Any = None
        self._failure: str | None = None
        self._settled = asyncio.Event()

    @classmethod
    def of(cls, book: CallBook) -> Readiness:
        """A readiness that is already ready with ``book``."""
        readiness = cls(0.0)
        readiness.ready(book)
        return readiness

    @property
    def settled(self) -> bool:
        """True once the Directors are up or start-up has failed."""
        return self._settled.is_set()

    @property
    def book(self) -> CallBook:
        """The call book (only once ready).

        Raises:
            DirectorsUnavailableError: If the Directors are not up.

        """
        if self._book is None:
            raise DirectorsUnavailableError(self._why())
        return self._book

    def ready(self, book: CallBook, exchange: Any = None) -> None:
        """The Directors are up: requests go to ``book``.

        Args:
            book: The call book over the Directors.
            exchange: The exchange client their handles use, if they find it
                through Academy's context (a Manager's handles): the requests
                that wait here began before the Manager set it, so
                [`wait`][actors.mcp.readiness.Readiness.wait] sets it for them.

        """
        self._book = book
        self._exchange = exchange
        self._settled.set()

    def failed(self, reason: str) -> None:
        """Start-up failed: every waiting and later request is told ``reason``."""
        self._failure = reason
        self._settled.set()

    async def wait(self, on_wait: Callable[[float], Awaitable[None]] | None = None) -> CallBook:
        """The call book, once the Directors are up.

        Args:
            on_wait: Called with the seconds start-up has taken so far, at
                once and then every ``HEARTBEAT`` seconds while it goes on
                (not at all if the Directors are up already).

        Raises:
            DirectorsUnavailableError: If start-up failed, or the Directors
                are not up within ``limit`` seconds of the server's start.

        """
        while not self._settled.is_set():
            waited = time.monotonic() - self.since
            left = self.limit - waited
            if left <= 0:
                raise DirectorsUnavailableError(
                    f'the Directors are not up after {waited:.0f}s of start-up; try again later'
                )
            if on_wait is not None:
                await on_wait(waited)
            try:
                await asyncio.wait_for(self._settled.wait(), min(HEARTBEAT, left))
            except TimeoutError:
                continue
        book = self.book
        if self._exchange is not None and exchange_context.get(None) is None:
            # Only in this request's context (the SDK runs each request in a task of its own).
            exchange_context.set(self._exchange)
        return book

    def _why(self) -> str:
        if self._failure is not None:
            return f'the Directors did not start: {self._failure}'
        return 'the Directors are still starting'
