"""The package's errors: one base, three families.

Every error this package raises on purpose derives from
[`HpcToolCallingError`][actors.common.errors.HpcToolCallingError] (and, for
callers that catch the standard kinds, from the standard class it stands
for):

* [`ConfigurationError`][actors.common.errors.ConfigurationError]: bad user
  input (a flag, file or parameter); its message names the bad value and
  what would be valid, and the CLI turns it into one line on stderr and exit
  status 2;
* [`CallError`][actors.common.errors.CallError]: a call to a Director that
  cannot be answered (the Director stopped, the exchange lost it, none is
  up);
* [`ExecutionError`][actors.common.errors.ExecutionError]: Parsl's side
  failed under a Director (an interchange died, a block would not start).

Errors of the tools themselves come back in a call's result, not raised.
"""

from __future__ import annotations

from typing import Any


class HpcToolCallingError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(HpcToolCallingError, ValueError):
    """A user-supplied value (flag, file, parameter) is invalid."""


class CallError(HpcToolCallingError):
    """A call to a Director cannot be answered (it stopped, or its exchange lost it)."""


class ExecutionError(HpcToolCallingError):
    """Parsl's side failed under a Director (an interchange, a block, a fence)."""


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
