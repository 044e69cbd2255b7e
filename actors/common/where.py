"""Where a call runs: the node the launcher put this worker on, and the worker slot."""

from __future__ import annotations

import os
import socket
from typing import Any

# Variables a launcher sets to the host it placed a rank on, most specific
# first: MPICH hydra (also under its fork launcher), Slurm, Cray PALS.
_NODE_VARIABLES = ('PMI_HOSTNAME', 'SLURMD_NODENAME', 'PALS_NODENAME')


def current_node() -> str:
    """The node this worker was placed on by the launcher."""
    for name in _NODE_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return socket.gethostname()


def where() -> dict[str, Any]:
    """The node, worker slot and process of the running call."""
    return {
        'node': current_node(),
        'worker': int(os.environ.get('PARSL_WORKER_RANK', '-1')),
        'pid': os.getpid(),
    }
