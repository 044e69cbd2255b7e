"""One durable MCP call and where it stands (the book keeps them).

An [`Entry`][actors.mcp.entry.Entry] is a call or an ensemble of calls under
one key: its tool and arguments, its state (``working``, then ``completed``,
``failed`` or ``cancelled``), how many of its tool calls ended, and its
structured result once it ended. Followers wait on its changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from actors.common.names import director_name
from actors.mcp.jsonsafe import dumps

WORKING = 'working'
COMPLETED = 'completed'
FAILED = 'failed'
CANCELLED = 'cancelled'
ENDED = (COMPLETED, FAILED, CANCELLED)


@dataclasses.dataclass
class Entry:
    """One durable call and where it stands.

    Attributes:
        key: Its call key (an ensemble's calls have ``<key>/<i>``).
        tool: The tool it runs.
        arguments: The tool's arguments (a list of them for an ensemble).
        ensemble: True for an ensemble.
        timeout: Seconds each tool call may run.
        created: Unix time it was submitted.
        updated: Unix time it last changed.
        state: ``working``, ``completed``, ``failed`` or ``cancelled``.
        done: Tool calls that ended.
        total: Tool calls in all.
        directors: Indexes of the Directors it was sent to.
        message: What it is doing, or why it failed.
        result: Its structured result once it ended (``None`` if it
            ended without one: refused, or the Directors were unreachable).

    """

    key: str
    tool: str
    arguments: Any
    ensemble: bool = False
    timeout: float | None = None
    created: float = dataclasses.field(default_factory=time.time)
    updated: float = dataclasses.field(default_factory=time.time)
    state: str = WORKING
    done: int = 0
    total: int = 1
    directors: list[int] = dataclasses.field(default_factory=list)
    message: str = ''
    result: dict[str, Any] | None = None
    _changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event, repr=False)
    _task: asyncio.Task[None] | None = dataclasses.field(default=None, repr=False)

    @property
    def ended(self) -> bool:
        """True once the call can no longer change."""
        return self.state in ENDED

    def view(self) -> dict[str, Any]:
        """Where the call stands (``CALL_STATE_SCHEMA``)."""
        return {
            'call_key': self.key,
            'tool': self.tool if not self.ensemble else f'ensemble of {self.tool}',
            'state': self.state,
            'done': self.done,
            'total': self.total,
            'directors': [director_name(i) for i in sorted(set(self.directors))],
            'message': self.message,
            'created': self.created,
            'updated': self.updated,
        }

    def touch(self, **changes: Any) -> None:
        """Apply ``changes`` and wake whoever follows the call."""
        for name, value in changes.items():
            setattr(self, name, value)
        self.updated = time.time()
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float | None = None) -> bool:
        """Wait until the call changes (False after ``timeout`` seconds without a change)."""
        if self.ended:
            return True
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the call ended (False if ``timeout`` seconds passed first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ended:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            await self.changed(left)
        return True

    def same_call(self, tool: str, arguments: Any, ensemble: bool) -> bool:
        """True if ``tool(arguments)`` is the call this entry holds."""
        try:
            given = plain(arguments)
        except (TypeError, ValueError):
            return False  # not even writable: not the call the book recorded
        return (self.tool, self.ensemble, plain(self.arguments)) == (tool, ensemble, given)


def state_of(status: str) -> str:
    """The entry state of one tool call's ``status``."""
    if status == 'ok':
        return COMPLETED
    return CANCELLED if status == 'cancelled' else FAILED


def ensemble_state(counts: Mapping[str, int]) -> str:
    """The entry state of an ensemble whose calls ended with ``counts`` of each status."""
    if counts.get('cancelled'):
        return CANCELLED
    return COMPLETED if set(counts) <= {'ok'} else FAILED


def summary(entry: Entry, result: Mapping[str, Any]) -> str:
    """One line on how the call ended."""
    if entry.ensemble:
        counts = ', '.join(f'{n} {status}' for status, n in sorted(result['counts'].items()))
        return f'{entry.total} calls: {counts}'
    where = result.get('node') or result.get('director')
    if result['ok']:
        return f'ok on {where} in {result["wall_time"]:.2f}s'
    return f'{result["status"]} on {where}: {result.get("error_message") or ""}'.rstrip(': ')


def plain(value: Any) -> bytes:
    """``value`` as canonical JSON (sorted keys): two calls compare by it."""
    return dumps(value, sort_keys=True)
