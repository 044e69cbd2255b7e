"""The tool registry, and the worker-side wrappers that run tools.

A tool is either a Python function (run as a Parsl python app on one worker
slot) or a command line (a function that returns the command; run by
``run_command`` in a worker). A command-line tool may be an MPI tool: it runs through the
Director's ``MPIExecutor`` on whole nodes of the partition and its command
starts with ``$PARSL_MPI_PREFIX``, the launch prefix for exactly the nodes the
call was given. Every tool has typed parameters and a Google-style docstring;
[`actors.schemas`][actors.schemas] turns both into JSON schemas for LLM tool
calling.

Everything a worker runs (``run_tool``, ``run_command``) must be importable
there (the package is installed on every node) and must not depend on the
Director's state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import pathlib
import socket
import subprocess
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Literal

import psutil

from actors.errors import ConfigurationError

# Variables a launcher sets to the host it placed a rank on, most specific
# first: MPICH hydra (also under its fork launcher), Slurm, Cray PALS.
_NODE_VARIABLES = ('PMI_HOSTNAME', 'SLURMD_NODENAME', 'PALS_NODENAME')

ToolKind = Literal['python', 'command']


def current_node() -> str:
    """The node this worker was placed on by the launcher."""
    for name in _NODE_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return socket.gethostname()


@dataclasses.dataclass(frozen=True)
class Tool:
    """A registered tool.

    Attributes:
        name: Name clients call the tool by.
        func: For a ``python`` tool, the function to run; for a ``command``
            tool, a function that returns the command line to run.
        kind: ``python`` (run in the worker) or ``command`` (its command line runs).
        mpi: True if the tool runs through the MPI executor on whole nodes.
        parse: For a ``command`` tool, turns the command's stdout into the
            call's value; without it the value is the stdout text.

    """

    name: str
    func: Callable[..., Any]
    kind: ToolKind = 'python'
    mpi: bool = False
    parse: Callable[[str], Any] | None = None

    @property
    def signature(self) -> inspect.Signature:
        """The tool's parameters (a command tool's ``stdout``/``stderr`` hidden)."""
        return _parameters(self.func)


@functools.cache
def _parameters(func: Callable[..., Any]) -> inspect.Signature:
    # Checked on every call: inspect.signature costs more than the bind.
    signature = inspect.signature(func)
    return signature.replace(
        parameters=[p for n, p in signature.parameters.items() if n not in _STD_STREAMS],
    )


_STD_STREAMS = ('stdout', 'stderr', 'parsl_resource_specification')

TOOLS: dict[str, Tool | Callable[..., Any]] = {}
"""Tools a Director can run, by name (plain functions count as python tools)."""

DEFAULT_TOOL = 'mock_md'


def register_tool(
    name: str | None = None,
    *,
    kind: ToolKind = 'python',
    mpi: bool = False,
    parse: Callable[[str], Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that adds a function to [`TOOLS`][actors.tools.TOOLS].

    Args:
        name: Tool name (default: the function's name).
        kind: ``python`` or ``command``.
        mpi: The command runs under ``$PARSL_MPI_PREFIX`` on whole nodes.
        parse: Turns a command tool's stdout into its value.

    """
    if mpi and kind != 'command':
        raise ValueError('an MPI tool must be a command tool (its command uses $PARSL_MPI_PREFIX)')

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        tool = Tool(name or func.__name__, func, kind, mpi, parse)
        TOOLS[tool.name] = tool
        return func

    return register


