"""A stand-in for a Globus Compute endpoint that uses the endpoint's own code.

No Globus service is reachable in tests. What the service does between the
SDK and the endpoint is transport; what matters for the Directors is that
their start function survives the SDK's serialization and runs through the
endpoint's ``execute_task`` in another process, with the batch job's
environment. [`EndpointTaskExecutor`][tests.compute_endpoint.EndpointTaskExecutor]
does exactly that:

1. serializes the function, args and kwargs with the SDK's ``ComputeSerializer``
   into a ``Task`` message (as the service hands it to the endpoint);
2. runs ``globus_compute_endpoint.engines.helper.execute_task`` on it in a
   separate (spawned) process whose environment is the batch job's;
3. unpacks the ``Result`` and deserializes it with the SDK, raising the SDK's
   ``TaskExecutionFailed`` for a remote error.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import threading
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from concurrent.futures import Executor
from concurrent.futures import Future
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Result
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines.helper import execute_task
from globus_compute_sdk.errors import TaskExecutionFailed
from globus_compute_sdk.serialize import ComputeSerializer


def _enter_job(environ: Mapping[str, str]) -> None:
    os.environ.update(environ)


def _run_task(body: bytes, task_id: uuid.UUID, run_dir: str) -> tuple[int, bytes]:
    return os.getpid(), execute_task(body, task_id, run_dir=run_dir)


class EndpointTaskExecutor(Executor):
    """Run submissions like a Globus Compute endpoint's worker would.

    Args:
        max_workers: Worker processes (one per long-running Director).
        run_dir: The endpoint's task directory (absolute).
        environ: Variables of the batch job, set in every worker process.

    """

    def __init__(
        self,
        max_workers: int,
        run_dir: str | os.PathLike[str],
        environ: Mapping[str, str],
    ) -> None:
        self._serde = ComputeSerializer()
        self._run_dir = str(pathlib.Path(run_dir).resolve())
        self._pool = ProcessPoolExecutor(
            max_workers=max_workers,
            mp_context=multiprocessing.get_context('spawn'),
            initializer=_enter_job,
            initargs=(dict(environ),),
        )
        self._lock = threading.Lock()
        self.worker_pids: list[int] = []
        self.task_ids: list[uuid.UUID] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Serialize like the SDK, execute like the endpoint, deserialize like the SDK."""
        task_id = uuid.uuid4()
        buffer = self._serde.pack_buffers(
            [self._serde.serialize(fn), self._serde.serialize(args), self._serde.serialize(kwargs)],
        )
        body = messagepack.pack(Task(task_id=task_id, task_buffer=buffer))
        outer: Future[Any] = Future()
        inner = self._pool.submit(_run_task, body, task_id, self._run_dir)
        with self._lock:
            self.task_ids.append(task_id)

        def finished(done: Future[tuple[int, bytes]]) -> None:
            if done.cancelled():
                outer.cancel()
                return
            error = done.exception()
            if error is not None:
                outer.set_exception(error)
                return
            pid, packed = done.result()
            with self._lock:
                self.worker_pids.append(pid)
            result = messagepack.unpack(packed)
            assert isinstance(result, Result)
            if result.is_error:
                outer.set_exception(TaskExecutionFailed(result.data, task_details=result.details))
            else:
                outer.set_result(self._serde.deserialize(result.data))

        outer.set_running_or_notify_cancel()
        inner.add_done_callback(finished)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the worker processes."""
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
