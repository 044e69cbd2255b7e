"""The NodeCoordinator: one Academy agent per job that moves nodes between live Directors.

Every ``policy.period`` seconds it asks each Director for its ``node_load``,
plans moves ([`plan_moves`][actors.coordinator.policy.plan_moves]) and
carries them out over the exchange: the giver's ``release_nodes`` drains a
node and stops its pool; the node is ``moving``; the receiver's
``adopt_node`` starts a pool pinned to it. A receiver that cannot start a
pool there gives it back to the giver (or the node is ``free``, and goes to
the next Director that wants one). A Director that stops answering for
``policy.dead_after`` seconds may only be silent, its pools still running calls:
its nodes are fenced (``actors.coordinator.fencing``: its watchdog stops its
pools and the Director) and go to the ``free`` set, and to the others, only
once that is confirmed. Each change is journaled (``actors.store.moves``)
before the next one starts; a layout with a node under two owners is never
written.

A Director's reported nodes are checked against this ownership: nodes it
reports that belong to another are not taken into the layout (it is asked
to release them); nodes it no longer reports (it restarted) go home to
their lender if it had borrowed them, else to the ``free`` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine
from collections.abc import Sequence
from typing import Any

from academy.agent import Agent
from academy.agent import action
from academy.agent import loop
from academy.handle import Handle

from actors.common.timing import POOL_START_TIMEOUT
from actors.common.timing import RELEASE_DEADLINE
from actors.coordinator.fencing import Fences
from actors.coordinator.policy import ElasticPolicy
from actors.coordinator.policy import Load
from actors.coordinator.policy import Move
from actors.coordinator.policy import plan_moves
from actors.job.ownership import OwnershipError
from actors.job.ownership import check_layout
from actors.store.moves import MoveJournal
from actors.store.moves import nodes_of_this_run

logger = logging.getLogger(__name__)

COORDINATOR_NAME = 'node-coordinator'

LOAD_TIMEOUT = 10.0
"""Seconds a Director gets to answer ``node_load``."""

FREE_RETRY = 60.0
"""Seconds before a node on which no pool would start is offered again (to that Director)."""


class NodeCoordinator(Agent):
    """Moves nodes between the Directors of one job.

    Args:
        directors: Handles of every Director of the job.
        run_dir: The run directory (the move journal goes to ``<run>/nodes``).
        policy: How nodes move (default ``ElasticPolicy()``).

    """

    def __init__(
        self,
        directors: Sequence[Handle[Any]],
        run_dir: str,
        policy: ElasticPolicy | None = None,
    ) -> None:
        super().__init__()
        self.directors = list(directors)
        self.run_dir = run_dir
        self.policy = policy or ElasticPolicy()
        self.layout: dict[str, list[str]] = {}
        self.job_nodes: set[str] = set()
        self.moving: dict[str, tuple[str, str]] = {}
        self.free: list[str] = []
        self.moves = 0
        self.violations: list[str] = []
        self._names: dict[int, str] = {}
        self._last_answer: dict[str, float] = {}
        self._calm_since: dict[str, float] = {}
        self._arrived: dict[str, float] = {}
        self._dead: set[str] = set()
        self._handles: dict[str, Handle[Any]] = {}
        self._retry_at: dict[str, float] = {}
        self._refused: dict[tuple[str, str], float] = {}
        self._journal: MoveJournal | None = None
        self.loans: dict[str, str] = {}
        self._fences = Fences(run_dir, COORDINATOR_NAME)
        self._known: set[str] = set()
        self._orphans_at = 0.0
        self._tasks: dict[str, asyncio.Future[Any]] = {}

    async def agent_on_startup(self) -> None:
        """Open the move journal; after a restart, learn the job's nodes from the layout."""
        self._journal = await asyncio.to_thread(MoveJournal, self.run_dir)
        # Restarted mid-run: a node that was moving when the last incarnation died is
        # reported by no Director, and would stay unused for the rest of the run.
        self._known = await asyncio.to_thread(nodes_of_this_run, self.run_dir)
        self._orphans_at = time.monotonic() + self.policy.orphan_grace

    async def agent_on_shutdown(self) -> None:
        """Close the move journal."""
        if self._journal is not None:
            await asyncio.to_thread(self._journal.close)

    @loop
    async def balance(self, shutdown: asyncio.Event) -> None:
        """Look at the Directors and move nodes, every ``policy.period`` seconds."""
        while not shutdown.is_set():
            try:
                await self.step()
            except Exception:
                logger.exception('%s: a balancing step failed', COORDINATOR_NAME)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(shutdown.wait(), self.policy.period)

    @action
    async def node_layout(self) -> dict[str, Any]:
        """Each Director's nodes, the moving and free nodes, and how many moves were made."""
        return {
            'directors': {d: list(n) for d, n in self.layout.items()},
            'moving': {n: list(pair) for n, pair in self.moving.items()},
            'free': list(self.free),
            'moves': self.moves,
            'dead': sorted(self._dead),
            'violations': list(self.violations),
            'fencing': self._fences.nodes(),
            'loans': dict(self.loans),
        }

    # One step.

    async def step(self) -> None:
        """Ask every Director for its load, reclaim the nodes of dead ones, make the moves."""
        now = time.monotonic()
        answers = await asyncio.gather(
            *(self._load(index, handle) for index, handle in enumerate(self.directors))
        )
        loads = [load for load in answers if load is not None]
        first = not self.layout
        for load in loads:
            if load.director in self._fences:
                await self._answers_again(load.director)
        for load in loads:
            if first:
                self.layout[load.director] = list(load.nodes)
                self.loans.update(load.borrowed)
            else:
                await self._accept(load)
            self.job_nodes.update(load.nodes)
            if load.queued or load.mpi_need:
                self._calm_since[load.director] = now
            else:
                self._calm_since.setdefault(load.director, now)
        loads = [self._checked(load) for load in loads]
        if first and loads:
            for load in loads:
                for node in load.nodes:
                    self._record('start', node, None, load.director)
            self._write_layout()
        self._free_orphans(len(loads))
        self._check()
        # Not ``now``: asking a silent Director took up to LOAD_TIMEOUT of its silence.
        await self._reclaim(time.monotonic())
        await self._give_free(loads)
        moves = plan_moves(
            [load for load in loads if load.director not in self._dead],
            self.policy,
            now=now,
            calm_since=self._calm_since,
            arrived=self._arrived,
        )
        moves = [m for m in (self._not_refused(m, now) for m in moves) if m.nodes]
        if moves:
            await asyncio.gather(*(self._move(move) for move in moves))

    def _free_orphans(self, answered: int) -> None:
        """Once, after a restart: free the job's nodes that nobody reports (they were moving)."""
        if not self._known or time.monotonic() < self._orphans_at:
            return
        if answered < len(self.directors) or self._dead:
            return  # a Director that did not answer may hold them: look again next step
        owned = {n for nodes in self.layout.values() for n in nodes}
        held = owned | set(self.free) | set(self.moving) | set(self._fences.nodes())
        orphans = sorted(self._known - held)
        self._known = set()
        for node in orphans:
            self.job_nodes.add(node)
            self.free.append(node)
            self._record('free', node, None, None, 'owned by nobody after a coordinator restart')
        if orphans:
            self._write_layout()

    def _not_refused(self, move: Move, now: float) -> Move:
        """The move without nodes its receiver could not start a pool on lately."""
        nodes = tuple(n for n in move.nodes if self._refused.get((n, move.receiver), 0.0) <= now)
        return dataclasses.replace(move, nodes=nodes)

    async def _load(self, index: int, handle: Handle[Any]) -> Load | None:
        try:
            answer: dict[str, Any] = await asyncio.wait_for(
                handle.action('node_load'), LOAD_TIMEOUT
            )
        except Exception as e:
            name = self._names.get(index)
            logger.debug('%s: no load from %s: %s', COORDINATOR_NAME, name or handle, e)
            return None
        load = Load.from_answer(answer)
        self._names[index] = load.director
        self._handles[load.director] = handle
        self._last_answer[load.director] = time.monotonic()
        if load.director in self._dead:
            logger.warning('%s: %s answers again', COORDINATOR_NAME, load.director)
            self._dead.discard(load.director)
        return load

    def _check(self) -> None:
        """Check that each node has one owner; log (and keep) any breach."""
        try:
            check_layout(
                self.job_nodes,
                {d: n for d, n in self.layout.items() if d not in self._dead},
                moving=[*self.moving, *self._fences.nodes()],
                free=self.free,
            )
        except OwnershipError as e:
            logger.error('%s: %s', COORDINATOR_NAME, e)
            self.violations.append(str(e))

    async def _reclaim(self, now: float) -> None:
        """Fence the Directors that stopped answering; free their nodes once fenced."""
        for director, last in list(self._last_answer.items()):
            if director in self._dead or now - last < self.policy.dead_after:
                continue
            self._dead.add(director)
            nodes = self.layout.get(director, [])
            # Listed under nobody before the fence: a restart must not take them back.
            self.layout[director] = []
            logger.warning(
                '%s: %s has not answered for %.0fs; fencing it before its %d node(s) go '
                'to the others',
                COORDINATOR_NAME,
                director,
                now - last,
                len(nodes),
            )
            for node in nodes:
                self.loans.pop(node, None)
                self._record('fencing', node, director, None, 'no answer')
            self._fences.hold(director, nodes)
            self._write_layout()
            await asyncio.to_thread(self._fences.request, director)
        for director in list(self._fences.pending):
            at = await asyncio.to_thread(self._fences.confirmed, director)
            if at is None:
                await asyncio.to_thread(self._fences.retry, director)
                continue
            nodes = await asyncio.to_thread(self._fences.finish, director)
            for node in nodes:
                self.free.append(node)
                self._record('lost', node, director, None, f'no answer; fenced at {at:.3f}')
            self._write_layout()

    async def _answers_again(self, director: str) -> None:
        """A fenced Director answers: restarted after its fence, or the fence never took."""
        if await asyncio.to_thread(self._fences.confirmed, director) is not None:
            return  # a new incarnation; _reclaim frees the fenced nodes this step
        nodes = await asyncio.to_thread(self._fences.finish, director)
        logger.warning(
            '%s: %s answers again before its fence was confirmed; it keeps its node(s) %s',
            COORDINATOR_NAME,
            director,
            ', '.join(nodes) or 'none',
        )
        self.layout[director] = [*self.layout.get(director, []), *nodes]
        self._write_layout()

    async def _accept(self, load: Load) -> None:
        """Take a Director's reported nodes into the layout, checked against ours."""
        director = load.director
        taken = {n: d for d, nodes in self.layout.items() if d != director for n in nodes}
        taken.update((n, 'free') for n in self.free)
        taken.update((n, 'moving') for n in self.moving)
        taken.update((n, f'fencing {d}') for n, d in self._fences.nodes().items())
        had = self.layout.get(director, [])
        conflicts = [n for n in load.nodes if n in taken]
        self.layout[director] = [n for n in load.nodes if n not in taken]
        for node in self.layout[director]:
            if node in load.borrowed:
                self.loans[node] = load.borrowed[node]
        if conflicts:
            said = ', '.join(f'{n} ({taken[n]})' for n in conflicts)
            message = f'{director} reports node(s) owned by others, not taken: {said}'
            logger.error('%s: %s; asking it to release them', COORDINATOR_NAME, message)
            self.violations.append(message)
            self._release(director, conflicts)
        for node in [n for n in had if n not in load.nodes]:
            await self._gone(director, node)

    def _checked(self, load: Load) -> Load:
        """``load`` with only the nodes the layout gives its Director (what the policy moves)."""
        mine = set(self.layout.get(load.director, []))
        return dataclasses.replace(
            load,
            nodes=tuple(n for n in load.nodes if n in mine),
            idle=tuple(n for n in load.idle if n in mine),
            borrowed={n: d for n, d in load.borrowed.items() if n in mine},
        )

    def _release(self, director: str, nodes: list[str]) -> None:
        handle = self._handles.get(director)
        if handle is None or director in self._tasks:
            return  # one release at a time: the next step asks again if it is needed
        action: Coroutine[Any, Any, list[str]] = handle.action(
            'release_nodes', nodes, keep=0, idle_only=False
        )
        task = asyncio.ensure_future(asyncio.wait_for(action, RELEASE_DEADLINE + LOAD_TIMEOUT))
        self._tasks[director] = task
        task.add_done_callback(lambda done: self._released(director, done))

    def _released(self, director: str, task: asyncio.Future[Any]) -> None:
        self._tasks.pop(director, None)
        if not task.cancelled() and task.exception() is not None:
            logger.warning(
                '%s: %s did not release: %s', COORDINATOR_NAME, director, task.exception()
            )

    async def _gone(self, director: str, node: str) -> None:
        """A node ``director`` no longer reports (it restarted): home to its lender, or free."""
        lender = self.loans.pop(node, None)
        if lender is not None and await self._adopt(lender, node, why='home'):
            self._record('home', node, director, lender, f'{director} restarted')
        else:
            self.free.append(node)
            self._record('free', node, director, None, f'no longer reported by {director}')
        self._write_layout()

    async def _give_free(self, loads: Sequence[Load]) -> None:
        """Hand free nodes to the Directors that want nodes most (or to the fewest-noded)."""
        live = [load for load in loads if load.director not in self._dead and not load.draining]
        now = time.monotonic()
        ready = [n for n in self.free if self._retry_at.get(n, 0.0) <= now]
        while ready and live:
            load = max(
                live,
                key=lambda x: (x.mpi_need + x.queued / x.workers_per_node, -len(x.nodes)),
            )
            node = ready.pop(0)
            self.free.remove(node)
            if await self._adopt(load.director, node, why='reclaimed'):
                self._retry_at.pop(node, None)
                self._record('reclaimed', node, None, load.director, 'free node')
                self._write_layout()
            else:
                self.free.append(node)
                self._retry_at[node] = time.monotonic() + FREE_RETRY
                self._record('free', node, None, None, f'{load.director} could not start a pool')
                return

    async def _move(self, move: Move) -> None:
        giver = self._handles[move.giver]
        # A lent node may be the lender's floor (the policy allows it for MPI calls).
        keep = 0 if move.why == 'borrow' else self.policy.keep(move.giver)
        try:
            left: list[str] = await asyncio.wait_for(
                giver.action('release_nodes', list(move.nodes), keep=keep),
                RELEASE_DEADLINE + LOAD_TIMEOUT,
            )
        except Exception as e:
            logger.warning('%s: %s did not release %s: %s', COORDINATOR_NAME, move.giver, move, e)
            return
        for node in left:
            self.loans.pop(node, None)
            self._own(node, move.giver, None)
            self.moving[node] = (move.giver, move.receiver)
            self._record('moving', node, move.giver, move.receiver, move.why)
        await asyncio.gather(*(self._deliver(node, move) for node in left))

    async def _deliver(self, node: str, move: Move) -> None:
        lender = move.giver if move.why == 'borrow' else None
        if await self._adopt(move.receiver, node, lender=lender, why=move.why):
            if lender is not None:
                self.loans[node] = lender
            self.moving.pop(node, None)
            self.moves += 1
            self._arrived[node] = time.monotonic()
            self._record('moved', node, move.giver, move.receiver, move.why)
            self._write_layout()
            return
        self._refused[(node, move.receiver)] = time.monotonic() + FREE_RETRY
        if await self._adopt(move.giver, node, why='back'):
            self.moving.pop(node, None)
            self._record('back', node, move.receiver, move.giver, 'no pool started')
        else:
            self.moving.pop(node, None)
            self.free.append(node)
            self._retry_at[node] = time.monotonic() + FREE_RETRY
            self._record('free', node, move.receiver, None, 'no pool started')
        self._write_layout()

    async def _adopt(
        self, director: str, node: str, *, lender: str | None = None, why: str = ''
    ) -> bool:
        """Ask ``director`` to start a pool on ``node``; record it as its owner if it did."""
        handle = self._handles.get(director)
        if handle is None or director in self._dead:
            return False
        try:
            adopted: bool = await asyncio.wait_for(
                handle.action('adopt_node', node, lender),
                POOL_START_TIMEOUT + LOAD_TIMEOUT,
            )
        except Exception as e:
            logger.warning(
                '%s: %s could not adopt %s (%s): %s', COORDINATOR_NAME, director, node, why, e
            )
            return False
        if adopted:
            self._own(node, None, director)
        return bool(adopted)

    def _own(self, node: str, giver: str | None, receiver: str | None) -> None:
        if giver is not None and node in self.layout.get(giver, []):
            self.layout[giver].remove(node)
        if receiver is not None:
            self.layout.setdefault(receiver, []).append(node)

    def _record(
        self, event: str, node: str, giver: str | None, receiver: str | None, why: str = ''
    ) -> None:
        if self._journal is not None:
            self._journal.record(event, node, giver, receiver, why)
        if event in ('moved', 'back', 'lost', 'free', 'reclaimed', 'home'):
            logger.info(
                '%s: %s %s: %s -> %s (%s)', COORDINATOR_NAME, node, event, giver, receiver, why
            )

    def _write_layout(self) -> None:
        if self._journal is None:
            return
        written = self._journal.write_layout(
            self.layout, self.free, fencing=self._fences.nodes(), loans=self.loans
        )
        if not written:
            self.violations.append('a layout with a node under two owners was not written')
