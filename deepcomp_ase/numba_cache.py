"""Where the numba kernels are cached, the log line of their first compile, and a lock so that
several processes on a cold cache (N LAMMPS ranks) compile once.

The kernels are compiled at first use (about 20 s, minutes on a loaded machine) and cached on
disk by numba (``cache=True``). The cache directory:

1. ``NUMBA_CACHE_DIR`` when the user set it (left alone);
2. else ``DEEPCOMP_NUMBA_CACHE`` when set;
3. else numba's default, ``deepcomp_ase/backends/__pycache__``, when that is writable;
4. else (system or container installs) ``$XDG_CACHE_HOME/deepcomp/numba`` (``~/.cache/deepcomp/numba``).

In cases 2 and 4 deepcomp exports ``NUMBA_CACHE_DIR`` for the process (before the kernels module
is imported: numba reads it when the kernels are defined) and logs it.

The first call of each compiled step (neighbour list, selection, evaluation of a model kind in
one precision) runs under :func:`first_use`: unless a marker says that this kernel source, numba,
Python and CPU compiled it into this cache already, the process takes an exclusive file lock in
the cache directory; the first process compiles (numba writes the cache), writes the marker and
releases the lock; the others, waiting on the lock, then load the cache. With the marker present
no lock is taken. ``deepcomp warmup MODEL`` pays the compile up front (:func:`warmup`).

This module imports neither numba nor anything heavy at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sys
import threading
from pathlib import Path

from . import config

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock (processes may compile in parallel)
    fcntl = None

log = logging.getLogger(__name__)

#: numba's default (in-tree) cache of the kernels module
PACKAGE_CACHE = Path(__file__).resolve().parent / "backends" / "__pycache__"
KERNEL_SOURCES = tuple(Path(__file__).resolve().parent / "backends" / name for name in (
    "numba_kernels.py", "numba_kernels_se_e3.py", "numba_gemm.py", "numba_fitting.py"))
LOCK_NAME = "deepcomp-compile.lock"
MARKERS = "deepcomp-compiled"

_state: dict = {"dir": None, "why": None, "logged": False, "listener": None}
_done: set[str] = set()  # keys compiled or found compiled by this process


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/deepcomp/numba``, else ``~/.cache/deepcomp/numba``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no passwd entry (some containers): a per-user temp dir
            import tempfile

            return Path(tempfile.gettempdir()) / f"deepcomp-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"
    return Path(base) / "deepcomp" / "numba"


def writable(directory: Path) -> bool:
    """True when ``directory`` exists (or can be made) and a file can be created in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / f".deepcomp-probe-{os.getpid()}", "w"):
            pass
        os.unlink(directory / f".deepcomp-probe-{os.getpid()}")
        return True
    except OSError:
        return False


def choose_cache_dir(package_cache: Path | None = None) -> tuple[Path, str]:
    """(directory, reason) of the numba cache; see the module docstring. Exports nothing (the probe
    of the package directory may create its ``__pycache__``, as numba would)."""
    user = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if user:
        return Path(user).expanduser(), "NUMBA_CACHE_DIR"
    own = config.get("DEEPCOMP_NUMBA_CACHE").strip()
    if own:
        return Path(own).expanduser(), "DEEPCOMP_NUMBA_CACHE"
    package_cache = PACKAGE_CACHE if package_cache is None else package_cache
    if writable(package_cache):
        return package_cache, "package"
    return user_cache_dir(), "user"


def configure(package_cache: Path | None = None) -> Path:
    """Choose the cache directory once per process (before the kernels module is imported) and
    install the first-compile log line. Returns the directory."""
    if _state["dir"] is not None:
        return _state["dir"]
    directory, why = choose_cache_dir(package_cache)
    if why in ("DEEPCOMP_NUMBA_CACHE", "user"):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("numba cache directory %s cannot be created (%s); numba picks its own", directory, exc)
        os.environ["NUMBA_CACHE_DIR"] = str(directory)
        _reload_numba_config()
        reason = ("DEEPCOMP_NUMBA_CACHE" if why == "DEEPCOMP_NUMBA_CACHE" else
                  f"the package directory {(package_cache or PACKAGE_CACHE).parent} is not writable")
        log.info("numba backend: set NUMBA_CACHE_DIR=%s for this process (%s); set NUMBA_CACHE_DIR or "
                 "DEEPCOMP_NUMBA_CACHE to choose another", directory, reason)
    _state["dir"], _state["why"] = directory, why
    _install_compile_listener()
    return directory


def cache_dir() -> Path:
    """The numba cache directory of this process (chosen at first call)."""
    return configure()


def _reload_numba_config() -> None:
    if "numba" in sys.modules:  # numba reads NUMBA_CACHE_DIR into numba.config at import
        from numba.core import config as numba_config

        numba_config.reload_config()


