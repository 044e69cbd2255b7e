"""Director side of a command tool's call: read the files its worker wrote."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import pathlib
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any
from typing import TypedDict

from actors.common.private import private_dir
from actors.director.outcomes import outcome
from actors.execution.interchange import interchange_loss
from actors.tools.registry import get_tool
from actors.worker.control import STOP_ERROR_TYPES
from actors.worker.control import CancelFiles
from actors.worker.control import Control

logger = logging.getLogger(__name__)


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


class CallFiles(TypedDict):
    """One command call's files: ``run_command``'s keyword arguments."""

    meta: str
    out_file: str
    err_file: str


class CommandFiles:
    """Where one Director's command calls write their meta file, stdout and stderr.

    Args:
        directory: The directory of the files (created on first use).

    """

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self._numbers = itertools.count()

    def next(self, name: str) -> CallFiles:
        """The files of a new call of tool ``name`` (``run_command``'s keyword arguments)."""
        private_dir(self.directory)
        stem = self.directory / f'{name}-{next(self._numbers)}'
        return {'meta': f'{stem}.json', 'out_file': f'{stem}.out', 'err_file': f'{stem}.err'}


def command_result(
    app_future: Future[Any],
    name: str,
    files: CallFiles,
    control: Control,
    cancels: CancelFiles,
) -> Future[Any]:
    """A future of a command call's outcome, the same mapping a python tool's call gives.

    The outcome future carries the Parsl call as ``.call`` (its attempts,
    and why a lost call was lost).
    """
    meta, stdout, stderr = files['meta'], files['out_file'], files['err_file']
    result: Future[Any] = Future()
    result.call = app_future  # type: ignore[attr-defined]

    def settle(done: Future[Any]) -> None:
        if result.done():
            return
        if done.cancelled():
            result.cancel()
            return
        if interchange_loss(done.exception()) is not None:
            # No outcome to read: the call runs again on a new DFK.
            result.set_exception(done.exception())
            return
        try:
            value = outcome_of(done)
        except Exception as e:
            # The call must still be answered: a result saying why, not a hang.
            logger.exception('cannot read the outcome of command tool %s', name)
            if not result.done():
                result.set_exception(e)
            return
        if not result.done():
            result.set_result(value)

    def outcome_of(done: Future[Any]) -> dict[str, Any]:
        error = done.exception()
        finished = None if error is not None else outcome(done)
        if finished is None:
            stop = cancels.stopped(control)
        elif finished['status'] in STOP_ERROR_TYPES:
            stop = (finished['status'], finished['error_message'])
        else:
            stop = None
        value = command_outcome(name, meta, stdout, stderr, finished=finished, error=error)
        if stop is not None:
            value.update(
                ok=False,
                value=None,
                status=stop[0],
                error_type=STOP_ERROR_TYPES[stop[0]],
                error_message=stop[1],
            )
        return value

    # A cancelled outcome (its action was cancelled) leaves the Parsl call
    # alone: a submitted call cannot be cancelled; calls stop through
    # their cancel files (actors.worker.control).
    app_future.add_done_callback(settle)
    return result
