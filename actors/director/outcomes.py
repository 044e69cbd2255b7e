"""From a finished Parsl call to its ``CallResult``.

A call's future resolves to what its worker function returned (packed
bytes, ``actors.worker.wire``), or fails: a lost worker, pool or interchange
after its retries, or a worker killed to stop the call. This module turns
each case into a ``CallResult`` with a status (``ok``, ``failed``, ``lost``,
``cancelled``, ``timed_out``, ``refused``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from actors.common.results import CallResult
from actors.director.context import DirectorContext
from actors.execution.executor_app import Call
from actors.tools.resources import MPIResources
from actors.worker.control import STOP_ERROR_TYPES
from actors.worker.control import CancelFiles
from actors.worker.control import Control
from actors.worker.wire import read_outcome


def call_of(future: Future[Any]) -> Call | None:
    """The Parsl call behind a call's future (a command tool's outcome has one), if any."""
    if isinstance(future, Call):
        return future
    return vars(future).get('call')


def control_of(call: Call) -> Control:
    """The call's control (its number and timeout)."""
    # Every worker function the Director runs takes (tool, params, control, ...).
    control: Control = call.args[2]
    return control


def outcome(future: Future[Any]) -> dict[str, Any]:
    """What a finished call's worker function returned, loaded once per future.

    A routed call is counted and recorded from the same future: a big result
    is not loaded twice.
    """
    loaded = vars(future)
    found = loaded.get('_loaded_outcome')
    if found is None:
        found = loaded['_loaded_outcome'] = read_outcome(future.result())
    return found


class Outcomes:
    """Builds one Director's results (and numbers them).

    Args:
        context: The Director's name, partition index, default tool and
            retries (for the message of a loss).
        cancels: The Director's cancel files (a call killed on purpose).

    """

    def __init__(self, context: DirectorContext, cancels: CancelFiles) -> None:
        self.director = context.name
        self.partition = context.index
        self.tool = context.tool
        self.retries = context.retries
        self.cancels = cancels
        self._call_ids = itertools.count()

    def stopped_on_purpose(self, call: Call) -> bool:
        """Whether the call was stopped by a cancel, a timeout or a drain."""
        return self.cancels.stopped(control_of(call)) is not None

    def result(
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
        """The result of a finished call."""
        result = CallResult(
            call_id=f'{self.director}-{next(self._call_ids)}',
            director=self.director,
            partition=self.partition,
            action=action_name,
            tool=tool or self.tool,
            # Shared by the calls of a batch made with one mapping (not copied per call).
            params=params if isinstance(params, dict) else dict(params),
            ok=False,
            start=submitted,
            call_key=call_key,
            resources=None if resources is None else resources.to_dict(),
        )
        call = call_of(future)
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
            stopped = self.cancels.stopped(control_of(call))
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
        done = outcome(future)
        result.ok = done['ok']
        result.node = done['node']
        result.worker = done['worker']
        result.pid = done['pid']
        if done['start'] is not None:
            # Else the outcome is unreadable: when the call started is unknown.
            result.start = done['start']
        result.end = done['end']
        result.value = done['value']
        result.error_type = done['error_type']
        result.error_message = done['error_message']
        result.status = done.get('status') or ('ok' if done['ok'] else 'failed')
        result.nodes = done.get('nodes')
        return result

    def refused(
        self,
        action_name: str,
        params: Mapping[str, Any],
        call_key: str | None,
        reason: str,
        tool: str | None = None,
    ) -> CallResult:
        """The result of a call refused before it ran (walltime)."""
        now = time.time()
        return CallResult(
            call_id=f'{self.director}-{next(self._call_ids)}',
            director=self.director,
            partition=self.partition,
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
