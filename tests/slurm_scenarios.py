"""Scenarios that run inside a Slurm allocation of the test cluster, as a user's script would.

``python -m tests.slurm_scenarios NAME RUN_DIR`` (from ``salloc``/``sbatch`` on
the cluster's hosts) starts real Directors on the allocation's nodes with the
``slurm`` site profile, runs the scenario, and prints one JSON document on
stdout for the test (in the root namespace) to check. Everything in it is
measured here; nothing is asserted (the tests do that).

``moves`` also runs with another profile: ``--site pbs --launcher-args '-launcher
ssh --ppn 1'`` from the PBS "mom" host with ``$PBS_NODEFILE`` set (the nodes come
from it, pools start through ``mpiexec`` over ssh; ``tests/cluster/test_pbs_cluster.py``),
and ``--override KEY=VALUE`` replaces one text field of the profile (e.g.
``bind_cmd=--bind-to`` for a PALS profile run with MPICH's hydra).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import pathlib
import sys
import time
from typing import Any

from academy.exchange import LocalExchangeFactory
from academy.manager import Manager

from actors.calling.calls import call
from actors.client.launch import launch_directors
from actors.client.launch import wait_ready
from actors.coordinator.policy import ElasticPolicy
from actors.job.partition import discover_nodes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions
from actors.site.profile import SiteProfile
from actors.site.profile import load_site


def _result(r: Any) -> dict[str, Any]:
    return {
        'call_id': r.call_id,
        'ok': r.ok,
        'node': r.node,
        'nodes': list(r.nodes or []),
        'start': r.start,
        'end': r.end,
        'attempts': getattr(r, 'attempts', 1),
    }


def _status(s: Any) -> dict[str, Any]:
    return {
        'director': s.director,
        'nodes': list(s.nodes),
        'moves_in': s.moves_in,
        'moves_out': s.moves_out,
        'workers_connected': s.workers_connected,
        'queued': s.queued,
        'running': s.running,
    }


async def _views(manager: Any, handles: list[Any]) -> dict[str, list[str]]:
    statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
    return {s.director: list(s.nodes) for s in statuses}


async def _watch(manager: Any, handles: list[Any], seen: list[Any], stop: asyncio.Event) -> None:
    """Sample every Director's nodes every 0.2 s (the test checks no node had two owners)."""
    while not stop.is_set():
        views = await _views(manager, handles)
        owned = [n for nodes in views.values() for n in nodes]
        if len(owned) != len(set(owned)):
            # Two answers are not one instant: a node handed over between them shows
            # twice once; a node really owned twice stays so.
            await asyncio.sleep(0.5)
            views = await _views(manager, handles)
        seen.append(views)
        await asyncio.sleep(0.2)


def _batch(manager: Any, handle: Any, calls: int, duration: float) -> Any:
    return call(manager, handle, 'md_sim_batch', iterations=calls, params={'duration': duration})


async def moves(run_dir: pathlib.Path, site: SiteProfile | None = None) -> dict[str, Any]:
    """Uneven load: nodes move from director-0 to director-1; then director-0 gets calls again.

    ``site`` is the ``slurm`` profile unless given (``main``'s ``--site``).
    """
    profile = site if site is not None else load_site('slurm')
    nodes, _ = discover_nodes()
    parts = write_partitions(split_nodes(nodes, count=2), run_dir)
    policy = ElasticPolicy(floor=0, patience=0.5, settle=2.0, period=0.2)
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        handles = await launch_directors(
            manager, parts, profile, str(run_dir), workers_per_node=2, policy=policy
        )
        await wait_ready(manager, handles, timeout=120)
        seen: list[Any] = []
        stop = asyncio.Event()
        watch = asyncio.create_task(_watch(manager, handles, seen, stop))
        try:
            light, heavy = await asyncio.gather(
                _batch(manager, handles[0], 2, 1.0), _batch(manager, handles[1], 40, 1.0)
            )
            moved = await _views(manager, handles)
            # The giver's next calls: run on what it kept or got back, never held for ever.
            started = time.monotonic()
            after = await asyncio.wait_for(_batch(manager, handles[0], 8, 0.5), timeout=120)
            after_seconds = time.monotonic() - started
            statuses = await asyncio.gather(*(call(manager, h, 'status') for h in handles))
            layout = await handles.coordinator.node_layout()
        finally:
            stop.set()
            await watch
    return {
        'site': {
            'name': profile.name,
            'launcher': profile.launcher,
            'launcher_args': profile.launcher_args,
            'bind_cmd': profile.bind_cmd,
            'interface': profile.interface,
        },
        'partitions': [list(p.nodes) for p in parts],
        'light': [_result(r) for r in light],
        'heavy': [_result(r) for r in heavy],
        'after': [_result(r) for r in after],
        'after_seconds': after_seconds,
        'moved_views': moved,
        'statuses': [_status(s) for s in statuses],
        'violations': layout['violations'],
        'moves': layout['moves'],
        'samples': seen,
    }


