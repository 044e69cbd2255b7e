"""A real molecular-dynamics tool: ASE dynamics of a small EMT metal crystal.

The system is a periodic face-centred-cubic crystal of ``4 * size**3`` atoms
with ASE's Effective Medium Theory potential (pure NumPy, so it runs wherever
the package is installed). ``nve`` integrates Newton's equations with velocity
Verlet, so the total energy is conserved up to integration error; ``langevin``
couples the atoms to a heat bath at ``temperature``. Velocities are drawn from
a Maxwell-Boltzmann distribution with a seeded generator, so the same inputs
give the same trajectory.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from typing import Annotated
from typing import Any
from typing import Literal
from typing import get_args

from annotated_types import Ge
from annotated_types import Gt
from annotated_types import Le

if TYPE_CHECKING:
    from ase.md.md import MolecularDynamics

Element = Literal['Al', 'Cu', 'Ni', 'Pd', 'Ag', 'Pt', 'Au']
Ensemble = Literal['nve', 'langevin']

MAX_STEPS = 1_000_000


def _energies(atoms: Any) -> dict[str, float]:
    count = len(atoms)
    potential = float(atoms.get_potential_energy()) / count
    kinetic = float(atoms.get_kinetic_energy()) / count
    return {
        'potential': potential,
        'kinetic': kinetic,
        'total': potential + kinetic,
        'temperature': float(atoms.get_temperature()),
    }


def ase_md(  # noqa: PLR0917
    temperature: Annotated[float, Gt(0), Le(10_000)] = 300.0,
    steps: Annotated[int, Ge(0), Le(MAX_STEPS)] = 200,
    seed: Annotated[int, Ge(0)] = 0,
    ensemble: Ensemble = 'nve',
    timestep_fs: Annotated[float, Gt(0), Le(10)] = 2.0,
    friction: Annotated[float, Gt(0), Le(1)] = 0.02,
    size: Annotated[int, Ge(1), Le(8)] = 3,
    element: Element = 'Cu',
    samples: Annotated[int, Ge(1), Le(1000)] = 10,
) -> dict[str, Any]:
    """Molecular dynamics of a small metal crystal with ASE (EMT potential).

    Velocities start from a Maxwell-Boltzmann distribution at
    ``temperature``; energies are per atom, in eV.

    Args:
        temperature: Initial (and, for langevin, heat-bath) temperature in kelvin.
        steps: Number of MD time steps.
        seed: Random seed for the initial velocities and the Langevin noise;
            the same seed gives the same result.
        ensemble: ``nve`` (velocity Verlet, energy conserving) or
            ``langevin`` (constant temperature).
        timestep_fs: Time step in femtoseconds.
        friction: Langevin friction in 1/fs (ignored for nve).
        size: Edge of the crystal in unit cells; the system has 4*size^3 atoms.
        element: FCC metal that EMT describes.
        samples: Number of evenly spaced trajectory samples to return.

    Returns:
        Atom count, initial and final energies per atom, the final and mean
        temperature, the mean potential energy over the second half of the
        run, the total-energy drift, trajectory samples and the runtime.

    Raises:
        ValueError: If a parameter is out of range.

    """
    check_md_options(
        temperature=temperature,
        steps=steps,
        seed=seed,
        ensemble=ensemble,
        timestep_fs=timestep_fs,
        friction=friction,
        size=size,
        element=element,
        samples=samples,
    )
    import numpy as np
    from ase import units
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.lattice.cubic import FaceCenteredCubic
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    atoms = FaceCenteredCubic(element, size=(size, size, size), pbc=True)
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dynamics: MolecularDynamics
    if ensemble == 'nve':
        dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    else:
        # The random kicks must not move the centre of mass.
        atoms.set_constraint(FixCom())
        dynamics = Langevin(
            atoms,
            timestep=timestep_fs * units.fs,
            temperature_K=temperature,
            friction=friction / units.fs,
            fixcm=False,
            rng=rng,
        )
    trajectory: list[dict[str, float]] = []

    def record() -> None:
        # ASE also calls observers when a run starts; keep one sample per step.
        if not trajectory or trajectory[-1]['step'] != dynamics.nsteps:
            trajectory.append({'step': dynamics.nsteps, **_energies(atoms)})

    interval = max(1, steps // samples)
    record()
    dynamics.attach(record, interval=interval)
    dynamics.run(steps)
    record()
    initial, final = trajectory[0], trajectory[-1]
    second_half = [s for s in trajectory if s['step'] >= steps / 2] or [final]
    totals = [s['total'] for s in trajectory]
    return {
        'element': element,
        'atoms': len(atoms),
        'ensemble': ensemble,
        'steps': steps,
        'timestep_fs': timestep_fs,
        'seed': seed,
        'temperature_target': temperature,
        'initial': initial,
        'final': final,
        'final_temperature': final['temperature'],
        'mean_temperature': float(np.mean([s['temperature'] for s in second_half])),
        'mean_potential_energy': float(np.mean([s['potential'] for s in second_half])),
        'energy_drift': final['total'] - initial['total'],
        'max_energy_deviation': max(abs(t - initial['total']) for t in totals),
        'trajectory': trajectory,
        'runtime': time.perf_counter() - start,
    }


def check_md_options(  # noqa: PLR0917
    temperature: float,
    steps: int,
    seed: int,
    ensemble: str,
    timestep_fs: float,
    friction: float = 0.02,
    size: int = 3,
    element: str = 'Cu',
    samples: int = 10,
) -> None:
    """Check the options of an MD run without running it.

    Raises:
        ValueError: Naming the first bad option and its valid range.

    """
    _check_range('temperature', temperature, 0, 10_000, low_open=True)
    _check_range('steps', steps, 0, MAX_STEPS, integer=True)
    _check_range('timestep_fs', timestep_fs, 0, 10, low_open=True)
    _check_range('friction', friction, 0, 1, low_open=True)
    _check_range('size', size, 1, 8, integer=True)
    _check_range('samples', samples, 1, 1000, integer=True)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f'seed must be an integer >= 0, got {seed!r}')
    if ensemble not in ('nve', 'langevin'):
        raise ValueError(f"ensemble must be 'nve' or 'langevin', got {ensemble!r}")
    if element not in get_args(Element):
        raise ValueError(f'element must be one of {", ".join(get_args(Element))}, got {element!r}')


def _check_range(
    name: str,
    value: float,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f'{name} must be {"an integer" if integer else "a number"}, got {value!r}')
    if (value <= low if low_open else value < low) or value > high:
        bound = '>' if low_open else '>='
        raise ValueError(f'{name} must be {bound} {low} and <= {high}, got {value}')
