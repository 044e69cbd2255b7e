"""Helpers that start real Directors (real Parsl workers) for the tests."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator
from typing import Any

from academy.exchange import LocalExchangeFactory
from academy.manager import Manager

from actors.client import launch_directors
from actors.client import wait_ready
from actors.partition import Partition
from actors.partition import simulated_nodes
from actors.partition import split_nodes
from actors.partition import write_partitions
from actors.sites import load_site


def make_partitions(run_dir: pathlib.Path, nodes: int = 4, partitions: int = 2) -> list[Partition]:
    return write_partitions(split_nodes(simulated_nodes(nodes), count=partitions), run_dir)


@contextlib.asynccontextmanager
async def running_directors(
    run_dir: pathlib.Path,
    *,
    nodes: int = 4,
    partitions: int = 2,
    workers_per_node: int = 2,
    factory: Any = None,
    executor: Any = None,
) -> AsyncIterator[tuple[Manager[Any], list[Any], list[Partition]]]:
    parts = make_partitions(run_dir, nodes, partitions)
    manager = await Manager.from_exchange_factory(
        factory or LocalExchangeFactory(),
        executors=executor,
    )
    async with manager:
        handles = await launch_directors(
            manager,
            parts,
            load_site('local'),
            str(run_dir),
            workers_per_node=workers_per_node,
        )
        await wait_ready(manager, handles, timeout=90)
        yield manager, handles, parts
