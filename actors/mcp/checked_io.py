"""The server's messages in and out, checked in front of the MCP SDK.

In: every message a client sends is read by [`strict.check`][actors.mcp.strict.check]
first; one it refuses is answered here with a JSON-RPC error and never
reaches the SDK's session (over HTTP, ``400`` with the error as its body;
on stdio, the error on stdout), so a bad message cannot leave the session
holding a value it cannot write back.

Out: every message the server sends is serialised once before it goes; a
reply that cannot be (a value without a JSON form slipped through) goes out
as a ``-32603`` error with the request's id instead of being lost, and the
client waiting for it gets an answer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp.types as mt
from anyio.streams.memory import MemoryObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream
from mcp.shared.message import SessionMessage

from actors.mcp.strict import INVALID_REQUEST
from actors.mcp.strict import MAX_MESSAGE_BYTES
from actors.mcp.strict import QUOTE
from actors.mcp.strict import Refused
from actors.mcp.strict import check

logger = logging.getLogger(__name__)

IN_THREAD = 64 * 1024
"""Bytes above which a message is checked in a worker thread (the event loop serves others)."""
READ_CHUNK = 64 * 1024
"""Bytes read at a time while skipping the rest of a stdio line that is too long."""


async def checked(raw: bytes) -> mt.JSONRPCMessage:
    """``strict.check(raw)``, off the event loop when the message is large.

    Raises:
        Refused: As ``strict.check``.

    """
    if len(raw) <= IN_THREAD:
        return check(raw)
    return await anyio.to_thread.run_sync(check, raw)


def writable(message: SessionMessage) -> SessionMessage | None:
    """``message`` if it can be written as JSON; else an error reply in its place (or None).

    A response that cannot be written becomes a ``-32603`` error with its id;
    a notification or request that cannot is dropped (logged): nobody waits for it.
    """
    try:
        message.message.model_dump_json(by_alias=True, exclude_none=True)
    except Exception as e:
        why = f'{type(e).__name__}: {e}'.encode('ascii', 'backslashreplace').decode()[:QUOTE]
        root = message.message.root
        logger.warning('an outgoing %s could not be written as JSON: %s', type(root).__name__, why)
        if not isinstance(root, mt.JSONRPCResponse | mt.JSONRPCError):
            return None
        error = mt.JSONRPCError(
            jsonrpc='2.0',
            id=root.id,
            error=mt.ErrorData(
                code=mt.INTERNAL_ERROR, message=f'the reply could not be written as JSON: {why}'
            ),
        )
        return SessionMessage(mt.JSONRPCMessage(error), metadata=message.metadata)
    return message


@contextlib.asynccontextmanager
async def writable_only(
    out: MemoryObjectSendStream[SessionMessage],
) -> AsyncIterator[MemoryObjectSendStream[SessionMessage]]:
    """A stream in front of ``out`` that passes on only what ``writable`` lets through.

    Closed by whoever writes to it (the SDK's session closes its write stream
    when it ends); ``out`` is closed after the last message went through.
    """
    send, receive = anyio.create_memory_object_stream[SessionMessage](0)

    async def forward() -> None:
        async with out, receive:
            async for message in receive:
                passed = writable(message)
                if passed is not None:
                    await out.send(passed)

    async with anyio.create_task_group() as group:
        group.start_soon(forward)
        async with send:
            yield send


class GuardedServer:
    """A low-level MCP server whose outgoing messages go through ``writable_only``.

    What the SDK's ``StreamableHTTPSessionManager`` runs per session instead of
    the server itself (it calls ``run`` and ``create_initialization_options``).
    """

    def __init__(self, server: Any) -> None:
        self.server = server

    def create_initialization_options(self, *args: Any, **kwargs: Any) -> Any:
        """The server's own."""
        return self.server.create_initialization_options(*args, **kwargs)

    async def run(self, read: Any, write: Any, options: Any, **kwargs: Any) -> None:
        """The server's ``run`` with its writes checked."""
        async with writable_only(write) as checked_write:
            await self.server.run(read, checked_write, options, **kwargs)


