"""Whether a node's block is healthy, and what to do if not: one table of rules.

A Director runs one block per node (``actors.execution.node_blocks``), and
a block can go wrong in a few ways: its job ends (the pool exited, a
launcher error), every pool it had is lost while its job runs on (``mpiexec``
waits for orphaned workers), or its pool registers from another host than
the node it was started for (a launcher that ignored the pin). Each way has
one remedy, and they are all here, in [`RULES`][actors.execution.block_health.RULES],
first match wins:

* ``never starts``: a block ends, or is refused, before its pool ever
  connected, ``MAX_FAILED_STARTS`` times in a row on its node: give the
  node up;
* ``misplaced``: a pool of the block reports another host: restart it;
* ``ended``: the block's job ended: restart it;
* ``pools lost``: the block had a pool, has none now, and its job runs on:
  restart it.

"Restart" is ``stop_node_block`` (the one kill path) then a new block on the
same node; a lost pool's calls run again there. When no pool of the
executor has ever connected and every node was given up,
[`never_starts`][actors.execution.block_health.never_starts] names the
Director-wide failure (a launcher typo, host names the launcher rejects),
with the last block's own error: the Director gives its DFK up rather than
start blocks until the allocation ends.

The facts come from the pool monitor's snapshot and Parsl's block status;
the table decides; ``NodePools.mend`` applies. Nothing else decides a block
is broken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import pathlib
from collections.abc import Callable
from typing import Any

from actors.execution.interchange import InterchangeLost

MAX_FAILED_STARTS = 3
"""Blocks in a row that may end on a node before its pool connected, before it is given up."""


class Remedy(enum.Enum):
    """What is done to a node's block."""

    RESTART = 'restart'
    """Stop the block (if its job runs) and start another on the same node."""
    GIVE_UP_NODE = 'give up the node'
    """Start no more blocks there: the node leaves the Director."""


@dataclasses.dataclass(frozen=True)
class BlockFacts:
    """What is known of one node's block at one look.

    Attributes:
        node: The node the block was started for.
        block: Its block ID.
        connected: Whether a pool of it has connected (the node is ``serving``).
        ended: Its job has ended (Parsl's last status poll says terminal).
        live_pools: Its pools the interchange lists now.
        stranger: Another host a pool of it reported, if any.
        failed_starts: Blocks on this node that ended before their pool
            connected, in a row, before this one.

    """

    node: str
    block: str
    connected: bool
    ended: bool
    live_pools: int
    stranger: str | None = None
    failed_starts: int = 0

    @property
    def failed_to_start(self) -> bool:
        """The block is over (ended or refused) and no pool of it ever served."""
        return not self.connected and (self.ended or self.stranger is not None)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One row of the table: when it applies, and its remedy."""

    name: str
    applies: Callable[[BlockFacts], bool]
    remedy: Remedy


RULES: tuple[Rule, ...] = (
    Rule(
        'never starts',
        lambda f: f.failed_to_start and f.failed_starts + 1 >= MAX_FAILED_STARTS,
        Remedy.GIVE_UP_NODE,
    ),
    Rule('misplaced', lambda f: f.stranger is not None, Remedy.RESTART),
    Rule('ended', lambda f: f.ended, Remedy.RESTART),
    Rule('pools lost', lambda f: f.connected and f.live_pools == 0, Remedy.RESTART),
)
"""The block-health rules, in the order they are tried."""


def judge(facts: BlockFacts) -> Rule | None:
    """The first rule that applies to a block (``None``: it is healthy)."""
    return next((rule for rule in RULES if rule.applies(facts)), None)


def failed_starts_after(facts: BlockFacts) -> int:
    """The node's failed starts in a row once this block's rule has been applied."""
    return facts.failed_starts + 1 if facts.failed_to_start else 0


class BlockStartFailed(InterchangeLost):
    """The executor's blocks end before any worker pool connects (a launcher or host error)."""


def never_starts(
    label: str, *, ever_connected: bool, given_up: int, left: int, last: Any
) -> BlockStartFailed | None:
    """The Director-wide failure once no block could start anywhere, else ``None``.

    Args:
        label: The executor's label.
        ever_connected: Whether any pool of the executor has connected.
        given_up: Nodes given up by ``never starts``.
        left: Nodes whose blocks are still tried (launching, starting, serving).
        last: The last failed block's Parsl ``JobStatus`` (its error is quoted).

    """
    if ever_connected or not given_up or left:
        return None
    return BlockStartFailed(
        f'{label}: worker blocks on {given_up} node(s) ended before any worker pool '
        f'connected, {MAX_FAILED_STARTS} in a row on each; the launcher cannot start them '
        "(check --launcher-args, the site profile's launcher and the node names). "
        f'Last block: {describe_end(last)}',
    )


def describe_end(job: Any) -> str:
    """How a block's job ended: its state, exit code, message and last stderr lines."""
    if job is None:
        return 'no status'
    said = [f'{job.state.name}' + (f', exit code {job.exit_code}' if job.exit_code else '')]
    if job.message:
        said.append(str(job.message))
    path = getattr(job, 'stderr_path', None)
    if path:
        with contextlib.suppress(OSError):
            lines = pathlib.Path(path).read_text(errors='replace').splitlines()
            tail = [line.strip() for line in lines if line.strip()][-3:]
            if tail:
                said.append('stderr: ' + ' | '.join(tail))
    return '; '.join(said)
