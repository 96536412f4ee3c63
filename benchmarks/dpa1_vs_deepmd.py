"""DPA-1 with two attention layers: deepcomp (numba / numpy backends) against DeePMD-kit 3.2, per ASE force call.

Usage:
    python benchmarks/dpa1_vs_deepmd.py [--atoms 500 4000] [--variants ...] [--repeats 5] [--json out.json]
        [--deepmd-python /path/to/python] [--deepmd-pythonpath DIR] [--cache-dir ~/.cache/deepcomp-bench]

The model: DeePMD-kit's default DPA-1 (``dpa1``, concat type embedding, tebd_dim 8, attn_layer 2, attn 32,
attn_dotr, sel 50, rcut 5, rcut_smth 0.5, neuron [25, 50, 100], axis_neuron 16, fitting [240, 240, 240]
with resnet_dt), trained two steps on the test Cu/Au data (speed does not depend on the weights) with
``dp --pt train`` + ``dp --pt freeze`` (dpa1.pth) and, for DeePMD-kit's TensorFlow backend, the same
architecture as ``se_atten`` (attn_mask false, type_embedding [8]) with ``dp --tf train`` + ``dp --tf
freeze`` (dpa1_tf.pb: other weights, the same work per call). DeePMD-kit 3.2 converts neither way
(``dp convert-backend`` of this .pth needs PyTorch and TensorFlow ops together), so the TF graph is a
twin of the .pth (other weights, the same work); deepcomp reads both, so each DeePMD-kit line has a deepcomp
line on the very same file. deepcomp compresses with the default step (0.01, extrapolate 5).

Variants (each in its own subprocess, on the Cu/Au cells of benchmarks/cpu_vs_deepmd.py: the refsuite's
random 50/50 fcc cells of 500 and 4000 atoms; deepcomp through its ASE calculator, DeePMD-kit through
``DeepPot.eval`` -- its ASE calculator is a thin wrapper of it, and DeePMD-kit's Python need not have ASE):

- ``deepcomp-numba-compressed``, ``deepcomp-numba-uncompressed``: ``DeepCompCalculator(..., backend="numba")``
- ``deepcomp-numpy-compressed``: the numpy reference backend (what the numba backend did before)
- ``deepmd-pt``: ``deepmd.infer.DeepPot("dpa1.pth")`` (DeePMD-kit's PyTorch backend)
- ``deepmd-tf``: ``deepmd.infer.DeepPot("dpa1_tf.pb")`` (its TensorFlow backend, uncompressed: it refuses
  to compress models with attention layers)
- ``deepcomp-numba-compressed-tf``, ``deepcomp-numba-uncompressed-tf``: deepcomp on that same TF graph
  (read directly, compressed with the same defaults): the same weights as ``deepmd-tf``; the energy
  difference to it is printed after the table

DeePMD-kit runs with ``--deepmd-python`` (a Python with deepmd-kit 3.2, torch and tensorflow; default: the
venv of benchmarks/cpu_vs_deepmd.py under the cache dir, which has no torch -- pass one that has).
``--deepmd-pythonpath`` is prepended to the PYTHONPATH of its PyTorch runs: on a machine whose DeePMD-kit
PyTorch custom-op library was built for another torch version, a ``sitecustomize.py`` there that points ``deepmd.env``'s
SHARED_LIB_DIR at an empty directory makes DeePMD-kit run its pure-Python PyTorch path (the output
says when such a path was given). Threads: 1 (OMP/OPENBLAS/NUMBA/TF/DP intra-op = 1, inter-op = 1).

Per variant and size: median and minimum of ``--repeats`` force calls after ``--warmup`` calls (one
atom moved by 1e-6 A before each), the first call, and the subprocess's peak
resident memory (ru_maxrss); also the median CPU time of the process per call (all its threads): on a
shared machine wall times move with the other processes' load, CPU times much less. Ratios are within one
run. The machine's load average is printed before and after.
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

VARIANTS = ("deepcomp-numba-compressed", "deepcomp-numba-uncompressed", "deepcomp-numpy-compressed", "deepmd-pt",
            "deepcomp-numba-compressed-tf", "deepcomp-numba-uncompressed-tf", "deepmd-tf")
DESCRIPTOR_PT = {"type": "dpa1", "sel": 50, "rcut_smth": 0.5, "rcut": 5.0, "neuron": [25, 50, 100],
                 "axis_neuron": 16, "tebd_dim": 8, "attn": 32, "attn_layer": 2, "attn_dotr": True,
                 "attn_mask": False, "tebd_input_mode": "concat", "seed": 1}
DESCRIPTOR_TF = {"type": "se_atten", "sel": 50, "rcut_smth": 0.5, "rcut": 5.0, "neuron": [25, 50, 100],
                 "axis_neuron": 16, "attn": 32, "attn_layer": 2, "attn_dotr": True, "attn_mask": False, "seed": 1}
TRAINING = REPO / "tests" / "data" / "training" / "cuau" / "train"


# ------------------------------------------------------------------------------ worker (subprocess)
def worker(variant: str, model: str, cell_file: str, repeats: int, warmup: int) -> dict:
    """One variant on one cell (positions, types, cell from ``cell_file``: DeePMD-kit's Python may lack ASE)."""
    import resource
    import statistics

    import numpy as np

    z = np.load(cell_file)
    pos, types, cell = z["positions"].copy(), z["types"], z["cell"]
    natoms = len(types)
    t0 = time.perf_counter()
    if variant.startswith("deepmd"):
        from deepmd.infer import DeepPot

        dp = DeepPot(model)
        tmap = list(dp.get_type_map())
        atype = np.array([tmap.index(s) for s in ("Cu", "Au")])[types]

        def call():
            e, f, v = dp.eval(pos.reshape(1, -1), cell.reshape(1, 9), atype)
            return float(np.ravel(e)[0]), f.reshape(-1, 3)
    else:
        from ase import Atoms

        from deepcomp_ase import DeepCompCalculator

        atoms = Atoms(symbols=np.array(["Cu", "Au"])[types], positions=pos, cell=cell, pbc=True)
        atoms.calc = DeepCompCalculator(model, backend=variant.split("-")[1])

        def call():
            atoms.positions = pos
            return float(atoms.get_potential_energy()), atoms.get_forces()
    load = time.perf_counter() - t0
    times, cpu = [], []
    first = None
    for k in range(warmup + repeats):
        pos[0, 0] += 1e-6  # a new configuration: ASE recomputes
        t, c = time.perf_counter(), time.process_time()
        energy, f = call()
        dt = time.perf_counter() - t
        if first is None:
            first = dt
        if k >= warmup:
            times.append(dt)
            cpu.append(time.process_time() - c)
    info = {}
    if not variant.startswith("deepmd"):
        pot = atoms.calc.potential
        info = {"backend": pot.backend.name, "compiled": bool(getattr(pot.backend, "handles", lambda m: False)(pot))}
    return {"variant": variant, "natoms": natoms, "median_s": statistics.median(times), "min_s": min(times),
            "cpu_s": statistics.median(cpu),
            "times_s": times, "first_call_s": first, "load_s": load,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "energy": energy, "fmax": float(np.abs(f).max()), **info}


def write_cell(natoms: int, cache: Path) -> Path:
    import numpy as np
    from common import cuau_cell

    atoms = cuau_cell(natoms)
    path = cache / "dpa1" / f"cell_{natoms}.npz"
    np.savez(path, positions=atoms.positions, types=(np.array(atoms.get_chemical_symbols()) == "Au").astype(int),
             cell=np.asarray(atoms.cell))
    return path


# ------------------------------------------------------------------------------ set-up
def thread_env(extra_path: str = "") -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "TF_INTRA_OP_PARALLELISM_THREADS", "DP_INTRA_OP_PARALLELISM_THREADS", "TF_INTER_OP_PARALLELISM_THREADS",
              "DP_INTER_OP_PARALLELISM_THREADS"):
        env[k] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(p for p in [extra_path, str(REPO), str(HERE), env.get("PYTHONPATH", "")] if p)
    return env


