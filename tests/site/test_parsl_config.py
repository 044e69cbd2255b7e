from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys

import pytest
from parsl.launchers import MpiExecLauncher
from parsl.launchers import SrunLauncher

from actors.common.errors import ConfigurationError
from actors.job.partition import Partition
from actors.site.fork_launcher import ForkLauncher
from actors.site.lean_imports import python_path
from actors.site.lean_imports import shadow_dir
from actors.site.parsl_config import build_config
from actors.site.profile import available_sites
from actors.site.profile import load_site

pytestmark = pytest.mark.timeout(20)


def _partition(tmp_path: pathlib.Path, nodes=('nid001', 'nid002')) -> Partition:
    nodefile = tmp_path / 'p.nodes'
    nodefile.write_text('\n'.join(nodes) + '\n')
    return Partition(1, tuple(nodes), str(nodefile))


def _nodefile_of(worker_init: str) -> list[str]:
    """The hosts of the nodefile a block's worker_init exports."""
    (line,) = [x for x in worker_init.splitlines() if x.startswith('export PBS_NODEFILE=')]
    return pathlib.Path(line.split('=', 1)[1].strip("'")).read_text().split()


def test_every_site_profile_loads():
    sites = available_sites()
    assert {'local', 'pbs', 'slurm'} <= set(sites)
    for site in sites:
        profile = load_site(site)
        assert profile.workers_per_node >= 1


def test_unknown_site_names_the_choices():
    with pytest.raises(ConfigurationError, match=r"unknown site 'nowhere'; choose one of: .*local"):
        load_site('nowhere')


def test_bad_profile_key(tmp_path: pathlib.Path):
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'site.toml').write_text('workers_per_nod = 3\n')
    with pytest.raises(ConfigurationError, match=r'unknown key.*workers_per_nod'):
        load_site('bad', tmp_path)


def test_local_config_places_workers_through_the_fork_launcher(tmp_path: pathlib.Path):
    environ = dict(os.environ)
    partition = _partition(tmp_path)
    config = build_config(partition, load_site('local'), tmp_path / 'parsl', workers_per_node=3)
    (executor,) = config.executors
    assert executor.label == 'partition-1'
    assert executor.max_workers_per_node == 3
    # One block per node, each started by the Director on the node it names.
    assert executor.provider.nodes_per_block == 1
    assert executor.provider.init_blocks == 2  # one per node, without a Director
    assert config.strategy == 'none'
    worker_init, launcher = executor.provider.block('nid002')
    assert isinstance(launcher, ForkLauncher)
    assert _nodefile_of(worker_init) == ['nid002']
    assert config.run_dir == str(tmp_path / 'parsl')
    assert config.initialize_logging is False
    # The partition is given to the block's shell, never to this process.
    assert dict(os.environ) == environ


def test_pbs_config_places_workers_through_mpiexec(tmp_path: pathlib.Path):
    partition = _partition(tmp_path)
    profile = load_site('pbs').with_overrides(launcher_args='-launcher fork --ppn 1')
    config = build_config(partition, profile, tmp_path / 'parsl')
    worker_init, launcher = config.executors[0].provider.block('nid001')
    assert isinstance(launcher, MpiExecLauncher)
    assert '-launcher fork' in launcher.overrides
    assert _nodefile_of(worker_init) == ['nid001']


def test_the_fork_launcher_takes_no_launcher_args():
    with pytest.raises(ConfigurationError, match=r"fork launcher .* no launcher arguments .*'-x'"):
        load_site('local').with_overrides(launcher_args='-x')


def test_configs_are_fresh_objects(tmp_path: pathlib.Path):
    partition = _partition(tmp_path)
    a = build_config(partition, load_site('local'), tmp_path / 'a')
    b = build_config(partition, load_site('local'), tmp_path / 'b')
    assert a.executors[0] is not b.executors[0]
    assert a.executors[0].provider is not b.executors[0].provider


