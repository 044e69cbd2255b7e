"""Calls submitted straight to an executor of a Director's DataFlowKernel.

A Director's calls have no dependencies between them, no memoization and no
checkpoints. Of the DFK's per-task machinery (task record, dependency scan,
state changes and their logging, ``AppFuture``) they only need one thing:
a call whose worker or worker pool was lost runs again. Submitted through
the DFK, a no-op call costs ~350 us of the submitting process's CPU on this
machine; straight to the executor ~220 us (``bench`` measures both), and on
a node whose cores are busy running tools every microsecond of it is taken
from them. So a Director submits to the executor and does that retry here;
its DFK still owns the executors: it starts them, runs their block strategy
and shuts them down.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError
from concurrent.futures import Future
from typing import Any

import zmq
from parsl.executors.base import ParslExecutor
from parsl.executors.high_throughput.errors import ManagerLost
from parsl.executors.high_throughput.errors import WorkerLost
from parsl.executors.high_throughput.executor import HighThroughputExecutor
from parsl.executors.status_handling import BlockProviderExecutor

from actors.common.errors import ConfigurationError
from actors.common.errors import ExecutionError
from actors.common.timing import SEND_TIMEOUT
from actors.worker.wire import pack_call

logger = logging.getLogger(__name__)


INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (WorkerLost, ManagerLost)
"""Failures of the resources, not of the tool: these are retried."""


def check_retries(retries: Any) -> int:
    """``retries`` if it is a valid retry count (an integer >= 0), else a ``ConfigurationError``."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError(f'retries must be an integer >= 0, got {retries!r}')
    return retries


class TaskNotSent(ExecutionError, RuntimeError):
    """The interchange took no task within ``SEND_TIMEOUT`` (and is not known to be lost)."""


class Call(Future[Any]):
    """One call of an ``ExecutorApp``: resolves to what the function returned.

    It fails with the last attempt's error once no retry is left. Like a
    running Parsl task it cannot be cancelled (calls stop through their
    cancel files, ``actors.worker.control``).

    Attributes:
        args: The function's positional arguments.
        attempts: How many times the call was submitted so far.

    """

    def __init__(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        resource_specification: dict[str, Any],
    ) -> None:
        super().__init__()
        self.args = args
        self.kwargs = kwargs
        self.resource_specification = resource_specification
        self.attempts = 0
        self.set_running_or_notify_cancel()


class ExecutorApp:
    """Submits calls of ``func`` to one executor, running lost calls again.

    Args:
        executor: The executor (one of a running DFK's).
        lock: Held around each submit: the DFK's ``submitter_lock``, as an
            HTEX's task socket must not be used by two threads at once.
        func: The function the workers run.
        retries: How many more times a call whose worker or worker pool was
            lost is submitted; other errors are never retried.
        stopped_on_purpose: Tells whether a call's worker was killed to stop
            it (cancel, timeout; see ``actors.worker.interrupt``): not retried.

    """

    def __init__(
        self,
        executor: ParslExecutor,
        lock: threading.Lock | threading.RLock,
        func: Callable[..., Any],
        *,
        retries: int = 0,
        stopped_on_purpose: Callable[[Call], bool] | None = None,
    ) -> None:
        self.executor = executor
        self.func = func
        self.retries = check_retries(retries)
        self._lock = lock
        self._stopped_on_purpose = stopped_on_purpose
        # An HTEX takes calls packed here (actors.worker.wire); other executors pack their own.
        self._submit_payload: Callable[[dict[str, Any], bytes], Future[Any]] | None = getattr(
            executor, 'submit_payload', None
        )
        outgoing = getattr(executor, 'outgoing_q', None)
        if outgoing is not None:
            # Set before the first submit: the socket is only used under the lock.
            outgoing.zmq_socket.setsockopt(zmq.SNDTIMEO, round(SEND_TIMEOUT * 1000))

    def __call__(
        self,
        *args: Any,
        parsl_resource_specification: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Call:
        """Submit one call; its future is returned at once."""
        call = Call(args, kwargs, parsl_resource_specification or {})
        self._launch(call)
        return call

    def may_retry(self, call: Call, error: BaseException) -> bool:
        """Whether ``call``, which failed with ``error``, runs again."""
        return (
            isinstance(error, INFRASTRUCTURE_ERRORS)
            and call.attempts <= self.retries
            and not (self._stopped_on_purpose is not None and self._stopped_on_purpose(call))
        )

    def _launch(self, call: Call) -> None:
        call.attempts += 1
        try:
            attempt = self._send(call)
        except Exception as e:
            # The call fails, the caller goes on: a lost executor refuses new
            # tasks (with the error that says it was lost, so that the call
            # can run again elsewhere), and so does a bad resource specification.
            call.set_exception(self._refusal(e))
            return
        attempt.add_done_callback(functools.partial(self._settle, call))

    def _send(self, call: Call) -> Future[Any]:
        """Hand one attempt of ``call`` to the executor; its future."""
        spec = call.resource_specification
        executor = self.executor
        submit_payload = self._submit_payload
        if submit_payload is None or not isinstance(executor, HighThroughputExecutor):
            with self._lock:
                return executor.submit(self.func, spec, *call.args, **call.kwargs)
        # An HTEX: the arguments go pickled, not dilled (actors.worker.wire), and are
        # packed before taking the lock that other submitters wait for.
        executor.validate_resource_spec(spec)
        payload = pack_call(self.func, call.args, call.kwargs)
        with self._lock:
            return submit_payload({'resource_spec': spec} if spec else {}, payload)

    def _refusal(self, error: Exception) -> BaseException:
        if isinstance(self.executor, BlockProviderExecutor) and self.executor.bad_state_is_set:
            # Parsl's property is unannotated; it is set whenever the bad state is.
            lost: BaseException = self.executor.executor_exception
            return lost
        if isinstance(error, zmq.Again):
            return TaskNotSent(
                f'executor {self.executor.label}: its interchange took no task '
                f'within {SEND_TIMEOUT:g}s',
            )
        return error

    def _settle(self, call: Call, attempt: Future[Any]) -> None:
        # A done callback: whatever goes wrong must still answer the call.
        try:
            if attempt.cancelled():
                call.set_exception(CancelledError(f'Parsl cancelled attempt {call.attempts}'))
                return
            error = attempt.exception()
            if error is None:
                call.set_result(attempt.result())
            elif self.may_retry(call, error):
                logger.info(
                    '%s: a call lost its worker or pool (%s: %s); attempt %d of %d',
                    self.executor.label,
                    type(error).__name__,
                    error,
                    call.attempts + 1,
                    self.retries + 1,
                )
                self._launch(call)
            else:
                call.set_exception(error)
        except BaseException as e:
            if not call.done():
                call.set_exception(e)
            raise
