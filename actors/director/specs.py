"""The specs of every tool and client-facing Director action, and checking calls of either.

Built from the tools' specs (``actors.tools.schemas``) and the Director's
action methods (their signatures and docstrings, read from
[`CallActions`][actors.director.actions.CallActions]: no Parsl is loaded), for
LLM tool calling: ``launch.py tools``, the dispatcher.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any
from typing import Literal

import docstring_parser

from actors.common.errors import ConfigurationError
from actors.common.errors import quoted
from actors.director.actions import CallActions
from actors.tools.registry import DEFAULT_TOOL
from actors.tools.registry import TOOLS
from actors.tools.schemas import FunctionSpec
from actors.tools.schemas import check_against
from actors.tools.schemas import describe_docstring
from actors.tools.schemas import parameters_schema
from actors.tools.schemas import parse_arguments
from actors.tools.schemas import to_mcp
from actors.tools.schemas import to_openai
from actors.tools.schemas import tool_spec

Format = Literal['openai', 'mcp']
FORMATS: tuple[str, ...] = ('openai', 'mcp')

ACTIONS = ('md_sim', 'md_sim_batch', 'status')
"""Director actions exported next to the tools (``call_tool`` is how tools are run)."""


def _action_spec(name: str) -> FunctionSpec:
    method = getattr(CallActions, name)
    func = getattr(method, '__wrapped__', method)
    doc = docstring_parser.parse(func.__doc__ or '')
    description = describe_docstring(doc)
    if name == 'md_sim':
        # ``**params`` are the chosen tool's parameters.
        default = tool_spec(DEFAULT_TOOL).parameters
        schema: dict[str, Any] = {
            'type': 'object',
            'properties': {
                'tool': {
                    'type': 'string',
                    'enum': sorted(TOOLS),
                    'description': f'Tool to run (default {DEFAULT_TOOL!r}); '
                    "the other arguments are that tool's parameters.",
                },
                **default['properties'],
            },
            'additionalProperties': True,
        }
    else:
        schema = parameters_schema(func)
        schema['additionalProperties'] = False
    return FunctionSpec(name, description, schema, 'action')


@functools.cache
def _specs() -> tuple[FunctionSpec, ...]:
    return tuple(
        [tool_spec(name) for name in sorted(TOOLS)] + [_action_spec(name) for name in ACTIONS],
    )


def function_specs() -> list[FunctionSpec]:
    """Specs of every registered tool, then of the Director actions."""
    return list(_specs())


def get_spec(name: str) -> FunctionSpec:
    """Look a spec up by function name.

    Raises:
        ConfigurationError: If nothing has that name.

    """
    for spec in _specs():
        if spec.name == name:
            return spec
    names = ', '.join(spec.name for spec in _specs())
    raise ConfigurationError(f'unknown tool {name!r}; available: {names}')


def export(fmt: str) -> list[dict[str, Any]]:
    """Every spec rendered in ``fmt`` (``openai`` or ``mcp``).

    Raises:
        ConfigurationError: If the format is unknown.

    """
    if fmt not in FORMATS:
        raise ConfigurationError(f'unknown schema format {fmt!r}; choose one of: openai, mcp')
    render = to_openai if fmt == 'openai' else to_mcp
    return [render(spec) for spec in _specs()]


def validate_call(name: str, arguments: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Check a call's arguments against its schema.

    Returns:
        The arguments as a dictionary.

    Raises:
        ConfigurationError: Naming every bad argument and what is valid.

    """
    spec = get_spec(name)
    parsed = parse_arguments(name, arguments)
    if name == 'md_sim':
        # ``md_sim``'s arguments are those of the tool it runs.
        tool = parsed.get('tool', DEFAULT_TOOL)
        if not isinstance(tool, str) or tool not in TOOLS:
            raise ConfigurationError(
                f'bad arguments for {name!r}: tool {quoted(tool)} is not one of '
                f'{", ".join(sorted(TOOLS))}',
            )
        rest = {k: v for k, v in parsed.items() if k != 'tool'}
        validate_call(tool, rest)
        return parsed
    return check_against(spec, parsed)
