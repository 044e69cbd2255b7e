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
once that is confirmed.

With a [`GrowthPolicy`][actors.coordinator.growth.GrowthPolicy] that allows
it, the run also outgrows its batch job: ``extra``
([`ExtraJobs`][actors.coordinator.extra_jobs.ExtraJobs]) asks the scheduler
for more jobs when the queued work cannot finish in time, their nodes join the
``free`` set (and go to the Directors that need them, started inside their
job), and go back and are cancelled when idle or near their walltime.

The coordinator's view of the job is one
[`NodeOwnership`][actors.job.ownership.NodeOwnership] (``job``): each node's
owner Director or its ``moving``, ``fencing`` or ``free`` state, its lender,
and when it may be offered again. Each of its changes is a line of the move
journal (``actors.store.moves``), written before the next one starts; a
layout with a node under two owners is never written.

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
import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from academy.agent import Agent
from academy.agent import action
from academy.agent import loop

from actors.calling.calls import call
from actors.common.timing import LOAD_TIMEOUT
from actors.common.timing import POOL_START_TIMEOUT
from actors.common.timing import RELEASE_DEADLINE
from actors.coordinator.extra_jobs import ExtraJobs
from actors.coordinator.fencing import Fences
from actors.coordinator.growth import GrowthPolicy
from actors.coordinator.growth import growth_need
from actors.coordinator.policy import ElasticPolicy
from actors.coordinator.policy import Load
from actors.coordinator.policy import Move
from actors.coordinator.policy import plan_moves
from actors.coordinator.schedulers import open_scheduler
from actors.job.ownership import FREE
from actors.job.ownership import Change
from actors.job.ownership import NodeOwnership
from actors.job.ownership import Owner
from actors.job.ownership import OwnershipError
from actors.job.ownership import check_layout
from actors.store.jobs import JobJournal
from actors.store.jobs import live_jobs
from actors.store.moves import MoveJournal
from actors.store.moves import nodes_of_this_run
from actors.store.moves import read_layout_record

if TYPE_CHECKING:
    from actors.calling.calls import DirectorHandle

logger = logging.getLogger(__name__)

COORDINATOR_NAME = 'node-coordinator'


FREE_RETRY = 60.0
"""Seconds before a node on which no pool would start is offered again (to that Director)."""


