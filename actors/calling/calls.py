"""Client side: the one way to call a Director's actions, with its failure rules.

A call to a Director that died (for example because its Parsl executor could
not start) would wait forever on the exchange; every call made here races
against the Director's own task in the Manager and fails with the
Director's error instead. It also races against a
[`mailbox_watch`][actors.calling.watches.mailbox_watch]: an exchange that
lost its state (a Redis server restarted without persistence) fails the call
with [`ExchangeStateLostError`][actors.calling.watches.ExchangeStateLostError]
within seconds instead of leaving it waiting for an answer that cannot come.

Light on purpose: it loads neither Parsl nor the Director class (its types
are read only by mypy), so the dispatcher and the MCP server import it at
once. Launching Directors is [`actors.client.launch`][actors.client.launch].
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import TypeAlias
from typing import overload

from academy.exception import ActionCancelledError
from academy.exception import BadEntityIdError
from academy.exception import MailboxTerminatedError
from academy.handle import Handle
from academy.manager import Manager

from actors.calling.watches import ExchangeStateLostError
from actors.calling.watches import mailbox_watch
from actors.calling.watches import restart_watch
from actors.common.errors import CallError
from actors.common.lost_mailbox import LOST_STATE
from actors.common.timing import STOPPED_SETTLE
from actors.director.startup import start_failure

if TYPE_CHECKING:
    from academy.agent import Agent

    from actors.common.results import CallResult
    from actors.common.results import DirectorStatus
    from actors.common.results import NodeLoad
    from actors.director.actions import DirectorAction
    from actors.director.agent import Director

    DirectorHandle: TypeAlias = Handle[Director]
    """A Director's handle: what [`call`][actors.calling.calls.call] takes."""

logger = logging.getLogger(__name__)


class DirectorFailedError(CallError, RuntimeError):
    """A Director stopped before answering a call."""


RESENDS = 3
"""Times a keyed call is sent again to a Director that restarted while it was pending."""


# The answer of each action, so a caller's result is typed (the names are DirectorAction's).
@overload
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: Literal['call_tool', 'md_sim'],
    /,
    *args: Any,
    resends: int = ...,
    **kwargs: Any,
) -> CallResult: ...
@overload
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: Literal['md_sim_batch'],
    /,
    *args: Any,
    resends: int = ...,
    **kwargs: Any,
) -> list[CallResult]: ...
@overload
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: Literal['status'],
    /,
    *args: Any,
    resends: int = ...,
    **kwargs: Any,
) -> DirectorStatus: ...
@overload
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: Literal['cancel'],
    /,
    *args: Any,
    resends: int = ...,
    **kwargs: Any,
) -> int: ...
@overload
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: Literal['incarnation_id'],
    /,
    *args: Any,
    resends: int = ...,
    **kwargs: Any,
) -> str: ...
@overload
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: Literal['node_load'],
    /,
    *args: Any,
    resends: int = ...,
    **kwargs: Any,
) -> NodeLoad: ...
@overload
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: Literal['release_nodes'],
    /,
    *args: Any,
    resends: int = ...,
    **kwargs: Any,
) -> list[str]: ...
@overload
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: Literal['adopt_node'],
    /,
    *args: Any,
    resends: int = ...,
    **kwargs: Any,
) -> bool: ...
@overload
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: DirectorAction,
    /,
    *args: Any,
    resends: int = ...,
    **kwargs: Any,
) -> Any: ...
async def call(
    manager: Manager[Any] | None,
    handle: DirectorHandle,
    action: DirectorAction,
    /,
    *args: Any,
    resends: int = RESENDS,
    **kwargs: Any,
) -> Any:
    """Invoke ``action`` on a Director: the one way every client path calls one.

    The call fails if the Director stops for good (its task in ``manager``
    ends; pass ``None`` inside an agent, where there is no Manager) or the
    exchange loses it. If the Director is restarted while the call is pending
    (noticed by its [`RestartWatch`][actors.calling.watches.RestartWatch]),
    the new incarnation has forgotten the call: a call with keys
    (``call_key``, ``call_keys``, ``batch_key``) is sent again, up to
    ``resends`` times, and is answered from the journal if it had finished; a
    call without keys fails with a ``DirectorFailedError`` saying so (it may
    have run, and running it again could run it twice).

    If the caller cancels this coroutine (``task.cancel()``, ``asyncio.timeout``)
    and the call runs tools under keys, the Director is told to stop the
    running tool processes too.

    ``action`` is one of [`DirectorAction`][actors.director.actions.DirectorAction]
    (mypy checks a literal name; the answer is typed per action).

    Raises:
        DirectorFailedError: If the Director's task ended before answering, or
            it restarted (more than ``resends`` times for a keyed call).

    """
    return await _call(manager, handle, action, args, kwargs, resends=resends)


async def call_agent(
    manager: Manager[Any] | None,
    handle: Handle[Agent],
    action: str,
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """[`call`][actors.calling.calls.call]'s rules for an agent that is not a Director.

    A planner's ``run_campaign``, for instance: it fails when the agent's
    task ends or the exchange loses the call (an agent without incarnations
    is never taken for restarted).
    """
    return await _call(manager, handle, action, args, kwargs, resends=RESENDS)


async def _call(
    manager: Manager[Any] | None,
    handle: Handle[Agent],
    action: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    resends: int,
) -> Any:
    """The call path of [`call`][actors.calling.calls.call], for any agent."""
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
            if action in RUNS_TOOLS:
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


RUNS_TOOLS: frozenset[DirectorAction] = frozenset({'call_tool', 'md_sim', 'md_sim_batch'})
"""Actions whose keys name running tool calls: cancelling the caller cancels them remotely
(a ``cancel`` given up on is not cancelled again)."""

SAFE_TO_RESEND: frozenset[DirectorAction] = frozenset(
    {'status', 'node_load', 'incarnation_id', 'cancel'}
)
"""Actions that change nothing (or nothing twice): sent again after a restart without keys."""

call_resilient = call
"""The same as [`call`][actors.calling.calls.call] (every call survives a restart now)."""


def _keys(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The call's keys, one ``cancel`` argument each."""
    keys = [{k: kwargs[k]} for k in ('call_key', 'batch_key') if kwargs.get(k) is not None]
    keys += [{'call_key': key} for key in kwargs.get('call_keys') or ()]
    return keys


async def _cancel_remote(handle: Handle[Agent], kwargs: dict[str, Any]) -> None:
    for key in _keys(kwargs):
        try:
            await asyncio.shield(asyncio.wait_for(handle.action('cancel', **key), timeout=10))
        except Exception as e:
            logger.warning('could not cancel %s on %s: %s', key, handle.agent_id, e)


async def _race(
    manager: Manager[Any] | None,
    handle: Handle[Agent],
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


def _stopped_message(manager: Manager[Any], handle: Handle[Agent], action: str) -> str:
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


def _answer(handle: Handle[Agent], action: str, request: asyncio.Future[Any]) -> Any:
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


def _agent_error(manager: Manager[Any], handle: Handle[Agent]) -> BaseException | None:
    acb = manager._acbs.get(handle.agent_id)
    if acb is None or not acb.task.done() or acb.task.cancelled():
        return None
    return acb.task.exception()
