"""JSON schemas of the tools, for LLM tool calling.

Each registered tool (and, in ``actors.director.specs``, each client-facing
Director action) becomes a
[`FunctionSpec`][actors.tools.schemas.FunctionSpec]: its name, the description from
its docstring, and a JSON schema of its parameters built from the signature's
type hints (pydantic) and the docstring's ``Args:`` section
(``docstring_parser``). An MPI tool's schema adds the resource arguments
``num_nodes``, ``ranks_per_node`` and ``num_ranks``.

[`to_openai`][actors.tools.schemas.to_openai] and [`to_mcp`][actors.tools.schemas.to_mcp]
render a spec in OpenAI's function-calling and MCP's tool format;
[`validate_arguments`][actors.tools.schemas.validate_arguments] checks a tool
call's arguments against the schema (``jsonschema``) before anything is submitted.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import typing
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from typing import Literal

import docstring_parser
import jsonschema
import pydantic

from actors.common.errors import QUOTE_LIMIT
from actors.common.errors import ConfigurationError
from actors.common.errors import quoted
from actors.tools.registry import Tool
from actors.tools.registry import get_tool
from actors.tools.resources import RESOURCE_SCHEMA

_SKIPPED_PARAMETERS = ('self', 'stdout', 'stderr')


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    """One callable function for an LLM: name, description, parameter schema.

    Attributes:
        name: Function name (a tool name or a Director action).
        description: What it does, from the docstring.
        parameters: JSON schema (an object) of its arguments.
        kind: ``tool`` or ``action``.

    """

    name: str
    description: str
    parameters: dict[str, Any]
    kind: Literal['tool', 'action'] = 'tool'


def describe_docstring(doc: docstring_parser.Docstring, *, returns: bool = True) -> str:
    """A function's description for an LLM: summary, details and what it returns."""
    parts = [doc.short_description or '', doc.long_description or '']
    returns_text = doc.returns.description if doc.returns and returns else ''
    if returns_text:
        parts.append(f'Returns: {returns_text}')
    return '\n\n'.join(p.strip() for p in parts if p and p.strip())


def _strip_titles(schema: dict[str, Any]) -> dict[str, Any]:
    schema.pop('title', None)
    for prop in schema.get('properties', {}).values():
        prop.pop('title', None)
    for definition in schema.get('$defs', {}).values():
        _strip_titles(definition)
    return schema


def parameters_schema(func: Callable[..., Any]) -> dict[str, Any]:
    """JSON schema of a function's keyword parameters.

    Types come from the type hints (``Annotated`` bounds become ``minimum``
    and the like, ``Literal`` becomes ``enum``), descriptions from the
    docstring's ``Args:`` section. ``*args``/``**kwargs`` are left out.
    """
    hints = typing.get_type_hints(func, include_extras=True)
    doc = docstring_parser.parse(func.__doc__ or '')
    described = {p.arg_name: p.description for p in doc.params}
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(func).parameters.items():
        if name in _SKIPPED_PARAMETERS or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (
            hints.get(name, Any),
            pydantic.Field(default, description=described.get(name)),
        )
    model = pydantic.create_model(f'{func.__name__}_parameters', **fields)
    return _strip_titles(model.model_json_schema())


@functools.cache
def tool_spec(name: str) -> FunctionSpec:
    """The spec of one registered tool (with resource arguments for MPI tools)."""
    tool = get_tool(name)
    schema = parameters_schema(tool.func)
    schema['additionalProperties'] = False
    # A command tool's function returns its command line, not the call's value.
    description = describe_docstring(
        docstring_parser.parse(tool.func.__doc__ or ''),
        returns=tool.kind == 'python',
    )
    if tool.mpi:
        schema['properties'].update(json.loads(json.dumps(RESOURCE_SCHEMA)))
        description += (
            '\n\nRuns on whole nodes of a partition through MPI; '
            'num_nodes, ranks_per_node and num_ranks set its resources.'
        )
    elif tool.kind == 'command':
        description += '\n\nRuns as a command line on one worker slot.'
    return FunctionSpec(tool.name, description, schema, 'tool')


def to_openai(spec: FunctionSpec) -> dict[str, Any]:
    """The spec in OpenAI's function-calling (``tools=[...]``) format."""
    return {
        'type': 'function',
        'function': {
            'name': spec.name,
            'description': spec.description,
            'parameters': spec.parameters,
        },
    }


def to_mcp(spec: FunctionSpec) -> dict[str, Any]:
    """The spec in MCP's ``tools/list`` format."""
    return {
        'name': spec.name,
        'description': spec.description,
        'inputSchema': spec.parameters,
    }


def _is_integer(_: Any, instance: Any) -> bool:
    # JSON Schema counts 2.0 as an integer; Python tools need a real int.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine('integer', _is_integer),
)


