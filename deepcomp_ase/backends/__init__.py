"""Compute backends: the same physics, different engines.

A backend turns (model, pair list) into :class:`deepcomp_ase.evaluate.Results`. ``numpy`` is the
readable reference every other backend is tested against. Backends are imported lazily so that
numba or CuPy are only needed when asked for.
"""

from __future__ import annotations

import importlib

from ..errors import BackendUnavailableError

_MODULES = {
    "numpy": "deepcomp_ase.backends.numpy_ref",
    "numba": "deepcomp_ase.backends.numba_cpu",
    "cuda": "deepcomp_ase.backends.cupy_gpu",
}
_INSTALL_HINT = {"numba": "pip install numba", "cuda": "pip install cupy-cuda12x (and a CUDA GPU)"}


def available(name: str) -> bool:
    try:
        return importlib.import_module(_MODULES[name]).is_available()
    except (ImportError, KeyError):
        return False


def get_backend(name: str = "auto"):
    """Backend object by name: 'numpy', 'numba', 'cuda' or 'auto' (cuda, then numba, then numpy)."""
    if name == "auto":
        for candidate in ("cuda", "numba"):
            if available(candidate):
                return get_backend(candidate)
        return get_backend("numpy")
    if name == "cpu":
        return get_backend("numba") if available("numba") else get_backend("numpy")
    if name not in _MODULES:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of auto, cpu, {', '.join(_MODULES)}")
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name!r} is not available ({exc}); install it with: {_INSTALL_HINT.get(name, '')}"
        ) from exc
    if not module.is_available():
        raise BackendUnavailableError(f"backend {name!r} cannot run here: {module.why_unavailable()}")
    return module.Backend()
