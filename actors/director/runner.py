"""The call runner: submission, answers from the journal, and reruns on loss.

Two paths, one rerun rule (``rerun_count``) and one place that waits for a
replacement DFK (``DfkHost.park``):

* the **fast path** (``run_batch``): calls of the Director's default python
  tool, the bulk of the work. No coroutine or future per call: each call's
  done-callback (``_record``) journals it into its ``Batch``, and a call of a
  lost interchange is parked with callbacks that rerun or give up.
* the **routed path** (``run``): calls that name a tool or MPI resources. One
  coroutine per call, which awaits the MPI node admission and then its
  result; a lost call awaits ``Replacement.up`` and is sent again.

They stay two because the fast path's per-call cost is the throughput
benchmark's: a coroutine per call there costs more than the call itself,
while an MPI call must wait for its nodes in a coroutine anyway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from actors.common.loop import call_soon
from actors.common.results import CallResult
from actors.director.admission import NodeAdmission
from actors.director.admission import declared_duration
from actors.director.batch import Batch
from actors.director.checks import Prepared
from actors.director.command_files import CommandFiles
from actors.director.command_files import command_result
from actors.director.context import DirectorContext
from actors.director.dfk_host import DfkHost
from actors.director.drain import WalltimeDrain
from actors.director.ledger import Ledger
from actors.director.outcomes import Outcomes
from actors.director.outcomes import call_of
from actors.director.outcomes import outcome
from actors.director.replacement import INLINE_SUBMIT
from actors.execution.executor_app import TaskNotSent
from actors.execution.interchange import InterchangeLost
from actors.execution.interchange import interchange_loss
from actors.tools.registry import get_tool
from actors.tools.resources import MPIResources
from actors.worker.control import CancelFiles
from actors.worker.control import Control

logger = logging.getLogger(__name__)


class CallRunner:
    """Runs one Director's calls on its DFK and journals their results.

    Args:
        context: The Director's name (for logs), the tool of calls that name
            none, whether python tools run forked in their worker
            (``supervise``), and the reruns of a call whose worker, pool or
            interchange was lost.
        host: The DFK host (apps, parking).
        ledger: Journal, keys and counters.
        outcomes: Builds the results.
        cancels: The Director's cancel files.
        drain: Walltime refusals.
        admission: Free nodes for MPI calls.
        command_files: Where command calls write their files.

    """

    def __init__(
        self,
        context: DirectorContext,
        *,
        host: DfkHost,
        ledger: Ledger,
        outcomes: Outcomes,
        cancels: CancelFiles,
        drain: WalltimeDrain,
        admission: NodeAdmission,
        command_files: CommandFiles,
    ) -> None:
        self.name = context.name
        self.tool = context.tool
        self.supervise = context.options.supervise
        self.retries = context.retries
        self.host = host
        self.ledger = ledger
        self.outcomes = outcomes
        self.cancels = cancels
        self.drain = drain
        self.admission = admission
        self.command_files = command_files
        self.fast_calls = 0
        """Calls that took the fast path (its status reports them)."""

    # Submission (both paths).

    def submit(
        self,
        params: Mapping[str, Any],
        timeout: float | None = None,
        call_key: str | None = None,
        *,
        tool: str | None = None,
        resources: MPIResources | None = None,
        recorder: Callable[[Future[Any]], None] | None = None,
        mpi_env: Mapping[str, str] | None = None,
    ) -> Future[Any]:
        """Submit one call to Parsl.

        ``recorder`` (called once the call is done) must settle it in the
        ledger; without one the call is counted by ``_finished``.
        """
        host = self.host
        assert host.app is not None, 'Director has not started'
        name = tool or self.tool
        future: Future[Any]
        control = self.cancels.control(call_key, timeout)
        refusal = host.refusal(resources is not None)
        if refusal is not None:
            # Parked by the recorder (or run) until the new DFK is up, or lost.
            future = Future()
            future.set_exception(refusal)
        elif tool is not None and get_tool(name).kind != 'python':
            future = self._submit_command(name, params, control, resources, mpi_env)
        else:
            app = host.supervised_app if self.supervise else host.app
            assert app is not None
            # Parsl pickles the arguments at submission: no copy needed.
            future = app(name, params, control)
        if call_key is not None:
            future.add_done_callback(lambda _: self.cancels.forget(call_key, control))
        self.ledger.track(future, declared_duration(params, timeout))
        # One callback per call: on the fast path the recorder also counts it.
        future.add_done_callback(recorder or self._finished)
        return future

    def _submit_command(
        self,
        name: str,
        params: Mapping[str, Any],
        control: Control,
        resources: MPIResources | None,
        mpi_env: Mapping[str, str] | None = None,
    ) -> Future[Any]:
        """Run a command tool's command line; resolve to the same outcome as ``run_tool``."""
        files = self.command_files.next(name)
        if resources is None:
            app = self.host.command_app
            assert app is not None
            app_future = app(name, dict(params), control, **files)
        else:
            app = self.host.mpi_app
            assert app is not None
            app_future = app(
                name,
                dict(params),
                control,
                **files,
                parsl_resource_specification=resources.parsl_spec(),
                mpi_env=dict(mpi_env or {}),
            )
        return command_result(app_future, name, files, control, self.cancels)

    def _finished(self, future: Future[Any]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None and interchange_loss(error) is not None:
            # Run again on a new DFK, or counted by run once it gives up.
            self.ledger.untrack(future)
            return
        ok = not future.cancelled() and error is None and outcome(future)['ok']
        self.ledger.settled(future, ok)

    def rerun_count(self, future: Future[Any], error: BaseException, reruns: int) -> int | None:
        """The call's rerun count if it goes to a replacement DFK, else ``None``.

        Calls held by an interchange that died run again up to ``retries``
        times; calls refused by its executor afterwards (``InterchangeLost``
        itself) never ran, always wait for the replacement and count no
        rerun; a call its dead interchange never took (``TaskNotSent``, sent
        before the loss was noticed) runs again, counted. A call stopped on
        purpose (cancel, timeout) never runs again.
        """
        call = call_of(future)
        if call is not None and self.outcomes.stopped_on_purpose(call):
            return None
        if isinstance(error, InterchangeLost):
            return reruns
        if reruns < self.retries and (
            interchange_loss(error) is not None
            # Never sent (its interchange died before the Director noticed): it never ran.
            or isinstance(error, TaskNotSent)
        ):
            return reruns + 1
        return None

    def answer_early(
        self,
        action_name: str,
        params: Mapping[str, Any],
        call_key: str | None,
        timeout: float | None,
        tool: str | None = None,
    ) -> Future[CallResult] | None:
        """A call that must not run: its journaled result, its running twin, or a refusal."""
        if call_key is not None:
            replayed = self.ledger.replayed(call_key)
            if replayed is not None:
                answered: Future[CallResult] = Future()
                answered.set_result(replayed)
                return answered
            running = self.ledger.running(call_key)
            if running is not None:
                return running
        reason = self.drain.refusal(params, timeout)
        if reason is None:
            return None
        refused: Future[CallResult] = Future()
        self.ledger.answer(
            self.outcomes.refused(action_name, params, call_key, reason, tool),
            refused,
        )
        return refused

    # The fast path.

    async def run_batch(
        self,
        action_name: str,
        calls: Sequence[Mapping[str, Any]],
        keys: Sequence[str | None],
        timeout: float | None,
    ) -> list[CallResult]:
        """Run checked calls of the default tool; their results in order."""
        self.fast_calls += len(calls)
        batch = Batch(
            self.ledger,
            action_name,
            calls,
            keys,
            asyncio.get_running_loop(),
            timeout=timeout,
        )
        submit = functools.partial(self._submit_many, batch, timeout)
        # Submitting thousands of tasks takes a while: do it off the loop; a
        # few submits cost less than the hop to a thread and back.
        if len(calls) <= INLINE_SUBMIT:
            submit()
        else:
            await asyncio.to_thread(submit)
        batch.submitted()
        return await batch.done

    def _submit_many(self, batch: Batch, timeout: float | None) -> None:
        for index in range(len(batch.calls)):
            self._start_call(batch, index, timeout)

    def _start_call(self, batch: Batch, index: int, timeout: float | None) -> None:
        """Submit (or replay, share or refuse) call ``index`` of ``batch``."""
        params, call_key = batch.calls[index], batch.keys[index]
        early = self.answer_early(batch.action_name, params, call_key, timeout)
        if early is not None:
            early.add_done_callback(functools.partial(batch.answer_from, index))
            return
        # Only a keyed call needs a future of its own: a twin sent while it
        # runs shares it (see Ledger.claim).
        shared: Future[CallResult] | None = None if call_key is None else Future()
        batch.add()
        self._submit_recorded(batch, index, shared, 0)
        # Claimed once submitted: a call that could not be submitted must not
        # leave its key's twins waiting.
        if shared is not None:
            self.ledger.claim(call_key, shared)

    def _submit_recorded(
        self,
        batch: Batch,
        index: int,
        shared: Future[CallResult] | None,
        reruns: int,
    ) -> None:
        """Submit call ``index`` of ``batch``; ``_record`` journals (or reruns) it."""
        self.submit(
            batch.calls[index],
            batch.timeout,
            batch.keys[index],
            recorder=functools.partial(self._record, batch, index, shared, reruns),
        )

    def _record(
        self,
        batch: Batch,
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
        again = None if error is None or not may_rerun else self.rerun_count(done, error, reruns)
        if again is not None:
            self.ledger.untrack(done)
            rerun = functools.partial(
                self._rerun, batch, index, shared, again, done, previous=reruns
            )
            give_up = functools.partial(
                self._record, batch, index, shared, reruns, done, may_rerun=False
            )
            if self.host.replacement.park(rerun, give_up):
                return
        try:
            result = self.outcomes.result(
                batch.action_name,
                batch.calls[index],
                done,
                batch.submitted_at,
                call_key,
            )
            result.attempts += reruns
        except Exception as e:  # pragma: no cover (a bug, but answer the caller)
            logger.exception('%s: cannot record call %s', self.name, call_key)
            self.ledger.settled(done, False)
            batch.fail(e)
            return
        self.ledger.settled(done, result.ok)
        batch.journal(index, result, shared)

    def _rerun(
        self,
        batch: Batch,
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

    # The routed path.

    async def run(
        self,
        action_name: str,
        call: Prepared,
        call_key: str | None = None,
        timeout: float | None = None,
    ) -> CallResult:
        """Submit a prepared call (MPI calls once their nodes are free); await its result."""
        early = self.answer_early(action_name, call.params, call_key, timeout, call.tool.name)
        if early is not None:
            return await asyncio.wrap_future(early)
        journaled: Future[CallResult] = Future()
        self.ledger.claim(call_key, journaled)
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
            again = self.rerun_count(future, error, reruns)
            if again is not None and await self.host.replacement.up():
                reruns = again
                continue
            self.ledger.settled(future, False)
            break
        result = self.outcomes.result(
            action_name,
            call.params,
            future,
            submitted,
            call_key,
            tool=call.tool.name,
            resources=call.resources,
        )
        result.attempts += reruns
        self.ledger.answer(result, journaled)
        return await asyncio.wrap_future(journaled)

    async def _submit_prepared(
        self,
        call: Prepared,
        call_key: str | None,
        timeout: float | None,
    ) -> tuple[Future[Any], float]:
        """Submit a prepared call, an MPI call once its nodes are free; returns it and when."""
        resources = call.resources
        if resources is None:
            submitted = time.time()
            return self.submit(call.params, timeout, call_key, tool=call.tool.name), submitted
        await self.host.start_mpi()
        # Parsl's MPI mode is only ever handed calls whose nodes are free.
        ticket = await self.admission.acquire(
            resources.num_nodes, declared_duration(call.params, timeout)
        )
        loop = asyncio.get_running_loop()
        pools = self.host.pools
        label = call_key or f'mpi-{ticket}'
        try:
            # Drained of single-slot work first: a node is the call's alone.
            nodes = await pools.take_for_mpi(resources.num_nodes, label)
        except BaseException:
            self.admission.release(ticket)
            raise
        try:
            submitted = time.time()
            future = self.submit(
                call.params,
                timeout,
                call_key,
                tool=call.tool.name,
                resources=resources,
                mpi_env=resources.environment(
                    self.host.profile.mpi_launcher, nodes, job=pools.ownership.job(nodes[0])
                ),
            )
        except BaseException:
            self._mpi_done(ticket, nodes)
            raise
        future.add_done_callback(lambda _: call_soon(loop, self._mpi_done, ticket, nodes))
        return future, submitted

    def _mpi_done(self, ticket: int, nodes: list[str]) -> None:
        """An MPI call ended: wake the calls that fit now, then give its nodes back.

        In that order: a call woken here takes the held nodes before the
        pools get them back (``NodePools.settle`` runs after it).
        """
        self.admission.release(ticket)
        self.host.pools.end_mpi(nodes)
