"""Open the Academy exchange named on the command line.

``local`` is Academy's in-process exchange; ``http`` spawns Academy's HTTP
exchange on 127.0.0.1 for the run, behind a bearer token of its own;
``http://``/``https://`` URLs connect to a running HTTP exchange (the hosted
Academy exchange with Globus auth); and ``redis://HOST:PORT`` uses a Redis
server.

A Redis password comes from the URL (``redis://:PASSWORD@HOST:PORT``) or,
better (a command line is visible to every user of the host), from
``$HPC_TOOL_CALLING_EXCHANGE_PASSWORD``. It is never written to disk: the
run's manifest records the URL without it ([`redact`][actors.client.exchange.redact])
and that a password is needed, and commands that join a recorded run ask
for it again ([`require_password`][actors.client.exchange.require_password]).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import multiprocessing
import os
import secrets
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any
from typing import Literal

from academy.exchange import ExchangeFactory
from academy.exchange import HttpExchangeFactory
from academy.exchange import LocalExchangeFactory
from academy.exchange import RedisExchangeFactory
from academy.exchange.cloud.app import create_app
from academy.exchange.cloud.client import DEFAULT_EXCHANGE_URL
from academy.exchange.cloud.client import wait_connection
from academy.exchange.cloud.config import ExchangeServingConfig
from academy.exchange.cloud.config import LogConfig
from aiohttp import web
from aiohttp.web import run_app
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import AuthorizationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.client.globus import require_academy_login
from actors.common.errors import ConfigurationError

EXCHANGE_HELP = (
    'local, http (spawn one on 127.0.0.1), http://HOST:PORT, https://URL, '
    f'hosted ({DEFAULT_EXCHANGE_URL}) or redis://HOST:PORT'
)


PASSWORD_VARIABLE = 'HPC_TOOL_CALLING_EXCHANGE_PASSWORD'
"""Environment variable with the Redis exchange's password (when the URL has none)."""

REDIS_OUTAGE_TOLERANCE = 60
"""Reconnection attempts (about one per second) before a Redis outage is fatal."""


class OutageRetry(Retry):
    """Retries a lost connection, never a refused password or permission (they stay refused).

    redis-py's authentication errors are connection errors, so a wrong
    password would otherwise be retried for the whole outage tolerance.
    """

    async def call_with_retry(
        self,
        do: Any,
        fail: Any,
        is_retryable: Any = None,
        with_failure_count: bool = False,
    ) -> Any:
        """Like ``Retry.call_with_retry``; authentication errors are raised at once."""

        def retryable(error: Exception) -> bool:
            if isinstance(error, (AuthenticationError, AuthorizationError)):
                return False
            return is_retryable is None or is_retryable(error)

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


def redis_factory(
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
) -> RedisExchangeFactory:
    """A Redis exchange that rides out a server restart of up to about a minute.

    redis-py gives up after a few quick retries by default, and Academy's
    listener task ends for good on the resulting ``ConnectionError``: the
    agent or client stops hearing messages. Retrying every command for
    ``REDIS_OUTAGE_TOLERANCE`` attempts lets both carry on once a restarted
    server (with persistence on) is back. ``username``/``password`` (from
    ``redis://USER:PASSWORD@HOST:PORT`` or ``$HPC_TOOL_CALLING_EXCHANGE_PASSWORD``)
    authenticate to a server with ACLs or ``requirepass``.
    """
    return RedisExchangeFactory(
        host,
        port,
        username=username or None,
        password=password or None,
        retry=OutageRetry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_OUTAGE_TOLERANCE),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def url_password(spec: str) -> str | None:
    """The password in the spec's URL (URL-unquoted), if it has one."""
    if '://' not in spec:
        return None
    password = urllib.parse.urlsplit(spec).password
    return urllib.parse.unquote(password) if password else None


def redact(spec: str) -> str:
    """The spec without the password of its URL: what may be written down."""
    if url_password(spec) is None:
        return spec
    url = urllib.parse.urlsplit(spec)
    address = url.netloc.rpartition('@')[2]
    netloc = f'{url.username}@{address}' if url.username else address
    return urllib.parse.urlunsplit(url._replace(netloc=netloc))


def exchange_password(spec: str) -> str | None:
    """The Redis password a run on ``spec`` authenticates with (URL, else environment)."""
    if urllib.parse.urlsplit(spec).scheme != 'redis':
        return None
    return url_password(spec) or os.environ.get(PASSWORD_VARIABLE) or None


def require_password(spec: str, needed: bool, run_dir: str) -> None:
    """Check that a recorded run's exchange can be joined with a password, if it needs one.

    Raises:
        ConfigurationError: If the run's exchange needs a password and
            neither ``spec`` nor the environment gives one.

    """
    if needed and exchange_password(spec) is None:
        raise ConfigurationError(
            f'the exchange {redact(spec)} of run {run_dir} needs a password, which is not '
            f'stored with the run: set {PASSWORD_VARIABLE} to it (or, for --resume, give '
            '--exchange redis://:PASSWORD@HOST:PORT)',
        )


