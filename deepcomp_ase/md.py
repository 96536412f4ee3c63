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
           seed=1, check_frequency=None, backend="auto"):
    from ase import units
    from ase.md.velocitydistribution import Stationary
    from ase.md.verlet import VelocityVerlet

    from .calculator import DeepCompCalculator
    from .overflow import run_totals, summary_line

    atoms = read_structure(structure) if structure else None
    calc = DeepCompCalculator(model, check_frequency=check_frequency, backend=backend)
    if atoms is None:
        atoms = default_structure(calc.type_map, repeat, seed)
    calc.potential.types_of(atoms.get_chemical_symbols())  # unknown elements: a clear error before the run
    atoms.calc = calc
    thermalize(atoms, temperature, np.random.default_rng(seed))
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
    # whatever the check frequency: one line when any input left the fine tables
    line = summary_line(run_totals(calc.potential), calc.type_map, steps)
    print(line if line else "table overflow: none (every embedding input stayed in the fine tables)")
    return drift


def read_structure(path):
    """``ase.io.read`` with errors that name the file."""
    from pathlib import Path

    from ase.io import read

    from .errors import DeepCompError

    p = Path(path)
    if not p.exists():
        raise DeepCompError(f"{path}: structure file not found")
    if p.is_dir():
        raise DeepCompError(f"{path}: is a directory, not a structure file")
    try:
        atoms = read(p)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds for unreadable files
        raise DeepCompError(f"{path}: cannot read the structure ({type(exc).__name__}: {exc}); give a file ASE "
                            "can read (extxyz, POSCAR, LAMMPS data with its format, ...)") from exc
    if len(atoms) == 0:
        raise DeepCompError(f"{path}: the structure has no atoms")
    return atoms


def thermalize(atoms, temperature_K: float, rng) -> None:
    """Maxwell-Boltzmann momenta: ASE's ``thermalize_momenta`` (3.29+, where ``MaxwellBoltzmannDistribution``
    is deprecated), else ``MaxwellBoltzmannDistribution`` (ASE 3.23-3.28); the same draws either way."""
    from ase.md import velocitydistribution as vd

    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature_K, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
