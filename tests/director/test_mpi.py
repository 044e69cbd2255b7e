"""Multi-node MPI tool calls with per-call resources on a simulated 4-node partition."""

from __future__ import annotations

import asyncio
import itertools
import pathlib
import time

import pytest
from parsl.executors import MPIExecutor
from parsl.launchers import SimpleLauncher

from actors.calling.calls import call
from actors.common.errors import ConfigurationError
from actors.director.admission import NodeAdmission
from actors.director.command_files import command_outcome
from actors.job.partition import Partition
from actors.site.parsl_config import build_config
from actors.site.parsl_config import mpi_executor_label
from actors.site.profile import load_site
from actors.tools.resources import MPIResources
from actors.tools.resources import resolve_resources
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(120)


def test_resources_default_to_one_node_one_rank():
    assert resolve_resources('t', {}, 4) == MPIResources(1, 1)
    spec = resolve_resources('t', {'num_nodes': 2, 'num_ranks': 8}, 4, launcher_options='-x')
    assert spec.parsl_spec() == {
        'num_nodes': 2,
        'ranks_per_node': 4,
        'num_ranks': 8,
        'launcher_options': '-x',
    }


@pytest.mark.parametrize(
    ('requested', 'message'),
    [
        ({'num_nodes': 5}, r'num_nodes=5 is more than the 4 node\(s\) of this partition'),
        ({'num_ranks': 4}, 'num_ranks=4 needs num_nodes too'),
        ({'num_nodes': 2, 'num_ranks': 3}, 'num_ranks=3 is not a multiple of num_nodes=2'),
        (
            {'num_nodes': 2, 'num_ranks': 8, 'ranks_per_node': 2},
            r'num_ranks=8 != num_nodes=2 x ranks_per_node=2',
        ),
        ({'num_nodes': 0}, 'num_nodes must be a positive integer, got 0'),
        ({'num_nodes': True}, 'num_nodes must be a positive integer, got True'),
        ({'ranks_per_node': 'two'}, "ranks_per_node must be a positive integer, got 'two'"),
        ({'gpus': 1}, r'unknown resource argument\(s\) gpus'),
    ],
)
def test_impossible_requests_are_rejected(requested, message):
    with pytest.raises(ConfigurationError, match=message):
        resolve_resources('mpi_probe', requested, 4)


def test_admission_is_first_come_first_served():
    async def main():
        admission = NodeAdmission(4)
        order = []

        async def job(name, nodes, hold):
            ticket = await admission.acquire(nodes)
            order.append(name)
            assert admission.free >= 0
            await asyncio.sleep(hold)
            admission.release(ticket)

        # The 4-node call arrives second: the 1-node calls behind it wait for it
        # (no call declares a duration, so nothing can be backfilled safely).
        await asyncio.gather(
            job('a', 3, 0.05),
            job('big', 4, 0.01),
            job('c', 1, 0.0),
            job('d', 1, 0.0),
        )
        return order, admission.free

    order, free = asyncio.run(main())
    assert order == ['a', 'big', 'c', 'd']
    assert free == 4


def test_admission_cancelled_waiter_frees_its_place():
    async def main():
        admission = NodeAdmission(2)
        first = await admission.acquire(2)
        waiter = asyncio.ensure_future(admission.acquire(2))
        small = asyncio.ensure_future(admission.acquire(1))
        await asyncio.sleep(0.01)
        assert admission.waiting == 2
        waiter.cancel()
        admission.release(first)
        await small
        return admission.free, admission.waiting

    assert asyncio.run(main()) == (1, 0)
    with pytest.raises(ConfigurationError, match='cannot reserve 3 node'):
        asyncio.run(NodeAdmission(2).acquire(3))


def _overlap(a, b) -> bool:
    return a['start'] < b['end'] and b['start'] < a['end']


