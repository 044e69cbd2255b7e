"""The Director: an Academy agent that owns one partition of a batch job.

Each Director builds its own Parsl ``DataFlowKernel`` (never the global
``parsl.load``), so several Directors can live in one process, and runs tool
calls on its partition's workers as Academy actions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import math
import pathlib
import pickle
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import wait
from typing import Any

from academy.agent import Agent
from academy.agent import action
from parsl.dataflow.dflow import DataFlowKernel

from actors.common.errors import ConfigurationError
from actors.common.results import CallResult
from actors.common.results import DirectorStatus
from actors.director.command_files import command_outcome
from actors.director.options import DirectorOptions
from actors.director.options import director_name
from actors.director.rate import RateMeter
from actors.execution.executor_app import Call
from actors.execution.executor_app import ExecutorApp
from actors.execution.faults import CLEANUP_TIMEOUT
from actors.execution.faults import LOST_CLEANUP_TIMEOUT
from actors.execution.faults import BlockDoctor
from actors.execution.faults import InterchangeLost
from actors.execution.faults import InterchangeWatch
from actors.execution.faults import ask_interchange
from actors.execution.faults import fail_executor
from actors.execution.faults import interchange_loss
from actors.execution.faults import quiet_interchange_losses
from actors.execution.faults import release_parsl
from actors.execution.faults import watch_parsl_processes
from actors.execution.watchdog import Watchdog
from actors.job.partition import Partition
from actors.job.partition import PartitionRequest
from actors.job.partition import resolve_partition
from actors.site.parsl_config import build_config
from actors.site.parsl_config import executor_label
from actors.site.parsl_config import make_mpi_executor
from actors.site.profile import SiteProfile
from actors.store.journal import FINAL_STATUSES
from actors.store.journal import Journal
from actors.store.journal import final_by_key
from actors.store.journal import journal_path
from actors.store.journal import read_journal
from actors.tools.registry import Tool
from actors.tools.registry import check_params
from actors.tools.registry import get_tool
from actors.tools.resources import RESOURCE_KEYS
from actors.tools.resources import MPIResources
from actors.tools.resources import NodeAdmission
from actors.tools.resources import resolve_resources
from actors.tools.resources import split_resources
from actors.worker.control import STOP_ERROR_TYPES
from actors.worker.control import CancelFiles
from actors.worker.control import Control
from actors.worker.interrupt import run_command_interruptible
from actors.worker.interrupt import run_interruptible
from actors.worker.supervise import run_supervised
from actors.worker.wire import read_outcome

logger = logging.getLogger(__name__)

MAX_BATCH = 1_000_000
INLINE_SUBMIT = 8
"""Batches up to this size are submitted on the event loop, not a thread."""
WATCH_INTERVAL = 1.0
"""Seconds between telling the watchdog about new (replacement) blocks."""

PARSL_RESTARTS = 3
"""How many times a Director replaces a DFK whose interchange died."""

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
        retries: How many times a call whose worker, worker pool or
            interchange was lost is run again; tool errors are never
            retried. A lost interchange also makes the Director replace its
            whole DFK (at most ``PARSL_RESTARTS`` times).
        supervise: Run every call in a child process of its worker, so
            that a tool that crashes (segfault, ``os._exit``) fails its call
            instead of losing the worker. Off by default: forking per call
            costs ~10x in throughput of short calls. Either way ``cancel``
            and ``timeout=`` stop running calls (``actors.worker.interrupt``).
        walltime: The allocation's end and drain margin (default: none).
        journal_sync: When journal commits are fsync'ed: ``after-answer``
            (default), ``before-answer`` or ``off`` (see
            [`SyncMode`][actors.store.journal.SyncMode]); every result is written
            to the file before its caller is answered either way.
        mpi: Allow multi-node (MPI) tools. Their ``MPIExecutor`` (an
            interchange of its own, then a worker pool) starts with the
            first MPI call, so a Director that runs none pays nothing.

    """

    def __init__(
        self,
        partition: Partition | PartitionRequest,
        profile: SiteProfile,
        run_dir: str,
        options: DirectorOptions | None = None,
        **changes: Any,
    ) -> None:
        super().__init__()
        # Checked here: a bad option fails the launch, not the agent's start-up.
        self.options = options = (options or DirectorOptions()).replace(**changes)
        self.partition = partition
        self.profile = profile
        self.run_dir = run_dir
        self.workers_per_node = options.workers_per_node or profile.workers_per_node
        self.tool = options.tool
        self.drain_timeout = options.drain_timeout
        self.name = director_name(partition.index)
        self._dfk: DataFlowKernel | None = None
        self._app: Any = None
        self._call_ids = itertools.count()
        self._in_flight: set[Future[Any]] = set()
        self._lock = threading.Lock()
        self._done = 0
        self._failed = 0
        self.retries = options.retries
        self.supervise = options.supervise
        self.walltime = options.walltime
        self.journal_sync = options.journal_sync
        self.incarnation = uuid.uuid4().hex
        self._journal: Journal | None = None
        self._final: dict[str, dict[str, Any]] = {}
        self._keyed: dict[str, Future[Any]] = {}
        self._watchdog = Watchdog()
        self._cancels = CancelFiles(pathlib.Path(run_dir, 'control', self.name, self.incarnation))
        self._draining = False
        self._background: set[asyncio.Task[None]] = set()
        self.mpi = options.mpi
        self._command_app: Any = None
        self._mpi_app: Any = None
        self._mpi_starting = asyncio.Lock()
        # Sized once the partition is resolved, in agent_on_startup.
        self._admission = NodeAdmission(0)
        self._call_files = itertools.count()
        self._rate = RateMeter()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Replacing a DFK whose interchange died (see _interchange_lost).
        self._interchanges: InterchangeWatch | None = None
        self._parked: list[tuple[Callable[[], None], Callable[[], None]]] = []
        self._lost_dfks: set[DataFlowKernel] = set()
        self._replacing = 0
        self._replacements: set[asyncio.Task[None]] = set()
        self._replace_lock = asyncio.Lock()
        self._parsl_restarts = 0
        self._parsl_broken: InterchangeLost | None = None
        self._stopping = False

    async def agent_on_startup(self) -> None:
        """Open the journal, start the watchdog and the private DataFlowKernel."""
        self.partition, self.run_dir = await asyncio.to_thread(
            resolve_partition, self.partition, self.run_dir
        )
        self._admission = NodeAdmission(self.partition.size)
        self._cancels = CancelFiles(
            pathlib.Path(self.run_dir, 'control', self.name, self.incarnation),
        )
        path = journal_path(self.run_dir, self.name)
        self._final = final_by_key(await asyncio.to_thread(lambda: list(read_journal(path))))
        self._journal = Journal(path, sync=self.journal_sync)
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._watchdog.start)
        try:
            await self._start_parsl(self._watchdog)
        except BaseException:
            await asyncio.to_thread(self._close_journal)
            raise
        self._start_background(self._watch_loop())
        if self.walltime.drain_at is not None:
            self._start_background(self._drain_at_walltime())
        logger.info(
            '%s started on %d node(s): %s',
            self.name,
            self.partition.size,
            ', '.join(self.partition.nodes),
        )

    async def agent_on_shutdown(self) -> None:
        """Drain in-flight calls, then stop the DFK and its workers."""
        # Before any await: an interchange lost from now on is not replaced.
        self._stopping = True
        for task in self._background:
            task.cancel()
        # A replacement under way finishes (a DFK started after a cancel would leak).
        while self._replacements:
            await asyncio.gather(*list(self._replacements), return_exceptions=True)
        # No replacement DFK will come after this: answer what waits for one.
        with self._lock:
            self._parsl_broken = self._parsl_broken or InterchangeLost('the Director stopped')
        self._give_up_parked()
        if self._dfk is None:
            self._close_journal()
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
            if not_done:
                # Parsl cannot cancel a running task: stop the tool processes.
                self._cancels.cancel_all('the Director is shutting down')
                await asyncio.to_thread(_wait_all, list(not_done), 5.0)
        dfk, self._dfk = self._dfk, None
        executors = list(dfk.executors.values())
        lost = any(getattr(e, 'bad_state_is_set', False) for e in executors)
        if self._interchanges is not None:
            self._interchanges.release()
        await asyncio.to_thread(
            release_parsl,
            self._watchdog,
            executors,
            dfk.cleanup,
            cleanup_timeout=LOST_CLEANUP_TIMEOUT if lost else CLEANUP_TIMEOUT,
        )
        await asyncio.to_thread(self._close_journal)
        await asyncio.to_thread(self._cancels.close)
        logger.info('%s stopped', self.name)

    async def _start_parsl(self, watchdog: Watchdog | None) -> None:
        """Start a private DataFlowKernel for the partition and make its apps.

        Args:
            watchdog: Released if the start fails (``None`` on a replacement:
                the Director goes on).

        """
        config = build_config(
            self.partition,
            self.profile,
            pathlib.Path(self.run_dir, 'parsl', self.name),
            workers_per_node=self.workers_per_node,
            control_dir=self._cancels.directory,
        )
        try:
            # Creating a DFK starts the interchange and waits on it: keep it off
            # the event loop that other Directors may share.
            dfk = await asyncio.to_thread(DataFlowKernel, config)
        except BaseException:
            # Executors started before the failure keep their interchanges.
            await asyncio.to_thread(release_parsl, watchdog, config.executors)
            raise
        label = executor_label(self.partition)
        quiet_interchange_losses()
        self._interchanges = InterchangeWatch(self._interchange_lost)
        self._interchanges.watch(dfk.executors[label])
        self._app = self._executor_app(dfk, label, run_interruptible)
        self._supervised_app = self._executor_app(dfk, label, run_supervised)
        self._command_app = self._executor_app(dfk, label, run_command_interruptible)
        # The MPI executor starts again with the first MPI call on this DFK.
        self._mpi_app = None
        self._dfk = dfk

    def _interchange_lost(self, executor: Any, error: InterchangeLost) -> None:
        """An interchange died (on its watch thread): rerun its calls on a new DFK.

        The calls it held fail at once (Parsl would wait for them forever);
        ``_record`` parks each one that may run again until the replacement
        DFK is up. The Director's whole DFK is replaced, also when only the
        MPI executor's interchange died: the simplest state to reason about.
        """
        with self._lock:
            dfk = self._dfk
            if dfk is None or dfk in self._lost_dfks or executor not in dfk.executors.values():
                return
            self._lost_dfks.add(dfk)
            stopping, broken = self._stopping, self._parsl_broken is not None
            replace = not stopping and not broken and self._parsl_restarts < PARSL_RESTARTS
            if replace:
                self._parsl_restarts += 1
                self._replacing += 1
            elif not broken:
                self._parsl_broken = error
        # Failed (and their commands unblocked) before the replacement releases them.
        # A list: an MPI executor may be joining the DFK on another thread.
        for each in list(dfk.executors.values()):
            if getattr(each, 'interchange_proc', None) is not None:
                try:
                    fail_executor(each, error)
                except Exception:
                    logger.exception('%s: failing executor %s failed', self.name, each.label)
        if replace:
            assert self._loop is not None
            _call_soon(self._loop, self._begin_replacement, dfk, error)
        else:
            reason = (
                'the Director is stopping'
                if stopping
                else 'an earlier replacement failed'
                if broken
                else f'it was replaced {PARSL_RESTARTS} times already'
            )
            logger.error('%s: %s; not replaced: %s', self.name, error, reason)
            self._give_up_parked()

    def _begin_replacement(self, lost: DataFlowKernel, error: InterchangeLost) -> None:
        if self._stopping:
            # Shutdown began after the loss was reported: no new DFK.
            with self._lock:
                self._replacing -= 1
                self._parsl_broken = self._parsl_broken or error
            self._give_up_parked()
            return
        # Not a background task: shutdown waits for it rather than cancel it,
        # since a DFK that starts after a cancel would never be stopped.
        task = asyncio.create_task(self._replace_parsl(lost, error))
        self._replacements.add(task)
        task.add_done_callback(self._replacements.discard)

    async def _replace_parsl(self, lost: DataFlowKernel, error: InterchangeLost) -> None:
        """Stop the DFK whose interchange died, start a new one, rerun the parked calls."""
        # One at a time: a replacement DFK can die while the one before is released.
        async with self._replace_lock:
            logger.warning(
                '%s: %s; starting a new DataFlowKernel (replacement %d of at most %d)',
                self.name,
                error,
                self._parsl_restarts,
                PARSL_RESTARTS,
            )
            assert self._interchanges is not None
            self._interchanges.release()
            started, released = await asyncio.gather(
                self._start_parsl(None),
                self._release_lost(lost),
                return_exceptions=True,
            )
        if isinstance(released, BaseException):
            logger.error('%s: stopping the lost DFK failed: %s', self.name, released)
        failed = isinstance(started, BaseException)
        with self._lock:
            self._replacing -= 1
            if failed:
                self._parsl_broken = self._parsl_broken or error
            # Another replacement still to come takes the parked calls.
            parked = [] if failed or self._replacing else self._parked
            if parked:
                self._parked = []
        if failed:
            logger.error('%s: cannot start a new DataFlowKernel: %s', self.name, started)
            self._give_up_parked()
            return
        logger.warning('%s: new DataFlowKernel up; rerunning %d call(s)', self.name, len(parked))
        reruns = [rerun for rerun, _ in parked]
        if len(reruns) <= INLINE_SUBMIT:
            _run_each(reruns)
        else:
            # Thousands of submits would hold the event loop (see _run_calls).
            await asyncio.to_thread(_run_each, reruns)

    async def _release_lost(self, lost: DataFlowKernel) -> None:
        """Stop a lost DFK's executors and processes (its cleanup gets a short time)."""
        # An MPI executor still joining it finishes first: shutting it down
        # mid-start would close its command socket under its start-up command.
        async with self._mpi_starting:
            pass
        await asyncio.to_thread(
            release_parsl,
            None,
            list(lost.executors.values()),
            lost.cleanup,
            cleanup_timeout=LOST_CLEANUP_TIMEOUT,
        )

    def _park(self, rerun: Callable[[], None], give_up: Callable[[], None]) -> bool:
        """Rerun a call of a lost interchange on the next DFK; False if there is none."""
        with self._lock:
            if self._parsl_broken is not None:
                return False
            if self._replacing:
                self._parked.append((rerun, give_up))
                return True
        # The replacement is already up (this call failed after it started).
        rerun()
        return True

    def _give_up_parked(self) -> None:
        """Answer every parked call with its loss (no DFK will run it)."""
        with self._lock:
            parked, self._parked = self._parked, []
        for _, give_up in parked:
            give_up()

    async def _start_mpi(self) -> None:
        """Add the MPI executor to the DFK on the first MPI call.

        Not at start-up: an idle interchange polls its sockets, and every
        Director would pay for one whether or not it runs MPI tools.
        """
        async with self._mpi_starting:
            # While the DFK is replaced the call is refused (see _submit) and waits.
            if self._mpi_app is not None or self._replacing:
                return
            dfk = self._dfk
            assert dfk is not None, 'Director has not started'
            executor = make_mpi_executor(
                self.partition,
                self.profile,
                pathlib.Path(self.run_dir, 'parsl', self.name).resolve(),
                self._cancels.directory,
            )
            logger.info('%s: starting the MPI executor for its first MPI call', self.name)
            try:
                await asyncio.to_thread(dfk.add_executors, [executor])
            except Exception:
                # Failed along with the DFK it was joining (its start-up command
                # was unblocked): the call waits for the new DFK.
                if self._dfk is dfk and not self._replacing:
                    raise
                logger.info('%s: the MPI executor started on a lost DFK', self.name)
            if self._dfk is not dfk or self._replacing:
                # Lost while it started: it goes (the call waits for the new DFK).
                await asyncio.to_thread(release_parsl, None, [executor])
                return
            assert self._interchanges is not None
            self._interchanges.watch(executor)
            self._mpi_app = self._executor_app(dfk, executor.label, run_command_interruptible)

    def _executor_app(
        self,
        dfk: DataFlowKernel,
        label: str,
        func: Callable[..., bytes],
    ) -> ExecutorApp:
        """Calls of ``func`` straight to ``dfk``'s executor ``label`` (see ``actors.execution.executor_app``)."""
        return ExecutorApp(
            dfk.executors[label],
            dfk.submitter_lock,
            func,
            retries=self.retries,
            stopped_on_purpose=self._stopped_on_purpose,
        )

    def _stopped_on_purpose(self, call: Call) -> bool:
        return self._cancels.stopped(_control_of(call)) is not None

    def _close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()

    def _start_background(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_loop(self) -> None:
        """Keep the watchdog told about the interchange and every block."""
        doctor, doctored = BlockDoctor(), None
        while self._dfk is not None:
            executor = self._dfk.executors[executor_label(self.partition)]
            if executor is not doctored:
                # A replacement DFK's blocks are numbered from 0 again.
                doctor, doctored = BlockDoctor(), executor
            try:
                # Every executor's processes: the MPI executor has an interchange
                # and a block of its own.
                for each in list(self._dfk.executors.values()):
                    await asyncio.to_thread(watch_parsl_processes, self._watchdog, each)
                # A lost interchange never answers: not asked, or not waited for.
                managers = await ask_interchange(executor, executor.connected_managers)
                if managers is not None:
                    await asyncio.to_thread(doctor.check, executor, managers)
            except Exception:
                logger.exception('%s: checking the Parsl processes failed', self.name)
            await asyncio.sleep(WATCH_INTERVAL)

    async def _drain_at_walltime(self) -> None:
        """Before the allocation ends: admit nothing more, stop what still runs."""
        assert self.walltime.drain_at is not None
        await asyncio.sleep(max(0.0, self.walltime.drain_at - time.time()))
        self._draining = True
        with self._lock:
            running = len(self._in_flight)
        logger.warning(
            '%s draining: the allocation ends in %.0fs; cancelling %d running call(s)',
            self.name,
            self.walltime.margin,
            running,
        )
        self._cancels.cancel_all('walltime: the allocation is about to end')

    def _submit(
        self,
        params: Mapping[str, Any],
        timeout: float | None = None,
        call_key: str | None = None,
        *,
        tool: str | None = None,
        resources: MPIResources | None = None,
        recorder: Callable[[Future[Any]], None] | None = None,
    ) -> Future[Any]:
        """Submit one call to Parsl.

        ``recorder`` (called once the call is done) must call ``_settled``;
        without one the call is counted by ``_finished``.
        """
        assert self._app is not None, 'Director has not started'
        name = tool or self.tool
        future: Future[Any]
        control = self._cancels.control(call_key, timeout)
        refusal = self._parsl_refusal(resources)
        if refusal is not None:
            # Parked by the recorder (or _run) until the new DFK is up, or lost.
            future = Future()
            future.set_exception(refusal)
        elif tool is not None and get_tool(name).kind != 'python':
            future = self._submit_command(name, params, control, resources)
        else:
            app = self._supervised_app if self.supervise else self._app
            # Parsl pickles the arguments at submission: no copy needed.
            future = app(name, params, control)
        if call_key is not None:
            future.add_done_callback(lambda _: self._cancels.forget(call_key, control))
        with self._lock:
            self._in_flight.add(future)
        # One callback per call: on the fast path the recorder also counts it.
        future.add_done_callback(recorder or self._finished)
        return future

    def _parsl_refusal(self, resources: MPIResources | None) -> InterchangeLost | None:
        """Why no call can go to Parsl now (its DFK is lost or being replaced), if so."""
        if self._parsl_broken is not None:
            return self._parsl_broken
        if self._replacing or (resources is not None and self._mpi_app is None):
            return InterchangeLost(f'{self.name}: its DataFlowKernel is being replaced')
        return None

    def _submit_command(
        self,
        name: str,
        params: Mapping[str, Any],
        control: Control,
        resources: MPIResources | None,
    ) -> Future[Any]:
        """Run a command tool's command line; resolve to the same outcome as ``run_tool``."""
        calls = pathlib.Path(self.run_dir, 'parsl', self.name, 'calls')
        calls.mkdir(parents=True, exist_ok=True)
        stem = calls / f'{name}-{next(self._call_files)}'
        meta, stdout, stderr = (f'{stem}.{ext}' for ext in ('json', 'out', 'err'))
        files = {'meta': meta, 'out_file': stdout, 'err_file': stderr}
        if resources is None:
            app_future = self._command_app(name, dict(params), control, **files)
        else:
            app_future = self._mpi_app(
                name,
                dict(params),
                control,
                **files,
                parsl_resource_specification=resources.parsl_spec(),
            )
        outcome: Future[Any] = Future()
        # _result reads the attempts (and why a lost call was lost) from it.
        outcome.call = app_future  # type: ignore[attr-defined]

        def settle(done: Future[Any]) -> None:
            if outcome.done():
                return
            if done.cancelled():
                outcome.cancel()
                return
            if interchange_loss(done.exception()) is not None:
                # No outcome to read: the call runs again on a new DFK (see _run).
                outcome.set_exception(done.exception())  # type: ignore[arg-type]
                return
            try:
                value = outcome_of(done)
            except Exception as e:
                # The call must still be answered: a result saying why, not a hang.
                logger.exception('%s: cannot read the outcome of command tool %s', self.name, name)
                if not outcome.done():
                    outcome.set_exception(e)
                return
            if not outcome.done():
                outcome.set_result(value)

        def outcome_of(done: Future[Any]) -> dict[str, Any]:
            error = done.exception()
            finished = None if error is not None else _outcome(done)
            if error is not None:
                stop = self._cancels.stopped(control)
            elif finished['status'] in STOP_ERROR_TYPES:
                stop = (finished['status'], finished['error_message'])
            else:
                stop = None
            value = command_outcome(name, meta, stdout, stderr, finished=finished, error=error)
            if stop is not None:
                value.update(
                    ok=False,
                    value=None,
                    status=stop[0],
                    error_type=STOP_ERROR_TYPES[stop[0]],
                    error_message=stop[1],
                )
            return value

        # A cancelled outcome (its action was cancelled) leaves the Parsl call
        # alone: a submitted call cannot be cancelled; calls stop through
        # their cancel files (actors.worker.control).
        app_future.add_done_callback(settle)
        return outcome

    def _finished(self, future: Future[Any]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None and interchange_loss(error) is not None:
            # Run again on a new DFK, or counted by _run once it gives up.
            with self._lock:
                self._in_flight.discard(future)
            return
        ok = not future.cancelled() and error is None and _outcome(future)['ok']
        self._settled(future, ok)

    def _settled(self, future: Future[Any], ok: bool) -> None:
        """Count a finished call (for ``status``) and forget it."""
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
        call_key: str | None = None,
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
            # Shared by the calls of a batch made with one mapping (not copied per call).
            params=params if isinstance(params, dict) else dict(params),
            ok=False,
            start=submitted,
            call_key=call_key,
            resources=None if resources is None else resources.to_dict(),
        )
        call = _call_of(future)
        if call is not None:
            result.attempts = call.attempts
        if future.cancelled():
            result.end = time.time()
            result.status = 'cancelled'
            result.error_type = 'Cancelled'
            result.error_message = 'the call was cancelled before it finished'
            return result
        error = future.exception()
        stopped = None
        if error is not None and call is not None:
            stopped = self._cancels.stopped(_control_of(call))
        if stopped is not None:
            # Its worker was killed to stop it (actors.worker.interrupt).
            result.end = time.time()
            result.status, result.error_message = stopped
            result.error_type = STOP_ERROR_TYPES[stopped[0]]
            return result
        if error is not None:
            # The call never returned from a worker (lost worker, pool, ...)
            # even after its retries.
            result.end = time.time()
            result.status = 'lost'
            result.error_type = type(error).__name__
            result.error_message = (
                f'{error} (after {result.attempts} attempt(s); '
                f'a lost worker or pool is retried {self.retries} time(s))'
            )
            return result
        outcome = _outcome(future)
        result.ok = outcome['ok']
        result.node = outcome['node']
        result.worker = outcome['worker']
        result.pid = outcome['pid']
        if outcome['start'] is not None:
            # Else the outcome is unreadable: when the call started is unknown.
            result.start = outcome['start']
        result.end = outcome['end']
        result.value = outcome['value']
        result.error_type = outcome['error_type']
        result.error_message = outcome['error_message']
        result.status = outcome.get('status') or ('ok' if outcome['ok'] else 'failed')
        result.nodes = outcome.get('nodes')
        return result

    def _refused(
        self,
        action_name: str,
        params: Mapping[str, Any],
        call_key: str | None,
        reason: str,
        tool: str | None = None,
    ) -> CallResult:
        now = time.time()
        return CallResult(
            call_id=f'{self.name}-{next(self._call_ids)}',
            director=self.name,
            partition=self.partition.index,
            action=action_name,
            tool=tool or self.tool,
            params=dict(params),
            ok=False,
            start=now,
            end=now,
            call_key=call_key,
            status='refused',
            error_type='WalltimeExceeded',
            error_message=reason,
        )

    def _journaled(self, result: CallResult, out: Future[CallResult]) -> None:
        """Resolve ``out`` with ``result`` once the journal has committed it."""
        assert self._journal is not None

        def durable(error: BaseException | None) -> None:
            if error is not None:
                out.set_exception(error)
                return
            self._remember(result)
            out.set_result(result)

        self._journal.write(result, durable)

    def _remember(self, result: CallResult) -> None:
        """A journaled final result answers later calls with its key."""
        if result.call_key and result.status in FINAL_STATUSES:
            self._final[result.call_key] = result.to_dict()

    def _start_call(self, batch: _Batch, index: int, timeout: float | None) -> None:
        """Submit (or replay, share or refuse) call ``index`` of ``batch``."""
        params, call_key = batch.calls[index], batch.keys[index]
        early = self._answer_early(batch.action_name, params, call_key, timeout)
        if early is not None:
            early.add_done_callback(functools.partial(batch.answer_from, index))
            return
        # Only a keyed call needs a future of its own: a twin sent while it
        # runs shares it (see _claim_key).
        shared: Future[CallResult] | None = None if call_key is None else Future()
        batch.add()
        self._submit_recorded(batch, index, shared, 0)
        # Claimed once submitted: a call that could not be submitted must not
        # leave its key's twins waiting.
        if shared is not None:
            self._claim_key(call_key, shared)

    def _submit_recorded(
        self,
        batch: _Batch,
        index: int,
        shared: Future[CallResult] | None,
        reruns: int,
    ) -> None:
        """Submit call ``index`` of ``batch``; ``_record`` journals (or reruns) it."""
        self._submit(
            batch.calls[index],
            batch.timeout,
            batch.keys[index],
            recorder=functools.partial(self._record, batch, index, shared, reruns),
        )

    def _record(
        self,
        batch: _Batch,
        index: int,
        shared: Future[CallResult] | None,
        reruns: int,
        done: Future[Any],
        *,
        may_rerun: bool = True,
    ) -> None:
        """Parsl finished call ``index`` of ``batch``: journal its result.

        A call whose interchange died runs again on the replacement DFK (up
        to ``retries`` times); ``reruns`` counts those runs.
        """
        call_key = batch.keys[index]
        error = None if done.cancelled() else done.exception()
        again = None if error is None or not may_rerun else self._rerun_count(done, error, reruns)
        if again is not None:
            with self._lock:
                self._in_flight.discard(done)
            rerun = functools.partial(
                self._rerun, batch, index, shared, again, done, previous=reruns
            )
            give_up = functools.partial(
                self._record, batch, index, shared, reruns, done, may_rerun=False
            )
            if self._park(rerun, give_up):
                return
        try:
            result = self._result(
                batch.action_name,
                batch.calls[index],
                done,
                batch.submitted_at,
                call_key,
            )
            result.attempts += reruns
        except Exception as e:  # pragma: no cover (a bug, but answer the caller)
            logger.exception('%s: cannot record call %s', self.name, call_key)
            self._settled(done, False)
            batch.fail(e)
            return
        self._settled(done, result.ok)
        batch.journal(index, result, shared)

    def _rerun(
        self,
        batch: _Batch,
        index: int,
        shared: Future[CallResult] | None,
        reruns: int,
        lost: Future[Any],
        *,
        previous: int,
    ) -> None:
        """Run call ``index`` of ``batch`` again; if it cannot be submitted, record its loss."""
        try:
            self._submit_recorded(batch, index, shared, reruns)
        except Exception:
            logger.exception('%s: cannot rerun call %d of a lost interchange', self.name, index)
            self._record(batch, index, shared, previous, lost, may_rerun=False)

    def _rerun_count(self, future: Future[Any], error: BaseException, reruns: int) -> int | None:
        """The call's rerun count if it goes to a replacement DFK, else ``None``.

        Calls held by an interchange that died run again up to ``retries``
        times; calls refused by its executor afterwards (``InterchangeLost``
        itself) never ran, always wait for the replacement and count no
        rerun. A call stopped on purpose (cancel, timeout) never runs again.
        """
        call = _call_of(future)
        if call is not None and self._stopped_on_purpose(call):
            return None
        if isinstance(error, InterchangeLost):
            return reruns
        if reruns < self.retries and interchange_loss(error) is not None:
            return reruns + 1
        return None

    def _answer_early(
        self,
        action_name: str,
        params: Mapping[str, Any],
        call_key: str | None,
        timeout: float | None,
        tool: str | None = None,
    ) -> Future[CallResult] | None:
        """A call that must not run: its journaled result, its running twin, or a refusal."""
        if call_key is not None:
            record = self._final.get(call_key)
            if record is not None:
                replayed: Future[CallResult] = Future()
                replayed.set_result(CallResult.from_dict(record))
                return replayed
            with self._lock:
                running = self._keyed.get(call_key)
            if running is not None:
                return running
        reason = 'the Director is draining' if self._draining else None
        reason = reason or self.walltime.refusal(_expected_seconds(params, timeout))
        if reason is None:
            return None
        refused: Future[CallResult] = Future()
        self._journaled(self._refused(action_name, params, call_key, reason, tool), refused)
        return refused

    def _claim_key(self, call_key: str | None, out: Future[CallResult]) -> None:
        """Calls with this key share ``out`` until it is answered."""
        if call_key is not None:
            with self._lock:
                self._keyed[call_key] = out
            out.add_done_callback(lambda _: self._forget_key(call_key, out))

    def _forget_key(self, call_key: str, out: Future[CallResult]) -> None:
        with self._lock:
            if self._keyed.get(call_key) is out:
                del self._keyed[call_key]

    async def _run_calls(
        self,
        action_name: str,
        calls: Sequence[Mapping[str, Any]],
        keys: Sequence[str | None],
        timeout: float | None,
    ) -> list[CallResult]:
        batch = _Batch(self, action_name, calls, keys, asyncio.get_running_loop(), timeout=timeout)
        submit = functools.partial(self._submit_many, batch, timeout)
        # Submitting thousands of tasks takes a while: do it off the loop; a
        # few submits cost less than the hop to a thread and back.
        if len(calls) <= INLINE_SUBMIT:
            submit()
        else:
            await asyncio.to_thread(submit)
        batch.submitted()
        return await batch.done

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
        if not self.mpi:
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

    async def _run(
        self,
        action_name: str,
        call: _Prepared,
        call_key: str | None = None,
        timeout: float | None = None,
    ) -> CallResult:
        """Submit a prepared call (MPI calls once their nodes are free); await its result."""
        early = self._answer_early(action_name, call.params, call_key, timeout, call.tool.name)
        if early is not None:
            return await asyncio.wrap_future(early)
        journaled: Future[CallResult] = Future()
        self._claim_key(call_key, journaled)
        reruns = 0
        while True:
            try:
                future, submitted = await self._submit_prepared(call, call_key, timeout)
            except BaseException as e:
                journaled.set_exception(e)
                raise
            try:
                await asyncio.wrap_future(future)
            except Exception:
                # Reported in the result; keep the call's failure out of the action.
                pass
            error = None if future.cancelled() else future.exception()
            if interchange_loss(error) is None:
                break
            assert error is not None
            again = self._rerun_count(future, error, reruns)
            if again is not None and await self._replacement_up():
                reruns = again
                continue
            self._settled(future, False)
            break
        result = self._result(
            action_name,
            call.params,
            future,
            submitted,
            call_key,
            tool=call.tool.name,
            resources=call.resources,
        )
        result.attempts += reruns
        self._journaled(result, journaled)
        return await asyncio.wrap_future(journaled)

    async def _submit_prepared(
        self,
        call: _Prepared,
        call_key: str | None,
        timeout: float | None,
    ) -> tuple[Future[Any], float]:
        """Submit a prepared call, an MPI call once its nodes are free; returns it and when."""
        resources = call.resources
        if resources is None:
            submitted = time.time()
            return self._submit(call.params, timeout, call_key, tool=call.tool.name), submitted
        await self._start_mpi()
        # Parsl's MPI mode is only ever handed calls whose nodes are free.
        nodes = resources.num_nodes
        await self._admission.acquire(nodes)
        loop = asyncio.get_running_loop()
        try:
            submitted = time.time()
            future = self._submit(
                call.params,
                timeout,
                call_key,
                tool=call.tool.name,
                resources=resources,
            )
        except BaseException:
            self._admission.release(nodes)
            raise
        future.add_done_callback(lambda _: _call_soon(loop, self._admission.release, nodes))
        return future, submitted

    async def _replacement_up(self) -> bool:
        """Wait for the DFK that replaces a lost one; False if none will come."""
        loop = asyncio.get_running_loop()
        up: asyncio.Future[bool] = loop.create_future()
        parked = self._park(
            functools.partial(_call_soon, loop, _resolve, up, True),
            functools.partial(_call_soon, loop, _resolve, up, False),
        )
        return parked and await up

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
        from actors.tools.schemas import validate_arguments

        _check_timeout(timeout)
        _check_key(call_key)
        parsed = validate_arguments(name, arguments)
        return await self._run('call_tool', self._prepare(name, parsed), call_key, timeout)

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
        _check_timeout(timeout)
        _check_key(call_key)
        if self._routed([params]):
            name, arguments = _tool_and_arguments(params, self.tool)
            return await self._run('md_sim', self._prepare(name, arguments), call_key, timeout)
        check_params(self.tool, params)
        _check_serializable([params])
        (result,) = await self._run_calls('md_sim', [params], [call_key], timeout)
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
        _check_timeout(timeout)
        calls = _expand_batch(iterations, params)
        keys = _batch_keys(len(calls), call_keys, batch_key)
        if self._routed(calls):
            prepared = [self._prepare(*_tool_and_arguments(call, self.tool)) for call in calls]
            return list(
                await asyncio.gather(
                    *(
                        self._run('md_sim_batch', call, key, timeout)
                        for call, key in zip(prepared, keys, strict=True)
                    ),
                ),
            )
        _check_each_once(self.tool, calls)
        _check_serializable(calls)
        return await self._run_calls('md_sim_batch', calls, keys, timeout)

    @action
    async def cancel(
        self,
        call_key: str | None = None,
        *,
        batch_key: str | None = None,
    ) -> int:
        """Stop running or queued calls: their tool process is killed.

        The stopped calls answer with a ``cancelled`` result (journaled);
        their worker slots are free again at once.

        Args:
            call_key: Key of one call.
            batch_key: Key given to ``md_sim_batch``: cancels its calls.

        Returns:
            How many calls were told to stop.

        Raises:
            ConfigurationError: If neither or both keys are given.

        """
        if (call_key is None) == (batch_key is None):
            raise ConfigurationError('cancel needs exactly one of call_key=... or batch_key=...')
        _check_key(call_key if call_key is not None else batch_key)
        if call_key is not None:
            return self._cancels.cancel(call_key, 'cancelled by the caller')
        return self._cancels.cancel_prefix(f'{batch_key}/', 'cancelled by the caller')

    def _submit_many(self, batch: _Batch, timeout: float | None) -> None:
        for index in range(len(batch.calls)):
            self._start_call(batch, index, timeout)

    @action
    async def status(self) -> DirectorStatus:
        """Report the partition, its slots and the calls queued/running/done."""
        running = 0
        workers = 0
        if self._dfk is not None:
            executor = self._dfk.executors[executor_label(self.partition)]
            # A lost interchange never answers (a replacement is on its way).
            managers = await ask_interchange(executor, executor.connected_managers) or []
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
            incarnation=self.incarnation,
            draining=self._draining,
            walltime_end=self.walltime.end,
            mpi_nodes_free=self._admission.free,
            mpi_waiting=self._admission.waiting,
            recent_throughput=self._rate.rate(),
            throughput_window=self._rate.window,
        )


