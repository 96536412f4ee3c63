"""The numpy reference backend: readable, float64, the oracle of the fast backends."""

from __future__ import annotations

from ..evaluate import evaluate_model
from ..neighbors import neighbor_pairs_ase, select_neighbors


def is_available() -> bool:
    return True


def why_unavailable() -> str:
    return ""


def select_for(part, centers, neighbors, vectors, atype_all, nloc):
    """DeePMD-kit's neighbour selection for one descriptor part (a :class:`~deepcomp_ase.plan.PartPlan`)."""
    return select_neighbors(centers, neighbors, vectors, atype_all, nloc, part.descriptor.sel, part.select_rcut,
                            part.slot_exclude, part.select_exclude, mixed=part.mixed_types)


class Backend:
    name = "numpy"
    builds_neighbors = False
    device_counters = False

    def __init__(self, precision: str = "float64"):
        self.precision = precision  # float64 only (checked by get_backend)

    def pairs_from_atoms(self, positions, cell, pbc, rcut):
        """(centers, neighbors, vectors) of all pairs within rcut, images folded into vectors."""
        return neighbor_pairs_ase(positions, cell, pbc, rcut)

    def select(self, part, centers, neighbors, vectors, atype_all, nloc):
        return select_for(part, centers, neighbors, vectors, atype_all, nloc)

    def evaluate(self, model, pair_lists, atype_all, atomic_virial: bool, extra=None):
        plan = model.plan
        for part in plan.parts:  # table lookups are counted into the caller's tally
            if part.compressed:
                part.embed.tally = model.tally
        return evaluate_model(plan.params, [p.evaluator for p in plan.parts], pair_lists, atype_all,
                              atomic_virial=atomic_virial, block_atoms=plan.block_atoms, extra=extra)
