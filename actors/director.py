"""The Director: an Academy agent that owns one partition of a batch job.

Each Director builds its own Parsl ``DataFlowKernel`` (never the global
``parsl.load``), so several Directors can live in one process, and runs tool
calls on its partition's workers as Academy actions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import pathlib
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import wait
from typing import Any

from academy.agent import Agent
from academy.agent import action
from parsl.app.app import bash_app
from parsl.app.app import python_app
from parsl.dataflow.dflow import DataFlowKernel

from actors.errors import ConfigurationError
from actors.mpi import RESOURCE_KEYS
from actors.mpi import MPIResources
from actors.mpi import NodeAdmission
from actors.mpi import resolve_resources
from actors.mpi import split_resources
from actors.parsl_config import build_config
from actors.parsl_config import executor_label
from actors.parsl_config import mpi_executor_label
from actors.partition import Partition
from actors.partition import PartitionRequest
from actors.partition import resolve_partition
from actors.rate import RateMeter
from actors.results import CallResult
from actors.results import DirectorStatus
from actors.sites import SiteProfile
from actors.tools import DEFAULT_TOOL
from actors.tools import Tool
from actors.tools import check_params
from actors.tools import command_line
from actors.tools import command_outcome
from actors.tools import get_tool
from actors.tools import run_tool

logger = logging.getLogger(__name__)

MAX_BATCH = 1_000_000

_ROUTING_KEYS = frozenset(('tool', *RESOURCE_KEYS))
"""Call arguments that take a call off the fast path (another tool, MPI resources)."""


class Director(Agent):
    """Runs tool calls on the workers of one partition.

    Args:
        partition: The nodes this Director owns, or a request resolved
            against the batch job's nodes when the Director starts.
        profile: Site profile that says how to place workers on them.
        run_dir: Directory for this run; the Director's Parsl files go to
            ``<run_dir>/parsl/director-<index>``.
        workers_per_node: Overrides the profile's workers (slots) per node.
        tool: Tool that ``md_sim`` and ``md_sim_batch`` run unless a call
            names another with ``tool=...``.
        drain_timeout: Seconds to let in-flight calls finish at shutdown
            before they are cancelled.
        mpi: Add an ``MPIExecutor`` for multi-node (MPI) tools; its worker
            pool starts with the first MPI call.

    """

    def __init__(
        self,
        partition: Partition | PartitionRequest,
        profile: SiteProfile,
        run_dir: str,
        *,
        workers_per_node: int | None = None,
        tool: str = DEFAULT_TOOL,
        drain_timeout: float = 10.0,
        mpi: bool = True,
    ) -> None:
        super().__init__()
        self.partition = partition
        self.profile = profile
        self.run_dir = run_dir
        self.workers_per_node = workers_per_node or profile.workers_per_node
        self.tool = tool
        self.drain_timeout = drain_timeout
        self.name = f'director-{partition.index}'
        self._dfk: DataFlowKernel | None = None
        self._app: Any = None
        self._call_ids = itertools.count()
        self._in_flight: set[Future[Any]] = set()
        self._lock = threading.Lock()
        self._done = 0
        self._failed = 0
        self.mpi = mpi
        self._command_app: Any = None
        self._mpi_app: Any = None
        # Sized once the partition is resolved, in agent_on_startup.
        self._admission = NodeAdmission(0)
        self._call_files = itertools.count()
        self._rate = RateMeter()

    async def agent_on_startup(self) -> None:
        """Start this Director's private DataFlowKernel."""
        self.partition, self.run_dir = await asyncio.to_thread(
            resolve_partition, self.partition, self.run_dir
        )
        self._admission = NodeAdmission(self.partition.size)
        config = build_config(
            self.partition,
            self.profile,
            pathlib.Path(self.run_dir, 'parsl', self.name),
            workers_per_node=self.workers_per_node,
            mpi=self.mpi,
        )
        # Creating a DFK starts the interchange and waits on it: keep it off
        # the event loop that other Directors may share.
        self._dfk = await asyncio.to_thread(DataFlowKernel, config)
        self._app = python_app(
            run_tool,
            data_flow_kernel=self._dfk,
            executors=[executor_label(self.partition)],
        )
        self._command_app = bash_app(
            command_line,
            data_flow_kernel=self._dfk,
            executors=[executor_label(self.partition)],
        )
        if self.mpi:
            self._mpi_app = bash_app(
                command_line,
                data_flow_kernel=self._dfk,
                executors=[mpi_executor_label(self.partition)],
            )
        logger.info(
            '%s started on %d node(s): %s',
            self.name,
            self.partition.size,
            ', '.join(self.partition.nodes),
        )

    async def agent_on_shutdown(self) -> None:
        """Drain in-flight calls, then stop the DFK and its workers."""
        if self._dfk is None:
            return
        pending = list(self._in_flight)
        if pending:
            logger.info(
                '%s waiting up to %.0fs for %d in-flight call(s)',
                self.name,
                self.drain_timeout,
                len(pending),
            )
            _, not_done = await asyncio.to_thread(
                _wait_all,
                pending,
                self.drain_timeout,
            )
            for future in not_done:
                future.cancel()
        dfk, self._dfk = self._dfk, None
        await asyncio.to_thread(dfk.cleanup)
        logger.info('%s stopped', self.name)

    def _submit(
        self,
        params: Mapping[str, Any],
        tool: str | None = None,
        resources: MPIResources | None = None,
    ) -> Future[Any]:
        assert self._app is not None, 'Director has not started'
        name = tool or self.tool
        future: Future[Any]
        if tool is None or get_tool(name).kind == 'python':
            future = self._app(name, dict(params))
        else:
            future = self._submit_command(name, params, resources)
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._finished)
        return future

    def _submit_command(
        self,
        name: str,
        params: Mapping[str, Any],
        resources: MPIResources | None,
    ) -> Future[Any]:
        """Run a command tool as a bash app; resolve to the same outcome as ``run_tool``."""
        calls = pathlib.Path(self.run_dir, 'parsl', self.name, 'calls')
        calls.mkdir(parents=True, exist_ok=True)
        stem = calls / f'{name}-{next(self._call_files)}'
        meta, stdout, stderr = (f'{stem}.{ext}' for ext in ('json', 'out', 'err'))
        if resources is None:
            app_future = self._command_app(name, dict(params), meta, stdout=stdout, stderr=stderr)
        else:
            app_future = self._mpi_app(
                name,
                dict(params),
                meta,
                stdout=stdout,
                stderr=stderr,
                parsl_resource_specification=resources.parsl_spec(),
            )
        outcome: Future[Any] = Future()

        def settle(done: Future[Any]) -> None:
            if outcome.done():
                return
            if done.cancelled():
                outcome.cancel()
                return
            value = command_outcome(name, meta, stdout, stderr, done.exception())
            if not outcome.done():
                outcome.set_result(value)

        def propagate_cancel(done: Future[Any]) -> None:
            if done.cancelled():
                app_future.cancel()

        outcome.add_done_callback(propagate_cancel)
        app_future.add_done_callback(settle)
        return outcome

    def _finished(self, future: Future[Any]) -> None:
        ok = not future.cancelled() and future.exception() is None and future.result()['ok']
        with self._lock:
            self._in_flight.discard(future)
            if ok:
                self._done += 1
            else:
                self._failed += 1
        self._rate.record()

    def _result(
        self,
        action_name: str,
        params: Mapping[str, Any],
        future: Future[Any],
        submitted: float,
        *,
        tool: str | None = None,
        resources: MPIResources | None = None,
    ) -> CallResult:
        result = CallResult(
            call_id=f'{self.name}-{next(self._call_ids)}',
            director=self.name,
            partition=self.partition.index,
            action=action_name,
            tool=tool or self.tool,
            params=dict(params),
            ok=False,
            start=submitted,
            resources=None if resources is None else resources.to_dict(),
        )
        if future.cancelled():
            result.end = time.time()
            result.error_type = 'Cancelled'
            result.error_message = 'the call was cancelled before it finished'
            return result
        error = future.exception()
        if error is not None:
            # The call never returned from a worker (lost worker, pool, ...).
            result.end = time.time()
            result.error_type = type(error).__name__
            result.error_message = str(error)
            return result
        outcome = future.result()
        result.ok = outcome['ok']
        result.node = outcome['node']
        result.worker = outcome['worker']
        result.pid = outcome['pid']
        result.start = outcome['start']
        result.end = outcome['end']
        result.value = outcome['value']
        result.error_type = outcome['error_type']
        result.error_message = outcome['error_message']
        result.nodes = outcome.get('nodes')
        return result

    def _prepare(self, name: str, arguments: Mapping[str, Any]) -> _Prepared:
        """Check a call completely before anything is submitted.

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
            return _Prepared(tool, params, None)
        if self._mpi_app is None and self._dfk is not None:
            raise ConfigurationError(
                f'{self.name} was started with mpi=False; it cannot run MPI tool {tool.name!r}',
            )
        resources = resolve_resources(
            tool.name,
            requested,
            self.partition.size,
            launcher_options=self.profile.mpi_launcher_options,
        )
        return _Prepared(tool, params, resources)

    def _routed(self, calls: Sequence[Any]) -> bool:
        """True if calls must go through ``_prepare``/``_run`` (not the fast path)."""
        if get_tool(self.tool).kind != 'python':
            return True
        # A non-mapping stays on the fast path, where check_params names the problem.
        return any(
            isinstance(call, Mapping) and not _ROUTING_KEYS.isdisjoint(call) for call in calls
        )

    async def _run(self, action_name: str, call: _Prepared) -> CallResult:
        """Submit a prepared call (MPI calls once their nodes are free); await its result."""
        resources = call.resources
        if resources is not None:
            # Parsl's MPI mode is only ever handed calls whose nodes are free.
            await self._admission.acquire(resources.num_nodes)
            loop = asyncio.get_running_loop()
        try:
            submitted = time.time()
            future = self._submit(call.params, call.tool.name, resources)
        except BaseException:
            if resources is not None:
                self._admission.release(resources.num_nodes)
            raise
        if resources is not None:
            nodes = resources.num_nodes
            future.add_done_callback(
                lambda _: _call_soon(loop, self._admission.release, nodes),
            )
        try:
            await asyncio.wrap_future(future)
        except Exception:
            # Reported in the result; keep the call's failure out of the action.
            pass
        return self._result(
            action_name,
            call.params,
            future,
            submitted,
            tool=call.tool.name,
            resources=resources,
        )

    @action
    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
    ) -> CallResult:
        """Run any registered tool by name (an LLM-style tool call).

        Args:
            name: Tool name (see ``launch.py tools``).
            arguments: The tool's parameters, as a mapping or a JSON object
                string; an MPI tool also takes ``num_nodes``,
                ``ranks_per_node`` and ``num_ranks``.

        Returns:
            The call's result; a failure inside the tool comes back as a
            result with ``ok=False``.

        Raises:
            ConfigurationError: If the arguments do not match the tool's
                schema or cannot run on this partition; nothing is submitted.

        """
        from actors.schemas import validate_arguments

        parsed = validate_arguments(name, arguments)
        return await self._run('call_tool', self._prepare(name, parsed))

    @action
    async def md_sim(self, **params: Any) -> CallResult:
        """Run one MD tool call on the partition.

        Args:
            params: Keyword arguments of the tool (for the mock tool:
                ``duration``, ``temperature``, ``steps``, ``seed``).
                ``tool='name'`` runs another registered tool; an MPI tool
                also takes ``num_nodes``, ``ranks_per_node``, ``num_ranks``.

        Returns:
            The call's result; a failure inside the tool comes back as a
            result with ``ok=False``, not as an exception.

        Raises:
            ConfigurationError: If the parameters do not fit the tool; nothing
                is submitted then.

        """
        if self._routed([params]):
            name, arguments = _tool_and_arguments(params, self.tool)
            return await self._run('md_sim', self._prepare(name, arguments))
        check_params(self.tool, params)
        submitted = time.time()
        future = self._submit(params)
        try:
            await asyncio.wrap_future(future)
        except Exception:
            # Reported in the result; keep the call's failure out of the action.
            pass
        return self._result('md_sim', params, future, submitted)

    @action
    async def md_sim_batch(
        self,
        iterations: int | None = None,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> list[CallResult]:
        """Run many MD tool calls at once, in parallel on the partition.

        Args:
            iterations: Number of calls. With a single ``params`` mapping,
                each call gets those parameters; with a list, it must match
                the list's length.
            params: One mapping for every call, or one mapping per call.

        Returns:
            One result per call, in submission order. A failed call is a
            result with ``ok=False``; it never loses the others' results.

        Raises:
            ConfigurationError: If the batch is malformed; nothing is
                submitted then.

        """
        calls = _expand_batch(iterations, params)
        if self._routed(calls):
            prepared = [self._prepare(*_tool_and_arguments(call, self.tool)) for call in calls]
            return list(await asyncio.gather(*(self._run('md_sim_batch', c) for c in prepared)))
        _check_each_once(self.tool, calls)
        loop = asyncio.get_running_loop()
        all_done: asyncio.Future[None] = loop.create_future()
        remaining = len(calls)
        counter_lock = threading.Lock()

        def one_done(_: Future[Any]) -> None:
            nonlocal remaining
            with counter_lock:
                remaining -= 1
                last = remaining == 0
            if last:
                loop.call_soon_threadsafe(_set_done, all_done)

        submitted = time.time()
        # Submitting thousands of tasks takes a while: do it off the loop.
        futures = await asyncio.to_thread(self._submit_many, calls)
        if calls:
            for future in futures:
                future.add_done_callback(one_done)
            await all_done
        return [
            self._result('md_sim_batch', call, future, submitted)
            for call, future in zip(calls, futures, strict=True)
        ]

    def _submit_many(self, calls: Sequence[Mapping[str, Any]]) -> list[Future[Any]]:
        return [self._submit(call) for call in calls]

    @action
    async def status(self) -> DirectorStatus:
        """Report the partition, its slots and the calls queued/running/done."""
        running = 0
        workers = 0
        if self._dfk is not None:
            executor = self._dfk.executors[executor_label(self.partition)]
            managers = await asyncio.to_thread(executor.connected_managers)
            for manager in managers:
                running += manager['tasks']
                workers += manager['worker_count']
        with self._lock:
            in_flight = len(self._in_flight)
            done, failed = self._done, self._failed
        return DirectorStatus(
            director=self.name,
            partition=self.partition.index,
            nodes=list(self.partition.nodes),
            slots=self.workers_per_node * self.partition.size,
            workers_connected=workers,
            queued=max(in_flight - running, 0),
            running=min(running, in_flight),
            done=done,
            failed=failed,
            mpi_nodes_free=self._admission.free,
            mpi_waiting=self._admission.waiting,
            recent_throughput=self._rate.rate(),
            throughput_window=self._rate.window,
        )


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """A call that passed every check: tool, its parameters, MPI resources."""

    tool: Tool
    params: dict[str, Any]
    resources: MPIResources | None


def _tool_and_arguments(call: Mapping[str, Any], default: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(call, Mapping):
        raise ConfigurationError(
            f'each call of a batch must be a mapping of name to value, got {type(call).__name__}',
        )
    arguments = dict(call)
    return arguments.pop('tool', default), arguments


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    """Run ``callback`` on ``loop`` from another thread, unless the loop is gone."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        logger.debug('event loop closed; %s not called', callback)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wait_all(
    futures: Sequence[Future[Any]],
    timeout: float,
) -> tuple[set[Future[Any]], set[Future[Any]]]:
    done, not_done = wait(futures, timeout=timeout)
    return done, not_done


def _check_each_once(tool: str, calls: Sequence[Mapping[str, Any]]) -> None:
    """Check every distinct parameter mapping of a batch once.

    ``md_sim_batch(iterations=N, params={...})`` repeats one mapping N times;
    checking it N times would cost more than submitting the batch.
    """
    seen: set[int] = set()
    for call in calls:
        if id(call) not in seen:
            seen.add(id(call))
            check_params(tool, call)


def _expand_batch(
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
            raise ConfigurationError(
                'md_sim_batch needs iterations=N, or params as a list of one mapping per call',
            )
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