def _install_compile_listener() -> None:
    """One line when numba really compiles a deepcomp kernel (not when it loads the cache)."""
    if _state["listener"] is not None or "numba" not in sys.modules and not _numba_importable():
        return
    from numba.core import event

    class FirstCompile(event.Listener):
        def on_start(self, ev):
            dispatcher = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
            if not _state["logged"] and module.startswith("deepcomp_ase"):
                _state["logged"] = True
                # a warning, so that it shows where logging is not configured (Python, LAMMPS): a silent
                # pause of 20 s to minutes looks like a hang
                log.warning("compiling the numba kernels, once (about 20 s, minutes on a busy machine); cached in %s "
                         "('deepcomp warmup MODEL' does it ahead of a run)", _state["dir"])

        def on_end(self, ev):
            pass

    _state["listener"] = FirstCompile()
    event.register("numba:compile", _state["listener"])


def _numba_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba") is not None


# ------------------------------------------------------------------------------ first use, lock
def stamp() -> str:
    """What a compiled cache depends on: kernel sources, numba and Python versions, CPU."""
    parts = [sys.version, platform.machine()]
    try:
        from importlib.metadata import version

        parts.append(version("numba"))
    except Exception:  # noqa: BLE001 - no metadata: the marker is only an optimisation
        parts.append("numba?")
    try:
        from llvmlite import binding

        parts.append(binding.get_host_cpu_name())
    except Exception:  # noqa: BLE001
        parts.append(platform.processor())
    for src in KERNEL_SOURCES:
        try:
            st = src.stat()
            parts.append(f"{src.name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{src.name}:?")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def marker_path(key: str, directory: Path | None = None) -> Path:
    directory = cache_dir() if directory is None else directory
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return directory / MARKERS / f"{stamp()}-{safe}"


def is_compiled(key: str, directory: Path | None = None) -> bool:
    return key in _done or marker_path(key, directory).exists()


@contextlib.contextmanager
def _exclusive(path: Path):
    """An exclusive flock on ``path`` (None when locking is impossible: no fcntl, read-only dir)."""
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            log.debug("no compile lock (%s): processes may compile in parallel", exc)
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process compiling the numba kernels into %s", path.parent)
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


_holding = threading.local()


@contextlib.contextmanager
def _held():
    _holding.depth = getattr(_holding, "depth", 0) + 1
    try:
        yield
    finally:
        _holding.depth -= 1


@contextlib.contextmanager
def first_use(key: str, directory: Path | None = None):
    """Run the body (the first call of one compiled step) so that one process compiles it.

    Yields True when this process ran the body holding the lock (it compiled, or loaded a cache
    its marker did not vouch for), False otherwise. A body that raises writes no marker.
    """
    if key in _done:
        yield False
        return
    directory = cache_dir() if directory is None else directory
    marker = marker_path(key, directory)
    if marker.exists():
        _done.add(key)
        yield False
        return
    if getattr(_holding, "depth", 0):  # nested in a locked first use of this thread: flock is not reentrant
        yield True
        return
    ran_locked = False
    with _exclusive(directory / LOCK_NAME), _held():
        if not marker.exists():
            ran_locked = True
            yield True
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError as exc:
                log.debug("cannot write the compile marker %s (%s)", marker, exc)
    if not ran_locked:
        yield False
    _done.add(key)


# ------------------------------------------------------------------------------ warmup
def cold_cache_hint(model) -> str:
    """A line saying how to compile ahead, when numba is installed and has compiled nothing into the
    cache this process would use (nothing is exported, numba is not imported)."""
    if not _numba_importable():
        return ""
    directory, _ = choose_cache_dir()
    if (directory / MARKERS).is_dir() and any((directory / MARKERS).glob(f"{stamp()}-*")):
        return ""
    return (f"the numba kernels are not compiled yet on this machine (about 20 s at first use, once); "
            f"'deepcomp warmup {model}' (or compress --warmup) compiles them now")


def warmup_structure(ntypes: int, spacing: float = 2.6, n: int = 3):
    """A small periodic simple-cubic crystal holding every type: (positions, types, cell)."""
    import numpy as np

    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    positions = grid * spacing + 0.05 * np.sin(np.arange(grid.size)).reshape(-1, 3)
    types = np.arange(len(grid)) % ntypes
    return positions, types, np.eye(3) * spacing * n


def warmup(models, precisions=("float64", "float32")) -> Path:
    """Compile (or load) every numba kernel ``models`` need, in each precision; returns the cache dir.

    Runs each model twice on a small crystal (the second call reuses the neighbour list, as MD
    does), per-atom virials included, through the same code as a simulation.
    """
    from .backends import get_backend
    from .potential import DeepPotential

    get_backend("numba")  # a clear error when numba is missing
    directory = configure()
    for path in models:
        for precision in precisions:
            pot = DeepPotential.from_file(path, backend="numba", precision=precision, overflow="ignore",
                                          check_frequency=-1)
            positions, types, cell = warmup_structure(len(pot.type_map))
            for k in range(2):
                pot.compute_atoms(positions + 0.01 * k, types, cell, (True, True, True), atomic_virial=k == 1)
    return directory
