"""Everything a run decides before any process starts: the [`RunPlan`][actors.cli.plan.RunPlan].

[`plan_run`][actors.cli.plan.plan_run] checks the flags, finds the batch
job's nodes and writes the partitions' nodefiles; a Globus Compute run
leaves the nodes to the endpoint (``plan_remote_run``), and ``--resume``
takes the partitions and the Directors' options from the earlier run's
manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pathlib
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from actors.client.deploy import validate_executor
from actors.client.exchange import require_password
from actors.client.exchange import validate_exchange
from actors.client.model_endpoint import DEFAULT_KEY_ENV
from actors.client.model_endpoint import DEFAULT_MAX_CALLS
from actors.client.model_endpoint import DEFAULT_MAX_STEPS
from actors.client.model_endpoint import ModelOptions
from actors.client.model_endpoint import check_options
from actors.common.errors import ConfigurationError
from actors.common.limits import MAX_TIMEOUT
from actors.common.timing import MODEL_TIMEOUT
from actors.coordinator.growth import GrowthPolicy
from actors.coordinator.policy import ElasticPolicy
from actors.director.checks import MAX_BATCH
from actors.director.options import MAX_WORKERS
from actors.director.options import DirectorOptions
from actors.job.partition import JOB_ID_VARIABLES
from actors.job.partition import MAX_SIMULATED_NODES
from actors.job.partition import NodeSource
from actors.job.partition import Partition
from actors.job.partition import PartitionRequest
from actors.job.partition import discover_nodes
from actors.job.partition import parse_sizes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions
from actors.job.walltime import Walltime
from actors.job.walltime import allocation_end
from actors.job.walltime import parse_duration
from actors.site.profile import SiteProfile
from actors.site.profile import available_sites
from actors.site.profile import load_site
from actors.store.journal import DEFAULT_SYNC
from actors.store.manifest import RunManifest
from actors.store.moves import resumed_partitions
from actors.store.run_dirs import fresh_run_dir
from actors.store.run_dirs import new_run_dir
from actors.store.run_lock import lock_run_dir
from actors.tools.mock import MAX_DURATION

logger = logging.getLogger(__name__)

REMOTE_RUN_ROOT = '~/hpc-tool-calling/runs'
"""Default parent of the Directors' run directory on a Globus Compute endpoint."""

_LEGACY_OPTIONS = ('workers_per_node', 'supervise', 'journal_sync')
"""Director options that manifests written before ``RunManifest.director`` kept in ``work``."""


@dataclasses.dataclass
class RunPlan:
    """Everything decided before any process starts.

    Attributes:
        partitions: One partition per Director (a request on a Globus
            Compute endpoint, resolved there).
        source: Where the nodes came from.
        profile: The site profile.
        run_dir: This client's run directory (manifest, results).
        iterations: Calls in each Director's ``md_sim_batch``.
        duration: Seconds per mock MD call.
        exchange: The Academy exchange spec.
        executor: Where the Directors run.
        endpoint: The Globus Compute endpoint UUID, if any.
        director: How every Director runs.
        restarts: Times a crashed Director is restarted.
        timeout: Seconds each tool call may run (``None``: no limit).
        manifest: The earlier run's manifest with ``--resume``.
        reattach: Whether ``--resume`` may re-attach to the manifest's
            Directors (not for a copied run directory: they serve the original).
        director_run_dir: The Directors' run directory (on the endpoint
            for a remote run; else ``run_dir``).
        endpoint_config: Values for the endpoint's template.
        campaign: Run the mock planner agent instead of the md_sim calls.
        llm: With ``campaign``: the model that plans it instead of the mock planner.
        rounds: The campaign's refinement rounds.
        steps: MD steps per campaign call.
        tool: The campaign's MD tool.
        progress: Show live progress bars on stderr.
        elastic: Move nodes between the Directors (``--static``: no).
        policy: How nodes move.
        growth: Whether and how the run asks for more batch jobs.

    """

    partitions: Sequence[Partition | PartitionRequest]
    source: NodeSource
    profile: SiteProfile
    run_dir: pathlib.Path
    iterations: int
    duration: float
    exchange: str
    executor: str
    endpoint: str | None
    director: DirectorOptions = dataclasses.field(default_factory=DirectorOptions)
    restarts: int = 1
    timeout: float | None = None
    manifest: RunManifest | None = None
    reattach: bool = True
    director_run_dir: str = ''
    endpoint_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    campaign: bool = False
    llm: ModelOptions | None = None
    rounds: int = 2
    steps: int = 300
    tool: str = 'ase_md'
    progress: bool = False
    elastic: bool = True
    policy: ElasticPolicy = dataclasses.field(default_factory=ElasticPolicy)
    growth: GrowthPolicy = dataclasses.field(default_factory=GrowthPolicy)

    def __post_init__(self) -> None:
        self.director_run_dir = self.director_run_dir or str(self.run_dir)


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
    profile = _site_profile(_site(args.site), args)
    if remote and args.grow_max_jobs and not args.no_grow:
        raise ConfigurationError(
            '--grow-max-jobs runs the coordinator where the scheduler is: a run on a Globus '
            'Compute endpoint does not grow yet; run launch.py inside the batch job instead'
        )
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
    run_dir = new_run_dir(args.run_dir) if args.run_dir else fresh_run_dir()
    work = _work_options(args, walltime)
    growth = growth_policy(args, profile, len(nodes))
    if growth.enabled and not work['elastic']:
        raise ConfigurationError(
            f'--grow-max-jobs {args.grow_max_jobs} needs nodes that move between Directors; '
            'drop --static (or give --no-grow)'
        )
    if work['elastic']:
        # An MPI call may borrow nodes up to the whole job, and the extra jobs' nodes.
        most = len(nodes) + growth.extra_nodes
        work['director'] = work['director'].replace(max_nodes=most)
    return RunPlan(
        growth=growth,
        partitions=write_partitions(parts, run_dir),
        source=source,
        profile=profile,
        run_dir=run_dir,
        exchange=exchange,
        executor=executor,
        endpoint=args.endpoint,
        **work,
    )


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
    options = _endpoint_options(profile.name, args.endpoint_options)
    total = len(sizes) if sizes else count
    assert total is not None
    # Here only the manifest; the Directors' files stay on the endpoint.
    local_dir = fresh_run_dir()
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
        director_run_dir=args.run_dir or f'{REMOTE_RUN_ROOT}/{local_dir.name}',
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


