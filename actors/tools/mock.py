"""The mock MD tool: sleeps, then reports made-up energies (the default, for quick runs)."""

from __future__ import annotations

import hashlib
import time
from typing import Any


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
