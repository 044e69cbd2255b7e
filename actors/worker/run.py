"""What a worker runs for a call: a python tool, or a command tool's command line.

Everything here runs inside a Parsl worker (the package is installed on every
node) and must not depend on the Director's state.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from actors.common.private import open_private
from actors.common.private import write_private
from actors.common.processes import kill_tree
from actors.common.where import where
from actors.tools.registry import get_tool


def _outcome(where: Mapping[str, Any], start: float, value: Any, error: BaseException | None):
    return {
        **where,
        'start': start,
        'end': time.time(),
        'ok': error is None,
        'value': value,
        'error_type': None if error is None else type(error).__name__,
        'error_message': None if error is None else str(error),
    }


def run_tool(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run a python tool on this worker and describe where and how it ran.

    A tool's own exception is caught here, so that the failure still reports
    the node and worker it happened on.
    """
    start = time.time()
    here = where()
    try:
        value = get_tool(name).func(**params)
    except Exception as e:
        return _outcome(here, start, None, e)
    return _outcome(here, start, value, None)


def run_command(
    name: str,
    params: Mapping[str, Any],
    meta: str,
    stdout: str,
    stderr: str,
    *,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run a command tool's command line on this worker; its exit status.

    Records where and when the call started (and, for an MPI call, the
    nodes Parsl gave it: its MPI mode put them in the environment) in the
    ``meta`` JSON file, and the end time in ``<meta>.end``. If the call is
    interrupted (cancelled, timed out) the command's processes are killed.

    Returns:
        ``ok`` (exit status 0) and ``returncode``.

    """
    command = get_tool(name).func(**params)
    environ = {**os.environ, **(env or {})}
    info = {**where(), 'start': time.time(), 'mpi_nodes': _mpi_nodes(environ)}
    write_private(meta, json.dumps(info))
    with open_private(stdout, 'wb') as out, open_private(stderr, 'wb') as err:
        process = subprocess.Popen(
            command,
            shell=True,
            executable='/bin/bash',
            env=environ,
            stdout=out,
            stderr=err,
        )
        try:
            returncode = process.wait()
        except BaseException:
            kill_tree(process.pid)
            raise
    write_private(f'{meta}.end', repr(time.time()))
    return {'ok': returncode == 0, 'returncode': returncode}


def _mpi_nodes(environ: Mapping[str, str]) -> list[str] | None:
    nodes = environ.get('PARSL_MPI_NODELIST')
    return nodes.split(',') if nodes else None
