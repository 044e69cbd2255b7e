"""A planner on a real model: an Academy agent whose campaign an LLM drives through tool calls.

The model gets a system prompt with the campaign's goal (scan the temperature
of a crystal with ``--tool`` and find where the mean potential energy changes
fastest) and the tools' OpenAI schemas (``launch.py tools --format openai``).
Each turn, the tool calls it emits are checked against the schemas; the valid
ones go out together, concurrently, through a
[`Dispatcher`][actors.client.dispatcher.Dispatcher], and every call's result
(or, for a call that did not run, its error, naming the bad argument and what
is valid) goes back as a ``tool`` message. The campaign ends when the model
answers without tool calls, or when a budget is spent: turns
(``--llm-max-steps``) or tool calls (``--llm-max-calls``).

The model is reached with the ``openai`` SDK at any OpenAI-compatible
endpoint (``actors.client.model_endpoint``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from academy.agent import Agent
from academy.agent import action

from actors.client.dispatcher import Dispatcher
from actors.client.model_endpoint import ModelEndpointError
from actors.client.model_endpoint import ModelOptions
from actors.client.model_endpoint import explain
from actors.client.model_endpoint import open_client
from actors.client.model_endpoint import request_deadline
from actors.client.model_reply import USAGE_KEYS
from actors.client.model_reply import ModelReplyError
from actors.client.model_reply import ModelTurn
from actors.client.model_reply import ToolCallRequest
from actors.client.model_reply import read_completion
from actors.client.planner import DEFAULT_TEMPERATURES
from actors.client.planner import CampaignReport
from actors.client.planner import steepest_interval
from actors.client.tool_messages import error_text
from actors.client.tool_messages import result_text
from actors.client.tool_messages import results_text
from actors.client.tool_messages import statuses_text
from actors.common.errors import ConfigurationError
from actors.common.errors import quoted
from actors.common.results import CallResult
from actors.common.results import DirectorStatus
from actors.director.specs import export
from actors.director.specs import validate_call

if TYPE_CHECKING:
    from actors.calling.calls import DirectorHandle

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = """\
You plan and run a computational campaign on an HPC batch job. Each tool call runs on a \
worker of the job's nodes. All tool calls of one turn run at the same time, so put every \
call you can decide on now into the same turn. Each result comes back as JSON \
(ok, value, director, node, wall_time). A result with "ran": false did not run: its error \
names the bad argument and what is valid; fix it and call again.

Budget: at most {max_steps} turns and {max_calls} tool calls in all. When you have the \
answer, or the budget is nearly spent, reply without tool calls."""

GOAL_PROMPT = """\
Goal: scan the temperature of the crystal that `{tool}` simulates and find the temperature \
interval where its mean potential energy per atom (`mean_potential_energy`, or `energy`) \
changes fastest with temperature: the largest |dE/dT|, where a phase change would show.

Call `{tool}` with a `temperature` in kelvin and, in every call, these arguments: \
{arguments}. Start with a coarse grid ({grid} K) in one turn, then bisect the intervals \
with the largest |dE/dT|, a few at a time.

