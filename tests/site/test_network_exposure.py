"""What a Director on the simulated job listens on: loopback only."""

from __future__ import annotations

import asyncio
import ipaddress
import pathlib

import psutil
import pytest

from actors.calling.calls import call
from actors.site.fork_launcher import ForkLauncher
from actors.site.parsl_config import build_config
from actors.site.profile import load_site
from tests.conftest import parsl_processes_of
from tests.helpers import make_partitions
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(120)

HYDRA = ('mpiexec', 'hydra_pmi_proxy')
"""MPICH's hydra processes: its ``mpiexec`` listens on every interface."""


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split('%', maxsplit=1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _open_listeners(run_dir: pathlib.Path) -> list[str]:
    """Listening sockets on a non-loopback address held by the run's Parsl processes."""
    found = []
    procs = parsl_processes_of(run_dir)
    for proc in [*procs, *(c for p in procs for c in _children(p))]:
        try:
            listening = [
                c for c in proc.net_connections(kind='inet') if c.status == psutil.CONN_LISTEN
            ]
            name = ' '.join(proc.cmdline())[:80]
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        found += [
            f'{proc.pid} {name}: {c.laddr.ip}:{c.laddr.port}'
            for c in listening
            if not _is_loopback(c.laddr.ip)
        ]
    return found


def _name(proc: psutil.Process) -> str:
    try:
        return ' '.join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ''


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_a_director_on_the_simulated_job_listens_on_loopback_only(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=2, partitions=1) as (manager, (handle,), _):
            batch = asyncio.ensure_future(
                call(manager, handle, 'md_sim_batch', iterations=4, params={'duration': 3}),
            )
            for _ in range(600):  # both pools connected, calls running
                status = await call(manager, handle, 'status')
                if status.workers_connected == 4 and status.running:
                    break
                await asyncio.sleep(0.1)
            names = [_name(p) for p in parsl_processes_of(run_dir)]
            open_listeners = _open_listeners(run_dir)
            results = await batch
            return names, open_listeners, results

    names, open_listeners, results = asyncio.run(main())
    assert all(r.ok for r in results)
    assert len([n for n in names if 'process_worker_pool.py' in n]) == 2, names
    launchers = [n for n in names if n.split(' ')[0].rpartition('/')[2].startswith(HYDRA)]
    assert not launchers, launchers
    assert not open_listeners, open_listeners


def test_the_simulated_job_starts_its_pools_with_the_fork_launcher(tmp_path: pathlib.Path):
    (partition,) = make_partitions(tmp_path, nodes=2, partitions=1)
    config = build_config(partition, load_site('local'), run_dir=str(tmp_path / 'parsl'))
    # One block per node, each with its own launcher.
    _, launcher = config.executors[0].provider.block('sim-node-001')
    assert isinstance(launcher, ForkLauncher)
    script = launcher('process_worker_pool.py', 1, 2)
    assert not [line for line in script.splitlines() if line.lstrip().startswith('mpiexec')]
    assert 'PMI_HOSTNAME=$HOST' in script
