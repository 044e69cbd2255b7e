"""Where each worker pool of a run really ran, read from the run's own Parsl files.

Every interchange logs a registering pool's message (``Registration info for
manager ...``), with the host the pool runs on and the block it says it
belongs to; every block's submit script is named after the node it was
started for (``parsl.<label>.block-<id>.<node>.<time>.sh``,
``actors.site.node_provider``). Together they tell whether each pool
registered under its own block and runs on that block's node.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

_REGISTRATION = re.compile(r"Registration info for manager b'([0-9a-f]+)': (\{.*\})$")
_FIELD = re.compile(r"'(hostname|block_id)': '([^']*)'")
_SUBMIT_SCRIPT = re.compile(
    r'^parsl\.(?P<label>.+)\.block-(?P<block>\d+)\.(?P<node>.+)\.\d+\.\d+\.sh$'
)


@dataclasses.dataclass(frozen=True)
class Placement:
    """One registered pool: where it was meant to run and where it did."""

    executor_dir: str
    manager: str
    block: str
    meant_for: str | None
    hostname: str


def _blocks(executor_dir: pathlib.Path) -> dict[str, str]:
    """Block ID -> the node its submit script was written for."""
    scripts = executor_dir.parent / 'submit_scripts'
    label = executor_dir.name
    found = {}
    for script in scripts.glob('parsl.*.sh'):
        match = _SUBMIT_SCRIPT.match(script.name)
        if match and match['label'] == label:
            found[match['block']] = match['node']
    return found


def _registrations(log: pathlib.Path) -> list[tuple[str, dict[str, str]]]:
    """(manager ID, its hostname and block_id) for each registration the log shows."""
    found = []
    for line in log.read_text(errors='replace').splitlines():
        match = _REGISTRATION.search(line)
        if match:
            found.append((match[1], dict(_FIELD.findall(match[2]))))
    return found


def pool_placements(run_dir: pathlib.Path) -> list[Placement]:
    """Every pool that registered with any interchange of the run."""
    placements = []
    for log in sorted(run_dir.rglob('interchange.log')):
        blocks = _blocks(log.parent)
        for manager, message in _registrations(log):
            block = str(message.get('block_id'))
            placements.append(
                Placement(
                    executor_dir=str(log.parent.relative_to(run_dir)),
                    manager=manager,
                    block=block,
                    meant_for=blocks.get(block),
                    hostname=str(message.get('hostname')),
                )
            )
    return placements


def misplaced(placements: list[Placement]) -> list[str]:
    """Pools on another host than their block's node, and blocks claimed from two hosts."""
    problems = [
        f'{p.executor_dir} block {p.block}: pool {p.manager} on {p.hostname}, '
        f'block started for {p.meant_for}'
        for p in placements
        if p.meant_for is not None and p.hostname.split('.')[0] != p.meant_for.split('.')[0]
    ]
    hosts: dict[tuple[str, str], set[str]] = {}
    for p in placements:
        hosts.setdefault((p.executor_dir, p.block), set()).add(p.hostname)
    problems += [
        f'{where} block {block}: pools on {sorted(names)}'
        for (where, block), names in hosts.items()
        if len(names) > 1
    ]
    return problems
