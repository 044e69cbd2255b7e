"""Launch one Director per partition of a batch job and drive them.

Run ``python launch.py --help`` for the flags. With no flags it simulates a
4-node batch job on this machine, splits it into 2 partitions, starts 2
Directors on Academy's in-process exchange and sends each one ``md_sim`` and
``md_sim_batch`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import pathlib
import sys
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any
from typing import NoReturn

from academy.exception import MailboxTerminatedError
from academy.manager import Manager
from globus_compute_sdk.errors import TaskExecutionFailed

from actors.cli.progress import DirectorBars
from actors.cli.progress import make_progress
from actors.cli.report import RESULTS_NAME
from actors.cli.report import render as render_report
from actors.client.calls import DirectorFailedError
from actors.client.calls import call
from actors.client.calls import call_resilient
from actors.client.calls import launch_directors
from actors.client.calls import wait_ready
from actors.client.deploy import EXECUTORS
from actors.client.deploy import make_executor
from actors.client.deploy import validate_executor
from actors.client.exchange import EXCHANGE_HELP
from actors.client.exchange import open_exchange
from actors.client.exchange import validate_exchange
from actors.client.status_query import DirectorReport as StatusReport
from actors.client.status_query import ExchangeUnreachableError
from actors.client.status_query import query as query_status
from actors.common.errors import ConfigurationError
from actors.common.results import CallResult
from actors.common.results import DirectorStatus
from actors.job.partition import NodeSource
from actors.job.partition import Partition
from actors.job.partition import PartitionRequest
from actors.job.partition import discover_nodes
from actors.job.partition import parse_sizes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions
from actors.job.walltime import Walltime
from actors.job.walltime import allocation_end
from actors.site.endpoint import endpoint_sites
from actors.site.endpoint import install
from actors.site.endpoint import load_rendered
from actors.site.endpoint import load_template
from actors.site.endpoint import missing_interface
from actors.site.endpoint import parse_assignments
from actors.site.endpoint import render
from actors.site.endpoint import validate_options
from actors.site.profile import SiteProfile
from actors.site.profile import available_sites
from actors.site.profile import load_site
from actors.store.journal import DEFAULT_SYNC
from actors.store.journal import SYNC_MODES
from actors.store.journal import SyncMode
from actors.store.journal import final_by_key
from actors.store.journal import read_run
from actors.store.manifest import DirectorEntry
from actors.store.manifest import RunManifest

logger = logging.getLogger('launch')

STARTUP_TIMEOUT = 300.0
ATTACH_TIMEOUT = 10.0
"""Seconds a recorded Director gets to answer a ping before --resume starts a new one."""
RELEASE_TIMEOUT = 60.0
"""Seconds to wait for re-attached Directors to shut down at the end of a resumed run."""
REMOTE_STARTUP_TIMEOUT = 3600.0
"""Seconds to wait for Directors on a Globus Compute endpoint (the batch job queues)."""
REMOTE_RUN_ROOT = '~/hpc-tool-calling/runs'
"""Default parent of the Directors' run directory on a Globus Compute endpoint."""

SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {}
"""``launch.py NAME ...`` runs ``SUBCOMMANDS[NAME](rest_of_argv)``; no name runs the job."""


