"""hpc-tool-calling: Academy Directors that share the nodes of one HPC batch job.

The public API, importable from ``actors`` alone::

    from actors import launch_directors, wait_ready, call, simulated_nodes
    from actors import split_nodes, write_partitions, load_site

Names are loaded on first use (PEP 562): Parsl workers import
``actors.worker`` and ``actors.tools`` in every worker process, and must not
pay for the Director, Academy or the client on the way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from actors.calling.calls import DirectorFailedError
    from actors.calling.calls import call
    from actors.calling.calls import call_resilient
    from actors.client.dispatcher import Dispatcher
    from actors.client.launch import launch_directors
    from actors.client.launch import wait_ready
    from actors.common.errors import CallError
    from actors.common.errors import ConfigurationError
    from actors.common.errors import ExecutionError
    from actors.common.errors import HpcToolCallingError
    from actors.common.results import CallResult
    from actors.common.results import DirectorStatus
    from actors.director.agent import Director
    from actors.director.options import DirectorOptions
    from actors.job.partition import Partition
    from actors.job.partition import PartitionRequest
    from actors.job.partition import discover_nodes
    from actors.job.partition import read_nodefile
    from actors.job.partition import simulated_nodes
    from actors.job.partition import split_nodes
    from actors.job.partition import write_partitions
    from actors.job.walltime import Walltime
    from actors.site.profile import SiteProfile
    from actors.site.profile import load_site

_EXPORTS = {
    'CallError': 'actors.common.errors',
    'CallResult': 'actors.common.results',
    'ConfigurationError': 'actors.common.errors',
    'Director': 'actors.director.agent',
    'DirectorFailedError': 'actors.calling.calls',
    'DirectorOptions': 'actors.director.options',
    'DirectorStatus': 'actors.common.results',
    'Dispatcher': 'actors.client.dispatcher',
    'ExecutionError': 'actors.common.errors',
    'HpcToolCallingError': 'actors.common.errors',
    'Partition': 'actors.job.partition',
    'PartitionRequest': 'actors.job.partition',
    'SiteProfile': 'actors.site.profile',
    'Walltime': 'actors.job.walltime',
    'call': 'actors.calling.calls',
    'call_resilient': 'actors.calling.calls',
    'discover_nodes': 'actors.job.partition',
    'launch_directors': 'actors.client.launch',
    'load_site': 'actors.site.profile',
    'read_nodefile': 'actors.job.partition',
    'simulated_nodes': 'actors.job.partition',
    'split_nodes': 'actors.job.partition',
    'wait_ready': 'actors.client.launch',
    'write_partitions': 'actors.job.partition',
}

__all__ = [
    'CallError',
    'CallResult',
    'ConfigurationError',
    'Director',
    'DirectorFailedError',
    'DirectorOptions',
    'DirectorStatus',
    'Dispatcher',
    'ExecutionError',
    'HpcToolCallingError',
    'Partition',
    'PartitionRequest',
    'SiteProfile',
    'Walltime',
    'call',
    'call_resilient',
    'discover_nodes',
    'launch_directors',
    'load_site',
    'read_nodefile',
    'simulated_nodes',
    'split_nodes',
    'wait_ready',
    'write_partitions',
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
