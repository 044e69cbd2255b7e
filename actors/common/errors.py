"""Errors raised for bad user input.

Every module that validates input raises
[`ConfigurationError`][actors.common.errors.ConfigurationError] with a message
that names the bad value and what would be valid; the CLI turns it into one
line on stderr and exit status 2.
"""

from __future__ import annotations

from typing import Any


class ConfigurationError(ValueError):
    """A user-supplied value (flag, file, parameter) is invalid."""


def describe_os_error(error: OSError) -> str:
    """One line for a failed file operation: its path(s), the system's reason and the errno name.

    ``[Errno 28] No space left on device: '/x/journal'`` becomes
    ``/x/journal: No space left on device (ENOSPC)``.
    """
    import errno

    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    reason = error.strerror or str(error)
    code = errno.errorcode.get(error.errno) if isinstance(error.errno, int) else None
    return (' -> '.join(paths) + ': ' if paths else '') + reason + (f' ({code})' if code else '')


QUOTE_LIMIT = 120
"""Characters of a value an error message quotes at most."""


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with its full length said.

    Error messages go back to users and models: one that quotes a 10 MB
    argument whole grows every later request by as much.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    length = len(value) if isinstance(value, (str, bytes, list, dict, tuple)) else len(text)
    return f'{text[: limit - 3]}... ({length} {"characters" if isinstance(value, str) else "long"})'
