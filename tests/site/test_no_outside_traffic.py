"""Nothing the project runs tries to reach a host outside the machine.

A run in a network namespace with only loopback, every process traced for
``connect``: any address outside ``127.0.0.0/8`` (Parsl's ``address_by_query``
asking api.ipify.org, a DNS lookup sent off the machine) fails the test, even
though the namespace would drop it anyway.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(240)

_ADDRESS = re.compile(r'inet_(?:addr|pton)\((?:AF_INET6?, )?"([^"]+)"')


def _cannot_trace() -> str | None:
    if shutil.which('strace') is None:
        return 'strace is not installed (apt-get install strace)'
    if shutil.which('unshare') is None:
        return 'unshare (util-linux) is not installed'
    probe = subprocess.run(
        ['unshare', '--net', '--mount', 'true'], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f'cannot make a network namespace here: {probe.stderr.strip()}'
    return None


def outside_addresses(trace: str) -> list[str]:
    """Every address a traced ``connect`` named that is not this machine's loopback."""
    found = []
    for line in trace.splitlines():
        if 'connect(' not in line:
            continue
        for address in _ADDRESS.findall(line):
            ip = ipaddress.ip_address(address)
            mapped = getattr(ip, 'ipv4_mapped', None)
            if not (mapped or ip).is_loopback:
                found.append(line.strip())
    return found


def test_outside_addresses_reads_strace_lines():
    trace = '\n'.join(
        [
            '123 connect(5, {sa_family=AF_INET, sin_port=htons(443), '
            'sin_addr=inet_addr("104.26.12.205")}, 16) = -1 ENETUNREACH',
            '124 connect(6, {sa_family=AF_INET, sin_port=htons(5555), '
            'sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
            '125 connect(7, {sa_family=AF_INET6, sin6_port=htons(53), '
            'inet_pton(AF_INET6, "2001:4860::8888", &sin6_addr)}, 28) = -1',
            '126 connect(8, {sa_family=AF_UNIX, sun_path="/run/munge.sock"}, 110) = 0',
        ]
    )
    found = outside_addresses(trace)
    assert len(found) == 2 and '104.26.12.205' in found[0] and '2001:4860' in found[1]


@pytest.mark.parametrize(
    'site_args',
    [
        # The embedded default: a simulated job.
        [],
        # A PBS job's profile (interface "", the case that asked api.ipify.org), its pools
        # started by hydra's mpiexec on this machine.
        ['--site', 'pbs', '--launcher-args', '-launcher fork --ppn 1', '--static'],
    ],
    ids=['local', 'pbs'],
)
def test_a_run_connects_to_nothing_outside_the_machine(site_args, tmp_path: pathlib.Path):
    reason = _cannot_trace()
    if reason:
        pytest.skip(reason)
    hosts = ['x1001', 'x1002', 'x1003', 'x1004']
    nodefile = tmp_path / 'nodes'
    nodefile.write_text(''.join(f'{h}\n' for h in hosts))
    # The job's hosts resolve as in a real job, from its hosts file (hydra looks them up);
    # the machine's resolv.conf stays, so any other lookup would show as a connect below.
    hosts_file = tmp_path / 'hosts'
    hosts_file.write_text(
        pathlib.Path('/etc/hosts').read_text() + ''.join(f'127.0.0.1 {h}\n' for h in hosts)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'PBS_'))}
    if site_args:
        env['PBS_NODEFILE'] = str(nodefile)
    trace_file = tmp_path / 'connect.trace'
    launch = [
        sys.executable,
        str(REPO / 'launch.py'),
        *site_args,
        '--duration',
        '0.1',
        '--iterations',
        '2',
        '--run-dir',
        str(tmp_path / 'run'),
        '--json',
    ]
    strace = ['strace', '-f', '-qq', '-e', 'trace=connect', '-o', str(trace_file)]
    script = f'mount --bind {hosts_file} /etc/hosts && ip link set lo up 2>/dev/null; exec "$@"'
    done = subprocess.run(
        ['unshare', '--net', '--mount', 'sh', '-c', script, 'sh', *strace, *launch],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)['results']
    assert results and all(r['ok'] for r in results)
    trace = trace_file.read_text()
    assert 'connect(' in trace  # the trace saw the run's own loopback connections
    assert outside_addresses(trace) == []


def test_hydra_finds_the_made_up_hosts_without_dns(
    tmp_path: pathlib.Path, pytestconfig: pytest.Config
):
    # MPICH's hydra looks up every host it is given; the session gives the tests' made-up
    # hosts loopback addresses (tests/made_up_hosts.py) so no lookup leaves the machine.
    import socket

    unresolved = getattr(pytestconfig, 'made_up_hosts_unresolved', 'not configured')
    if unresolved:
        pytest.skip(f'made-up hosts resolve through DNS here: {unresolved}')
    if shutil.which('strace') is None:
        pytest.skip('strace is not installed (apt-get install strace)')
    assert socket.gethostbyname('sim-node-001') == '127.0.0.1'
    trace = tmp_path / 'hydra.trace'
    mpiexec = pathlib.Path(sys.executable).parent / 'mpiexec'
    done = subprocess.run(
        ['strace', '-f', '-qq', '-e', 'trace=connect', '-o', str(trace), str(mpiexec),
         '-launcher', 'fork', '-hosts', 'sim-node-001,x4102c5s0b0n0', '-n', '2', 'sleep', '0.5'],
        # Ranks that live a moment: traced, hydra raced ranks that exit at once into SIGPIPE.
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert outside_addresses(trace.read_text()) == []