class _Batch:
    """The calls of one action: their results in order, answered all at once.

    One record per action instead of a future per call: a no-op call costs
    about as much as the objects made for it (allocation and garbage
    collection), so a 3000-call batch must not make 3000 futures.

    The caller of a batch is answered when its last result is committed, so
    only that one is urgent; the others may share a later group commit (see
    ``Journal.write``). The journal count starts at one for the submission
    itself, so that the calls that finish while later ones are still being
    submitted never look like the last.

    Args:
        director: The Director that runs the calls (and journals them).
        action_name: The action that issued the calls.
        calls: Each call's tool parameters.
        keys: Each call's key (or ``None``).
        loop: The event loop of the action that awaits ``done``.
        timeout: Seconds each call may run (``None``: no limit).

    """

    def __init__(
        self,
        director: Director,
        action_name: str,
        calls: Sequence[Mapping[str, Any]],
        keys: Sequence[str | None],
        loop: asyncio.AbstractEventLoop,
        *,
        timeout: float | None = None,
    ) -> None:
        size = len(calls)
        self._director = director
        self.action_name = action_name
        self.calls = calls
        self.keys = keys
        self.timeout = timeout
        self.submitted_at = time.time()
        self.results: list[CallResult | None] = [None] * size
        self.done: asyncio.Future[list[CallResult]] = loop.create_future()
        self._loop = loop
        # Two locks: a commit on the caller's thread answers from inside journal().
        self._lock = threading.Lock()
        self._answer_lock = threading.Lock()
        self._unanswered = size
        self._unjournaled = 1
        if size == 0:
            self.done.set_result([])

    def add(self) -> None:
        """One more call will be journaled."""
        with self._lock:
            self._unjournaled += 1

    def journal(self, index: int, result: CallResult, shared: Future[CallResult] | None) -> None:
        """Journal call ``index``'s result, urgently if it is the last one awaited."""
        journal = self._director._journal
        assert journal is not None
        durable = functools.partial(self._journaled, index, result, shared)
        # Queued under the lock: the last result must not be committed before
        # an earlier one is queued, or that one would linger and delay the caller.
        with self._lock:
            self._unjournaled -= 1
            journal.write(result, durable, urgent=self._unjournaled == 0)

    def submitted(self) -> None:
        """Every call is submitted: commit at once if all results are queued."""
        with self._lock:
            self._unjournaled -= 1
            last = self._unjournaled == 0
        journal = self._director._journal
        if last and journal is not None:
            journal.flush()

    def _journaled(
        self,
        index: int,
        result: CallResult,
        shared: Future[CallResult] | None,
        error: BaseException | None,
    ) -> None:
        if error is not None:
            if shared is not None:
                shared.set_exception(error)
            self.fail(error)
            return
        self._director._remember(result)
        if shared is not None:
            shared.set_result(result)
        self.answer(index, result)

    def answer_from(self, index: int, future: Future[CallResult]) -> None:
        """Call ``index`` is answered by another call's future (replay, twin)."""
        error = future.exception()
        if error is not None:
            self.fail(error)
        else:
            self.answer(index, future.result())

    def answer(self, index: int, result: CallResult) -> None:
        """Call ``index`` has its (journaled) result."""
        self.results[index] = result
        with self._answer_lock:
            self._unanswered -= 1
            last = self._unanswered == 0
        if last:
            _call_soon(self._loop, _resolve, self.done, self.results)

    def fail(self, error: BaseException) -> None:
        """A result could not be journaled: the action fails with ``error``."""
        _call_soon(self._loop, _reject, self.done, error)


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


