"""The ``launch.py`` command line: every flag of a run, and the parser subcommands share."""

from __future__ import annotations

import argparse
from typing import NoReturn

from actors.cli.plan import REMOTE_RUN_ROOT
from actors.client.deploy import EXECUTORS
from actors.client.exchange import EXCHANGE_HELP
from actors.client.model_endpoint import DEFAULT_KEY_ENV
from actors.client.model_endpoint import DEFAULT_MAX_CALLS
from actors.client.model_endpoint import DEFAULT_MAX_STEPS
from actors.common.timing import MODEL_TIMEOUT
from actors.site.profile import available_sites
from actors.store.journal import SYNC_MODES


class Parser(argparse.ArgumentParser):
    """Argument parser whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Exit with status 2 and ``message`` on one line."""
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of a run (subcommands parse their own flags)."""
    parser = Parser(
        prog='launch.py',
        description=(
            'Split a batch job into partitions, start one Director agent per '
            'partition and run MD tool calls on them.'
        ),
    )
    _add_nodes(parser)
    _add_growth(parser)
    _add_work(parser)
    _add_campaign(parser)
    _add_deployment(parser)
    _add_faults(parser)
    _add_output(parser)
    return parser


def _add_nodes(parser: argparse.ArgumentParser) -> None:
    """The batch job, its partitions and the site."""
    nodes = parser.add_argument_group('batch job and partitions')
    nodes.add_argument(
        '--nodes-file',
        help='file with one host per line (default: $PBS_NODEFILE, '
        '$SLURM_JOB_NODELIST, else a simulated job)',
    )
    nodes.add_argument(
        '--simulate-nodes',
        type=int,
        metavar='N',
        help='simulate a job of N nodes on this machine (default: 4 when no '
        'scheduler variable names the nodes)',
    )
    split = nodes.add_mutually_exclusive_group()
    split.add_argument(
        '--partitions',
        type=int,
        metavar='P',
        help='number of equal partitions (default: 2)',
    )
    split.add_argument(
        '--partition-sizes',
        metavar='A,B,...',
        help='explicit partition sizes, e.g. 1,3',
    )
    nodes.add_argument(
        '--site',
        help=f'site profile from configs/ ({", ".join(available_sites())}); default: local '
        '(every worker pool on this host, also inside a batch job: name the site to use its nodes)',
    )
    nodes.add_argument(
        '--workers-per-node',
        type=int,
        metavar='W',
        help='tool slots per node (default: from the site profile)',
    )
    nodes.add_argument(
        '--static',
        action='store_true',
        help='keep the partitions fixed (default: nodes move from Directors with idle '
        'nodes to Directors with queued calls, and MPI calls may borrow nodes)',
    )
    nodes.add_argument(
        '--node-floor',
        type=int,
        default=1,
        metavar='N',
        help='nodes every Director keeps when nodes move (default: 1)',
    )
    nodes.add_argument(
        '--launcher-args',
        metavar='ARGS',
        help="replace the site profile's launcher flags, e.g. "
        '"-launcher fork --ppn 1" to simulate a PBS job on one machine',
    )
    nodes.add_argument(
        '--unencrypted-workers',
        action='store_true',
        help='worker pools talk to their interchange in the clear (default: CurveZMQ with keys '
        'private to the run dir); only on a machine no other user can reach',
    )


def _add_growth(parser: argparse.ArgumentParser) -> None:
    """More batch jobs when the work outgrows the run's."""
    grow = parser.add_argument_group(
        'growing past the batch job',
        'With --grow-max-jobs N the run asks the scheduler for up to N more batch jobs when '
        'its queued calls cannot finish before its walltime (or --grow-target), uses their '
        'nodes as its own, and gives each back when idle. Off by default: it spends '
        'node-hours of your allocation.',
    )
    grow.add_argument(
        '--grow-max-jobs',
        type=int,
        default=0,
        metavar='N',
        help='extra batch jobs at once, at most (default: 0, the run never grows)',
    )
    grow.add_argument(
        '--grow-nodes',
        type=int,
        metavar='N',
        help="nodes per extra job (default: as many as the run's own job)",
    )
    grow.add_argument(
        '--grow-walltime',
        metavar='HH:MM:SS',
        help="walltime of each extra job (default: the site profile's walltime)",
    )
    grow.add_argument(
        '--node-hours',
        type=float,
        metavar='H',
        help='node-hour budget of the whole run, its own job included, checked before every '
        'submission (each extra job is charged its whole walltime)',
    )
    grow.add_argument(
        '--grow-target',
        type=float,
        default=600.0,
        metavar='S',
        help='seconds within which the queued calls should finish when the walltime is '
        'further away or unknown (default: 600)',
    )
    grow.add_argument('--grow-queue', metavar='Q', help='queue or partition of extra jobs')
    grow.add_argument('--grow-account', metavar='A', help='account charged for extra jobs')
    grow.add_argument(
        '--no-grow',
        action='store_true',
        help='never ask for another batch job (extra jobs of a resumed run are still ended)',
    )


def _add_work(parser: argparse.ArgumentParser) -> None:
    """What each Director's calls do."""
    work = parser.add_argument_group('work')
    work.add_argument(
        '--iterations',
        type=int,
        default=4,
        help="calls in each Director's md_sim_batch (default: 4)",
    )
    work.add_argument(
        '--duration',
        type=float,
        default=1.0,
        help='seconds per mock MD call (default: 1.0)',
    )