def test_slurm_config_pins_the_nodelist(tmp_path: pathlib.Path):
    partition = _partition(tmp_path, nodes=('nid001', 'nid002', 'nid007'))
    config = build_config(partition, load_site('slurm'), tmp_path / 'parsl')
    worker_init, launcher = config.executors[0].provider.block('nid007')
    assert isinstance(launcher, SrunLauncher)
    assert '--nodelist=nid007' in launcher.overrides
    assert '--nodes=1' in launcher.overrides
    assert 'PBS_NODEFILE' not in worker_init


def test_missing_interface_is_a_clear_error(tmp_path: pathlib.Path):
    profile = load_site('pbs').with_overrides(interface='nosuch0')
    with pytest.raises(ConfigurationError, match="interface 'nosuch0' does not exist"):
        build_config(_partition(tmp_path), profile, tmp_path / 'parsl')


_PROBE = (
    'import sys, parsl.executors.globus_compute as g; '
    "print('globus_compute_sdk' in sys.modules, g._globus_compute_enabled)"
)


def _probe(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, '-c', _PROBE], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.timeout(60)
def test_shadowed_globus_compute_sdk_is_not_loaded_by_parsl(tmp_path: pathlib.Path):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    assert _probe(env) == 'True True'
    shadow = shadow_dir(tmp_path)
    assert _probe({**env, 'PYTHONPATH': python_path(shadow, None)}) == 'False False'
    # Written once, reused by the next executor of the same Director.
    assert shadow_dir(tmp_path) == shadow


def test_lean_imports_reach_the_block_and_the_interchange(tmp_path: pathlib.Path):
    partition = _partition(tmp_path)
    config = build_config(partition, load_site('local'), tmp_path / 'run', mpi=True)
    shadow = str(tmp_path.resolve() / 'run' / 'lean-imports')
    for executor in config.executors:
        command = executor.interchange_launch_cmd
        assert command[0] == 'env' and command[2] == sys.executable
        assert command[-1].endswith('parsl/executors/high_throughput/interchange.py')
        assert 'os.setsid()' in command[-2]  # Ctrl-C at the terminal is the Director's
        assert command[1].startswith(f'PYTHONPATH={shadow}')
        # Last, after the profile's own worker_init.
        provider = executor.provider
        worker_init = provider.block('nid001')[0] if hasattr(provider, 'block') else None
        last = (worker_init or provider.worker_init).splitlines()[-1]
        assert last == f'export PYTHONPATH={shadow}"${{PYTHONPATH:+:$PYTHONPATH}}"'

    plain = load_site('local').with_overrides(lean_imports=False)
    config = build_config(partition, plain, tmp_path / 'plain', mpi=True)
    for executor in config.executors:
        assert executor.interchange_launch_cmd[0] == sys.executable
        assert executor.interchange_launch_cmd[-1].endswith('interchange.py')
        assert 'PYTHONPATH' not in executor.provider.worker_init


def test_lean_imports_must_be_a_boolean():
    with pytest.raises(ConfigurationError, match="lean_imports must be true or false, got 'no'"):
        load_site('local').with_overrides(lean_imports='no')


@pytest.mark.timeout(120)
def test_a_directors_worker_processes_run_lean(run_dir: pathlib.Path):
    from actors.calling.calls import call
    from tests.helpers import pools_of
    from tests.helpers import running_directors

    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, (h,), _):
            result = await call(manager, h, 'md_sim')
            pools = pools_of(run_dir)
            environments = [p.environ() for pool in pools for p in [pool, *pool.children()]]
            return result, environments

    result, environments = asyncio.run(main())
    assert result.ok
    shadow = str(run_dir.resolve() / 'parsl' / 'director-0' / 'lean-imports')
    # The pool, its multiprocessing helpers and its workers.
    assert len(environments) >= 3
    assert all(env['PYTHONPATH'].split(os.pathsep)[0] == shadow for env in environments)