Final answer: the interval (low-high K), its dE/dT in eV/atom/K, and the temperatures and \
energies you measured."""


@dataclasses.dataclass
class ModelCampaignReport(CampaignReport):
    """What a model-driven campaign did: a [`CampaignReport`][actors.client.planner.CampaignReport].

    Attributes:
        model: The model's name.
        url: The endpoint's URL (without credentials).
        final_answer: The model's answer without tool calls; ``None`` if a
            budget ended the campaign first.
        steps: Model turns taken (chat completions).
        max_steps: The turn budget.
        calls_sent: Tool calls sent to the Directors.
        max_calls: The tool call budget.
        invalid_calls: Tool calls refused before anything ran (bad or
            malformed arguments, an unknown tool, no partition fits).
        retries: Calls of a tool that follow a refused call of the same
            tool in an earlier turn (the model trying again).
        budget_hit: ``steps`` or ``calls`` if that budget ended the
            campaign, else ``None``.
        stopped: Why the campaign ended, in words.
        usage: Tokens used, summed over turns (``prompt_tokens``,
            ``completion_tokens``, ``total_tokens``); ``None`` if the server
            does not say.
        invalid: Every refused call: turn, id, tool, arguments, error.

    """

    model: str = ''
    url: str = ''
    final_answer: str | None = None
    steps: int = 0
    max_steps: int = 0
    calls_sent: int = 0
    max_calls: int = 0
    invalid_calls: int = 0
    retries: int = 0
    budget_hit: str | None = None
    stopped: str = ''
    usage: dict[str, int] | None = None
    invalid: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Call:
    """One tool call of a turn: what the model asked, and what it gets back."""

    id: str
    name: str
    arguments: str
    parsed: dict[str, Any] | None = None
    answer: str = ''


class ModelCampaign:
    """The loop of one model-driven campaign: model turn, tool calls, results, repeat.

    Args:
        dispatcher: Routes the calls to the Directors.
        client: The ``openai`` SDK's async client for the endpoint.
        options: Model, URL and budgets.
        tool: The campaign's MD tool.
        arguments: Arguments every call should carry besides the temperature.
        offered: Functions the model may call (default: ``tool`` and ``status``).

    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        client: Any,
        options: ModelOptions,
        *,
        tool: str,
        arguments: dict[str, Any],
        offered: Sequence[str] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.client = client
        self.options = options
        self.tool = tool
        self.arguments = dict(arguments)
        self.offered = list(offered or (tool, 'status'))
        by_name = {spec['function']['name']: spec for spec in export('openai')}
        missing = [name for name in self.offered if name not in by_name]
        if missing:
            raise ConfigurationError(f'no tool named {", ".join(missing)}; see launch.py tools')
        self.schemas = [by_name[name] for name in self.offered]
        self.report = ModelCampaignReport(
            tool,
            [],
            [],
            None,
            [],
            [],
            model=options.model,
            url=options.shown_url,
            max_steps=options.max_steps,
            max_calls=options.max_calls,
        )
        self._refused: collections.Counter[str] = collections.Counter()

    def messages(self) -> list[dict[str, Any]]:
        """The conversation's opening: system prompt and goal."""
        options = self.options
        return [
            {
                'role': 'system',
                'content': SYSTEM_PROMPT.format(
                    max_steps=options.max_steps,
                    max_calls=options.max_calls,
                ),
            },
            {
                'role': 'user',
                'content': GOAL_PROMPT.format(
                    tool=self.tool,
                    arguments=json.dumps(self.arguments),
                    grid=', '.join(f'{t:.0f}' for t in DEFAULT_TEMPERATURES),
                ),
            },
        ]

    async def run(self) -> ModelCampaignReport:
        """Run turns until the model answers or a budget is spent.

        Raises:
            ModelEndpointError: If the endpoint fails (one line naming its URL).

        """
        report = self.report
        messages = self.messages()
        for step in range(1, self.options.max_steps + 1):
            turn = await self._complete(messages)
            report.steps = step
            if not turn.tool_calls:
                report.final_answer = turn.content or ''
                report.stopped = f'the model answered after {step} turn(s)'
                break
            calls = [self._read(step, i, c) for i, c in enumerate(turn.tool_calls)]
            messages.append(_assistant(turn, calls))
            await self._run_turn(step, turn.content, calls)
            messages.extend(
                {'role': 'tool', 'tool_call_id': c.id, 'content': c.answer} for c in calls
            )
            if report.budget_hit:
                break
        else:
            report.budget_hit = 'steps'
            report.stopped = (
                f'step budget spent: {self.options.max_steps} turn(s) without a final answer'
            )
        self._finish()
        logger.info('model campaign: %s', report.stopped)
        return report

    async def _complete(self, messages: list[dict[str, Any]]) -> ModelTurn:
        """One chat completion; its first choice. Counts the tokens.

        Raises:
            ModelEndpointError: If the request fails or its answer is malformed.

        """
        import openai

        # The SDK's timeout bounds each read, so a server that trickles a byte at a time
        # never trips it: the whole request (with the SDK's retries) gets a deadline too.
        deadline = request_deadline(self.options)
        try:
            async with asyncio.timeout(deadline):
                # The raw body: the SDK does not check a completion's shape, so a bad one
                # would fail later, far from the reply (read_completion says what is wrong).
                response = await self.client.chat.completions.with_raw_response.create(
                    model=self.options.model,
                    messages=messages,
                    tools=self.schemas,
                    tool_choice='auto',
                )
                body = response.text
        except TimeoutError:
            raise ModelEndpointError(
                f'the model endpoint {self.options.shown_url} did not finish its answer within '
                f'{deadline:g}s (--llm-timeout {self.options.timeout:g}s per attempt)',
            ) from None
        except openai.OpenAIError as e:
            raise ModelEndpointError(explain(self.options, e)) from None
        try:
            turn = read_completion(body, response.headers.get('content-type', ''))
        except ModelReplyError as e:
            raise ModelEndpointError(f'the model endpoint {self.options.shown_url} {e}') from None
        if turn.usage is not None:
            total = self.report.usage or {}
            for key in USAGE_KEYS:
                total[key] = total.get(key, 0) + turn.usage.get(key, 0)
            self.report.usage = total
        return turn

    def _read(self, step: int, index: int, request: ToolCallRequest) -> _Call:
        """A tool call of the turn, with an id even if the server left it out."""
        return _Call(request.id or f'call_{step}_{index}', request.name, request.arguments)

    async def _run_turn(self, step: int, content: str | None, calls: list[_Call]) -> None:
        """Check a turn's calls, send the valid ones together, fill in every answer."""
        report = self.report
        refused_before = collections.Counter(self._refused)
        for call in calls:
            if refused_before[call.name] > 0:
                refused_before[call.name] -= 1
                self._refused[call.name] -= 1
                report.retries += 1
            try:
                call.parsed = self._check(call)
            except ConfigurationError as e:
                self._refuse(step, call, str(e))
        valid = [c for c in calls if c.parsed is not None]
        room = max(0, self.options.max_calls - report.calls_sent)
        if len(valid) > room:
            report.budget_hit = 'calls'
            report.stopped = f'call budget spent: {self.options.max_calls} tool call(s) sent'
            for call in valid[room:]:
                call.answer = error_text(
                    f'not run: the call budget ({self.options.max_calls} calls) is spent',
                )
            valid = valid[:room]
        report.calls_sent += len(valid)
        logger.info(
            'model turn %d: %d tool call(s), %d sent, %d refused',
            step,
            len(calls),
            len(valid),
            sum(1 for c in calls if c.parsed is None),
        )
        answers = await asyncio.gather(
            *(self.dispatcher.dispatch({'name': c.name, 'arguments': c.parsed}) for c in valid),
            return_exceptions=True,
        )
        temperatures: list[float] = []
        for call, answer in zip(valid, answers, strict=True):
            temperatures += self._take_answer(step, call, answer)
        if temperatures:
            reason = (content or '').strip().replace('\n', ' ') or f'model turn {step}'
            reason = reason if len(reason) <= 160 else reason[:157] + '...'
            report.rounds.append(
                {
                    'round': step,
                    'temperatures': temperatures,
                    'reasons': [reason] * len(temperatures),
                },
            )

    def _take_answer(self, step: int, call: _Call, answer: Any) -> list[float]:
        """Fill in ``call``'s answer for the model; the temperatures its results add."""
        report = self.report
        if isinstance(answer, ConfigurationError):
            # Refused when routed (no partition fits): nothing was submitted.
            report.calls_sent -= 1
            self._refuse(step, call, str(answer))
            return []
        if isinstance(answer, BaseException):
            raise answer
        report.tool_calls.append({'id': call.id, 'name': call.name, 'arguments': call.arguments})
        if isinstance(answer, CallResult):
            report.results.append(answer)
            call.answer = result_text(answer)
            return self._record(answer)
        if answer and all(isinstance(a, CallResult) for a in answer):
            # A batch (md_sim_batch offered to the model): every result, in order.
            batch = [a for a in answer if isinstance(a, CallResult)]
            report.results.extend(batch)
            call.answer = results_text(batch)
            return [t for result in batch for t in self._record(result)]
        call.answer = statuses_text([a for a in answer if isinstance(a, DirectorStatus)])
        return []

    def _check(self, call: _Call) -> dict[str, Any]:
        """The call's arguments, checked against its schema.

        Raises:
            ConfigurationError: Naming the bad argument and what is valid.

        """
        if call.name not in self.offered:
            raise ConfigurationError(
                f'unknown tool {quoted(call.name)}; available: {", ".join(self.offered)}',
            )
        return validate_call(call.name, call.arguments)

    def _refuse(self, step: int, call: _Call, error: str) -> None:
        call.parsed = None
        call.answer = error_text(error)
        self._refused[call.name] += 1
        self.report.invalid_calls += 1
        shown = call.arguments if len(call.arguments) <= 500 else call.arguments[:497] + '...'
        self.report.invalid.append(
            {'step': step, 'id': call.id, 'name': call.name, 'arguments': shown, 'error': error},
        )
        logger.info('model turn %d: refused %s: %s', step, call.name, error)

    def _record(self, result: CallResult) -> list[float]:
        """Add a measured point for a successful call of the campaign tool."""
        value = result.value if isinstance(result.value, dict) else {}
        energy = value.get('mean_potential_energy', value.get('energy'))
        temperature = result.params.get(
            'temperature',
            value.get('temperature_target', value.get('temperature')),
        )
        if not result.ok or result.tool != self.tool or energy is None or temperature is None:
            return []
        self.report.points.append(
            {
                'temperature': float(temperature),
                'mean_potential_energy': float(energy),
                'final_temperature': value.get('final_temperature'),
                'call_id': result.call_id,
                'director': result.director,
                'node': result.node,
            },
        )
        return [float(temperature)]

    def _finish(self) -> None:
        """Sort the points and name the steepest interval."""
        report = self.report
        report.points.sort(key=lambda p: p['temperature'])
        measured = {p['temperature']: p['mean_potential_energy'] for p in report.points}
        report.steepest = steepest_interval(measured)


