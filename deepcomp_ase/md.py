"""A short ASE molecular-dynamics run (``deepcomp md``): a quick end-to-end check of a model."""

from __future__ import annotations

import logging
import time

import numpy as np

from .errors import DeepCompError

log = logging.getLogger(__name__)


def default_structure(type_map, repeat: int = 4, seed: int = 1):
    """Random fcc alloy of the model's elements, lattice constant from Vegard's law."""
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states

    def lattice(el):
        state = reference_states[atomic_numbers[el]]
        return state.get("a", 3.6) if state and state.get("symmetry") == "fcc" else 3.6

    a = float(np.mean([lattice(el) for el in type_map]))
    atoms = bulk(type_map[0], "fcc", a=a, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.set_chemical_symbols(rng.choice(list(type_map), size=len(atoms)))
    return atoms


def run_md(model, *, structure=None, repeat=4, steps=100, timestep=1.0, temperature=600.0, log_every=10,
           seed=1, check_frequency=None):
    from ase import units
    from ase.io import read
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    from .calculator import DeepCompCalculator

    calc = DeepCompCalculator(model, check_frequency=check_frequency)
    if structure:
        try:
            atoms = read(structure)
        except Exception as exc:  # noqa: BLE001 - ASE's readers raise many types for a bad file
            raise DeepCompError(f"{structure}: cannot read the structure ({type(exc).__name__}: {exc}); give a "
                                "file ASE can read (extxyz, POSCAR, LAMMPS data, ...)") from exc
    else:
        atoms = default_structure(calc.type_map, repeat, seed)
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep * units.fs)
    e0 = atoms.get_total_energy()
    print(f"deepcomp md: {len(atoms)} atoms ({atoms.get_chemical_formula()}), "
          f"{'compressed' if calc.potential.compressed else 'uncompressed'} model, NVE, dt {timestep} fs")
    print(f"{'step':>6} {'E_pot/eV':>14} {'E_tot/eV':>14} {'T/K':>8} {'ms/step':>8}")
    clock = [time.perf_counter()]

    def report():
        now = time.perf_counter()
        per = (now - clock[0]) * 1000 / max(1, log_every)
        clock[0] = now
        print(f"{dyn.nsteps:6d} {atoms.get_potential_energy():14.6f} {atoms.get_total_energy():14.6f} "
              f"{atoms.get_temperature():8.1f} {per:8.1f}", flush=True)

    dyn.attach(report, interval=log_every)
    dyn.run(steps)
    drift = (atoms.get_total_energy() - e0) / len(atoms)
    print(f"energy drift over {steps} steps: {drift:.3e} eV/atom")
    counts = calc.overflow_counts
    print(f"table overflow since the last check: {counts['coarse_table']} inputs in the extrapolation table, "
          f"{counts['beyond_table']} beyond it, {counts['sel_dropped']} neighbours beyond sel")
    return drift
