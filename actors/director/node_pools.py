"""A Director's nodes: one worker pool per node, drained for MPI calls and for moves.

[`NodePools`][actors.director.node_pools.NodePools] keeps the Director's
[`NodeOwnership`][actors.job.ownership.NodeOwnership] (every node's owner,
phase, block and reported host: no other node state) and makes Parsl follow
it, one node's block at a time (``actors.execution.node_blocks``):

* a node the Director owns for single-slot work (``pool``) has a block whose
  one pool runs there; a node that arrives (``adopt``) gets one, and counts
  as moved once its pool has connected;
* a node taken for an MPI call is drained first: its pool is held (no new
  call), its running calls finish, its block stops; only then is it the
  call's (``mpi``). After the call it is ``held`` while other MPI calls wait,
  and gets its pool back once none does;
* a node that leaves (``release``) is drained the same way; past the
  deadline its calls are stopped with the block and run again elsewhere
  (a lost pool's rerun, counted in the call's ``attempts``).

Everything runs on the Director's event loop; Parsl is called on threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from actors.common.timing import LOOK_INTERVAL
from actors.common.timing import POOL_START_TIMEOUT
from actors.common.timing import RELEASE_DEADLINE
from actors.common.timing import TAKE_TIMEOUT
from actors.director.admission import NodeAdmission
from actors.director.context import DirectorContext
from actors.execution.block_health import BlockFacts
from actors.execution.block_health import BlockStartFailed
from actors.execution.block_health import Remedy
from actors.execution.block_health import Rule
from actors.execution.block_health import describe_end
from actors.execution.block_health import failed_starts_after
from actors.execution.block_health import judge
from actors.execution.block_health import never_starts
from actors.execution.interchange import connected_managers
from actors.execution.node_blocks import NodeBlockError
from actors.execution.node_blocks import block_state
from actors.execution.node_blocks import hold_block
from actors.execution.node_blocks import start_node_block
from actors.execution.node_blocks import stop_node_block
from actors.execution.pool_hosts import PoolHosts
from actors.execution.pool_monitor import PoolMonitor
from actors.execution.pool_monitor import PoolSnapshot
from actors.job.ownership import NodeOwnership
from actors.job.ownership import Owner
from actors.job.ownership import Phase

logger = logging.getLogger(__name__)


def mpi_capacity(ownership: NodeOwnership, *, one_job: bool = False) -> int:
    """Nodes MPI calls may use: owned, and not leaving (with ``one_job``: the most in one job)."""
    usable = [n for n in ownership.nodes() if ownership.owner(n).phase != 'leaving']
    if not one_job:
        return len(usable)
    return max(map(len, _by_job(usable, ownership.job).values()), default=0)


def _by_job(
    nodes: Iterable[str], job_of: Callable[[str], str | None]
) -> dict[str | None, list[str]]:
    """``nodes`` by the batch job each belongs to (``None``: the run's own), in order."""
    grouped: dict[str | None, list[str]] = {}
    for node in nodes:
        grouped.setdefault(job_of(node), []).append(node)
    return grouped


@dataclasses.dataclass(frozen=True)
class PoolsReport:
    """What a Director's nodes are now (for its ``status`` and ``node_load``).

    Attributes:
        nodes: Every node it owns.
        pool_nodes: How many of them are its single-slot pools' (``pool``).
        node_roles: Each node's owner (``pool``, ``mpi``, ``held``).
        node_states: Each node's phase, else its role (what it is doing).
        idle: Serving nodes whose pool runs nothing, and held nodes nobody waits for.
        held_calls: Calls the serving pools held at the last look.
        borrowed: Nodes lent to it for an MPI call -> their lender.
        moves_in: Nodes that moved in from other Directors.
        moves_out: Nodes that moved out to other Directors.
        node_jobs: Nodes of extra batch jobs -> their job.

    """

    nodes: list[str]
    pool_nodes: int
    node_roles: dict[str, str]
    node_states: dict[str, str]
    idle: list[str]
    held_calls: int
    borrowed: dict[str, str]
    moves_in: int
    moves_out: int
    node_jobs: dict[str, str]


class NodePools:
    """The worker pools of a Director's nodes, and who owns each node.

    Args:
        name: The Director's name.
        nodes: Its first nodes, or their ownership (shared with the admission).
        executor: The current DFK's worker-pool executor (it changes when a
            lost DFK is replaced).
        admission: The MPI node admission: held nodes wait for its waiting
            calls, and it looks again when the nodes MPI calls may use change.
        real_hosts: Pools run on the hosts they stand for (not a simulated
            job): a pool that reports another host than its block's node is
            refused and its block started again.
        mpi_in_one_job: An MPI call's ranks start as one step of one batch
            job (``srun``): its nodes all come from the run's own job or all
            from one extra job.

    """

    def __init__(
        self,
        name: str,
        nodes: Iterable[str] | NodeOwnership,
        executor: Callable[[], Any],
        admission: NodeAdmission | None = None,
        *,
        real_hosts: bool = False,
        mpi_in_one_job: bool = False,
    ) -> None:
        self.name = name
        self._mpi_in_one_job = mpi_in_one_job
        self.ownership = (
            nodes if isinstance(nodes, NodeOwnership) else NodeOwnership.of(name, nodes)
        )
        self._executor = executor
        self._monitor: tuple[Any, PoolMonitor] | None = None
        self._admission = admission
        # Measurements, not states: calls each pool held at the last look, failed starts in a row.
        self._tasks: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._ever_connected = False
        self._last_failed_end: Any = None
        self._real_hosts = real_hosts
        self._hosts = PoolHosts()
        self.failed: list[str] = []
        """Nodes given up because no pool would start there."""
        self.moves_in = 0
        self.moves_out = 0

    @classmethod
    def of(
        cls,
        context: DirectorContext,
        ownership: NodeOwnership,
        executor: Callable[[], Any],
        admission: NodeAdmission,
    ) -> NodePools:
        """The pools of the Director ``context`` describes, on the nodes ``ownership`` holds."""
        return cls(
            context.name,
            ownership,
            executor,
            admission,
            real_hosts=not context.profile.simulated_hosts,
            mpi_in_one_job=context.profile.mpi_in_one_job,
        )

    # What the Director has.

    @property
    def nodes(self) -> list[str]:
        """Every node the Director owns."""
        return self.ownership.nodes()

    @property
    def borrowed(self) -> dict[str, str]:
        """Nodes lent to this Director for an MPI call -> the Director that lent each."""
        # An arriving node is not this Director's yet: its move may still fail.
        arriving = set(self.ownership.nodes(phases=['arriving']))
        return {n: d for n, d in self.ownership.lenders().items() if n not in arriving}

    def report(self) -> PoolsReport:
        """What its nodes are now (the pools as of the last look)."""
        owners = self.ownership.owners()
        return PoolsReport(
            nodes=self.nodes,
            pool_nodes=len(self.ownership.nodes('pool')),
            node_roles={node: owner.role for node, owner in owners.items()},
            node_states={node: owner.phase or owner.role for node, owner in owners.items()},
            idle=self.idle(),
            held_calls=sum(self.tasks().values()),
            borrowed=dict(self.borrowed),
            moves_in=self.moves_in,
            moves_out=self.moves_out,
            node_jobs=self.ownership.jobs(),
        )

    def _mpi_waiting(self) -> int:
        """MPI calls waiting for nodes (held nodes wait for them)."""
        return 0 if self._admission is None else self._admission.waiting

    def _changed(self) -> None:
        """The nodes MPI calls may use changed: the admission looks again."""
        if self._admission is not None:
            self._admission.recheck()

    def serving(self) -> list[str]:
        """Nodes whose pool has connected and takes calls."""
        return self.ownership.nodes('pool', phases=['serving'])

    def idle(self) -> list[str]:
        """Serving nodes whose pool runs nothing, and held nodes nobody waits for."""
        held = [] if self._mpi_waiting() else self.ownership.nodes('held', phases=[None])
        return [n for n in self.serving() if not self._tasks.get(n)] + held

    def tasks(self) -> dict[str, int]:
        """Calls each serving node's pool holds (at the last look)."""
        return {node: self._tasks.get(node, 0) for node in self.serving()}

    # Parsl's side.

    async def start_blocks(self) -> None:
        """Give every pool node a block on the current DFK (a new one forgets the old blocks)."""
        self._tasks.clear()
        self._ever_connected = False
        for node in self.ownership.nodes():
            self.ownership.set_block(node, None)
        # Nodes in a drain or an adoption are that step's: it stops or gives up their block.
        for node in self.ownership.nodes('pool', phases=[None, 'starting', 'serving']):
            self.ownership.become(node, phase='launching', why='new DFK')
            await self._start(node)

    async def _start(self, node: str) -> str:
        """Submit ``node``'s block; a ``launching`` node is ``starting`` once it is submitted.

        A node whose block could not be submitted is ``starting`` with no block
        (as before: its calls wait; ``mend`` does not start one).
        """
        try:
            block = await asyncio.to_thread(start_node_block, self._executor(), node)
        except BaseException:
            if self.ownership.owner(node).phase == 'launching':
                self.ownership.become(node, phase='starting', why='block not started')
            raise
        self.ownership.set_block(node, block)
        if self.ownership.owner(node).phase == 'launching':
            self.ownership.become(node, phase='starting', why='block started')
        return block

    @property
    def monitor(self) -> PoolMonitor:
        """The current executor's pool monitor (a replacement DFK's executor gets its own)."""
        executor = self._executor()
        if self._monitor is None or self._monitor[0] is not executor:
            self._monitor = (executor, PoolMonitor(lambda: connected_managers(executor)))
        return self._monitor[1]

    async def look(self, max_age: float = 0.0) -> list[dict[str, Any]] | None:
        """Which pools are connected and what they hold, asked at most ``max_age`` s ago.

        Every reader (the watch, drains, adoptions, ``status``, ``node_load``)
        shares the monitor's snapshots: one question to the interchange at a
        time. ``None`` while the interchange is lost.
        """
        return await self._apply(await self.monitor.look(max_age))

    async def look_next(self) -> list[dict[str, Any]] | None:
        """The next snapshot, ``LOOK_INTERVAL`` after the last (what a waiting step reads)."""
        monitor = self.monitor
        return await self._apply(await monitor.after(monitor.latest, LOOK_INTERVAL))

    async def _apply(self, snapshot: PoolSnapshot | None) -> list[dict[str, Any]] | None:
        """Bring the nodes' phases and task counts up to ``snapshot``."""
        if snapshot is None:
            return None
        by_block = snapshot.by_block()
        for node, block in self.ownership.blocks().items():
            held = [dict(m) for m in by_block.get(block, [])]
            if self._real_hosts:
                held = await self._refuse_misplaced(node, block, held)
            if node not in self.ownership or self.ownership.block(node) != block:
                continue  # it changed while the hosts were read
            if held and self.ownership.owner(node).phase in ('starting', 'arriving'):
                self.ownership.become(node, phase='serving', why='pool connected')
                self._ever_connected = True
            self._tasks[node] = sum(int(m['tasks']) for m in held)
        return [dict(m) for m in snapshot.managers]

    async def _refuse_misplaced(
        self, node: str, block: str, managers: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The block's pools known to run on ``node``; any other is held, its block marked.

        A pool whose registration is not read yet counts as not connected.
        """
        if self.ownership.host(node) is not None:
            return []
        hosts = self._hosts.of(self._executor())
        known = [(m, hosts[str(m['manager'])]) for m in managers if str(m['manager']) in hosts]
        strangers = [host for _, host in known if not same_host(host, node)]
        if not strangers:
            return [m for m, _ in known]
        logger.error(
            '%s: a pool of block %s (meant for %s) runs on %s; refusing it and starting '
            'the block again',
            self.name,
            block,
            node,
            strangers[0],
        )
        self.ownership.set_host(node, strangers[0])
        await hold_block(self._executor(), block, managers)
        return []

    async def mend(self) -> BlockStartFailed | None:
        """Apply the block-health rules (``actors.execution.block_health``) to every pool node.

        Each node whose block is starting or serving is judged on the last
        snapshot and Parsl's block status: a broken block is stopped
        (``stop_node_block``) and another started on its node; a node whose
        blocks keep ending before their pool connects is given up (``failed``).

        Returns:
            The Director-wide failure once no block could start on any node
            and no pool ever connected (the DFK is given up), else ``None``.

        """
        executor = self._executor()
        latest = self.monitor.latest
        live = latest.by_block() if latest is not None else {}
        for node in self.ownership.nodes('pool', phases=['starting', 'serving']):
            block = self.ownership.block(node)
            if block is None:
                continue  # no block was submitted (its calls wait)
            state = block_state(executor, block)
            facts = BlockFacts(
                node=node,
                block=block,
                connected=self.ownership.owner(node).phase == 'serving',
                ended=state is not None and state.terminal,
                live_pools=len(live.get(block, [])) if latest is not None else 1,
                stranger=self.ownership.host(node),
                failed_starts=self._failures.get(node, 0),
            )
            rule = judge(facts)
            if rule is None:
                continue
            if not facts.ended:
                await asyncio.to_thread(stop_node_block, executor, block)
            # Stopping a block yields: another step (a drain, a move) may have taken the node.
            if (
                node not in self.ownership
                or self.ownership.block(node) != block
                or self.ownership.owner(node).phase not in ('starting', 'serving')
            ):
                continue
            self.ownership.set_host(node, None)
            self._failures[node] = failed_starts_after(facts)
            if facts.failed_to_start:
                self._last_failed_end = state
            if rule.remedy is Remedy.GIVE_UP_NODE:
                self._give_up(node, rule, state)
                continue
            logger.warning(
                '%s: block %s on %s: %s; starting another', self.name, block, node, rule.name
            )
            self.ownership.become(node, phase='launching', why=rule.name)
            try:
                await self._start(node)
            except NodeBlockError as e:
                logger.error('%s: %s', self.name, e)
        return never_starts(
            executor.label,
            ever_connected=self._ever_connected,
            given_up=len(self.failed),
            left=len(self.ownership.nodes('pool', phases=['launching', 'starting', 'serving'])),
            last=self._last_failed_end,
        )

    def _give_up(self, node: str, rule: Rule, state: Any) -> None:
        """Start no more blocks on ``node``: it leaves the Director (``failed``)."""
        logger.error(
            '%s: %d blocks on %s ended before their pool connected there (%s); giving the '
            'node up. Last block: %s',
            self.name,
            self._failures[node],
            node,
            rule.name,
            describe_end(state),
        )
        self.ownership.become(node, phase='leaving', why=rule.name)
        self.ownership.set_block(node, None)
        self.ownership.remove(node, rule.name)
        self.failed.append(node)
        self._changed()

    async def _drain(self, node: str, deadline: float = math.inf) -> int:
        """Hold a node's pool, wait for its calls (until ``deadline``), stop its block.

        Returns:
            How many calls were still running when the block stopped.

        """
        block = self.ownership.block(node)
        executor = self._executor()
        if block is not None:
            managers = await self.look() or []
            await hold_block(executor, block, managers)
            # Look again once held: calls handed to the pool between the first look and the
            # hold must finish too (they were stopped with the block and run again).
            await self.look()
            # A pool that never connected, or is gone, holds no call: its count is 0.
            until = time.monotonic() + deadline
            while self._tasks.get(node) and time.monotonic() < until:
                await self.look_next()
            left = self._tasks.get(node, 0)
            await asyncio.to_thread(stop_node_block, executor, block)
            self.ownership.set_block(node, None)
        else:
            left = 0
        self._tasks.pop(node, None)
        return left

    # Nodes for MPI calls.

    async def take_for_mpi(self, count: int, call: str) -> list[str]:
        """Drain ``count`` nodes and give them to an MPI call (held nodes first).

        The admission has counted them free: they are owned and not leaving.
        """
        # A node whose pool is being started (after an earlier MPI call) is
        # free but busy for a moment: wait for it rather than fail.
        until = time.monotonic() + TAKE_TIMEOUT
        while True:
            held = self.ownership.nodes('held', phases=[None])
            pools = sorted(
                self.ownership.nodes('pool', phases=['starting', 'serving']),
                key=lambda n: (self.ownership.owner(n).phase != 'serving', self._tasks.get(n, 0)),
            )
            chosen = nodes_for_mpi(
                held + pools, count, self.ownership.job, one_job=self._mpi_in_one_job
            )
            if len(chosen) == count:
                break
            if time.monotonic() > until:
                raise RuntimeError(
                    f'{self.name}: {count} node(s) admitted for {call} '
                    f'but only {len(chosen)} are free'
                    + (
                        ' in one batch job (an srun step runs in one job)'
                        if self._mpi_in_one_job
                        else ''
                    )
                )
            await asyncio.sleep(0.02)
        for node in chosen:
            phase: Phase = 'draining' if node in pools else 'reserved'
            self.ownership.become(node, phase=phase, why=f'chosen for {call}')
        try:
            await asyncio.gather(*(self._drain(n) for n in chosen if n in pools))
            for node in chosen:
                if self.ownership.owner(node).role == 'pool':
                    self.ownership.become(node, 'held', why='drained for MPI')
                self.ownership.become(node, 'mpi', why='mpi', call=call)
        except BaseException:
            await self._restore(chosen)
            raise
        return chosen

    def end_mpi(self, nodes: Iterable[str]) -> None:
        """An MPI call ended: its nodes are held, and get their pools back unless calls wait."""
        for node in nodes:
            if node in self.ownership and self.ownership.owner(node).role == 'mpi':
                self.ownership.become(node, 'held', why='mpi ended')
        self._changed()
        asyncio.get_running_loop().call_soon(self.settle)

    def settle(self) -> None:
        """Start pools on held nodes once no MPI call waits for them."""
        if self._mpi_waiting():
            return
        for node in self.ownership.nodes('held', phases=[None]):
            task = asyncio.ensure_future(self._restore([node]))
            task.add_done_callback(_log_failure)

    async def _restore(self, nodes: Iterable[str]) -> None:
        """Give nodes back to the pool (a block each): held or MPI ones, or drained ones."""
        for node in nodes:
            owner = self.ownership.owner(node) if node in self.ownership else None
            if owner is None or (owner.role == 'pool' and owner.phase != 'draining'):
                continue
            if owner.role == 'mpi':
                self.ownership.become(node, 'held', why='mpi ended')
            elif owner.phase == 'reserved':
                self.ownership.become(node, 'held', why='call not started')
            if owner.role == 'pool':
                self.ownership.become(node, phase='launching', why='pool back')
            else:
                self.ownership.become(node, 'pool', 'launching', why='pool back')
            try:
                await self._start(node)
            except NodeBlockError as e:
                logger.error('%s: %s', self.name, e)

    # Moves between Directors.

    async def adopt(self, node: str, *, lender: str | None = None, job: str | None = None) -> bool:
        """Start a pool on a node given to this Director; True once it serves.

        A pool that does not connect within ``POOL_START_TIMEOUT`` (or whose
        block ends first) is stopped and the node given up again: False.
        """
        arriving = Owner('pool', self.name, phase='arriving', lender=lender)
        self.ownership.add(node, arriving, 'borrowed' if lender else 'moved in')
        self.ownership.set_job(node, job)
        try:
            block = await self._start(node)
            until = time.monotonic() + POOL_START_TIMEOUT
            while self._arriving(node) and time.monotonic() < until:
                state = block_state(self._executor(), block)
                if state is not None and state.terminal:
                    break
                await self.look_next()
        except NodeBlockError as e:
            logger.error('%s: %s', self.name, e)
        if self._arriving(node):
            logger.error('%s: no worker pool started on %s; giving the node up', self.name, node)
            self.ownership.become(node, phase='leaving', why='pool did not start')
            await self._drain(node, 0)
            self.ownership.remove(node, 'pool did not start')
            return False
        self.moves_in += 1
        self._changed()
        return True

    def _arriving(self, node: str) -> bool:
        return self.ownership.owner(node).phase == 'arriving'

    def releasable(self, keep: int) -> list[str]:
        """Nodes that could leave now, idle ones first, keeping ``keep`` nodes."""
        free = self.idle() + [n for n in self.serving() if self._tasks.get(n)]
        spare = max(len(self.ownership) - keep, 0)
        return free[:spare]

    async def release(self, nodes: Iterable[str], deadline: float = RELEASE_DEADLINE) -> list[str]:
        """Drain and give up ``nodes`` (those still free to go); the nodes that left."""
        going = [
            n
            for n in nodes
            if n in self.ownership
            and self.ownership.owner(n).role in ('pool', 'held')
            and self.ownership.owner(n).phase in (None, 'starting', 'serving')
        ]
        for node in going:
            self.ownership.become(node, phase='leaving', why='release')
        self._changed()
        try:
            left = await asyncio.gather(*(self._drain(n, deadline) for n in going))
        except BaseException:
            # Not given away: the nodes stay (``mend`` restarts a pool whose block ended).
            for node in going:
                owner = self.ownership.owner(node)
                back: Phase | None = 'starting' if owner.role == 'pool' else None
                self.ownership.become(node, phase=back, why='release failed')
            raise
        for node, stopped in zip(going, left, strict=True):
            if stopped:
                logger.warning(
                    '%s: %d call(s) on %s outlived the move deadline; they run again elsewhere',
                    self.name,
                    stopped,
                    node,
                )
            self.ownership.remove(node, 'moved out')
            self.moves_out += 1
        self._changed()
        return going


def nodes_for_mpi(
    candidates: list[str],
    count: int,
    job_of: Callable[[str], str | None],
    *,
    one_job: bool,
) -> list[str]:
    """The first ``count`` candidates; with ``one_job``, all of one batch job (else none).

    An ``srun`` step runs inside one job: an MPI call there takes nodes of the
    run's own job if it has enough, else of one extra job.
    """
    if not one_job:
        return candidates[:count]
    ordered = sorted(_by_job(candidates, job_of).items(), key=lambda item: item[0] is not None)
    return next((nodes[:count] for _, nodes in ordered if len(nodes) >= count), [])


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error('restarting a pool failed: %s', task.exception())


def same_host(reported: str, node: str) -> bool:
    """Whether a pool's reported host name is ``node`` (short names, any case)."""
    return reported.split('.', 1)[0].lower() == node.split('.', 1)[0].lower()
