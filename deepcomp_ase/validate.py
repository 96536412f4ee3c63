"""Checks of the structures handed to a potential: finite numbers, no two atoms at one place.

Both run where the arrays are in hand anyway and cost one pass over them: positions and cell
in :meth:`DeepPotential.compute_atoms` (O(atoms)), pair vectors in
:meth:`DeepPotential.compute_pairs` (one dot product per pair, the same work as the squared
distances the selection computes). Without them, a NaN position drops the atom silently from
the neighbour search (comparisons with NaN are false) and two atoms at one place divide by a
zero distance in the environment matrix (NaN energies on numpy, an opaque SystemError from the
compiled kernels).
"""

from __future__ import annotations

import numpy as np

from .errors import AtomsTooCloseError, InputError, NonFiniteInputError

#: pairs closer than this (Angstrom) are refused as "two atoms at the same position". No real
#: structure comes near it (the shortest bond, H2, is 0.74 A); below it 1/r^2 terms of the
#: environment matrix lose all meaning and, at r = 0, divide by zero.
MIN_DISTANCE = 1e-3


def _fmt(v) -> str:
    return "[" + ", ".join(f"{float(c):.6g}" for c in np.ravel(v)) + "]"


def check_structure(positions: np.ndarray, cell: np.ndarray | None = None, names=None) -> None:
    """Refuse NaN or inf in the positions (naming the first such atom) or in the cell.

    ``names`` (optional) says how to call atom k (the LAMMPS bridge: by atom ID)."""
    if not np.isfinite(positions).all():
        bad = np.flatnonzero(~np.isfinite(positions).reshape(len(positions), -1).all(axis=1))
        more = f" (and {len(bad) - 1} more atoms)" if len(bad) > 1 else ""
        name = names or (lambda k: f"atom {k}")
        raise NonFiniteInputError(
            f"{name(int(bad[0]))} has position {_fmt(positions[bad[0]])}{more}: positions must be finite numbers "
            "(a diverged simulation? check the time step and the forces of the previous steps)")
    if cell is not None and not np.isfinite(cell).all():
        rows = np.flatnonzero(~np.isfinite(np.reshape(cell, (3, 3))).all(axis=1))
        raise NonFiniteInputError(f"cell vector {int(rows[0])} is {_fmt(np.reshape(cell, (3, 3))[rows[0]])}: "
                                  "the cell must be finite numbers")


def check_pair_vectors(centers: np.ndarray, neighbors: np.ndarray, vectors: np.ndarray) -> None:
    """Refuse non-finite pair vectors and pairs closer than :data:`MIN_DISTANCE`.

    One pass (r^2 of every pair, its minimum and sum); the messages are built only on failure.
    Indices are the caller's (``centers`` local, ``neighbors`` local or ghost/image).
    """
    if not len(vectors):
        return
    r2 = np.einsum("pi,pi->p", vectors, vectors)
    lowest = r2.min()
    if lowest >= MIN_DISTANCE * MIN_DISTANCE and np.isfinite(r2.sum()):
        return
    finite = np.isfinite(r2)
    if not finite.all():
        p = int(np.flatnonzero(~finite)[0])
        raise NonFiniteInputError(
            f"the vector from atom {int(centers[p])} to atom {int(neighbors[p])} is {_fmt(vectors[p])}: "
            "positions must be finite numbers (a diverged simulation? check the time step)")
    close = np.flatnonzero(r2 < MIN_DISTANCE * MIN_DISTANCE)
    p = int(close[np.argmin(r2[close])])
    i, j, d = int(centers[p]), int(neighbors[p]), float(np.sqrt(r2[p]))
    raise too_close_error(i, j, d)


def too_close_error(i: int, j: int, distance: float, names=None) -> AtomsTooCloseError:
    """The error for atoms ``i`` and ``j`` at ``distance``; ``names`` (optional) says how to call atom k."""
    name = names or (lambda k: f"atom {k}")
    return AtomsTooCloseError(
        f"{name(i)} and {name(j)} are {distance:.3g} A apart (closer than {MIN_DISTANCE:g} A): two atoms at the "
        "same position. Remove the duplicate (an atom given twice, or a periodic image of an atom added as "
        "an atom) from the structure", atoms=(i, j), distance=distance)


#: most periodic images of the cell a neighbour search may visit (the product over periodic axes
#: of 2 ceil(rcut / height) + 1). A one-atom metal cell with rcut 6 A needs 343; only a nearly
#: flat cell (a height of a few hundredths of an Angstrom) comes near the limit.
MAX_IMAGES = 100_000
#: most neighbour-search bins of size rcut the structure's extent may span (the searches
#: count bins in 64-bit integers; a system 1e8 A wide would overflow them)
MAX_BINS = 1e15


def check_cell(positions: np.ndarray, cell: np.ndarray, pbc, rcut: float) -> None:
    """Refuse structures whose neighbour search would explode: a nearly flat periodic cell (the
    periodic images to visit grow as rcut / height) or atoms spread over an absurd extent."""
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    extent = np.zeros(3)
    if pbc.any():
        normals = np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]])
        volume = abs(float(np.dot(cell[0], normals[0])))
        norms = np.linalg.norm(normals, axis=1)
        if volume > 0 and np.all(norms[pbc] > 0):
            heights = volume / np.where(norms > 0, norms, 1.0)
            images = np.where(pbc, 2 * np.ceil(rcut / np.where(pbc, heights, 1.0)) + 1, 1.0)
            if float(np.prod(images)) > MAX_IMAGES:
                k = int(np.argmin(np.where(pbc, heights, np.inf)))
                raise InputError(
                    f"cell {np.round(cell, 6).tolist()} is nearly flat: its height along axis {k} is "
                    f"{heights[k]:.3g} A, so the neighbour search within rcut {rcut:g} A would visit "
                    f"{float(np.prod(images)):.3g} periodic images (limit {MAX_IMAGES:,}); give a cell with "
                    "three clearly independent vectors (a reduced cell, e.g. ase.build.niggli_reduce)")
            extent = np.where(pbc, heights, 0.0)
    if len(positions):
        span = positions.max(axis=0) - positions.min(axis=0)
        extent = np.where(pbc, extent, span + 2 * rcut + 1.0)
    bins = float(np.prod(np.maximum(extent / rcut, 1.0)))
    if bins > MAX_BINS:
        raise InputError(
            f"the structure spans {_fmt(extent)} A: {bins:.3g} neighbour-search bins of rcut {rcut:g} A, above the "
            f"limit of {MAX_BINS:.0e}; atoms that far apart do not interact, evaluate the parts separately")
