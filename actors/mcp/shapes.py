"""What the MCP server lists: its tools, their input and output schemas.

Every registered tool is listed with its own typed ``inputSchema`` (the same
schema the Directors check) plus two optional control arguments, ``call_key``
(a stable key: the call runs once, however often it is sent or the client
reconnects) and ``timeout`` (seconds before the tool is stopped). Results are
``structuredContent`` matching ``outputSchema``.

Beside the tools: ``ensemble`` (many argument sets as one batch), the
Directors' status, and ``submit`` / ``call_status`` / ``call_result`` /
``cancel_call`` for clients without MCP tasks.
"""

from __future__ import annotations

import copy
from typing import Any

import mcp.types as mt

from actors.common.limits import MAX_KEY_LENGTH
from actors.common.limits import MAX_TIMEOUT
from actors.tools.registry import TOOLS
from actors.tools.schemas import tool_spec

ENSEMBLE = 'ensemble'
STATUS = 'directors_status'
SUBMIT = 'submit'
CALL_STATUS = 'call_status'
CALL_RESULT = 'call_result'
CANCEL = 'cancel_call'

MAX_ENSEMBLE = 100_000
"""Argument sets one ensemble call may hold."""
MAX_WAIT = 3600.0
"""Seconds ``call_result`` may wait for a call to finish."""
ENSEMBLE_KEY_LENGTH = MAX_KEY_LENGTH - len(f'/{MAX_ENSEMBLE - 1}')
"""Characters an ensemble's ``call_key`` may have: its calls go to the Directors keyed
``<call_key>/<i>``, and each of those keys must fit ``MAX_KEY_LENGTH``."""

CONTROL = {
    'call_key': {
        'type': 'string',
        'minLength': 1,
        'maxLength': MAX_KEY_LENGTH,
        'description': 'Stable key of this call: sent again (after a reconnect, or to a '
        'restarted server), the call is answered from the journal instead of running again. '
        'Default: a new key, returned in the result.',
    },
    'timeout': {
        'type': 'number',
        'exclusiveMinimum': 0,
        'maximum': MAX_TIMEOUT,
        'description': 'Seconds the tool may run before it is stopped (status "timed_out").',
    },
}
"""Control arguments every tool call accepts beside the tool's own."""

_NULLABLE_STRING = {'type': ['string', 'null']}
_NULLABLE_NUMBER = {'type': ['number', 'null']}

REFERENCE_SCHEMA: dict[str, Any] = {
    'type': ['object', 'null'],
    'description': 'Where a value too large to inline was written: read it with resources/read.',
    'properties': {
        'uri': {'type': 'string'},
        'name': {'type': 'string'},
        'bytes': {'type': 'integer'},
        'mimeType': {'type': 'string'},
    },
    'required': ['uri', 'bytes'],
}

CALL_RESULT_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'call_key': {'type': 'string'},
        'call_id': {'type': 'string'},
        'status': {
            'type': 'string',
            'enum': ['ok', 'failed', 'lost', 'cancelled', 'timed_out', 'refused'],
        },
        'ok': {'type': 'boolean'},
        'tool': {'type': 'string'},
        'director': {'type': 'string'},
        'partition': {'type': 'integer'},
        'node': _NULLABLE_STRING,
        'nodes': {'type': ['array', 'null'], 'items': {'type': 'string'}},
        'start': {'type': 'number'},
        'end': {'type': 'number'},
        'wall_time': {'type': 'number'},
        'attempts': {'type': 'integer'},
        'params': {'type': 'object'},
        'value': {'description': "The tool's return value (null if value_ref is set)."},
        'value_ref': REFERENCE_SCHEMA,
        'replaced': {
            'type': 'array',
            'items': {'type': 'string'},
            'description': 'What JSON cannot hold, written as a string instead, by JSON Pointer: '
            'a float NaN or infinity is the string "NaN", "Infinity" or "-Infinity" (not null); '
            'a lone surrogate is \\uXXXX text. Empty if nothing was replaced.',
        },
        'error_type': _NULLABLE_STRING,
        'error_message': _NULLABLE_STRING,
        'resources': {'type': ['object', 'null']},
    },
    'required': ['call_key', 'status', 'ok', 'tool', 'director', 'value', 'value_ref'],
}

ENSEMBLE_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'call_key': {'type': 'string', 'description': 'Call i has the key "<call_key>/<i>".'},
        'tool': {'type': 'string'},
        'total': {'type': 'integer'},
        'counts': {
            'type': 'object',
            'description': 'Calls per status (ok, failed, cancelled, ...).',
            'additionalProperties': {'type': 'integer'},
        },
        'results': {
            'type': ['array', 'null'],
            'items': CALL_RESULT_SCHEMA,
            'description': 'One result per argument set, in order (null if results_ref is set).',
        },
        'results_ref': REFERENCE_SCHEMA,
    },
    'required': ['call_key', 'tool', 'total', 'counts', 'results', 'results_ref'],
}

CALL_STATE_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'call_key': {'type': 'string'},
        'tool': {'type': 'string'},
        'state': {'type': 'string', 'enum': ['working', 'completed', 'failed', 'cancelled']},
        'done': {'type': 'integer'},
        'total': {'type': 'integer'},
        'directors': {'type': 'array', 'items': {'type': 'string'}},
        'message': {'type': 'string'},
        'created': {'type': 'number'},
        'updated': {'type': 'number'},
    },
    'required': ['call_key', 'tool', 'state', 'done', 'total'],
}

