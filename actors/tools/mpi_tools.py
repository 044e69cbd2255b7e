"""Multi-node command-line tools, and the program each of their MPI ranks runs.

An MPI tool is a function that returns a command line starting with
``$PARSL_MPI_PREFIX``: Parsl's MPI mode sets it, per call, to the launcher
(``mpiexec``, ``srun`` or ``aprun``) with exactly the nodes and ranks the
call was given. Each rank runs ``python -m actors.tools.mpi_tools ...`` and prints
one JSON line (its rank, the host the launcher placed it on, its result);
the tool's parser gathers the lines into the call's value.

Ranks do not call MPI themselves, so no MPI Python binding is needed: the
launcher's environment (``PMI_RANK``, ``PALS_RANKID``, ``SLURM_PROCID``, ...)
tells each rank who it is.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Annotated
from typing import Any

from annotated_types import Ge
from annotated_types import Gt
from annotated_types import Le

from actors.common.where import current_node
from actors.tools.ase_md import MAX_STEPS
from actors.tools.ase_md import Element
from actors.tools.ase_md import Ensemble
from actors.tools.ase_md import ase_md
from actors.tools.ase_md import check_md_options

# Rank and size variables, most specific first: MPICH hydra / PMI, Cray PALS,
# Slurm, Open MPI.
_RANK_VARIABLES = ('PMI_RANK', 'PALS_RANKID', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK')
_SIZE_VARIABLES = ('PMI_SIZE', 'PALS_SIZE', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')


def _first_int(names: Sequence[str], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return default


def rank_info() -> dict[str, Any]:
    """Rank number of this process, the job size and the host it was placed on."""
    return {
        'rank': _first_int(_RANK_VARIABLES, 0),
        'size': _first_int(_SIZE_VARIABLES, 1),
        'host': current_node(),
        'pid': os.getpid(),
    }


def _rank_command(*args: str) -> str:
    python = shlex.quote(sys.executable)
    return f'$PARSL_MPI_PREFIX {python} -m actors.tools.mpi_tools {" ".join(args)}'


def mpi_probe(
    duration: Annotated[float, Ge(0), Le(3600)] = 0.0,
) -> str:
    """Start one process per MPI rank and report where each one ran.

    Useful to check placement: every rank reports its rank number and the
    host the MPI launcher put it on.

    Args:
        duration: Seconds each rank stays alive (to hold its nodes).

    Returns:
        The command line (the call's value lists every rank and host).

    """
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
        raise ValueError(f'duration must be a number of seconds >= 0, got {duration!r}')
    return _rank_command('probe', '--duration', repr(float(duration)))


def ase_md_mpi(  # noqa: PLR0917
    temperature: Annotated[float, Gt(0), Le(10_000)] = 300.0,
    steps: Annotated[int, Ge(0), Le(MAX_STEPS)] = 200,
    seed: Annotated[int, Ge(0)] = 0,
    ensemble: Ensemble = 'nve',
    timestep_fs: Annotated[float, Gt(0), Le(10)] = 2.0,
    size: Annotated[int, Ge(1), Le(8)] = 3,
    element: Element = 'Cu',
) -> str:
    """An ensemble of ASE MD replicas, one per MPI rank, across nodes.

    Rank r runs the same system as ``ase_md`` with seed ``seed + r``; the
    result holds every replica and the ensemble mean and spread.

    Args:
        temperature: Initial (and, for langevin, heat-bath) temperature in kelvin.
        steps: Number of MD time steps per replica.
        seed: Seed of rank 0; rank r uses ``seed + r``.
        ensemble: ``nve`` or ``langevin``.
        timestep_fs: Time step in femtoseconds.
        size: Edge of the crystal in unit cells (4*size^3 atoms).
        element: FCC metal that EMT describes.

    Returns:
        The command line (the call's value holds every replica's result).

    """
    options: dict[str, Any] = {
        'temperature': temperature,
        'steps': steps,
        'seed': seed,
        'ensemble': ensemble,
        'timestep_fs': timestep_fs,
        'size': size,
        'element': element,
    }
    # Fail here, on the worker, before any rank starts.
    check_md_options(**options)
    return _rank_command('md', '--options', shlex.quote(json.dumps(options)))


def parse_ranks(text: str) -> dict[str, Any]:
    """Gather the ranks' JSON lines into one value.

    Raises:
        ValueError: If no rank reported.

    """
    ranks = sorted(_json_objects(text), key=lambda r: r['rank'])
    if not ranks:
        raise ValueError('no MPI rank printed a result')
    return {
        'ranks': ranks,
        'hosts': sorted({r['host'] for r in ranks}),
        'size': len(ranks),
        'start': min(r['start'] for r in ranks),
        'end': max(r['end'] for r in ranks),
    }


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every rank report in ``text``, even if the launcher merged lines."""
    decoder = json.JSONDecoder()
    found = []
    index = text.find('{')
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find('{', index + 1)
            continue
        if isinstance(value, dict) and 'rank' in value:
            found.append(value)
        index = text.find('{', end)
    return found


def parse_md_ensemble(text: str) -> dict[str, Any]:
    """Gather the replicas' results and add ensemble statistics."""
    import statistics

    value = parse_ranks(text)
    results = [r['result'] for r in value['ranks']]
    final_t = [r['final_temperature'] for r in results]
    potential = [r['mean_potential_energy'] for r in results]
    value['mean_final_temperature'] = statistics.fmean(final_t)
    value['mean_potential_energy'] = statistics.fmean(potential)
    value['std_potential_energy'] = statistics.pstdev(potential)
    value['max_abs_energy_drift'] = max(abs(r['energy_drift']) for r in results)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of one MPI rank: print one JSON line."""
    parser = argparse.ArgumentParser(prog='python -m actors.tools.mpi_tools')
    sub = parser.add_subparsers(dest='program', required=True)
    probe = sub.add_parser('probe', help='report rank and host')
    probe.add_argument('--duration', type=float, default=0.0)
    md = sub.add_parser('md', help='run one MD replica with seed + rank')
    md.add_argument('--options', required=True, help='ase_md keyword arguments as JSON')
    args = parser.parse_args(argv)
    info = rank_info()
    start = time.time()
    if args.program == 'probe':
        time.sleep(args.duration)
        report = {**info, 'start': start, 'end': time.time()}
    else:
        options = json.loads(args.options)
        options['seed'] = options.get('seed', 0) + info['rank']
        result = ase_md(**options)
        result.pop('trajectory')
        report = {**info, 'start': start, 'end': time.time(), 'result': result}
    # One write() per report: the launcher merges the ranks' streams.
    os.write(sys.stdout.fileno(), (json.dumps(report) + '\n').encode())
    return 0


if __name__ == '__main__':
    sys.exit(main())
