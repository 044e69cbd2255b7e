r"""Strict JSON-RPC from clients: the server accepts only values it can write back.

Python's ``json`` reads things JSON writers cannot write (or that break the
server later): a lone UTF-16 surrogate (``"\ud800"``: no UTF-8 encoding, so a
reply or a record quoting it cannot be written), ``NaN`` and ``Infinity`` (not
JSON), numbers that overflow a double (``1e999`` reads as infinity), integers
longer than Python converts (4300 digits), and nesting deep enough to exhaust
the recursion limit (and pydantic's, around 250 levels). [`check`][actors.mcp.strict.check]
reads a message once, strictly, and either returns it as a JSON-RPC message or
raises [`Refused`][actors.mcp.strict.Refused], whose ``reply()`` is the JSON-RPC
error to send: ``-32700`` (parse error) for text that is not JSON, ``-32600``
(invalid request) for JSON the server does not take; the message says what
was wrong and where, quoting at most ``QUOTE`` characters, and carries the
request's id when it can be recovered (a client waiting for that id gets its
answer). The transports ([`actors.mcp.transport`][actors.mcp.transport]) call it
before the SDK sees anything, so the SDK's session never holds a bad message.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import mcp.types as mt
import orjson
from pydantic import ValidationError

from actors.common.errors import HpcToolCallingError

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Bytes one message may have (an ensemble of 100,000 small argument sets fits)."""
MAX_DEPTH = 64
"""Levels of nesting a message may have (pydantic stops at about 250, ``json`` near 1000)."""
MAX_DIGITS = 4300
"""Digits an integer may have: Python's own limit for converting one to text."""
QUOTE = 120
"""Characters of the offending text a refusal quotes at most."""

PARSE_ERROR = mt.PARSE_ERROR
INVALID_REQUEST = mt.INVALID_REQUEST

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.DOTALL)