def _run_each(callables: Sequence[Callable[[], None]]) -> None:
    for each in callables:
        each()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    """Run ``callback`` on ``loop`` from another thread, unless the loop is gone."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        logger.debug('event loop closed; %s not called', callback)


def _call_of(future: Future[Any]) -> Call | None:
    """The Parsl call behind a call's future (a command tool's outcome has one), if any."""
    if isinstance(future, Call):
        return future
    return vars(future).get('call')


def _control_of(call: Call) -> Control:
    # Every worker function the Director runs takes (tool, params, control, ...).
    return call.args[2]


def _outcome(future: Future[Any]) -> dict[str, Any]:
    """What a finished call's worker function returned, loaded once per future.

    A routed call is counted (``_finished``) and recorded (``_result``) from
    the same future: a big result is not loaded twice.
    """
    loaded = vars(future)
    outcome = loaded.get('_loaded_outcome')
    if outcome is None:
        outcome = loaded['_loaded_outcome'] = read_outcome(future.result())
    return outcome


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


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


def _expected_seconds(params: Mapping[str, Any], timeout: float | None) -> float | None:
    """How long a call declares it takes: its timeout, else its ``duration``."""
    if timeout is not None:
        return timeout
    duration = params.get('duration')
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        return float(duration)
    return None


def _check_timeout(timeout: Any) -> None:
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f'timeout must be a number of seconds > 0 (or None), got {timeout!r}',
        )


def _check_serializable(calls: Sequence[Mapping[str, Any]]) -> None:
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


def _check_key(key: Any) -> None:
    if key is None:
        return
    if not isinstance(key, str) or not key or len(key) > 1000:
        raise ConfigurationError(
            f'a call key must be a non-empty string of at most 1000 characters, got {key!r:.80}',
        )


def _batch_keys(
    count: int,
    call_keys: Sequence[str] | None,
    batch_key: str | None,
) -> list[str | None]:
    if call_keys is not None and batch_key is not None:
        raise ConfigurationError('give call_keys=[...] or batch_key=..., not both')
    if batch_key is not None:
        _check_key(batch_key)
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
        _check_key(key)
    if len(set(call_keys)) != len(call_keys):
        raise ConfigurationError('call_keys must be unique within a batch')
    return list(call_keys)


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
