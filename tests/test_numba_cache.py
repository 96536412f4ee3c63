"""The numba kernel cache (issue 13): where it goes, the first-compile log line, the compile lock
that lets one of N processes compile, and ``deepcomp warmup`` (through a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import MODELS

from deepcomp_ase import numba_cache
from deepcomp_ase.backends import available

ROOT = Path(__file__).resolve().parents[1]
needs_numba = pytest.mark.skipif(not available("numba"), reason="numba not installed")


def unwritable(tmp_path) -> Path:
    """A directory nobody can create, root included: its parent is a regular file."""
    (tmp_path / "a_file").write_text("")
    return tmp_path / "a_file" / "__pycache__"


# ----------------------------------------------------------------------------- choice of directory
def test_cache_dir_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delenv("DEEPCOMP_NUMBA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    writable = tmp_path / "pkg" / "__pycache__"
    assert numba_cache.choose_cache_dir(writable) == (writable, "package")
    assert numba_cache.choose_cache_dir(unwritable(tmp_path)) == (tmp_path / "xdg" / "deepcomp" / "numba", "user")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert numba_cache.choose_cache_dir(unwritable(tmp_path))[0] == tmp_path / "home" / ".cache" / "deepcomp" / "numba"
    monkeypatch.setenv("DEEPCOMP_NUMBA_CACHE", str(tmp_path / "mine"))
    assert numba_cache.choose_cache_dir(writable) == (tmp_path / "mine", "DEEPCOMP_NUMBA_CACHE")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "users"))  # the user's own setting wins
    assert numba_cache.choose_cache_dir(writable) == (tmp_path / "users", "NUMBA_CACHE_DIR")


FALLBACK = """
import logging, os, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
from deepcomp_ase import numba_cache
numba_cache.PACKAGE_CACHE = Path(sys.argv[1])  # as if the package were installed read-only
from deepcomp_ase.backends import numba_cpu
import numpy as np
K = numba_cpu._kernels()
import numba
print("NUMBA_CACHE_DIR", os.environ["NUMBA_CACHE_DIR"], numba.config.CACHE_DIR)
K.max_displacement2(np.zeros((2, 3)), np.ones((2, 3)))  # compiles one kernel into the cache
"""


@needs_numba
def test_unwritable_package_dir_caches_in_the_user_cache(tmp_path):
    """A fresh process with a read-only package dir: NUMBA_CACHE_DIR set (and logged) before the
    kernels are defined, the compile logged once, the compiled kernel written under it."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "DEEPCOMP_NUMBA_CACHE")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", FALLBACK, str(unwritable(tmp_path))], capture_output=True,
                         text=True, env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    want = tmp_path / "xdg" / "deepcomp" / "numba"
    assert f"NUMBA_CACHE_DIR {want} {want}" in out.stdout
    assert f"set NUMBA_CACHE_DIR={want}" in out.stderr and "not writable" in out.stderr, out.stderr
    assert out.stderr.count("compiling the numba kernels, once") == 1, out.stderr
    assert f"cached in {want}" in out.stderr
    assert list(want.rglob("numba_kernels.max_displacement2-*.nbi")), sorted(want.rglob("*"))


# ----------------------------------------------------------------------------- the compile lock
@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(numba_cache, "_done", set())


def test_first_process_compiles_the_others_wait_then_load(tmp_path, fresh):
    """Two 'processes' (threads with their own lock descriptors) on a cold cache: the second waits
    for the first to finish, then finds the marker and runs without the lock."""
    events = []
    inside = threading.Event()
    release = threading.Event()

    def first():
        with numba_cache.first_use("evaluate-x", tmp_path) as compiling:
            events.append(("first starts", compiling))
            inside.set()
            release.wait(10)
            events.append(("first ends", compiling))

    def second():
        numba_cache._done.discard("evaluate-x")  # as another process: no shared in-memory state
        with numba_cache.first_use("evaluate-x", tmp_path) as compiling:
            events.append(("second runs", compiling))

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.3)
    assert events == [("first starts", True)]  # the second is waiting on the lock
    release.set()
    t1.join(10)
    t2.join(10)
    assert events == [("first starts", True), ("first ends", True), ("second runs", False)]
    assert numba_cache.marker_path("evaluate-x", tmp_path).exists()


