"""deepcomp_ase.config lists every DEEPCOMP_* variable the sources read, and the docs show that list."""

from __future__ import annotations

import re
from pathlib import Path

from deepcomp_ase import config

ROOT = Path(__file__).resolve().parents[1]
# a variable read from the environment: a quoted name in Python, getenv("...") in the plugin
PY_NAME = re.compile(r"""["'](DEEPCOMP_[A-Z0-9_]+)["']""")
CPP_NAME = re.compile(r"""getenv(?:_str)?\(\s*"(DEEPCOMP_[A-Z0-9_]+)"\s*\)""")


def test_every_variable_read_is_listed():
    found = {}
    for path in list((ROOT / "deepcomp_ase").rglob("*.py")) + list((ROOT / "benchmarks").rglob("*.py")):
        for name in PY_NAME.findall(path.read_text()):
            found.setdefault(name, path)
    for path in (ROOT / "plugin").rglob("*.cpp"):
        for name in CPP_NAME.findall(path.read_text()):
            found.setdefault(name, path)
    assert "DEEPCOMP_GPU_PRECISION" in found and "DEEPCOMP_IGNORE_LAMMPS_VERSION" in found  # the scan works
    missing = {name: str(path.relative_to(ROOT)) for name, path in found.items() if name not in config.SETTINGS}
    assert not missing, f"add these to deepcomp_ase/config.py SETTINGS: {missing}"


def test_docs_show_the_list():
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert config.describe() in text


def test_get_uses_environment_then_default(monkeypatch):
    monkeypatch.delenv("DEEPCOMP_GPU_PRECISION", raising=False)
    assert config.get("DEEPCOMP_GPU_PRECISION") == "float64"
    monkeypatch.setenv("DEEPCOMP_GPU_PRECISION", "float32")
    assert config.get("DEEPCOMP_GPU_PRECISION") == "float32"


def test_omp_wait_policy_applied_only_when_unset(monkeypatch, caplog):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("DEEPCOMP_OMP_WAIT_POLICY", raising=False)
    with caplog.at_level("INFO", logger="deepcomp_ase.config"):
        config.apply_omp_wait_policy()
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and "OMP_WAIT_POLICY=PASSIVE" in caplog.text
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    config.apply_omp_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # the host's choice wins
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("DEEPCOMP_OMP_WAIT_POLICY", "")
    config.apply_omp_wait_policy()
    assert "OMP_WAIT_POLICY" not in os.environ


def test_importing_backends_leaves_environment_alone():
    import subprocess
    import sys

    code = ("import os; os.environ.pop('OMP_WAIT_POLICY', None); before = dict(os.environ); "
            "import deepcomp_ase.backends.numba_cpu, deepcomp_ase.backends.cupy_gpu, deepcomp_ase.potential; "
            "print(dict(os.environ) == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_lammps_malloc_policy(monkeypatch):
    """'keep' asks glibc to keep freed memory (applied where glibc is the allocator); empty leaves it alone."""
    import ctypes
    import platform

    monkeypatch.setenv("DEEPCOMP_LAMMPS_MALLOC", "")
    assert config.apply_lammps_malloc_policy() is False
    monkeypatch.setenv("DEEPCOMP_LAMMPS_MALLOC", "keep")
    glibc = platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallopt")
    assert config.apply_lammps_malloc_policy() is glibc