@pytest.mark.timeout(240)
def test_mixed_sizes_never_share_a_node(run_dir: pathlib.Path):
    sizes = [1, 2, 3, 2, 1, 4]

    async def main():
        async with running_directors(run_dir, nodes=4, partitions=1) as (manager, (h,), parts):
            results = await asyncio.gather(
                *(
                    call(
                        manager,
                        h,
                        'call_tool',
                        'mpi_probe',
                        {'duration': 1.0, 'num_nodes': n, 'ranks_per_node': 2},
                    )
                    for n in sizes
                ),
            )
            # Impossible requests: rejected at once, nothing submitted.
            errors = []
            for action, args, kwargs in [
                ('call_tool', ('mpi_probe', {'num_nodes': 5}), {}),
                ('call_tool', ('mpi_probe', {'num_ranks': 2}), {}),
                ('call_tool', ('mpi_probe', {'num_nodes': 2, 'num_ranks': 3}), {}),
                ('call_tool', ('ase_md', {'num_nodes': 2}), {}),
                ('md_sim', (), {'tool': 'ase_md', 'num_nodes': 2}),
                ('md_sim', (), {'tool': 'mpi_probe', 'num_nodes': 9}),
                ('md_sim_batch', (), {'params': [{'tool': 'mpi_probe'}, {'num_nodes': 2}]}),
            ]:
                with pytest.raises(ConfigurationError) as info:
                    await call(manager, h, action, *args, **kwargs)
                errors.append(str(info.value))
            before = await call(manager, h, 'status')
            # The real MD tool across 2 nodes x 2 ranks, through md_sim.
            md = await call(
                manager,
                h,
                'md_sim',
                tool='ase_md_mpi',
                steps=20,
                size=1,
                seed=3,
                num_nodes=2,
                ranks_per_node=2,
            )
            # A batch of MPI calls goes through the same admission: 3 + 2 > 4 nodes.
            batch = await call(
                manager,
                h,
                'md_sim_batch',
                params=[
                    {'tool': 'mpi_probe', 'duration': 0.3, 'num_nodes': 3},
                    {'tool': 'mpi_probe', 'duration': 0.3, 'num_nodes': 2},
                ],
            )
            # A bad option is refused at the door (the tool's schema), nothing submitted.
            with pytest.raises(ConfigurationError) as refused:
                await call(manager, h, 'md_sim', tool='ase_md_mpi', temperature=-1)
            failed = refused.value
            after = await call(manager, h, 'status')
            return parts[0], results, errors, before, md, batch, failed, after

    part, results, errors, before, md, batch, failed, after = asyncio.run(main())

    assert [r.ok for r in results] == [True] * len(sizes), [r.error_message for r in results]
    spans = []
    for size, r in zip(sizes, results, strict=True):
        assert r.action == 'call_tool' and r.tool == 'mpi_probe'
        assert r.resources == {'num_nodes': size, 'ranks_per_node': 2, 'num_ranks': 2 * size}
        assert len(r.nodes) == size == len(set(r.nodes))
        assert set(r.nodes) <= set(part.nodes)
        # The launch prefix put the ranks on exactly the call's nodes.
        assert r.value['hosts'] == sorted(r.nodes)
        assert r.value['size'] == 2 * size
        assert [x['rank'] for x in r.value['ranks']] == list(range(2 * size))
        spans.append({'nodes': set(r.nodes), 'start': r.value['start'], 'end': r.value['end']})
    for a, b in itertools.combinations(spans, 2):
        if _overlap(a, b):
            assert not a['nodes'] & b['nodes'], f'calls shared a node while running: {a} {b}'
    # Calls did run side by side (1 + 2 nodes, then 2 + 1 ... fit together).
    assert any(_overlap(a, b) for a, b in itertools.combinations(spans, 2))

    assert 'more than the 4 node(s)' in errors[0]
    assert 'needs num_nodes' in errors[1]
    assert 'not a multiple' in errors[2]
    assert "'num_nodes' was unexpected" in errors[3]
    assert 'apply only to MPI tools' in errors[4]
    assert 'num_nodes=9 is more than' in errors[5]
    # The batch's second call runs the Director's tool (mock_md): rejected, first not sent.
    assert 'apply only to MPI tools' in errors[6]
    assert before.done == len(sizes) and before.failed == 0
    assert before.mpi_nodes_free == 4 and before.mpi_waiting == 0

    assert md.ok, md.error_message
    assert md.tool == 'ase_md_mpi' and len(md.nodes) == 2
    assert md.value['hosts'] == sorted(md.nodes)
    assert [r['result']['seed'] for r in md.value['ranks']] == [3, 4, 5, 6]
    assert md.value['max_abs_energy_drift'] < 1e-3

    first, second = batch
    assert first.ok and second.ok and first.action == 'md_sim_batch'
    assert (len(first.nodes), len(second.nodes)) == (3, 2)
    assert first.value['end'] <= second.value['start'] or not set(first.nodes) & set(second.nodes)

    assert 'temperature: -1 is less than or equal to the minimum of 0' in str(failed)
    assert after.done == len(sizes) + 3 and after.failed == 0 and after.mpi_nodes_free == 4


