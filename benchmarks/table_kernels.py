"""The fused table kernels of the compiled CPU backend alone, per kernel, optionally against an older copy.

Usage: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/table_kernels.py MODEL.dcz [--atoms 4000]
       [--repeats 15] [--baseline OLD_numba_kernels.py]

One force+virial call of the ASE calculator (numba backend) on benchmarks/common.py's Cu/Au cell records
the arguments of every call of embedding_inputs, tabulate_forward(_r), tabulate_backward(_r) and
assemble_forces_virial; each kernel is then re-run on those arguments and timed (sum over the chunks of
one call, median of the repeats). With --baseline (e.g. ``git show REV:deepcomp_ase/backends/numba_kernels.py
> old.py``) the same arguments go through the old kernels too, interleaved with the new ones (alternating which
runs first) so both see the same machine load; the table gives both times, the ratio and the largest relative difference of
the outputs (the kernels must agree to ~1e-15). Compile time is kept out (one warm-up run each).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import cuau_cell, git_revision, machine, median  # noqa: E402

from deepcomp_ase import DeepCompCalculator  # noqa: E402
from deepcomp_ase.backends import numba_cpu  # noqa: E402

KERNELS = ("embedding_inputs", "tabulate_forward", "tabulate_forward_r", "tabulate_backward", "tabulate_backward_r",
           "assemble_forces_virial")
#: positions of the arguments each kernel writes (restored before every run, compared between versions)
OUTPUTS = {"tabulate_forward": (-2, -1), "tabulate_forward_r": (-1,), "tabulate_backward": (-1,),
           "tabulate_backward_r": (-1,), "assemble_forces_virial": (-3, -2)}


def record_calls(model, atoms):
    """Arguments of every kernel call of one force+virial evaluation (copies, in call order)."""
    K = numba_cpu._kernels()
    calls = []
    originals = {name: getattr(K, name) for name in KERNELS}

    def recorder(name):
        def run(*args):
            calls.append((name, tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)))
            return originals[name](*args)
        return run

    atoms.calc = DeepCompCalculator(model, backend="numba")
    atoms.get_forces()  # compile and warm up with the real kernels
    atoms.positions[0, 0] += 1e-6
    try:
        for name in KERNELS:
            setattr(K, name, recorder(name))
        atoms.get_stress()
    finally:
        for name, fn in originals.items():
            setattr(K, name, fn)
    return calls


def load_baseline(path: Path):
    """An older numba_kernels.py as a sibling module of the current one (its relative imports work)."""
    name = "deepcomp_ase.backends._baseline_kernels"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # numba's on-disk cache finds the module by name
    spec.loader.exec_module(mod)
    return mod


def run_once(module, name, args):
    """Time one kernel call on fresh copies of its output arguments; return (seconds, outputs)."""
    args = list(args)
    for pos in OUTPUTS.get(name, ()):
        args[pos] = args[pos].copy()
    t = time.perf_counter()
    ret = getattr(module, name)(*args)
    dt = time.perf_counter() - t
    outs = [args[pos] for pos in OUTPUTS.get(name, ())]
    if ret is not None:
        outs += list(ret) if isinstance(ret, tuple) else [ret]
    return dt, outs


def max_rel_diff(a_outs, b_outs) -> float:
    worst = 0.0
    for a, b in zip(a_outs, b_outs):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.size:
            scale = max(float(np.abs(b).max()), 1e-300)
            worst = max(worst, float(np.abs(a - b).max()) / scale)
    return worst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a compressed model (.dcz)")
    p.add_argument("--atoms", type=int, default=4000)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--baseline", type=Path, help="an older numba_kernels.py to time side by side")
    args = p.parse_args(argv)
    current = numba_cpu._kernels()
    versions = {"new": current}
    if args.baseline:
        versions["old"] = load_baseline(args.baseline)
    calls = record_calls(args.model, cuau_cell(args.atoms))
    names = [n for n in KERNELS if any(c[0] == n for c in calls)]
    times = {(v, n): [] for v in versions for n in names}
    diffs = {n: 0.0 for n in names}
    for rep in range(args.repeats + 1):  # the first round compiles and is not timed
        for n in names:
            outs = {}
            order = list(versions.items())
            for v, mod in (order if rep % 2 else order[::-1]):  # alternate which version runs first
                total = 0.0
                outs[v] = []
                for name, a in calls:
                    if name == n:
                        dt, o = run_once(mod, n, a)
                        total += dt
                        outs[v] += o
                if rep:
                    times[(v, n)].append(total)
            if "old" in outs:
                diffs[n] = max(diffs[n], max_rel_diff(outs["new"], outs["old"]))
    print(f"# {datetime.date.today()} | {machine()} | git {git_revision()} | {args.model.name}, {args.atoms} atoms, "
          f"median of {args.repeats}, ms per force+virial call (sum over chunks)")
    if args.baseline:
        print("| kernel | old ms | new ms | old/new | max rel diff |")
        print("|---|---|---|---|---|")
    else:
        print("| kernel | ms |")
        print("|---|---|")
    for n in names:
        new = median(times[("new", n)]) * 1e3
        if args.baseline:
            old = median(times[("old", n)]) * 1e3
            print(f"| {n} | {old:.2f} | {new:.2f} | {old / new:.2f} | {diffs[n]:.1e} |")
        else:
            print(f"| {n} | {new:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
