"""The compiled CPU backend (numba) against the numpy reference, per descriptor, in one run.

Usage: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/cpu_backends.py [--atoms 4000] [--repeats 5]

For one refsuite model per descriptor (se_e2_a, se_atten_v2 from its TensorFlow graph, se_e2_r, the
se_e2_a + se_e2_r hybrid, and se_e3 with its own kernels): compressed model,
ASE calculator, median time per force call (positions nudged so every call recomputes), us/atom
and the numba/numpy ratio.
Compile time is kept out (one warm-up call). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import MODELS, cuau_cell, git_revision, machine, median, time_calls  # noqa: E402

from deepcomp_ase import DeepCompCalculator, compress_model  # noqa: E402

#: model -> source file (the se_atten_v2 .dp needs a training script to compress; the .pb has min_nbor_dist)
CASES = {"cuau_se_e2_a": "cuau_se_e2_a.dp", "cuau_se_atten_v2": "cuau_se_atten_v2.pb",
         "cuau_se_e2_r": "cuau_se_e2_r.dp", "cuau_hybrid": "cuau_hybrid.dp", "cuau_se_e3": "cuau_se_e3.dp"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atoms", type=int, default=4000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", nargs="+", default=list(CASES))
    args = p.parse_args(argv)
    atoms0 = cuau_cell(args.atoms)
    print(f"# {datetime.date.today()} | {machine()} | git {git_revision()} | {len(atoms0)} atoms, compressed")
    print("| model | numpy ms/call | numba ms/call | numba us/atom | numba handles it | speedup |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            comp = Path(tmp) / f"{name}.dcz"
            compress_model(MODELS / CASES[name], comp)
            times, handled = {}, False
            for backend in ("numpy", "numba"):
                calc = DeepCompCalculator(comp, backend=backend)
                a = atoms0.copy()
                a.calc = calc
                if backend == "numba":
                    pot = calc.potential
                    handled = pot.backend.handles(pot)

                def call(a=a):
                    a.positions[0, 0] += 1e-6  # force a new evaluation
                    a.get_forces()

                times[backend] = median(time_calls(call, args.repeats))
            n = len(atoms0)
            print(f"| {name} | {times['numpy'] * 1e3:.0f} | {times['numba'] * 1e3:.0f} | "
                  f"{times['numba'] * 1e6 / n:.1f} | {'yes' if handled else 'no (numpy)'} | "
                  f"{times['numpy'] / times['numba']:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
