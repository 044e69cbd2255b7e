"""Live progress bars: one per Director, fed by its ``status`` action.

While a client waits for its calls, [`watch`][actors.cli.progress.watch] polls
every Director's status and shows calls done / running / failed, the recent
throughput and an ETA; each bar's name carries the Director's node count
(``director-1 [3 nodes +1 borrowed]``), which changes as nodes move. The
bars go to stderr, so the results on stdout stay clean.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn
from rich.progress import MofNCompleteColumn
from rich.progress import Progress
from rich.progress import TextColumn
from rich.progress import TimeElapsedColumn
from rich.progress import TimeRemainingColumn

from actors.common.results import DirectorStatus
from actors.common.timing import PROGRESS_POLL

logger = logging.getLogger(__name__)


StatusFetcher = Callable[[Any], Awaitable[DirectorStatus]]


def describe(status: DirectorStatus) -> str:
    """A bar's name: the Director and its nodes now, e.g. ``director-1 [3 nodes +1 borrowed]``.

    ``nodes`` counts every node it holds (borrowed ones too); ``borrowed``
    marks those lent to it for an MPI call, ``job N`` those of an extra batch
    job the run grew into (``director-0 [4 nodes, 2 of job 812]``).
    """
    count = len(status.nodes)
    text = f'{status.director} [{count} node{"" if count == 1 else "s"}'
    if status.borrowed:
        text += f' +{len(status.borrowed)} borrowed'
    jobs: dict[str, int] = {}
    for job in status.node_jobs.values():
        jobs[job] = jobs.get(job, 0) + 1
    for job, nodes in sorted(jobs.items()):
        text += f', {nodes} of job {job}'
    return text + ']'


def make_progress(console: Console | None = None) -> Progress:
    """The progress display: name, bar, done/total, running, failed, rate, ETA."""
    return Progress(
        TextColumn('{task.description}'),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn('{task.fields[running]} running'),
        TextColumn('{task.fields[failed]} failed'),
        TextColumn('{task.fields[rate]:.1f} calls/s'),
        TimeElapsedColumn(),
        TextColumn('ETA'),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
    )


class DirectorBars:
    """One progress bar per Director, updated from status snapshots.

    Args:
        progress: The display (started and stopped by the caller).
        baseline: Each Director's status before the calls were sent; its
            done/failed counts are not part of this run's progress.
        totals: Calls expected from each Director.

    """

    def __init__(
        self,
        progress: Progress,
        baseline: Sequence[DirectorStatus],
        totals: Sequence[int],
    ) -> None:
        self.progress = progress
        self.baseline = list(baseline)
        self.tasks = [
            progress.add_task(describe(s), total=total, running=0, failed=0, rate=0.0)
            for s, total in zip(baseline, totals, strict=True)
        ]

    def update(self, statuses: Sequence[DirectorStatus | BaseException]) -> None:
        """Show new snapshots (a failed poll leaves its bar as it was)."""
        for task, before, status in zip(self.tasks, self.baseline, statuses, strict=True):
            if isinstance(status, BaseException):
                logger.debug('status poll failed: %s', status)
                continue
            failed = status.failed - before.failed
            self.progress.update(
                task,
                description=describe(status),
                completed=status.done - before.done + failed,
                running=status.running,
                failed=failed,
                rate=status.recent_throughput,
            )

    async def poll(self, handles: Sequence[Any], fetch: StatusFetcher) -> None:
        """Fetch every Director's status once and show it."""
        self.update(await asyncio.gather(*(fetch(h) for h in handles), return_exceptions=True))

    async def follow(
        self,
        handles: Sequence[Any],
        fetch: StatusFetcher,
        interval: float = PROGRESS_POLL,
    ) -> None:
        """Poll every ``interval`` seconds until cancelled."""
        while True:
            await self.poll(handles, fetch)
            await asyncio.sleep(interval)
