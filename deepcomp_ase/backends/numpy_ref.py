"""The numpy reference backend: readable, float64, the oracle of the fast backends."""

from __future__ import annotations

from ..evaluate import evaluate_se_e2_a
from ..neighbors import neighbor_pairs_ase, select_neighbors


def is_available() -> bool:
    return True


def why_unavailable() -> str:
    return ""


class Backend:
    name = "numpy"

    def pairs_from_atoms(self, positions, cell, pbc, rcut):
        """(centers, neighbors, vectors) of all pairs within rcut, images folded into vectors."""
        return neighbor_pairs_ase(positions, cell, pbc, rcut)

    def select(self, centers, neighbors, vectors, atype_all, nloc, descriptor, model_exclude):
        return select_neighbors(centers, neighbors, vectors, atype_all, nloc, descriptor.sel, descriptor.rcut,
                                descriptor.exclude_types, model_exclude)

    def evaluate(self, potential, pairs, atype_all, atomic_virial: bool):
        return evaluate_se_e2_a(potential.params, potential.embed, pairs, atype_all, atomic_virial=atomic_virial,
                                block_atoms=potential.block_atoms, pad_cache=potential._pad)
