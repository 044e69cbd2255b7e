"""What a Director reports: its status for clients and its load for the node coordinator.

Each part reports on itself (``pools.report()``, ``admission.report()``,
``ledger.report()``); ``Snapshots`` only asks them and assembles the answer.
Its parts are imported for typing only: the actions import this module
without loading Parsl.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from actors.common.results import DirectorStatus
from actors.common.results import NodeLoad
from actors.common.timing import STATUS_MAX_AGE

if TYPE_CHECKING:
    from actors.director.admission import NodeAdmission
    from actors.director.context import DirectorContext
    from actors.director.dfk_host import DfkHost
    from actors.director.drain import WalltimeDrain
    from actors.director.ledger import Ledger
    from actors.director.node_pools import NodePools
    from actors.director.runner import CallRunner


@dataclasses.dataclass(frozen=True)
class Snapshots:
    """A started Director's reports, from its parts.

    Attributes:
        context: Who the Director is.
        host: Its DFK host (a DFK that is not up has no pools to look at).
        pools: Its nodes and their pools.
        admission: Its MPI calls.
        ledger: Its calls' counts and throughput.
        drain: Whether it drains.
        runner: Its fast-path count.

    """

    context: DirectorContext
    host: DfkHost
    pools: NodePools
    admission: NodeAdmission
    ledger: Ledger
    drain: WalltimeDrain
    runner: CallRunner

    async def status(self) -> DirectorStatus:
        """The Director's nodes, slots and calls (its ``status`` action)."""
        running = 0
        workers = 0
        if self.host.started:
            # The pool monitor's snapshot (shared with the watch, drains and node_load);
            # a lost interchange gives none (a replacement is on its way).
            for manager in await self.pools.look(max_age=STATUS_MAX_AGE) or []:
                running += manager['tasks']
                workers += manager['worker_count']
        calls = self.ledger.report()
        pools = self.pools.report()
        mpi = self.admission.report()
        context = self.context
        return DirectorStatus(
            director=context.name,
            partition=context.index,
            nodes=pools.nodes,
            slots=context.workers_per_node * pools.pool_nodes,
            workers_connected=workers,
            queued=max(calls.in_flight - running, 0),
            running=min(running, calls.in_flight),
            done=calls.done,
            failed=calls.failed,
            incarnation=context.incarnation,
            draining=self.drain.draining,
            walltime_end=context.walltime.end,
            mpi_nodes_free=mpi.free,
            mpi_waiting=mpi.waiting,
            mpi_reservation=mpi.reservation,
            mpi_backfilled=mpi.backfilled,
            recent_throughput=calls.throughput,
            throughput_window=calls.window,
            node_roles=pools.node_roles,
            node_states=pools.node_states,
            moves_in=pools.moves_in,
            moves_out=pools.moves_out,
            borrowed=pools.borrowed,
            mpi_max_nodes=max(mpi.most or 0, len(pools.nodes)),
            tool=context.tool,
            fast_calls=self.runner.fast_calls,
            node_jobs=pools.node_jobs,
        )

    async def node_load(self) -> NodeLoad:
        """What the coordinator's policy needs: nodes, idle nodes, queued calls, MPI needs.

        The pools are looked at now, not at the watch's last look: calls handed
        to a pool since then must not count as queued (a node would move for them).
        """
        if self.host.started:
            await self.pools.look()
        calls = self.ledger.report()
        pools = self.pools.report()
        mpi = self.admission.report()
        context = self.context
        queued = max(calls.in_flight - pools.held_calls - mpi.waiting - mpi.running, 0)
        return NodeLoad(
            director=context.name,
            nodes=pools.nodes,
            idle=pools.idle,
            queued=queued,
            queued_seconds=None if calls.mean_declared is None else queued * calls.mean_declared,
            drain_at=self.drain.walltime.drain_at,
            mpi_need=mpi.head_needs,
            borrowed=pools.borrowed,
            workers_per_node=context.workers_per_node,
            draining=self.drain.draining,
            incarnation=context.incarnation,
        )
