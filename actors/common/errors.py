"""Errors raised for bad user input.

Every module that validates input raises
[`ConfigurationError`][actors.common.errors.ConfigurationError] with a message
that names the bad value and what would be valid; the CLI turns it into one
line on stderr and exit status 2.
"""

from __future__ import annotations


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