def get_tool(name: str) -> Tool:
    """Look a tool up by name.

    Raises:
        ConfigurationError: If no tool has that name.

    """
    try:
        entry = TOOLS[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f'unknown tool {name!r}; available tools: {", ".join(sorted(TOOLS))}',
        ) from None
    return entry if isinstance(entry, Tool) else Tool(name, entry)


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Check that ``params`` fit the tool's signature before submitting.

    Raises:
        ConfigurationError: If a parameter is unknown or missing.

    """
    if not isinstance(params, Mapping):
        raise ConfigurationError(
            f'parameters for tool {name!r} must be a mapping of name to value, '
            f'got {type(params).__name__}',
        )
    signature = get_tool(name).signature
    try:
        signature.bind(**params)
    except TypeError as e:
        raise ConfigurationError(
            f'bad parameters for tool {name!r}: {e}; the tool takes {signature}',
        ) from None


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


def _where() -> dict[str, Any]:
    return {
        'node': current_node(),
        'worker': int(os.environ.get('PARSL_WORKER_RANK', '-1')),
        'pid': os.getpid(),
    }


def run_tool(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run a python tool on this worker and describe where and how it ran.

    A tool's own exception is caught here, so that the failure still reports
    the node and worker it happened on.
    """
    start = time.time()
    where = _where()
    try:
        value = get_tool(name).func(**params)
    except Exception as e:
        return _outcome(where, start, None, e)
    return _outcome(where, start, value, None)


def run_command(
    name: str,
    params: Mapping[str, Any],
    meta: str,
    stdout: str,
    stderr: str,
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
    info = {**_where(), 'start': time.time(), 'mpi_nodes': _mpi_nodes()}
    _write_whole(meta, json.dumps(info))
    with open(stdout, 'wb') as out, open(stderr, 'wb') as err:
        process = subprocess.Popen(
            command,
            shell=True,
            executable='/bin/bash',
            stdout=out,
            stderr=err,
        )
        try:
            returncode = process.wait()
        except BaseException:
            _kill_tree(process.pid)
            raise
    _write_whole(f'{meta}.end', repr(time.time()))
    return {'ok': returncode == 0, 'returncode': returncode}


def _write_whole(path: str, text: str) -> None:
    """Write ``text`` so that readers see all of it or no file: a stop can land mid-write."""
    part = f'{path}.part'
    pathlib.Path(part).write_text(text)
    os.replace(part, path)


def _kill_tree(pid: int) -> None:
    """Kill a process and everything it started (an ``mpiexec`` and its ranks)."""
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        family = [*root.children(recursive=True), root]
        for proc in family:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(family, timeout=5)


def _mpi_nodes() -> list[str] | None:
    nodes = os.environ.get('PARSL_MPI_NODELIST')
    return nodes.split(',') if nodes else None


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
        The same mapping [`run_tool`][actors.tools.run_tool] returns, plus
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


@register_tool()
def mock_md(
    duration: float = 0.0,
    temperature: float = 300.0,
    steps: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mock molecular-dynamics run: sleeps, then reports made-up energies.

    Args:
        duration: Seconds the "simulation" takes.
        temperature: Target temperature in kelvin.
        steps: Number of MD steps.
        seed: Random seed; the same inputs give the same energy.

    Returns:
        Steps, temperature and a deterministic pseudo-energy.

    """
    if duration < 0:
        raise ValueError(f'duration must be >= 0 seconds, got {duration}')
    if steps < 0:
        raise ValueError(f'steps must be >= 0, got {steps}')
    if duration:
        time.sleep(duration)
    digest = hashlib.blake2b(
        f'{temperature}:{steps}:{seed}'.encode(),
        digest_size=4,
    ).digest()
    noise = int.from_bytes(digest, 'little') / 2**32
    return {
        'steps': steps,
        'temperature': temperature,
        'energy': -1000.0 + 0.01 * temperature + noise,
    }


def _register_builtin_tools() -> None:
    from actors import md
    from actors import mpi_tools

    register_tool()(md.ase_md)
    register_tool(kind='command', mpi=True, parse=mpi_tools.parse_ranks)(mpi_tools.mpi_probe)
    register_tool(kind='command', mpi=True, parse=mpi_tools.parse_md_ensemble)(
        mpi_tools.ase_md_mpi,
    )


_register_builtin_tools()
