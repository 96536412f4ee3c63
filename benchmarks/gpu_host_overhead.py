"""Host work per step of the CUDA backend, measured without a GPU: a no-op launcher.

Usage: python benchmarks/gpu_host_overhead.py [--steps 200]

The 4000-atom se_e2_a deck (compressed cuau_se_e2_a, the refsuite's 4000-atom Cu/Au cell) runs
one step of ``Backend.compute_device`` with every kernel replaced by a no-op that records its
arguments (numpy arrays stand in for device arrays). The recorded launches are then replayed
through the checked launcher, with the cell-list geometry of the step (the backend's cached
look-up; the full host computation for the uncached figure), and timed: that is the Python work
per step that no kernel needs. Printed twice: with the launch
cache (each signature validated once, the backend's path) and with a full validation at every
launch (before issue 25). Not included: CuPy's own cost per kernel launch and per array operation
(argsort, matmul, fills), which only a GPU can measure (benchmarks/gpu_check.sh).

Times are the process's CPU time per step (time.process_time), which on an idle machine equals
the wall time (printed in brackets) and on a shared one is not inflated by waiting for a core.
The last line is ``host overhead: X us/step (wall)``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import MODELS, cuau_cell  # noqa: E402

from deepcomp_ase.backends.cupy_gpu import Backend, cell_grid  # noqa: E402
from deepcomp_ase.kernels.launch import KERNELS, checked_launch  # noqa: E402
from deepcomp_ase.kernels.loader import KernelContext  # noqa: E402


class NoopKernel:
    """A compiled kernel's stand-in: launches nothing, reports CUDA's thread limit."""

    max_threads_per_block = 1024

    def __call__(self, grid, block, args, shared_mem=0):
        return None


def noop_backend(precision: str = "float64") -> Backend:
    ctx = KernelContext(np, precision, lambda name: NoopKernel(), array_type=np.ndarray)
    return Backend(precision=precision, context=ctx)


def record_step(be: Backend, pot, pos, types, cell, pbc) -> list:
    """The (kernel, arguments) of one step, in launch order."""
    calls = []
    launch = be.ctx.launch

    def recording(name, *args):
        calls.append((name, args))
        return launch(name, *args)

    be.ctx.launch = recording
    be.compute_device(pot, pos, types, cell, pbc)  # first step: uploads, allocates
    calls.clear()
    be.compute_device(pot, pos, types, cell, pbc)
    be.ctx.launch = launch
    return calls


def measure(steps: int = 200, natoms: int = 4000) -> dict:
    from deepcomp_ase.compress.api import compress_model
    from deepcomp_ase.potential import DeepPotential

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cuau_se_e2_a.dcz"
        compress_model(MODELS / "cuau_se_e2_a.dp", path)
        pot = DeepPotential.from_file(path, backend="numpy", check_frequency=-1)
    atoms = cuau_cell(natoms)
    types = pot.types_of(atoms.get_chemical_symbols())
    pos, cell, pbc = atoms.positions.copy(), atoms.cell.array.copy(), np.array([True] * 3)
    be = noop_backend()
    calls = record_step(be, pot, pos, types, cell, pbc)
    ctx = be.ctx
    parts = be.device_model(pot).parts
    noop = NoopKernel()

    st = be._entry(pot)

    def cached_step():
        for part in parts:
            be._device_grid(st, cell, pbc, part.rcut, pos, natoms)
        for name, args in calls:
            ctx.launch(name, *args)

    def checked_step():
        for part in parts:
            cell_grid(cell, pbc, part.rcut, pos)
        for name, args in calls:
            checked_launch(noop, KERNELS[name], args, ctx.fp)

    out = {"atoms": natoms, "launches": len(calls), "steps": steps}
    for label, step in (("uncached", checked_step), ("", cached_step)):
        step()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        prefix = f"{label}_" if label else ""
        out[prefix + "us_per_step"] = (time.process_time() - cpu) / steps * 1e6
        out[prefix + "wall_us_per_step"] = (time.perf_counter() - wall) / steps * 1e6
    out["kernels"] = sorted({name for name, _ in calls})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args(argv)
    row = measure(args.steps)
    print(f"{row['launches']} checked launches per step ({len(row['kernels'])} kernels), {row['atoms']} atoms; "
          "process CPU time per step (wall time in brackets: equal on an idle machine)")
    print(f"full validation at every launch: {row['uncached_us_per_step']:.0f} us/step "
          f"({row['uncached_wall_us_per_step']:.0f})")
    print(f"host overhead: {row['us_per_step']:.0f} us/step ({row['wall_us_per_step']:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