async def mpi(run_dir: pathlib.Path) -> dict[str, Any]:
    """MPI tool calls across 2 nodes each, launched by ``srun``, on one Director of 4 nodes."""
    nodes, _ = discover_nodes()
    parts = write_partitions(split_nodes(nodes, count=1), run_dir)
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        handles = await launch_directors(
            manager, parts, load_site('slurm'), str(run_dir), workers_per_node=2, elastic=False
        )
        await wait_ready(manager, handles, timeout=120)
        (handle,) = handles
        probes = await asyncio.gather(
            *(
                call(
                    manager,
                    handle,
                    'call_tool',
                    'mpi_probe',
                    {'duration': 1.0, 'num_nodes': 2, 'ranks_per_node': 2},
                )
                for _ in range(3)
            )
        )
        md = await call(
            manager,
            handle,
            'md_sim',
            tool='ase_md_mpi',
            steps=20,
            size=1,
            seed=3,
            num_nodes=2,
            ranks_per_node=2,
        )
        # Single-slot calls still run on every node afterwards (the pools came back).
        after = await _batch(manager, handle, 16, 0.2)
    return {
        'nodes': list(parts[0].nodes),
        'probes': [{**_result(r), 'value': r.value, 'error': r.error_message} for r in probes],
        'md': {**_result(md), 'value': md.value, 'error': md.error_message},
        'after': [_result(r) for r in after],
    }


async def grow(run_dir: pathlib.Path, case: str = 'idle') -> dict[str, Any]:
    """One Director on a 2-node allocation, 4 nodes' worth of work: the run grows into a job.

    ``case``: ``idle`` (the extra job is given back once the load ends),
    ``scancel`` (the extra job is cancelled by the user mid-call), ``budget``
    (a node-hour budget too small for a job), ``pending`` (the cluster is full:
    the test holds the other nodes; the job waits, the run does not).
    """
    import subprocess

    from actors.coordinator.growth import GrowthPolicy
    from actors.store.jobs import read_job_events
    from actors.store.moves import read_moves

    nodes, _ = discover_nodes()
    parts = write_partitions(split_nodes(nodes, count=1), run_dir)
    growth = GrowthPolicy(
        max_jobs=1,
        nodes_per_job=2,
        scheduler='slurm',
        job_walltime=600.0,
        target=4.0,
        grow_after=0.0,
        shrink_after=2.0 if case == 'idle' else 3600.0,
        retry_after=3600.0,
        node_hours=0.05 if case == 'budget' else None,
    )
    policy = ElasticPolicy(floor=1, patience=0.5, settle=1.0, period=0.2)
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    found: dict[str, Any] = {'nodes': list(parts[0].nodes), 'case': case}
    async with manager:
        handles = await launch_directors(
            manager,
            parts,
            load_site('slurm'),
            str(run_dir),
            workers_per_node=2,
            policy=policy,
            growth=growth,
        )
        await wait_ready(manager, handles, timeout=120)
        (handle,) = handles
        started = time.time()
        calls = asyncio.ensure_future(_batch(manager, handle, 40, 2.0))
        if case == 'scancel':
            # Once calls run on the extra job's nodes, the user cancels that job.
            while True:
                layout = await handles.coordinator.node_layout()
                status = await call(manager, handle, 'status')
                extra = set(layout['node_jobs']) & set(status.nodes)
                if len(extra) == 2 and status.running > 4:
                    break
                await asyncio.sleep(0.2)
            (job,) = set(layout['node_jobs'].values())
            found['scancel'] = job
            found['scancel_at'] = time.time()
            subprocess.run(['scancel', job], check=True, timeout=30)
        results = await calls
        found['calls_seconds'] = time.time() - started
        if case == 'idle':
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if any(e['event'] == 'ended' for e in read_job_events(run_dir)):
                    break
                await asyncio.sleep(0.2)
        found['layout'] = await handles.coordinator.node_layout()
        found['status'] = _status(await call(manager, handle, 'status'))
    found['results'] = [_result(r) for r in results]
    found['job_events'] = read_job_events(run_dir)
    found['moves'] = read_moves(run_dir)
    return found