def _partition(tmp_path: pathlib.Path, nodes=('nid001', 'nid002', 'nid003')) -> Partition:
    nodefile = tmp_path / 'p.nodes'
    nodefile.write_text('\n'.join(nodes) + '\n')
    return Partition(2, tuple(nodes), str(nodefile))


@pytest.mark.parametrize(
    ('site', 'launcher', 'nodes_line', 'options'),
    [
        ('local', 'mpiexec', 'export PBS_NODEFILE=', '-launcher fork'),
        ('pbs', 'mpiexec', 'export PBS_NODEFILE=', ''),
        ('slurm', 'srun', "export SLURM_NODELIST='nid[001-003]'", '--overlap'),
    ],
)
def test_mpi_executor_comes_from_the_site_profile(tmp_path, site, launcher, nodes_line, options):
    profile = load_site(site)
    partition = _partition(tmp_path)
    config = build_config(partition, profile, tmp_path / 'parsl', mpi=True)
    htex, mpi = config.executors
    assert isinstance(mpi, MPIExecutor) and not isinstance(htex, MPIExecutor)
    assert mpi.label == mpi_executor_label(partition) == 'partition-2-mpi'
    assert mpi.mpi_launcher == launcher
    # At most one call per node at once; Director admission keeps Parsl's backlog empty.
    assert mpi.max_workers_per_block == partition.size
    assert isinstance(mpi.provider.launcher, SimpleLauncher)
    # Added to the DFK with the first MPI call, it starts its one block then.
    assert mpi.provider.init_blocks == 1
    assert nodes_line in mpi.provider.worker_init
    assert profile.mpi_launcher_options == options
    assert len(build_config(partition, profile, tmp_path / 'p2').executors) == 1


def test_unknown_mpi_launcher_is_rejected(tmp_path):
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'site.toml').write_text('mpi_launcher = "mpirun"\n')
    with pytest.raises(ConfigurationError, match=r"mpi_launcher 'mpirun' is not one of mpiexec"):
        load_site('bad', tmp_path)


def _probe_ranks(duration: float) -> list[int]:
    """Live rank processes of ``mpi_probe`` calls with this (unusual) duration."""
    import psutil

    found = []
    for proc in psutil.process_iter(['cmdline', 'status']):
        argv = proc.info['cmdline'] or []
        if (
            proc.info['status'] != psutil.STATUS_ZOMBIE
            and 'actors.tools.mpi_tools' in argv
            and repr(duration) in argv
        ):
            found.append(proc.pid)
    return found