class NodeCoordinator(Agent):
    """Moves nodes between the Directors of one job.

    Args:
        directors: Handles of every Director of the job.
        run_dir: The run directory (the move journal goes to ``<run>/nodes``).
        policy: How nodes move (default ``ElasticPolicy()``).
        growth: Whether and how the run asks for more batch jobs (default: never).

    """

    def __init__(
        self,
        directors: Sequence[DirectorHandle],
        run_dir: str,
        policy: ElasticPolicy | None = None,
        growth: GrowthPolicy | None = None,
    ) -> None:
        super().__init__()
        self.directors = list(directors)
        self.run_dir = run_dir
        self.policy = policy or ElasticPolicy()
        self.growth = growth or GrowthPolicy()
        self.extra: ExtraJobs | None = None
        """The run's extra batch jobs (``None``: it does not grow)."""
        self.job = NodeOwnership()
        """Every node of the job: its owner Director, or moving, fencing, free."""
        self.moves = 0
        self.violations: list[str] = []
        self._started = False
        self._names: dict[int, str] = {}
        self._last_answer: dict[str, float] = {}
        self._calm_since: dict[str, float] = {}
        self._dead: set[str] = set()
        """Directors that stopped answering (Directors' state: their nodes are the job's)."""
        self._handles: dict[str, DirectorHandle] = {}
        self._journal: MoveJournal | None = None
        self._fences = Fences(run_dir, COORDINATOR_NAME)
        self._known: set[str] = set()
        self._orphans_at = 0.0
        self._tasks: dict[str, asyncio.Future[Any]] = {}

    async def agent_on_startup(self) -> None:
        """Open the move journal; after a restart, learn the job's nodes from the layout."""
        self._journal = await asyncio.to_thread(MoveJournal, self.run_dir)
        # Set here, not in __init__: the agent is pickled to where it runs.
        self.job.listener = self._journaled
        # Restarted mid-run: a node that was moving when the last incarnation died is
        # reported by no Director, and would stay unused for the rest of the run.
        self._known = await asyncio.to_thread(nodes_of_this_run, self.run_dir)
        self._orphans_at = time.monotonic() + self.policy.orphan_grace
        earlier = await asyncio.to_thread(live_jobs, self.run_dir)
        if self.growth.enabled or earlier:
            self.extra = ExtraJobs(
                self.growth,
                open_scheduler(self.growth, self.run_dir),
                await asyncio.to_thread(JobJournal, self.run_dir),
                self.job,
                name=f'htc-grow-{os.path.basename(os.path.abspath(self.run_dir))}',
            )
            await self.extra.start(self.run_dir, hold_until=self._orphans_at)
        # Nodes of extra jobs rejoin with their job (above), never as the run's own.
        layout = await asyncio.to_thread(read_layout_record, self.run_dir)
        self._known -= set(layout['jobs']) if layout is not None else set()
        self._known -= set(self.job.jobs())

    async def agent_on_shutdown(self) -> None:
        """Cancel the extra jobs that have not ended; close the journals."""
        if self.extra is not None:
            await self.extra.close()
            await asyncio.to_thread(self.extra.journal.close)
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

    # Views of ``job``.

    @property
    def layout(self) -> dict[str, list[str]]:
        """Each Director's nodes (the ones it owns, as far as the coordinator knows)."""
        owners = self.job.owners()
        names = [*self._names.values(), *sorted(self._dead)]
        names += [o.director for o in owners.values() if o.owned and o.director]
        return {d: self.job.nodes('pool', director=d) for d in dict.fromkeys(names)}

    @layout.setter
    def layout(self, layout: dict[str, list[str]]) -> None:
        """Take ``layout`` as the job's first (a test, or the first Directors' reports)."""
        for director, nodes in layout.items():
            for node in nodes:
                self.job.add(node, Owner('pool', director), 'first layout')

    @property
    def job_nodes(self) -> set[str]:
        """Every node of the job."""
        return set(self.job.nodes())

    @job_nodes.setter
    def job_nodes(self, nodes: set[str]) -> None:
        for node in sorted(set(nodes) - set(self.job.nodes())):
            self.job.add(node, FREE, 'a node of the job')

    @property
    def moving(self) -> dict[str, tuple[str, str]]:
        """Nodes between two Directors -> (giver, receiver)."""
        owners = self.job.owners()
        return {n: (str(o.director), str(o.to)) for n, o in owners.items() if o.role == 'moving'}

    @property
    def free(self) -> list[str]:
        """Nodes nobody owns."""
        return self.job.nodes('free')

    @property
    def loans(self) -> dict[str, str]:
        """Borrowed nodes -> their lender."""
        return {n: d for n, d in self.job.lenders().items() if self.job.owner(n).owned}

    def _fencing(self) -> dict[str, str]:
        """Nodes whose silent Director is being fenced -> that Director."""
        owners = self.job.owners()
        return {n: str(o.director) for n, o in owners.items() if o.role == 'fencing'}

    def _journaled(self, change: Change) -> None:
        """Journal one change of ``job`` before anything else happens."""
        if self._journal is not None:
            self._journal.write(change)
        if change.event not in ('start', 'moving', 'fencing'):
            logger.info(
                '%s: %s %s: %s -> %s (%s)',
                COORDINATOR_NAME,
                change.node,
                change.event,
                change.before,
                change.after,
                change.why,
            )

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
            'fencing': self._fencing(),
            'loans': self.loans,
            'extra': None if self.extra is None else self.extra.report(),
            'node_jobs': self.job.jobs(),
        }

    # One step.

    async def step(self) -> None:
        """Ask every Director for its load, reclaim the nodes of dead ones, make the moves."""
        now = time.monotonic()
        answers = await asyncio.gather(
            *(self._load(index, handle) for index, handle in enumerate(self.directors))
        )
        loads = [load for load in answers if load is not None]
        first = not self._started and bool(loads)
        self._started = self._started or first
        for load in loads:
            if load.director in self._fences:
                await self._answers_again(load.director)
        for load in loads:
            await self._accept(load)
            if load.queued or load.mpi_need:
                self._calm_since[load.director] = now
            else:
                self._calm_since.setdefault(load.director, now)
        loads = [self._checked(load) for load in loads]
        if first:
            self._write_layout()
        self._free_orphans(len(loads))
        self._check()
        # Not ``now``: asking a silent Director took up to LOAD_TIMEOUT of its silence.
        await self._reclaim(time.monotonic())
        if self.extra is not None:
            await self._grow([load for load in loads if load.director not in self._dead], now)
        await self._give_free(loads)
        moves = plan_moves(
            # A Director that is releasing nodes now is left alone: two releases could
            # take it below its floor.
            [load for load in loads if load.director not in self._dead | set(self._tasks)],
            self.policy,
            now=now,
            calm_since=self._calm_since,
            arrived=self._arrived(),
        )
        moves = [m for m in (self._not_refused(m, now) for m in moves) if m.nodes]
        if moves:
            await asyncio.gather(*(self._move(move) for move in moves))

    async def _grow(self, loads: Sequence[Load], now: float) -> None:
        """Ask for a job if the run lacks nodes; give back extra nodes; let idle jobs go."""
        extra = self.extra
        assert extra is not None
        before = set(self.job.nodes())
        await extra.look()
        extra.mark_leaving()
        free = [n for n in self.free if extra.may_give(n)]
        need = growth_need(loads, free=len(free), now=time.time(), policy=self.growth)
        await extra.grow(need, loads, now)
        jobs = self.job.jobs()
        owners = {n: str(o.director) for n, o in self.job.owners().items() if o.owned and n in jobs}
        for director, nodes in extra.to_return(loads, owners, now).items():
            leaving = [n for n in nodes if extra.leaving(n)]
            if leaving:
                # Its job ends (or ended): what runs there finishes, or runs again elsewhere.
                self._release(director, leaving, deadline=self.growth.drain_margin / 2)
            else:
                # Idle: back to its job, even if it was the Director's last node (it gets
                # one again when calls come; an idle extra job costs node-hours).
                self._release(director, nodes, keep=0, idle_only=True)
        await extra.part_with(now)
        if set(self.job.nodes()) != before:
            self._write_layout()

    def _free_orphans(self, answered: int) -> None:
        """Once, after a restart: free the job's nodes that nobody reports (they were moving)."""
        if not self._known or time.monotonic() < self._orphans_at:
            return
        if answered < len(self.directors) or self._dead:
            return  # a Director that did not answer may hold them: look again next step
        orphans = sorted(self._known - set(self.job.nodes()))
        self._known = set()
        for node in orphans:
            self.job.add(node, FREE, 'owned by nobody after a coordinator restart')
        if orphans:
            self._write_layout()

    def _not_refused(self, move: Move, now: float) -> Move:
        """The move without nodes its receiver could not start a pool on lately."""
        nodes = tuple(n for n in move.nodes if self.job.refused_until(n, move.receiver) <= now)
        return dataclasses.replace(move, nodes=nodes)

    def _arrived(self) -> dict[str, float]:
        """When each node that moved arrived (the policy lets it settle)."""
        return {n: self.job.since(n) for n in self.job.nodes() if self.job.last_event(n) == 'moved'}

    async def _load(self, index: int, handle: DirectorHandle) -> Load | None:
        try:
            answer = await asyncio.wait_for(call(None, handle, 'node_load'), LOAD_TIMEOUT)
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
                moving=[*self.moving, *self._fencing()],
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
            nodes = self.job.nodes('pool', director=director)
            logger.warning(
                '%s: %s has not answered for %.0fs; fencing it before its %d node(s) go '
                'to the others',
                COORDINATOR_NAME,
                director,
                now - last,
                len(nodes),
            )
            # Fenced before the fence is asked for: a restart must not take them back.
            for node in nodes:
                self.job.change(node, Owner('fencing', director), 'no answer')
            self._fences.hold(director)
            self._write_layout()
            await asyncio.to_thread(self._fences.request, director)
        for director in list(self._fences.pending):
            at = await asyncio.to_thread(self._fences.confirmed, director)
            nodes = self.job.nodes('fencing', director=director)
            if at is None:
                await asyncio.to_thread(self._fences.retry, director, nodes)
                continue
            await asyncio.to_thread(self._fences.finish, director)
            for node in nodes:
                self.job.change(node, FREE, f'no answer; fenced at {at:.3f}')
            self._write_layout()

    async def _answers_again(self, director: str) -> None:
        """A fenced Director answers: restarted after its fence, or the fence never took."""
        if await asyncio.to_thread(self._fences.confirmed, director) is not None:
            return  # a new incarnation; _reclaim frees the fenced nodes this step
        await asyncio.to_thread(self._fences.finish, director)
        nodes = self.job.nodes('fencing', director=director)
        logger.warning(
            '%s: %s answers again before its fence was confirmed; it keeps its node(s) %s',
            COORDINATOR_NAME,
            director,
            ', '.join(nodes) or 'none',
        )
        for node in nodes:
            self.job.change(node, Owner('pool', director), 'answers again')
        self._write_layout()

    async def _accept(self, load: Load) -> None:
        """Take a Director's reported nodes into the layout, checked against ours."""
        director = load.director
        had = self.job.nodes('pool', director=director)
        departed = [n for n in load.nodes if self.extra is not None and self.extra.gone(n)]
        if departed:
            # It left the run with its job (a release the Director had not finished).
            self._release(director, departed, deadline=0.0)
        for node in load.nodes:
            if node in departed:
                continue
            if node not in self.job:
                owner = Owner('pool', director, lender=load.borrowed.get(node))
                self.job.add(node, owner, f'reported by {director}')
            elif self.job.owner(node).role == 'free' and self.job.job(node) is not None:
                # A re-adopted extra job's node that a Director kept across a restart.
                self.job.change(node, Owner('pool', director), f'reported by {director}')
        owners = self.job.owners()
        reported = [n for n in load.nodes if n not in departed]
        conflicts = [
            n for n in reported if (owners[n].role, owners[n].director) != ('pool', director)
        ]
        for node in reported:
            if node in load.borrowed and node not in conflicts:
                self.job.lend(node, load.borrowed[node])
        if conflicts:
            said = ', '.join(f'{n} ({_taken(self.job.owner(n))})' for n in conflicts)
            message = f'{director} reports node(s) owned by others, not taken: {said}'
            logger.error('%s: %s; asking it to release them', COORDINATOR_NAME, message)
            self.violations.append(message)
            self._release(director, conflicts)
        for node in [n for n in had if n not in load.nodes]:
            await self._gone(director, node)

    def _checked(self, load: Load) -> Load:
        """``load`` with only the nodes the layout gives its Director (what the policy moves).

        Nodes of an extra job that is leaving are not the policy's to move: they go back.
        """
        mine = set(self.job.nodes('pool', director=load.director))
        if self.extra is not None:
            mine = {n for n in mine if not self.extra.leaving(n)}
        return dataclasses.replace(
            load,
            nodes=tuple(n for n in load.nodes if n in mine),
            idle=tuple(n for n in load.idle if n in mine),
            borrowed={n: d for n, d in load.borrowed.items() if n in mine},
        )

    def _release(
        self,
        director: str,
        nodes: list[str],
        *,
        keep: int = 0,
        idle_only: bool = False,
        deadline: float = RELEASE_DEADLINE,
    ) -> None:
        """Ask ``director`` to give ``nodes`` up (its next report leaves them to ``_gone``)."""
        handle = self._handles.get(director)
        if handle is None or director in self._tasks or director in self._dead:
            return  # one release at a time: the next step asks again if it is needed
        action = call(
            None,
            handle,
            'release_nodes',
            nodes,
            keep=keep,
            idle_only=idle_only,
            deadline=deadline,
        )
        task = asyncio.ensure_future(asyncio.wait_for(action, deadline + LOAD_TIMEOUT))
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
        lender = self.job.owner(node).lender
        if lender is not None and not (self.extra is not None and self.extra.leaving(node)):
            self.job.change(node, Owner('moving', director, to=lender), 'home')
            if await self._adopt(lender, node, why='home'):
                home = Owner('pool', lender)
                self.job.change(node, home, f'{director} restarted', event='home')
                self._write_layout()
                return
        self.job.change(node, FREE, f'no longer reported by {director}')
        self._write_layout()

    async def _give_free(self, loads: Sequence[Load]) -> None:
        """Hand free nodes to the Directors that want nodes most (or to the fewest-noded).

        A node of an extra batch job goes only to a Director with work waiting:
        idle, it goes back to its job (``actors.coordinator.extra_jobs``).
        """
        live = [load for load in loads if load.director not in self._dead and not load.draining]
        now = time.monotonic()
        ready = [n for n in self.job.nodes('free') if self.job.retry_at(n) <= now]
        own = [n for n in ready if self.job.job(n) is None]
        if not await self._hand_out(own, live):
            return
        extra = self.extra
        grown = [n for n in ready if n not in own and extra is not None and extra.may_give(n)]
        wanting = [load for load in live if load.queued or load.mpi_need]
        # No more than the queues fill: the rest would sit idle, then go back.
        wanted = sum(math.ceil(x.queued / x.workers_per_node) + x.mpi_need for x in wanting)
        await self._hand_out(grown[:wanted], wanting)

    async def _hand_out(self, nodes: list[str], loads: Sequence[Load]) -> bool:
        """Give ``nodes`` out one by one; False once a Director could not start a pool."""
        while nodes and loads:
            load = max(
                loads,
                key=lambda x: (x.mpi_need + x.queued / x.workers_per_node, -len(x.nodes)),
            )
            node = nodes.pop(0)
            if await self._adopt(load.director, node, why='reclaimed'):
                self.job.set_retry(node, 0.0)
                self.job.change(node, Owner('pool', load.director), 'free node')
                self._write_layout()
                continue
            # Still free (no change to journal): offered again later.
            self.job.set_retry(node, time.monotonic() + FREE_RETRY)
            logger.info(
                '%s: %s could not start a pool on free node %s',
                COORDINATOR_NAME,
                load.director,
                node,
            )
            return False
        return True

    async def _move(self, move: Move) -> None:
        giver = self._handles[move.giver]
        # A lent node may be the lender's floor (the policy allows it for MPI calls).
        keep = 0 if move.why == 'borrow' else self.policy.keep(move.giver)
        try:
            left: list[str] = await asyncio.wait_for(
                call(None, giver, 'release_nodes', list(move.nodes), keep=keep),
                RELEASE_DEADLINE + LOAD_TIMEOUT,
            )
        except Exception as e:
            logger.warning('%s: %s did not release %s: %s', COORDINATOR_NAME, move.giver, move, e)
            return
        going = []
        for node in left:
            try:
                self.job.change(node, Owner('moving', move.giver, to=move.receiver), move.why)
            except OwnershipError as e:
                # Released, but not the giver's in our view: it stays where the view says.
                logger.error('%s: %s', COORDINATOR_NAME, e)
                self.violations.append(str(e))
                continue
            going.append(node)
        await asyncio.gather(*(self._deliver(node, move) for node in going))

    async def _deliver(self, node: str, move: Move) -> None:
        lender = move.giver if move.why == 'borrow' else None
        if await self._adopt(move.receiver, node, lender=lender, why=move.why):
            self.moves += 1
            self.job.change(node, Owner('pool', move.receiver, lender=lender), move.why)
            self._write_layout()
            return
        self.job.refuse(node, move.receiver, time.monotonic() + FREE_RETRY)
        if await self._adopt(move.giver, node, why='back'):
            self.job.change(node, Owner('pool', move.giver), 'no pool started')
        else:
            self.job.set_retry(node, time.monotonic() + FREE_RETRY)
            self.job.change(node, FREE, 'no pool started')
        self._write_layout()

    async def _adopt(
        self, director: str, node: str, *, lender: str | None = None, why: str = ''
    ) -> bool:
        """Ask ``director`` to start a pool on ``node``: whether it serves there (not recorded)."""
        handle = self._handles.get(director)
        if handle is None or director in self._dead:
            return False
        try:
            adopted: bool = await asyncio.wait_for(
                call(None, handle, 'adopt_node', node, lender, self.job.job(node)),
                POOL_START_TIMEOUT + LOAD_TIMEOUT,
            )
        except Exception as e:
            logger.warning(
                '%s: %s could not adopt %s (%s): %s', COORDINATOR_NAME, director, node, why, e
            )
            return False
        return bool(adopted)

    def _write_layout(self) -> None:
        if self._journal is None:
            return
        written = self._journal.write_layout(
            self.layout, self.free, fencing=self._fencing(), loans=self.loans, jobs=self.job.jobs()
        )
        if not written:
            self.violations.append('a layout with a node under two owners was not written')


def _taken(owner: Owner) -> str:
    """Who has a node, as a conflict names it (``director-1``, ``moving``, ``fencing d``)."""
    if owner.role == 'fencing':
        return f'fencing {owner.director}'
    return owner.role if owner.role in ('free', 'moving') else str(owner.director)
