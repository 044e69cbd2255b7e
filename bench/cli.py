"""A run's own time: ``launch.py`` as a whole process vs the same work through the public API.

Each side is timed as a fresh process (imports, start-up, the calls, shutdown),
the sides alternating, repeated:

* ``cli``: ``python launch.py --simulate-nodes 2P --partitions P --duration 0.01
  --iterations 1 --quiet`` (each Director: one ``md_sim`` and a 1-call batch);
* ``api``: a script doing the same through ``actors``' public API
  (``launch_directors``, ``wait_ready``, the same two calls per Director, leave
  the ``Manager``): ``python -m bench.cli api P``;
* ``parsl``: a bare Parsl process, one task on a fresh HTEX DFK built from the
  same site profile: ``python -m bench.cli parsl``.

The target is CLI / API for one partition.
"""

from __future__ import annotations

import asyncio
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.common import Options
from bench.common import Ratio

REPO = pathlib.Path(__file__).resolve().parent.parent
TARGET_CLI_OVER_API = 1.15
NODES_PER_PARTITION = 2


def _cli(partitions: int, run_dir: pathlib.Path) -> list[str]:
    return [
        *(sys.executable, str(REPO / 'launch.py')),
        *('--simulate-nodes', str(NODES_PER_PARTITION * partitions)),
        *('--partitions', str(partitions), '--duration', '0.01', '--iterations', '1'),
        *('--quiet', '--run-dir', str(run_dir)),
    ]


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f'{" ".join(argv[:4])} ... failed: {done.stderr[-800:]}')
    return elapsed


def measure(root: pathlib.Path, repeats: int) -> dict[str, list[float]]:
    """Seconds per whole process, for each side, alternating."""
    times: dict[str, list[float]] = {}
    module = [sys.executable, '-m', 'bench.cli']
    for repeat in range(repeats):
        sides = [
            ('cli_1', _cli(1, root / f'cli1-{repeat}')),
            ('api_1', [*module, 'api', '1']),
            ('parsl', [*module, 'parsl']),
            ('cli_2', _cli(2, root / f'cli2-{repeat}')),
            ('api_2', [*module, 'api', '2']),
        ]
        for name, argv in sides if repeat % 2 == 0 else sides[::-1]:
            times.setdefault(name, []).append(_timed(argv))
    return times


def run(root: pathlib.Path, options: Options) -> tuple[dict[str, Any], list[Ratio]]:
    """Time the CLI, the API script and bare Parsl; return results and the ratio row."""
    repeats = 2 if options.quick else 4
    print(
        f'cli: whole processes, {repeats} alternating repeats: launch.py (1 and 2 partitions of '
        f'{NODES_PER_PARTITION} nodes, two 10 ms calls per Director), the same work through the '
        'public API, and a bare Parsl process (one task on a fresh DFK)'
    )
    times = measure(root, repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    results: dict[str, Any] = {f'cli_{name}_s': value for name, value in medians.items()}
    for name, values in times.items():
        spread = max(values) - min(values)
        print(f'  {name:6s}: median {medians[name]:5.2f}s  (spread {spread:.2f}s over {values})')
    rows = []
    for partitions in (1, 2):
        ratio = medians[f'cli_{partitions}'] / medians[f'api_{partitions}']
        results[f'cli_over_api_{partitions}'] = ratio
        print(f'  {partitions} partition(s): CLI / API {ratio:.3f}')
    rows.append(Ratio('cli_over_api_1', results['cli_over_api_1'], TARGET_CLI_OVER_API, True))
    return results, rows


async def _api(partitions: int) -> None:
    """The CLI's work through the public API: each Director one md_sim and a 1-call batch."""
    from academy.exchange import LocalExchangeFactory
    from academy.manager import Manager

    from actors import launch_directors
    from actors import load_site
    from actors import simulated_nodes
    from actors import split_nodes
    from actors import wait_ready
    from actors import write_partitions

    root = tempfile.mkdtemp(prefix='bench-cli-api-')
    parts = write_partitions(
        split_nodes(simulated_nodes(NODES_PER_PARTITION * partitions), count=partitions), root
    )
    manager = await Manager.from_exchange_factory(LocalExchangeFactory())
    async with manager:
        handles = await launch_directors(manager, parts, load_site('local'), root)
        await wait_ready(manager, handles, timeout=300)
        answers = await asyncio.gather(
            *(h.md_sim(duration=0.01) for h in handles),
            *(h.md_sim_batch(params=[{'duration': 0.01}]) for h in handles),
        )
    results = [r for answer in answers for r in (answer if isinstance(answer, list) else [answer])]
    assert all(r.ok for r in results), results


def _parsl() -> None:
    """One task on a fresh HTEX DFK with the site profile, then clean up."""
    from parsl import python_app
    from parsl.dataflow.dflow import DataFlowKernel

    from actors import load_site
    from actors import simulated_nodes
    from actors import split_nodes
    from actors import write_partitions
    from actors.site.parsl_config import build_config
    from actors.worker.run import run_tool

    root = pathlib.Path(tempfile.mkdtemp(prefix='bench-cli-parsl-'))
    (part,) = write_partitions(split_nodes(simulated_nodes(NODES_PER_PARTITION), count=1), root)
    dfk = DataFlowKernel(build_config(part, load_site('local'), root / 'parsl'))
    try:
        outcome = python_app(run_tool, data_flow_kernel=dfk)('mock_md', {'duration': 0.01}).result()
        assert outcome['ok'], outcome
    finally:
        dfk.cleanup()


if __name__ == '__main__':
    if sys.argv[1:2] == ['api']:
        asyncio.run(_api(int(sys.argv[2])))
    elif sys.argv[1:2] == ['parsl']:
        _parsl()
    else:
        sys.exit('usage: python -m bench.cli api PARTITIONS | parsl')
