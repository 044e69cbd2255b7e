"""The mock MD tool: sleeps, then reports made-up energies (the default, for quick runs)."""

from __future__ import annotations

import hashlib
import time
from typing import Annotated
from typing import Any

from annotated_types import Ge
from annotated_types import Le

MAX_DURATION = 30 * 86400.0
"""Longest mock run (30 days): longer than any allocation, far below what ``sleep`` overflows at."""


def mock_md(
    duration: Annotated[float, Ge(0), Le(MAX_DURATION)] = 0.0,
    temperature: float = 300.0,
    steps: Annotated[int, Ge(0)] = 1000,
    seed: int = 0,
    fail: str = '',
) -> dict[str, Any]:
    """Mock molecular-dynamics run: sleeps, then reports made-up energies.

    Args:
        duration: Seconds the "simulation" takes.
        temperature: Target temperature in kelvin.
        steps: Number of MD steps.
        seed: Random seed; the same inputs give the same energy.
        fail: If not empty, the run raises ``RuntimeError(fail)`` after its
            duration (to try out how a failed call is reported).

    Returns:
        Steps, temperature and a deterministic pseudo-energy.

    """
    if duration < 0:
        raise ValueError(f'duration must be >= 0 seconds, got {duration}')
    if steps < 0:
        raise ValueError(f'steps must be >= 0, got {steps}')
    if duration:
        time.sleep(duration)
    if fail:
        raise RuntimeError(fail)
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
