"""The calls of one fast-path action: their results in order, answered all at once."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from actors.common.loop import call_soon
from actors.common.loop import reject
from actors.common.loop import resolve
from actors.common.results import CallResult
from actors.director.ledger import Ledger


class Batch:
    """The calls of one action: their results in order, answered all at once.

    One record per action instead of a future per call: a no-op call costs
    about as much as the objects made for it (allocation and garbage
    collection), so a 3000-call batch must not make 3000 futures.

    The caller of a batch is answered when its last result is committed, so
    only that one is urgent; the others may share a later group commit (see
    ``Journal.write``). The journal count starts at one for the submission
    itself, so that the calls that finish while later ones are still being
    submitted never look like the last.

    Args:
        ledger: The Director's ledger (its journal).
        action_name: The action that issued the calls.
        calls: Each call's tool parameters.
        keys: Each call's key (or ``None``).
        loop: The event loop of the action that awaits ``done``.
        timeout: Seconds each call may run (``None``: no limit).

    """

    def __init__(
        self,
        ledger: Ledger,
        action_name: str,
        calls: Sequence[Mapping[str, Any]],
        keys: Sequence[str | None],
        loop: asyncio.AbstractEventLoop,
        *,
        timeout: float | None = None,
    ) -> None:
        size = len(calls)
        self._ledger = ledger
        self.action_name = action_name
        self.calls = calls
        self.keys = keys
        self.timeout = timeout
        self.submitted_at = time.time()
        self.results: list[CallResult | None] = [None] * size
        self.done: asyncio.Future[list[CallResult]] = loop.create_future()
        self._loop = loop
        # Two locks: a commit on the caller's thread answers from inside journal().
        self._lock = threading.Lock()
        self._answer_lock = threading.Lock()
        self._unanswered = size
        self._unjournaled = 1
        if size == 0:
            self.done.set_result([])

    def add(self) -> None:
        """One more call will be journaled."""
        with self._lock:
            self._unjournaled += 1

    def journal(self, index: int, result: CallResult, shared: Future[CallResult] | None) -> None:
        """Journal call ``index``'s result, urgently if it is the last one awaited."""
        durable = functools.partial(self._journaled, index, result, shared)
        # Queued under the lock: the last result must not be committed before
        # an earlier one is queued, or that one would linger and delay the caller.
        with self._lock:
            self._unjournaled -= 1
            self._ledger.write(result, durable, urgent=self._unjournaled == 0)

    def submitted(self) -> None:
        """Every call is submitted: commit at once if all results are queued."""
        with self._lock:
            self._unjournaled -= 1
            last = self._unjournaled == 0
        if last:
            self._ledger.flush()

    def _journaled(
        self,
        index: int,
        result: CallResult,
        shared: Future[CallResult] | None,
        error: BaseException | None,
    ) -> None:
        if error is not None:
            if shared is not None:
                shared.set_exception(error)
            self.fail(error)
            return
        self._ledger.remember(result)
        if shared is not None:
            shared.set_result(result)
        self.answer(index, result)

    def answer_from(self, index: int, future: Future[CallResult]) -> None:
        """Call ``index`` is answered by another call's future (replay, twin)."""
        error = future.exception()
        if error is not None:
            self.fail(error)
        else:
            self.answer(index, future.result())

    def answer(self, index: int, result: CallResult) -> None:
        """Call ``index`` has its (journaled) result."""
        self.results[index] = result
        with self._answer_lock:
            self._unanswered -= 1
            last = self._unanswered == 0
        if last:
            call_soon(self._loop, resolve, self.done, self.results)

    def fail(self, error: BaseException) -> None:
        """A result could not be journaled: the action fails with ``error``."""
        call_soon(self._loop, reject, self.done, error)
