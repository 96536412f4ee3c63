"""Shared helpers of the benchmark scripts: structures, timing, machine description."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = REPO / "tests" / "data" / "models"


def cuau_cell(natoms: int):
    """The refsuite's random 50/50 Cu/Au fcc cells (500 or 4000 atoms), a repeat of the 4000 one, or, below
    500 atoms, a cubic fcc cell of 4 k^3 atoms (a = 3.85 A, as the refsuite cells) with random 50/50 types
    and positions rattled by 0.05 A (fixed seed)."""
    from ase.io import read

    if natoms < 500:
        from ase.build import bulk

        k = round((natoms / 4) ** (1 / 3))
        if 4 * k ** 3 != natoms:
            raise ValueError(f"small cells have 4 k^3 atoms (4, 32, 108, 256), not {natoms}")
        atoms = bulk("Cu", "fcc", a=3.85, cubic=True).repeat(k)
        rng = np.random.default_rng(natoms)
        symbols = np.array(atoms.get_chemical_symbols())
        symbols[rng.permutation(natoms)[: natoms // 2]] = "Au"
        atoms.set_chemical_symbols(symbols)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        return atoms
    if natoms in (500, 4000):
        atoms = read(HERE / "data" / f"cuau_{natoms}.lmp", format="lammps-data", atom_style="atomic")
    else:
        base = read(HERE / "data" / "cuau_4000.lmp", format="lammps-data", atom_style="atomic")
        reps = round((natoms / 4000) ** (1 / 3))
        atoms = base.repeat(reps)
    # LAMMPS type 1 = Cu, 2 = Au (pair_coeff * * Cu Au)
    types = atoms.get_array("type") if "type" in atoms.arrays else atoms.numbers
    atoms.set_chemical_symbols(np.where(np.asarray(types) == 1, "Cu", "Au"))
    return atoms


def time_calls(fn, repeats: int = 5, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(xs):
    return statistics.median(xs)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def last_json(stdout: str):
    """The result a worker subprocess printed: the JSON of its last output line that starts with '{' or '['
    (libraries may print before it)."""
    import json

    return json.loads([ln for ln in stdout.splitlines() if ln.startswith(("{", "["))][-1])


def run_worker(cmd, env, what: str, timeout: float = 1800):
    """Run one worker subprocess of a benchmark script and return its :func:`last_json`; a failure raises
    RuntimeError with ``what`` and the end of its stderr."""
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: {proc.stderr[-2000:]}")
    return last_json(proc.stdout)
