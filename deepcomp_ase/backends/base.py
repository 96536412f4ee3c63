"""The backend contract: what every compute backend takes and returns.

A backend evaluates a :class:`~deepcomp_ase.plan.ModelPlan` (built once when a potential is
loaded) on pair lists or positions and returns :class:`Results`. It sees the potential only
through :class:`Evaluable` (the plan, the overflow tally it adds to, and the check frequency);
it never reads other attributes of :class:`~deepcomp_ase.potential.DeepPotential`.

Optional abilities are declared by class-level capability flags, not found by probing:

``builds_neighbors``
    the backend has ``compute_atoms(model, positions, atype, cell, pbc, *, atomic_virial)``
    that builds its own neighbour list (the CUDA backend: on the device);
``device_counters``
    overflow counts are kept where the work runs and added to the tally only by
    ``flush_overflow(model)`` (the potential calls it before every overflow check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..neighbors import PairList
    from ..overflow import OverflowTally
    from ..plan import ModelPlan, PartPlan


@dataclass
class Results:
    """Output of every backend (float64, eV and Angstrom; DeePMD-kit's sign conventions)."""

    energy: float
    atom_energy: np.ndarray  # (nloc,)
    forces: np.ndarray  # (nall, 3)
    virial: np.ndarray  # (3, 3)
    atom_virial: np.ndarray | None  # (nall, 9)
    dedfparam: np.ndarray | None = None  # (numb_fparam,) dE/dfparam of a model with frame parameters


class Evaluable(Protocol):
    """What a backend may read of the potential it evaluates."""

    plan: ModelPlan
    tally: OverflowTally  # backends add their overflow counts here
    check_frequency: int  # device_counters backends flush every this many calls (<= 0: never)


@runtime_checkable
class Backend(Protocol):
    """A compute backend (numpy reference, numba, CUDA)."""

    name: str
    precision: str  # 'float64' or 'float32'
    builds_neighbors: bool
    device_counters: bool

    def pairs_from_atoms(self, positions, cell, pbc, rcut: float):
        """(centers, neighbors, vectors) of all pairs within rcut (more are allowed: select cuts)."""

    def select(self, part: PartPlan, centers, neighbors, vectors, atype_all, nloc: int) -> PairList:
        """DeePMD-kit's neighbour selection of one descriptor part."""

    def evaluate(self, model: Evaluable, pair_lists: list, atype_all, atomic_virial: bool, extra=None) -> Results:
        """Energy, forces and virials from one selected pair list per descriptor part.

        ``extra``: None, or the (nloc, n) fitting-net input columns after the descriptor of a model
        with frame/atomic parameters (:func:`~deepcomp_ase.fitting_inputs.fitting_columns`); the
        result then carries ``dedfparam``."""


def select_parts(backend, plan, centers, neighbors, vectors, atype_all, nloc: int, tally,
                 shared: dict | None = None) -> list:
    """One selected pair list per descriptor part; pairs beyond sel are counted into ``tally``.

    ``shared`` (optional): a dict the caller keeps for one set of atoms and pairs (e.g. one LAMMPS
    step). A selection made there for a part with the same ``selection_key``, backend, pair
    arrays (the same ``centers`` and ``neighbors`` objects) and model types is reused; each model
    of a model deviation still counts the dropped pairs into its own tally.
    """
    pair_lists = []
    for part in plan.parts:
        pairs = None
        if shared is not None:
            key = (type(backend), part.selection_key, id(centers), id(neighbors), int(nloc))
            hit = shared.get(key)
            if hit is not None and hit[0] is centers and hit[1] is neighbors and np.array_equal(hit[2], atype_all):
                pairs = hit[3]
        if pairs is None:
            pairs = backend.select(part, centers, neighbors, vectors, atype_all, nloc)
            if shared is not None:
                shared[key] = (centers, neighbors, atype_all, pairs)
        tally.n_sel_dropped += pairs.n_dropped
        pair_lists.append(pairs)
    return pair_lists
