"""Where the Academy Manager runs the Directors.

``local`` runs them in the client's event loop, ``thread`` in threads of
this process, ``process`` in separate OS processes, and ``globus-compute``
on a Globus Compute endpoint (the batch job's lead node).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from concurrent.futures import Executor
from concurrent.futures import Future
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actors.client.exchange import is_networked
from actors.common.errors import ConfigurationError

EXECUTORS = ('local', 'thread', 'process', 'globus-compute')


class ProcessPerAgentExecutor(Executor):
    """Run each submitted agent in a fresh process of its own.

    A ``ProcessPoolExecutor`` shared by all Directors breaks for good when one
    of its processes is killed, failing every Director in it and every
    restart. Here each submission gets its own single-process pool: a killed
    Director fails only its own future, and the Manager's restart
    (``max_retries``) gets a fresh process.
    """

    def __init__(self) -> None:
        self._pools: set[ProcessPoolExecutor] = set()
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context('spawn')

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Start ``fn`` in a new process."""
        # spawn: forking a process that runs threads (asyncio, Parsl) is unsafe.
        pool = ProcessPoolExecutor(max_workers=1, mp_context=self._context)
        with self._lock:
            self._pools.add(pool)
        future = pool.submit(_run_then_exit_if_orphaned, os.getpid(), fn, *args, **kwargs)
        future.add_done_callback(lambda _: self._release(pool))
        return future

    def _release(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            self._pools.discard(pool)
        pool.shutdown(wait=False)

    def kill(self) -> int:
        """Kill the process of every agent still running; how many were killed.

        SIGKILL ends a stopped (SIGSTOP) or hung process too; the agent's
        future then fails, and a Director's watchdog stops its Parsl processes.
        """
        with self._lock:
            pools = list(self._pools)
        killed = 0
        for pool in pools:
            # ProcessPoolExecutor has no public way to its processes.
            for process in list((pool._processes or {}).values()):
                if process.is_alive():
                    process.kill()
                    killed += 1
        return killed

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut every process down."""
        with self._lock:
            pools = list(self._pools)
        for pool in pools:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _run_then_exit_if_orphaned(
    parent: int,
    fn: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Run ``fn``; then end this process if the client that started it is gone.

    A Director outlives a killed client (``--resume`` re-attaches to it). Once
    it has shut down, its pool process would wait forever for work from the
    dead client: nobody is left to take the result.
    """
    try:
        return fn(*args, **kwargs)
    finally:
        if os.getppid() != parent:
            logging.getLogger(__name__).info('client %d is gone; exiting', parent)
            logging.shutdown()
            os._exit(0)


def validate_executor(
    kind: str,
    exchange: str,
    endpoint: str | None = None,
) -> None:
    """Check that the executor exists and fits the exchange.

    Raises:
        ConfigurationError: If the combination cannot work.

    """
    if kind not in EXECUTORS:
        raise ConfigurationError(
            f'unknown executor {kind!r}; choose one of {", ".join(EXECUTORS)}',
        )
    if kind in ('process', 'globus-compute') and not is_networked(exchange):
        raise ConfigurationError(
            f'--executor {kind} runs Directors in other processes, which cannot '
            f'reach the in-process exchange {exchange!r}; use --exchange http, '
            'redis://HOST:PORT or an http(s):// URL',
        )
    if kind == 'globus-compute':
        if not endpoint:
            raise ConfigurationError(
                '--executor globus-compute needs --endpoint UUID of the '
                "batch job's Globus Compute endpoint",
            )
        try:
            uuid.UUID(endpoint)
        except ValueError:
            raise ConfigurationError(
                f'--endpoint {endpoint!r} is not a UUID; give the endpoint ID '
                'shown by `globus-compute-endpoint list`',
            ) from None


def make_executor(
    kind: str,
    *,
    directors: int,
    endpoint: str | None = None,
    endpoint_config: Mapping[str, Any] | None = None,
) -> Executor | None:
    """Build the executor that hosts the Directors (``None``: event loop)."""
    if kind == 'local':
        return None
    if kind == 'thread':
        return ThreadPoolExecutor(
            max_workers=directors,
            thread_name_prefix='director',
        )
    if kind == 'process':
        return ProcessPerAgentExecutor()
    if kind == 'globus-compute':
        from actors.client.globus import make_globus_executor

        assert endpoint is not None
        return make_globus_executor(endpoint, dict(endpoint_config or {}))
    raise ConfigurationError(
        f'unknown executor {kind!r}; choose one of {", ".join(EXECUTORS)}',
    )
