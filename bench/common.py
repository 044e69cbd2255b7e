"""What every benchmark shares: partitions, Directors, a direct Parsl DFK, results.

Both sides of every comparison are built from the same site profile and
``actors.site.parsl_config.build_config`` for a partition of the same shape, so a
ratio measures what the Director layer adds and nothing else.

The profile is the simulated job (``local``) unless ``python -m bench --site
NAME`` chose a real one (``use_site``); there the partitions are the batch
allocation's nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import pathlib
import statistics
import time
from collections.abc import AsyncIterator
from collections.abc import Iterator
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from academy.exchange import ExchangeFactory
from academy.exchange import LocalExchangeFactory
from academy.manager import Manager
from parsl.app.app import python_app
from parsl.dataflow.dflow import DataFlowKernel

from actors.client.launch import launch_directors
from actors.client.launch import wait_ready
from actors.job.partition import Partition
from actors.job.partition import discover_nodes
from actors.job.partition import simulated_nodes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions
from actors.site.parsl_config import build_config
from actors.site.profile import SiteProfile
from actors.site.profile import load_site
from actors.worker.run import run_tool
from actors.worker.wire import pack_call

SITE = 'local'
READY_TIMEOUT = 180.0


@dataclasses.dataclass
class _Chosen:
    """What ``python -m bench`` chose for every benchmark of the run."""

    site: str = SITE


_CHOSEN = _Chosen()


@dataclasses.dataclass(frozen=True)
class Options:
    """Knobs shared by all benchmarks.

    Attributes:
        quick: Smaller sizes (about a minute per benchmark instead of several).
        calls: No-op calls per throughput measurement.
        rounds: Alternating rounds per side where a benchmark alternates.
        imbalanced: ``elastic``'s uneven load: calls to Director 0, calls to
            Director 1, seconds per call.

    """

    quick: bool = False
    calls: int = 3000
    rounds: int = 6
    imbalanced: tuple[int, int, float] = (8, 72, 2.0)


@dataclasses.dataclass(frozen=True)
class Ratio:
    """One row of the ratios table: a measured value and its target.

    Attributes:
        name: Key in ``bench-results.json``.
        value: Measured value.
        target: The value to meet.
        at_most: True when the value must be <= target, False for >=.
        unit: Printed after the value and the target.

    """

    name: str
    value: float
    target: float
    at_most: bool
    unit: str = ''

    @property
    def met(self) -> bool:
        """Whether the value meets the target."""
        if math.isnan(self.value):
            return False
        return self.value <= self.target if self.at_most else self.value >= self.target


class AllocationError(RuntimeError):
    """A real site's batch allocation cannot hold a benchmark (too few nodes, or none)."""


def use_site(name: str) -> None:
    """Run the benchmarks on the site profile ``name`` (``python -m bench --site``).

    Args:
        name: A profile under ``configs/``; ``local`` is the simulated job.

    """
    load_site(name)  # an unknown or broken profile fails here, before anything starts
    _CHOSEN.site = name


def profile() -> SiteProfile:
    """The site profile every benchmark uses (the simulated job unless ``use_site`` chose one)."""
    return load_site(_CHOSEN.site)


def job_nodes(nodes: int) -> list[str]:
    """The first ``nodes`` nodes of the job: made up on the simulated job, else the allocation's.

    Raises:
        AllocationError: On a real site, outside an allocation or in one of fewer nodes.

    """
    site = profile()
    if site.scheduler == 'none':
        return simulated_nodes(nodes)
    found, source = discover_nodes()
    if source.kind == 'simulated':
        raise AllocationError(
            f'--site {site.name} runs inside a batch allocation of {nodes} nodes '
            f'(no SLURM_JOB_NODELIST or PBS_NODEFILE here), e.g. salloc -N {nodes}'
        )
    if len(found) < nodes:
        raise AllocationError(
            f'the allocation has {len(found)} node(s) ({source.kind} {source.detail}); '
            f'this benchmark needs {nodes}'
        )
    return found[:nodes]


def partitions(root: pathlib.Path, nodes: int, count: int) -> list[Partition]:
    """Write ``count`` partitions of a ``nodes``-node job (``job_nodes``) under ``root``."""
    return write_partitions(split_nodes(job_nodes(nodes), count=count), root)


