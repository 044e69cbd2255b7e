"""Growing past the batch job: what an extra job buys, what it costs, how fast its nodes serve.

One Director on a 2-node job (2 workers per node), simulated on this machine
(extra jobs go to the simulated scheduler, which starts a job
``QUEUE_WAIT`` seconds after it is asked for) or, with ``--site slurm``, a
real 2-node allocation whose extra jobs go to Slurm through Parsl's
``SlurmProvider``. The same overflowing load (``CALLS`` calls of ``SECONDS``:
twice what the job's slots finish within ``TARGET``), measured in the same run,
alternating sides:

* without growth (``--no-grow``): the makespan on the job's own nodes;
* with growth (one extra job of 2 nodes, asked for at once): the makespan,
  and the time from the submission to the first call on a new node, split
  into the scheduler's queue (submitted -> started), the nodes' pools
  (started -> joined -> first call).

Node-hours: the job's own nodes for the makespan, plus the extra job's from
its start to its cancellation (the journal's figure).
"""

from __future__ import annotations

import asyncio
import pathlib
import statistics
import time
from typing import Any

from academy.exchange import LocalExchangeFactory
from academy.manager import Manager

from actors.calling.calls import call
from actors.client.launch import launch_directors
from actors.client.launch import wait_ready
from actors.coordinator.growth import GrowthPolicy
from actors.coordinator.policy import ElasticPolicy
from actors.store.jobs import read_job_events
from actors.store.jobs import read_jobs
from bench.common import READY_TIMEOUT
from bench.common import Options
from bench.common import Ratio
from bench.common import partitions
from bench.common import profile

NODES = 2
WORKERS_PER_NODE = 2
CALLS, SECONDS = 64, 2.0
TARGET = 8.0
QUEUE_WAIT = 1.0
TARGET_RATIO = 0.85
"""Makespan with growth / without: the extra job must pay for its queue and boot."""


def _growth(scheduler: str) -> GrowthPolicy:
    return GrowthPolicy(
        max_jobs=1,
        nodes_per_job=NODES,
        scheduler=scheduler,
        job_walltime=900.0,
        target=TARGET,
        grow_after=0.0,
        shrink_after=2.0,
        simulated_start_after=QUEUE_WAIT,
    )


async def _side(root: pathlib.Path, grow: bool) -> dict[str, Any]:
    """One fresh Director (and coordinator), warmed, then the overflowing load."""
    site = profile()
    scheduler = 'simulated' if site.scheduler == 'none' else site.scheduler
    growth = _growth(scheduler) if grow else GrowthPolicy()
    policy = ElasticPolicy(floor=1, patience=0.5, settle=1.0, period=0.2)
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        parts = partitions(root, NODES, 1)
        handles = await launch_directors(
            manager,
            parts,
            site,
            str(root),
            workers_per_node=WORKERS_PER_NODE,
            policy=policy,
            growth=growth,
        )
        await wait_ready(manager, handles, timeout=READY_TIMEOUT)
        (handle,) = handles
        # Every worker boots before the clock starts (startup is another benchmark's).
        await call(
            manager,
            handle,
            'md_sim_batch',
            iterations=NODES * WORKERS_PER_NODE,
            params={'duration': 0.5},
        )
        sent = time.time()
        results = await call(
            manager, handle, 'md_sim_batch', iterations=CALLS, params={'duration': SECONDS}
        )
        if not all(r.ok for r in results):
            raise RuntimeError(f'calls failed: {[r.error_message for r in results if not r.ok]}')
        makespan = max(r.end for r in results) - sent
        if grow:  # the job goes back once idle: its node-hours are final then
            deadline = time.monotonic() + 120
            while not any(e['event'] == 'ended' for e in read_job_events(root)):
                if time.monotonic() > deadline:
                    raise TimeoutError('the extra job was not given back within 120s')
                await asyncio.sleep(0.2)
    own = set(parts[0].nodes)
    found: dict[str, Any] = {'makespan': makespan, 'own_node_hours': NODES * makespan / 3600}
    jobs = list(read_jobs(root).values())
    found['extra_node_hours'] = sum(j.node_hours() for j in jobs)
    events = {(e['job'], e['event']): e['at'] for e in read_job_events(root)}
    for job in jobs:
        on_new = [r.start for r in results if r.node not in own and r.node in job.nodes]
        if on_new and job.started is not None:
            found['submit_to_first_call'] = min(on_new) - job.submitted
            found['queue'] = job.started - job.submitted
            found['pools'] = min(on_new) - job.started
            found['extra_calls'] = len(on_new)
            found['cancelled_after_idle'] = events.get((job.job, 'ended'), 0) - (
                max(r.end for r in results)
            )
    return found


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """``python -m bench grow``: the overflowing load with growth and without, alternating."""
    rounds = 1 if options.quick else 2
    print(
        f'grow: 1 Director on {NODES} nodes x {WORKERS_PER_NODE} workers (site {profile().name}); '
        f'{CALLS} calls of {SECONDS:g}s (ideal {CALLS * SECONDS / (NODES * WORKERS_PER_NODE):.0f}s '
        f'on the job, target {TARGET:g}s); one extra job of {NODES} nodes; x{rounds} per side',
        flush=True,
    )
    sides: dict[str, list[dict[str, Any]]] = {'without': [], 'with': []}
    for index in range(rounds):
        for label, grow in (('without', False), ('with', True)):
            found = asyncio.run(_side(root / f'{label}-{index}', grow))
            sides[label].append(found)
            print(
                f'  {label} growth, round {index + 1}: makespan {found["makespan"]:.2f}s, '
                f'{found["own_node_hours"] + found["extra_node_hours"]:.4f} node-hours'
                + (
                    '; submission -> first call on a new node '
                    f'{found["submit_to_first_call"]:.2f}s '
                    f'(queue {found["queue"]:.2f}s, pools {found["pools"]:.2f}s), '
                    f'{found["extra_calls"]} calls there, job ended '
                    f'{found["cancelled_after_idle"]:.1f}s after the last call'
                    if 'submit_to_first_call' in found
                    else ''
                ),
                flush=True,
            )
    ratios = [
        w['makespan'] / o['makespan'] for o, w in zip(sides['without'], sides['with'], strict=True)
    ]
    ratio = statistics.median(ratios)
    hours = {
        label: statistics.median(s['own_node_hours'] + s['extra_node_hours'] for s in found)
        for label, found in sides.items()
    }
    first = [s['submit_to_first_call'] for s in sides['with'] if 'submit_to_first_call' in s]
    print(
        f'  makespan with/without growth: median {ratio:.3f} of {len(ratios)} '
        f'(spread {min(ratios):.3f}-{max(ratios):.3f}); node-hours {hours["with"]:.4f} with, '
        f'{hours["without"]:.4f} without'
    )
    results = {
        'sides': sides,
        'makespan_ratio': ratio,
        'node_hours': hours,
        'submit_to_first_call': first,
    }
    rows = [Ratio('grow.makespan_ratio', ratio, TARGET_RATIO, at_most=True, unit='x')]
    if first:
        rows.append(
            Ratio('grow.submit_to_first_call', statistics.median(first), 30.0, True, unit='s')
        )
    return results, rows
