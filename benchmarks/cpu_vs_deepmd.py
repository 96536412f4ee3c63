"""deepcomp (numba CPU backend) against DeePMD-kit 3.2 on the refsuite Cu/Au cells, per ASE force call.

Usage:
    python benchmarks/cpu_vs_deepmd.py [--sizes 500 4000 32000] [--threads 1 all] [--model-name cuau_se_e3]
        [--cache-dir ~/.cache/deepcomp-bench] [--repeats 5] [--plot docs/cpu_vs_deepmd.png]

Variants, each run in its own subprocess through its ASE calculator (both sides pay the same
Python costs): deepcomp compressed / uncompressed (``DeepCompCalculator``, numba backend) and
DeePMD-kit original / compressed (``deepmd.calculator.DP``, TensorFlow backend). DeePMD-kit lives
in its own virtual environment under the cache dir (``deepmd-kit==3.2.0``, ``tensorflow-cpu==2.21.0``,
``ase``), installed on first use; its compressed model is made there with
``dp --tf compress -i cuau_se_e2_a.pb -o cuau_se_e2_a-compress.pb`` (default -s 0.01 -e 5; deepcomp
compresses with the same step and extrapolation).

Per variant, size and thread count: the median time of ``--repeats`` force calls after warm-up
(one atom moved by 1e-6 A before each call so that ASE recomputes), in us per atom, the first
call (model load excluded; includes numba's cache load or TF's graph set-up) and the peak
resident memory of the subprocess (its own ``ru_maxrss``). Threads: OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS, NUMBA_NUM_THREADS, TF_/DP_INTRA_OP_PARALLELISM_THREADS = n and the
INTER_OP ones = 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO))

DEEPMD_PINS = ["deepmd-kit==3.2.0", "tensorflow-cpu==2.21.0", "ase"]
MODEL = "cuau_se_e2_a"  # default; --model-name cuau_se_e3 measures the se_e3 kernels
MODEL_NAMES = ("cuau_se_e2_a", "cuau_se_e3")
VARIANTS = ("deepcomp-compressed", "deepcomp-uncompressed", "deepmd-original", "deepmd-compressed")


# ------------------------------------------------------------------------------ worker (subprocess)
def worker(variant: str, model: str, natoms: int, repeats: int, warmup: int) -> dict:
    import resource
    import statistics

    import numpy as np
    from common import cuau_cell

    atoms = cuau_cell(natoms)
    t0 = time.perf_counter()
    if variant.startswith("deepmd"):
        from deepmd.calculator import DP

        calc = DP(model)
    else:
        from deepcomp_ase import DeepCompCalculator

        calc = DeepCompCalculator(model)
    load = time.perf_counter() - t0
    atoms.calc = calc
    times = []
    first = None
    for k in range(warmup + repeats):
        atoms.positions[0, 0] += 1e-6  # a new configuration: ASE recomputes
        t = time.perf_counter()
        f = atoms.get_forces()
        dt = time.perf_counter() - t
        if first is None:
            first = dt
        if k >= warmup:
            times.append(dt)
    info = {}
    if not variant.startswith("deepmd"):
        from deepcomp_ase.backends import numba_cpu

        backend = calc.potential.backend
        info = {"backend": backend.name, "threads": numba_cpu.thread_count(),
                "neighbor_builds": getattr(backend, "n_builds", None)}
    return {
        "variant": variant, "natoms": natoms, "median_s": statistics.median(times), "min_s": min(times),
        "times_s": times, "first_call_s": first, "load_s": load,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "energy": float(atoms.get_potential_energy()), "fmax": float(np.abs(f).max()), **info,
    }


# ------------------------------------------------------------------------------ set-up
def deepmd_python(cache: Path) -> Path:
    """The DeePMD-kit venv's python, installed on first use."""
    venv = cache / "venv"
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import deepmd, tensorflow, ase; print(deepmd.__version__, tensorflow.__version__)"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    print(f"# installing {' '.join(DEEPMD_PINS)} into {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *DEEPMD_PINS], check=True)
    subprocess.run(probe, check=True)
    return py


def models(cache: Path, py: Path, name: str = MODEL) -> dict:
    """Paths of the four model files (compressing as needed)."""
    src = REPO / "tests" / "data" / "models" / f"{name}.pb"
    mdir = cache / "models"
    mdir.mkdir(parents=True, exist_ok=True)
    dp_comp = mdir / f"{name}-compress.pb"
    if not dp_comp.exists():
        local = mdir / f"{name}.pb"
        local.write_bytes(src.read_bytes())
        print("# dp --tf compress (DeePMD-kit's compressed model)", flush=True)
        subprocess.run([str(py.parent / "dp"), "--tf", "compress", "-i", local.name, "-o", dp_comp.name],
                       cwd=mdir, check=True, capture_output=True)
    ours = mdir / f"{name}.dcz"
    if not ours.exists():
        from deepcomp_ase import compress_model

        compress_model(src, ours, step=0.01, extrapolate=5)
    return {"deepcomp-compressed": ours, "deepcomp-uncompressed": src, "deepmd-original": src,
            "deepmd-compressed": dp_comp}


