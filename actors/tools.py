"""Tools that Directors run on their partition's workers.

Everything here executes inside a Parsl worker process, so it must be
importable there (the package is installed on every node) and must not
depend on the Director's state.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import socket
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from actors.errors import ConfigurationError

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


TOOLS: dict[str, Callable[..., Any]] = {'mock_md': mock_md}
"""Tools a Director can run, by name."""

DEFAULT_TOOL = 'mock_md'


def get_tool(name: str) -> Callable[..., Any]:
    """Look a tool up by name.

    Raises:
        ConfigurationError: If no tool has that name.

    """
    try:
        return TOOLS[name]
    except KeyError:
        raise ConfigurationError(
            f'unknown tool {name!r}; available tools: {", ".join(sorted(TOOLS))}',
        ) from None


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
    signature = inspect.signature(get_tool(name))
    try:
        signature.bind(**params)
    except TypeError as e:
        raise ConfigurationError(
            f'bad parameters for tool {name!r}: {e}; the tool takes {signature}',
        ) from None


def run_tool(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run a tool on this worker and describe where and how it ran.

    A tool's own exception is caught here, so that the failure still reports
    the node and worker it happened on.
    """
    start = time.time()
    where = {
        'node': current_node(),
        'worker': int(os.environ.get('PARSL_WORKER_RANK', '-1')),
        'pid': os.getpid(),
    }
    try:
        value = TOOLS[name](**params)
    except Exception as e:
        return {
            **where,
            'start': start,
            'end': time.time(),
            'ok': False,
            'value': None,
            'error_type': type(e).__name__,
            'error_message': str(e),
        }
    return {
        **where,
        'start': start,
        'end': time.time(),
        'ok': True,
        'value': value,
        'error_type': None,
        'error_message': None,
    }
