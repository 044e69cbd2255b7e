"""The run's extra batch jobs in ``launch.py report``: one band per job, and its node-hours.

Read from the jobs journal ([`actors.store.jobs`][actors.store.jobs]): each
job is a band under the node-ownership chart, hatched while it waited in the
queue, solid while its nodes were the run's, with the node-hours it used.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from actors.store.jobs import JobRecord

PENDING_STYLE = {'facecolors': '#eeeeee', 'edgecolors': 'grey', 'hatch': '////'}
RUNNING_COLOR = '#4c72b0'


def draw_jobs(ax: Any, jobs: Sequence[JobRecord], *, t0: float) -> None:
    """One row per extra job: its wait in the queue, then its run, labelled with node-hours."""
    from matplotlib.patches import Patch

    now = time.time()
    for row, job in enumerate(jobs):
        end = job.ended if job.ended is not None else now
        waited_until = job.started if job.started is not None else end
        if waited_until > job.submitted:
            ax.broken_barh(
                [(job.submitted - t0, waited_until - job.submitted)],
                (row - 0.35, 0.7),
                linewidth=0.5,
                **PENDING_STYLE,
            )
        if job.started is not None and end > job.started:
            ax.broken_barh(
                [(job.started - t0, end - job.started)],
                (row - 0.35, 0.7),
                facecolors=RUNNING_COLOR,
                linewidth=0,
            )
        ax.text(
            end - t0,
            row,
            f' {job.node_hours(now):.3f} node-h' + (f' ({job.why})' if job.why else ''),
            va='center',
            fontsize='small',
        )
    labels = [f'job {j.job} ({len(j.nodes) or j.nodes_asked} nodes)' for j in jobs]
    ax.set_yticks(range(len(jobs)), labels)
    ax.set_ylim(len(jobs) - 0.5, -0.5)
    ax.set_xlabel('seconds since the first call started')
    ax.grid(axis='x', alpha=0.3)
    ax.set_title(f'extra batch jobs: {sum(j.node_hours(now) for j in jobs):.3f} node-hours in all')
    ax.legend(
        handles=[
            Patch(
                facecolor=PENDING_STYLE['facecolors'],
                edgecolor=PENDING_STYLE['edgecolors'],
                hatch=PENDING_STYLE['hatch'],
                label='in the queue',
            ),
            Patch(color=RUNNING_COLOR, label="its nodes the run's"),
        ],
        loc='upper left',
        bbox_to_anchor=(1.01, 1),
        fontsize='small',
    )


def job_lines(jobs: Sequence[JobRecord]) -> list[str]:
    """One line per extra job for the terminal: its nodes, wait, run and node-hours."""
    lines = []
    now = time.time()
    for job in jobs:
        end = job.ended if job.ended is not None else now
        waited = (job.started if job.started is not None else end) - job.submitted
        ran = end - job.started if job.started is not None else 0.0
        nodes = ', '.join(job.nodes) or f'{job.nodes_asked} asked, none given'
        state = f'ended: {job.why}' if job.ended is not None else 'still running'
        lines.append(
            f'  job {job.job} ({job.scheduler}): {nodes}; {waited:.1f}s in the queue, '
            f'{ran:.1f}s running, {job.node_hours(now):.3f} node-hours; {state}'
        )
    return lines