def thread_env(n: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "TF_INTRA_OP_PARALLELISM_THREADS", "DP_INTRA_OP_PARALLELISM_THREADS"):
        env[k] = str(n)
    for k in ("TF_INTER_OP_PARALLELISM_THREADS", "DP_INTER_OP_PARALLELISM_THREADS"):
        env[k] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")])
    return env


def run_variant(py, variant, model, natoms, threads, repeats, warmup, timeout) -> dict:
    cmd = [str(py), str(Path(__file__).resolve()), "--worker", variant, "--model", str(model), "--sizes", str(natoms),
           "--repeats", str(repeats), "--warmup", str(warmup)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"variant": variant, "natoms": natoms, "threads": threads, "error": proc.stderr[-2000:]}
    from common import last_json

    out = last_json(proc.stdout)
    out.update(threads=threads, wall_s=time.perf_counter() - t)
    return out


# ------------------------------------------------------------------------------ report
def table(results: list[dict]) -> str:
    by = {(r["variant"], r["natoms"], r["threads"]): r for r in results if "error" not in r}
    lines = ["| atoms | threads | variant | us/step/atom | ms/step | first call s | peak RSS MB | "
             "vs DeePMD orig | vs DeePMD compr |", "|---|---|---|---|---|---|---|---|---|"]
    for (variant, n, th), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2], VARIANTS.index(kv[0][0]))):
        us = r["median_s"] * 1e6 / n
        orig = by.get(("deepmd-original", n, th))
        comp = by.get(("deepmd-compressed", n, th))
        ro = f"{orig['median_s'] / r['median_s']:.2f}x" if orig else "-"
        rc = f"{comp['median_s'] / r['median_s']:.2f}x" if comp else "-"
        lines.append(f"| {n} | {th} | {variant} | {us:.1f} | {r['median_s'] * 1e3:.1f} | {r['first_call_s']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {ro} | {rc} |")
    for r in results:
        if "error" in r:
            lines.append(f"| {r['natoms']} | {r['threads']} | {r['variant']} | failed | | | | | |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "error" not in r]
    threads = sorted({r["threads"] for r in ok})
    fig, axes = plt.subplots(1, len(threads) + 1, figsize=(5 * (len(threads) + 1), 4.2))
    styles = {"deepcomp-compressed": "o-", "deepcomp-uncompressed": "o--", "deepmd-original": "s--",
              "deepmd-compressed": "s-"}
    for ax, th in zip(axes, threads):
        for v in VARIANTS:
            rs = sorted((r for r in ok if r["variant"] == v and r["threads"] == th), key=lambda r: r["natoms"])
            if rs:
                ax.plot([r["natoms"] for r in rs], [r["median_s"] * 1e6 / r["natoms"] for r in rs], styles[v],
                        label=v)
        ax.set(xscale="log", yscale="log", xlabel="atoms", ylabel="us / step / atom",
               title=f"{th} thread{'s' if th > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
    ax = axes[-1]
    th = threads[0]
    for v in VARIANTS:
        rs = sorted((r for r in ok if r["variant"] == v and r["threads"] == th), key=lambda r: r["natoms"])
        if rs:
            ax.plot([r["natoms"] for r in rs], [r["peak_rss_mb"] for r in rs], styles[v], label=v)
    ax.set(xscale="log", yscale="log", xlabel="atoms", ylabel="peak RSS (MB)", title=f"memory, {th} thread")
    ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 4000, 32000])
    p.add_argument("--threads", nargs="+", default=["1", "all"], help="thread counts; 'all' = every core")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--model-name", default=MODEL, choices=MODEL_NAMES, help="refsuite model (tests/data/models)")
    p.add_argument("--cache-dir", default=os.environ.get("DEEPCOMP_BENCH_CACHE", "~/.cache/deepcomp-bench"))
    p.add_argument("--plot", default=str(REPO / "docs" / "cpu_vs_deepmd.png"))
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.sizes[0], args.repeats, args.warmup)))
        return
    from common import git_revision, machine

    cache = Path(args.cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    py_dp = deepmd_python(cache)
    paths = models(cache, py_dp, args.model_name)
    threads = sorted({os.cpu_count() if t == "all" else int(t) for t in args.threads})
    header = (f"{datetime.datetime.now():%Y-%m-%d %H:%M} | {machine()} | git {git_revision()} | "
              f"model {args.model_name} | repeats {args.repeats} (fewer for slow variants at large sizes)")
    print("#", header, flush=True)
    results = []
    for n in args.sizes:
        for th in threads:
            for v in args.variants:
                slow = n >= 32000 and v in ("deepcomp-uncompressed", "deepmd-original")
                reps = max(2, args.repeats // 2) if slow else args.repeats
                warm = 1 if slow else args.warmup
                py = py_dp if v.startswith("deepmd") else Path(sys.executable)
                r = run_variant(py, v, paths[v], n, th, reps, warm, args.timeout)
                results.append(r)
                if "error" in r:
                    print(f"# {v} {n} atoms {th} threads FAILED: {r['error'][-300:]}", flush=True)
                else:
                    print(f"# {v:22s} {n:6d} atoms {th} thr: {r['median_s'] * 1e6 / n:8.1f} us/atom, "
                          f"{r['peak_rss_mb']:7.0f} MB, E={r['energy']:.6f}", flush=True)
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "results": results}, indent=1))
    if args.plot:
        plot(results, Path(args.plot), header)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
