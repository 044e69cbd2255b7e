"""Request checks: everything a call must pass before anything is submitted.

A bad call is refused here, in the Director's action, with a message that
names the bad value and what would be valid; nothing reaches Parsl. The
bounds every entry point shares (key length, timeout) are in
``actors.common.limits``.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from actors.common.errors import ConfigurationError
from actors.common.limits import check_key
from actors.tools.registry import Tool
from actors.tools.registry import check_params
from actors.tools.registry import get_tool
from actors.tools.resources import RESOURCE_KEYS
from actors.tools.resources import MPIResources
from actors.tools.resources import resolve_resources
from actors.tools.resources import split_resources
from actors.tools.schemas import validate_params

if TYPE_CHECKING:
    # Not at run time: the context's options load Parsl, and the actions' schemas (this
    # module among them) are read without it.
    from actors.director.context import DirectorContext

MAX_BATCH = 1_000_000
"""The most calls one ``md_sim_batch`` may hold."""

_ROUTING_KEYS = frozenset(('tool', *RESOURCE_KEYS))
"""Call arguments that take a call off the fast path (another tool, MPI resources)."""


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A call that passed every check: tool, its parameters, MPI resources."""

    tool: Tool
    params: dict[str, Any]
    resources: MPIResources | None


@dataclasses.dataclass(frozen=True)
class CallChecks:
    """The checks of one Director's calls against its tools and partition.

    Attributes:
        director: The Director's name (for messages).
        default_tool: The tool of calls that name none.
        nodes: Nodes of the partition (the most an MPI call may ask for).
        launcher_options: The site's MPI launcher flags (checked against a
            call's ranks).
        mpi: Whether MPI tools may run at all.

    """

    director: str
    default_tool: str
    nodes: int
    launcher_options: str = ''
    mpi: bool = True

    @classmethod
    def of(cls, context: DirectorContext) -> CallChecks:
        """The checks of the Director ``context`` describes."""
        return cls(
            context.name,
            context.tool,
            context.most_nodes,
            launcher_options=context.profile.mpi_launcher_options,
            mpi=context.options.mpi,
        )

    def routed(self, calls: Sequence[Any]) -> bool:
        """True if calls must be prepared one by one (not the fast path)."""
        if get_tool(self.default_tool).kind != 'python':
            return True
        # A non-mapping stays on the fast path, where check_params names the problem.
        return any(
            isinstance(call, Mapping) and not _ROUTING_KEYS.isdisjoint(call) for call in calls
        )

    def prepare_call(self, call: Any) -> Prepared:
        """Prepare one call whose arguments may name its tool (``tool=...``)."""
        return self.prepare(*tool_and_arguments(call, self.default_tool))

    def prepare(
        self, name: str, arguments: Mapping[str, Any], *, validated: bool = False
    ) -> Prepared:
        """Check a call completely before anything is submitted.

        Args:
            name: The tool.
            arguments: Its arguments (MPI resources among them).
            validated: The arguments were checked against the tool's schema
                already (``call_tool``).

        Raises:
            ConfigurationError: If the tool is unknown, a parameter does not fit
                it, or its MPI resources can never run on this partition.

        """
        if not isinstance(arguments, Mapping):
            raise ConfigurationError(
                f'arguments for tool {name!r} must be a mapping of name to value, '
                f'got {type(arguments).__name__}',
            )
        tool = get_tool(name)
        params, requested = split_resources(arguments)
        check_params(tool.name, params)
        if not tool.mpi:
            if requested:
                raise ConfigurationError(
                    f'tool {tool.name!r} runs on one worker slot; '
                    f'{", ".join(sorted(requested))} apply only to MPI tools',
                )
            if not validated:
                validate_params(tool.name, params)
            return Prepared(tool, params, None)
        if not validated:
            validate_params(tool.name, arguments)
        if not self.mpi:
            raise ConfigurationError(
                f'{self.director} was started with mpi=False; it cannot run MPI tool {tool.name!r}',
            )
        resources = resolve_resources(
            tool.name,
            requested,
            self.nodes,
            launcher_options=self.launcher_options,
        )
        return Prepared(tool, params, resources)

    def fast_calls(self, calls: Sequence[Mapping[str, Any]]) -> None:
        """Check the calls of the fast path (the default tool, no resources).

        Raises:
            ConfigurationError: If a call does not fit the tool or cannot travel.

        """
        check_serializable(calls)
        check_each_once(self.default_tool, calls)


