"""ASE calculator over several models: the first drives, all of them give the model deviation."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .ensemble import ModelEnsemble
from .model_devi import Deviation


class DeepCompEnsembleCalculator(Calculator):
    """Energy, forces and stress of the first model; the model deviation of all of them.

    Parameters
    ----------
    models
        Two or more model files (deepcomp compressed or DeePMD-kit .dp/.yaml/.pb, mixed) or
        loaded :class:`DeepPotential` objects; the first one is the reference.
    relative, relative_v
        As ``pair_style deepmd``'s keywords: divide the force deviation of each atom by
        ``|<F_i>| + relative`` and each virial component's by ``|<W_ab>|/N + relative_v``.
    devi_every
        Evaluate all models every this many calls (default: every call); on the other calls
        only the first model runs and ``model_devi`` keeps the last deviation computed.
    fparam, aparam
        Frame and atomic parameters, given to every model that takes them (as
        :class:`~deepcomp_ase.calculator.DeepCompCalculator`; ``atoms.info['fparam']`` /
        ``atoms.info['aparam']`` take precedence).
    Other keyword arguments (check_frequency, overflow, backend, precision) go to every model.

    Results: the usual ``energy``, ``forces``, ``stress`` (first model), plus, on calls that
    evaluated all models, ``model_devi`` (a :class:`Deviation`: ``max_devi_f``, ``atom_devi_f``,
    ...) and ``model_devi_row`` (its six numbers in model_devi.out order). :meth:`get_model_devi`
    returns the last deviation computed (or computes the one of the atoms given).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "virial", "model_devi",
                              "model_devi_row"]

    def __init__(self, models, *, relative: float | None = None, relative_v: float | None = None,
                 devi_every: int = 1, check_frequency: int | None = None, overflow: str = "warn",
                 backend: str = "auto", precision: str = "float64", fparam=None, aparam=None, label=None,
                 atoms=None, **kwargs):
        super().__init__(label=label, atoms=atoms, **kwargs)
        self.ensemble = ModelEnsemble(models, check_frequency=check_frequency, overflow=overflow, backend=backend,
                                      precision=precision)
        self.relative = relative
        self.relative_v = relative_v
        self.devi_every = max(1, int(devi_every))
        self.ncalls = 0
        self.last_devi: Deviation | None = None
        self.fparam, self.aparam = fparam, aparam

    @property
    def potential(self):
        """The first (driving) model."""
        return self.ensemble.first

    def get_model_devi(self, atoms=None) -> Deviation:
        """The model deviation of ``atoms`` (computed if needed) or of the last call."""
        if atoms is not None:
            return self.get_property("model_devi", atoms)
        if self.last_devi is None:
            raise PropertyNotImplementedError("no model deviation yet: call get_model_devi(atoms) first")
        return self.last_devi

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        symbols = atoms.get_chemical_symbols()
        pbc = atoms.pbc
        cell = atoms.cell.array
        fparam = atoms.info.get("fparam", self.fparam)
        aparam = atoms.info.get("aparam", self.aparam)
        want_devi = ("model_devi" in properties or "model_devi_row" in properties
                     or self.ncalls % self.devi_every == 0)
        self.ncalls += 1
        if want_devi:
            self.ensemble.check_elements(symbols)
            res = self.ensemble.compute(atoms.positions, symbols, cell, pbc, fparam=fparam, aparam=aparam)
            energy, forces, virial = res.energies[0], res.forces[0], res.virials[0]
            self.last_devi = res.deviation(relative=self.relative, relative_v=self.relative_v)
        else:
            pot = self.ensemble.first
            r = pot.compute_atoms(atoms.positions, pot.types_of(symbols), cell, pbc,
                                  fparam=fparam if pot.dim_fparam else None, aparam=aparam if pot.dim_aparam else None)
            pot.step_done(model=self.ensemble.sources[0])
            energy, forces, virial = r.energy, np.asarray(r.forces)[: len(atoms)], np.asarray(r.virial)
        self.results["energy"] = float(energy)
        self.results["free_energy"] = float(energy)
        self.results["forces"] = np.array(forces)
        self.results["virial"] = np.array(virial).reshape(3, 3)
        if want_devi:  # only a deviation of this configuration is a result of it
            self.results["model_devi"] = self.last_devi
            self.results["model_devi_row"] = np.array(self.last_devi.row())
        if pbc.all():
            v = self.results["virial"]
            self.results["stress"] = full_3x3_to_voigt_6_stress(-0.5 * (v + v.T) / atoms.get_volume())
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
