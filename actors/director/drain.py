"""Walltime drain: a Director refuses what cannot finish and stops what runs before the end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from actors.director.checks import expected_seconds
from actors.director.context import DirectorContext
from actors.director.ledger import Ledger
from actors.job.walltime import Walltime
from actors.worker.control import CancelFiles

logger = logging.getLogger(__name__)


class WalltimeDrain:
    """Refusals before the allocation's end, and the drain at ``end - margin``.

    Args:
        context: The Director's name (for logs) and walltime (the
            allocation's end and drain margin).
        cancels: The Director's cancel files (the drain stops every call).
        ledger: Its calls (how many are in flight, for the log).

    """

    def __init__(self, context: DirectorContext, cancels: CancelFiles, ledger: Ledger) -> None:
        self.name = context.name
        self.walltime: Walltime = context.walltime
        self.cancels = cancels
        self._ledger = ledger
        self.draining = False

    def refusal(self, params: Mapping[str, Any], timeout: float | None) -> str | None:
        """Why a call must be refused (draining, or it does not fit before the drain)."""
        if self.draining:
            return 'the Director is draining'
        return self.walltime.refusal(expected_seconds(params, timeout))

    async def run(self) -> None:
        """Before the allocation ends: admit nothing more, stop what still runs."""
        if self.walltime.drain_at is None:
            return
        await asyncio.sleep(max(0.0, self.walltime.drain_at - time.time()))
        self.draining = True
        logger.warning(
            '%s draining: the allocation ends in %.0fs; cancelling %d running call(s)',
            self.name,
            self.walltime.margin,
            self._ledger.counts()[0],
        )
        self.cancels.cancel_all('walltime: the allocation is about to end')
