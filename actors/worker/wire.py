"""How a call travels to its worker, and its outcome back to the Director.

Parsl serializes a task's arguments and what it returns with dill, its only
data serializer, at ~40 us per object: more than running a no-op tool under
its stop guard. Both ways, this module uses pickle (~1 us) instead.

To the worker: the arguments of a Director's call are plain data (the
Director checks its parameters with pickle before submitting), so
``pack_call`` pickles them, under the header of a Parsl serializer plugin
(``PickleSerializer``) that tells the worker's Parsl how to read them. The
layout is Parsl's own (function, positional and keyword arguments; the
function serialized by Parsl, cached per function), so the worker runs the
call with Parsl's default task runner. Arguments pickle cannot carry, or
that refer to a class of the running script (``__main__``, which a worker
cannot import), go with dill as before.

Back from the worker: the worker functions the Director submits return the
outcome as bytes that they pickled themselves (``pack_outcome``), and Parsl
only wraps those bytes (~7 us). An outcome that pickle cannot carry (a
lambda in the tool's value) is dumped with dill instead, still as bytes,
marked as such.

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
from parsl.serialize.base import SerializerBase
from parsl.serialize.facade import pack_buffers
from parsl.serialize.facade import serialize

logger = logging.getLogger(__name__)

PROTOCOL = 5
"""Pickle protocol of packed arguments and outcomes (readable by every supported Python)."""

UNREADABLE = 'UnreadableResult'
"""``error_type`` of a call whose outcome the Director could not load."""

UNSERIALIZABLE = 'UnserializableResult'
"""``error_type`` of a call whose outcome neither pickle nor dill could dump."""

_DILL = b'D'
"""First byte of an outcome dumped with dill (pickle's protocol 2+ starts with 0x80)."""

_warned: set[type[BaseException]] = set()


class PickleSerializer(SerializerBase):
    """A Parsl serializer plugin for a call's arguments: plain pickle, not dill.

    Parsl marks what it serializes with the serializer's identifier, here
    ``b'actors.worker.wire PickleSerializer'`` (module and class, Parsl's plugin
    convention); a worker's ``deserialize`` imports this class by that name
    to read the arguments.
    """

    def serialize(self, data: Any) -> bytes:
        """Pickle ``data``."""
        return pickle.dumps(data, protocol=PROTOCOL)

    def deserialize(self, payload: bytes) -> Any:
        """Unpickle ``payload``."""
        return pickle.loads(payload)


_ARGUMENTS = PickleSerializer()
_ARGUMENTS_HEADER = _ARGUMENTS.identifier + b'\n'

_MAIN = b'__main__'
"""In a pickle, the module of a class defined in the running script."""


def pack_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Submit side: one call of ``func`` as HTEX's ``submit_payload`` takes it.

    Args:
        func: The worker function (serialized by Parsl, which caches it).
        args: Its positional arguments.
        kwargs: Its keyword arguments.

    Returns:
        What Parsl's ``pack_apply_message`` would return, with the arguments
        pickled (or dumped by Parsl's dill if pickle cannot carry them or they
        refer to ``__main__``).

    """
    return pack_buffers([serialize(func), _pack_data(args), _pack_data(kwargs)])


def _pack_data(data: Any) -> bytes:
    try:
        body = _ARGUMENTS.serialize(data)
    except Exception:
        # Parsl's own serializer (dill) carries more: closures, lambdas.
        return serialize(data)
    if _MAIN in body:
        # Pickle names a class of the submitting script by reference, which no
        # worker can import; dill sends it by value.
        return serialize(data)
    return _ARGUMENTS_HEADER + body


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