def test_marked_key_takes_no_lock(tmp_path, fresh):
    with numba_cache.first_use("select", tmp_path) as compiling:
        assert compiling
    numba_cache._done.clear()
    fd = os.open(tmp_path / numba_cache.LOCK_NAME, os.O_RDWR)
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)  # someone holds the lock: a marked key must not wait for it
    try:
        with numba_cache.first_use("select", tmp_path) as compiling:
            assert not compiling
    finally:
        os.close(fd)


def test_failed_first_use_writes_no_marker(tmp_path, fresh):
    with pytest.raises(RuntimeError), numba_cache.first_use("neighbors", tmp_path):
        raise RuntimeError("compile failed")
    assert not numba_cache.marker_path("neighbors", tmp_path).exists()
    with numba_cache.first_use("neighbors", tmp_path) as compiling:  # the lock was released
        assert compiling


def test_marker_depends_on_kernel_source(tmp_path, monkeypatch):
    src = tmp_path / "numba_kernels.py"
    src.write_text("a")
    monkeypatch.setattr(numba_cache, "KERNEL_SOURCES", (src,))
    before = numba_cache.marker_path("select", tmp_path)
    src.write_text("ab")
    assert numba_cache.marker_path("select", tmp_path) != before


# ----------------------------------------------------------------------------- deepcomp warmup
def deepcomp(*args, env):
    return subprocess.run([sys.executable, "-m", "deepcomp_ase", *args], capture_output=True, text=True, env=env,
                          timeout=1200, check=False)


EVALUATE = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
from ase.build import bulk
from deepcomp_ase.calculator import DeepCompCalculator
atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
atoms.symbols[::2] = "Au"
atoms.calc = DeepCompCalculator(sys.argv[1], backend="numba")
for k in range(3):
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
print("energy", atoms.get_potential_energy())
"""


@needs_numba
@pytest.mark.slow  # compiles every kernel of a model into an empty cache
def test_warmup_then_no_compile_at_first_use(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(DEEPCOMP_NUMBA_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    out = tmp_path / "m.dcz"
    c = deepcomp("compress", "-i", str(MODELS / "cuau_se_e2_a.dp"), "-o", str(out), "--warmup", env=env)
    assert c.returncode == 0, c.stderr[-3000:]
    assert c.stderr.count("compiling the numba kernels, once") == 1, c.stderr[-3000:]
    assert f"cached in {tmp_path / 'cache'}" in c.stdout, c.stdout
    w = deepcomp("warmup", str(out), "--precision", "float64", env=env)
    assert w.returncode == 0, w.stderr[-3000:]
    assert "compiling the numba kernels" not in w.stderr, w.stderr[-3000:]
    assert f"(float64) compiled; cached in {tmp_path / 'cache'}" in w.stdout, w.stdout
    e = subprocess.run([sys.executable, "-c", EVALUATE, str(out)], capture_output=True, text=True, env=env,
                       timeout=600, check=False)
    assert e.returncode == 0 and "energy" in e.stdout, e.stderr[-3000:]
    assert "compiling the numba kernels" not in e.stderr, e.stderr[-3000:]  # the warmup covered the MD path


def test_warmup_refuses_missing_model(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), DEEPCOMP_NUMBA_CACHE=str(tmp_path))
    w = deepcomp("warmup", str(tmp_path / "missing.dcz"), env=env)
    assert w.returncode == 1 and "missing.dcz: model file not found" in w.stderr, w.stderr


def test_nested_first_use_does_not_deadlock(tmp_path, fresh):
    with numba_cache.first_use("evaluate-a", tmp_path) as outer, numba_cache.first_use("select", tmp_path) as inner:
        assert outer and inner
    assert numba_cache.marker_path("evaluate-a", tmp_path).exists()


def test_compress_says_how_to_warm_up_a_cold_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(DEEPCOMP_NUMBA_CACHE=str(tmp_path / "empty"), PYTHONPATH=str(ROOT))
    out = tmp_path / "m.dcz"
    c = deepcomp("compress", "-i", str(MODELS / "cu_se_e2_a_tanh.dp"), "-o", str(out), env=env)
    assert c.returncode == 0, c.stderr[-3000:]
    if available("numba"):
        assert f"'deepcomp warmup {out}' (or compress --warmup) compiles them now" in c.stderr, c.stderr[-2000:]
    assert not (tmp_path / "empty").exists()  # only looked at
