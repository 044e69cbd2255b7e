"""The MCP request handlers: tools, tasks, resources and progress over the call book.

A ``tools/call`` of a tool or an ensemble is a durable call in the
[`CallBook`][actors.mcp.book.CallBook]. Without task metadata the request
follows the call to its end, sending progress notifications when the client
asked for them (a ``progressToken``); with it (MCP tasks) the request returns
at once with a task whose id is the call key, and ``tasks/get``,
``tasks/result``, ``tasks/list`` and ``tasks/cancel`` work on the book.

Two ways a request ends early, told apart: the client cancels it
(``notifications/cancelled``): the call is cancelled on its Directors, and
its tool stops; or the connection goes away: the call runs on, and its
result waits in the book for ``call_result`` or the same ``call_key``.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import functools
import importlib.metadata
import json
import logging
import math
import time
from typing import Any

import mcp.types as mt
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.shared.exceptions import McpError
from mcp.shared.session import RequestResponder
from pydantic import AnyUrl

from actors.common.errors import ConfigurationError
from actors.common.limits import MAX_KEY_LENGTH
from actors.common.limits import check_key
from actors.common.limits import check_timeout
from actors.mcp import shapes
from actors.mcp.book import CallBook
from actors.mcp.entry import CANCELLED
from actors.mcp.entry import COMPLETED
from actors.mcp.entry import Entry
from actors.mcp.outputs import OUTPUTS_URI
from actors.mcp.readiness import DirectorsUnavailableError
from actors.mcp.readiness import Readiness
from actors.tools.registry import TOOLS
from actors.tools.schemas import validate_arguments

logger = logging.getLogger(__name__)

HEARTBEAT = 5.0
"""Seconds between progress notifications while nothing changes (a long call is alive)."""
STATUS_URI = 'hpc://status'
POLL_INTERVAL_MS = 1000
RETENTION_MS = 7 * 86400 * 1000
"""Task retention announced to clients (the book keeps calls as long as the run dir)."""

_RESPONDER: contextvars.ContextVar[RequestResponder[Any, Any] | None] = contextvars.ContextVar(
    'mcp_responder', default=None
)


class _Server(Server[Any, Any]):
    """The SDK's low-level server, telling a client's cancel from a lost connection.

    Both reach a handler as a cancellation; only the request's responder knows
    which it was (``cancelled`` is set by ``notifications/cancelled``). The SDK
    does not pass it to handlers, so it is kept in a context variable here:
    the one place this package reaches into the SDK's request handling.
    """

    async def _handle_request(
        self,
        message: RequestResponder[Any, Any],
        req: Any,
        session: Any,
        lifespan_context: Any,
        raise_exceptions: bool,
    ) -> None:
        token = _RESPONDER.set(message)
        try:
            await super()._handle_request(message, req, session, lifespan_context, raise_exceptions)
        finally:
            _RESPONDER.reset(token)


def _client_cancelled() -> bool:
    responder = _RESPONDER.get()
    return responder is not None and responder.cancelled


def build_server(book: CallBook | Readiness) -> Server[Any, Any]:
    """An MCP server whose tools run on ``book``'s Directors.

    Given a [`Readiness`][actors.mcp.readiness.Readiness] whose Directors are
    still starting, it answers ``initialize`` and ``tools/list`` at once; a
    request that needs the Directors waits for them.
    """
    try:
        version = importlib.metadata.version('hpc-tool-calling')
    except importlib.metadata.PackageNotFoundError:
        version = '0'
    server = _Server(
        'hpc-tool-calling',
        version=version,
        instructions=(
            'Tools run simulations on the nodes of an HPC batch job. Long calls send '
            'progress; give a call_key to fetch a result again after a disconnect '
            '(call_result), or use submit / call_status / call_result / cancel_call.'
        ),
    )
    handlers = _Handlers(server, book if isinstance(book, Readiness) else Readiness.of(book))
    tools = shapes.list_tools()

    @server.list_tools()
    async def list_tools() -> list[mt.Tool]:
        return tools

    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        return await handlers.call(name, arguments)

    @server.list_resources()
    async def list_resources() -> list[mt.Resource]:
        await handlers.ready()
        return handlers.resources()

    @server.read_resource()
    async def read_resource(uri: AnyUrl) -> list[ReadResourceContents]:
        # Every resource is JSON, as the listing says (a bare str would go out as text/plain).
        await handlers.ready()
        return [ReadResourceContents(await handlers.read(str(uri)), 'application/json')]

    experimental = server.experimental
    experimental.get_task()(handlers.after_start(handlers.get_task))
    experimental.get_task_result()(handlers.after_start(handlers.get_task_result))
    experimental.list_tasks()(handlers.after_start(handlers.list_tasks))
    experimental.cancel_task()(handlers.after_start(handlers.cancel_task))
    return server


class _Handlers:
    """What each request does, over one call book."""

    def __init__(self, server: Server[Any, Any], readiness: Readiness) -> None:
        self.server = server
        self.readiness = readiness

    @property
    def book(self) -> CallBook:
        """The call book; only once the Directors are up (every handler waits first)."""
        return self.readiness.book

    # Start-up: requests that need the Directors wait for them.

    async def ready(self) -> None:
        """Wait for the Directors (a JSON-RPC error if they did not come up)."""
        try:
            await self.readiness.wait()
        except DirectorsUnavailableError as e:
            raise McpError(mt.ErrorData(code=mt.INTERNAL_ERROR, message=str(e))) from None

    def after_start(self, handler: Any) -> Any:
        """``handler``, run once the Directors are up."""

        # wraps: the SDK passes the request only to a handler whose signature takes it by type.
        @functools.wraps(handler)
        async def waiting(request: Any) -> Any:
            await self.ready()
            return await handler(request)

        return waiting

    async def _call_ready(self, progress: Progress) -> None:
        """Wait for the Directors, with progress notifications if the client asked for them."""
        context = self.server.request_context
        token = context.meta.progressToken if context.meta is not None else None

        async def notify(waited: float) -> None:
            if token is not None:
                message = f'starting the Directors ({waited:.0f}s so far)'
                await context.session.send_progress_notification(
                    token, progress.value(0), None, message
                )

        await self.readiness.wait(notify)

    # tools/call

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        # One Progress for the whole request: MCP wants its values to increase throughout.
        progress = Progress()
        try:
            await self._call_ready(progress)
        except DirectorsUnavailableError as e:
            return _error(str(e))
        try:
            if name in TOOLS or name == shapes.ENSEMBLE:
                entry = self._submit(name, arguments)
                if self.server.request_context.experimental.is_task:
                    return mt.CreateTaskResult(task=_task(entry))
                return await self._follow(entry, progress)
            if name == shapes.STATUS:
                return _reply(await self._status())
            return await self._durable(name, arguments)
        except ConfigurationError as e:
            return _error(str(e))

    def _submit(self, name: str, arguments: dict[str, Any]) -> Entry:
        """Check a tool or ensemble call and put it in the book."""
        if name == shapes.ENSEMBLE:
            arguments = dict(arguments)
            tool = arguments.pop('tool', None)
            sets = arguments.pop('arguments', None)
            control = _control(name, arguments)
            if not isinstance(tool, str) or tool not in TOOLS:
                raise ConfigurationError(
                    f'ensemble: tool {tool!r} is not one of {", ".join(sorted(TOOLS))}'
                )
            checked = _check_sets(tool, sets)
            return self.book.submit(tool, checked, ensemble=True, **control)
        rest = dict(arguments)
        control = _control(name, rest)
        return self.book.submit(name, validate_arguments(name, rest), **control)

    async def _follow(self, entry: Entry, progress: Progress) -> mt.CallToolResult:
        """Wait for the call's end, with progress; cancel it if the client cancels."""
        context = self.server.request_context
        token = context.meta.progressToken if context.meta is not None else None

        async def notify() -> None:
            if token is not None:
                value = progress.value(entry.done, entry.total)
                await context.session.send_progress_notification(
                    token, value, entry.total, _progress_message(entry)
                )

        try:
            while not entry.ended:
                await notify()
                await entry.changed(HEARTBEAT)
        except asyncio.CancelledError:
            if _client_cancelled():
                logger.info('client cancelled %s; stopping it', entry.key)
                await asyncio.shield(self.book.cancel(entry.key))
            raise
        await notify()
        return _entry_result(entry)

    async def _status(self) -> dict[str, Any]:
        dispatcher = self.book.front.dispatcher
        try:
            statuses = await dispatcher.statuses()
        except Exception as e:
            raise ConfigurationError(f'no Director answers: {e}') from None
        return {
            'directors': [s.to_dict() for s in statuses],
            'unavailable': {str(i): why for i, why in dispatcher.unavailable.items()},
        }

    async def _durable(self, name: str, arguments: dict[str, Any]) -> Any:
        """``submit``, ``call_status``, ``call_result``, ``cancel_call``."""
        if name == shapes.SUBMIT:
            arguments = dict(arguments)
            tool = arguments.pop('tool', None)
            sets = arguments.pop('arguments', None)
            if tool == shapes.ENSEMBLE:
                raise ConfigurationError(
                    'submit: for an ensemble give tool="<tool name>" and a list of arguments'
                )
            if isinstance(sets, list):
                return _reply(
                    self._submit(
                        shapes.ENSEMBLE, {'tool': tool, 'arguments': sets, **arguments}
                    ).view()
                )
            if not isinstance(tool, str) or tool not in TOOLS:
                raise ConfigurationError(
                    f'submit: tool {tool!r} is not one of {", ".join(sorted(TOOLS))}'
                )
            if not isinstance(sets, dict):
                raise ConfigurationError(
                    f'submit: arguments must be an object (or a list of objects for an '
                    f'ensemble), got {type(sets).__name__}'
                )
            return _reply(self._submit(tool, {**sets, **arguments}).view())
        if name not in (shapes.CALL_STATUS, shapes.CALL_RESULT, shapes.CANCEL):
            raise ConfigurationError(
                f'unknown tool {name!r}; the tools are: '
                + ', '.join(t.name for t in shapes.list_tools())
            )
        key = arguments.get('call_key')
        if not isinstance(key, str):
            raise ConfigurationError(f'{name}: call_key must be a string, got {key!r:.60}')
        if name == shapes.CALL_STATUS:
            return _reply(self.book.get(key).view())
        if name == shapes.CANCEL:
            return _reply((await self.book.cancel(key)).view())
        wait = arguments.get('wait', 0)
        if (
            isinstance(wait, bool)
            or not isinstance(wait, (int, float))
            or not 0 <= wait <= shapes.MAX_WAIT
        ):
            raise ConfigurationError(
                f'call_result: wait must be a number of seconds in 0..{shapes.MAX_WAIT:g}, '
                f'got {wait!r:.60}'
            )
        entry = self.book.get(key)
        await entry.wait(wait)
        return _reply({'state': entry.view(), 'result': entry.result if entry.ended else None})

    # Resources.

    def resources(self) -> list[mt.Resource]:
        listed = [
            mt.Resource(
                uri=AnyUrl(STATUS_URI),
                name='directors-status',
                description="Every Director's partition and calls (as the directors_status tool).",
                mimeType='application/json',
            ),
        ]
        listed += [
            mt.Resource(uri=AnyUrl(OUTPUTS_URI + name), name=name, mimeType='application/json')
            for name in self.book.outputs.names()
        ]
        return listed

    async def read(self, uri: str) -> str:
        if uri == STATUS_URI:
            return json.dumps(await self._status())
        try:
            return self.book.outputs.read(uri).decode()
        except KeyError as e:
            raise McpError(mt.ErrorData(code=mt.INVALID_PARAMS, message=str(e.args[0]))) from None

    # tasks/*

    def _entry(self, task_id: str) -> Entry:
        try:
            return self.book.get(task_id)
        except ConfigurationError as e:
            raise McpError(mt.ErrorData(code=mt.INVALID_PARAMS, message=str(e))) from None

    async def get_task(self, request: mt.GetTaskRequest) -> mt.GetTaskResult:
        return mt.GetTaskResult(**_task(self._entry(request.params.taskId)).model_dump())

    async def get_task_result(self, request: mt.GetTaskPayloadRequest) -> Any:
        entry = self._entry(request.params.taskId)
        await entry.wait()
        return _entry_result(entry)

    async def list_tasks(self, request: mt.ListTasksRequest) -> mt.ListTasksResult:
        return mt.ListTasksResult(tasks=[_task(e) for e in self.book.entries.values()])

    async def cancel_task(self, request: mt.CancelTaskRequest) -> mt.CancelTaskResult:
        entry = self._entry(request.params.taskId)
        if entry.ended:
            raise McpError(
                mt.ErrorData(
                    code=mt.INVALID_PARAMS,
                    message=f'task {entry.key} already ended ({entry.state})',
                ),
            )
        await self.book.cancel(entry.key)
        await entry.wait(30)
        return mt.CancelTaskResult(**_task(entry).model_dump())


