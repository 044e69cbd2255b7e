"""The seed pattern's client code runs unchanged against our Directors.

The pattern (academy-agents' ``agentic_blueprint_catalog``,
``hpc_hierarchical/complete.py``) launches each Director from a run dir and a
nodefile slice of the batch job, ``manager.launch(Director, args=(run_dir,
nodefile))``, then awaits ``md_sim_batch(iterations=4)`` on each. Here the
same code runs on a real Academy Manager (local exchange, a thread pool as
its executor) with made-up hosts that the test session maps to loopback.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from academy.exchange import LocalExchangeFactory
from academy.handle import Handle
from academy.manager import Manager

from actors.common.errors import ConfigurationError
from actors.director.agent import Director
from actors.director.seed_args import site_for
from actors.site.profile import load_site

pytestmark = pytest.mark.timeout(180)

SLICES = {
    '00': ['sim-node-001', 'sim-node-002'],
    '01': ['sim-node-003', 'sim-node-004'],
}


def write_slices(base: pathlib.Path) -> dict[str, pathlib.Path]:
    """One nodefile per Director, PBS style: a host once per rank, so repeated."""
    files = {}
    for suffix, hosts in SLICES.items():
        path = base / f'node_slice.{suffix}'
        path.write_text(''.join(f'{host}\n' * 2 for host in hosts))
        files[suffix] = path
    return files


async def seed_client(base: pathlib.Path, nodefiles: dict[str, pathlib.Path]) -> dict[str, Any]:
    """The seed's ``main()``, minus its Globus exchange, executor and ``init_logging``."""
    exchange = LocalExchangeFactory()
    executor = ThreadPoolExecutor(max_workers=2)
    async with await Manager.from_exchange_factory(
        factory=exchange,
        executors=executor,
    ) as manager:
        director1_handle: Handle = await manager.launch(
            Director,
            args=(
                os.path.abspath(base / 'run.00'),
                os.path.abspath(nodefiles['00']),
            ),
        )
        director2_handle: Handle = await manager.launch(
            Director,
            args=(
                os.path.abspath(base / 'run.01'),
                os.path.abspath(nodefiles['01']),
            ),
        )
        d1_task = asyncio.create_task(director1_handle.md_sim_batch(iterations=4))
        d2_task = asyncio.create_task(director2_handle.md_sim_batch(iterations=4))
        batches = await asyncio.gather(d1_task, d2_task)
        # The seed's other calls: a bare batch (its default of 4) and one call.
        bare = await asyncio.gather(
            director1_handle.md_sim_batch(), director2_handle.md_sim_batch()
        )
        single = await asyncio.gather(director1_handle.md_sim(), director2_handle.md_sim())
        statuses = await asyncio.gather(director1_handle.status(), director2_handle.status())
    return {'batches': batches, 'bare': bare, 'single': single, 'statuses': statuses}


def test_seed_client_runs_unchanged(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    """Two seed-style Directors answer every seed call, each on its own slice's nodes only."""
    # Outside a batch job: the simulated local site, as launch.py's own default.
    monkeypatch.delenv('PBS_NODEFILE', raising=False)
    monkeypatch.delenv('SLURM_JOB_NODELIST', raising=False)
    nodefiles = write_slices(tmp_path)
    before = {path: path.read_text() for path in nodefiles.values()}

    got = asyncio.run(seed_client(tmp_path, nodefiles))

    for index, suffix in enumerate(SLICES):
        own = set(SLICES[suffix])
        batch, bare, one = got['batches'][index], got['bare'][index], got['single'][index]
        assert len(batch) == 4 and len(bare) == 4
        for result in [*batch, *bare, one]:
            assert result.ok, result
            assert result.tool == 'mock_md'
            assert result.value['steps'] == 1000  # the mock tool really ran, with its defaults
            assert result.node in own, f'{result.node} ran for slice {suffix} ({own})'
        assert {r.action for r in batch} == {'md_sim_batch'} and one.action == 'md_sim'
        status = got['statuses'][index]
        assert status.nodes == SLICES[suffix]  # de-duplicated, in file order
        assert status.done == 9 and status.failed == 0
        run = tmp_path / f'run.{suffix}'
        # The Director's files are under the run dir the client gave it.
        assert (run / 'partitions' / 'partition-0.nodes').read_text().split() == SLICES[suffix]
        assert any((run / 'journal').iterdir())
        assert (run / 'parsl').is_dir()
    # The caller's nodefiles are only read.
    assert {path: path.read_text() for path in nodefiles.values()} == before


def test_seed_arguments_are_checked(tmp_path: pathlib.Path):
    """A missing, empty or malformed nodefile, or arguments of neither form, name the bad value."""
    missing = tmp_path / 'node_slice.99'
    with pytest.raises(ConfigurationError, match=r"nodes file '.*node_slice\.99' does not exist"):
        Director(str(tmp_path / 'run'), str(missing))
    empty = tmp_path / 'empty.nodes'
    empty.write_text('\n# no hosts\n')
    with pytest.raises(ConfigurationError, match=r"empty\.nodes' lists no host"):
        Director(str(tmp_path / 'run'), str(empty))
    slots = tmp_path / 'slots.nodes'
    slots.write_text('sim-node-001 slots=4\n')
    with pytest.raises(ConfigurationError, match=r"line 1: 'sim-node-001 slots=4'"):
        Director(str(tmp_path / 'run'), str(slots))
    with pytest.raises(ConfigurationError, match=r"\(run_dir, nodefile\).*got \(int 3, str 'x'\)"):
        Director(3, 'x')  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"non-empty paths.*run_dir=''"):
        Director('', str(slots))
    with pytest.raises(ConfigurationError, match=r'got \(str .*, SiteProfile'):
        Director(str(tmp_path / 'run'), load_site('local'), str(tmp_path))  # type: ignore[arg-type]
    # Nothing was written for a refused Director.
    assert not (tmp_path / 'run').exists()


def test_seed_client_learns_why_a_director_did_not_start(tmp_path: pathlib.Path):
    """Launched with a missing nodefile, the call fails and the Manager names the file."""
    missing = tmp_path / 'node_slice.00'

    async def client() -> BaseException:
        async with await Manager.from_exchange_factory(
            factory=LocalExchangeFactory(), executors=ThreadPoolExecutor(max_workers=1)
        ) as manager:
            handle = await manager.launch(Director, args=(str(tmp_path / 'run'), str(missing)))
            with pytest.raises(Exception) as failed:  # Academy's: its mailbox is closed
                await asyncio.wait_for(handle.md_sim_batch(iterations=4), 60)
            return failed.value

    with pytest.raises(ConfigurationError, match=r"nodes file '.*node_slice\.00' does not exist"):
        asyncio.run(client())


def test_batch_system_picks_the_site():
    """PBS and Slurm jobs get their generic profiles; anywhere else the simulated local site."""
    assert site_for({'PBS_NODEFILE': '/var/spool/pbs/aux/1.pbs'}) == 'pbs'
    assert site_for({'SLURM_JOB_NODELIST': 'nid[001-004]'}) == 'slurm'
    assert site_for({'PBS_NODEFILE': ''}) == 'local'
    assert site_for({}) == 'local'