_MODEL_FLAGS = ('model', 'llm_key_env', 'llm_max_steps', 'llm_max_calls', 'llm_timeout')


def model_options(args: argparse.Namespace) -> ModelOptions | None:
    """The ``--llm`` flags, checked (``None`` without ``--llm``).

    Raises:
        ConfigurationError: On a bad combination or value, or no API key for
            a remote endpoint.

    """
    url = getattr(args, 'llm', None)
    if url is None:
        given = [name for name in _MODEL_FLAGS if getattr(args, name, None) is not None]
        if given:
            flag = '--' + given[0].replace('_', '-')
            raise ConfigurationError(f'{flag} goes with --campaign --llm URL; add them or drop it')
        return None
    if not args.campaign:
        raise ConfigurationError('--llm drives the planner of a campaign; add --campaign')
    if not args.model:
        raise ConfigurationError('--llm needs --model NAME, the model the server serves')
    options = ModelOptions(
        url=url,
        model=args.model,
        key_env=args.llm_key_env if args.llm_key_env is not None else DEFAULT_KEY_ENV,
        max_steps=DEFAULT_MAX_STEPS if args.llm_max_steps is None else args.llm_max_steps,
        max_calls=DEFAULT_MAX_CALLS if args.llm_max_calls is None else args.llm_max_calls,
        timeout=MODEL_TIMEOUT if args.llm_timeout is None else args.llm_timeout,
    )
    check_options(options)
    return options


def campaign_arguments(tool: str, steps: int) -> dict[str, Any]:
    """Arguments of every campaign call besides the temperature."""
    if tool == 'ase_md':
        # 32 atoms held at each temperature: a few seconds per call on a laptop core.
        return {'steps': steps, 'size': 2, 'samples': 20, 'ensemble': 'langevin'}
    return {'steps': steps}


DEFAULT_SITE = 'local'
"""The site of a run that names none: a simulated job on this host."""


