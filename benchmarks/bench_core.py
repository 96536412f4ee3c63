"""Compressed vs uncompressed deepcomp, per ASE force call, on the refsuite Cu/Au cells.

Usage: python benchmarks/bench_core.py [--atoms 500] [--repeats 5]
Prints the median time per call, us/atom and the ratio, measured in one run.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, cuau_cell, git_revision, machine, median, time_calls  # noqa: E402

from deepcomp_ase import DeepCompCalculator, compress_model  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atoms", type=int, nargs="+", default=[500])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default="cuau_se_e2_a")
    p.add_argument("--backend", default="numpy", help="compute backend (default: numpy, the reference)")
    args = p.parse_args(argv)
    src = MODELS / f"{args.model}.dp"
    with tempfile.TemporaryDirectory() as tmp:
        comp = Path(tmp) / "model.dcz"
        compress_model(src, comp)
        variants = {"uncompressed": DeepCompCalculator(src, backend=args.backend),
                    "compressed": DeepCompCalculator(comp, backend=args.backend)}
        print(f"# {datetime.date.today()} | {machine()} | git {git_revision()} | model {args.model} | "
              f"backend {args.backend}")
        print("| atoms | variant | ms/call (median of %d) | us/atom | speedup |" % args.repeats)
        print("|---|---|---|---|---|")
        for n in args.atoms:
            atoms = cuau_cell(n)
            times = {}
            for name, calc in variants.items():
                a = atoms.copy()
                a.calc = calc

                def call(a=a):
                    a.positions[0, 0] += 1e-6  # force a new evaluation
                    a.get_forces()

                times[name] = median(time_calls(call, args.repeats))
            for name, t in times.items():
                print(f"| {n} | {name} | {t * 1e3:.1f} | {t * 1e6 / n:.0f} | "
                      f"{times['uncompressed'] / t:.2f}x |")


if __name__ == "__main__":
    main()
