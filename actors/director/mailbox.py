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

Academy logs each answer that fails meanwhile with a traceback, and so its
listener and the Manager if they meet the loss first;
[`QuietLostAnswers`][actors.director.mailbox.QuietLostAnswers] makes each one line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from collections.abc import Callable

from academy.exchange.mailbox_status import MailboxStatus

from actors.common.lost_mailbox import LOST_STATE
from actors.common.lost_mailbox import lost_mailbox
from actors.common.timing import DIRECTOR_MAILBOX_POLL

logger = logging.getLogger(__name__)


ACADEMY_LOSS_LOGGERS = ('academy.runtime', 'academy.manager', 'academy.logging.helpers')
"""Academy's loggers that record, with a traceback, an agent meeting a lost mailbox.

``academy.runtime``: ``Failed to send response ...``; ``academy.logging.helpers``:
the agent's listener ending (``Background task raised an exception.``);
``academy.manager``: the agent failing on its worker, its restart, and the
Manager's record of it.
"""


class QuietLostAnswers(logging.Filter):
    """One line, not a traceback, for Academy meeting a mailbox the exchange forgot.

    The Director's [`MailboxWatch`][actors.director.mailbox.MailboxWatch] and
    the client say what happened and what to do; Academy's tracebacks of the
    same loss (its listener, the agent's restart, each failed answer) would
    bury that line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; drop the traceback of a lost-mailbox error."""
        error = lost_mailbox(record.exc_info[1] if record.exc_info else None)
        if error is not None:
            logger.debug('%s', record.getMessage(), exc_info=record.exc_info)
            record.msg, record.args = f'{record.getMessage()} ({error})', ()
            record.exc_info, record.exc_text = None, None
        return True


def quiet_lost_answers() -> None:
    """Put ``QuietLostAnswers`` on Academy's loggers of a lost mailbox (once per process)."""
    for name in ACADEMY_LOSS_LOGGERS:
        academy_logger = logging.getLogger(name)
        if not any(isinstance(f, QuietLostAnswers) for f in academy_logger.filters):
            academy_logger.addFilter(QuietLostAnswers())


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
                    '%s: the exchange no longer knows this Director: %s; no call can reach it '
                    'or be answered, so it stops; its results are in its journal, for --resume',
                    self.name,
                    LOST_STATE,
                )
                self.stop()
                return