def _site(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The site to run on: the one given, else ``DEFAULT_SITE`` (warning inside a batch job)."""
    if given:
        return given
    environ = os.environ if environ is None else environ
    job = next(((name, environ[name]) for name in JOB_ID_VARIABLES if environ.get(name)), None)
    if job is not None:
        logger.warning(
            'running inside batch job %s=%s without --site: the %s site starts every worker '
            "pool on this host (named after the job's nodes, not on them); give --site (%s) "
            'to use the nodes',
            *job,
            DEFAULT_SITE,
            ', '.join(s for s in available_sites() if s != DEFAULT_SITE),
        )
    return DEFAULT_SITE


def _site_profile(site: str, args: argparse.Namespace) -> SiteProfile:
    """The site's profile with the command line's launcher flags and encryption choice."""
    profile = load_site(site).with_overrides(launcher_args=args.launcher_args)
    if getattr(args, 'unencrypted_workers', False):
        profile = profile.with_overrides(encrypted=False)
    if not profile.encrypted:
        logger.warning(
            'worker pools of site %s are not encrypted: anyone who can reach the '
            "Directors' interchange ports can register as a pool, read tool calls and "
            'return results; use this only on a machine no other user can reach',
            profile.name,
        )
    return profile


def _check_flags(args: argparse.Namespace) -> None:
    if not 0 <= args.iterations <= MAX_BATCH:
        raise ConfigurationError(
            f'--iterations {args.iterations} is invalid; give 0 to {MAX_BATCH} calls',
        )
    if not 0 <= args.duration <= MAX_DURATION:
        raise ConfigurationError(
            f'--duration {args.duration} is invalid; give seconds from 0 to {MAX_DURATION:.0f}',
        )
    if args.workers_per_node is not None and not 1 <= args.workers_per_node <= MAX_WORKERS:
        raise ConfigurationError(
            f'--workers-per-node {args.workers_per_node} is invalid; give 1 to {MAX_WORKERS}',
        )
    if args.simulate_nodes is not None and not 1 <= args.simulate_nodes <= MAX_SIMULATED_NODES:
        raise ConfigurationError(
            f'--simulate-nodes {args.simulate_nodes} is invalid; a simulated job has 1 to '
            f'{MAX_SIMULATED_NODES} nodes (each one is a worker pool on this machine)',
        )
    if args.node_floor < 0:
        raise ConfigurationError(f'--node-floor {args.node_floor} is invalid; give 0 or more nodes')
    if args.retries < 0:
        raise ConfigurationError(f'--retries {args.retries} is negative; give 0 or more')
    if args.restarts < 0:
        raise ConfigurationError(f'--restarts {args.restarts} is negative; give 0 or more')
    if args.timeout is not None and not 0 < args.timeout <= MAX_TIMEOUT:
        raise ConfigurationError(
            f'--timeout {args.timeout} is invalid; give seconds above 0 and at most '
            f'{MAX_TIMEOUT:.0f} ({MAX_TIMEOUT / 86400:g} days)'
        )
    if args.campaign:
        check_campaign(args.tool, args.rounds, args.steps)
    model_options(args)


def growth_policy(args: argparse.Namespace, profile: SiteProfile, nodes: int) -> GrowthPolicy:
    """The growth flags as a policy (extra jobs on the site's scheduler, a simulated one locally).

    Raises:
        ConfigurationError: On a bad value (named with its flag).

    """
    scheduler = 'simulated' if profile.scheduler == 'none' else profile.scheduler
    walltime = parse_duration(args.grow_walltime or profile.walltime)
    return GrowthPolicy(
        max_jobs=0 if args.no_grow else args.grow_max_jobs,
        nodes_per_job=args.grow_nodes if args.grow_nodes is not None else max(nodes, 1),
        node_hours=args.node_hours,
        job_walltime=walltime,
        scheduler=scheduler,
        queue=args.grow_queue or profile.queue,
        account=args.grow_account or '',
        target=args.grow_target,
        drain_margin=min(args.drain_margin * 2, walltime / 2),
    )


def _work_options(args: argparse.Namespace, walltime: Walltime) -> dict[str, Any]:
    """The plan's fields that local and remote runs take alike from the flags."""
    return {
        'iterations': args.iterations,
        'duration': args.duration,
        'campaign': args.campaign,
        'llm': model_options(args),
        'rounds': args.rounds,
        'steps': args.steps,
        'tool': args.tool,
        'progress': not (args.quiet or args.json),
        'restarts': args.restarts,
        'timeout': args.timeout,
        'elastic': not args.static,
        'policy': ElasticPolicy(floor=args.node_floor),
        'director': DirectorOptions(
            workers_per_node=args.workers_per_node,
            retries=args.retries,
            supervise=args.supervise,
            journal_sync=args.journal_sync or DEFAULT_SYNC,
            walltime=walltime,
        ),
    }


def _endpoint_options(site: str, assignments: list[str]) -> dict[str, Any]:
    """The ``--set`` values, checked against the site's schema before submitting."""
    # Only a remote run needs the endpoint code (and its YAML and Jinja imports).
    from actors.site.endpoint import endpoint_sites
    from actors.site.endpoint import load_template
    from actors.site.endpoint import parse_assignments
    from actors.site.endpoint import validate_options

    template = load_template(site) if site in endpoint_sites() else None
    options = parse_assignments(assignments, template.schema() if template else {})
    if template is not None:
        validate_options(template, options)
    return options


def _plan_resume(args: argparse.Namespace, walltime: Walltime) -> RunPlan:
    """Plan the rest of an earlier run from its manifest."""
    if args.run_dir and pathlib.Path(args.run_dir).resolve() != pathlib.Path(args.resume).resolve():
        raise ConfigurationError(
            f'--run-dir {args.run_dir!r} and --resume {args.resume!r} differ; '
            'a resumed run keeps its run directory',
        )
    manifest = RunManifest.read(args.resume)
    given = pathlib.Path(args.resume).resolve()
    try:
        lock_run_dir(given)
    except PermissionError as e:
        raise ConfigurationError(
            f'--resume {args.resume!r}: cannot take its lock ({e.strerror}); a resumed run '
            'writes its journals there, so it must be writable',
        ) from None
    copied = pathlib.Path(manifest.run_dir) != given
    if copied:
        # A copy (or a moved run): resume here, never the directory it came from.
        manifest = _moved(manifest, given)
    for entry in manifest.directors:
        if not pathlib.Path(entry.partition.nodefile).is_file():
            raise ConfigurationError(
                f'{manifest.run_dir}: partition nodefile {entry.partition.nodefile!r} is missing',
            )
    exchange = validate_exchange(args.exchange or manifest.exchange)
    require_password(exchange, manifest.exchange_needs_password, manifest.run_dir)
    executor = args.executor or manifest.executor
    validate_executor(executor, exchange, args.endpoint)
    work = manifest.work
    elastic = bool(work.get('elastic', False)) and not args.static
    partitions = [entry.partition for entry in manifest.directors]
    if elastic:
        partitions = resumed_partitions(partitions, pathlib.Path(manifest.run_dir))
    profile = _site_profile(manifest.site, args)
    growth = growth_policy(args, profile, sum(p.size for p in partitions))
    director = _resumed_options(args, manifest, walltime)
    if elastic and growth.enabled:
        most = sum(p.size for p in partitions) + growth.extra_nodes
        director = director.replace(max_nodes=max(director.max_nodes or 0, most))
    return RunPlan(
        partitions=partitions,
        elastic=elastic,
        growth=growth,
        policy=ElasticPolicy(floor=args.node_floor),
        source=NodeSource('resume', f'manifest of {manifest.run_dir}'),
        profile=profile,
        run_dir=pathlib.Path(manifest.run_dir),
        iterations=int(work.get('iterations', args.iterations)),
        duration=float(work.get('duration', args.duration)),
        exchange=exchange,
        executor=executor,
        endpoint=args.endpoint,
        director=director,
        restarts=args.restarts,
        timeout=args.timeout if args.timeout is not None else work.get('timeout'),
        manifest=manifest,
        reattach=not copied,
        progress=not (args.quiet or args.json),
    )


def _moved(manifest: RunManifest, run_dir: pathlib.Path) -> RunManifest:
    """The manifest of a run directory copied or moved to ``run_dir``.

    Paths under the recorded run directory (the partitions' nodefiles) move
    with it; the Directors recorded there belong to the original, so new
    ones are started (see ``RunPlan.reattach``).
    """
    old = pathlib.Path(manifest.run_dir)

    def rebased(path: str) -> str:
        try:
            return str(run_dir / pathlib.Path(path).relative_to(old))
        except ValueError:
            return path

    directors = [
        dataclasses.replace(
            entry,
            partition=dataclasses.replace(
                entry.partition, nodefile=rebased(entry.partition.nodefile)
            ),
        )
        for entry in manifest.directors
    ]
    return dataclasses.replace(manifest, run_dir=str(run_dir), directors=directors)


def _resumed_options(
    args: argparse.Namespace,
    manifest: RunManifest,
    walltime: Walltime,
) -> DirectorOptions:
    """The recorded Director options, with the flags given on this command line.

    Retries and the walltime always come from this command (the allocation is
    a new one); the other flags override the record only when given.
    """
    recorded = manifest.director or {
        key: manifest.work[key] for key in _LEGACY_OPTIONS if manifest.work.get(key) is not None
    }
    options = DirectorOptions.from_record(recorded)
    return options.replace(
        workers_per_node=args.workers_per_node or options.workers_per_node,
        retries=args.retries,
        supervise=args.supervise or options.supervise,
        journal_sync=args.journal_sync or options.journal_sync,
        walltime=walltime,
    )
