"""MPI helpers for the LAMMPS bridge: LAMMPS's communicator, node-local rank, tally reduction.

LAMMPS hands its ``world`` communicator over as a Fortran handle (``MPI_Comm_c2f``); mpi4py
turns it back into a communicator with ``MPI.Comm.f2py``. That is valid because mpi4py and
LAMMPS use the same MPI library in the same process (the ``mpich`` wheel's ``libmpi.so.12``).
"""

from __future__ import annotations

import numpy as np

from ..errors import DeepCompError
from ..overflow import OverflowTally


class SerialComm:
    """Stand-in communicator for one rank (no mpi4py needed)."""

    rank = 0
    size = 1

    def Get_rank(self):  # noqa: N802 - mpi4py spelling
        return 0

    def Get_size(self):  # noqa: N802
        return 1


def communicator(comm_f: int, nprocs: int):
    """The mpi4py communicator of LAMMPS's ``world`` (a :class:`SerialComm` for one rank)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        if nprocs > 1:
            raise DeepCompError(
                f"pair_style deepcomp on {nprocs} MPI ranks needs mpi4py (pip install mpi4py); "
                f"importing it failed: {exc}"
            ) from exc
        return SerialComm()
    comm = MPI.Comm.f2py(int(comm_f))
    if comm.Get_size() != nprocs:
        raise DeepCompError(
            f"mpi4py sees {comm.Get_size()} ranks in LAMMPS's communicator, LAMMPS {nprocs}: mpi4py was "
            "built against a different MPI library than LAMMPS; install mpi4py with the mpich wheel "
            "(pip install mpi4py mpich)"
        )
    return comm


def shared_memory_rank(comm) -> int:
    """Rank in ``comm`` split by shared memory (the ranks of this node; collective). The GPU choice
    (``cupy_gpu.select_device``) uses it when no launcher variable gives the node-local rank."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


def reduce_tally(comm, tally: OverflowTally) -> None:
    """Replace this rank's tally by the global one, in place (collective on ``comm``).

    Counts are summed; the worst input is the one furthest beyond its table over all ranks
    (ties go to the lowest rank), with its value, type pair and table bound.
    """
    if comm.Get_size() == 1:
        return
    from mpi4py import MPI

    counts = tally.as_vector()
    total = np.zeros_like(counts)
    comm.Allreduce(counts, total, op=MPI.SUM)
    worst = comm.allgather((tally.worst_excess, tally.worst_x, tuple(tally.worst_key), tally.worst_upper))
    best = max(range(len(worst)), key=lambda r: (worst[r][0], -r))
    tally.n_inputs, tally.n_coarse, tally.n_beyond, tally.n_sel_dropped = (int(round(v)) for v in total)
    tally.worst_excess, tally.worst_x, tally.worst_key, tally.worst_upper = worst[best]


def make_reducer(comm):
    """``reduce`` callable for :meth:`DeepPotential.step_done` (None on one rank)."""
    if comm.Get_size() == 1:
        return None
    return lambda tally: reduce_tally(comm, tally)