def _train(dp: Path, backend: str, descriptor: dict, workdir: Path, out: Path, env: dict) -> None:
    """Two training steps and a freeze: a model of the benchmark's architecture (weights do not matter)."""
    systems = sorted(str(p) for p in TRAINING.iterdir() if p.is_dir())
    model = {"type_map": ["Cu", "Au"], "descriptor": descriptor,
             "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "seed": 1}}
    if backend == "tf":
        model["type_embedding"] = {"neuron": [8], "seed": 1}
    cfg = {"model": model,
           "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 5},
           "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1,
                    "start_pref_v": 0.02, "limit_pref_v": 1},
           "training": {"training_data": {"systems": systems, "batch_size": "auto:64"}, "numb_steps": 2, "seed": 1,
                        "disp_file": "lcurve.out", "disp_freq": 2, "save_freq": 2, "save_ckpt": "model.ckpt"}}
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.json").write_text(json.dumps(cfg, indent=1))
    for args in (["train", "input.json"], ["freeze", "-o", out.name]):
        proc = subprocess.run([str(dp), f"--{backend}", *args], cwd=workdir, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"dp --{backend} {' '.join(args)} failed in {workdir}:\n{proc.stderr[-2000:]}")
    (workdir / out.name).replace(out)


def models(cache: Path, deepmd_py: Path, env_pt: dict, env_tf: dict, variants) -> dict:
    """Paths of the model files, made on first use in the cache dir."""
    mdir = cache / "dpa1"
    mdir.mkdir(parents=True, exist_ok=True)
    dp = deepmd_py.parent / "dp"
    pth, pb, dcz = mdir / "dpa1.pth", mdir / "dpa1_tf.pb", mdir / "dpa1.dcz"
    if not pth.exists():
        print("# dp --pt train + freeze (2 steps): dpa1.pth", flush=True)
        _train(dp, "pt", DESCRIPTOR_PT, mdir / "train_pt", pth, env_pt)
    dcz_tf = mdir / "dpa1_tf.dcz"
    if any(v.endswith("-tf") for v in variants) and not pb.exists():
        print("# dp --tf train + freeze (2 steps): dpa1_tf.pb", flush=True)
        _train(dp, "tf", DESCRIPTOR_TF, mdir / "train_tf", pb, env_tf)
    from deepcomp_ase import compress_model

    if not dcz.exists():
        compress_model(pth, dcz, step=0.01, extrapolate=5)
    if "deepcomp-numba-compressed-tf" in variants and not dcz_tf.exists():
        compress_model(pb, dcz_tf, step=0.01, extrapolate=5)
    return {"deepcomp-numba-compressed": dcz, "deepcomp-numba-uncompressed": pth, "deepcomp-numpy-compressed": dcz,
            "deepmd-pt": pth, "deepcomp-numba-compressed-tf": dcz_tf, "deepcomp-numba-uncompressed-tf": pb,
            "deepmd-tf": pb}