def tool_and_arguments(call: Any, default: str) -> tuple[str, dict[str, Any]]:
    """Split a call's ``tool=...`` from its arguments."""
    if not isinstance(call, Mapping):
        raise ConfigurationError(
            f'each call of a batch must be a mapping of name to value, got {type(call).__name__}',
        )
    arguments = dict(call)
    return arguments.pop('tool', default), arguments


def check_each_once(tool: str, calls: Sequence[Mapping[str, Any]]) -> None:
    """Check every distinct parameter mapping of a batch once.

    ``md_sim_batch(iterations=N, params={...})`` repeats one mapping N times;
    checking it N times would cost more than submitting the batch.
    """
    seen: set[int] = set()
    for call in calls:
        if id(call) not in seen:
            seen.add(id(call))
            check_params(tool, call)
            validate_params(tool, call)


def expected_seconds(params: Mapping[str, Any], timeout: float | None) -> float | None:
    """How long a call declares it takes: its timeout, else its ``duration``."""
    if timeout is not None:
        return timeout
    duration = params.get('duration')
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        return float(duration)
    return None


def check_serializable(calls: Sequence[Mapping[str, Any]]) -> None:
    """Reject parameters that cannot travel to a worker (or into the journal)."""
    seen: set[int] = set()
    for call in calls:
        if id(call) in seen:
            continue
        seen.add(id(call))
        for name, value in call.items():
            try:
                pickle.dumps(value)
            except Exception as e:
                raise ConfigurationError(
                    f'parameter {name}={value!r:.60} cannot be sent to a worker ({e}); '
                    'give plain data (numbers, strings, lists, mappings)',
                ) from None


def batch_keys(
    count: int,
    call_keys: Sequence[str] | None,
    batch_key: str | None,
) -> list[str | None]:
    """One key (or ``None``) per call of a batch, from ``call_keys`` or ``batch_key``."""
    if call_keys is not None and batch_key is not None:
        raise ConfigurationError('give call_keys=[...] or batch_key=..., not both')
    if batch_key is not None:
        check_key(batch_key)
        return [f'{batch_key}/{i}' for i in range(count)]
    if call_keys is None:
        return [None] * count
    if isinstance(call_keys, (str, bytes)) or not isinstance(call_keys, Sequence):
        raise ConfigurationError(
            f'call_keys must be a list of strings, got {type(call_keys).__name__}',
        )
    if len(call_keys) != count:
        raise ConfigurationError(
            f'{len(call_keys)} call_keys given for {count} calls; give one per call',
        )
    for key in call_keys:
        check_key(key)
    if len(set(call_keys)) != len(call_keys):
        raise ConfigurationError('call_keys must be unique within a batch')
    return list(call_keys)


DEFAULT_BATCH = 4
"""Calls in an ``md_sim_batch`` given neither ``iterations`` nor a list of ``params``."""


def expand_batch(
    iterations: int | None,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
) -> list[Mapping[str, Any]]:
    """Turn ``md_sim_batch``'s arguments into one parameter mapping per call."""
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int)):
        raise ConfigurationError(
            f'iterations must be an integer, got {iterations!r}',
        )
    if iterations is not None and not 0 <= iterations <= MAX_BATCH:
        raise ConfigurationError(
            f'iterations must be between 0 and {MAX_BATCH}, got {iterations}',
        )
    if params is None or isinstance(params, Mapping):
        if iterations is None:
            # The pattern's own client calls md_sim_batch() bare, meaning its default of 4.
            iterations = DEFAULT_BATCH
        return [dict(params or {})] * iterations
    if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
        raise ConfigurationError(
            f'params must be a mapping or a list of mappings, got {type(params).__name__}',
        )
    if iterations is not None and iterations != len(params):
        raise ConfigurationError(
            f'iterations={iterations} does not match the {len(params)} '
            'parameter mappings given; omit iterations or make them equal',
        )
    if len(params) > MAX_BATCH:
        raise ConfigurationError(
            f'a batch holds at most {MAX_BATCH} calls, got {len(params)}',
        )
    return list(params)