async def grow_idle(run_dir: pathlib.Path) -> dict[str, Any]:
    """``grow``: the extra job is given back once the load ends."""
    return await grow(run_dir, 'idle')


async def grow_scancel(run_dir: pathlib.Path) -> dict[str, Any]:
    """``grow``: the user cancels the extra job mid-call."""
    return await grow(run_dir, 'scancel')


async def grow_budget(run_dir: pathlib.Path) -> dict[str, Any]:
    """``grow``: the node-hour budget allows no job."""
    return await grow(run_dir, 'budget')


async def grow_pending(run_dir: pathlib.Path) -> dict[str, Any]:
    """``grow``: the cluster is full; the job waits, the run goes on."""
    return await grow(run_dir, 'pending')


SCENARIOS = {
    'moves': moves,
    'mpi': mpi,
    'grow-idle': grow_idle,
    'grow-scancel': grow_scancel,
    'grow-budget': grow_budget,
    'grow-pending': grow_pending,
}
WITH_SITE = frozenset({'moves'})
"""Scenarios that take another site profile (``--site``, ``--launcher-args``, ``--override``)."""


def _profile(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SiteProfile | None:
    """The profile ``--site``/``--launcher-args``/``--override`` ask for (None: the default)."""
    if args.site is None and args.launcher_args is None and not args.override:
        return None
    if args.name not in WITH_SITE:
        parser.error(f'{args.name} runs with the slurm profile only')
    texts = {f.name for f in dataclasses.fields(SiteProfile) if f.type in ('str', str)}
    texts.discard('name')
    changes: dict[str, str] = {}
    for item in args.override:
        key, sep, value = item.partition('=')
        if not sep or key not in texts:
            parser.error(f'--override {item!r}: give KEY=VALUE, KEY one of {sorted(texts)}')
        changes[key] = value
    profile = load_site(args.site or 'slurm').with_overrides(launcher_args=args.launcher_args)
    return profile.with_overrides(**changes)


def main(argv: list[str] | None = None) -> int:
    """Run one scenario; its JSON on stdout."""
    parser = argparse.ArgumentParser(prog='python -m tests.slurm_scenarios')
    parser.add_argument('name', choices=sorted(SCENARIOS))
    parser.add_argument('run_dir', type=pathlib.Path)
    parser.add_argument('--site', help='site profile (moves only; default slurm)')
    parser.add_argument('--launcher-args', help="replace the profile's launcher_args")
    parser.add_argument(
        '--override',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='replace a text field of the profile (bind_cmd, interface, ...)',
    )
    args = parser.parse_args(argv)
    profile = _profile(args, parser)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    if profile is None:
        found = asyncio.run(SCENARIOS[args.name](args.run_dir))
    else:
        found = asyncio.run(moves(args.run_dir, profile))
    json.dump(found, sys.stdout, default=dataclasses.asdict)
    return 0


if __name__ == '__main__':
    sys.exit(main())