def run_variant(py, variant, model, natoms, cell_file, repeats, warmup, timeout, env) -> dict:
    cmd = [str(py), str(Path(__file__).resolve()), "--worker", variant, "--model", str(model), "--cell", str(cell_file),
           "--repeats", str(repeats), "--warmup", str(warmup)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "natoms": natoms, "error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"variant": variant, "natoms": natoms, "error": proc.stderr[-2000:]}
    from common import last_json

    out = last_json(proc.stdout)
    out["wall_s"] = time.perf_counter() - t
    return out


# ------------------------------------------------------------------------------ report
def table(results: list[dict]) -> str:
    by = {(r["variant"], r["natoms"]): r for r in results if "error" not in r}
    lines = ["| atoms | variant | ms/call (median) | min | CPU ms/call | first call s | peak RSS MB | "
             "DeePMD PT / this | DeePMD TF / this | same, CPU time |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (variant, n), r in sorted(by.items(), key=lambda kv: (kv[0][1], VARIANTS.index(kv[0][0]))):
        pt, tf = by.get(("deepmd-pt", n)), by.get(("deepmd-tf", n))
        rpt = f"{pt['median_s'] / r['median_s']:.2f}x" if pt else "-"
        rtf = f"{tf['median_s'] / r['median_s']:.2f}x" if tf else "-"
        cpu = (f"{pt['cpu_s'] / r['cpu_s']:.2f}x" if pt else "-") + " / " + \
            (f"{tf['cpu_s'] / r['cpu_s']:.2f}x" if tf else "-")
        lines.append(f"| {n} | {variant} | {r['median_s'] * 1e3:.1f} | {r['min_s'] * 1e3:.1f} | "
                     f"{r['cpu_s'] * 1e3:.1f} | {r['first_call_s']:.2f} | {r['peak_rss_mb']:.0f} | {rpt} | {rtf} | {cpu} |")
    for r in results:
        if "error" in r:
            lines.append(f"| {r['natoms']} | {r['variant']} | failed: {r['error'].strip().splitlines()[-1][:80]} "
                         f"| | | | | | | |")
    return "\n".join(lines)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring (this file) "
                                "for the model, the variants and what is measured.")
    p.add_argument("--atoms", type=int, nargs="+", default=[500, 4000], help="cell sizes (500, 4000: refsuite cells)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--deepmd-python", default=None, help="python of a DeePMD-kit 3.2 install with torch and "
                   "tensorflow (default: <cache-dir>/venv/bin/python of cpu_vs_deepmd.py)")
    p.add_argument("--deepmd-pythonpath", default="", help="prepended to the PYTHONPATH of DeePMD-kit's PyTorch runs "
                   "(dp --pt train/freeze, deepmd-pt): e.g. a directory with a sitecustomize.py that disables a "
                   "mismatched PyTorch op library; the TensorFlow runs do not get it")
    p.add_argument("--cache-dir", default=os.environ.get("DEEPCOMP_BENCH_CACHE", "~/.cache/deepcomp-bench"))
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cell", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.cell, args.repeats, args.warmup)))
        return 0

    from common import git_revision, machine

    cache = Path(args.cache_dir).expanduser()
    deepmd_py = Path(args.deepmd_python or cache / "venv" / "bin" / "python")
    envs = {"deepmd-pt": thread_env(args.deepmd_pythonpath), "deepmd-tf": thread_env()}
    our_env = thread_env()
    files = models(cache, deepmd_py, envs["deepmd-pt"], envs["deepmd-tf"], args.variants)
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, deepcomp "
          f"{git_revision()}, 1 thread, load average before: {load_average()}")
    if args.deepmd_pythonpath:
        print(f"# DeePMD-kit ran with PYTHONPATH prefix {args.deepmd_pythonpath} (e.g. its PyTorch custom ops "
              "disabled by a sitecustomize.py there: the pure-Python PyTorch path)")
    print("# deepmd-tf: the same architecture as se_atten, trained separately (other weights, the same work)")
    results = []
    for n in args.atoms:
        cell_file = write_cell(n, cache)
        for v in args.variants:
            py = deepmd_py if v.startswith("deepmd") else Path(sys.executable)
            r = run_variant(py, v, files[v], n, cell_file, args.repeats, args.warmup, args.timeout,
                            envs.get(v, our_env))
            results.append(r)
            msg = (f"failed: {r['error'].strip().splitlines()[-1]}" if "error" in r else
                   f"{r['median_s'] * 1e3:.1f} ms/call (min {r['min_s'] * 1e3:.1f}, CPU {r['cpu_s'] * 1e3:.1f}), "
                   f"{r['peak_rss_mb']:.0f} MB")
            print(f"# {n} atoms, {v}: {msg}", flush=True)
    print(f"# load average after: {load_average()}")
    print(table(results))
    for r in results:  # deepcomp on DeePMD-kit's own TF graph: the same numbers, not only the same work
        ref = next((q for q in results if q["variant"] == "deepmd-tf" and q["natoms"] == r["natoms"]), None)
        if r["variant"].endswith("-tf") and r["variant"] != "deepmd-tf" and ref and "error" not in r and "error" not in ref:
            print(f"# {r['natoms']} atoms, {r['variant']} vs deepmd-tf: energy differs by "
                  f"{abs(r['energy'] - ref['energy']) / r['natoms']:.2e} eV/atom")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "machine": machine(), "revision": git_revision(),
                                               "load_average_end": load_average()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
