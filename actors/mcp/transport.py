"""How clients reach the server: stdio (one client, the host that spawned it) or Streamable HTTP.

HTTP binds 127.0.0.1 unless told otherwise, and every request must carry
``Authorization: Bearer <token>``, loopback included (a login node's loopback
is shared by every user on it). Without ``--token-file`` a loopback bind uses
the token in ``~/.hpc-tool-calling/mcp-token`` (``$HPC_TOOL_CALLING_MCP_TOKEN_FILE``),
made once, private, as Jupyter does; any other address needs ``--token-file``
(the server refuses to start without one). A token file must be a regular file
private to the user (mode 0600 or stricter), as an SSH key; it is checked
before it is read, and read only so far.
Host and Origin headers are checked too (DNS rebinding) for loopback binds.

Every message is checked before the MCP SDK sees it, and every reply can be
written ([`actors.mcp.checked_io`][actors.mcp.checked_io]). An HTTP session idle
for 30 minutes (``$HPC_TOOL_CALLING_MCP_SESSION_IDLE_TIMEOUT`` seconds) is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import ipaddress
import logging
import math
import os
import pathlib
import secrets
import socket
import stat
import sys
from collections.abc import Callable
from typing import Any

import anyio
import uvicorn
from mcp.server.lowlevel import NotificationOptions
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route

from actors.common.errors import ConfigurationError
from actors.common.timing import MCP_SESSION_IDLE_TIMEOUT
from actors.mcp.checked_io import CheckedBodies
from actors.mcp.checked_io import GuardedServer
from actors.mcp.checked_io import checked_stdio
from actors.mcp.strict import MAX_MESSAGE_BYTES

logger = logging.getLogger(__name__)

MCP_PATH = '/mcp'
LOOPBACK_NAMES = ('localhost',)


async def serve_stdio(server: Server[Any, Any], channel: io.BufferedWriter) -> None:
    """Serve one client over stdin and ``channel`` (the process's original stdout)."""
    stdin = anyio.wrap_file(sys.stdin.buffer)
    stdout = anyio.wrap_file(channel)
    async with checked_stdio(stdin, stdout) as (read, write):
        await server.run(read, write, server.create_initialization_options(NotificationOptions()))


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, or ``PORT``) of ``--http``.

    Raises:
        ConfigurationError: If it is not an address and a port in 0..65535.

    """
    host, _, port = text.rpartition(':')
    host = host.strip('[]') or '127.0.0.1'
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(
            f'--http {text!r}: give HOST:PORT with a port in 0..65535 (0 picks a free one), '
            'e.g. --http 127.0.0.1:8765',
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address (or ``localhost``)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


IDLE_TIMEOUT_VARIABLE = 'HPC_TOOL_CALLING_MCP_SESSION_IDLE_TIMEOUT'
"""Sets the seconds an idle HTTP session lives (default ``MCP_SESSION_IDLE_TIMEOUT``)."""


def idle_timeout_from_environment() -> float:
    """Seconds an idle HTTP session lives: ``$HPC_TOOL_CALLING_MCP_SESSION_IDLE_TIMEOUT`` or 1800.

    Raises:
        ConfigurationError: If the variable is set to anything but a positive number.

    """
    text = os.environ.get(IDLE_TIMEOUT_VARIABLE, '').strip()
    if not text:
        return MCP_SESSION_IDLE_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigurationError(
            f'{IDLE_TIMEOUT_VARIABLE}={text!r:.40}: give the seconds an idle HTTP session '
            f'lives (a positive number; default {MCP_SESSION_IDLE_TIMEOUT:g})'
        )
    return seconds


TOKEN_FILE_VARIABLE = 'HPC_TOOL_CALLING_MCP_TOKEN_FILE'
"""Where the generated token of loopback binds lives (default ``~/.hpc-tool-calling/mcp-token``)."""

MAX_TOKEN_FILE = 4096
"""Bytes of a token file read at most (``--token-file /dev/zero`` must not fill memory)."""


def read_token(path: str | None, host: str) -> tuple[str, pathlib.Path]:
    """The bearer token clients must send, and the file it is in.

    Raises:
        ConfigurationError: If a non-loopback bind has no ``--token-file``, or
            the file is missing, not a regular file, readable by others or short.

    """
    if path is None:
        if not is_loopback(host):
            raise ConfigurationError(
                f'--http {host}: binding an address other than loopback needs a bearer token; '
                'write one to a private file (umask 077; openssl rand -hex 32 > FILE) and give '
                '--token-file FILE, or bind 127.0.0.1',
            )
        return generated_token()
    return _token_from(pathlib.Path(path), '--token-file'), pathlib.Path(path)


def generated_token() -> tuple[str, pathlib.Path]:
    """The token of loopback binds: made once (random, 256 bits) in a private file, then reused."""
    default = pathlib.Path.home() / '.hpc-tool-calling' / 'mcp-token'
    file = pathlib.Path(os.environ.get(TOKEN_FILE_VARIABLE) or default)
    if not file.exists():
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another server made it just now: use theirs
        except OSError as e:
            raise ConfigurationError(
                f'cannot write the MCP token file {file}: {e.strerror or e}; give --token-file'
            ) from None
        else:
            with os.fdopen(descriptor, 'w') as out:
                out.write(secrets.token_hex(32) + '\n')
    return _token_from(file, 'token file'), file


def _token_from(file: pathlib.Path, what: str) -> str:
    try:
        info = file.stat()
    except OSError as e:
        raise ConfigurationError(f'{what} {file}: {e.strerror or e}') from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(f'{what} {file}: not a regular file; give a file with the token')
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f'{what} {file}: mode {stat.S_IMODE(info.st_mode):04o} lets others read the token; '
            f'chmod 600 {file}',
        )
    try:
        with file.open('rb') as stream:
            token = stream.read(MAX_TOKEN_FILE).decode(errors='replace').strip()
    except OSError as e:
        raise ConfigurationError(f'{what} {file}: {e.strerror or e}') from None
    if not 16 <= len(token) < MAX_TOKEN_FILE - 1 or any(c.isspace() for c in token):
        raise ConfigurationError(
            f'{what} {file}: the token must be one word of 16 to 4000 characters '
            '(openssl rand -hex 32)',
        )
    return token


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f'Bearer {token}'.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Refuse an HTTP request without the token (401); pass the rest on."""
        if scope['type'] == 'http':
            given = dict(scope.get('headers') or ()).get(b'authorization', b'')
            if not hmac.compare_digest(given, self.expected):
                await send(
                    {
                        'type': 'http.response.start',
                        'status': 401,
                        'headers': [
                            (b'content-type', b'text/plain'),
                            (b'www-authenticate', b'Bearer'),
                        ],
                    },
                )
                await send(
                    {'type': 'http.response.body', 'body': b'missing or wrong bearer token\n'}
                )
                return
        await self.app(scope, receive, send)


