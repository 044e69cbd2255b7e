"""Open the Academy exchange named on the command line.

``local`` is Academy's in-process exchange; ``http`` spawns Academy's HTTP
exchange on 127.0.0.1 for the run; ``http://``/``https://`` URLs connect to a
running HTTP exchange (the hosted Academy exchange with Globus auth); and
``redis://HOST:PORT`` uses a Redis server.
"""

from __future__ import annotations

import contextlib
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

from academy.exchange import ExchangeFactory
from academy.exchange import HttpExchangeFactory
from academy.exchange import LocalExchangeFactory
from academy.exchange import RedisExchangeFactory
from academy.exchange.cloud.client import DEFAULT_EXCHANGE_URL
from academy.exchange.cloud.client import spawn_http_exchange
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.client.globus import require_academy_login
from actors.common.errors import ConfigurationError

EXCHANGE_HELP = (
    'local, http (spawn one on 127.0.0.1), http://HOST:PORT, https://URL, '
    f'hosted ({DEFAULT_EXCHANGE_URL}) or redis://HOST:PORT'
)


REDIS_OUTAGE_TOLERANCE = 60
"""Reconnection attempts (about one per second) before a Redis outage is fatal."""


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
    ``redis://USER:PASSWORD@HOST:PORT``) authenticate to a server with ACLs
    or ``requirepass``.
    """
    return RedisExchangeFactory(
        host,
        port,
        username=username or None,
        password=password or None,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_OUTAGE_TOLERANCE),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
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
def open_exchange(spec: str) -> Iterator[ExchangeFactory[Any]]:
    """Yield an exchange factory for ``spec``; tear down what was spawned.

    Raises:
        ConfigurationError: If the spec is not one of the accepted forms.

    """
    spec = validate_exchange(spec)
    if spec == 'local':
        yield LocalExchangeFactory()
    elif spec == 'http':
        with spawn_http_exchange('127.0.0.1', free_port(), timeout=30) as factory:
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
                password=urllib.parse.unquote(url.password) if url.password else None,
            )
        else:
            auth = 'globus' if url.scheme == 'https' else None
            if auth:
                require_academy_login()
            yield HttpExchangeFactory(spec, auth_method=auth)