def _assistant(turn: ModelTurn, calls: Sequence[_Call]) -> dict[str, Any]:
    """The model's turn as it goes back into the conversation (with the ids used)."""
    said: dict[str, Any] = {
        'role': 'assistant',
        'tool_calls': [
            {'id': c.id, 'type': 'function', 'function': {'name': c.name, 'arguments': c.arguments}}
            for c in calls
        ],
    }
    if turn.content:
        said['content'] = turn.content
    return said


class LLMPlanner(Agent):
    """Runs a temperature-scan campaign that a model plans, on the Directors.

    Args:
        directors: Handles of the Directors.
        options: The model's endpoint, name and budgets (the API key is read
            from ``options.key_env`` where the agent runs).
        tool: MD tool of the campaign (``ase_md``; ``mock_md`` for a dry run).
        arguments: Arguments the model is asked to give every call (e.g. ``steps``).
        offered: Functions the model may call (default: ``tool`` and ``status``).

    """

    def __init__(
        self,
        directors: Sequence[DirectorHandle],
        options: ModelOptions,
        *,
        tool: str = 'ase_md',
        arguments: dict[str, Any] | None = None,
        offered: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.directors = list(directors)
        self.options = options
        self.tool = tool
        self.arguments = dict(arguments or {})
        self.offered = list(offered) if offered else None

    @action
    async def run_campaign(self) -> ModelCampaignReport:
        """Let the model run the campaign until it answers or a budget is spent.

        Returns:
            The points measured, the model's answer, steps, calls and tokens used.

        Raises:
            ModelEndpointError: If the model endpoint fails.
            ConfigurationError: If no API key is set for a remote endpoint.

        """
        client = open_client(self.options)
        try:
            campaign = ModelCampaign(
                Dispatcher(self.directors),
                client,
                self.options,
                tool=self.tool,
                arguments=self.arguments,
                offered=self.offered,
            )
            return await campaign.run()
        finally:
            await client.close()
