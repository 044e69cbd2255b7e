"""The tool registry: what a Director can run, by name.

A tool is either a Python function (run on one worker slot) or a command line
(a function that returns the command; run by
[`run_command`][actors.worker.run.run_command] in a worker). A command-line
tool may be an MPI tool: it runs through the Director's ``MPIExecutor`` on whole
nodes of the partition and its command starts with ``$PARSL_MPI_PREFIX``, the
launch prefix for exactly the nodes the call was given. Every tool has typed
parameters and a Google-style docstring; [`actors.tools.schemas`][actors.tools.schemas]
turns both into JSON schemas for LLM tool calling.

Imported in every worker: keep it free of Director code.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Literal

from actors.common.errors import ConfigurationError
from actors.tools import ase_md
from actors.tools import mock
from actors.tools import mpi_tools

ToolKind = Literal['python', 'command']


@dataclasses.dataclass(frozen=True)
class Tool:
    """A registered tool.

    Attributes:
        name: Name clients call the tool by.
        func: For a ``python`` tool, the function to run; for a ``command``
            tool, a function that returns the command line to run.
        kind: ``python`` (run in the worker) or ``command`` (its command line runs).
        mpi: True if the tool runs through the MPI executor on whole nodes.
        parse: For a ``command`` tool, turns the command's stdout into the
            call's value; without it the value is the stdout text.

    """

    name: str
    func: Callable[..., Any]
    kind: ToolKind = 'python'
    mpi: bool = False
    parse: Callable[[str], Any] | None = None

    @property
    def signature(self) -> inspect.Signature:
        """The tool's parameters (a command tool's ``stdout``/``stderr`` hidden)."""
        return _parameters(self.func)


@functools.cache
def _parameters(func: Callable[..., Any]) -> inspect.Signature:
    # Checked on every call: inspect.signature costs more than the bind.
    signature = inspect.signature(func)
    return signature.replace(
        parameters=[p for n, p in signature.parameters.items() if n not in _STD_STREAMS],
    )


_STD_STREAMS = ('stdout', 'stderr', 'parsl_resource_specification')

TOOLS: dict[str, Tool | Callable[..., Any]] = {}
"""Tools a Director can run, by name (plain functions count as python tools)."""

DEFAULT_TOOL = 'mock_md'


def register_tool(
    name: str | None = None,
    *,
    kind: ToolKind = 'python',
    mpi: bool = False,
    parse: Callable[[str], Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that adds a function to [`TOOLS`][actors.tools.registry.TOOLS].

    Args:
        name: Tool name (default: the function's name).
        kind: ``python`` or ``command``.
        mpi: The command runs under ``$PARSL_MPI_PREFIX`` on whole nodes.
        parse: Turns a command tool's stdout into its value.

    """
    if mpi and kind != 'command':
        raise ValueError('an MPI tool must be a command tool (its command uses $PARSL_MPI_PREFIX)')

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        tool = Tool(name or func.__name__, func, kind, mpi, parse)
        TOOLS[tool.name] = tool
        return func

    return register


def get_tool(name: str) -> Tool:
    """Look a tool up by name.

    Raises:
        ConfigurationError: If no tool has that name.

    """
    try:
        entry = TOOLS[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f'unknown tool {name!r}; available tools: {", ".join(sorted(TOOLS))}',
        ) from None
    return entry if isinstance(entry, Tool) else Tool(name, entry)


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Check that ``params`` fit the tool's signature before submitting.

    Raises:
        ConfigurationError: If a parameter is unknown or missing.

    """
    if not isinstance(params, Mapping):
        raise ConfigurationError(
            f'parameters for tool {name!r} must be a mapping of name to value, '
            f'got {type(params).__name__}',
        )
    signature = get_tool(name).signature
    try:
        signature.bind(**params)
    except TypeError as e:
        raise ConfigurationError(
            f'bad parameters for tool {name!r}: {e}; the tool takes {signature}',
        ) from None


register_tool()(mock.mock_md)
register_tool()(ase_md.ase_md)
register_tool(kind='command', mpi=True, parse=mpi_tools.parse_ranks)(mpi_tools.mpi_probe)
register_tool(kind='command', mpi=True, parse=mpi_tools.parse_md_ensemble)(mpi_tools.ase_md_mpi)