class _Endpoint:
    """The session manager as a Starlette endpoint (a class instance is served as ASGI)."""

    def __init__(self, sessions: StreamableHTTPSessionManager) -> None:
        self.sessions = sessions

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Hand the request to the MCP session manager."""
        await self.sessions.handle_request(scope, receive, send)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        ConfigurationError: If the address cannot be bound.

    """
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigurationError(f'--http {host}:{port}: cannot bind: {e.strerror or e}') from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


async def serve_http(
    server: Server[Any, Any],
    sock: socket.socket,
    token: str,
    on_ready: Callable[[str], None] | None = None,
    *,
    idle_timeout: float | None = None,
) -> None:
    """Serve Streamable HTTP at ``http://HOST:PORT/mcp`` on a bound socket until cancelled.

    A session without a request in flight (and no open event stream) for
    ``idle_timeout`` seconds (default: ``idle_timeout_from_environment()``) is
    closed; its id then answers 404 and its client opens a new one (calls it
    started run on: their keys answer them).
    """
    if idle_timeout is None:
        idle_timeout = idle_timeout_from_environment()
    host, port = sock.getsockname()[:2]
    loopback = is_loopback(host)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=loopback,
        allowed_hosts=[f'{name}:*' for name in ('127.0.0.1', 'localhost', '[::1]')],
        allowed_origins=[f'http://{name}:*' for name in ('127.0.0.1', 'localhost', '[::1]')],
    )
    sessions = StreamableHTTPSessionManager(
        # The SDK annotates a Server but calls only what GuardedServer has.
        app=GuardedServer(server),  # type: ignore[arg-type]
        security_settings=security,
        session_idle_timeout=idle_timeout,
        max_request_body_size=MAX_MESSAGE_BYTES,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        async with sessions.run():
            yield

    # A Route (not a Mount): /mcp itself, without a redirect to /mcp/ on every request.
    app: Any = Starlette(routes=[Route(MCP_PATH, _Endpoint(sessions))], lifespan=lifespan)
    # The token first: nobody without it gets a body read, let alone parsed.
    app = BearerAuth(CheckedBodies(app), token)
    config = uvicorn.Config(
        app, log_level='warning', lifespan='on', access_log=False, timeout_graceful_shutdown=5
    )
    web = uvicorn.Server(config)
    url = f'http://{host if ":" not in host else f"[{host}]"}:{port}{MCP_PATH}'
    logger.info('MCP server on %s', url)
    started = _announce_when_started(web, url, on_ready)
    try:
        await web.serve(sockets=[sock])
    finally:
        started.cancel()


def _announce_when_started(
    web: uvicorn.Server, url: str, on_ready: Callable[[str], None] | None
) -> asyncio.Future[None]:
    """Calls ``on_ready(url)`` once uvicorn accepts connections."""

    async def watch() -> None:
        while not web.started:
            await asyncio.sleep(0.05)
        if on_ready is not None:
            on_ready(url)

    return asyncio.ensure_future(watch())
