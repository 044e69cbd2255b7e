"""The Director: an Academy agent that owns one partition of a batch job.

Each Director builds its own Parsl ``DataFlowKernel`` (never the global
``parsl.load``), so several Directors can live in one process, and runs tool
calls on its partition's workers as Academy actions. The agent itself is
thin: its lifecycle hooks and actions (those that run calls, and ``status``,
come from [`CallActions`][actors.director.actions.CallActions]), over named
parts that each do one job (``actors.director``'s other modules), built
once when it starts, each given the one frozen
[`DirectorContext`][actors.director.context.DirectorContext]:

* [`DfkHost`][actors.director.dfk_host.DfkHost]: the DFK, its MPI executor,
  replacing a DFK whose interchange died, the watchdog;
* [`CallRunner`][actors.director.runner.CallRunner]: submission, answers from
  the journal, reruns on loss;
* [`Ledger`][actors.director.ledger.Ledger]: journal, call keys, counters;
* [`CallChecks`][actors.director.checks.CallChecks]: request checks;
* [`NodeAdmission`][actors.director.admission.NodeAdmission] and
  [`WalltimeDrain`][actors.director.drain.WalltimeDrain];
* [`MailboxWatch`][actors.director.mailbox.MailboxWatch]: stopping once the
  exchange has forgotten the Director;
* [`Snapshots`][actors.director.snapshot.Snapshots]: its ``status`` and
  ``node_load``, from the parts' own reports.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pathlib
import uuid
from collections.abc import Mapping
from concurrent.futures import wait
from typing import Any

from academy.agent import Agent
from academy.agent import action

from actors.common.errors import ConfigurationError
from actors.common.limits import check_key
from actors.common.names import director_name
from actors.common.results import NodeLoad
from actors.common.timing import RELEASE_DEADLINE
from actors.director.actions import CallActions
from actors.director.admission import NodeAdmission
from actors.director.checks import CallChecks
from actors.director.command_files import CommandFiles
from actors.director.context import DirectorContext
from actors.director.dfk_host import DfkHost
from actors.director.drain import WalltimeDrain
from actors.director.ledger import Ledger
from actors.director.mailbox import MailboxWatch
from actors.director.node_pools import NodePools
from actors.director.node_pools import mpi_capacity
from actors.director.options import DirectorOptions
from actors.director.outcomes import Outcomes
from actors.director.runner import CallRunner
from actors.director.seed_args import director_args
from actors.director.snapshot import Snapshots
from actors.director.startup import DirectorStartError
from actors.director.startup import quiet_start_failures
from actors.job.ownership import NodeOwnership
from actors.job.partition import Partition
from actors.job.partition import PartitionRequest
from actors.job.partition import resolve_partition
from actors.site.profile import SiteProfile
from actors.store.moves import current_nodes
from actors.worker.control import CancelFiles

logger = logging.getLogger(__name__)


# Agent first: Academy names an agent's type by the classes up to Agent in its MRO.
class Director(Agent, CallActions):
    """Runs tool calls on the workers of one partition.

    Also ``Director(run_dir, nodefile)``, as the seed pattern's client
    launches it (``manager.launch(Director, args=(run_dir, nodefile))``): the
    nodefile's hosts are its partition, the batch system here picks the site
    profile (``pbs``, ``slurm``, else the simulated ``local``), and its files
    go under ``run_dir`` ([`director_args`][actors.director.seed_args.director_args]).

    Args:
        partition: The nodes this Director owns, or a request resolved
            against the batch job's nodes when the Director starts (in the
            seed's form: the run directory).
        profile: Site profile that says how to place workers on them (in
            the seed's form: the nodefile).
        run_dir: Directory for this run; the Director's Parsl files go to
            ``<run_dir>/parsl/director-<index>`` (omitted in the seed's form).
        options: How it runs (see
            [`DirectorOptions`][actors.director.options.DirectorOptions]).
        changes: Changes to ``options`` (``retries=3``, ``mpi=False``, ...).

    Raises:
        ConfigurationError: If an option is invalid (at launch, not start-up),
            or the arguments are neither form, or the seed's nodefile is
            missing, empty or malformed.

    """

    def __init__(
        self,
        partition: Partition | PartitionRequest | str,
        profile: SiteProfile | str,
        run_dir: str | None = None,
        options: DirectorOptions | None = None,
        **changes: Any,
    ) -> None:
        super().__init__()
        # Checked when the Director is made, not when it starts: a bad option fails the launch.
        self.options = options = (options or DirectorOptions()).replace(**changes)
        self._launch = director_args(partition, profile, run_dir)
        self.name = director_name(self._launch[0].index)
        self.tool = options.tool
        self.incarnation = uuid.uuid4().hex
        self.ledger = Ledger(self.name, options.journal_sync)
        # The rest is made once, when it starts (its partition resolved there): _build_parts.
        self.context: DirectorContext | None = None
        self.host: DfkHost | None = None
        self.runner: CallRunner | None = None
        self.snapshots: Snapshots | None = None
        self._background: set[asyncio.Task[None]] = set()
        quiet_start_failures()

    def _build_parts(self, context: DirectorContext, nodes: Mapping[str, str | None]) -> None:
        """Make the parts, each after those it needs.

        Args:
            context: Who the Director is, its partition resolved.
            nodes: The nodes it owns now (its partition's, or those moved to it
                since) -> the extra batch job each belongs to (``None``: the run's own).

        """
        self.context = context
        self.cancels = cancels = CancelFiles(context.control_dir)
        self.outcomes = outcomes = Outcomes(context, cancels)
        self.checks = CallChecks.of(context)
        self.drain = drain = WalltimeDrain(context, cancels, self.ledger)
        # The admission and the pools share the one ownership of its nodes: the admission
        # asks it how many MPI calls may use, the pools tell the admission when that changes.
        ownership = NodeOwnership.of(context.name, nodes)
        for node, job in nodes.items():
            ownership.set_job(node, job)
        self.admission = admission = NodeAdmission(
            functools.partial(mpi_capacity, ownership, one_job=context.profile.mpi_in_one_job),
            backfill=context.options.mpi_backfill,
            most=context.most_nodes,
        )
        # The one callback left: the host starts the pools' blocks on each DFK it makes,
        # and the pools use whichever DFK is current (the host replaces a lost one).
        self.pools = pools = NodePools.of(context, ownership, self._current_executor, admission)
        self.host = host = DfkHost(
            context, stopped_on_purpose=outcomes.stopped_on_purpose, pools=pools
        )
        self.runner = runner = CallRunner(
            context,
            host=host,
            ledger=self.ledger,
            outcomes=outcomes,
            cancels=cancels,
            drain=drain,
            admission=admission,
            command_files=CommandFiles(
                pathlib.Path(context.run_dir, 'parsl', context.name, 'calls')
            ),
        )
        self.snapshots = Snapshots(context, host, pools, admission, self.ledger, drain, runner)

    async def agent_on_startup(self) -> None:
        """Open the journal, start the watchdog and the private DataFlowKernel.

        Raises:
            DirectorStartError: If a file or directory of the run cannot be
                made or written (a full disk, a read-only file system, a
                journal path that is not a directory): one line naming the
                path and the system's reason.

        """
        try:
            await self._start()
        except DirectorStartError:
            raise
        except OSError as e:
            raise DirectorStartError.from_os_error(self.name, e) from e

    async def _start(self) -> None:
        requested, profile, launch_dir = self._launch
        partition, run_dir = await asyncio.to_thread(resolve_partition, requested, launch_dir)
        context = DirectorContext(partition, profile, run_dir, self.options, self.incarnation)
        nodes = await asyncio.to_thread(current_nodes, self.name, partition, run_dir)
        await asyncio.to_thread(self.ledger.open, run_dir)
        self._build_parts(context, nodes)
        host = self._host()
        try:
            await host.start()
        except BaseException:
            await asyncio.to_thread(self.ledger.close)
            raise
        self._start_background(host.watch())
        self._start_background(
            MailboxWatch(
                self.name,
                lambda: self.agent_exchange_client.status(self.agent_id),
                self.agent_shutdown,
            ).run(),
        )
        if context.walltime.drain_at is not None:
            self._start_background(self.drain.run())
        logger.info(
            '%s started on %d node(s): %s',
            self.name,
            partition.size,
            ', '.join(partition.nodes),
        )

    async def agent_on_shutdown(self) -> None:
        """Drain in-flight calls, then stop the DFK and its workers."""
        host = self.host
        if host is not None:
            await host.begin_stop()
        for task in self._background:
            task.cancel()
        if host is None or not host.started:
            self.ledger.close()
            return
        pending = self.ledger.in_flight()
        if pending:
            logger.info(
                '%s waiting up to %.0fs for %d in-flight call(s)',
                self.name,
                self.options.drain_timeout,
                len(pending),
            )
            _, not_done = await asyncio.to_thread(wait, pending, self.options.drain_timeout)
            if not_done:
                # Parsl cannot cancel a running task: stop the tool processes.
                self.cancels.cancel_all('the Director is shutting down')
                await asyncio.to_thread(wait, list(not_done), 5.0)
        await host.stop()
        await asyncio.to_thread(self.ledger.close)
        await asyncio.to_thread(self.cancels.close)
        logger.info('%s stopped', self.name)

    def _start_background(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _host(self) -> DfkHost:
        assert self.host is not None, 'Director has not started'
        return self.host

    def _current_executor(self) -> Any:
        """The worker pools' executor of the host's current DFK."""
        return self._host().executor

    @action
    async def cancel(
        self,
        call_key: str | None = None,
        *,
        batch_key: str | None = None,
    ) -> int:
        """Stop running or queued calls: their tool process is killed.

        The stopped calls answer with a ``cancelled`` result (journaled);
        their worker slots are free again at once.

        Args:
            call_key: Key of one call.
            batch_key: Key given to ``md_sim_batch``: cancels its calls.

        Returns:
            How many calls were told to stop.

        Raises:
            ConfigurationError: If neither or both keys are given.

        """
        if (call_key is None) == (batch_key is None):
            raise ConfigurationError('cancel needs exactly one of call_key=... or batch_key=...')
        check_key(call_key if call_key is not None else batch_key)
        if call_key is not None:
            return self.cancels.cancel(call_key, 'cancelled by the caller')
        return self.cancels.cancel_prefix(f'{batch_key}/', 'cancelled by the caller')

    @action
    async def incarnation_id(self) -> str:
        """The id of this incarnation: it changes each time the Director (re)starts.

        Cheaper than ``status`` (no question to the interchange): clients ask
        it while their calls are pending, to notice a restart that forgot them.
        """
        return self.incarnation

    # Nodes that move (asked by the job's NodeCoordinator).

    @action
    async def node_load(self) -> NodeLoad:
        """What the coordinator's policy needs: nodes, idle nodes, queued calls, MPI needs."""
        assert self.snapshots is not None, 'Director has not started'
        return await self.snapshots.node_load()

    @action
    async def release_nodes(
        self,
        nodes: list[str],
        keep: int = 1,
        *,
        idle_only: bool = True,
        deadline: float = RELEASE_DEADLINE,
    ) -> list[str]:
        """Give ``nodes`` away (those still free to go), keeping ``keep``; the nodes that left.

        Each is drained first: no new call goes there, its running calls
        finish (past ``deadline`` seconds they are stopped and run again on
        another node), its pool stops. With ``idle_only`` a node that got
        work since the coordinator looked stays.
        """
        pools = self.pools
        allowed = set(pools.idle() if idle_only else pools.releasable(keep))
        going = [node for node in nodes if node in allowed]
        spare = max(len(pools.ownership) - keep, 0)
        return await pools.release(going[:spare], deadline)

    @action
    async def adopt_node(
        self, node: str, lender: str | None = None, job: str | None = None
    ) -> bool:
        """Start a pool on ``node`` (given by the coordinator); True once it serves calls.

        ``job`` names the extra batch job the node belongs to (``None``: the
        run's own): its pool is started inside that job.
        """
        if self.host is None or not self.host.started or node in self.pools.ownership:
            return False
        return await self.pools.adopt(node, lender=lender, job=job)
