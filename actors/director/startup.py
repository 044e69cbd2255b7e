"""A Director that cannot start says why in one line, not in tracebacks.

A full disk, a read-only file system or a journal path that cannot be
created fails the Director's start (``agent_on_startup``) with an ``OSError``.
Academy logs an agent's failure with its traceback where it ran ("Failure
running agent on worker") and again in the Manager ("Restarting ... due to
exception", "Received exception from ..."): some 80 lines before the one that
says what to do. The Director raises a
[`DirectorStartError`][actors.director.startup.DirectorStartError] instead,
naming itself, the path and the system's reason, and
[`QuietStartFailures`][actors.director.startup.QuietStartFailures] makes
each of Academy's records of it one line (the traceback goes to this
module's logger, at DEBUG). Stopping the failed agent cancels its requests to
an HTTP exchange, and Academy's HTTP client logs each cancelled request with
a traceback too; [`QuietCancelledRequests`][actors.director.startup.QuietCancelledRequests]
sends those to DEBUG (a cancelled request is not an error).
"""

from __future__ import annotations

import asyncio
import logging

from actors.common.errors import ExecutionError
from actors.common.errors import describe_os_error
from actors.director.mailbox import quiet_lost_answers

logger = logging.getLogger(__name__)

ACADEMY_MANAGER_LOGGER = 'academy.manager'
"""Academy's logger of agents that fail (in the Director's process and in the Manager's)."""

ACADEMY_HTTP_LOGGER = 'academy.exchange.cloud.client'
"""Academy's HTTP exchange client, which logs every failed request, cancelled ones included."""


class DirectorStartError(ExecutionError, OSError):
    """A Director could not start: which one, on which path, and why."""

    @classmethod
    def from_os_error(cls, name: str, error: OSError) -> DirectorStartError:
        """The error for ``name`` failing with ``error`` while it started."""
        return cls(f'{name} could not start: {describe_os_error(error)}')


def start_failure(error: BaseException | None) -> DirectorStartError | None:
    """The ``DirectorStartError`` that ``error`` is or was caused by, if any."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, DirectorStartError):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


class QuietStartFailures(logging.Filter):
    """One line, not a traceback, for Academy's records of a Director that could not start."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; move the traceback of a start failure to DEBUG."""
        error = start_failure(record.exc_info[1] if record.exc_info else None)
        if error is not None:
            logger.debug('%s', record.getMessage(), exc_info=record.exc_info)
            record.msg, record.args = f'{record.getMessage()}: {error}', ()
            record.exc_info, record.exc_text = None, None
        return True


class QuietCancelledRequests(logging.Filter):
    """Academy's HTTP client's record of a cancelled request goes to DEBUG, not ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop a record of a cancelled request (logged again here at DEBUG)."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, asyncio.CancelledError):
            logger.debug('an exchange request was cancelled', exc_info=record.exc_info)
            return False
        return True


def quiet_start_failures() -> None:
    """Put the filters on Academy's loggers (once per process).

    Start failures and cancelled requests here; a lost mailbox in
    [`quiet_lost_answers`][actors.director.mailbox.quiet_lost_answers].
    """
    quiet_lost_answers()
    for name, kind in (
        (ACADEMY_MANAGER_LOGGER, QuietStartFailures),
        (ACADEMY_HTTP_LOGGER, QuietCancelledRequests),
    ):
        academy_logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in academy_logger.filters):
            academy_logger.addFilter(kind())