@contextlib.asynccontextmanager
async def checked_stdio(
    stdin: anyio.AsyncFile[bytes], stdout: anyio.AsyncFile[bytes]
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """The SDK's stdio transport, with every line checked and every reply writable.

    A line the server refuses is answered on ``stdout`` (one JSON-RPC error per
    line) and the next line is read; blank lines are skipped.
    """
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    lock = anyio.Lock()

    async def emit(data: bytes) -> None:
        async with lock:
            await stdout.write(data + b'\n')
            await stdout.flush()

    async def reader() -> None:
        async with read_writer:
            while True:
                line = await _read_line(stdin)
                if line is None:
                    return
                if not line.strip():
                    continue
                try:
                    message = await checked(line.rstrip(b'\r\n'))
                except Refused as refused:
                    logger.warning('refused a message on stdin: %s', refused.message)
                    await emit(refused.reply())
                    continue
                await read_writer.send(SessionMessage(message))

    async def writer() -> None:
        async with write_reader:
            async for message in write_reader:
                passed = writable(message)
                if passed is not None:
                    text = passed.message.model_dump_json(by_alias=True, exclude_none=True)
                    await emit(text.encode())

    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        group.start_soon(writer)
        yield read_stream, write_stream


async def _read_line(stdin: anyio.AsyncFile[bytes]) -> bytes | None:
    """The next line (None at end of input); of a line over the limit, only its first bytes.

    A line longer than ``MAX_MESSAGE_BYTES`` is read to its end and dropped,
    and its first bytes plus one come back so ``check`` refuses it by size
    (with the id, if it is near the start).
    """
    # AsyncFile.readline takes no size: a line is bounded here, in the same worker thread.
    readline = stdin.wrapped.readline
    line = await anyio.to_thread.run_sync(readline, MAX_MESSAGE_BYTES + 1)
    if not line:
        return None
    if len(line) <= MAX_MESSAGE_BYTES or line.endswith(b'\n'):
        return line
    while True:  # skip the rest of the line without keeping it
        rest = await anyio.to_thread.run_sync(readline, READ_CHUNK)
        if not rest or rest.endswith(b'\n'):
            return line


async def refuse_http(send: Any, refused: Refused, status: int = 400) -> None:
    """Answer an HTTP request with ``refused``'s JSON-RPC error."""
    body = refused.reply()
    await send(
        {
            'type': 'http.response.start',
            'status': status,
            'headers': [
                (b'content-type', b'application/json'),
                (b'content-length', str(len(body)).encode()),
            ],
        },
    )
    await send({'type': 'http.response.body', 'body': body})


class CheckedBodies:
    """ASGI middleware: a POST's body is read (bounded) and checked before the app sees it.

    A body ``strict.check`` refuses is answered here (``400``, or ``413`` if it
    is too large) with the JSON-RPC error; a good one is passed on whole.
    """

    def __init__(self, app: Any, limit: int = MAX_MESSAGE_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Check a POST's body; pass everything else on untouched."""
        if scope['type'] != 'http' or scope.get('method') != 'POST':
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message['type'] != 'http.request':
                return  # the client went away before it sent the body
            body.extend(message.get('body', b''))
            if len(body) > self.limit:
                too_large = Refused(
                    INVALID_REQUEST,
                    f'message of more than {self.limit} bytes; one may have at most {self.limit}',
                )
                await refuse_http(send, too_large, 413)
                return
            if not message.get('more_body', False):
                break
        raw = bytes(body)
        try:
            await checked(raw)
        except Refused as refused:
            logger.warning('refused a message over HTTP: %s', refused.message)
            await refuse_http(send, refused)
            return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {'type': 'http.request', 'body': raw, 'more_body': False}
            return await receive()

        await self.app(scope, replay, send)
