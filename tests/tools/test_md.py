"""The real MD tool checks physics, not only that it ran (no Parsl needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from actors.tools.ase_md import ase_md
from actors.tools.mpi_tools import parse_md_ensemble
from actors.tools.mpi_tools import parse_ranks

pytestmark = pytest.mark.timeout(120)

# Velocity Verlet at 2 fs conserves the total energy of 32 EMT copper atoms to
# ~3e-5 eV/atom over 300 steps; 1 meV/atom is the stated tolerance (30x margin),
# while the kinetic energy itself changes by far more than that.
NVE_DRIFT_TOLERANCE = 1e-3  # eV/atom


def _without_runtime(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != 'runtime'}


def test_nve_conserves_total_energy():
    result = ase_md(temperature=600, steps=300, size=2, timestep_fs=2.0, samples=30)
    assert result['atoms'] == 32 and result['ensemble'] == 'nve'
    assert len(result['trajectory']) == 31
    assert abs(result['energy_drift']) < NVE_DRIFT_TOLERANCE
    assert result['max_energy_deviation'] < NVE_DRIFT_TOLERANCE
    # Not trivially conserved: kinetic and potential energy exchange far more.
    kinetic = [s['kinetic'] for s in result['trajectory']]
    assert max(kinetic) - min(kinetic) > 10 * NVE_DRIFT_TOLERANCE
    # Equipartition: a crystal started from its minimum at T settles near T/2.
    assert 0.25 * 600 < result['mean_temperature'] < 0.75 * 600


def test_same_seed_same_result_other_seed_differs():
    first = _without_runtime(ase_md(steps=50, size=2, seed=7, ensemble='langevin'))
    again = _without_runtime(ase_md(steps=50, size=2, seed=7, ensemble='langevin'))
    other = _without_runtime(ase_md(steps=50, size=2, seed=8, ensemble='langevin'))
    assert first == again
    assert first['final'] != other['final']


def test_langevin_holds_the_bath_temperature():
    result = ase_md(
        temperature=1000, steps=400, size=2, ensemble='langevin', friction=0.05, samples=40
    )
    # 32 atoms fluctuate by ~15% per sample; the second-half mean is close to the bath.
    assert 0.75 * 1000 < result['mean_temperature'] < 1.25 * 1000


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'steps': -1}, 'steps must be >= 0'),
        ({'steps': 2.5}, 'steps must be an integer'),
        ({'temperature': 0}, 'temperature must be > 0'),
        ({'ensemble': 'npt'}, "ensemble must be 'nve' or 'langevin'"),
        ({'element': 'Fe'}, 'element must be one of Al, Cu'),
        ({'seed': -3}, 'seed must be an integer >= 0'),
    ],
)
def test_bad_options_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ase_md(**kwargs)


def test_ranks_under_mpiexec_report_their_made_up_hosts(tmp_path):
    """One MD replica per rank with MPICH's fork launcher; parse gathers them."""
    options = json.dumps({'steps': 10, 'size': 1, 'seed': 5})
    proc = subprocess.run(
        [
            'mpiexec',
            '-n',
            '4',
            '-ppn',
            '2',
            '-hosts',
            'fake-a,fake-b',
            '-launcher',
            'fork',
            sys.executable,
            '-m',
            'actors.tools.mpi_tools',
            'md',
            '--options',
            options,
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
        cwd=tmp_path,
        env={**os.environ, 'PATH': f'{os.path.dirname(sys.executable)}:{os.environ["PATH"]}'},
    )
    value = parse_md_ensemble(proc.stdout)
    assert value['size'] == 4
    assert value['hosts'] == ['fake-a', 'fake-b']
    assert [r['rank'] for r in value['ranks']] == [0, 1, 2, 3]
    assert [r['result']['seed'] for r in value['ranks']] == [5, 6, 7, 8]
    assert value['max_abs_energy_drift'] < NVE_DRIFT_TOLERANCE


def test_parse_ranks_without_output_is_an_error():
    with pytest.raises(ValueError, match='no MPI rank printed'):
        parse_ranks('mpiexec: something went wrong\n')
