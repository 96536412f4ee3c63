"""Compute backends: the same physics, different engines.

A backend turns a model's evaluation plan and pair lists (or positions) into
:class:`~deepcomp_ase.backends.base.Results`; the contract is in :mod:`.base`. ``numpy`` is the
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


def get_backend(name: str = "auto", precision: str = "float64"):
    """Backend object by name: 'numpy', 'numba', 'cuda', 'cpu' (numba, else numpy) or 'auto' (cuda, numba, numpy).

    ``precision`` 'float32' needs a compiled backend (numba or cuda); the numpy reference is float64 only.
    """
    if precision not in ("float64", "float32"):
        raise BackendUnavailableError(f"precision must be 'float64' or 'float32', not {precision!r}")
    if name in ("auto", "cpu"):
        for candidate in (("cuda", "numba") if name == "auto" else ("numba",)):
            if available(candidate):
                return get_backend(candidate, precision)
        return get_backend("numpy", precision)
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
    if precision != "float64" and name == "numpy":
        raise BackendUnavailableError(
            "the numpy reference backend computes in float64 only; float32 needs numba (pip install numba) "
            "or a GPU with CuPy")
    return module.Backend(precision=precision)
