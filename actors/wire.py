"""How a call's outcome travels from its worker back to the Director.

Parsl serializes what a task returns with dill, its only data serializer:
about 40 us in the worker for a ten-key outcome mapping, more than running a
no-op tool under its stop guard, and it grows with the result's size. So the
worker functions the Director submits return the outcome already pickled
(``pack_outcome``, ~1 us), and Parsl only wraps those bytes (~7 us). An
outcome that pickle cannot handle (a lambda in the tool's value) goes back
as the mapping, for dill, as before.

The Director reads either with ``read_outcome``. One it cannot unpickle (a
class that only the workers can import) becomes a failed outcome that says
why, so the call gets a result and the batch's other calls are unaffected.
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import Any

logger = logging.getLogger(__name__)

UNREADABLE = 'UnreadableResult'
"""``error_type`` of a call whose outcome the Director could not unpickle."""


def pack_outcome(outcome: dict[str, Any]) -> bytes | dict[str, Any]:
    """Worker side: ``outcome`` pickled, or as it is if pickle cannot handle it."""
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        logger.debug('outcome not picklable (%s: %s): returned for dill', type(e).__name__, e)
        return outcome


def read_outcome(packed: bytes | dict[str, Any]) -> dict[str, Any]:
    """Director side: the outcome a worker function returned.

    Returns:
        The worker's outcome mapping; if it cannot be unpickled here, a failed
        outcome (``error_type`` ``UnreadableResult``) whose message names the
        error. Where and when the call ran is then unknown: ``node``,
        ``worker`` and ``pid`` are ``None`` and ``start`` and ``end`` are the
        time it was read.

    """
    if not isinstance(packed, bytes):
        return packed
    try:
        return pickle.loads(packed)
    except Exception as e:
        now = time.time()
        return {
            'node': None,
            'worker': None,
            'pid': None,
            'start': now,
            'end': now,
            'ok': False,
            'value': None,
            'status': 'failed',
            'error_type': UNREADABLE,
            'error_message': (
                f'the call finished but its result cannot be unpickled where the Director '
                f'runs ({type(e).__name__}: {e}); every class a tool returns must be '
                f'importable there too'
            ),
        }
