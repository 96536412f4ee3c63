"""Pair lists: who is a neighbour of whom, and DeePMD-kit's per-type ``sel`` truncation.

Everything downstream works on a flat pair list (centre index, neighbour index, vector).
Neighbour indices point into an "all atoms" array: for ASE the atoms themselves (periodic
images are folded into the vectors), for LAMMPS local plus ghost atoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairList:
    """Pairs sorted by (centre, neighbour type, distance), truncated to ``sel``.

    ``slots_used[i, t]`` counts the neighbour slots of type block ``t`` that atom ``i`` fills
    (pairs excluded by the descriptor's ``exclude_types`` included: they occupy a slot and
    contribute zero); the rest of the block is padding.
    """

    centers: np.ndarray  # (npair,) int64, < nloc
    neighbors: np.ndarray  # (npair,) int64, < nall
    vectors: np.ndarray  # (npair, 3) r_j - r_i
    slots_used: np.ndarray  # (nloc, ntypes) int64
    nloc: int
    nall: int
    n_dropped: int  # neighbours inside rcut beyond sel
    max_per_type: np.ndarray  # (ntypes,) largest neighbour count seen per type


def neighbor_pairs_ase(positions, cell, pbc, rcut: float):
    """All pairs within rcut, periodic images folded into the vectors (ASE's O(N) cell list)."""
    from ase.neighborlist import primitive_neighbor_list

    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        # ASE needs a cell for binning even without periodicity; any box enclosing the atoms works
        span = positions.max(axis=0) - positions.min(axis=0) if len(positions) else np.zeros(3)
        cell = np.diag(span + 2.0 * rcut + 1.0)
        positions = positions - positions.min(axis=0) + rcut if len(positions) else positions
    i, j, d = primitive_neighbor_list("ijD", pbc, cell, positions, rcut, self_interaction=False)
    return i.astype(np.int64), j.astype(np.int64), np.asarray(d, dtype=np.float64)


def rank_in_group(group: np.ndarray, ngroups: int) -> tuple[np.ndarray, np.ndarray]:
    """(position of each element among its group, size of each group) for ``group`` sorted
    ascending: the slot of a pair among its centre's neighbours of one type (one section)."""
    counts = np.bincount(group, minlength=ngroups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(len(group)) - starts[group], counts


def select_neighbors(
    centers: np.ndarray,
    neighbors: np.ndarray,
    vectors: np.ndarray,
    atype_all: np.ndarray,
    nloc: int,
    sel,
    rcut: float,
    descriptor_exclude=frozenset(),
    model_exclude=frozenset(),
    mixed: bool = False,
) -> PairList:
    """Sort pairs by (centre, neighbour type, distance) and keep the ``sel[t]`` nearest per type.

    ``model_exclude`` (model-level pair_exclude_types) turns pairs into padding;
    ``descriptor_exclude`` pairs keep their slot but are removed from the list, since they
    contribute exactly zero. ``mixed`` (se_atten): one block, the ``sel[0]`` nearest of any type.
    """
    sel = np.asarray(sel, dtype=np.int64)
    ntypes = len(sel)
    vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, 3)
    r2 = np.einsum("pi,pi->p", vectors, vectors)
    keep = r2 < rcut * rcut
    centers, neighbors, vectors, r2 = centers[keep], neighbors[keep], vectors[keep], r2[keep]
    tj = np.zeros_like(neighbors) if mixed else atype_all[neighbors]
    order = np.lexsort((r2, tj, centers))
    centers, neighbors, vectors, tj = centers[order], neighbors[order], vectors[order], tj[order]
    # rank of each pair inside its (centre, type) group
    rank, counts = rank_in_group(centers * ntypes + tj, nloc * ntypes)
    within = rank < sel[tj]
    n_dropped = int((~within).sum())
    max_per_type = counts.reshape(nloc, ntypes).max(axis=0) if nloc else np.zeros(ntypes, dtype=np.int64)
    centers, neighbors, vectors, tj = centers[within], neighbors[within], vectors[within], tj[within]
    ti = atype_all[centers]
    if model_exclude:
        mask = np.array([(a, b) not in model_exclude for a, b in zip(ti, atype_all[neighbors])], dtype=bool)
        centers, neighbors, vectors, tj, ti = centers[mask], neighbors[mask], vectors[mask], tj[mask], ti[mask]
    slots = np.bincount(centers * ntypes + tj, minlength=nloc * ntypes).reshape(nloc, ntypes)
    if descriptor_exclude:
        mask = np.array([(a, b) not in descriptor_exclude for a, b in zip(ti, atype_all[neighbors])], dtype=bool)
        centers, neighbors, vectors = centers[mask], neighbors[mask], vectors[mask]
    return PairList(
        centers=centers, neighbors=neighbors, vectors=vectors, slots_used=slots, nloc=nloc,
        nall=len(atype_all), n_dropped=n_dropped, max_per_type=max_per_type,
    )
