"""How a call's outcome travels from its worker back to the Director.

Parsl serializes what a task returns with dill, its only data serializer:
about 40 us in the worker for a ten-key outcome mapping, more than running a
no-op tool under its stop guard, and it grows with the result's size. So the
worker functions the Director submits return the outcome as bytes that they
pickled themselves (``pack_outcome``, ~1 us), and Parsl only wraps those bytes
(~7 us). An outcome that pickle cannot carry (a lambda in the tool's value)
is dumped with dill instead, still as bytes, marked as such.

Parsl's result thread therefore only ever unwraps bytes: it calls
``deserialize`` outside any ``try``, and a result it cannot read would end the
thread, after which no result of that executor arrives. The Director reads
the bytes with ``read_outcome``; an outcome it cannot load (a class that only
the workers can import) becomes a ``lost`` outcome that says why, so the
call gets a result, a resumed run runs it again, and the batch's other calls
are unaffected.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Mapping
from typing import Any

import dill

logger = logging.getLogger(__name__)

PROTOCOL = 5
"""Pickle protocol of packed outcomes (readable by every supported Python)."""

UNREADABLE = 'UnreadableResult'
"""``error_type`` of a call whose outcome the Director could not load."""

UNSERIALIZABLE = 'UnserializableResult'
"""``error_type`` of a call whose outcome neither pickle nor dill could dump."""

_DILL = b'D'
"""First byte of an outcome dumped with dill (pickle's protocol 2+ starts with 0x80)."""

_warned: set[type[BaseException]] = set()


def pack_outcome(outcome: Mapping[str, Any]) -> bytes:
    """Worker side: the outcome as bytes for the Director.

    Args:
        outcome: What the worker function reports about the call
            (``run_tool``'s mapping, with ``status``).

    Returns:
        The outcome pickled; dumped with dill if pickle cannot carry it; and if
        neither can, a pickled failed outcome that names why (the tool ran, but
        its value cannot travel).

    """
    try:
        return pickle.dumps(outcome, protocol=PROTOCOL)
    except Exception as e:
        _warn_once(e)
    try:
        return _DILL + dill.dumps(outcome, protocol=PROTOCOL)
    except Exception as e:
        message = (
            f'the tool finished but its value cannot be sent to the Director '
            f'({type(e).__name__}: {e}); return plain data (numbers, strings, lists, mappings, '
            f'arrays, importable classes)'
        )
    failed = {**outcome, 'ok': False, 'value': None, 'status': 'failed'}
    failed.update(error_type=UNSERIALIZABLE, error_message=message)
    return pickle.dumps(failed, protocol=PROTOCOL)


def read_outcome(packed: bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Director side: the outcome a worker function returned.

    Args:
        packed: What the worker function returned: ``pack_outcome``'s bytes,
            or a mapping (an outcome the Director built itself, such as a
            command tool's, passes through).

    Returns:
        The worker's outcome. If it cannot be loaded here, a ``lost``
        outcome (``error_type`` ``UnreadableResult``) whose message names the
        error; where and when the call ran is then unknown (``node``,
        ``worker``, ``pid`` and ``start`` are ``None``; ``end`` is when it was
        read).

    """
    if not isinstance(packed, bytes):
        return packed if isinstance(packed, dict) else dict(packed)
    try:
        if packed[:1] == _DILL:
            return dill.loads(memoryview(packed)[1:])
        return pickle.loads(packed)
    except Exception as e:
        error = e
    return {
        'node': None,
        'worker': None,
        'pid': None,
        'start': None,
        'end': time.time(),
        'ok': False,
        'value': None,
        'status': 'lost',
        'error_type': UNREADABLE,
        'error_message': (
            f'the call finished but its result cannot be loaded where the Director runs '
            f'({type(error).__name__}: {error}); every class a tool returns must be '
            f'importable there too'
        ),
    }


def _warn_once(error: Exception) -> None:
    # Once per kind of error and worker process: the same tool would say it on every call.
    if type(error) not in _warned:
        _warned.add(type(error))
        logger.warning(
            'pickle cannot carry a tool outcome (%s: %s); it goes with dill, which is slower',
            type(error).__name__,
            error,
        )
