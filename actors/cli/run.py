"""Running a [`RunPlan`][actors.cli.plan.RunPlan]: start or re-attach to Directors, drive them.

[`run`][actors.cli.run.run] opens the exchange, re-attaches to the Directors
of a resumed run that still answer, launches the others, records them in
the manifest, then sends every Director the calls its journal does not hold
yet (or runs the mock planner's campaign on them) and collects the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING
from typing import Any

from academy.exception import MailboxTerminatedError
from academy.manager import Manager
from redis.exceptions import RedisError

from actors.calling.calls import call
from actors.calling.calls import call_agent
from actors.calling.watches import ExchangeStateLostError
from actors.cli.output import write_manifest
from actors.cli.plan import RunPlan
from actors.cli.plan import campaign_arguments
from actors.cli.progress import DirectorBars
from actors.cli.progress import make_progress
from actors.client.deploy import make_executor
from actors.client.exchange import open_exchange
from actors.client.exchange import redact
from actors.client.launch import launch_coordinator
from actors.client.launch import launch_directors
from actors.client.launch import wait_ready
from actors.client.shutdown import closing
from actors.client.status_query import ExchangeUnreachableError
from actors.common.names import director_name
from actors.common.results import CallResult
from actors.common.results import DirectorStatus
from actors.common.timing import ATTACH_TIMEOUT
from actors.common.timing import COORDINATOR_STOP_TIMEOUT
from actors.common.timing import LOST_STOP_TIMEOUT
from actors.common.timing import RELEASE_TIMEOUT
from actors.common.timing import REMOTE_STARTUP_TIMEOUT
from actors.common.timing import STARTUP_TIMEOUT
from actors.coordinator.schedulers import end_leftover_jobs
from actors.job.partition import Partition
from actors.job.partition import PartitionRequest
from actors.store.journal import final_by_key
from actors.store.journal import read_run
from actors.store.manifest import DirectorEntry

if TYPE_CHECKING:
    from actors.calling.calls import DirectorHandle
    from actors.client.planner import CampaignReport

# Log lines name the program, as they did before the CLI became a package.
logger = logging.getLogger('launch')


async def run(
    plan: RunPlan,
    executor: Executor | None = None,
    on_start: Callable[[], None] | None = None,
    on_directors: Callable[[int, int], None] | None = None,
) -> list[CallResult] | CampaignReport:
    """Start (or re-attach to) the Directors, send the calls not yet done, collect all.

    Args:
        plan: What to start.
        executor: Hosts the Directors instead of the one ``plan.executor``
            names (tests use a stand-in for a Globus Compute endpoint).
        on_start: Called once the exchange is open, before any Director starts.
        on_directors: Called with the numbers of Directors re-attached to
            and started, once all are ready.

    Returns:
        Every call's result in key order; with ``plan.campaign``, the
        campaign's report (its ``results`` hold every call's).

    Raises:
        ConfigurationError: If the ``--llm`` endpoint cannot be reached
            (checked before any Director starts).

    """
    if plan.campaign and plan.llm is not None:
        from actors.client.model_endpoint import probe

        await probe(plan.llm)
    async with open_directors(plan, executor, on_start, on_directors) as directors:
        manager, handles, statuses = directors
        outcome: list[CallResult] | CampaignReport
        if plan.campaign:
            outcome = await run_campaign(manager, handles, plan)
        else:
            outcome = await drive_all(manager, handles, statuses, plan)
        return outcome


@contextlib.asynccontextmanager
async def open_directors(
    plan: RunPlan,
    executor: Executor | None = None,
    on_start: Callable[[], None] | None = None,
    on_directors: Callable[[int, int], None] | None = None,
) -> AsyncIterator[tuple[Manager[Any], list[Any], list[DirectorStatus]]]:
    """The plan's Directors, ready: ``(manager, handles, first statuses)``.

    Opens the exchange, re-attaches to a resumed run's Directors that still
    answer, launches the others and records them in the manifest. On exit the
    Directors started here stop with their Manager, and re-attached ones are
    shut down as their own Manager would have.
    """
    if executor is None:
        # Before the exchange: a missing Globus login fails here, before anything starts.
        executor = make_executor(
            plan.executor,
            # The node coordinator holds a worker of its own, as each Director does.
            directors=len(plan.partitions) + (1 if plan.elastic else 0),
            endpoint=plan.endpoint,
            endpoint_config=plan.endpoint_config,
        )
    with open_exchange(plan.exchange) as factory:
        try:
            # Academy's max_retries counts attempts in all, not restarts.
            manager = await Manager.from_exchange_factory(
                factory,
                executors=executor,
                max_retries=plan.restarts + 1,
            )
        except RedisError as e:  # a wrong password too: redis-py's errors are not OSErrors
            raise ExchangeUnreachableError(
                f'cannot join the exchange {redact(plan.exchange)}: {e}',
            ) from None
        if on_start is not None:
            on_start()
        lost: ExchangeStateLostError | None = None
        try:
            async with closing(manager):
                try:
                    attached, handles, statuses, coordinator = await _ready(
                        manager, plan, on_directors
                    )
                    try:
                        yield manager, handles, statuses
                        await stop_coordinator(manager, coordinator)
                    finally:
                        # Also when the run failed: a job must not hold nodes to its walltime.
                        await end_extra_jobs(plan)
                except ExchangeStateLostError as e:
                    # Nobody can reach them to ask them to stop (the Manager's
                    # shutdown request would fail): they notice it themselves.
                    lost = e
                    await stopped_by_themselves(manager, LOST_STOP_TIMEOUT)
                    raise
                await release(attached)
        except Exception as e:
            if lost is None or e is lost:
                raise
            # What closing the Manager ran into is a consequence; the loss is the news.
            logger.warning('closing the Directors after the exchange was lost: %r', e)
            raise lost from None


async def end_extra_jobs(plan: RunPlan) -> None:
    """End the extra jobs a coordinator that stopped did not (it died, or timed out)."""
    if plan.executor == 'globus-compute':
        return  # its journal is on the endpoint's filesystem
    ended = await asyncio.to_thread(end_leftover_jobs, plan.director_run_dir)
    for record in ended:
        logger.warning('extra job %s was still queued or running; cancelled', record.job)


async def stop_coordinator(manager: Manager[Any], coordinator: Any) -> None:
    """Stop the node coordinator before the Directors (no move starts while they stop)."""
    if coordinator is None:
        return
    try:
        await manager.shutdown(
            coordinator.agent_id, blocking=True, timeout=COORDINATOR_STOP_TIMEOUT
        )
    except TimeoutError:
        # The Manager's bounded close kills it, if it can.
        logger.error(
            '%s did not stop within %.0fs (a stopped or hung process?); the Directors stop '
            'without it',
            coordinator.agent_id,
            COORDINATOR_STOP_TIMEOUT,
        )
    except Exception as e:
        logger.debug('stopping the node coordinator: %r', e)


async def _ready(
    manager: Manager[Any],
    plan: RunPlan,
    on_directors: Callable[[int, int], None] | None,
) -> tuple[list[Any], list[Any], list[DirectorStatus], Any]:
    """Get every Director ready: ``(re-attached handles, all handles, statuses, coordinator)``."""
    found = await attach(manager, plan)
    attached = [h for h in found if h is not None]
    missing = [p for p, h in zip(plan.partitions, found, strict=True) if h is None]
    # Remote Directors get the same options: the Manager's executor ships them.
    started = iter(
        await launch_directors(
            manager,
            missing,
            plan.profile,
            plan.director_run_dir,
            options=plan.director,
            elastic=False,
        ),
    )
    handles = [h if h is not None else next(started) for h in found]
    coordinator = None
    if plan.elastic:
        # Over every Director, re-attached ones too.
        coordinator = await launch_coordinator(
            manager, handles, plan.director_run_dir, plan.policy, plan.growth
        )
    if all(isinstance(p, Partition) for p in plan.partitions):
        # Already now: a run whose Directors cannot start (a full disk) is --resume'd once fixed.
        write_manifest(plan, handles)
    timeout = STARTUP_TIMEOUT if plan.executor != 'globus-compute' else REMOTE_STARTUP_TIMEOUT
    statuses = await wait_ready(manager, handles, timeout=timeout)
    # Directors that resolved their slice on the endpoint report its nodes.
    plan.partitions = [
        p
        if isinstance(p, Partition)
        else Partition(status.partition, tuple(status.nodes), nodefile='')
        for p, status in zip(plan.partitions, statuses, strict=True)
    ]
    write_manifest(plan, handles)
    if on_directors is not None:
        on_directors(len(attached), len(missing))
    return attached, handles, list(statuses), coordinator


async def attach(manager: Manager[Any], plan: RunPlan) -> list[Any | None]:
    """Per partition: a handle to its recorded Director if it still answers, else ``None``."""
    if plan.manifest is None or not plan.reattach or plan.exchange in ('local', 'http'):
        return [None] * len(plan.partitions)

    async def answering(entry: DirectorEntry) -> Any | None:
        handle = manager.get_handle(entry.agent_id())
        try:
            await handle.ping(timeout=ATTACH_TIMEOUT)
        except Exception as e:
            logger.info(
                '%s of %s does not answer (%r); starting a new one', entry.name, plan.run_dir, e
            )
            return None
        return handle

    return list(await asyncio.gather(*(answering(e) for e in plan.manifest.directors)))


async def stopped_by_themselves(manager: Manager[Any], timeout: float) -> None:
    """Wait for the Directors this manager launched to end, at most ``timeout`` seconds.

    A Director whose mailbox the exchange lost stops within
    ``DIRECTOR_MAILBOX_POLL`` seconds plus its drain time
    ([`MailboxWatch`][actors.director.mailbox.MailboxWatch]).
    """
    tasks = [acb.task for acb in manager._acbs.values() if not acb.task.done()]
    if not tasks:
        return
    logger.info('waiting up to %.0fs for %d Director(s) to stop', timeout, len(tasks))
    _, running = await asyncio.wait(tasks, timeout=timeout)
    if running:
        logger.warning('%d Director(s) did not stop within %.0fs', len(running), timeout)


async def release(handles: Sequence[Any], timeout: float = RELEASE_TIMEOUT) -> None:
    """Shut down Directors this client re-attached to (its Manager only stops its own).

    Waits until each one's mailbox is closed (it finished its shutdown), at
    most ``timeout`` seconds.
    """

    async def stop(handle: Any) -> None:
        with contextlib.suppress(MailboxTerminatedError):
            await handle.shutdown()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await handle.ping(timeout=5)
            except MailboxTerminatedError:
                return
            except TimeoutError:
                continue  # shutting down: it does not answer pings any more
            await asyncio.sleep(0.2)
        logger.warning('%s did not finish shutting down within %.0fs', handle.agent_id, timeout)

    await asyncio.gather(*(stop(h) for h in handles))


def call_keys(partition: Partition | PartitionRequest, iterations: int) -> tuple[str, list[str]]:
    """Stable keys of the run's calls to one Director: ``md_sim`` and the batch's."""
    director = director_name(partition.index)
    return f'{director}/md_sim/0', [f'{director}/md_sim_batch/{i}' for i in range(iterations)]


async def drive_all(
    manager: Manager[Any],
    handles: Sequence[DirectorHandle],
    statuses: Sequence[DirectorStatus],
    plan: RunPlan,
) -> list[CallResult]:
    """Send every Director the run's calls not yet journaled; all results, in key order."""
    done = final_by_key(read_run(plan.run_dir))
    work = asyncio.gather(
        *(
            drive(manager, handle, partition, plan, done)
            for handle, partition in zip(handles, plan.partitions, strict=True)
        ),
    )
    if plan.progress:
        totals = [
            sum(key not in done for key in _all_keys(partition, plan.iterations))
            for partition in plan.partitions
        ]
        per_director = await with_progress(
            work,
            handles,
            statuses,
            totals,
            lambda h: call(manager, h, 'status'),
        )
    else:
        per_director = await work
    return [result for results in per_director for result in results]


