"""Client side: launch one Director per partition and call their actions.

A call to a Director that died (for example because its Parsl executor could
not start) would wait forever on the exchange; every call made here races
against the Director's own task in the Manager and fails with the
Director's error instead. It also races against a
[`mailbox_watch`][actors.client.mailbox_watch.mailbox_watch]: an exchange that
lost its state (a Redis server restarted without persistence) fails the call
with [`ExchangeStateLostError`][actors.client.mailbox_watch.ExchangeStateLostError]
within seconds instead of leaving it waiting for an answer that cannot come.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from academy.exception import ActionCancelledError
from academy.exception import BadEntityIdError
from academy.exception import MailboxTerminatedError
from academy.handle import Handle
from academy.manager import Manager

from actors.client.mailbox_watch import ExchangeStateLostError
from actors.client.mailbox_watch import mailbox_watch
from actors.client.restarts import restart_watch
from actors.common.lost_mailbox import LOST_STATE
from actors.coordinator.agent import COORDINATOR_NAME
from actors.coordinator.agent import NodeCoordinator
from actors.coordinator.policy import ElasticPolicy
from actors.director.agent import Director
from actors.director.options import DirectorOptions
from actors.director.options import director_name
from actors.director.startup import quiet_start_failures
from actors.director.startup import start_failure
from actors.job.partition import Partition
from actors.job.partition import PartitionRequest
from actors.site.profile import SiteProfile

logger = logging.getLogger(__name__)

STOPPED_SETTLE = 2.0
"""Seconds a Director that stopped before answering gets to end its task (for its error)."""


class DirectorFailedError(RuntimeError):
    """A Director stopped before answering a call."""


class DirectorGroup(list[Handle[Director]]):
    """The Directors' handles (a list), and the job's node coordinator when nodes move.

    Attributes:
        coordinator: The [`NodeCoordinator`][actors.coordinator.agent.NodeCoordinator]'s
            handle; ``None`` with ``elastic=False`` or one Director.

    """

    def __init__(self, handles: Sequence[Handle[Director]], coordinator: Handle[Any] | None):
        super().__init__(handles)
        self.coordinator = coordinator


async def launch_directors(
    manager: Manager[Any],
    partitions: Sequence[Partition | PartitionRequest],
    profile: SiteProfile,
    run_dir: str,
    options: DirectorOptions | None = None,
    *,
    elastic: bool = True,
    policy: ElasticPolicy | None = None,
    **changes: Any,
) -> DirectorGroup:
    """Launch one Director per partition with the manager's default executor.

    A [`PartitionRequest`][actors.job.partition.PartitionRequest] is resolved by
    the Director where it runs (on a Globus Compute endpoint's batch job).

    Args:
        manager: The Academy manager that launches (and later stops) them.
        partitions: One partition (or request) per Director.
        profile: Site profile that says how to place workers.
        run_dir: The run directory every Director writes under.
        options: How every Director runs (default ``DirectorOptions()``).
        elastic: Move nodes between the Directors as their loads change
            (a [`NodeCoordinator`][actors.coordinator.agent.NodeCoordinator]
            is launched with them); ``False`` keeps the partitions fixed.
        policy: How nodes move (default ``ElasticPolicy()``).
        changes: Changes to ``options`` (``retries=3``, ``walltime=...``).

    Returns:
        The Directors' handles, in partition order (with ``.coordinator``).

    Raises:
        ConfigurationError: If an option is invalid; nothing is launched.

    """
    options = (options or DirectorOptions()).replace(**changes)
    policy = policy or ElasticPolicy()
    sizes = [p.size for p in partitions if isinstance(p, Partition)]
    if elastic and options.max_nodes is None and len(sizes) == len(partitions):
        # An MPI call may borrow up to the whole job.
        options = options.replace(max_nodes=sum(sizes))
    quiet_start_failures()  # a Director that cannot start is one line here too
    handles = []
    for partition in partitions:
        handle = await manager.launch(
            Director,
            args=(partition, profile, run_dir),
            kwargs={'options': options},
            name=director_name(partition.index),
        )
        handles.append(handle)
    coordinator = await launch_coordinator(manager, handles, run_dir, policy) if elastic else None
    return DirectorGroup(handles, coordinator)


async def launch_coordinator(
    manager: Manager[Any],
    handles: Sequence[Handle[Director]],
    run_dir: str,
    policy: ElasticPolicy | None = None,
) -> Handle[NodeCoordinator] | None:
    """Launch the job's node coordinator over ``handles`` (``None`` for fewer than two)."""
    if len(handles) < 2:
        return None
    return await manager.launch(
        NodeCoordinator,
        args=(list(handles), run_dir, policy or ElasticPolicy()),
        name=COORDINATOR_NAME,
    )


RESENDS = 3
"""Times a keyed call is sent again to a Director that restarted while it was pending."""


async def call(
    manager: Manager[Any] | None,
    handle: Handle[Any],
    action: str,
    /,
    *args: Any,
    resends: int = RESENDS,
    **kwargs: Any,
) -> Any:
    """Invoke ``action`` on a Director: the one way every client path calls one.

    The call fails if the Director stops for good (its task in ``manager``
    ends; pass ``None`` inside an agent, where there is no Manager) or the
    exchange loses it. If the Director is restarted while the call is pending
    (noticed by its [`RestartWatch`][actors.client.restarts.RestartWatch]),
    the new incarnation has forgotten the call: a call with keys
    (``call_key``, ``call_keys``, ``batch_key``) is sent again, up to
    ``resends`` times, and is answered from the journal if it had finished; a
    call without keys fails with a ``DirectorFailedError`` saying so (it may
    have run, and running it again could run it twice).

    If the caller cancels this coroutine (``task.cancel()``, ``asyncio.timeout``)
    and the call carries keys, the Director is told to stop the running tool
    processes too.

    Raises:
        DirectorFailedError: If the Director's task ended before answering, or
            it restarted (more than ``resends`` times for a keyed call).

    """
    watch = restart_watch(handle)
    for _ in range(resends + 1):
        answer = asyncio.ensure_future(
            _race(
                manager,
                handle,
                action,
                asyncio.ensure_future(handle.action(action, *args, **kwargs)),
            ),
        )
        restarted = asyncio.ensure_future(watch.restarted())
        try:
            await asyncio.wait({answer, restarted}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            answer.cancel()
            await _cancel_remote(handle, kwargs)
            raise
        finally:
            restarted.cancel()
        if answer.done():
            return answer.result()
        answer.cancel()
        if not _keys(kwargs) and action not in SAFE_TO_RESEND:
            raise DirectorFailedError(
                f'{action} on {handle.agent_id} failed: the Director restarted while the call '
                'was pending and has forgotten it; it was not sent again because it has no '
                'call_key (it may have run): give call_key=... to make it safe to send again',
            )
        logger.warning(
            '%s restarted (incarnation %s); sending %s again under its key',
            handle.agent_id,
            restarted.result()[:8],
            action,
        )
    raise DirectorFailedError(
        f'{action} on {handle.agent_id} failed: the Director restarted more than {resends} times',
    )


SAFE_TO_RESEND = frozenset({'status', 'node_load', 'incarnation_id', 'cancel'})
"""Actions that change nothing (or nothing twice): sent again after a restart without keys."""

call_resilient = call
"""The same as [`call`][actors.client.calls.call] (every call survives a restart now)."""


def _keys(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The call's keys, one ``cancel`` argument each."""
    keys = [{k: kwargs[k]} for k in ('call_key', 'batch_key') if kwargs.get(k) is not None]
    keys += [{'call_key': key} for key in kwargs.get('call_keys') or ()]
    return keys


async def _cancel_remote(handle: Handle[Any], kwargs: dict[str, Any]) -> None:
    for key in _keys(kwargs):
        try:
            await asyncio.shield(asyncio.wait_for(handle.action('cancel', **key), timeout=10))
        except Exception as e:
            logger.warning('could not cancel %s on %s: %s', key, handle.agent_id, e)


async def _race(
    manager: Manager[Any] | None,
    handle: Handle[Any],
    action: str,
    request: asyncio.Future[Any],
) -> Any:
    """Await ``request``; fail if the Director stops or the exchange loses the call first."""
    # A Director this manager did not launch (re-attached) has no task to watch.
    launched = manager is not None and handle.agent_id in manager._acbs
    died = asyncio.ensure_future(
        manager.wait([handle], return_when=asyncio.FIRST_COMPLETED)
        if manager is not None and launched
        else asyncio.Event().wait(),
    )
    try:
        with mailbox_watch(handle.exchange, handle.agent_id) as lost:
            try:
                await asyncio.wait({request, died, lost}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                _abandon(request)
                raise
            if request.done():
                if not (launched and _stopped_before_answering(request)):
                    return _answer(handle, action, request)
                # It stopped (a failed start, a crash): its own error says why.
                await asyncio.wait({died}, timeout=STOPPED_SETTLE)
                if not died.done():
                    raise DirectorFailedError(
                        f'{action} on {handle.agent_id} failed: the Director stopped before '
                        'answering (it is being restarted)',
                    )
            else:
                _abandon(request)
            if lost.done():
                raise ExchangeStateLostError(
                    f'{action} on {handle.agent_id} cannot be answered: {lost.result()}',
                )
        assert manager is not None  # only a launched Director's task ends
        raise DirectorFailedError(_stopped_message(manager, handle, action))
    finally:
        died.cancel()


def _stopped_before_answering(request: asyncio.Future[Any]) -> bool:
    """Whether the request ended because its agent stopped (not with the action's answer)."""
    if request.cancelled():
        return False
    return isinstance(request.exception(), (ActionCancelledError, MailboxTerminatedError))


def _stopped_message(manager: Manager[Any], handle: Handle[Any], action: str) -> str:
    error = _agent_error(manager, handle)
    failure = start_failure(error)
    if failure is not None:
        return str(failure)  # "director-0 could not start: PATH: REASON (ERRNO)"
    return f'{action} on {handle.agent_id} failed: the Director stopped' + (
        f' ({type(error).__name__}: {error})' if error else ''
    )


def _abandon(request: asyncio.Future[Any]) -> None:
    """Cancel a request nobody will await (telling the Director may fail too)."""

    def consume(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            logger.debug('abandoned request ended with %r', future.exception())

    request.cancel()
    request.add_done_callback(consume)


def _answer(handle: Handle[Any], action: str, request: asyncio.Future[Any]) -> Any:
    """The request's result; a mailbox the exchange does not know is a lost exchange."""
    try:
        return request.result()
    except BadEntityIdError as e:
        if e.uid not in (handle.agent_id, handle.exchange.client_id):
            raise  # raised by the action itself, about another entity
        raise ExchangeStateLostError(
            f'{action} on {handle.agent_id} cannot be answered: the exchange no longer knows '
            f'the mailbox of {e.uid}: {LOST_STATE}',
        ) from None


def _agent_error(manager: Manager[Any], handle: Handle[Any]) -> BaseException | None:
    acb = manager._acbs.get(handle.agent_id)
    if acb is None or not acb.task.done() or acb.task.cancelled():
        return None
    return acb.task.exception()


async def wait_ready(
    manager: Manager[Any],
    handles: Sequence[Handle[Any]],
    timeout: float | None = None,
) -> list[Any]:
    """Wait until every Director answers ``status`` (its DFK is up).

    Returns:
        Each Director's first status.

    """
    return await asyncio.wait_for(
        asyncio.gather(*(_first_status(manager, h) for h in handles)),
        timeout=timeout,
    )


async def _first_status(manager: Manager[Any], handle: Handle[Any]) -> Any:
    """``status``, asked again while the Manager restarts a Director that failed to start."""
    while True:
        try:
            return await call(manager, handle, 'status')
        except DirectorFailedError:
            acb = manager._acbs.get(handle.agent_id)
            if acb is None or acb.task.done():
                raise
            logger.info('%s stopped while starting; waiting for its restart', handle.agent_id)
            await asyncio.sleep(STOPPED_SETTLE)