def _control(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Take ``call_key`` and ``timeout`` out of a call's arguments, checked as Directors do."""
    key = arguments.pop('call_key', None)
    timeout = arguments.pop('timeout', None)
    longest = shapes.ENSEMBLE_KEY_LENGTH if name == shapes.ENSEMBLE else MAX_KEY_LENGTH
    check_key(key, f'{name}: call_key', longest)
    check_timeout(timeout, f'{name}: timeout')
    return {'call_key': key, 'timeout': timeout}


def _check_sets(tool: str, sets: Any) -> list[dict[str, Any]]:
    """Every argument set of an ensemble, checked; one message names every bad one."""
    if not isinstance(sets, list) or not sets:
        raise ConfigurationError(
            f'ensemble: arguments must be a non-empty list of objects, got {sets!r:.60}'
        )
    if len(sets) > shapes.MAX_ENSEMBLE:
        raise ConfigurationError(
            f'ensemble: {len(sets)} argument sets is more than {shapes.MAX_ENSEMBLE}; split it'
        )
    checked, problems = [], []
    for index, arguments in enumerate(sets):
        try:
            checked.append(validate_arguments(tool, arguments))
        except ConfigurationError as e:
            problems.append(f'arguments[{index}]: {e}')
    if problems:
        more = f' (and {len(problems) - 5} more)' if len(problems) > 5 else ''
        raise ConfigurationError('; '.join(problems[:5]) + more)
    return checked


class Progress:
    """Progress values that always increase, as MCP requires of one request's notifications.

    The value is the calls done plus a share of the current step that grows with
    the time spent on it (never reaching the next whole number), so a heartbeat
    while nothing finishes still moves forward, and a host that resets its
    timeout on progress keeps waiting for a long call.
    """

    def __init__(self) -> None:
        self._last = -1.0
        self._step = -1
        self._since = time.monotonic()

    def value(self, done: int, total: int | None = None) -> float:
        """The next value for ``done`` calls finished: greater than every earlier one.

        Once every call is done, the value is the total itself (the first time).
        """
        now = time.monotonic()
        if done != self._step:
            self._step, self._since = done, now
        waited = now - self._since
        finished = total is not None and done >= total
        value = float(done) if finished else done + waited / (waited + STEP_SCALE)
        if value <= self._last:
            value = math.nextafter(self._last, math.inf)
        self._last = value
        return value


STEP_SCALE = 60.0
"""Seconds on one step after which its share of progress is one half."""


def _progress_message(entry: Entry) -> str:
    where = ', '.join(entry.view()['directors']) or 'not sent yet'
    return f'{entry.key}: {entry.done}/{entry.total} done, {entry.state} ({where}): {entry.message}'


def _entry_result(entry: Entry) -> mt.CallToolResult:
    """An ended call as a tool result; a tool that failed or was stopped is ``isError``."""
    if entry.result is None:
        return _error(f'{entry.key}: {entry.message}')
    return _reply(entry.result, is_error=entry.state != COMPLETED)


def _reply(structured: dict[str, Any], *, is_error: bool = False) -> mt.CallToolResult:
    return mt.CallToolResult(
        content=[mt.TextContent(type='text', text=json.dumps(structured))],
        structuredContent=structured,
        isError=is_error,
    )


def _error(message: str) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(type='text', text=message)], isError=True)


def _task(entry: Entry) -> mt.Task:
    return mt.Task(
        taskId=entry.key,
        status=entry.state,  # type: ignore[arg-type]  # the book's states are MCP's
        statusMessage=entry.message if entry.state != CANCELLED else 'cancelled',
        createdAt=datetime.datetime.fromtimestamp(entry.created, datetime.UTC),
        lastUpdatedAt=datetime.datetime.fromtimestamp(entry.updated, datetime.UTC),
        ttl=RETENTION_MS,
        pollInterval=POLL_INTERVAL_MS,
    )
