"""Director side of a command tool's call: read the files its worker wrote."""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from collections.abc import Mapping
from typing import Any

from actors.tools.registry import get_tool


def command_outcome(
    name: str,
    meta: str,
    stdout: str,
    stderr: str,
    *,
    finished: Mapping[str, Any] | None,
    error: BaseException | None,
) -> dict[str, Any]:
    """Director side: turn a finished command tool's files into an outcome.

    Args:
        name: Tool name.
        meta: The meta file that ``run_command`` wrote on the worker.
        stdout: The command's stdout file.
        stderr: The command's stderr file.
        finished: What ``run_command`` returned, if it returned.
        error: Why it did not return (the tool's command could not be
            built, ...), if so.

    Returns:
        The same mapping [`run_tool`][actors.tools.registry.run_tool] returns, plus
        ``nodes``: the nodes an MPI call was given.

    """
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(pathlib.Path(meta).read_text())
    end = time.time()
    with contextlib.suppress(OSError, ValueError):
        # Missing if the call was stopped before the command ended.
        end = float(pathlib.Path(f'{meta}.end').read_text())
    out = pathlib.Path(stdout).read_text() if pathlib.Path(stdout).exists() else ''
    outcome: dict[str, Any] = {
        'node': info.get('node'),
        'worker': info.get('worker'),
        'pid': info.get('pid'),
        'nodes': info.get('mpi_nodes'),
        'start': info.get('start', end),
        'end': end,
        'ok': False,
        'value': None,
        'error_type': None,
        'error_message': None,
    }
    if error is None and finished is not None and finished['ok']:
        parse = get_tool(name).parse
        try:
            outcome['value'] = parse(out) if parse else out
            outcome['ok'] = True
        except Exception as e:
            outcome['error_type'] = type(e).__name__
            outcome['error_message'] = f'cannot parse the output of {name}: {e}'
        return outcome
    tail = ''
    if pathlib.Path(stderr).exists():
        lines = pathlib.Path(stderr).read_text(errors='replace').splitlines()
        tail = '\n'.join(line for line in lines[-5:] if line.strip())
    if error is not None:
        outcome['error_type'] = type(error).__name__
        message = f'{error}'
    else:
        assert finished is not None
        outcome['error_type'] = 'CommandFailed'
        message = f'the command of {name} exited with status {finished.get("returncode")}'
    outcome['error_message'] = message + (f'; stderr: {tail}' if tail else '')
    return outcome
