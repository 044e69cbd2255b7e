"""``launch.py``'s entry point: a subcommand, or a run of Directors on the batch job."""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar

from globus_compute_sdk.errors import TaskExecutionFailed

from actors.calling.calls import DirectorFailedError
from actors.cli.output import render_campaign
from actors.cli.output import render_json
from actors.cli.output import render_tables
from actors.cli.output import write_results
from actors.cli.parser import build_parser
from actors.cli.plan import RunPlan
from actors.cli.plan import plan_run
from actors.cli.run import run
from actors.common.errors import ConfigurationError
from actors.common.errors import describe_os_error
from actors.common.results import CallResult
from actors.store.run_lock import release_run_dir

if TYPE_CHECKING:
    from actors.client.planner import CampaignReport

SUBCOMMANDS: dict[str, str] = {
    'endpoint-config': 'actors.cli.commands.endpoint_config',
    'status': 'actors.cli.commands.status',
    'report': 'actors.cli.commands.report',
    'tools': 'actors.cli.commands.tools',
    'mcp': 'actors.cli.commands.mcp',
    'cleanup': 'actors.cli.commands.cleanup',
}
"""``launch.py NAME ...`` runs ``main(rest_of_argv)`` of module ``SUBCOMMANDS[NAME]``.

No name runs the job. A subcommand's module is imported only when it runs,
so a run does not load what only one subcommand needs (the endpoint templates
with YAML and Jinja, matplotlib, the status query).
"""

PRIVATE_UMASK = 0o077
"""No access for the group and others to what a run creates."""

T = TypeVar('T')

_FAILURES = (DirectorFailedError, TimeoutError, OSError, ConnectionError)
"""Errors that end a started run; its journals hold what finished, for --resume."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        command = importlib.import_module(SUBCOMMANDS[argv[0]])
        return command.main(argv[1:])
    return run_job(argv)


def run_job(argv: list[str]) -> int:
    """``launch.py [FLAGS]``: plan the run, run it, write and print its results."""
    # Everything a run writes (and what Parsl and the Director processes it
    # starts write) is private to the user, whatever the umask said.
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s',
    )
    try:
        plan = plan_run(args)
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    except OSError as e:
        # The run directory cannot be laid out (a full disk, a read-only file system).
        parser.exit(
            2,
            f'{parser.prog}: error: cannot prepare the run: {describe_os_error(e)}; '
            'nothing was started\n',
        )
    try:
        return _drive(args, parser, plan)
    finally:
        release_run_dir(plan.run_dir)


def _drive(args: argparse.Namespace, parser: argparse.ArgumentParser, plan: RunPlan) -> int:
    """Run the planned work; its exit status (the run dir is locked throughout)."""
    start = time.time()
    try:
        on_start, on_directors = _announcer(plan, parser.prog), _counter(plan, parser.prog)
        outcome = asyncio.run(
            until_terminated(run(plan, on_start=on_start, on_directors=on_directors))
        )
    except KeyboardInterrupt:
        finish = '' if plan.campaign else f'; finish with: {parser.prog} --resume {plan.run_dir}'
        print(
            f'{parser.prog}: stopped; finished calls are in {plan.run_dir}/journal{finish}',
            file=sys.stderr,
        )
        return 130
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    except _FAILURES as e:
        return _failed(parser.prog, plan, e)
    except TaskExecutionFailed as e:
        # A Director on a Globus Compute endpoint raised; its last line names the error.
        print(f'{parser.prog}: failed on the endpoint: {_last_line(e)}', file=sys.stderr)
        return 1
    wall = time.time() - start
    try:
        return _report(args, plan, outcome, wall, parser.prog)
    except OSError as e:  # results.jsonl on a full disk: the journals have everything
        return _failed(parser.prog, plan, e)


async def until_terminated(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; SIGTERM stops it as Ctrl-C does (``KeyboardInterrupt``).

    A batch scheduler ends a cancelled or timed-out job with SIGTERM to every
    process (``scancel``, ``qdel``): the run's own cleanup then stops the
    Directors, and the user learns how to finish the run.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated = False

    def on_terminate() -> None:
        nonlocal terminated
        terminated = True
        if task is not None:
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_terminate)
    try:
        return await work
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _failed(prog: str, plan: RunPlan, error: BaseException) -> int:
    """Say in one line why the run ended, where its results are and how to finish it."""
    if isinstance(error, OSError) and error.errno is not None:
        reason = describe_os_error(error)  # the path and the system's reason
    else:
        reason = str(error)
    # --resume finishes a run's fixed calls; a campaign's next calls depend on its planner.
    finish = (
        'run the campaign again to go on'
        if plan.campaign
        else f'finish with: {prog} --resume {plan.run_dir}'
    )
    print(
        f'{prog}: failed: {type(error).__name__}: {reason}; finished calls are in '
        f'{plan.run_dir}/journal; {finish}',
        file=sys.stderr,
    )
    return 1


def _report(
    args: argparse.Namespace,
    plan: RunPlan,
    outcome: list[CallResult] | CampaignReport,
    wall: float,
    prog: str,
) -> int:
    """Write ``results.jsonl``, print the tables or JSON; 0 if every call succeeded.

    Calls the run could not finish (cancelled by the walltime drain, lost,
    refused) get one line on stderr with the ``--resume`` that finishes them.
    """
    if isinstance(outcome, list):
        campaign, results = None, outcome
    else:
        campaign, results = outcome, outcome.results
    write_results(plan.run_dir, results)
    if args.json:
        print(render_json(plan, results, wall, campaign))
    else:
        render_tables(plan, results, wall)
        if campaign is not None:
            render_campaign(campaign)
    unfinished = collections.Counter(r.status for r in results if r.status in _RESUMABLE)
    if unfinished and campaign is None:
        counts = ', '.join(f'{n} {status}' for status, n in sorted(unfinished.items()))
        print(
            f'{prog}: {sum(unfinished.values())} of {len(results)} call(s) did not finish '
            f'({counts}); finished calls are in {plan.run_dir}/journal; finish with: '
            f'{prog} --resume {plan.run_dir}',
            file=sys.stderr,
        )
    return 0 if all(r.ok for r in results) else 1


_RESUMABLE = frozenset({'cancelled', 'lost', 'refused', 'timed_out'})
"""Statuses of calls that ``--resume`` runs again (a tool that raised ran to its end)."""


def _announcer(plan: RunPlan, prog: str) -> Callable[[], None]:
    """Prints the run directory once the exchange is open."""

    def announce() -> None:
        # Before any call, so a client killed mid-run knows what to --resume.
        # (Remote Directors keep their run dir and journals on the endpoint.)
        if plan.executor != 'globus-compute':
            print(f'{prog}: run dir {plan.run_dir}', file=sys.stderr, flush=True)

    return announce


def _counter(plan: RunPlan, prog: str) -> Callable[[int, int], None]:
    """Says, for a resumed run, how many Directors were re-attached to and started."""

    def count(n: int, kind: str) -> str:
        return f'{n} {kind} Director{"" if n == 1 else "s"}'

    def directors(attached: int, started: int) -> None:
        if plan.manifest is not None:
            said = [f're-attached to {count(attached, "running")}'] if attached else []
            said += [f'started {count(started, "new")}'] if started else []
            print(f'{prog}: {", ".join(said)}', file=sys.stderr, flush=True)

    return directors


def _last_line(error: TaskExecutionFailed) -> str:
    """The last line of the remote traceback of a Globus Compute task."""
    lines = error.remote_data.splitlines()
    return next((line for line in reversed(lines) if line.strip()), '').strip()
