"""The Director stops once the exchange has forgotten its mailbox.

An exchange that lost its state (a Redis server restarted without
persistence, an HTTP exchange restarted with its in-memory backend) no longer
knows the Director's mailbox: nobody can send it a call again, its answers
to calls already running fail, and ``--resume`` would start a new Director
on the same partition and journal while this one still holds the nodes. So
the Director asks the exchange about its own mailbox every
[`DIRECTOR_MAILBOX_POLL`][actors.common.timing.DIRECTOR_MAILBOX_POLL] seconds
and, once it is missing, shuts down as if asked to: calls in flight get the
drain time to finish and be journaled, then the DFK stops.

Each answer that fails meanwhile is logged by Academy with a traceback;
[`QuietLostAnswers`][actors.director.mailbox.QuietLostAnswers] makes that one line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from collections.abc import Callable

from academy.exception import BadEntityIdError
from academy.exchange.mailbox_status import MailboxStatus

from actors.common.timing import DIRECTOR_MAILBOX_POLL

logger = logging.getLogger(__name__)


ACADEMY_RUNTIME_LOGGER = 'academy.runtime'
"""Academy's logger of an agent's failed answers (``Failed to send response ...``)."""


class QuietLostAnswers(logging.Filter):
    """One line, not a traceback, for an answer to a mailbox the exchange does not know."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; drop the traceback of an unknown-mailbox error."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BadEntityIdError):
            record.msg, record.args = f'{record.getMessage()} ({error})', ()
            record.exc_info, record.exc_text = None, None
        return True


def quiet_lost_answers() -> None:
    """Put ``QuietLostAnswers`` on Academy's runtime logger (once per process)."""
    runtime_logger = logging.getLogger(ACADEMY_RUNTIME_LOGGER)
    if not any(isinstance(f, QuietLostAnswers) for f in runtime_logger.filters):
        runtime_logger.addFilter(QuietLostAnswers())


class MailboxWatch:
    """Calls ``stop`` once ``status()`` says the Director's mailbox is missing.

    Args:
        name: The Director's name, for the log.
        status: Asks the exchange for the Director's mailbox status.
        stop: Starts the Director's shutdown.
        interval: Seconds between two questions.

    """

    def __init__(
        self,
        name: str,
        status: Callable[[], Awaitable[MailboxStatus]],
        stop: Callable[[], None],
        interval: float = DIRECTOR_MAILBOX_POLL,
    ) -> None:
        self.name = name
        self.status = status
        self.stop = stop
        self.interval = interval
        quiet_lost_answers()

    async def run(self) -> None:
        """Ask until the mailbox is missing, then stop the Director."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                status = await self.status()
            except Exception as e:
                # An outage: the transport retries, and Academy's listener
                # ends the Director if the exchange stays away.
                logger.debug('%s: mailbox status unknown: %r', self.name, e)
                continue
            if status == MailboxStatus.MISSING:
                logger.error(
                    '%s: the exchange no longer knows this Director (it lost its state: was '
                    'its server restarted without persistence?); no call can reach it or be '
                    'answered, so it stops; its results are in its journal, for --resume',
                    self.name,
                )
                self.stop()
                return
