"""The numpy reference backend: readable, float64, the oracle of the fast backends."""

from __future__ import annotations

from ..evaluate import evaluate_model
from ..neighbors import neighbor_pairs_ase, select_neighbors


def is_available() -> bool:
    return True


def why_unavailable() -> str:
    return ""


def select_for(descriptor, centers, neighbors, vectors, atype_all, nloc, model_exclude):
    """DeePMD-kit's neighbour selection for one descriptor part."""
    mixed = descriptor.kind == "se_atten_v2"
    # se_atten turns excluded pairs into padding (model-level semantics); the others keep the slot
    desc_excl = frozenset() if mixed else descriptor.exclude_types
    model_excl = (model_exclude | descriptor.exclude_types) if mixed else model_exclude
    return select_neighbors(centers, neighbors, vectors, atype_all, nloc, descriptor.sel, descriptor.rcut,
                            desc_excl, model_excl, mixed=mixed)


class Backend:
    name = "numpy"

    def __init__(self, precision: str = "float64"):
        self.precision = precision  # float64 only (checked by get_backend)

    def pairs_from_atoms(self, positions, cell, pbc, rcut):
        """(centers, neighbors, vectors) of all pairs within rcut, images folded into vectors."""
        return neighbor_pairs_ase(positions, cell, pbc, rcut)

    def select(self, centers, neighbors, vectors, atype_all, nloc, descriptor, model_exclude):
        return select_for(descriptor, centers, neighbors, vectors, atype_all, nloc, model_exclude)

    def evaluate(self, potential, pair_lists, atype_all, atomic_virial: bool):
        return evaluate_model(potential.params, potential.evaluators, pair_lists, atype_all,
                              atomic_virial=atomic_virial, block_atoms=potential.block_atoms)
