"""What a Director reports: its status for clients and its load for the node coordinator.

Both take the started ``Director`` agent (typed ``Any``: this module is imported by it).
"""

from __future__ import annotations

from typing import Any

from actors.common.results import DirectorStatus
from actors.common.timing import STATUS_MAX_AGE
from actors.job.partition import Partition


async def director_status(director: Any) -> DirectorStatus:
    """The Director's nodes, slots and calls (its ``status`` action)."""
    running = 0
    workers = 0
    if director.host is not None and director.host.started:
        # The pool monitor's snapshot (shared with the watch, drains and node_load);
        # a lost interchange gives none (a replacement is on its way).
        for manager in await director.pools.look(max_age=STATUS_MAX_AGE) or []:
            running += manager['tasks']
            workers += manager['worker_count']
    in_flight, done, failed = director.ledger.counts()
    partition = director.partition
    assert isinstance(partition, Partition), 'Director has not started'
    pools = director.pools
    return DirectorStatus(
        director=director.name,
        partition=partition.index,
        nodes=pools.nodes,
        slots=director.workers_per_node * len(pools.ownership.nodes('pool')),
        workers_connected=workers,
        queued=max(in_flight - running, 0),
        running=min(running, in_flight),
        done=done,
        failed=failed,
        incarnation=director.incarnation,
        draining=director.drain.draining,
        walltime_end=director.walltime.end,
        mpi_nodes_free=director.admission.free,
        mpi_waiting=director.admission.waiting,
        mpi_reservation=director.admission.reservation(),
        mpi_backfilled=director.admission.queue.backfilled,
        recent_throughput=director.ledger.rate.rate(),
        throughput_window=director.ledger.rate.window,
        node_roles={node: owner.role for node, owner in pools.ownership.owners().items()},
        moves_in=pools.moves_in,
        moves_out=pools.moves_out,
        borrowed=dict(pools.borrowed),
        mpi_max_nodes=max(director.admission.most or 0, len(pools.nodes)),
        tool=director.tool,
        fast_calls=0 if director.runner is None else director.runner.fast_calls,
    )


async def node_load(director: Any) -> dict[str, Any]:
    """What the coordinator's policy needs: nodes, idle nodes, queued calls, MPI needs.

    The pools are looked at now, not at the watch's last look: calls handed
    to a pool since then must not count as queued (a node would move for them).
    """
    pools = director.pools
    if director.host is not None and director.host.started:
        await pools.look()
    in_flight, _, _ = director.ledger.counts()
    held = sum(pools.tasks().values())
    mpi = director.admission.waiting + director.admission.queue.running
    return {
        'director': director.name,
        'nodes': pools.nodes,
        'idle': pools.idle(),
        'queued': max(in_flight - held - mpi, 0),
        'mpi_need': director.admission.head_needs(),
        'borrowed': dict(pools.borrowed),
        'workers_per_node': director.workers_per_node,
        'draining': director.drain.draining,
        'incarnation': director.incarnation,
    }
