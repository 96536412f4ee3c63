"""Frame and atomic parameters (DeePMD-kit's ``fparam`` / ``aparam``) as fitting-net input columns.

A model with ``numb_fparam`` / ``numb_aparam`` > 0 reads, after each atom's descriptor,
``(fparam - fparam_avg) * fparam_inv_std`` (the same for every atom of the frame) and
``(aparam_i - aparam_avg) * aparam_inv_std`` (per atom; not read with ``use_aparam_as_mask``).
This module checks what a caller gives, as DeePMD-kit's ``DeepPot.eval`` takes it, and builds
those columns; :func:`dedfparam` maps the fitting net's input gradient back to dE/dfparam.
"""

from __future__ import annotations

import numpy as np

from .errors import FrameParamError
from .model.params import FittingParams

#: how each interface takes the parameters, for the error messages
HOW = ("ASE: DeepCompCalculator(fparam=..., aparam=...) or atoms.info['fparam'] / atoms.info['aparam']; "
       "LAMMPS: pair_style deepcomp ... fparam ... aparam ...; model-devi: fparam.npy / aparam.npy in the system's "
       "sets")


def _values(name: str, value, source: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise FrameParamError(f"{source}: {name} {value!r} is not a list of numbers ({exc})") from None
    if not np.all(np.isfinite(arr)):
        raise FrameParamError(f"{source}: {name} holds a non-finite value ({arr.tolist()}); give finite numbers")
    return arr


def _fparam(fit: FittingParams, fparam, source: str) -> np.ndarray:
    """The ``numb_fparam`` frame parameters given (None: the model's default_fparam)."""
    nfp = fit.numb_fparam
    if fparam is not None and nfp == 0:
        raise FrameParamError(f"{source}: fparam {np.asarray(fparam).tolist()!r} given, but the model takes no frame "
                              "parameters (numb_fparam = 0); leave fparam out")
    if fparam is None:
        if fit.default_fparam is None:
            raise FrameParamError(f"{source}: the model takes {nfp} frame parameter(s) (numb_fparam) and has no "
                                  f"default_fparam; give them ({HOW})")
        return fit.default_fparam
    fp = _values("fparam", fparam, source)
    if fp.size != nfp:
        raise FrameParamError(f"{source}: fparam has {fp.size} value(s), the model takes numb_fparam = {nfp}")
    return fp


def _aparam(fit: FittingParams, aparam, source: str, nloc: int | None) -> np.ndarray:
    """The atomic parameters given, as (nloc, numb_aparam); ``nloc`` None: only checks that the count
    is a whole number of atoms (the atom count not known yet) and returns them flat."""
    nap = fit.numb_aparam
    if nap == 0:
        raise FrameParamError(f"{source}: aparam given, but the model takes no atomic parameters "
                              "(numb_aparam = 0); leave aparam out")
    ap = _values("aparam", aparam, source)
    if ap.size == nap:
        return ap if nloc is None else np.broadcast_to(ap, (nloc, nap))
    if nloc is None and ap.size and ap.size % nap == 0:
        return ap
    if nloc is not None and ap.size == nloc * nap:
        return ap.reshape(nloc, nap)
    atoms = "natoms" if nloc is None else str(nloc)
    raise FrameParamError(f"{source}: aparam has {ap.size} value(s); the model takes numb_aparam = {nap} per atom: "
                          f"give {atoms} x {nap} (one row per atom) or {nap} for every atom")


def fitting_columns(fit: FittingParams, nloc: int, fparam=None, aparam=None, source: str = "<model>"):
    """The (nloc, fit.n_extra) columns after the descriptor, or None for a model without parameters.

    ``fparam``: ``numb_fparam`` numbers (any shape); None takes the model's ``default_fparam``.
    ``aparam``: ``nloc * numb_aparam`` numbers ((nloc, numb_aparam) or flat, atom-major) or
    ``numb_aparam`` numbers given to every atom. A parameter the model does not take is an error;
    under ``use_aparam_as_mask`` aparam may be left out (the nets do not read it).
    """
    cols = []
    if fit.numb_fparam or fparam is not None:
        fp = _fparam(fit, fparam, source)
        cols.append(np.broadcast_to((fp - fit.fparam_avg) * fit.fparam_inv_std, (nloc, fit.numb_fparam)))
    if aparam is not None:
        ap = _aparam(fit, aparam, source, nloc)
        if not fit.use_aparam_as_mask:
            cols.append((ap - fit.aparam_avg) * fit.aparam_inv_std)
    elif fit.numb_aparam and not fit.use_aparam_as_mask:
        raise FrameParamError(f"{source}: the model takes {fit.numb_aparam} atomic parameter(s) per atom "
                              f"(numb_aparam); give them ({HOW})")
    return np.ascontiguousarray(np.concatenate(cols, axis=1)) if cols else None


def check_sizes(fit: FittingParams, fparam=None, aparam=None, source: str = "<model>") -> None:
    """Check what is given without knowing the atom count (a calculator's keywords)."""
    if fparam is not None:
        _fparam(fit, fparam, source)
    if aparam is not None:
        _aparam(fit, aparam, source, None)


def dedfparam(fit: FittingParams, grad_columns: np.ndarray) -> np.ndarray:
    """dE/dfparam (numb_fparam,) from dE/d(columns) of the local atoms (nloc, n_extra); None for a
    model with atomic parameters only."""
    nfp = fit.numb_fparam
    if nfp == 0:
        return None
    return grad_columns[:, :nfp].sum(axis=0) * fit.fparam_inv_std