class Refused(HpcToolCallingError):
    """A message the server does not take, and the JSON-RPC error that says why.

    Args:
        code: ``PARSE_ERROR`` or ``INVALID_REQUEST``.
        message: What was wrong and where (always valid text).
        request_id: The request's id, if it could be recovered.

    """

    def __init__(self, code: int, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def reply(self) -> bytes:
        """The JSON-RPC error response, as bytes."""
        error = {'code': self.code, 'message': self.message}
        return orjson.dumps({'jsonrpc': '2.0', 'id': self.request_id, 'error': error})


class _Bad:
    """A value ``json`` read that the server does not take (kept to report where it was)."""

    def __init__(self, code: int, what: str) -> None:
        self.code = code
        self.what = what


def check(raw: bytes) -> mt.JSONRPCMessage:
    """``raw`` as a JSON-RPC message, read strictly.

    Raises:
        Refused: If it is too large, not UTF-8, not JSON, holds a value that
            cannot be written back, or is not a JSON-RPC 2.0 message.

    """
    value = parse(raw)
    try:
        return mt.JSONRPCMessage.model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        where = '.'.join(str(p) for p in first['loc']) or 'the message'
        raise Refused(
            INVALID_REQUEST,
            _clip(f'not a JSON-RPC 2.0 message: {where}: {first["msg"]}'),
            _id_of(value),
        ) from None


def parse(raw: bytes) -> Any:
    """``raw`` as a JSON value, strictly (see the module's docstring).

    Raises:
        Refused: If it is too large, not UTF-8, not JSON, or holds a value
            that cannot be written back.

    """
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Refused(
            INVALID_REQUEST,
            f'message of {len(raw)} bytes is more than the {MAX_MESSAGE_BYTES} one may have',
            _recover_id(raw[:4096].decode('utf-8', 'replace')),
        )
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        shown = _around(raw.decode('utf-8', 'backslashreplace'), e.start)
        raise Refused(
            PARSE_ERROR,
            f'not UTF-8: byte {e.start} ({raw[e.start : e.start + 1]!r}) {e.reason}: {shown}',
            _recover_id(raw.decode('utf-8', 'replace')),
        ) from None
    try:
        value = json.loads(
            text,
            parse_constant=_constant,
            parse_int=_int,
            parse_float=_float,
        )
    except RecursionError:
        at = _too_deep_at(text)
        raise Refused(
            INVALID_REQUEST,
            f'nested more than {MAX_DEPTH} levels deep at character {at}: {_around(text, at)}',
            _recover_id(text),
        ) from None
    except json.JSONDecodeError as e:
        raise Refused(
            PARSE_ERROR,
            f'not JSON: {e.msg} at line {e.lineno} column {e.colno}: {_around(text, e.pos)}',
            _recover_id(text),
        ) from None
    problem = _first_problem(value)
    if problem is not None:
        code, what = problem
        raise Refused(code, _clip(what), _id_of(value))
    return value


def _constant(name: str) -> _Bad:
    return _Bad(PARSE_ERROR, f'{name} is not a JSON value (JSON numbers are finite)')


def _int(text: str) -> int | _Bad:
    digits = len(text.lstrip('-'))
    if digits > MAX_DIGITS:
        return _Bad(
            INVALID_REQUEST,
            f'an integer of {digits} digits ({text[:20]}...) is longer than the {MAX_DIGITS} '
            'digits one may have',
        )
    try:
        return int(text)
    except ValueError as e:  # a lower limit set for this interpreter (PYTHONINTMAXSTRDIGITS)
        return _Bad(INVALID_REQUEST, f'an integer of {digits} digits: {e}')


def _float(text: str) -> float | _Bad:
    number = float(text)
    if not math.isfinite(number):
        return _Bad(
            INVALID_REQUEST,
            f'the number {text[:40]} is beyond a double (it would read as {number})',
        )
    return number


def _first_problem(value: Any) -> tuple[int, str] | None:
    """The first bad value in document order, as ``(code, "what at where")``; None if none."""
    stack: list[tuple[Any, str, int]] = [(value, '', 0)]
    while stack:
        item, path, depth = stack.pop()
        where = _short_path(path)
        if depth > MAX_DEPTH:
            return INVALID_REQUEST, f'nested more than {MAX_DEPTH} levels deep at {where}'
        if isinstance(item, _Bad):
            return item.code, f'{item.what}, at {where}'
        if isinstance(item, str):
            bad = _surrogate_at(item)
            if bad is not None:
                return INVALID_REQUEST, (
                    f'a lone UTF-16 surrogate (\\u{ord(item[bad]):04x}, character {bad}) is not '
                    f'text, at {where}: {_show(item, bad)}'
                )
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                bad = _surrogate_at(key)
                if bad is not None:
                    return INVALID_REQUEST, (
                        f'a lone UTF-16 surrogate (\\u{ord(key[bad]):04x}) in a key is not text, '
                        f'at {where}: key {_show(key, bad)}'
                    )
                children.append((child, f'{path}.{key}' if path else key, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(
                (child, f'{path}[{i}]', depth + 1) for i, child in reversed(list(enumerate(item)))
            )
    return None


def _short_path(path: str) -> str:
    """``path`` (``params.arguments[0].x``) in at most about ``QUOTE`` characters."""
    if not path:
        return 'the top level'
    if len(path) <= QUOTE:
        return path
    return f'{path[: QUOTE // 2]}...{path[-QUOTE // 3 :]}'


def _surrogate_at(text: str) -> int | None:
    """Where ``text`` has a lone surrogate (a pair was joined by ``json``); None if nowhere."""
    if text.isascii():
        return None
    try:
        text.encode('utf-8')
    except UnicodeEncodeError as e:
        return e.start
    return None


def _show(text: str, at: int) -> str:
    """Up to ``QUOTE`` characters of ``text`` around ``at``, as an ASCII JSON string."""
    start = max(0, at - QUOTE // 4)
    shown = json.dumps(text[start : start + QUOTE // 2])
    return ('...' if start else '') + shown + ('...' if start + QUOTE // 2 < len(text) else '')


def _around(text: str, at: int) -> str:
    """Up to ``QUOTE`` characters of the message around position ``at``, ASCII."""
    start = max(0, at - QUOTE // 3)
    part = text[start : start + QUOTE].encode('ascii', 'backslashreplace').decode()
    part = part.replace('\n', '\\n')[:QUOTE]
    return ('...' if start else '') + part + ('...' if start + QUOTE < len(text) else '')


def _clip(text: str) -> str:
    """A message of bounded length: the path part of a deep value can be long."""
    limit = 3 * QUOTE
    return text if len(text) <= limit else text[: limit - 3] + '...'


def _too_deep_at(text: str) -> int:
    """Where nesting first goes deeper than ``MAX_DEPTH`` (0 if nowhere)."""
    depth = 0
    for token in _TOKENS.finditer(text):
        if token.group() in '[{':
            depth += 1
            if depth > MAX_DEPTH:
                return token.start()
        elif token.group() in ']}':
            depth -= 1
    return 0


def _id_of(value: Any) -> str | int | None:
    """A parsed message's id, if it is one a reply can carry."""
    if not isinstance(value, dict):
        return None
    request_id = value.get('id')
    if isinstance(request_id, bool):
        return None
    if isinstance(request_id, int):
        return request_id
    if isinstance(request_id, str) and _surrogate_at(request_id) is None:
        return request_id
    return None


def _recover_id(text: str) -> str | int | None:
    """The id of a message that could not be parsed: ``"id": <value>`` of its top-level object."""
    depth = 0
    expect = ''
    for token in _TOKENS.finditer(text):
        word = token.group()
        if word in '[{':
            depth += 1
            expect = ''
        elif word in ']}':
            depth -= 1
            expect = ''
        elif depth != 1:
            continue
        elif expect == 'colon':
            expect = 'value' if word == ':' else ''
        elif expect == 'value':
            return _id_token(word)
        elif word == '"id"':
            expect = 'colon'
        else:
            expect = ''
    return None


def _id_token(word: str) -> str | int | None:
    try:
        value = json.loads(word)
    except (ValueError, RecursionError):
        return None
    return _id_of({'id': value})
