r"""Tool results as JSON, faithfully: what JSON cannot hold is replaced, and said so.

A tool returns Python values, some of which JSON has no form for. Left to
the serialisers, ``NaN`` and infinities become ``null`` (pydantic, orjson:
the client reads "no value" where the tool said "not a number"), and a lone
surrogate or an integer beyond 64 bits makes the reply or the record fail.
[`json_safe`][actors.mcp.jsonsafe.json_safe] replaces each such value with a
string and lists every replacement, by JSON Pointer, so a client can tell the
string ``"NaN"`` a tool returned from a float NaN written as one:

- ``float('nan')``, ``inf``, ``-inf``: the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"`` (the spellings JavaScript and Python's ``json`` read back);
- a string with lone surrogates (a file name decoded with
  ``surrogateescape``): the string with each one as the text ``\udcXX``;
- an integer longer than 4300 digits (more than Python writes): a string
  saying how long it was (its digits are not computed: that is the cost
  Python's limit guards against);
- a key that is not a string (``{1: ...}``): its JSON text (``"1"``).

Integers beyond 64 bits stay integers (JSON has no limit; ``dumps`` writes
them); numpy arrays and scalars become lists and numbers first.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

MAX_DIGITS = 4300
"""Digits of an integer Python writes (``sys.get_int_max_str_digits`` by default)."""

_NON_FINITE = {'nan': 'NaN', 'inf': 'Infinity', '-inf': '-Infinity'}


def json_safe(value: Any) -> tuple[Any, list[str]]:
    """``value`` with what JSON cannot hold replaced, and one note per replacement.

    Each note is ``"<JSON Pointer>: <what was there>, written as <what>"``.
    """
    notes: list[str] = []
    return _safe(value, '', notes), notes


def _safe(value: Any, pointer: str, notes: list[str]) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    for kind, fix in _SCALARS:
        if isinstance(value, kind):
            return fix(value, pointer, notes)
    if isinstance(value, dict):
        return {
            _key(k, pointer, notes): _safe(v, f'{pointer}/{_escape(_key_text(k))}', notes)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_safe(v, f'{pointer}/{i}', notes) for i, v in enumerate(value)]
    if type(value).__module__ == 'numpy' and hasattr(value, 'tolist'):
        value = _safe(value.tolist(), pointer, notes)
    return value  # what orjson writes itself (datetimes, dataclasses...), or fails on


def _float(value: float, pointer: str, notes: list[str]) -> float | str:
    if math.isfinite(value):
        return value
    text = _NON_FINITE['nan' if math.isnan(value) else repr(float(value))]
    notes.append(f'{pointer or "/"}: float {text}, written as the string "{text}"')
    return text


def _int(value: int, pointer: str, notes: list[str]) -> int | str:
    # bit_length is cheap where str() is not: 4300 digits need at least 14,281 bits.
    if value.bit_length() < 14_000:
        return value
    digits = math.floor(value.bit_length() * math.log10(2)) + 1
    if digits <= MAX_DIGITS:
        return value
    text = f'integer of about {digits} digits'
    notes.append(
        f'{pointer or "/"}: an {text}, more than JSON text may hold here, written as "{text}"'
    )
    return text


def _text(value: str, pointer: str, notes: list[str]) -> str:
    if value.isascii():
        return value
    try:
        value.encode('utf-8')
    except UnicodeEncodeError:
        safe = value.encode('utf-8', 'backslashreplace').decode('utf-8')
        notes.append(
            f'{pointer or "/"}: a string with lone surrogates, written with them as \\uXXXX text'
        )
        return safe
    return value


_SCALARS: tuple[tuple[type, Any], ...] = ((float, _float), (int, _int), (str, _text))


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(key) if _plain_key(key) else repr(key)


def _plain_key(key: Any) -> bool:
    return key is None or isinstance(key, bool | int | float)


def _key(key: Any, pointer: str, notes: list[str]) -> str:
    if isinstance(key, str):
        return _text(key, f'{pointer}/{_escape(key)}', notes)
    text = _key_text(key)
    notes.append(f'{pointer}/{_escape(text)}: the key {text} is no string, written as "{text}"')
    return _text(text, pointer, notes)


def _escape(token: str) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return token.replace('~', '~0').replace('/', '~1')


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """``value`` as JSON bytes: orjson, or Python's ``json`` for integers beyond 64 bits.

    Give it values ``json_safe`` made (orjson would write a NaN as ``null``).

    Raises:
        TypeError: If ``value`` holds something JSON cannot (a lone surrogate,
            an object of no JSON form).
        ValueError: If it holds a non-finite float or an integer too long to
            write (only where the integers beyond 64 bits send it to ``json``).

    """
    option = orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError as e:
        if 'Integer exceeds 64-bit range' not in str(e):
            raise
    text = json.dumps(value, allow_nan=False, ensure_ascii=False, sort_keys=sort_keys)
    return text.encode('utf-8')
