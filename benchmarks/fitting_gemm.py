"""The fitting net's products: deepcomp's compiled kernel (backends/numba_gemm.py) against numpy's BLAS.

Usage:
    python benchmarks/fitting_gemm.py [--model tests/data/models/cuau_se_e2_a.dp] [--rows 54 512 4000]
        [--rounds 3] [--threads 1]

For the layer shapes of the model's fitting net (forward x W and backward g W^T of every layer wider than 8),
and for the whole net of one type (`numba_cpu._Fitting.energy_and_grad`, value and input gradient), each variant in
its own process, alternating for ``--rounds`` rounds (a busy machine slows all alike):

* ``numba``: DEEPCOMP_FITTING_GEMM=numba (the kernel compiled for this CPU);
* ``blas``: DEEPCOMP_FITTING_GEMM=blas, numpy's BLAS in this environment (OPENBLAS_CORETYPE as set);
* ``blas-auto``: the same with OPENBLAS_CORETYPE removed (OpenBLAS picks its kernels for this CPU).

Reported: median over rounds of the median time per call (CPU time of the process), GFLOPS of the products, and
the ratios blas/numba and blas-auto/numba.
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

VARIANTS = {"numba": ("numba", ()), "blas": ("blas", ()), "blas-auto": ("blas", ("OPENBLAS_CORETYPE",))}


def _per_call(fn, seconds=0.3):
    """Median CPU time of one call over batches filling about ``seconds``."""
    fn()
    t = time.process_time()
    fn()
    one = max(time.process_time() - t, 1e-6)
    batch = max(1, int(0.05 / one))
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t = time.process_time()
        for _ in range(batch):
            fn()
        times.append((time.process_time() - t) / batch)
    return statistics.median(times)


def worker(model: str, rows: list[int]) -> list[dict]:
    import numpy as np

    from deepcomp_ase.backends import numba_cpu
    from deepcomp_ase.potential import DeepPotential

    pot = DeepPotential.from_file(model, backend="numba")
    fitting = numba_cpu._Fitting(pot.params, "float64")
    layers = next(net for net in fitting.nets if net is not None)
    rng = np.random.default_rng(0)
    out = []
    for n in rows:
        for la in layers:
            k, m = la.w.shape
            if min(k, m) < 8:
                continue
            for name, a, op in (("x W", rng.standard_normal((n, k)), la.fwd or la.w),
                                ("g W^T", rng.standard_normal((n, m)), la.bwd or la.wt)):
                blas = isinstance(op, np.ndarray)  # else numba_gemm.PackedWeights
                c = np.empty((n, op.shape[1] if blas else op.n))
                fn = (lambda a=a, op=op, c=c: np.matmul(a, op, out=c)) if blas else \
                    (lambda a=a, op=op, c=c: op.matmul(a, out=c))
                t = _per_call(fn)
                out.append({"rows": n, "what": f"{name} {a.shape[1]}x{c.shape[1]}", "s": t,
                            "gflops": 2 * n * a.shape[1] * c.shape[1] / t / 1e9})
        x0 = rng.standard_normal((n, layers[0].w.shape[0])) * 0.1
        x = x0.copy()

        def net(x=x, x0=x0):
            x[...] = x0
            fitting.energy_and_grad(0, x)

        out.append({"rows": n, "what": "whole net (value + gradient)", "s": _per_call(net), "gflops": float("nan")})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "tests" / "data" / "models" / "cuau_se_e2_a.dp"))
    p.add_argument("--rows", type=int, nargs="+", default=[54, 512, 4000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.model, args.rows)))
        return
    from common import git_revision, machine, run_worker
    from cpu_vs_deepmd import thread_env

    env = thread_env(args.threads)
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | {machine()} | git {git_revision()} | "
          f"{args.threads} thread(s) | OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} | "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    res = {}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", args.model, "--rows",
           *map(str, args.rows)]
    for _ in range(args.rounds):
        for v, (choice, unset) in VARIANTS.items():
            venv = {k: x for k, x in env.items() if k not in unset}
            venv["DEEPCOMP_FITTING_GEMM"] = choice
            for r in run_worker(cmd, venv, v):
                res.setdefault((r["rows"], r["what"]), {}).setdefault(v, []).append(r)
    print(f"# load average {os.getloadavg()[0]:.1f} at end")
    print("| rows | product | numba ms (GFLOPS) | blas ms (GFLOPS) | blas-auto ms (GFLOPS) | blas / numba | "
          "blas-auto / numba |")
    print("|---|---|---|---|---|---|---|")
    for (n, what), by in res.items():
        med = {v: (statistics.median(r["s"] for r in rs), statistics.median(r["gflops"] for r in rs))
               for v, rs in by.items()}
        cells = [f"{med[v][0] * 1e3:.3f}" + (f" ({med[v][1]:.0f})" if med[v][1] == med[v][1] else "")
                 for v in VARIANTS]
        print(f"| {n} | {what} | {' | '.join(cells)} | {med['blas'][0] / med['numba'][0]:.2f}x | "
              f"{med['blas-auto'][0] / med['numba'][0]:.2f}x |")


if __name__ == "__main__":
    main()