def test_mpi_calls_can_be_cancelled_timed_out_and_replayed(run_dir: pathlib.Path):
    long, longer = 61.25, 62.25  # mark this test's rank processes, per call

    async def main():
        async with running_directors(run_dir, nodes=4, partitions=1) as (manager, (h,), _):
            timed = asyncio.ensure_future(
                call(
                    manager,
                    h,
                    'call_tool',
                    'mpi_probe',
                    {'duration': long, 'num_nodes': 2, 'ranks_per_node': 2},
                    call_key='timed',
                    timeout=4.0,
                ),
            )
            cancelled = asyncio.ensure_future(
                call(
                    manager,
                    h,
                    'md_sim',
                    tool='mpi_probe',
                    duration=longer,
                    num_nodes=2,
                    call_key='cancelled',
                ),
            )
            deadline = asyncio.get_running_loop().time() + 60
            while len(_probe_ranks(longer)) < 3 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
            ranks = _probe_ranks(longer)
            told = await call(manager, h, 'cancel', call_key='cancelled')
            stopped = await asyncio.gather(timed, cancelled)
            await asyncio.sleep(1.0)
            left = _probe_ranks(long) + _probe_ranks(longer)
            # Every node is free again, and a keyed MPI call runs once.
            whole, again = [
                await call(
                    manager,
                    h,
                    'md_sim',
                    tool='mpi_probe',
                    duration=0.1,
                    num_nodes=4,
                    call_key='whole',
                )
                for _ in range(2)
            ]
            return ranks, told, stopped, left, whole, again

    ranks, told, (timed, cancelled), left, whole, again = asyncio.run(main())
    # The cancelled call was running: 2 ranks and their mpiexec.
    assert len(ranks) >= 3, ranks
    assert told == 1
    assert timed.status == 'timed_out' and timed.error_type == 'TimedOut', timed
    assert 4.0 <= timed.wall_time < 30 and timed.attempts == 1
    assert cancelled.status == 'cancelled' and cancelled.error_type == 'Cancelled', cancelled
    assert 'cancelled by the caller' in cancelled.error_message
    assert left == [], f'rank processes outlived their stopped calls: {left}'
    assert whole.ok and len(whole.nodes) == 4 and whole.call_key == 'whole'
    assert again.call_id == whole.call_id  # answered from the journal, not run again


def test_a_command_stopped_mid_write_still_has_an_outcome(tmp_path: pathlib.Path):
    """A stop can land while the worker writes the meta or end file: the call is still answered."""
    meta = tmp_path / 'mpi_probe-0.json'
    meta.write_text('{"node": "x1", "sta')  # cut short
    pathlib.Path(f'{meta}.end').write_text('')  # created, not yet written
    before = time.time()
    outcome = command_outcome(
        'mpi_probe',
        str(meta),
        str(tmp_path / 'missing.out'),
        str(tmp_path / 'missing.err'),
        finished=None,
        error=RuntimeError('stopped'),
    )
    assert before <= outcome['end'] <= time.time()
    assert outcome['start'] == outcome['end']
    assert outcome['ok'] is False
    assert outcome['node'] is None


@pytest.mark.timeout(240)
def test_backfill_with_real_mpi_calls(run_dir: pathlib.Path):
    """A 1-node call runs beside a 3-node one while a 4-node call waits for its reservation."""

    async def main():
        async with running_directors(run_dir, nodes=4, partitions=1) as (manager, (h,), parts):
            # The MPI pool starts with the first MPI call: start it before timing anything.
            await call(manager, h, 'call_tool', 'mpi_probe', {'num_nodes': 1})

            def probe(nodes: int, duration: float):
                return asyncio.ensure_future(
                    call(
                        manager,
                        h,
                        'call_tool',
                        'mpi_probe',
                        {'duration': duration, 'num_nodes': nodes},
                    )
                )

            long = probe(3, 4.0)
            for _ in range(600):
                if (await call(manager, h, 'status')).mpi_nodes_free == 1:
                    break
                await asyncio.sleep(0.1)
            head = probe(4, 0.5)
            await asyncio.sleep(0.3)
            waiting = await call(manager, h, 'status')
            small = probe(1, 1.0)
            results = await asyncio.gather(long, head, small)
            after = await call(manager, h, 'status')
            return parts[0], results, waiting, after

    part, (long, head, small), waiting, after = asyncio.run(main())
    assert long.ok and head.ok and small.ok
    assert waiting.mpi_waiting == 1
    assert waiting.mpi_reservation is not None and waiting.mpi_reservation['nodes'] == 4
    assert 0 < waiting.mpi_reservation['in'] <= 4.0
    # The 1-node call was backfilled: it ran while the 4-node head waited, on the free node.
    assert small.value['start'] < head.value['start']
    assert small.value['end'] <= head.value['start'] + 0.05
    assert not set(small.nodes) & set(long.nodes)
    assert head.value['start'] >= long.value['end'] - 0.05
    assert after.mpi_backfilled >= 1 and after.mpi_waiting == 0 and after.mpi_nodes_free == 4
    assert set(head.nodes) == set(part.nodes)
