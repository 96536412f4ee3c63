"""Several models on the same frames: model deviation for DP-GEN style exploration (Python side).

* :class:`ModelEnsemble`: models loaded once (deepcomp compressed or DeePMD-kit files, mixed);
  each maps chemical symbols through its own type_map, so the models may order their elements
  differently, and may differ in descriptor, sel and rcut;
* :func:`model_devi_frames`: the deviation of arrays of frames (positions, cells);
* :class:`DeepCompEnsembleCalculator` (module ``deepcomp_ase.ensemble_calculator``): ASE.

Only the public API of :class:`DeepPotential` (and its backend's ``pairs_from_atoms``) is used.
Definitions: :mod:`deepcomp_ase.model_devi`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DeepCompError, TypeMapError
from .model_devi import Deviation, model_deviation
from .validate import check_cell


@dataclass
class EnsembleResults:
    """Every model's energy (n_m,), forces (n_m, natoms, 3) and virial (n_m, 3, 3) of one frame, in eV."""

    energies: np.ndarray
    forces: np.ndarray
    virials: np.ndarray

    def deviation(self, *, relative: float | None = None, relative_v: float | None = None,
                  magnitude: str = "component", labels: dict | None = None) -> Deviation:
        """The model deviation, or with ``labels`` (the frame's energy, force, virial) the real error."""
        return model_deviation(self.forces, self.virials, self.forces.shape[1], self.energies, relative=relative,
                               relative_v=relative_v, magnitude=magnitude, labels=labels)


class ModelEnsemble:
    """``models``: paths or loaded :class:`DeepPotential` objects; the first one is the reference
    (it drives MD in the calculator and in LAMMPS). Keyword arguments go to ``from_file``."""

    def __init__(self, models, **kwargs):
        from .potential import DeepPotential

        models = list(models)
        if len(models) < 1:
            raise DeepCompError("model deviation needs at least one model (give two or more to get a deviation)")
        self.potentials = [m if isinstance(m, DeepPotential) else DeepPotential.from_file(m, **kwargs)
                           for m in models]
        self.sources = [str(m) if not isinstance(m, DeepPotential) else getattr(m.params, "source", f"model {k}")
                        for k, m in enumerate(models)]

    def __len__(self) -> int:
        return len(self.potentials)

    @property
    def first(self):
        return self.potentials[0]

    @property
    def rcut(self) -> float:
        """The largest cutoff of the models."""
        return max(float(p.rcut) for p in self.potentials)

    def check_elements(self, symbols) -> None:
        """Every model knows every element in ``symbols``; otherwise one error naming the models."""
        wanted = sorted(set(symbols))
        missing = [(src, [s for s in wanted if s not in p.type_map], p.type_map)
                   for src, p in zip(self.sources, self.potentials) if any(s not in p.type_map for s in wanted)]
        if missing:
            detail = "; ".join(f"{src} lacks {m} (type_map {list(tm)})" for src, m, tm in missing)
            raise TypeMapError(f"the models do not share the elements {wanted}: {detail}; "
                               "model deviation needs models trained on the same elements")

    def compute(self, positions, symbols, cell=None, pbc=(False, False, False), *, fparam=None,
                aparam=None) -> EnsembleResults:
        """Every model on one frame (ASE conventions: cell rows are lattice vectors).

        ``fparam`` / ``aparam``: the frame's frame and atomic parameters, given to each model that
        takes them (a model without parameters evaluates without them).

        On host backends the pairs are searched once at the largest cutoff, cut once per
        distinct smaller cutoff, and each distinct selection (``PartPlan.selection_key``) is
        made once for all models; device backends build their own lists per model.
        """
        positions = np.asarray(positions, dtype=np.float64)
        n = len(positions)
        energies = np.empty(len(self))
        forces = np.empty((len(self), n, 3))
        virials = np.empty((len(self), 3, 3))
        pairs = self._pairs(positions, cell, pbc)
        within: dict = {}
        shared: dict = {}
        for k, (pot, source) in enumerate(zip(self.potentials, self.sources)):
            types = pot.types_of(symbols)
            inputs = {"fparam": fparam if pot.dim_fparam else None, "aparam": aparam if pot.dim_aparam else None}
            if pairs is None:
                res = pot.compute_atoms(positions, types, cell, pbc, **inputs)
            else:
                res = pot.compute_pairs(types, n, *_within(pairs, float(pot.rcut), within), shared_selection=shared,
                                        **inputs)
            energies[k] = res.energy
            forces[k] = np.asarray(res.forces)[:n]
            virials[k] = np.asarray(res.virial).reshape(3, 3)
            pot.step_done(model=source)  # an overflow warning or error names the model
        return EnsembleResults(energies, forces, virials)

    def _pairs(self, positions, cell, pbc):
        """(centers, neighbors, vectors) within the largest cutoff, or None when a backend builds its own."""
        if any(pot.backend.builds_neighbors for pot in self.potentials):
            return None
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        check_cell(positions, cell, pbc, self.rcut)  # a nearly flat cell: images without end
        i, j, vec = self.first.backend.pairs_from_atoms(positions, cell, np.asarray(pbc, dtype=bool), self.rcut)
        # int64 once: compute_pairs keeps these very arrays, on which the models share selections
        return (np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64),
                np.asarray(vec, dtype=np.float64).reshape(-1, 3))


