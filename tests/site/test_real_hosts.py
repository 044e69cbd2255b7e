"""What a real job needs that a simulated one hid: per-block srun command files, an address
chosen without asking the internet, encrypted pools, and pools on the host of their block."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import platform
import subprocess
import time

import pytest
from parsl.dataflow.dflow import DataFlowKernel

from actors.common.errors import ConfigurationError
from actors.director.node_pools import NodePools
from actors.director.node_pools import same_host
from actors.job.partition import Partition
from actors.site import addresses
from actors.site.parsl_config import build_config
from actors.site.profile import available_sites
from actors.site.profile import load_site
from actors.site.srun_launcher import BlockSrunLauncher

pytestmark = pytest.mark.timeout(60)


def _partition(tmp_path: pathlib.Path, nodes=('nid001', 'nid002')) -> Partition:
    nodefile = tmp_path / 'p.nodes'
    nodefile.write_text('\n'.join(nodes) + '\n')
    return Partition(0, tuple(nodes), str(nodefile))


def test_blocks_started_together_each_run_their_own_command(tmp_path: pathlib.Path):
    # Parsl's SrunLauncher wrote every block's command to cmd_$SLURM_JOB_NAME.sh (one file per
    # allocation): blocks overwrote each other's. Here srun is a stand-in that runs the file.
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    fake_srun = bin_dir / 'srun'
    fake_srun.write_text('#!/bin/bash\nexec bash "${@: -1}"\n')
    fake_srun.chmod(0o755)
    launcher = BlockSrunLauncher(overrides='--nodes=1 --nodelist=n1')
    procs = []
    for block in range(8):
        script = launcher(f'echo block-{block} > out-{block}.txt', 1, 1)
        env = {
            **os.environ,
            'PATH': f'{bin_dir}:{os.environ["PATH"]}',
            'JOBNAME': f'parsl.partition-0.block-{block}.{time.time()}',
            'SLURM_JOB_NAME': 'interactive',
        }
        procs.append(subprocess.Popen(['bash', '-c', script], cwd=tmp_path, env=env))
    assert [p.wait(timeout=30) for p in procs] == [0] * 8
    for block in range(8):
        assert (tmp_path / f'out-{block}.txt').read_text() == f'block-{block}\n'
    assert not list(tmp_path.glob('cmd_interactive*'))
    assert not list(tmp_path.glob('*.part'))


def test_slurm_blocks_use_the_per_block_launcher(tmp_path: pathlib.Path):
    config = build_config(_partition(tmp_path), load_site('slurm'), tmp_path / 'parsl')
    _, launcher = config.executors[0].provider.block('nid002')
    assert isinstance(launcher, BlockSrunLauncher)
    script = launcher('process_worker_pool.py', 1, 1)
    assert 'SLURM_JOB_NAME' not in script and 'cmd_${JOBNAME' in script


@pytest.mark.parametrize('site', available_sites())
def test_no_site_leaves_the_address_to_parsl(site: str, tmp_path: pathlib.Path, monkeypatch):
    # Parsl's address=None asks https://api.ipify.org; nothing of ours may.
    def no_query(*args, **kwargs):
        raise AssertionError('address_by_query was called')

    monkeypatch.setattr('parsl.addresses.address_by_query', no_query)
    profile = load_site(site).with_overrides(interface='')
    config = build_config(_partition(tmp_path), profile, tmp_path / 'parsl', mpi=True)
    for executor in config.executors:
        assert isinstance(executor.address, str) and executor.address
        # The pools are told this one address (not a list with a looked-up one).
        assert executor.all_addresses == {executor.address}


def test_the_address_is_the_hosts_own_name_else_its_only_interface(monkeypatch):
    slurm = load_site('slurm').with_overrides(interface='')
    monkeypatch.setattr(addresses, 'hostname_address', lambda: '10.1.2.3')
    assert addresses.worker_address(slurm) == '10.1.2.3'
    monkeypatch.setattr(addresses, 'hostname_address', lambda: None)
    monkeypatch.setattr(addresses, 'interface_addresses', lambda: {'hsn0': '10.9.9.9'})
    assert addresses.worker_address(slurm) == '10.9.9.9'
    monkeypatch.setattr(addresses, 'interface_addresses', dict)
    assert addresses.worker_address(slurm) == '127.0.0.1'
    monkeypatch.setattr(
        addresses, 'interface_addresses', lambda: {'hsn0': '10.9.9.9', 'eth0': '192.168.1.5'}
    )
    with pytest.raises(ConfigurationError, match=r'hsn0 \(10\.9\.9\.9\).*set `interface`'):
        addresses.worker_address(slurm)
    assert addresses.worker_address(load_site('local')) == '127.0.0.1'


@pytest.mark.parametrize('site', available_sites())
def test_pools_are_encrypted_by_default_with_an_opt_out(site: str, tmp_path: pathlib.Path):
    partition = _partition(tmp_path)
    profile = load_site(site).with_overrides(interface='')
    config = build_config(partition, profile, tmp_path / 'on', mpi=True)
    assert [e.encrypted for e in config.executors] == [True, True]
    plain = profile.with_overrides(encrypted=False)
    config = build_config(partition, plain, tmp_path / 'off', mpi=True)
    assert [e.encrypted for e in config.executors] == [False, False]


def test_encrypted_must_be_a_boolean():
    with pytest.raises(ConfigurationError, match='encrypted must be true or false'):
        load_site('local').with_overrides(encrypted='no')


def test_unencrypted_workers_flag_warns(tmp_path: pathlib.Path):
    from actors.cli.parser import build_parser
    from actors.cli.plan import plan_run

    args = build_parser().parse_args(['--unencrypted-workers', '--run-dir', str(tmp_path / 'r')])
    with pytest.MonkeyPatch.context() as patch:
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger('actors.cli.plan').addHandler(handler)
        patch.setattr(logging.getLogger('actors.cli.plan'), 'level', logging.WARNING)
        try:
            plan = plan_run(args)
        finally:
            logging.getLogger('actors.cli.plan').removeHandler(handler)
    assert plan.profile.encrypted is False
    assert any('not encrypted' in r.getMessage() for r in records)


def test_same_host_compares_short_names():
    assert same_host('n1', 'n1')
    assert same_host('nid001.hsn.cm.frontier.olcf.ornl.gov', 'NID001')
    assert not same_host('n2', 'n1')
    assert not same_host('', 'n1')


@pytest.mark.timeout(120)
def test_a_pool_on_another_host_than_its_block_is_refused(tmp_path: pathlib.Path, caplog):
    # Every pool of the simulated job runs on this machine, not on the made-up node its block
    # stands for: taken as a real job, each is a pool on the wrong host, and must never serve.
    partition = _partition(tmp_path, nodes=('sim-node-001',))
    dfk = DataFlowKernel(build_config(partition, load_site('local'), tmp_path / 'parsl'))
    executor = dfk.executors['partition-0']
    pools = NodePools('director-x', partition.nodes, lambda: executor, real_hosts=True)

    async def until_given_up() -> None:
        await pools.start_blocks()
        deadline = time.monotonic() + 100
        while not pools.failed and time.monotonic() < deadline:
            await pools.look()
            assert pools.serving() == []
            await pools.mend()
            await asyncio.sleep(0.2)

    try:
        with caplog.at_level(logging.ERROR, logger='actors.director.node_pools'):
            asyncio.run(until_given_up())
    finally:
        dfk.cleanup()
    assert pools.failed == ['sim-node-001']
    assert pools.nodes == []
    refused = [r.getMessage() for r in caplog.records if 'refusing it' in r.getMessage()]
    # The host read from the pool's registration: this machine's name.
    assert refused and f'meant for sim-node-001) runs on {platform.node()};' in refused[0]
