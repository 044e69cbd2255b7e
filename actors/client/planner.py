"""A mock planner: an Academy agent that runs a small campaign through the dispatcher.

It stands in for an LLM planner. It writes each call the way an LLM would,
as a JSON tool call (``{"name": ..., "arguments": "<JSON string>"}``), sends it
through a [`Dispatcher`][actors.client.dispatcher.Dispatcher] (schema validation,
then routing to a Director with free capacity), reads the results and picks
the next calls.

The campaign scans the temperature of a small crystal with the real MD tool:
it starts with a coarse grid, then, each round, bisects the temperature
intervals where the mean potential energy changes fastest (the largest
``dE/dT``, a rough heat capacity), where a phase change would show.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from academy.agent import Agent
from academy.agent import action

from actors.client.dispatcher import Dispatcher
from actors.common.errors import ConfigurationError
from actors.common.results import CallResult

if TYPE_CHECKING:
    from actors.calling.calls import DirectorHandle

logger = logging.getLogger(__name__)

DEFAULT_TEMPERATURES = (300.0, 1200.0, 2100.0, 3000.0)


@dataclasses.dataclass
class CampaignReport:
    """What a campaign did.

    Attributes:
        tool: The MD tool it called.
        rounds: Per round: its temperatures and why they were chosen.
        points: One entry per successful call: temperature, mean potential
            energy per atom (eV), final temperature, where it ran.
        steepest: The interval with the largest ``dE/dT`` at the end.
        tool_calls: Every tool call sent, as JSON-ready dicts.
        results: Every call's result, in the order sent.

    """

    tool: str
    rounds: list[dict[str, Any]]
    points: list[dict[str, Any]]
    steepest: dict[str, float] | None
    tool_calls: list[dict[str, Any]]
    results: list[CallResult]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        data = dataclasses.asdict(self)
        data['results'] = [r.to_dict() for r in self.results]
        return data


def next_temperatures(
    points: Sequence[tuple[float, float]],
    count: int,
    done: set[float],
    resolution: float = 1.0,
) -> list[tuple[float, float, float]]:
    """Midpoints of the ``count`` intervals with the largest ``|dE/dT|``.

    Args:
        points: ``(temperature, energy)`` pairs measured so far.
        count: How many new temperatures to pick.
        done: Temperatures already measured (never repeated).
        resolution: Intervals narrower than twice this are not split.

    Returns:
        ``(new temperature, interval low, interval high)``, steepest first.

    """
    ordered = sorted(points)
    slopes = []
    for (t0, e0), (t1, e1) in itertools.pairwise(ordered):
        if t1 - t0 >= 2 * resolution:
            slopes.append((abs(e1 - e0) / (t1 - t0), t0, t1))
    slopes.sort(reverse=True)
    chosen: list[tuple[float, float, float]] = []
    for _, low, high in slopes:
        middle = round((low + high) / 2 / resolution) * resolution
        if middle not in done and len(chosen) < count:
            chosen.append((middle, low, high))
    return chosen


def steepest_interval(measured: dict[float, float]) -> dict[str, float] | None:
    """The measured interval with the largest ``|dE/dT|``: ``{"low", "high", "dE_dT"}``."""
    steepest = next_temperatures(sorted(measured.items()), 1, set())
    if len(measured) < 2 or not steepest:
        return None
    _, low, high = steepest[0]
    return {'low': low, 'high': high, 'dE_dT': (measured[high] - measured[low]) / (high - low)}


class Planner(Agent):
    """Runs a temperature-scan campaign on the Directors through a dispatcher.

    Args:
        directors: Handles of the Directors.
        tool: MD tool to call (``ase_md``; ``mock_md`` for a quick dry run).
        temperatures: First round's temperatures (kelvin).
        rounds: Refinement rounds after the first.
        per_round: New temperatures per refinement round.
        arguments: Extra arguments of every call (e.g. ``steps``, ``size``).

    """

    def __init__(
        self,
        directors: Sequence[DirectorHandle],
        *,
        tool: str = 'ase_md',
        temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
        rounds: int = 2,
        per_round: int = 2,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(temperatures) < 2:
            raise ConfigurationError('a temperature scan needs at least 2 starting temperatures')
        if rounds < 0 or per_round < 1:
            raise ConfigurationError(
                f'rounds must be >= 0 and per_round >= 1, got {rounds} and {per_round}',
            )
        self.directors = list(directors)
        self.tool = tool
        self.temperatures = [float(t) for t in temperatures]
        self.rounds = rounds
        self.per_round = per_round
        self.arguments = dict(arguments or {})

    def _tool_call(self, temperature: float) -> dict[str, Any]:
        arguments = {**self.arguments, 'temperature': temperature}
        # As an LLM writes it: the arguments are a JSON string.
        return {'name': self.tool, 'arguments': json.dumps(arguments)}

    @action
    async def run_campaign(self) -> CampaignReport:
        """Scan temperatures, refining where the energy changes fastest.

        Returns:
            The rounds, measured points and every call's result.

        Raises:
            ConfigurationError: If the dispatcher rejects the planner's calls.

        """
        dispatcher = Dispatcher(self.directors)
        report = CampaignReport(self.tool, [], [], None, [], [])
        measured: dict[float, float] = {}
        batch = [(t, 'initial grid') for t in self.temperatures]
        for round_index in range(self.rounds + 1):
            if not batch:
                break
            calls = [self._tool_call(t) for t, _ in batch]
            report.rounds.append(
                {
                    'round': round_index,
                    'temperatures': [t for t, _ in batch],
                    'reasons': [why for _, why in batch],
                },
            )
            report.tool_calls.extend(calls)
            results = await dispatcher.dispatch_many(calls)
            for (temperature, _), result in zip(batch, results, strict=True):
                report.results.append(result)
                energy = _energy(result)
                if energy is None:
                    logger.warning('call at %.0f K failed: %s', temperature, result.error_message)
                    continue
                measured[temperature] = energy
                report.points.append(
                    {
                        'temperature': temperature,
                        'mean_potential_energy': energy,
                        'final_temperature': result.value.get('final_temperature'),
                        'call_id': result.call_id,
                        'director': result.director,
                        'node': result.node,
                    },
                )
            picks = next_temperatures(sorted(measured.items()), self.per_round, set(measured))
            batch = [
                (t, f'bisects {low:.0f}-{high:.0f} K, the steepest dE/dT') for t, low, high in picks
            ]
        report.steepest = steepest_interval(measured)
        report.points.sort(key=lambda p: p['temperature'])
        return report


def _energy(result: CallResult) -> float | None:
    if not result.ok or not isinstance(result.value, dict):
        return None
    value = result.value
    energy = value.get('mean_potential_energy', value.get('energy'))
    return float(energy) if energy is not None else None
