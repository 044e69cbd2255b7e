"""The DFK host: a Director's private DataFlowKernel, kept alive under it.

The host starts the Director's DFK on its partition (and the MPI executor
with the first MPI call), makes the executor apps calls go through, watches
the interchanges and replaces the whole DFK when one dies (calls that must
run again are parked until the new one is up), keeps the watchdog told about
every Parsl process, and stops it all at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from parsl.dataflow.dflow import DataFlowKernel

from actors.common.timing import CLEANUP_TIMEOUT
from actors.common.timing import LOST_CLEANUP_TIMEOUT
from actors.common.timing import WATCH_INTERVAL
from actors.director.context import DirectorContext
from actors.director.node_pools import NodePools
from actors.director.replacement import Replacement
from actors.execution.blocks import release_parsl
from actors.execution.blocks import watch_parsl_processes
from actors.execution.executor_app import Call
from actors.execution.executor_app import ExecutorApp
from actors.execution.fence import fence_dir
from actors.execution.interchange import InterchangeLost
from actors.execution.interchange import InterchangeWatch
from actors.execution.interchange import fail_dfk
from actors.execution.interchange import fail_tasks
from actors.execution.interchange import has_interchange
from actors.execution.interchange import interchange_exited
from actors.execution.interchange import quiet_interchange_losses
from actors.execution.interchange import unblock_commands
from actors.execution.watchdog import Watchdog
from actors.job.partition import Partition
from actors.site.parsl_config import build_config
from actors.site.parsl_config import executor_label
from actors.site.parsl_config import make_mpi_executor
from actors.site.profile import SiteProfile
from actors.worker.interrupt import run_command_interruptible
from actors.worker.interrupt import run_interruptible
from actors.worker.supervise import run_supervised

logger = logging.getLogger(__name__)


class DfkHost:
    """Owns one Director's DataFlowKernel and keeps it running.

    Args:
        context: The Director's name (for logs), its partition (the nodes
            the DFK's workers run on), site profile (how to place them), run
            directory (Parsl's files go to ``parsl/<name>``), worker slots
            per node, cancel-file directory (exported to workers), reruns of
            a call whose worker or pool was lost, and the most nodes it may
            own at once (nodes move).
        stopped_on_purpose: Whether a lost call was being stopped on purpose
            (such calls are never rerun).
        pools: The Director's nodes, each with its block on the current DFK.

    """

    def __init__(
        self,
        context: DirectorContext,
        *,
        stopped_on_purpose: Callable[[Call], bool],
        pools: NodePools,
    ) -> None:
        self.name = name = context.name
        self.partition: Partition = context.partition
        self.profile: SiteProfile = context.profile
        self.run_dir = run_dir = context.run_dir
        self.workers_per_node = context.workers_per_node
        self.control_dir = str(context.control_dir)
        self.retries = context.retries
        self.pools = pools
        self.max_nodes = context.options.max_nodes
        # The coordinator fences this Director through it if it goes silent.
        self.watchdog = Watchdog(fence=(fence_dir(run_dir), name))
        self._stopped_on_purpose = stopped_on_purpose
        self._label = executor_label(self.partition)
        self._parsl_dir = pathlib.Path(run_dir, 'parsl', name)
        self._dfk: DataFlowKernel | None = None
        self.app: ExecutorApp | None = None
        self.supervised_app: ExecutorApp | None = None
        self.command_app: ExecutorApp | None = None
        self.mpi_app: ExecutorApp | None = None
        self._mpi_starting = asyncio.Lock()
        """Held while the MPI executor joins the DFK; a lost DFK is released after it."""
        self._block_starts = asyncio.Lock()
        """Held while the watch restarts blocks; a DFK is released after it."""
        self._interchanges: InterchangeWatch | None = None
        self.replacement = Replacement(
            name,
            start=self._start_replacement,
            release=self._release_lost,
            fail=fail_dfk,
            fail_leftovers=self._fail_leftovers,
        )
        """Whether a lost DFK is replaced, the replacement, and the calls parked for it."""

    @property
    def started(self) -> bool:
        """Whether a DFK is up (or being replaced)."""
        return self._dfk is not None

    @property
    def executor(self) -> Any:
        """The worker pools' executor of the current DFK."""
        assert self._dfk is not None, 'the DFK has not started'
        return self._dfk.executors[self._label]

    async def start(self) -> None:
        """Start the watchdog and the first DFK (releasing what started if it fails)."""
        self.replacement.loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.watchdog.start)
        await self._start_parsl(self.watchdog)

    async def _start_parsl(self, watchdog: Watchdog | None) -> None:
        """Start a private DataFlowKernel for the partition and make its apps.

        Args:
            watchdog: Released if the start fails (``None`` on a replacement:
                the Director goes on).

        """
        config = build_config(
            self.partition,
            self.profile,
            self._parsl_dir,
            workers_per_node=self.workers_per_node,
            control_dir=self.control_dir,
            max_nodes=self.max_nodes,
            director_starts_blocks=True,
            job_of=self.pools.ownership.job,
        )
        try:
            # Creating a DFK starts the interchange and waits on it: keep it off
            # the event loop that other Directors may share.
            dfk = await asyncio.to_thread(DataFlowKernel, config)
        except BaseException:
            # Executors started before the failure keep their interchanges.
            await asyncio.to_thread(release_parsl, watchdog, config.executors)
            raise
        quiet_interchange_losses()
        self._interchanges = InterchangeWatch(self._interchange_lost)
        self._interchanges.watch(dfk.executors[self._label])
        self.app = self._executor_app(dfk, self._label, run_interruptible)
        self.supervised_app = self._executor_app(dfk, self._label, run_supervised)
        self.command_app = self._executor_app(dfk, self._label, run_command_interruptible)
        # The MPI executor starts again with the first MPI call on this DFK.
        self.mpi_app = None
        self._dfk = dfk
        try:
            await self.pools.start_blocks()
        except BaseException:
            self._dfk = None
            self._interchanges.release()
            await asyncio.to_thread(release_parsl, watchdog, config.executors, dfk.cleanup)
            raise

    def _executor_app(
        self,
        dfk: DataFlowKernel,
        label: str,
        func: Callable[..., bytes],
    ) -> ExecutorApp:
        """Calls of ``func`` straight to ``dfk``'s executor ``label``."""
        return ExecutorApp(
            dfk.executors[label],
            dfk.submitter_lock,
            func,
            retries=self.retries,
            stopped_on_purpose=self._stopped_on_purpose,
        )

    def refusal(self, mpi: bool) -> InterchangeLost | None:
        """Why no call can go to Parsl now (its DFK is lost or being replaced), if so."""
        if self.replacement.broken is not None:
            return self.replacement.broken
        if self.replacement.replacing or (mpi and self.mpi_app is None):
            return InterchangeLost(f'{self.name}: its DataFlowKernel is being replaced')
        return None

    # A lost interchange: replace the DFK, park the calls that run again.

    def _interchange_lost(self, executor: Any, error: InterchangeLost) -> None:
        """An interchange of the current DFK died (on its watch thread): the DFK is lost.

        The whole DFK is replaced, also when only the MPI executor's
        interchange died: the simplest state to reason about.
        """
        dfk = self._dfk
        if dfk is not None and executor in dfk.executors.values():
            self.replacement.lost(dfk, error)

    async def _start_replacement(self) -> None:
        """Start the DFK that replaces a lost one (the lost one's watch is released)."""
        assert self._interchanges is not None
        self._interchanges.release()
        await self._start_parsl(None)

    def _fail_leftovers(self, lost: DataFlowKernel, error: InterchangeLost) -> None:
        """Fail what the released DFK still holds: those calls go to its replacement.

        Its tasks were failed when the loss was noticed, unless that failed
        or a call reached it in between; none may wait for it forever.
        """
        for each in list(lost.executors.values()):
            if has_interchange(each):
                left = fail_tasks(each, error)
                if left:
                    logger.warning(
                        '%s: %d call(s) still held by the lost executor %s go to the new DFK',
                        self.name,
                        left,
                        each.label,
                    )

    async def _release_lost(self, lost: DataFlowKernel) -> None:
        """Stop a lost DFK's executors and processes (its cleanup gets a short time)."""
        # An MPI executor still joining it finishes first: shutting it down
        # mid-start would close its command socket under its start-up command.
        await until_free(self._mpi_starting)
        # Marked lost before this runs: the watch starts no block on it after.
        await until_free(self._block_starts)
        await asyncio.to_thread(
            release_parsl,
            None,
            list(lost.executors.values()),
            lost.cleanup,
            cleanup_timeout=LOST_CLEANUP_TIMEOUT,
        )

    # The MPI executor.

    async def start_mpi(self) -> None:
        """Add the MPI executor to the DFK on the first MPI call.

        Not at start-up: an idle interchange polls its sockets, and every
        Director would pay for one whether or not it runs MPI tools.
        """
        async with self._mpi_starting:
            # While the DFK is replaced the call is refused (see refusal) and waits.
            if self.mpi_app is not None or self.replacement.replacing:
                return
            dfk = self._dfk
            assert dfk is not None, 'Director has not started'
            executor = make_mpi_executor(
                self.partition,
                self.profile,
                self._parsl_dir.resolve(),
                self.control_dir,
                max_nodes=self.max_nodes,
            )
            logger.info('%s: starting the MPI executor for its first MPI call', self.name)
            try:
                await asyncio.to_thread(dfk.add_executors, [executor])
            except Exception:
                # Failed along with the DFK it was joining (its start-up command
                # was unblocked): the call waits for the new DFK.
                if self._dfk is dfk and not self.replacement.replacing:
                    raise
                logger.info('%s: the MPI executor started on a lost DFK', self.name)
            if self._dfk is not dfk or self.replacement.replacing:
                # Lost while it started: it goes (the call waits for the new DFK).
                await asyncio.to_thread(release_parsl, None, [executor])
                return
            assert self._interchanges is not None
            self._interchanges.watch(executor)
            self.mpi_app = self._executor_app(dfk, executor.label, run_command_interruptible)

    # Watching, status and shutdown.

    async def watch(self) -> None:
        """Keep the watchdog told of every Parsl process and the blocks mended (until cancelled)."""
        while self._dfk is not None:
            try:
                # Every executor's processes: the MPI executor has an interchange
                # and a block of its own.
                for each in list(self._dfk.executors.values()):
                    await asyncio.to_thread(watch_parsl_processes, self.watchdog, each)
                # A lost interchange never answers: not asked, or not waited for.
                if await self.pools.look(max_age=WATCH_INTERVAL / 2) is not None:
                    await self._mend_blocks()
            except Exception:
                logger.exception('%s: checking the Parsl processes failed', self.name)
            await asyncio.sleep(WATCH_INTERVAL)

    async def _mend_blocks(self) -> None:
        """Apply the block-health rules on a DFK still in use; give it up if no block can start."""
        # A lost DFK's blocks end as it is released: restarting them would
        # start pools after its release swept its processes (a leak).
        async with self._block_starts:
            dfk = self._dfk
            if dfk is None or self.replacement.is_lost(dfk):
                return
            never_started = await self.pools.mend()
        if never_started is not None:
            logger.error('%s', never_started)
            # Not replaced: a new DFK's blocks would fail the same way.
            await asyncio.to_thread(self.replacement.give_up, dfk, never_started)

    async def begin_stop(self) -> None:
        """From now on no DFK is replaced; wait for a replacement under way, give up the parked."""
        await self.replacement.begin_stop()

    async def stop(self) -> None:
        """Stop the DFK, its executors and every Parsl process left, then the watchdog."""
        dfk, self._dfk = self._dfk, None
        if dfk is None:
            return
        executors: Sequence[Any] = list(dfk.executors.values())
        if self._interchanges is not None:
            self._interchanges.release()
        # An interchange that died just before (its watch reports nothing now)
        # would block the cleanup's commands: they fail at once instead.
        dead = [e for e in executors if interchange_exited(e)]
        for each in dead:
            unblock_commands(each)
        lost = bool(dead) or any(getattr(e, 'bad_state_is_set', False) for e in executors)
        # No DFK now: a block restart under way is the last.
        await until_free(self._block_starts)
        await asyncio.to_thread(
            release_parsl,
            self.watchdog,
            executors,
            dfk.cleanup,
            cleanup_timeout=LOST_CLEANUP_TIMEOUT if lost else CLEANUP_TIMEOUT,
        )


async def until_free(lock: asyncio.Lock) -> None:
    """Wait until whoever holds ``lock`` now lets it go (a barrier: it is not kept).

    What the lock guards (an MPI executor joining a DFK, a block restart)
    checks, under it, that its DFK is still in use: once that is no longer
    true, passing this barrier means nothing more will start on it.
    """
    async with lock:
        pass