CALL_RESULT_REPLY_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'state': CALL_STATE_SCHEMA,
        'result': {
            'type': ['object', 'null'],
            'description': "The call's result (a tool's or an ensemble's) once it ended.",
        },
    },
    'required': ['state', 'result'],
}

STATUS_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'directors': {'type': 'array', 'items': {'type': 'object'}},
        'unavailable': {
            'type': 'object',
            'description': 'Directors routed around (by index), and why.',
            'additionalProperties': {'type': 'string'},
        },
    },
    'required': ['directors', 'unavailable'],
}

_KEY_ONLY = {
    'type': 'object',
    'properties': {'call_key': {'type': 'string', 'description': 'The key submit returned.'}},
    'required': ['call_key'],
    'additionalProperties': False,
}


def _control(key_length: int) -> dict[str, Any]:
    """The control arguments, with a ``call_key`` of at most ``key_length`` characters."""
    control = copy.deepcopy(CONTROL)
    control['call_key']['maxLength'] = key_length
    return control


def tool_input_schema(name: str) -> dict[str, Any]:
    """A registered tool's input schema with the control arguments added."""
    schema = copy.deepcopy(tool_spec(name).parameters)
    schema.setdefault('properties', {}).update(copy.deepcopy(CONTROL))
    return schema


def list_tools() -> list[mt.Tool]:
    """Every tool the server offers."""
    optional = mt.ToolExecution(taskSupport='optional')
    tools = [
        mt.Tool(
            name=name,
            description=tool_spec(name).description,
            inputSchema=tool_input_schema(name),
            outputSchema=CALL_RESULT_SCHEMA,
            execution=optional,
        )
        for name in sorted(TOOLS)
    ]
    names = sorted(TOOLS)
    tools.append(
        mt.Tool(
            name=ENSEMBLE,
            description=(
                'Run one tool on many argument sets as one batch on the Directors (the '
                'dispatcher splits it by free capacity). Progress notifications say how many '
                'are done and where; cancelling stops every call of the ensemble.'
            ),
            inputSchema={
                'type': 'object',
                'properties': {
                    'tool': {'type': 'string', 'enum': names},
                    'arguments': {
                        'type': 'array',
                        'items': {'type': 'object'},
                        'minItems': 1,
                        'maxItems': MAX_ENSEMBLE,
                        'description': "One object of the tool's arguments per call.",
                    },
                    **_control(ENSEMBLE_KEY_LENGTH),
                },
                'required': ['tool', 'arguments'],
                'additionalProperties': False,
            },
            outputSchema=ENSEMBLE_SCHEMA,
            execution=optional,
        ),
    )
    tools.append(
        mt.Tool(
            name=STATUS,
            description="Every Director's partition, nodes, slots and calls queued/running/done.",
            inputSchema={'type': 'object', 'properties': {}, 'additionalProperties': False},
            outputSchema=STATUS_SCHEMA,
        ),
    )
    tools.extend(_durable_tools(names))
    return tools


def _durable_tools(names: list[str]) -> list[mt.Tool]:
    """``submit`` / ``call_status`` / ``call_result`` / ``cancel_call``: tasks by hand."""
    return [
        mt.Tool(
            name=SUBMIT,
            description=(
                'Start a tool call (or an ensemble) and return at once with its call_key; '
                'follow it with call_status, fetch it with call_result, stop it with '
                'cancel_call. The call keeps running if the client disconnects.'
            ),
            inputSchema={
                'type': 'object',
                'properties': {
                    'tool': {'type': 'string', 'enum': [*names, ENSEMBLE]},
                    'arguments': {
                        'type': ['object', 'array'],
                        'description': "The tool's arguments (a list of them for an ensemble).",
                    },
                    **copy.deepcopy(CONTROL),
                },
                'required': ['tool', 'arguments'],
                'additionalProperties': False,
            },
            outputSchema=CALL_STATE_SCHEMA,
        ),
        mt.Tool(
            name=CALL_STATUS,
            description='Where a submitted call stands: working, completed, failed or cancelled.',
            inputSchema=_KEY_ONLY,
            outputSchema=CALL_STATE_SCHEMA,
        ),
        mt.Tool(
            name=CALL_RESULT,
            description=(
                "A submitted call's result; waits up to `wait` seconds for it to end "
                '(0: answer at once with result null while it runs).'
            ),
            inputSchema={
                'type': 'object',
                'properties': {
                    'call_key': {'type': 'string'},
                    'wait': {'type': 'number', 'minimum': 0, 'maximum': MAX_WAIT, 'default': 0},
                },
                'required': ['call_key'],
                'additionalProperties': False,
            },
            outputSchema=CALL_RESULT_REPLY_SCHEMA,
        ),
        mt.Tool(
            name=CANCEL,
            description='Stop a submitted call: its tool process is killed; it ends cancelled.',
            inputSchema=_KEY_ONLY,
            outputSchema=CALL_STATE_SCHEMA,
        ),
    ]
