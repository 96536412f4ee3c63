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

from .errors import AtomsTooCloseError, NonFiniteInputError

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