def _all_keys(partition: Partition | PartitionRequest, iterations: int) -> list[str]:
    single, batch = call_keys(partition, iterations)
    return [single, *batch]


async def drive(
    manager: Manager[Any],
    handle: DirectorHandle,
    partition: Partition | PartitionRequest,
    plan: RunPlan,
    done: dict[str, dict[str, Any]],
) -> list[CallResult]:
    """Send one Director the run's calls that are not done yet; all results in order."""
    single_key, batch_keys = call_keys(partition, plan.iterations)
    params: dict[str, Any] = {'duration': plan.duration}
    todo = [key for key in batch_keys if key not in done]
    requests: list[Awaitable[CallResult | list[CallResult]]] = []
    if single_key not in done:
        requests.append(
            call(manager, handle, 'md_sim', call_key=single_key, timeout=plan.timeout, **params),
        )
    if todo:
        requests.append(
            call(
                manager,
                handle,
                'md_sim_batch',
                params=[params] * len(todo),
                call_keys=todo,
                timeout=plan.timeout,
            ),
        )
    new: dict[str, CallResult] = {}
    for answer in await asyncio.gather(*requests):
        for result in answer if isinstance(answer, list) else [answer]:
            assert result.call_key is not None  # every call of the run is keyed
            new[result.call_key] = result
    return [
        new[key] if key in new else CallResult.from_dict(done[key])
        for key in [single_key, *batch_keys]
    ]


