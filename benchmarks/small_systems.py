"""Small cells: deepcomp (numba, compressed) against DeePMD-kit 3.2 compressed, per ASE force + stress call.

Usage:
    python benchmarks/small_systems.py [--sizes 4 32 108 500] [--rounds 3] [--calls 200]
        [--cache-dir ~/.cache/deepcomp-bench] [--threads 1]

Cells: ``common.cuau_cell`` (fcc Cu/Au, 4 k^3 atoms below 500, the refsuite cell at 500). Each variant runs
in its own subprocess through its ASE calculator (``DeepCompCalculator`` / ``deepmd.calculator.DP``), and
the variants alternate for ``--rounds`` rounds, so that a busy machine slows all alike (``deepcomp-blas-auto``:
deepcomp with OPENBLAS_CORETYPE removed from the environment, i.e. OpenBLAS's own choice of kernels). Per
call: one atom moved by 1e-6 A, then ``get_forces()`` and ``get_stress()`` (one calculation). Reported per
variant and size: the median over rounds of the median wall time per call, the process CPU time per call
(``time.process_time``, which other processes' load inflates much less), and the DeePMD/deepcomp ratios of
both. ``fixed`` is the intercept of a least-squares line through the CPU times against the atom count.

DeePMD-kit comes from the environment and model cache of ``cpu_vs_deepmd.py`` (``--cache-dir``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO))

VARIANTS = ("deepcomp-compressed", "deepcomp-blas-auto", "deepmd-compressed")
#: variables removed from the environment of a variant: deepcomp-blas-auto = OpenBLAS picks its own kernels
UNSET_ENV = {"deepcomp-blas-auto": ("OPENBLAS_CORETYPE",)}


def worker(variant: str, model: str, natoms: int, calls: int, warmup: int) -> dict:
    import numpy as np
    from common import cuau_cell

    atoms = cuau_cell(natoms)
    if variant.startswith("deepmd"):
        from deepmd.calculator import DP

        calc = DP(model)
    else:
        from deepcomp_ase import DeepCompCalculator

        calc = DeepCompCalculator(model)
    atoms.calc = calc
    walls = []
    for k in range(warmup + calls):
        if k == warmup:
            cpu0 = time.process_time()
        atoms.positions[0, 0] += 1e-6  # a new configuration: ASE recomputes
        t = time.perf_counter()
        atoms.get_forces()
        atoms.get_stress()
        if k >= warmup:
            walls.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / calls
    return {"variant": variant, "natoms": natoms, "wall_s": statistics.median(walls), "cpu_s": cpu,
            "energy": float(atoms.get_potential_energy()), "stress0": float(np.asarray(atoms.get_stress())[0])}


def run(py, variant, model, natoms, calls, warmup, env) -> dict:
    cmd = [str(py), str(Path(__file__).resolve()), "--worker", variant, "--model", str(model), "--sizes",
           str(natoms), "--calls", str(calls), "--warmup", str(warmup)]
    from common import run_worker

    return run_worker(cmd, env, f"{variant} {natoms}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 32, 108, 500])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--cache-dir", default=os.environ.get("DEEPCOMP_BENCH_CACHE", "~/.cache/deepcomp-bench"))
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None)
    p.add_argument("--model", default=None)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.sizes[0], args.calls, args.warmup)))
        return
    import numpy as np
    from common import git_revision, machine
    from cpu_vs_deepmd import deepmd_python, models, thread_env

    cache = Path(args.cache_dir).expanduser()
    py_dp = deepmd_python(cache)
    paths = models(cache, py_dp)
    pys = {"deepcomp-compressed": sys.executable, "deepcomp-blas-auto": sys.executable, "deepmd-compressed": py_dp}
    paths["deepcomp-blas-auto"] = paths["deepcomp-compressed"]
    env = thread_env(args.threads)
    load = os.getloadavg()
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | {machine()} | git {git_revision()} | "
          f"{args.threads} thread(s) | OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} | "
          f"load average {load[0]:.1f} at start", flush=True)
    res = {}
    for n in args.sizes:
        for _ in range(args.rounds):
            for v in args.variants:
                calls = max(5, min(args.calls, int(args.calls * 108 / n)))
                venv = {k: x for k, x in env.items() if k not in UNSET_ENV.get(v, ())}
                res.setdefault((v, n), []).append(run(pys[v], v, paths[v], n, calls, args.warmup, venv))
    print(f"# load average {os.getloadavg()[0]:.1f} at end")
    print("| atoms | variant | ms/call (wall) | ms/call (CPU) | DeePMD/deepcomp wall | DeePMD/deepcomp CPU |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for (v, n), rs in sorted(res.items(), key=lambda kv: (kv[0][1], VARIANTS.index(kv[0][0]))):
        summary[(v, n)] = (statistics.median(r["wall_s"] for r in rs), statistics.median(r["cpu_s"] for r in rs))
    for (v, n), (wall, cpu) in summary.items():
        ref = summary.get(("deepmd-compressed", n))
        ratio = f"{ref[0] / wall:.2f}x | {ref[1] / cpu:.2f}x" if ref else "- | -"
        print(f"| {n} | {v} | {wall * 1e3:.2f} | {cpu * 1e3:.2f} | {ratio} |")
    for v in args.variants:
        pts = [(n, summary[(v, n)][1]) for n in args.sizes if (v, n) in summary]
        if len(pts) >= 2:
            slope, fixed = np.polyfit([n for n, _ in pts], [c for _, c in pts], 1)
            print(f"# {v}: CPU time = {fixed * 1e3:.2f} ms fixed + {slope * 1e6:.1f} us/atom (least squares)")
    if args.json:
        Path(args.json).write_text(json.dumps([r for rs in res.values() for r in rs], indent=1))


if __name__ == "__main__":
    main()
