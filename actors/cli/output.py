"""What a run leaves behind: its tables or JSON document, ``results.jsonl`` and the manifest."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from actors.cli.job_bands import job_lines
from actors.cli.plan import RunPlan
from actors.cli.report import RESULTS_NAME
from actors.client.exchange import exchange_password
from actors.client.exchange import redact
from actors.common.names import director_name
from actors.common.results import CallResult
from actors.job.partition import Partition
from actors.store.jobs import read_jobs
from actors.store.manifest import DirectorEntry
from actors.store.manifest import RunManifest

if TYPE_CHECKING:
    from actors.client.llm_planner import ModelCampaignReport
    from actors.client.planner import CampaignReport

PIPED_WIDTH = 140
"""Console columns when stdout is not a terminal (Rich's fallback of 80 is too narrow)."""


def write_results(run_dir: pathlib.Path, results: Sequence[CallResult]) -> pathlib.Path:
    """Write the client's results to ``<run_dir>/results.jsonl``, one per line."""
    path = run_dir / RESULTS_NAME
    try:
        with open(path, 'w', encoding='utf-8') as out:
            for result in results:
                out.write(json.dumps(result.to_dict()) + '\n')
    except OSError as e:
        if e.filename is not None:
            raise
        # A write through the file object (a full disk) names no file: the user needs it.
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    return path


def write_manifest(plan: RunPlan, handles: Sequence[Any]) -> None:
    """Record the run's Directors in ``<run_dir>/manifest.json``."""
    RunManifest(
        run_dir=str(plan.run_dir),
        # Never the password: whoever reads the manifest must not be able to join.
        exchange=redact(plan.exchange),
        exchange_needs_password=exchange_password(plan.exchange) is not None,
        site=plan.profile.name,
        executor=plan.executor,
        directors=[
            DirectorEntry(partition=p, agent_uid=str(h.agent_id.uid), name=director_name(p.index))
            for p, h in zip(plan.partitions, handles, strict=True)
            if isinstance(p, Partition)
        ],
        work={
            'iterations': plan.iterations,
            'duration': plan.duration,
            'timeout': plan.timeout,
            'elastic': plan.elastic,
        },
        director=plan.director.to_record(),
    ).write()


def render_json(
    plan: RunPlan,
    results: Sequence[CallResult],
    wall: float,
    campaign: CampaignReport | None = None,
) -> str:
    """One JSON document with partitions and every result (and the campaign)."""
    extra = {}
    if campaign is not None:
        report = campaign.to_dict()
        report.pop('results')
        extra['campaign'] = report
    return json.dumps(
        {
            'run_dir': str(plan.run_dir),
            'site': plan.profile.name,
            'node_source': dataclasses.asdict(plan.source),
            'wall_time': wall,
            'partitions': [
                {
                    'index': p.index,
                    'director': director_name(p.index),
                    'nodes': list(p.nodes),
                    'nodefile': p.nodefile,
                }
                for p in _resolved(plan)
            ],
            'results': [r.to_dict() for r in results],
            'extra_jobs': [dataclasses.asdict(r) for r in read_jobs(plan.run_dir).values()],
            **extra,
        },
        indent=2,
    )


def render_tables(plan: RunPlan, results: Sequence[CallResult], wall: float) -> None:
    """Print one table per Director and a summary line."""
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    partitions = _resolved(plan)
    console.print(
        f'[bold]{len(partitions)} Directors[/bold] on '
        f'{sum(p.size for p in partitions)} nodes '
        f'({plan.source.kind}: {plan.source.detail}), site {plan.profile.name}, '
        f'run dir {plan.run_dir}',
    )
    for partition in partitions:
        console.print(_director_table(partition, results))
    jobs = list(read_jobs(plan.run_dir).values())
    if jobs:
        console.print('extra batch jobs:\n' + '\n'.join(job_lines(jobs)), markup=False)
    failed = sum(not r.ok for r in results)
    console.print(
        f'{len(results)} calls, {len(results) - failed} ok, {failed} failed, wall time {wall:.2f}s',
    )


def _resolved(plan: RunPlan) -> list[Partition]:
    """The plan's partitions once its Directors started (each request resolved to its nodes)."""
    partitions = [p for p in plan.partitions if isinstance(p, Partition)]
    if len(partitions) != len(plan.partitions):
        raise RuntimeError('a Director has not resolved its partition request yet')
    return partitions


def _director_table(partition: Partition, results: Sequence[CallResult]) -> Any:
    """The table of one Director's calls."""
    from rich.markup import escape
    from rich.table import Table

    director = director_name(partition.index)
    rows = [r for r in results if r.director == director]
    ok = sum(r.ok for r in rows)
    span = (max(r.end for r in rows) - min(r.start for r in rows)) if rows else 0
    table = Table(
        title=(
            f'{director}: partition {partition.index} '
            f'{escape(str(list(partition.nodes)))} - {ok}/{len(rows)} ok, '
            f'{span:.2f}s'
        ),
        title_justify='left',
    )
    for column in ('call', 'action', 'node', 'worker', 'start', 'wall'):
        table.add_column(column, no_wrap=True)
    table.add_column('result')
    t0 = min((r.start for r in rows), default=0.0)
    for r in rows:
        table.add_row(
            r.call_id,
            r.action,
            ','.join(r.nodes) if r.nodes else (r.node or '-'),
            '-' if r.worker is None else str(r.worker),
            f'+{r.start - t0:.2f}s',
            f'{r.wall_time:.2f}s',
            _outcome(r),
        )
    return table


def _outcome(result: CallResult) -> str:
    """A result cell: the energy, ``ok``, or the error in red."""
    from rich.markup import escape

    if result.ok and isinstance(result.value, dict) and 'energy' in result.value:
        return f'energy={result.value["energy"]:.3f}'
    if result.ok:
        return 'ok'
    return f'[red]{escape(f"{result.error_type}: {result.error_message}")}[/red]'


def render_campaign(report: CampaignReport) -> None:
    """Print the campaign's rounds and measured points (and, for a model's, what it used)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from actors.client.llm_planner import ModelCampaignReport

    console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    table = Table(title=f'campaign: temperature scan with {report.tool}', title_justify='left')
    for column in ('T (K)', 'mean E_pot (eV/atom)', 'final T (K)', 'call', 'node'):
        table.add_column(column, no_wrap=True)
    for point in report.points:
        final = point['final_temperature']
        table.add_row(
            f'{point["temperature"]:.0f}',
            f'{point["mean_potential_energy"]:.4f}',
            '-' if final is None else f'{final:.0f}',
            point['call_id'],
            point['node'] or '-',
        )
    console.print(table)
    for entry in report.rounds:
        temps = ', '.join(f'{t:.0f}' for t in entry['temperatures'])
        console.print(f'round {entry["round"]}: {temps} K ({escape(entry["reasons"][0])})')
    if report.steepest:
        steep = report.steepest
        console.print(
            f'steepest dE/dT: {steep["low"]:.0f}-{steep["high"]:.0f} K, '
            f'{steep["dE_dT"] * 1000:.3f} meV/atom/K',
        )
    if isinstance(report, ModelCampaignReport):
        _render_model(console, report)


def _render_model(console: Any, report: ModelCampaignReport) -> None:
    """The model's part of a campaign: budgets used, refused calls, tokens, its answer."""
    from rich.markup import escape

    usage = report.usage
    tokens = (
        f', {usage["total_tokens"]} tokens ({usage["prompt_tokens"]} prompt, '
        f'{usage["completion_tokens"]} completion)'
        if usage
        else ''
    )
    console.print(
        f'model {escape(report.model)} at {escape(report.url)}: '
        f'{report.steps}/{report.max_steps} turns, {report.calls_sent}/{report.max_calls} '
        f'calls sent, {report.invalid_calls} refused, {report.retries} retried{tokens}',
    )
    for refused in report.invalid:
        console.print(
            f'  refused (turn {refused["step"]}) {escape(refused["name"])}: '
            f'{escape(refused["error"])}',
        )
    style = 'bold red' if report.budget_hit else 'bold'
    console.print(f'[{style}]{escape(report.stopped)}[/{style}]')
    if report.final_answer is not None:
        console.print('[bold]answer:[/bold]')
        console.print(escape(report.final_answer))