def subcommand(name: str) -> Callable[[Callable[[list[str]], int]], Callable[[list[str]], int]]:
    """Register a ``launch.py NAME`` subcommand (it parses its own flags)."""

    def register(handler: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        SUBCOMMANDS[name] = handler
        return handler

    return register


class _Parser(argparse.ArgumentParser):
    """Argument parser whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = _Parser(
        prog='launch.py',
        description=(
            'Split a batch job into partitions, start one Director agent per '
            'partition and run MD tool calls on them.'
        ),
    )
    nodes = parser.add_argument_group('batch job and partitions')
    nodes.add_argument(
        '--nodes-file',
        help='file with one host per line (default: $PBS_NODEFILE, '
        '$SLURM_JOB_NODELIST, else a simulated job)',
    )
    nodes.add_argument(
        '--simulate-nodes',
        type=int,
        metavar='N',
        help='simulate a job of N nodes on this machine (default: 4 when no '
        'scheduler variable names the nodes)',
    )
    split = nodes.add_mutually_exclusive_group()
    split.add_argument(
        '--partitions',
        type=int,
        metavar='P',
        help='number of equal partitions (default: 2)',
    )
    split.add_argument(
        '--partition-sizes',
        metavar='A,B,...',
        help='explicit partition sizes, e.g. 1,3',
    )
    nodes.add_argument(
        '--site',
        default='local',
        help=f'site profile from configs/ ({", ".join(available_sites())}); default: local',
    )
    nodes.add_argument(
        '--workers-per-node',
        type=int,
        metavar='W',
        help='tool slots per node (default: from the site profile)',
    )
    nodes.add_argument(
        '--launcher-args',
        metavar='ARGS',
        help="replace the site profile's launcher flags, e.g. "
        '"-launcher fork --ppn 1" to simulate a PBS job on one machine',
    )
    work = parser.add_argument_group('work')
    work.add_argument(
        '--iterations',
        type=int,
        default=4,
        help="calls in each Director's md_sim_batch (default: 4)",
    )
    work.add_argument(
        '--duration',
        type=float,
        default=1.0,
        help='seconds per mock MD call (default: 1.0)',
    )
    campaign = parser.add_argument_group('campaign (mock planner agent)')
    campaign.add_argument(
        '--campaign',
        action='store_true',
        help='instead of the md_sim calls, run the mock planner agent: a temperature '
        'scan with the real MD tool, as JSON tool calls through the dispatcher',
    )
    campaign.add_argument(
        '--rounds',
        type=int,
        default=2,
        help='refinement rounds after the first grid (default: 2)',
    )
    campaign.add_argument(
        '--steps',
        type=int,
        default=300,
        help='MD steps per campaign call (default: 300)',
    )
    campaign.add_argument(
        '--tool',
        default='ase_md',
        help='MD tool of the campaign (default: ase_md; mock_md for a dry run)',
    )
    deploy = parser.add_argument_group('deployment')
    deploy.add_argument(
        '--exchange',
        help=f'Academy exchange: {EXCHANGE_HELP} (default: local; hosted with '
        '--executor globus-compute)',
    )
    deploy.add_argument(
        '--executor',
        help=f'where Directors run: {", ".join(EXECUTORS)} (default: local)',
    )
    deploy.add_argument('--endpoint', help='Globus Compute endpoint UUID')
    deploy.add_argument(
        '--set',
        dest='endpoint_options',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help="a value for the endpoint's template (user_endpoint_config), e.g. "
        '--set account=MyProject --set nodes_per_block=4; checked against '
        'configs/<site>/user_config_schema.json (see `launch.py endpoint-config --help`)',
    )
    deploy.add_argument(
        '--run-dir',
        help='directory for nodefiles and Parsl logs (default: runs/<timestamp>; with '
        '--executor globus-compute a directory on the endpoint, default '
        f'{REMOTE_RUN_ROOT}/<timestamp>)',
    )
    faults = parser.add_argument_group('faults, walltime and resuming')
    faults.add_argument(
        '--retries',
        type=int,
        default=2,
        help='times a call whose worker, worker pool or interchange was lost is run again; '
        'tool errors are never retried (default: 2)',
    )
    faults.add_argument(
        '--restarts',
        type=int,
        default=1,
        help='times a crashed Director is restarted with the same identity and '
        'partition (default: 1)',
    )
    faults.add_argument(
        '--timeout',
        type=float,
        metavar='S',
        help='seconds each tool call may run before it is stopped (default: none)',
    )
    faults.add_argument(
        '--supervise',
        action='store_true',
        help='run every call in a forked child of its worker, so that a crashing tool '
        'fails only its call (cancel and --timeout work either way); costs throughput',
    )
    faults.add_argument(
        '--journal-sync',
        choices=SYNC_MODES,
        help='when journal commits reach the disk: after-answer (default; every result is '
        "written before it is answered and fsync'ed right after), before-answer (answers "
        'wait for the fsync: survives a node crash at any instant), off (never fsync)',
    )
    faults.add_argument(
        '--walltime',
        metavar='HH:MM:SS',
        help='time left in the allocation (default: $SLURM_JOB_END_TIME or $PBS_WALLTIME, '
        'else unlimited); calls that cannot finish in time are refused',
    )
    faults.add_argument(
        '--drain-margin',
        type=float,
        default=30.0,
        metavar='S',
        help='seconds before the walltime ends at which Directors drain (default: 30)',
    )
    faults.add_argument(
        '--resume',
        metavar='RUN_DIR',
        help='finish an earlier run: re-attach to its Directors (or start new ones), '
        'skip the calls its journals hold, report all of them',
    )
    out = parser.add_argument_group('output')
    out.add_argument('--json', action='store_true', help='print one JSON document')
    out.add_argument(
        '--quiet',
        action='store_true',
        help='no live progress bars on stderr (--json implies it)',
    )
    out.add_argument(
        '--log-level',
        default='WARNING',
        choices=['DEBUG', 'INFO', 'WARNING', 'ERROR'],
        help='logging level on stderr (default: WARNING)',
    )
    return parser


@dataclasses.dataclass
class RunPlan:
    """Everything decided before any process starts."""

    partitions: list[Partition | PartitionRequest]
    source: NodeSource
    profile: SiteProfile
    run_dir: pathlib.Path
    iterations: int
    duration: float
    exchange: str
    executor: str
    endpoint: str | None
    workers_per_node: int | None
    retries: int = 2
    restarts: int = 1
    timeout: float | None = None
    supervise: bool = False
    journal_sync: SyncMode = DEFAULT_SYNC
    walltime: Walltime = dataclasses.field(default_factory=Walltime)
    manifest: RunManifest | None = None
    director_run_dir: str = ''
    endpoint_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    campaign: bool = False
    rounds: int = 2
    steps: int = 300
    tool: str = 'ase_md'
    progress: bool = False

    def __post_init__(self) -> None:
        self.director_run_dir = self.director_run_dir or str(self.run_dir)


def _check_flags(args: argparse.Namespace) -> None:
    if args.iterations < 0:
        raise ConfigurationError(
            f'--iterations {args.iterations} is negative; give 0 or more calls',
        )
    if not args.duration >= 0 or args.duration == float('inf'):
        raise ConfigurationError(
            f'--duration {args.duration} is invalid; give seconds >= 0',
        )
    if args.workers_per_node is not None and args.workers_per_node < 1:
        raise ConfigurationError(
            f'--workers-per-node {args.workers_per_node} is invalid; give >= 1',
        )
    if args.retries < 0:
        raise ConfigurationError(f'--retries {args.retries} is negative; give 0 or more')
    if args.restarts < 0:
        raise ConfigurationError(f'--restarts {args.restarts} is negative; give 0 or more')
    if args.timeout is not None and not 0 < args.timeout < float('inf'):
        raise ConfigurationError(f'--timeout {args.timeout} is invalid; give seconds > 0')
    if args.campaign:
        check_campaign(args.tool, args.rounds, args.steps)


def plan_run(args: argparse.Namespace) -> RunPlan:
    """Validate the flags and lay out the run directory.

    Raises:
        ConfigurationError: On any bad value; nothing has started yet.

    """
    _check_flags(args)
    walltime = Walltime(allocation_end(args.walltime), args.drain_margin)
    if args.resume:
        return _plan_resume(args, walltime)
    executor = args.executor or 'local'
    remote = executor == 'globus-compute'
    exchange = validate_exchange(args.exchange or ('hosted' if remote else 'local'))
    validate_executor(executor, exchange, args.endpoint)
    profile = load_site(args.site).with_overrides(launcher_args=args.launcher_args)
    if remote:
        # This machine's batch variables say nothing of the endpoint's job.
        remote_walltime = walltime if args.walltime else Walltime(None, args.drain_margin)
        return plan_remote_run(args, profile, exchange, remote_walltime)
    if args.endpoint_options:
        raise ConfigurationError(
            '--set gives values to a Globus Compute endpoint template; use it with '
            '--executor globus-compute --endpoint UUID',
        )
    nodes, source = discover_nodes(
        nodes_file=args.nodes_file,
        simulate=args.simulate_nodes,
    )
    sizes = parse_sizes(args.partition_sizes) if args.partition_sizes else None
    parts = split_nodes(nodes, count=args.partitions, sizes=sizes)
    run_dir = pathlib.Path(
        args.run_dir or f'runs/{time.strftime("%Y%m%d-%H%M%S")}',
    ).resolve()
    return RunPlan(
        partitions=write_partitions(parts, run_dir),
        source=source,
        profile=profile,
        run_dir=run_dir,
        exchange=exchange,
        executor=executor,
        endpoint=args.endpoint,
        workers_per_node=args.workers_per_node,
        **_work_options(args, walltime),
    )


def _work_options(args: argparse.Namespace, walltime: Walltime) -> dict[str, Any]:
    """The plan's fields that local and remote runs take alike from the flags."""
    return {
        'iterations': args.iterations,
        'duration': args.duration,
        'campaign': args.campaign,
        'rounds': args.rounds,
        'steps': args.steps,
        'tool': args.tool,
        'progress': not (args.quiet or args.json),
        'retries': args.retries,
        'restarts': args.restarts,
        'timeout': args.timeout,
        'supervise': args.supervise,
        'journal_sync': args.journal_sync or DEFAULT_SYNC,
        'walltime': walltime,
    }


def plan_remote_run(
    args: argparse.Namespace,
    profile: SiteProfile,
    exchange: str,
    walltime: Walltime,
) -> RunPlan:
    """Plan a run whose Directors start on a Globus Compute endpoint.

    The job's nodes are only known there: each Director gets a
    [`PartitionRequest`][actors.job.partition.PartitionRequest] and resolves its
    slice from ``$PBS_NODEFILE``/``$SLURM_JOB_NODELIST`` on the lead node.

    Raises:
        ConfigurationError: On any bad value; nothing has been submitted yet.

    """
    if args.simulate_nodes is not None:
        raise ConfigurationError(
            '--simulate-nodes cannot be used with --executor globus-compute: the '
            "Directors split the endpoint's batch job; give --partitions or --partition-sizes",
        )
    sizes = tuple(parse_sizes(args.partition_sizes)) if args.partition_sizes else None
    count = None if sizes else (2 if args.partitions is None else args.partitions)
    if count is not None and count < 1:
        raise ConfigurationError(f'--partitions {count} is invalid; need at least 1 partition')
    # Check the endpoint's values against the site's schema before submitting.
    template = load_template(profile.name) if profile.name in endpoint_sites() else None
    options = parse_assignments(args.endpoint_options, template.schema() if template else {})
    if template is not None:
        validate_options(template, options)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    total = len(sizes) if sizes else count
    assert total is not None
    # Here only the manifest; the Directors' files stay on the endpoint.
    local_dir = pathlib.Path(f'runs/{stamp}').resolve()
    local_dir.mkdir(parents=True, exist_ok=True)
    return RunPlan(
        partitions=[
            PartitionRequest(index=i, count=count, sizes=sizes, nodes_file=args.nodes_file)
            for i in range(total)
        ],
        source=NodeSource('endpoint', f'batch job of Globus Compute endpoint {args.endpoint}'),
        profile=profile,
        run_dir=local_dir,
        exchange=exchange,
        executor=args.executor,
        endpoint=args.endpoint,
        workers_per_node=args.workers_per_node,
        director_run_dir=args.run_dir or f'{REMOTE_RUN_ROOT}/{stamp}',
        endpoint_config=options,
        **_work_options(args, walltime),
    )


def check_campaign(tool: str, rounds: int, steps: int) -> None:
    """Validate the campaign flags before anything starts.

    Raises:
        ConfigurationError: On a bad value.

    """
    from actors.tools.registry import get_tool
    from actors.tools.schemas import validate_arguments

    if rounds < 0:
        raise ConfigurationError(f'--rounds {rounds} is negative; give 0 or more')
    if get_tool(tool).mpi:
        raise ConfigurationError(
            f'--tool {tool} is an MPI tool; the campaign scans single-slot tools (ase_md, mock_md)',
        )
    if 'temperature' not in get_tool(tool).signature.parameters:
        raise ConfigurationError(f'--tool {tool} has no temperature to scan')
    try:
        validate_arguments(tool, campaign_arguments(tool, steps))
    except ConfigurationError as e:
        raise ConfigurationError(f'--steps {steps}: {e}') from None


def campaign_arguments(tool: str, steps: int) -> dict[str, Any]:
    """Arguments of every campaign call besides the temperature."""
    if tool == 'ase_md':
        # 32 atoms held at each temperature: a few seconds per call on a laptop core.
        return {'steps': steps, 'size': 2, 'samples': 20, 'ensemble': 'langevin'}
    return {'steps': steps}


def _plan_resume(args: argparse.Namespace, walltime: Walltime) -> RunPlan:
    """Plan the rest of an earlier run from its manifest."""
    if args.run_dir and pathlib.Path(args.run_dir).resolve() != pathlib.Path(args.resume).resolve():
        raise ConfigurationError(
            f'--run-dir {args.run_dir!r} and --resume {args.resume!r} differ; '
            'a resumed run keeps its run directory',
        )
    manifest = RunManifest.read(args.resume)
    for entry in manifest.directors:
        if not pathlib.Path(entry.partition.nodefile).is_file():
            raise ConfigurationError(
                f'{manifest.run_dir}: partition nodefile {entry.partition.nodefile!r} is missing',
            )
    exchange = validate_exchange(args.exchange or manifest.exchange)
    executor = args.executor or manifest.executor
    validate_executor(executor, exchange, args.endpoint)
    work = manifest.work
    workers = work.get('workers_per_node')
    return RunPlan(
        partitions=[entry.partition for entry in manifest.directors],
        source=NodeSource('resume', f'manifest of {manifest.run_dir}'),
        profile=load_site(manifest.site).with_overrides(launcher_args=args.launcher_args),
        run_dir=pathlib.Path(manifest.run_dir),
        iterations=int(work.get('iterations', args.iterations)),
        duration=float(work.get('duration', args.duration)),
        exchange=exchange,
        executor=executor,
        endpoint=args.endpoint,
        workers_per_node=args.workers_per_node or workers,
        retries=args.retries,
        restarts=args.restarts,
        timeout=args.timeout if args.timeout is not None else work.get('timeout'),
        supervise=args.supervise or bool(work.get('supervise')),
        journal_sync=args.journal_sync or work.get('journal_sync') or DEFAULT_SYNC,
        walltime=walltime,
        manifest=manifest,
        progress=not (args.quiet or args.json),
    )


def call_keys(partition: Partition, iterations: int) -> tuple[str, list[str]]:
    """Stable keys of the run's calls to one Director: ``md_sim`` and the batch's."""
    director = f'director-{partition.index}'
    return f'{director}/md_sim/0', [f'{director}/md_sim_batch/{i}' for i in range(iterations)]


async def attach(manager: Manager[Any], plan: RunPlan) -> list[Any | None]:
    """Per partition: a handle to its recorded Director if it still answers, else ``None``."""
    if plan.manifest is None or plan.exchange in ('local', 'http'):
        return [None] * len(plan.partitions)

    async def answering(entry: DirectorEntry) -> Any | None:
        handle = manager.get_handle(entry.agent_id())
        try:
            await handle.ping(timeout=ATTACH_TIMEOUT)
        except Exception as e:
            logger.info(
                '%s of %s does not answer (%r); starting a new one', entry.name, plan.run_dir, e
            )
            return None
        return handle

    return list(await asyncio.gather(*(answering(e) for e in plan.manifest.directors)))


async def release(handles: Sequence[Any], timeout: float = RELEASE_TIMEOUT) -> None:
    """Shut down Directors this client re-attached to (its Manager only stops its own).

    Waits until each one's mailbox is closed (it finished its shutdown), at
    most ``timeout`` seconds.
    """

    async def stop(handle: Any) -> None:
        with contextlib.suppress(MailboxTerminatedError):
            await handle.shutdown()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await handle.ping(timeout=5)
            except MailboxTerminatedError:
                return
            except TimeoutError:
                continue  # shutting down: it does not answer pings any more
            await asyncio.sleep(0.2)
        logger.warning('%s did not finish shutting down within %.0fs', handle.agent_id, timeout)

    await asyncio.gather(*(stop(h) for h in handles))


async def run(
    plan: RunPlan,
    executor: Executor | None = None,
    on_start: Callable[[], None] | None = None,
    on_directors: Callable[[int, int], None] | None = None,
) -> list[CallResult]:
    """Start (or re-attach to) the Directors, send the calls not yet done, collect all.

    Args:
        plan: What to start.
        executor: Hosts the Directors instead of the one ``plan.executor``
            names (tests use a stand-in for a Globus Compute endpoint).
        on_start: Called once the exchange is open, before any Director starts.
        on_directors: Called with the numbers of Directors re-attached to
            and started, once all are ready.

    """
    if executor is None:
        # Before the exchange: a missing Globus login fails here, before anything starts.
        executor = make_executor(
            plan.executor,
            directors=len(plan.partitions),
            endpoint=plan.endpoint,
            endpoint_config=plan.endpoint_config,
        )
    with open_exchange(plan.exchange) as factory:
        # Academy's max_retries counts attempts in all, not restarts.
        manager = await Manager.from_exchange_factory(
            factory,
            executors=executor,
            max_retries=plan.restarts + 1,
        )
        if on_start is not None:
            on_start()
        async with manager:
            found = await attach(manager, plan)
            attached = [h for h in found if h is not None]
            missing = [p for p, h in zip(plan.partitions, found, strict=True) if h is None]
            started = iter(
                await launch_directors(
                    manager,
                    missing,
                    plan.profile,
                    plan.director_run_dir,
                    workers_per_node=plan.workers_per_node,
                    retries=plan.retries,
                    supervise=plan.supervise,
                    journal_sync=plan.journal_sync,
                    walltime=plan.walltime,
                ),
            )
            handles = [h if h is not None else next(started) for h in found]
            timeout = (
                STARTUP_TIMEOUT if plan.executor != 'globus-compute' else REMOTE_STARTUP_TIMEOUT
            )
            statuses = await wait_ready(manager, handles, timeout=timeout)
            # Directors that resolved their slice on the endpoint report its nodes.
            plan.partitions = [
                p
                if isinstance(p, Partition)
                else Partition(status.partition, tuple(status.nodes), nodefile='')
                for p, status in zip(plan.partitions, statuses, strict=True)
            ]
            write_manifest(plan, handles)
            if on_directors is not None:
                on_directors(len(attached), len(missing))
            if plan.campaign:
                outcome = await run_campaign(manager, handles, plan)
            else:
                outcome = await drive_all(manager, handles, statuses, plan)
            # The run is finished: stop the re-attached Directors as their own
            # Manager would have (this one stops those it started).
            await release(attached)
    return outcome


async def drive_all(
    manager: Manager[Any],
    handles: Sequence[Any],
    statuses: Sequence[DirectorStatus],
    plan: RunPlan,
) -> list[CallResult]:
    """Send every Director the run's calls not yet journaled; all results, in key order."""
    done = final_by_key(read_run(plan.run_dir))
    work = asyncio.gather(
        *(
            drive(manager, handle, partition, plan, done)
            for handle, partition in zip(handles, plan.partitions, strict=True)
        ),
    )
    if plan.progress:
        totals = [
            sum(key not in done for key in _all_keys(partition, plan.iterations))
            for partition in plan.partitions
        ]
        per_director = await with_progress(
            work,
            handles,
            statuses,
            totals,
            lambda h: call(manager, h, 'status'),
        )
    else:
        per_director = await work
    return [result for results in per_director for result in results]


def _all_keys(partition: Partition, iterations: int) -> list[str]:
    single, batch = call_keys(partition, iterations)
    return [single, *batch]


async def run_campaign(manager: Manager[Any], handles: Sequence[Any], plan: RunPlan) -> Any:
    """Launch the mock planner agent and run its campaign on the Directors."""
    from actors.client.planner import Planner

    planner = await manager.launch(
        Planner,
        args=(list(handles),),
        kwargs={
            'tool': plan.tool,
            'rounds': plan.rounds,
            'arguments': campaign_arguments(plan.tool, plan.steps),
        },
        name='planner',
        # A light agent: it runs here, whatever hosts the Directors.
        executor='event_loop',
    )
    return await call(manager, planner, 'run_campaign')


async def with_progress(
    work: Awaitable[Any],
    handles: Sequence[Any],
    baseline: Sequence[DirectorStatus],
    totals: Sequence[int],
    fetch: Callable[[Any], Awaitable[DirectorStatus]],
) -> Any:
    """Await ``work`` while one progress bar per Director follows it on stderr."""
    with make_progress() as progress:
        bars = DirectorBars(progress, baseline, totals)
        follower = asyncio.create_task(bars.follow(handles, fetch))
        try:
            result = await work
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        # Show the final counts; after a failure (e.g. the exchange is gone) there
        # is nothing to ask, and a status call must not hold the run's exit.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bars.poll(handles, fetch), timeout=5)
        return result


def write_results(run_dir: pathlib.Path, results: Sequence[CallResult]) -> pathlib.Path:
    """Write the client's results to ``<run_dir>/results.jsonl``, one per line."""
    path = run_dir / RESULTS_NAME
    with open(path, 'w', encoding='utf-8') as out:
        for result in results:
            out.write(json.dumps(result.to_dict()) + '\n')
    return path


async def drive(
    manager: Manager[Any],
    handle: Any,
    partition: Partition,
    plan: RunPlan,
    done: dict[str, dict[str, Any]],
) -> list[CallResult]:
    """Send one Director the run's calls that are not done yet; all results in order."""
    single_key, batch_keys = call_keys(partition, plan.iterations)
    params = {'duration': plan.duration}
    send = call_resilient if plan.restarts > 0 else call
    todo = [key for key in batch_keys if key not in done]
    requests = []
    if single_key not in done:
        requests.append(
            send(manager, handle, 'md_sim', call_key=single_key, timeout=plan.timeout, **params),
        )
    if todo:
        requests.append(
            send(
                manager,
                handle,
                'md_sim_batch',
                params=[params] * len(todo),
                call_keys=todo,
                timeout=plan.timeout,
            ),
        )
    new: dict[str, CallResult] = {}
    for answer in await asyncio.gather(*requests):
        for result in answer if isinstance(answer, list) else [answer]:
            new[result.call_key] = result
    return [
        new[key] if key in new else CallResult.from_dict(done[key])
        for key in [single_key, *batch_keys]
    ]


def write_manifest(plan: RunPlan, handles: Sequence[Any]) -> None:
    """Record the run's Directors in ``<run_dir>/manifest.json``."""
    RunManifest(
        run_dir=str(plan.run_dir),
        exchange=plan.exchange,
        site=plan.profile.name,
        executor=plan.executor,
        directors=[
            DirectorEntry(partition=p, agent_uid=str(h.agent_id.uid), name=f'director-{p.index}')
            for p, h in zip(plan.partitions, handles, strict=True)
            if isinstance(p, Partition)
        ],
        work={
            'iterations': plan.iterations,
            'duration': plan.duration,
            'timeout': plan.timeout,
            'workers_per_node': plan.workers_per_node,
            'supervise': plan.supervise,
            'journal_sync': plan.journal_sync,
        },
    ).write()


def render_json(
    plan: RunPlan,
    results: Sequence[CallResult],
    wall: float,
    campaign: Any = None,
) -> str:
    """One JSON document with partitions and every result (and the campaign)."""
    extra = {}
    if campaign is not None:
        report = campaign.to_dict()
        report.pop('results')
        extra['campaign'] = report
    return json.dumps(
        {
            'run_dir': str(plan.run_dir),
            'site': plan.profile.name,
            'node_source': dataclasses.asdict(plan.source),
            'wall_time': wall,
            'partitions': [
                {
                    'index': p.index,
                    'director': f'director-{p.index}',
                    'nodes': list(p.nodes),
                    'nodefile': p.nodefile,
                }
                for p in plan.partitions
            ],
            'results': [r.to_dict() for r in results],
            **extra,
        },
        indent=2,
    )


def render_tables(plan: RunPlan, results: Sequence[CallResult], wall: float) -> None:
    """Print one table per Director and a summary line."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # Rich falls back to 80 columns when piped; results tables need more.
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(
        f'[bold]{len(plan.partitions)} Directors[/bold] on '
        f'{sum(p.size for p in plan.partitions)} nodes '
        f'({plan.source.kind}: {plan.source.detail}), site {plan.profile.name}, '
        f'run dir {plan.run_dir}',
    )
    for partition in plan.partitions:
        director = f'director-{partition.index}'
        rows = [r for r in results if r.director == director]
        ok = sum(r.ok for r in rows)
        span = (max(r.end for r in rows) - min(r.start for r in rows)) if rows else 0
        table = Table(
            title=(
                f'{director}: partition {partition.index} '
                f'{escape(str(list(partition.nodes)))} - {ok}/{len(rows)} ok, '
                f'{span:.2f}s'
            ),
            title_justify='left',
        )
        for column in ('call', 'action', 'node', 'worker', 'start', 'wall'):
            table.add_column(column, no_wrap=True)
        table.add_column('result')
        t0 = min((r.start for r in rows), default=0.0)
        for r in rows:
            outcome = (
                f'energy={r.value["energy"]:.3f}'
                if r.ok and isinstance(r.value, dict) and 'energy' in r.value
                else (
                    'ok' if r.ok else f'[red]{escape(f"{r.error_type}: {r.error_message}")}[/red]'
                )
            )
            table.add_row(
                r.call_id,
                r.action,
                ','.join(r.nodes) if r.nodes else (r.node or '-'),
                '-' if r.worker is None else str(r.worker),
                f'+{r.start - t0:.2f}s',
                f'{r.wall_time:.2f}s',
                outcome,
            )
        console.print(table)
    failed = sum(not r.ok for r in results)
    console.print(
        f'{len(results)} calls, {len(results) - failed} ok, {failed} failed, wall time {wall:.2f}s',
    )


@subcommand('endpoint-config')
def endpoint_config(argv: list[str]) -> int:
    """``launch.py endpoint-config``: render, check or install an endpoint template."""
    parser = _Parser(
        prog='launch.py endpoint-config',
        description=(
            "Render a site's Globus Compute endpoint template with --set values and "
            "check the result with the endpoint's own code (the values against "
            'user_config_schema.json, then the YAML with load_config_yaml); print it. '
            'With --install, copy the template and schema into an endpoint directory.'
        ),
    )
    parser.add_argument(
        '--site',
        required=True,
        help=f'site with an endpoint template: {", ".join(endpoint_sites())}',
    )
    parser.add_argument(
        '--set',
        dest='options',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='a user_endpoint_config value (repeat); the schema lists the keys',
    )
    parser.add_argument(
        '--install',
        metavar='DIR',
        help='copy the template and schema into DIR, e.g. ~/.globus_compute/<endpoint name>',
    )
    parser.add_argument(
        '--schema',
        action='store_true',
        help="print the site's schema (the keys --set accepts) instead of rendering",
    )
    args = parser.parse_args(argv)
    try:
        template = load_template(args.site)
        if args.schema:
            print(template.schema_path.read_text(), end='')
            return 0
        if args.install:
            for path in install(template, args.install):
                print(path)
            if not args.options:
                return 0
        options = parse_assignments(args.options, template.schema())
        rendered = render(template, options)
        interface = missing_interface(rendered)
        load_rendered(rendered, address='127.0.0.1' if interface else None)
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    if interface:
        print(
            f'note: interface {interface!r} does not exist on this host; the endpoint '
            'resolves it on its own host (everything else was loaded here)',
            file=sys.stderr,
        )
    if not args.install:
        print(rendered.lstrip('\n'), end='' if rendered.endswith('\n') else '\n')
    return 0


@subcommand('status')
def status_command(argv: list[str]) -> int:
    """``launch.py status RUN_DIR``: every Director's partition, slots, queue, throughput."""
    parser = _Parser(
        prog='launch.py status',
        description=(
            'Show the Directors of a running run: partition, slots, queue and recent '
            'throughput. The run must use a networked exchange (redis://, http(s)://).'
        ),
    )
    parser.add_argument('run_dir', metavar='RUN_DIR', help='the run directory of a running run')
    parser.add_argument('--json', action='store_true', help='print one JSON document')
    parser.add_argument(
        '--timeout',
        type=float,
        default=10.0,
        help='seconds to wait for each Director (default: 10)',
    )
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error(f'--timeout {args.timeout} is invalid; give seconds > 0')
    # A failed connection leaves aiohttp/redis objects whose finalizers log
    # tracebacks; the one-line error below says everything.
    logging.getLogger('asyncio').setLevel(logging.CRITICAL)
    try:
        manifest = RunManifest.read(args.run_dir)
        reports = asyncio.run(query_status(manifest, timeout=args.timeout))
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    except ExchangeUnreachableError as e:
        print(f'{parser.prog}: {e}', file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                [
                    {
                        'director': r.entry.name,
                        'partition': r.entry.partition.index,
                        'status': r.status.to_dict() if r.status else None,
                        'problem': r.problem,
                    }
                    for r in reports
                ],
                indent=2,
            ),
        )
    else:
        render_status(manifest, reports)
    return 0 if all(r.status is not None for r in reports) else 1


