"""Recognising an exchange that forgot a mailbox, wherever Academy meets it."""

from __future__ import annotations

from academy.exception import BadEntityIdError

_REDIS_LOST_STATUS = 'did not exist in Redis server'
"""Academy's Redis transport says a listener's mailbox vanished with an ``AssertionError``."""

LOST_STATE = 'it lost its state (was its server restarted without persistence?)'
"""Why a mailbox is gone, as every message of such a loss ends."""


def lost_mailbox(error: BaseException | None) -> BaseException | None:
    """The error in ``error``'s chain that says the exchange forgot a mailbox, if any."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, BadEntityIdError) or (
            isinstance(error, AssertionError) and _REDIS_LOST_STATUS in str(error)
        ):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None