def is_networked(spec: str) -> bool:
    """Whether agents in other processes can reach this exchange."""
    return spec != 'local'


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def validate_exchange(spec: str) -> str:
    """Check an exchange spec without connecting.

    Raises:
        ConfigurationError: If the spec is not one of the accepted forms.

    """
    if spec in ('local', 'http', 'hosted'):
        return spec
    url = urllib.parse.urlparse(spec)
    if url.scheme in ('http', 'https') and url.hostname:
        return spec
    if url.scheme == 'redis' and url.hostname:
        try:
            url.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise ConfigurationError(
                f'--exchange {spec!r}: bad port; expected redis://HOST:PORT',
            ) from None
        return spec
    raise ConfigurationError(
        f'unknown exchange {spec!r}; choose {EXCHANGE_HELP}',
    )


@contextlib.contextmanager
def spawned_http_exchange(host: str, port: int, timeout: float) -> Iterator[HttpExchangeFactory]:
    """Academy's HTTP exchange in a child process of its own session, until the block ends.

    As Academy's ``spawn_http_exchange``, with two differences:

    * Every request must carry ``Authorization: Bearer TOKEN``, a token made
      for this exchange alone (256 random bits). Academy's HTTP exchange has
      no credential of its own, and 127.0.0.1 is reachable by every user of
      the host: without one, anybody there could call, cancel and stop the
      run's Directors. The token reaches the child through its spawn pipe and
      the Directors inside the factory (never a command line or a file);
      the factory yielded here sends it.
    * The child leaves this process's session: a Ctrl-C at the terminal
      reaches the client, which then stops its Directors over the exchange,
      instead of killing the exchange first (thousands of lines of
      ``ECONNREFUSED``).

    Its server logs only critical errors (they would go to this process's
    stdout, which holds the CLI's ``--json``).
    """
    config = ExchangeServingConfig(host=host, port=port, logger=LogConfig(level=logging.CRITICAL))
    token = secrets.token_urlsafe(32)
    process = multiprocessing.get_context('spawn').Process(
        target=_serve_in_own_session, args=(config, token), name='http-exchange'
    )
    process.start()
    try:
        wait_connection(host, port, timeout=timeout)
        yield HttpExchangeFactory(
            f'http://{host}:{port}', additional_headers={'Authorization': f'Bearer {token}'}
        )
    finally:
        process.terminate()
        process.join(timeout=5)
        if process.exitcode is None:
            process.kill()
            process.join()
        process.close()


def _serve_in_own_session(config: ExchangeServingConfig, token: str) -> None:
    """Serve Academy's exchange app, behind the token (the child's entry point)."""
    os.setsid()
    config.logger.init_logger()
    app = create_app(config)
    app.middlewares.insert(0, bearer_token_required(token))  # before Academy's own
    run_app(app, host=config.host, port=config.port, print=None)


def bearer_token_required(token: str) -> Any:
    """An aiohttp middleware: 401 for a request without ``Authorization: Bearer TOKEN``."""
    expected = f'Bearer {token}'.encode()

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get('Authorization', '').encode()
        if not hmac.compare_digest(given, expected):
            return web.Response(status=401, text='this exchange needs its bearer token')
        return await handler(request)

    return check


@contextlib.contextmanager
def open_exchange(spec: str) -> Iterator[ExchangeFactory[Any]]:
    """Yield an exchange factory for ``spec``; tear down what was spawned.

    Raises:
        ConfigurationError: If the spec is not one of the accepted forms.

    """
    spec = validate_exchange(spec)
    if spec == 'local':
        yield LocalExchangeFactory()
    elif spec == 'http':
        # Its server logs to this process's stdout, which holds the CLI's results
        # (--json); what goes wrong there reaches the clients as errors anyway.
        with spawned_http_exchange('127.0.0.1', free_port(), timeout=30) as factory:
            yield factory
    elif spec == 'hosted':
        # Connecting logs in through Globus Auth: fail now rather than wait on stdin.
        require_academy_login()
        yield HttpExchangeFactory(DEFAULT_EXCHANGE_URL, auth_method='globus')
    else:
        url = urllib.parse.urlparse(spec)
        if url.scheme == 'redis':
            yield redis_factory(
                url.hostname or 'localhost',
                url.port or 6379,
                username=urllib.parse.unquote(url.username) if url.username else None,
                password=exchange_password(spec),
            )
        else:
            auth: Literal['globus'] | None = 'globus' if url.scheme == 'https' else None
            if auth:
                require_academy_login()
            yield HttpExchangeFactory(spec, auth_method=auth)