def render_status(manifest: RunManifest, reports: Sequence[StatusReport]) -> None:
    """Print one row per Director."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f'run {manifest.run_dir} (exchange {manifest.exchange}, site {manifest.site})',
        title_justify='left',
    )
    columns = ('director', 'partition', 'nodes', 'slots', 'workers', 'queued', 'running')
    for column in (*columns, 'done', 'failed', 'calls/s'):
        table.add_column(column, no_wrap=column != 'nodes')
    for r in reports:
        nodes = escape(', '.join(r.entry.partition.nodes))
        if r.status is None:
            table.add_row(
                r.entry.name,
                str(r.entry.partition.index),
                nodes,
                f'[red]{escape(r.problem or "no answer")}[/red]',
            )
            continue
        st = r.status
        table.add_row(
            st.director,
            str(st.partition),
            nodes,
            str(st.slots),
            str(st.workers_connected),
            str(st.queued),
            str(st.running),
            str(st.done),
            str(st.failed),
            f'{st.recent_throughput:.1f} (last {st.throughput_window:g}s)',
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@subcommand('report')
def report_command(argv: list[str]) -> int:
    """``launch.py report RUN_DIR``: a PNG timeline of every call and utilization."""
    parser = _Parser(
        prog='launch.py report',
        description=(
            'Draw a Gantt timeline of every call on every node (coloured by Director) '
            "and each partition's utilization, from the run's journal or results.jsonl."
        ),
    )
    parser.add_argument('run_dir', metavar='RUN_DIR', help='the run directory')
    parser.add_argument(
        '--output',
        '-o',
        metavar='PNG',
        help='where to write the PNG (default: RUN_DIR/report.png)',
    )
    args = parser.parse_args(argv)
    try:
        report = render_report(args.run_dir, args.output)
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    usage = ', '.join(f'partition {i} {u:.1%}' for i, u in report.utilization.items())
    print(
        f'{report.path}: {report.bars} calls on {len(report.lanes)} worker slots over '
        f'{report.span:.2f}s; utilization {usage}'
        + (f'; {report.unplaced} record(s) never reached a worker' if report.unplaced else ''),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s',
    )
    try:
        plan = plan_run(args)
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')

    def announce() -> None:
        # Before any call, so a client killed mid-run knows what to --resume.
        # (Remote Directors keep their run dir and journals on the endpoint.)
        if plan.executor != 'globus-compute':
            print(f'{parser.prog}: run dir {plan.run_dir}', file=sys.stderr, flush=True)

    def directors(attached: int, started: int) -> None:
        if plan.manifest is not None:

            def count(n: int, kind: str) -> str:
                return f'{n} {kind} Director{"" if n == 1 else "s"}'

            said = [f're-attached to {count(attached, "running")}'] if attached else []
            said += [f'started {count(started, "new")}'] if started else []
            print(f'{parser.prog}: {", ".join(said)}', file=sys.stderr, flush=True)

    start = time.time()
    campaign = None
    try:
        results = asyncio.run(run(plan, on_start=announce, on_directors=directors))
        if plan.campaign:
            campaign, results = results, results.results
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    except (DirectorFailedError, TimeoutError, OSError, ConnectionError) as e:
        print(
            f'{parser.prog}: failed: {type(e).__name__}: {e}; finished calls are in '
            f'{plan.run_dir}/journal; finish with: {parser.prog} --resume {plan.run_dir}',
            file=sys.stderr,
        )
        return 1
    except TaskExecutionFailed as e:
        # A Director on a Globus Compute endpoint raised; its last line names the error.
        last = next((line for line in reversed(e.remote_data.splitlines()) if line.strip()), '')
        print(f'{parser.prog}: failed on the endpoint: {last.strip()}', file=sys.stderr)
        return 1
    wall = time.time() - start
    write_results(plan.run_dir, results)
    if args.json:
        print(render_json(plan, results, wall, campaign))
    else:
        render_tables(plan, results, wall)
        if campaign is not None:
            render_campaign(campaign)
    return 0 if all(r.ok for r in results) else 1


def render_campaign(report: Any) -> None:
    """Print the campaign's rounds and measured points."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    table = Table(title=f'campaign: temperature scan with {report.tool}', title_justify='left')
    for column in ('T (K)', 'mean E_pot (eV/atom)', 'final T (K)', 'call', 'node'):
        table.add_column(column, no_wrap=True)
    for point in report.points:
        final = point['final_temperature']
        table.add_row(
            f'{point["temperature"]:.0f}',
            f'{point["mean_potential_energy"]:.4f}',
            '-' if final is None else f'{final:.0f}',
            point['call_id'],
            point['node'] or '-',
        )
    console.print(table)
    for entry in report.rounds:
        temps = ', '.join(f'{t:.0f}' for t in entry['temperatures'])
        console.print(f'round {entry["round"]}: {temps} K ({entry["reasons"][0]})')
    if report.steepest:
        steep = report.steepest
        console.print(
            f'steepest dE/dT: {steep["low"]:.0f}-{steep["high"]:.0f} K, '
            f'{steep["dE_dT"] * 1000:.3f} meV/atom/K',
        )


@subcommand('tools')
def tools_command(argv: list[str]) -> int:
    """``launch.py tools --format openai|mcp``: print the tool schemas as a JSON list."""
    from actors.tools.schemas import FORMATS
    from actors.tools.schemas import export

    parser = _Parser(
        prog='launch.py tools',
        description='Print every tool and Director action as a JSON schema for LLM tool calling.',
    )
    parser.add_argument(
        '--format',
        default='openai',
        choices=FORMATS,
        help='openai: function-calling "tools" list; mcp: MCP tools/list entries (default: openai)',
    )
    args = parser.parse_args(argv)
    print(json.dumps(export(args.format), indent=2))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error.
        sys.stderr.close()
        sys.exit(0)
