"""What one call may ask for: the request limits every entry point checks.

The Director's actions, the MCP server (its JSON schemas and its checks) and
``launch.py --timeout`` all take these bounds and checks from here, so that a
call one of them accepts is never refused by another.
"""

from __future__ import annotations

from typing import Any

from actors.common.errors import ConfigurationError
from actors.common.errors import quoted

MAX_KEY_LENGTH = 1000
"""Characters a call key (``call_key``, each of ``call_keys``, ``batch_key``) may have."""

MAX_TIMEOUT = 30 * 86400.0
"""Seconds a call's ``timeout`` may be (30 days: longer than any batch job's walltime)."""


def check_key(key: Any, what: str = 'a call key', most: int = MAX_KEY_LENGTH) -> None:
    """Refuse a key that is not a non-empty string of at most ``most`` characters.

    Args:
        key: The key (``None``: no key, accepted).
        what: How the message names it (``'ensemble: call_key'``).
        most: Its longest length (a key that others are derived from is shorter).

    Raises:
        ConfigurationError: Naming the key and what is valid, in one line.

    """
    if key is None:
        return
    if not isinstance(key, str) or not key or len(key) > most:
        raise ConfigurationError(
            f'{what} must be a non-empty string of at most {most} characters, got {quoted(key)}',
        )


def check_timeout(timeout: Any, what: str = 'timeout') -> None:
    """Refuse a timeout that is not a number of seconds above 0 and at most ``MAX_TIMEOUT``.

    Args:
        timeout: Seconds (``None``: no limit, accepted).
        what: How the message names it (``'md_sim: timeout'``).

    Raises:
        ConfigurationError: Naming the value and what is valid, in one line.

    """
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout <= MAX_TIMEOUT  # NaN fails this too
    ):
        raise ConfigurationError(
            f'{what} must be a number of seconds above 0 and at most {MAX_TIMEOUT:.0f} '
            f'({MAX_TIMEOUT / 86400:g} days), or None for no limit; got {quoted(timeout)}',
        )
