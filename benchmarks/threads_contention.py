"""Default thread count on a busy machine: the numba backend's force call with other processes running.

Usage:
    python benchmarks/threads_contention.py [--atoms 500] [--busy 2] [--rounds 3] [--calls 30] [--attribution]

For each load (no extra process, then ``--busy`` busy-loop processes, one per core by default) and each
variant, a subprocess times ``--calls`` ASE force calls (compressed cuau_se_e2_a, numba backend; one atom
moved by 1e-6 A per call) after two warm-up calls; variants alternate for ``--rounds`` rounds. Variants
(thread environment of the subprocess):

* ``1 thread``: OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=NUMBA_NUM_THREADS=1;
* ``default``: no thread variable set (what a fresh user gets);
* ``default, adapt off``: no thread variable, DEEPCOMP_ADAPT_THREADS=0 (a fixed pool of all cores: the
  behaviour before the adaptive default);
* with ``--attribution`` also the fixed pool with numba's workqueue threading layer, and with OpenBLAS on one
  thread.

Reported: median wall ms per call (median over rounds), the process CPU time per call, the threads the
last call used, and each variant's time relative to ``1 thread`` under the same load. The machine's own
background load (other users) is printed with the results: it adds to ``--busy``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO))

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
VARIANTS = {
    "1 thread": {k: "1" for k in THREAD_VARS},
    "default": {},
    "default, adapt off": {"DEEPCOMP_ADAPT_THREADS": "0"},
}
#: --attribution: where the fixed pool loses (numba's workqueue layer instead of OpenMP; BLAS on one thread)
ATTRIBUTION = {
    "adapt off, workqueue layer": {"DEEPCOMP_ADAPT_THREADS": "0", "NUMBA_THREADING_LAYER": "workqueue"},
    "adapt off, OPENBLAS_NUM_THREADS=1": {"DEEPCOMP_ADAPT_THREADS": "0", "OPENBLAS_NUM_THREADS": "1"},
}
BUSY_LOOP = "while True:\n    pass\n"


def worker(model: str, natoms: int, calls: int) -> dict:
    from common import cuau_cell

    from deepcomp_ase import DeepCompCalculator
    from deepcomp_ase.backends import numba_cpu

    atoms = cuau_cell(natoms)
    atoms.calc = DeepCompCalculator(model, backend="numba")
    walls = []
    for k in range(calls + 2):
        if k == 2:
            cpu0 = time.process_time()
        atoms.positions[0, 0] += 1e-6
        t = time.perf_counter()
        atoms.get_forces()
        if k >= 2:
            walls.append(time.perf_counter() - t)
    return {"wall_s": statistics.median(walls), "cpu_s": (time.process_time() - cpu0) / calls,
            "threads": numba_cpu.thread_count(), "energy": float(atoms.get_potential_energy())}


def run(variant: str, model: Path, natoms: int, calls: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in THREAD_VARS and k not in ("DEEPCOMP_ADAPT_THREADS", "NUMBA_THREADING_LAYER")}
    env.update(VARIANTS[variant])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(model), "--atoms", str(natoms),
           "--calls", str(calls)]
    from common import run_worker

    return run_worker(cmd, env, variant)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atoms", type=int, default=500)
    p.add_argument("--busy", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--cache-dir", default=os.environ.get("DEEPCOMP_BENCH_CACHE", "~/.cache/deepcomp-bench"))
    p.add_argument("--attribution", action="store_true", help="also the variants of ATTRIBUTION")
    p.add_argument("--worker", default=None)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.atoms, args.calls)))
        return
    from common import MODELS, git_revision, machine

    from deepcomp_ase import compress_model

    model = Path(args.cache_dir).expanduser() / "models" / "cuau_se_e2_a.dcz"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        compress_model(MODELS / "cuau_se_e2_a.pb", model, step=0.01, extrapolate=5)
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | {machine()} | git {git_revision()} "
          f"| {args.atoms} atoms | load average {os.getloadavg()[0]:.1f} at start", flush=True)
    if args.attribution:
        VARIANTS.update(ATTRIBUTION)
    rows = []
    for busy in (0, args.busy):
        loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
        try:
            res = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for v in VARIANTS:
                    res[v].append(run(v, model, args.atoms, args.calls))
        finally:
            for proc in loops:
                proc.kill()
                proc.wait()
        one = statistics.median(r["wall_s"] for r in res["1 thread"])
        one_cpu = statistics.median(r["cpu_s"] for r in res["1 thread"])
        for v, rs in res.items():
            wall = statistics.median(r["wall_s"] for r in rs)
            cpu = statistics.median(r["cpu_s"] for r in rs)
            rows.append(f"| {busy} | {v} | {wall * 1e3:.1f} | {wall / one:.2f} | {cpu * 1e3:.1f} | {cpu / one_cpu:.2f} | "
                        f"{rs[-1]['threads']} |")
        print(f"# busy loops {busy}: load average {os.getloadavg()[0]:.1f} after", flush=True)
    print("| busy loops | variant | ms/call (wall) | vs 1 thread | CPU ms/call | CPU vs 1 thread | threads used |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
