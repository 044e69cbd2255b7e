"""The Director's actions that run tool calls, and ``status``: what clients' tool calls reach.

[`Director`][actors.director.agent.Director] inherits them from
[`CallActions`][actors.director.actions.CallActions]. They live apart from the
agent, whose DFK host loads Parsl, because their signatures and docstrings are
the one source of the actions' JSON schemas (``actors.director.specs``), which
``launch.py tools``, the dispatcher and the MCP server read without Parsl.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import TypeAlias
from typing import TypeGuard
from typing import get_args

from academy.agent import action

from actors.common.limits import check_key
from actors.common.limits import check_timeout
from actors.common.results import CallResult
from actors.common.results import DirectorStatus
from actors.director.checks import batch_keys
from actors.director.checks import expand_batch
from actors.tools.schemas import validate_arguments

if TYPE_CHECKING:
    from actors.director.checks import CallChecks
    from actors.director.ledger import Ledger
    from actors.director.runner import CallRunner
    from actors.director.snapshot import Snapshots

DirectorAction: TypeAlias = Literal[
    'call_tool',
    'md_sim',
    'md_sim_batch',
    'status',
    'cancel',
    'incarnation_id',
    'node_load',
    'release_nodes',
    'adopt_node',
]
"""Every action of a [`Director`][actors.director.agent.Director] (these and the agent's own).

The one list clients name actions from: [`call`][actors.calling.calls.call]
takes only these (mypy checks a literal name against it), and
``tests/project/test_light_imports.py`` checks it against the Director's actions.
"""

ACTIONS: frozenset[str] = frozenset(get_args(DirectorAction))
"""[`DirectorAction`][actors.director.actions.DirectorAction]'s names, to check at run time."""


def is_action(name: str) -> TypeGuard[DirectorAction]:
    """Whether ``name`` is an action of the Director."""
    return name in ACTIONS


class CallActions:
    """The actions ``call_tool``, ``md_sim``, ``md_sim_batch`` and ``status`` of a Director.

    A mixin: the Director sets the attributes below.

    Attributes:
        tool: The tool of calls that name none.
        checks: The checks of every call, before anything is submitted.
        ledger: Journal, call keys and counters.
        runner: Submits the checked calls (``None`` until the Director has started).
        snapshots: Its status, from its parts (``None`` until it has started).

    """

    tool: str
    checks: CallChecks
    ledger: Ledger
    runner: CallRunner | None
    snapshots: Snapshots | None

    def _runner(self) -> CallRunner:
        assert self.runner is not None, 'Director has not started'
        return self.runner

    @action
    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        call_key: str | None = None,
        timeout: float | None = None,
    ) -> CallResult:
        """Run any registered tool by name (an LLM-style tool call).

        Args:
            name: Tool name (see ``launch.py tools``).
            arguments: The tool's parameters, as a mapping or a JSON object
                string; an MPI tool also takes ``num_nodes``,
                ``ranks_per_node`` and ``num_ranks``.
            call_key: Stable key of this call (see ``md_sim``).
            timeout: Seconds the tool may run before it is stopped.

        Returns:
            The call's result; a failure inside the tool comes back as a
            result with ``ok=False``.

        Raises:
            ConfigurationError: If the arguments do not match the tool's
                schema or cannot run on this partition; nothing is submitted.

        """
        check_timeout(timeout)
        check_key(call_key)
        parsed = validate_arguments(name, arguments)
        if name == self.tool and not self.checks.routed([parsed]):
            # The default python tool: md_sim's fast path, with the same result and record.
            self.checks.fast_calls([parsed])
            self.ledger.check_keys(self.tool, [parsed], [call_key])
            (result,) = await self._runner().run_batch('call_tool', [parsed], [call_key], timeout)
            return result
        prepared = self.checks.prepare(name, parsed, validated=True)
        self.ledger.check_keys(prepared.tool.name, [prepared.params], [call_key])
        return await self._runner().run('call_tool', prepared, call_key, timeout)

    @action
    async def md_sim(
        self,
        *,
        call_key: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> CallResult:
        """Run one MD tool call on the partition.

        Args:
            call_key: Stable key of this call. A key whose result is already
                journaled is answered from the journal without running again
                (so resent and resumed calls run once).
            timeout: Seconds the tool may run before it is stopped (a
                ``timed_out`` result).
            params: Keyword arguments of the tool (for the mock tool:
                ``duration``, ``temperature``, ``steps``, ``seed``).
                ``tool='name'`` runs another registered tool; an MPI tool
                also takes ``num_nodes``, ``ranks_per_node``, ``num_ranks``.

        Returns:
            The call's result, after it is in the journal; a failure inside
            the tool comes back as a result with ``ok=False``, not as an
            exception.

        Raises:
            ConfigurationError: If the parameters do not fit the tool; nothing
                is submitted then.

        """
        check_timeout(timeout)
        check_key(call_key)
        runner = self._runner()
        if self.checks.routed([params]):
            prepared = self.checks.prepare_call(params)
            self.ledger.check_keys(prepared.tool.name, [prepared.params], [call_key])
            return await runner.run('md_sim', prepared, call_key, timeout)
        self.checks.fast_calls([params])
        self.ledger.check_keys(self.tool, [params], [call_key])
        (result,) = await runner.run_batch('md_sim', [params], [call_key], timeout)
        return result

    @action
    async def md_sim_batch(
        self,
        iterations: int | None = None,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        call_keys: Sequence[str] | None = None,
        batch_key: str | None = None,
        timeout: float | None = None,
    ) -> list[CallResult]:
        """Run many MD tool calls at once, in parallel on the partition.

        Args:
            iterations: Number of calls. With a single ``params`` mapping,
                each call gets those parameters; with a list, it must match
                the list's length.
            params: One mapping for every call, or one mapping per call.
            call_keys: One stable key per call (see ``md_sim``).
            batch_key: Alternative to ``call_keys``: call ``i`` gets the key
                ``<batch_key>/<i>``; ``cancel(batch_key=...)`` stops them all.
            timeout: Seconds each tool call may run before it is stopped.

        Returns:
            One result per call, in submission order. A failed call is a
            result with ``ok=False``; it never loses the others' results.

        Raises:
            ConfigurationError: If the batch is malformed; nothing is
                submitted then.

        """
        check_timeout(timeout)
        calls = expand_batch(iterations, params)
        keys = batch_keys(len(calls), call_keys, batch_key)
        runner = self._runner()
        if self.checks.routed(calls):
            prepared = [self.checks.prepare_call(call) for call in calls]
            self.ledger.check_keys(
                [p.tool.name for p in prepared], [p.params for p in prepared], keys
            )
            return list(
                await asyncio.gather(
                    *(
                        runner.run('md_sim_batch', call, key, timeout)
                        for call, key in zip(prepared, keys, strict=True)
                    ),
                ),
            )
        self.checks.fast_calls(calls)
        self.ledger.check_keys(self.tool, calls, keys)
        return await runner.run_batch('md_sim_batch', calls, keys, timeout)

    @action
    async def status(self) -> DirectorStatus:
        """Report the partition, its slots and the calls queued/running/done."""
        assert self.snapshots is not None, 'Director has not started'
        return await self.snapshots.status()
