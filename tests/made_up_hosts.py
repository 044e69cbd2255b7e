"""The tests' made-up hosts resolve on this machine, never through its DNS server.

The simulated job names its nodes (``sim-node-001``, a PBS nodefile's
``x4102c5s0b0n0``...), and MPICH's hydra ``mpiexec -launcher fork`` looks each
host it is given up with ``getaddrinfo``: without an answer from
``/etc/hosts`` that is a DNS query to the machine's resolver, a packet off the
machine for a host that does not exist. As the namespace cluster gives its
hosts their own ``hosts`` file, the test session (when it may: root, mount
namespaces) moves into a mount namespace of its own, where ``/etc/hosts`` is the
machine's plus these names on loopback. Only this process and its children
see it; the machine's own file is untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pathlib
import tempfile

from actors.job.partition import MAX_SIMULATED_NODES
from actors.job.partition import simulated_nodes

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

PBS_STYLE = [f'x4102c5s{slot}b0n0' for slot in range(8)] + [
    f'x1000c0s0b{b}n{n}' for b in (0, 1) for n in (0, 1)
]


def made_up_hosts() -> list[str]:
    """Every made-up host name the tests give hydra."""
    return [
        *simulated_nodes(MAX_SIMULATED_NODES),
        # MPI places beyond a partition's own nodes (actors.site.parsl_config).
        *(f'mpi-place-{index}' for index in range(MAX_SIMULATED_NODES)),
        *PBS_STYLE,
    ]


def resolve_locally(names: list[str]) -> str | None:
    """Give ``names`` loopback addresses for this process and its children.

    Returns:
        None once done, else why not (not root, no mount namespaces).

    """
    if os.geteuid() != 0:
        return 'not root'
    libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return f'unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}'
    if libc.mount(b'none', b'/', None, MS_REC | MS_PRIVATE, None) != 0:
        return f'mount --make-rprivate /: {os.strerror(ctypes.get_errno())}'
    hosts = pathlib.Path(tempfile.mkdtemp(prefix='test-hosts-')) / 'hosts'
    hosts.write_text(
        pathlib.Path('/etc/hosts').read_text()
        + '\n# made-up hosts of the tests (tests/made_up_hosts.py)\n'
        + ''.join(f'127.0.0.1 {name}\n' for name in names)
    )
    if libc.mount(str(hosts).encode(), b'/etc/hosts', None, MS_BIND, None) != 0:
        return f'bind-mount {hosts} on /etc/hosts: {os.strerror(ctypes.get_errno())}'
    return None
