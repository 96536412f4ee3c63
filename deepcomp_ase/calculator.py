"""ASE calculator: a thin adapter from ``ase.Atoms`` to :class:`DeepPotential`."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .potential import DeepPotential


class DeepCompCalculator(Calculator):
    """Deep Potential calculator for a deepcomp compressed model or a DeePMD-kit model file.

    Parameters
    ----------
    model
        Path of a compressed model (``deepcomp compress`` output) or of an uncompressed
        DeePMD-kit model (.dp, .yaml, .pb), or a loaded :class:`DeepPotential`.
    check_frequency
        Check the table-overflow counts every N force calls (default: the ``-f`` value stored at
        compression; <= 0 disables the periodic check).
    overflow
        What a check does when inputs left the fine table: 'warn', 'error' or 'ignore'.
    backend
        'auto' (CUDA if CuPy sees a GPU, else numba if installed, else numpy), 'cpu', 'numpy',
        'numba' or 'cuda'.
    precision
        'float64' (default) or 'float32' (numba or CUDA backends).

    ``overflow_counts`` holds the counts since the last check, ``overflow_total`` the counts of
    all checks so far. Units: eV, Angstrom; stress in eV/A^3 (ASE convention), ``virial`` in eV
    (DeePMD-kit convention, ``stress = -virial / volume``).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "virial", "stresses"]

    def __init__(self, model, *, check_frequency: int | None = None, overflow: str = "warn",
                 backend: str = "auto", precision: str = "float64", label=None, atoms=None, **kwargs):
        super().__init__(label=label, atoms=atoms, **kwargs)
        if isinstance(model, DeepPotential):
            self.potential = model
            if check_frequency is not None:
                model.check_frequency = int(check_frequency)
        else:
            self.potential = DeepPotential.from_file(model, check_frequency=check_frequency, overflow=overflow,
                                                     backend=backend, precision=precision)

    @property
    def type_map(self):
        return self.potential.type_map

    @property
    def overflow_counts(self) -> dict:
        return self.potential.tally.counts()

    @property
    def overflow_total(self) -> dict:
        return self.potential.total.counts()

    def check_overflow(self) -> bool:
        """Apply the overflow policy to the counts now (as the periodic check does)."""
        return self.potential.check_overflow()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        types = self.potential.types_of(atoms.get_chemical_symbols())
        want_atomic = "stresses" in properties
        pbc = atoms.pbc
        res = self.potential.compute_atoms(atoms.positions, types, atoms.cell.array, pbc,
                                           atomic_virial=want_atomic)
        self.results["energy"] = res.energy
        self.results["free_energy"] = res.energy
        self.results["energies"] = res.atom_energy.copy()
        self.results["forces"] = res.forces
        self.results["virial"] = res.virial
        if pbc.all():
            volume = atoms.get_volume()
            stress = -0.5 * (res.virial + res.virial.T) / volume
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
            if want_atomic:
                av = res.atom_virial.reshape(-1, 3, 3)
                self.results["stresses"] = np.array(
                    [full_3x3_to_voigt_6_stress(-0.5 * (v + v.T) / volume) for v in av])
        elif "stress" in properties or "stresses" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        self.potential.step_done()