async def run_campaign(
    manager: Manager[Any],
    handles: Sequence[DirectorHandle],
    plan: RunPlan,
) -> CampaignReport:
    """Launch the planner agent (the mock one, or ``plan.llm``'s) and run its campaign."""
    from actors.client.planner import Planner

    if plan.llm is not None:
        from actors.client.llm_planner import LLMPlanner

        model_planner = await manager.launch(
            LLMPlanner,
            args=(list(handles), plan.llm),
            kwargs={'tool': plan.tool, 'arguments': campaign_arguments(plan.tool, plan.steps)},
            name='planner',
            executor='event_loop',
        )
        return await call_agent(manager, model_planner, 'run_campaign')
    planner = await manager.launch(
        Planner,
        args=(list(handles),),
        kwargs={
            'tool': plan.tool,
            'rounds': plan.rounds,
            'arguments': campaign_arguments(plan.tool, plan.steps),
        },
        name='planner',
        # A light agent: it runs here, whatever hosts the Directors.
        executor='event_loop',
    )
    return await call_agent(manager, planner, 'run_campaign')


async def with_progress(
    work: Awaitable[Any],
    handles: Sequence[DirectorHandle],
    baseline: Sequence[DirectorStatus],
    totals: Sequence[int],
    fetch: Callable[[DirectorHandle], Awaitable[DirectorStatus]],
) -> Any:
    """Await ``work`` while one progress bar per Director follows it on stderr."""
    with make_progress() as progress:
        bars = DirectorBars(progress, baseline, totals)
        follower = asyncio.create_task(bars.follow(handles, fetch))
        try:
            result = await work
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        # Show the final counts; after a failure (e.g. the exchange is gone) there
        # is nothing to ask, and a status call must not hold the run's exit.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bars.poll(handles, fetch), timeout=5)
        return result