def _add_campaign(parser: argparse.ArgumentParser) -> None:
    """A planner agent's campaign instead of the md_sim calls: the mock one, or a model's."""
    campaign = parser.add_argument_group('campaign (mock planner agent, or a model with --llm)')
    campaign.add_argument(
        '--campaign',
        action='store_true',
        help='instead of the md_sim calls, run the mock planner agent (or, with --llm, a '
        'model): a temperature scan with the real MD tool, as JSON tool calls through the '
        'dispatcher',
    )
    campaign.add_argument(
        '--rounds',
        type=int,
        default=2,
        help='refinement rounds after the first grid (default: 2; the mock planner only)',
    )
    campaign.add_argument(
        '--steps',
        type=int,
        default=300,
        help='MD steps per campaign call (default: 300)',
    )
    campaign.add_argument(
        '--tool',
        default='ase_md',
        help='MD tool of the campaign (default: ase_md; mock_md for a dry run)',
    )
    _add_model(parser)


def _add_model(parser: argparse.ArgumentParser) -> None:
    """A real model plans the campaign instead of the mock planner."""
    model = parser.add_argument_group(
        'model-driven campaign (--campaign --llm URL --model NAME)',
        'The API key is read from $OPENAI_API_KEY (or the variable --llm-key-env names), '
        'never from a flag; a loopback endpoint needs none.',
    )
    model.add_argument(
        '--llm',
        metavar='URL',
        help='base URL of an OpenAI-compatible API (vLLM, a hosted inference service, '
        'OpenAI), e.g. http://127.0.0.1:8000/v1: the model plans the campaign with tool calls',
    )
    model.add_argument('--model', metavar='NAME', help='model name as the --llm server knows it')
    model.add_argument(
        '--llm-key-env',
        metavar='NAME',
        help=f'environment variable holding the API key (default: {DEFAULT_KEY_ENV})',
    )
    model.add_argument(
        '--llm-max-steps',
        type=int,
        metavar='N',
        help=f'model turns the campaign may take (default: {DEFAULT_MAX_STEPS})',
    )
    model.add_argument(
        '--llm-max-calls',
        type=int,
        metavar='N',
        help=f'tool calls the model may send to the Directors (default: {DEFAULT_MAX_CALLS})',
    )
    model.add_argument(
        '--llm-timeout',
        type=float,
        metavar='S',
        help=f'seconds one model request may take (default: {MODEL_TIMEOUT:.0f})',
    )


def _add_deployment(parser: argparse.ArgumentParser) -> None:
    """Where the Directors run and how they are reached."""
    deploy = parser.add_argument_group('deployment')
    deploy.add_argument(
        '--exchange',
        help=f'Academy exchange: {EXCHANGE_HELP} (default: local; hosted with '
        '--executor globus-compute)',
    )
    deploy.add_argument(
        '--executor',
        help=f'where Directors run: {", ".join(EXECUTORS)} (default: local)',
    )
    deploy.add_argument('--endpoint', help='Globus Compute endpoint UUID')
    deploy.add_argument(
        '--set',
        dest='endpoint_options',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help="a value for the endpoint's template (user_endpoint_config), e.g. "
        '--set account=MyProject --set nodes_per_block=4; checked against '
        'configs/<site>/user_config_schema.json (see `launch.py endpoint-config --help`)',
    )
    deploy.add_argument(
        '--run-dir',
        help='directory for nodefiles and Parsl logs (default: runs/<timestamp>; with '
        '--executor globus-compute a directory on the endpoint, default '
        f'{REMOTE_RUN_ROOT}/<timestamp>)',
    )


def _add_faults(parser: argparse.ArgumentParser) -> None:
    """Retries, restarts, timeouts, walltime and resuming."""
    faults = parser.add_argument_group('faults, walltime and resuming')
    faults.add_argument(
        '--retries',
        type=int,
        default=2,
        help='times a call whose worker, worker pool or interchange was lost is run again; '
        'tool errors are never retried (default: 2)',
    )
    faults.add_argument(
        '--restarts',
        type=int,
        default=1,
        help='times a crashed Director is restarted with the same identity and '
        'partition (default: 1)',
    )
    faults.add_argument(
        '--timeout',
        type=float,
        metavar='S',
        help='seconds each tool call may run before it is stopped (default: none)',
    )
    faults.add_argument(
        '--supervise',
        action='store_true',
        help='run every call in a forked child of its worker, so that a crashing tool '
        'fails only its call (cancel and --timeout work either way); costs throughput',
    )
    faults.add_argument(
        '--journal-sync',
        choices=SYNC_MODES,
        help='when journal commits reach the disk: after-answer (default; every result is '
        "written before it is answered and fsync'ed right after), before-answer (answers "
        'wait for the fsync: survives a node crash at any instant), off (never fsync)',
    )
    faults.add_argument(
        '--walltime',
        metavar='HH:MM:SS',
        help='time left in the allocation (default: $SLURM_JOB_END_TIME or $PBS_WALLTIME, '
        'else unlimited); calls that cannot finish in time are refused',
    )
    faults.add_argument(
        '--drain-margin',
        type=float,
        default=30.0,
        metavar='S',
        help='seconds before the walltime ends at which Directors drain (default: 30)',
    )
    faults.add_argument(
        '--resume',
        metavar='RUN_DIR',
        help='finish an earlier run: re-attach to its Directors (or start new ones), '
        'skip the calls its journals hold, report all of them',
    )


def _add_output(parser: argparse.ArgumentParser) -> None:
    """What is printed, and how much is logged."""
    out = parser.add_argument_group('output')
    out.add_argument('--json', action='store_true', help='print one JSON document')
    out.add_argument(
        '--quiet',
        action='store_true',
        help='no live progress bars on stderr (--json implies it)',
    )
    add_log_level(out)


def add_log_level(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--log-level``, as every command that logs takes it."""
    parser.add_argument(
        '--log-level',
        default='WARNING',
        choices=['DEBUG', 'INFO', 'WARNING', 'ERROR'],
        help='logging level on stderr (default: WARNING)',
    )