def parse_arguments(name: str, arguments: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Accept arguments as a mapping or a JSON object string (OpenAI style).

    Raises:
        ConfigurationError: If they are neither, or the JSON is invalid.

    """
    if arguments is None:
        return {}
    if isinstance(arguments, (str, bytes)):
        try:
            arguments = json.loads(arguments or '{}')
        except json.JSONDecodeError as e:
            raise ConfigurationError(
                f'arguments of {name!r} are not valid JSON ({e}); give a JSON object',
            ) from None
        except RecursionError:
            raise ConfigurationError(
                f'arguments of {name!r} are nested too deep to read; give flatter data '
                f'(at most {MAX_DEPTH} levels)',
            ) from None
    if not isinstance(arguments, Mapping):
        raise ConfigurationError(
            f'arguments of {name!r} must be a JSON object, got {type(arguments).__name__}',
        )
    return dict(arguments)


def validate_arguments(name: str, arguments: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Check a tool call's arguments against the tool's schema.

    Returns:
        The arguments as a dictionary.

    Raises:
        ConfigurationError: If ``name`` is not a registered tool, or naming
            every bad argument and what is valid.

    """
    get_tool(name)
    return check_against(tool_spec(name), parse_arguments(name, arguments))


def check_against(spec: FunctionSpec, parsed: dict[str, Any]) -> dict[str, Any]:
    """Check parsed arguments against ``spec``'s schema; returns them.

    Raises:
        ConfigurationError: Naming every bad argument and what is valid.

    """
    check_plain(spec.name, parsed)
    _raise_errors(spec.name, _Validator(spec.parameters).iter_errors(parsed))
    return parsed


def validate_params(name: str, params: Mapping[str, Any]) -> None:
    """Check a tool's parameters (as the Director gets them) against its schema.

    Every entry point runs this before anything is submitted (``md_sim``,
    ``md_sim_batch``, ``call_tool``, the dispatcher, MPI tools), so a bad
    value is refused with the schema's message, not failed in a worker.

    Raises:
        ConfigurationError: Naming every bad argument and what is valid.

    """
    check_plain(name, params)
    if params:
        _raise_errors(name, _tool_validator(get_tool(name)).iter_errors(dict(params)))


@functools.cache
def _tool_validator(tool: Tool) -> Any:
    return _Validator(tool_spec(tool.name).parameters)


MAX_ERRORS = 5
"""Problems one refusal names at most (the count of the rest is given)."""


def _raise_errors(name: str, errors: Iterable[jsonschema.ValidationError]) -> None:
    found = sorted(errors, key=lambda e: list(map(str, e.absolute_path)))
    if found:
        described = '; '.join(_describe(error) for error in found[:MAX_ERRORS])
        more = f' (and {len(found) - MAX_ERRORS} more)' if len(found) > MAX_ERRORS else ''
        raise ConfigurationError(f'bad arguments for {quoted(name)}: {described}{more}')


MAX_DEPTH = 32
"""Deepest nesting of lists and mappings a call's arguments may have."""


def check_plain(name: str, arguments: Mapping[str, Any]) -> None:
    """Refuse numbers that are not finite and data nested deeper than ``MAX_DEPTH``.

    JSON Schema's ``number`` admits NaN and infinity, and a tool given one
    returns NaN energies or fails with an ``OverflowError`` that names no
    parameter. Walked without recursion: data nested thousands deep would
    otherwise end in a ``RecursionError``.

    Raises:
        ConfigurationError: Naming the argument and what is valid.

    """
    todo: list[tuple[str, Any, int]] = [(str(key), value, 1) for key, value in arguments.items()]
    while todo:
        path, value, depth = todo.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(
                f'bad arguments for {name!r}: {quoted(path)[1:-1]}: {value!r} is not a finite '
                'number; '
                'give a finite value',
            )
        if isinstance(value, (list, tuple, dict)):
            if depth >= MAX_DEPTH:
                raise ConfigurationError(
                    f'bad arguments for {name!r}: {path}: nested deeper than {MAX_DEPTH} '
                    'levels; give flatter data',
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            todo.extend((f'{path}.{key}', item, depth + 1) for key, item in items)


def _describe(error: jsonschema.ValidationError) -> str:
    """One problem, quoting at most ``QUOTE_LIMIT`` characters of any value."""
    path = quoted('.'.join(str(p) for p in error.absolute_path))[1:-1]
    message = error.message
    whole = repr(error.instance)
    if len(whole) > QUOTE_LIMIT:
        message = message.replace(whole, quoted(error.instance))
    if len(message) > 4 * QUOTE_LIMIT:  # e.g. many unexpected names, each long
        message = message[: 4 * QUOTE_LIMIT - 3] + '...'
    schema = error.schema
    if error.validator == 'additionalProperties' and not path and isinstance(schema, Mapping):
        return f'{message}; valid arguments: {", ".join(schema["properties"])}'
    return f'{path}: {message}' if path else message
