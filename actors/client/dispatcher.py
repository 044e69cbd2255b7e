"""Route LLM-style tool calls to Directors with free capacity.

A tool call names a function (a registered tool or a Director action) and
gives its arguments as a JSON object or a JSON string. The dispatcher checks
the arguments against the function's schema first: a bad call raises
[`ConfigurationError`][actors.common.errors.ConfigurationError] and nothing is
submitted. A valid call goes to the Director with the most free capacity
(from each Director's ``status``: free worker slots, or free nodes for an MPI
tool), and the structured result comes back.

Accepted shapes: ``{"name": ..., "arguments": ...}`` (MCP ``tools/call``
params, or the short form), ``{"function": {"name": ..., "arguments": ...}}``
(an item of OpenAI's ``tool_calls``), or either as a JSON string.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar

from academy.exception import AgentTerminatedError
from academy.exception import BadEntityIdError
from academy.exception import MailboxTerminatedError
from academy.manager import Manager

from actors.calling.calls import call as call_director
from actors.common.errors import CallError
from actors.common.errors import ConfigurationError
from actors.common.results import CallResult
from actors.common.results import DirectorStatus
from actors.common.timing import STATUS_TIMEOUT
from actors.director.actions import is_action
from actors.director.specs import validate_call
from actors.tools.registry import TOOLS
from actors.tools.registry import get_tool

if TYPE_CHECKING:
    from actors.calling.calls import DirectorHandle

T = TypeVar('T')

logger = logging.getLogger(__name__)


ROUTING_STATUS_AGE = 0.25
"""Seconds the Directors' statuses are reused for routing: a status costs each
Director a round trip to its interchange, more than routing a no-op call is
worth; calls sent meanwhile are counted here (``_outstanding``). A Director
gone since is found when the call bounces (and the call goes elsewhere)."""

_GONE = (MailboxTerminatedError, AgentTerminatedError, BadEntityIdError)
"""Errors of a call to a Director that is gone: the call never ran there."""


class DirectorUnavailableError(CallError, RuntimeError):
    """No Director answers (all gone, silent or draining)."""


def parse_tool_call(call: Mapping[str, Any] | str) -> tuple[str, Any]:
    """Extract the function name and raw arguments of a tool call.

    Raises:
        ConfigurationError: If the call is not one of the accepted shapes.

    """
    if isinstance(call, (str, bytes)):
        try:
            call = json.loads(call)
        except json.JSONDecodeError as e:
            raise ConfigurationError(f'tool call is not valid JSON ({e})') from None
    if not isinstance(call, Mapping):
        raise ConfigurationError(
            f'a tool call must be a JSON object, got {type(call).__name__}',
        )
    body = call.get('function', call)
    if not isinstance(body, Mapping) or not isinstance(body.get('name'), str):
        raise ConfigurationError(
            'a tool call needs a "name" (and "arguments"): {"name": "ase_md", '
            '"arguments": {"temperature": 300}}, or OpenAI\'s {"function": {...}}',
        )
    return body['name'], body.get('arguments')


class Dispatcher:
    """Validates tool calls and sends each to the Director that can take it.

    Works wherever the handles are usable: in a client under a ``Manager``
    or inside an agent (such as [`Planner`][actors.client.planner.Planner]).

    Every call goes through [`call`][actors.calling.calls.call], as every
    client's does: a keyed call held by a Director that is restarted is sent
    again to its new incarnation.

    Args:
        directors: Handles of the Directors to route to.
        manager: The Manager that launched them, if this client has one (a
            Director whose task ended fails its calls at once, with its error).
        status_timeout: Seconds a Director has to answer ``status``.

    """

    def __init__(
        self,
        directors: Sequence[DirectorHandle],
        *,
        manager: Manager[Any] | None = None,
        status_timeout: float = STATUS_TIMEOUT,
    ) -> None:
        if not directors:
            raise ConfigurationError('a dispatcher needs at least one Director')
        self.directors = list(directors)
        self.manager = manager
        self.status_timeout = status_timeout
        self.unavailable: dict[int, str] = {}
        """Directors left out of routing (by index), and why: gone, silent or draining."""
        self._outstanding = [0] * len(self.directors)
        self._turn = itertools.count()
        self._routing: tuple[float, list[tuple[int, DirectorStatus]]] | None = None
        self._refresh: asyncio.Future[list[tuple[int, DirectorStatus]]] | None = None
        self._since = [0] * len(self.directors)
        """Calls sent to each Director since the statuses used for routing were taken."""

    async def statuses(self) -> list[DirectorStatus]:
        """The status of every Director that answers (``unavailable`` says who did not).

        Raises:
            DirectorUnavailableError: If no Director answers.

        """
        return [status for _, status in await self._answering()]

    async def _routing_statuses(self) -> list[tuple[int, DirectorStatus]]:
        """``_answering()``, reused for ``ROUTING_STATUS_AGE`` seconds.

        With one Director there is nothing to choose: its first answer is
        reused until a call bounces (``_left_out``), so a call costs no
        status round trip (what the status is read for, its tool and the
        most nodes it may take, does not change while it lives).
        """
        now = time.monotonic()
        if self._routing is not None and (
            len(self.directors) == 1 or now - self._routing[0] < ROUTING_STATUS_AGE
        ):
            return self._routing[1]
        if self._refresh is None:
            # One status round for every call that needs it now, not one per call.
            self._refresh = asyncio.ensure_future(self._answering())
        refresh = self._refresh
        try:
            answering = await asyncio.shield(refresh)
        finally:
            if self._refresh is refresh and refresh.done():
                self._refresh = None
        if self._routing is None or self._routing[1] is not answering:
            self._routing = (time.monotonic(), answering)
            self._since = [0] * len(self.directors)
        return answering

    async def _answering(self) -> list[tuple[int, DirectorStatus]]:
        """``(index, status)`` of every Director that answers and is not draining."""
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(call_director(self.manager, h, 'status'), self.status_timeout)
                for h in self.directors
            ),
            return_exceptions=True,
        )
        live: list[tuple[int, DirectorStatus]] = []
        for index, answer in enumerate(answers):
            if isinstance(answer, BaseException):
                reason = f'{type(answer).__name__}: {answer}'.rstrip(': ')
                if isinstance(answer, (TimeoutError, asyncio.TimeoutError)):
                    reason = f'no status within {self.status_timeout:g}s'
                self._left_out(index, reason)
            elif answer.draining:
                self._left_out(index, 'draining (its allocation ends)')
            else:
                self.unavailable.pop(index, None)
                live.append((index, answer))
        if not live:
            reasons = '; '.join(f'Director {i}: {why}' for i, why in self.unavailable.items())
            raise DirectorUnavailableError(f'no Director can take calls ({reasons})')
        return live

    def _left_out(self, index: int, reason: str) -> None:
        self._routing = None  # Route on fresh statuses from now on.
        if self.unavailable.get(index) != reason:
            logger.warning('dispatcher: routing around Director %d: %s', index, reason)
        self.unavailable[index] = reason

    async def dispatch(
        self,
        call: Mapping[str, Any] | str,
    ) -> CallResult | list[CallResult] | list[DirectorStatus]:
        """Validate one tool call, route it, and return its result.

        Returns:
            A tool or ``md_sim`` call's `CallResult`; ``md_sim_batch``'s list
            of results; for ``status``, every Director's status.

        Raises:
            ConfigurationError: If the call is malformed or its arguments do
                not match the schema; nothing is submitted then.

        """
        name, raw = parse_tool_call(call)
        arguments = validate_call(name, raw)
        if name == 'status':
            return await self.statuses()
        if name in TOOLS:
            return await self.run_tool(name, arguments)
        if not is_action(name):  # validate_call knows tools and actions only
            raise ConfigurationError(f'{name!r} is neither a tool nor an action of a Director')
        action = name
        return await self._send(
            name, arguments, 1, lambda h, _: call_director(self.manager, h, action, **arguments)
        )

    async def run_tool(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        call_key: str | None = None,
        timeout: float | None = None,
        on_route: Callable[[int], None] | None = None,
    ) -> CallResult:
        """Run one call of a registered tool (arguments already validated) where it fits best.

        Args:
            tool: The tool's name.
            arguments: Its arguments.
            call_key: Stable key: a journaled key is answered without running.
            timeout: Seconds the tool may run.
            on_route: Called with the chosen Director's index before sending.

        """
        return await self._send(
            tool,
            arguments,
            1,
            lambda h, _: call_director(
                self.manager, h, 'call_tool', tool, arguments, call_key=call_key, timeout=timeout
            ),
            on_route,
        )

    async def run_batch(
        self,
        tool: str,
        arguments: Sequence[Mapping[str, Any]],
        *,
        call_keys: Sequence[str] | None = None,
        timeout: float | None = None,
        on_route: Callable[[int], None] | None = None,
    ) -> list[CallResult]:
        """Run many calls of one tool as one ``md_sim_batch`` on the Director that fits best.

        The calls of the chosen Director's default tool go without ``tool=...``:
        the Director then runs a python tool's batch on its fast path (one
        submission for all, as ``md_sim_batch(iterations=...)`` does); naming
        the tool would route every call on its own. Results and journal keys
        are the same either way.
        """

        def send(handle: DirectorHandle, status: DirectorStatus) -> Awaitable[list[CallResult]]:
            # The Director decides the path (CallChecks.routed); it only has to be allowed to.
            named = status.tool != tool
            params = [{**a, 'tool': tool} if named else dict(a) for a in arguments]
            return call_director(
                self.manager,
                handle,
                'md_sim_batch',
                params=params,
                call_keys=call_keys,
                timeout=timeout,
            )

        return await self._send(
            tool,
            # Only a Director whose partition fits the largest call can take the batch.
            max(arguments, key=lambda a: _nodes_needed(tool, a), default={}),
            len(arguments),
            send,
            on_route,
        )

    async def _send(
        self,
        name: str,
        arguments: Mapping[str, Any],
        weight: int,
        send: Callable[[DirectorHandle, DirectorStatus], Awaitable[T]],
        on_route: Callable[[int], None] | None = None,
    ) -> T:
        """Send to the best Director; to the next one if it turns out to be gone.

        ``send`` gets the Director's handle and the status it was chosen by.
        """
        while True:
            index, status = await self._choose(name, arguments)
            if on_route is not None:
                on_route(index)
            self._outstanding[index] += weight
            self._since[index] += weight
            logger.debug('dispatching %s to Director %d', name, index)
            try:
                return await send(self.directors[index], status)
            except _GONE as e:
                # Never delivered (the Director's mailbox is closed): safe to send elsewhere.
                self._left_out(index, f'{type(e).__name__}: {e}')
            finally:
                self._outstanding[index] -= weight

    async def dispatch_many(
        self,
        calls: Sequence[Mapping[str, Any] | str],
    ) -> list[Any]:
        """Validate every call first, then dispatch them concurrently.

        Raises:
            ConfigurationError: If any call is bad; none is submitted then.

        """
        for call in calls:
            name, raw = parse_tool_call(call)
            validate_call(name, raw)
        return list(await asyncio.gather(*(self.dispatch(call) for call in calls)))

    async def _choose(self, name: str, arguments: Mapping[str, Any]) -> tuple[int, DirectorStatus]:
        """Pick the Director with the most free capacity that can run the call.

        Returns:
            Its index and the status it was chosen by.

        Raises:
            ConfigurationError: If no Director's partition can ever run it.

        """
        nodes = _nodes_needed(name, arguments)
        answering = await self._routing_statuses()
        statuses = dict(answering)
        # In an elastic run a Director borrows the nodes it lacks (up to the job's).
        candidates = [i for i, s in answering if _most_nodes(s) >= nodes]
        if not candidates:
            largest = max(_most_nodes(s) for s in statuses.values())
            raise ConfigurationError(
                f'{name}: num_nodes={nodes} is more than any Director can take '
                f'({largest} node(s)); give num_nodes=1..{largest}',
            )
        turn = next(self._turn)
        count = len(self.directors)

        def score(i: int) -> tuple[int, int, int]:
            status = statuses[i]
            if nodes:
                free = status.mpi_nodes_free - status.mpi_waiting
            else:
                free = status.slots - status.queued - status.running
            return (-(free - self._since[i]), self._outstanding[i], (i - turn) % count)

        chosen = min(candidates, key=score)
        return chosen, statuses[chosen]


def _most_nodes(status: DirectorStatus) -> int:
    """The most nodes one MPI call to this Director may ask for."""
    return max(status.mpi_max_nodes, len(status.nodes))


def _nodes_needed(name: str, arguments: Mapping[str, Any]) -> int:
    """Nodes an MPI call needs (0 for anything that runs on a worker slot)."""
    tool_name = arguments.get('tool') if name == 'md_sim' else name
    if not isinstance(tool_name, str) or tool_name not in TOOLS:
        return 0
    nodes = arguments.get('num_nodes', 1)
    if not get_tool(tool_name).mpi or isinstance(nodes, bool) or not isinstance(nodes, int):
        return 0  # The Director names the problem, if there is one.
    return nodes
