"""The coordinator's fences: a silent Director's nodes go to nobody until its pools are stopped.

A Director that stops answering may be dead, or only silent (stopped, hung,
its node swapping) with its pools still running calls on its nodes. Its
nodes are therefore fenced, not freed: the coordinator asks the Director's
watchdog to stop its Parsl processes and the Director itself
(``actors.execution.fence``) and frees the nodes only once that is
confirmed. Without a confirmation the nodes stay out of use, and the
request is made again every ``FENCE_WAIT`` seconds. Which nodes are being
fenced is the coordinator's node state (``fencing`` in its
[`NodeOwnership`][actors.job.ownership.NodeOwnership]); a fence here is only
the request and its processes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from actors.common.timing import FENCE_WAIT
from actors.common.timing import PARENT_POLL
from actors.execution.fence import SharedProcessError
from actors.execution.fence import fenced
from actors.execution.fence import request_fence
from actors.execution.fence import withdraw

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Fence:
    """One silent Director being fenced.

    Attributes:
        pids: Its watching processes asked to stop (``None``: no watchdog known).
        deadline: ``time.monotonic()`` after which the request is made again.
        tries: Requests made so far.

    """

    pids: list[int] | None
    deadline: float
    tries: int = 1


class Fences:
    """The fences of one job's coordinator.

    Args:
        run_dir: The run directory (``<run>/nodes/fence``).
        name: The coordinator's name (for the log).

    """

    def __init__(self, run_dir: str | os.PathLike[str], name: str) -> None:
        self.run_dir = run_dir
        self.name = name
        self.pending: dict[str, Fence] = {}

    def __contains__(self, director: object) -> bool:
        return director in self.pending

    def hold(self, director: str) -> None:
        """Start fencing ``director`` (its nodes are ``fencing`` in the coordinator's view)."""
        self.pending[director] = Fence(None, time.monotonic() + FENCE_WAIT, 0)

    def request(self, director: str) -> None:
        """Ask ``director``'s watchdog to stop it (its nodes are out of the layout already)."""
        fence = self.pending[director]
        fence.pids = self._ask(director)
        fence.tries += 1

    def _ask(self, director: str) -> list[int] | None:
        try:
            return request_fence(self.run_dir, director)
        except SharedProcessError as e:
            logger.error(
                '%s: cannot fence %s: %s; its nodes stay out of use', self.name, director, e
            )
            return None
        except OSError as e:
            # Nothing confirms a fence that was not asked for: the nodes stay out of use.
            logger.error('%s: cannot ask to fence %s: %s', self.name, director, e)
            return None

    def confirmed(self, director: str) -> float | None:
        """When ``director``'s fence was confirmed (``None`` while it is not)."""
        fence = self.pending[director]
        if fence.pids is None:
            return None
        return fenced(self.run_dir, director, fence.pids)

    def finish(self, director: str) -> None:
        """Forget a confirmed fence (or withdraw one: it answers again)."""
        fence = self.pending.pop(director)
        withdraw(self.run_dir, director, fence.pids or [])

    def retry(self, director: str, nodes: list[str]) -> None:
        """Past its deadline: log the nodes that stay out of use (``nodes``) and ask again."""
        fence = self.pending[director]
        if time.monotonic() < fence.deadline:
            return
        logger.error(
            '%s: %s stopped answering and its watchdog does not confirm that its pools '
            'stopped (asked %d time(s)): its node(s) %s are not given to another Director',
            self.name,
            director,
            fence.tries,
            ', '.join(nodes) or 'none',
        )
        pids = self._ask(director)
        # Keep asking the processes asked before too (one may have said nothing yet).
        if pids is not None:
            fence.pids = sorted(set(fence.pids or []) | set(pids))
        fence.tries += 1
        fence.deadline = time.monotonic() + FENCE_WAIT + PARENT_POLL
