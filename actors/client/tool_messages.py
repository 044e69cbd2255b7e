"""What a model reads back after its tool calls: compact JSON of each result or error.

A tool's value can be large (``ase_md`` returns trajectory samples); the model
needs its numbers, not every sample. [`compact`][actors.client.tool_messages.compact]
rounds floats to 6 significant digits, cuts long strings and leaves long lists
out (saying how long they were), and [`result_text`][actors.client.tool_messages.result_text]
keeps a result's essentials: ``ok``, the value, where and how long it ran, the
error.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from actors.common.results import CallResult
from actors.common.results import DirectorStatus

MAX_LIST = 8
"""Lists longer than this are left out of a tool message (their length is kept)."""
MAX_STRING = 400
"""Strings are cut to this many characters."""
MAX_CHARS = 4000
"""A tool message longer than this keeps only the value's top-level numbers and strings."""


def compact(value: Any, depth: int = 0) -> Any:
    """``value`` made small for a model: rounded floats, cut strings, no long lists."""
    if isinstance(value, float):
        value = float(f'{value:.6g}')
    elif isinstance(value, str):
        value = value if len(value) <= MAX_STRING else value[: MAX_STRING - 3] + '...'
    elif isinstance(value, (dict, list, tuple)) and depth >= 4:
        value = f'<{type(value).__name__} left out>'
    elif isinstance(value, dict):
        value = {str(k): compact(v, depth + 1) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST:
            value = f'<list of {len(value)} items left out>'
        else:
            value = [compact(v, depth + 1) for v in value]
    elif not (value is None or isinstance(value, (bool, int))):
        value = compact(str(value), depth)
    return value


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(',', ':'), default=str)


def result_text(result: CallResult) -> str:
    """A tool call's result as compact JSON for the model."""
    data: dict[str, Any] = {'ok': result.ok}
    if result.ok:
        data['value'] = compact(result.value)
    else:
        data['status'] = result.status or 'failed'
        data['error'] = compact(f'{result.error_type}: {result.error_message}')
    data.update(
        director=result.director,
        node=result.node,
        wall_time=round(result.wall_time, 3),
    )
    text = _dumps(data)
    if len(text) > MAX_CHARS and isinstance(result.value, dict):
        kept = {k: compact(v) for k, v in result.value.items() if isinstance(v, (int, float, str))}
        data['value'] = {**kept, 'note': 'lists and nested values left out'}
        text = _dumps(data)
    return text


def results_text(results: Sequence[CallResult]) -> str:
    """A batch's results (``md_sim_batch``) as a JSON list: one ``result_text`` per call."""
    return '[' + ','.join(result_text(r) for r in results) + ']'


def statuses_text(statuses: Sequence[DirectorStatus]) -> str:
    """The Directors' statuses as compact JSON for the model."""
    keep = ('director', 'nodes', 'slots', 'queued', 'running', 'done', 'failed', 'draining')
    rows = [{k: v for k, v in dataclasses.asdict(s).items() if k in keep} for s in statuses]
    return _dumps({'ok': True, 'value': compact(rows)})


def error_text(message: str) -> str:
    """A tool call that did not run (bad arguments, over budget), as JSON for the model."""
    return _dumps({'ok': False, 'ran': False, 'error': message})