@contextlib.contextmanager
def parsl_dfk(
    root: pathlib.Path,
    partition: Partition,
    workers_per_node: int,
    site: SiteProfile | None = None,
) -> Iterator[Any]:
    """A private DFK with the Directors' config; yields the no-op-capable app."""
    config = build_config(
        partition,
        site or profile(),
        root / 'parsl-direct' / f'partition-{partition.index}',
        workers_per_node=workers_per_node,
    )
    dfk = DataFlowKernel(config)
    try:
        yield python_app(run_tool, data_flow_kernel=dfk)
    finally:
        dfk.cleanup()


@contextlib.asynccontextmanager
async def directors(
    root: pathlib.Path,
    parts: Sequence[Partition],
    workers_per_node: int,
    factory: ExchangeFactory[Any] | None = None,
    site: SiteProfile | None = None,
) -> AsyncIterator[tuple[Manager[Any], list[Any]]]:
    """Directors on ``parts`` in this process's event loop, ready for calls."""
    manager = await Manager.from_exchange_factory(factory or LocalExchangeFactory())
    async with manager:
        handles = await launch_directors(
            manager,
            parts,
            site or profile(),
            str(root),
            workers_per_node=workers_per_node,
        )
        await wait_ready(manager, handles, timeout=READY_TIMEOUT)
        yield manager, handles


def executor_no_op(executor: Any) -> Future[Any]:
    """One no-op call straight to an HTEX, packed as a Director packs it."""
    return executor.submit_payload({}, pack_call(run_tool, ('mock_md', {}), {}))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method='inclusive')[round(q) - 1]


WARM_CALL_S = 0.05
"""Seconds each warm-up call holds its worker, so that one worker cannot take them all."""


async def wait_workers(handles: Sequence[Any], timeout: float = READY_TIMEOUT) -> None:
    """Wait until every worker of every Director has run a call.

    A worker pool registers with the interchange as soon as it starts, before
    its worker processes (spawned, each importing Parsl and the tools) can take
    a task; on this 2-core machine the last worker is up seconds after the
    first. Timing calls from the first registration measures worker boot, not
    the layer (``startup`` measures that); so each Director runs short
    warm-up calls until every one of its slots has answered. Direct Parsl is
    warmed the same way (``wait_parsl_workers``).
    """
    deadline = time.monotonic() + timeout
    while True:
        statuses = await asyncio.gather(*(h.status() for h in handles))
        if all(s.workers_connected >= s.slots for s in statuses):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f'workers did not all connect within {timeout:.0f}s: {statuses}')
        await asyncio.sleep(0.1)
    await asyncio.gather(
        *(_warm_director(h, s.slots, deadline) for h, s in zip(handles, statuses, strict=True)),
    )


async def _warm_director(handle: Any, slots: int, deadline: float) -> None:
    seen: set[tuple[str | None, int | None]] = set()
    while len(seen) < slots:
        if time.monotonic() > deadline:
            raise TimeoutError(f'only {len(seen)} of {slots} workers ran a call: {sorted(seen)}')
        results = await handle.md_sim_batch(
            iterations=2 * slots,
            params={'duration': WARM_CALL_S},
        )
        seen.update((r.node, r.worker) for r in results if r.ok)


def wait_parsl_workers(app: Any, slots: int, timeout: float = READY_TIMEOUT) -> None:
    """Wait until a direct DFK's ``slots`` workers have each run a call (see ``wait_workers``)."""
    dfk = app.data_flow_kernel
    (executor,) = [e for e in dfk.executors.values() if e.label != '_parsl_internal']
    deadline = time.monotonic() + timeout
    while sum(m['worker_count'] for m in executor.connected_managers()) < slots:
        if time.monotonic() > deadline:
            raise TimeoutError(f'direct Parsl workers did not connect within {timeout:.0f}s')
        time.sleep(0.1)
    seen: set[tuple[str, int]] = set()
    while len(seen) < slots:
        if time.monotonic() > deadline:
            raise TimeoutError(f'only {len(seen)} of {slots} direct Parsl workers ran a call')
        futures = [app('mock_md', {'duration': WARM_CALL_S}) for _ in range(2 * slots)]
        outcomes = [future.result() for future in futures]
        seen.update((o['node'], o['worker']) for o in outcomes if o['ok'])