def _within(pairs, rcut: float, cache: dict):
    """The pairs within ``rcut`` (cut once per distinct cutoff; the same arrays for equal cutoffs)."""
    i, j, vec = pairs
    if "rmax" not in cache:
        r2 = np.einsum("ij,ij->i", vec, vec)
        cache["r2"], cache["rmax"] = r2, float(np.sqrt(r2.max())) if len(r2) else 0.0
    if rcut > cache["rmax"]:
        return pairs
    if rcut not in cache:
        keep = cache["r2"] < rcut * rcut
        cache[rcut] = (i[keep], j[keep], vec[keep])
    return cache[rcut]


def model_devi_frames(models, positions, symbols, cells=None, pbc=True, *, relative: float | None = None,
                      relative_v: float | None = None, magnitude: str = "component", fparam=None, aparam=None,
                      **kwargs) -> list[Deviation]:
    """Model deviation of each frame of an array of frames.

    ``models``: a :class:`ModelEnsemble`, or paths / :class:`DeepPotential` objects;
    ``positions`` (n_frames, natoms, 3) in A; ``symbols``: natoms chemical symbols (or one list per
    frame); ``cells`` (n_frames, 3, 3) (rows: lattice vectors) or None for no periodicity;
    ``pbc``: bool or three bools. Returns one :class:`Deviation` per frame (with ``devi_e`` and
    the per-atom ``atom_devi_f``). ``magnitude`` selects the ``relative_v`` convention (see
    :func:`deepcomp_ase.model_devi.virial_deviation`). ``fparam`` (n_frames, numb_fparam) and
    ``aparam`` (n_frames, natoms, numb_aparam): per-frame parameters of models that take them.
    """
    ens = models if isinstance(models, ModelEnsemble) else ModelEnsemble(models, **kwargs)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 2:
        positions = positions[None]
    nf = positions.shape[0]
    per_frame_symbols = len(symbols) == nf and not isinstance(symbols[0], str) and nf > 0
    if cells is None:
        cells_arr, pbc3 = [None] * nf, (False, False, False)
    else:
        cells_arr = np.asarray(cells, dtype=np.float64).reshape(nf, 3, 3)
        pbc3 = (bool(pbc),) * 3 if np.ndim(pbc) == 0 else tuple(bool(p) for p in pbc)
    out = []
    for f in range(nf):
        sym = list(symbols[f]) if per_frame_symbols else list(symbols)
        if f == 0 or per_frame_symbols:
            ens.check_elements(sym)
        res = ens.compute(positions[f], sym, cells_arr[f], pbc3, fparam=None if fparam is None else fparam[f],
                          aparam=None if aparam is None else aparam[f])
        out.append(res.deviation(relative=relative, relative_v=relative_v, magnitude=magnitude))
    return out
