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


def fitting_columns(fit: FittingParams, nloc: int, fparam=None, aparam=None, source: str = "<model>"):
    """The (nloc, fit.n_extra) columns after the descriptor, or None for a model without parameters.

    ``fparam``: ``numb_fparam`` numbers (any shape); None takes the model's ``default_fparam``.
    ``aparam``: ``nloc * numb_aparam`` numbers ((nloc, numb_aparam) or flat, atom-major) or
    ``numb_aparam`` numbers given to every atom. A parameter the model does not take is an error.
    """
    nfp, nap = fit.numb_fparam, fit.numb_aparam
    if fparam is not None and nfp == 0:
        raise FrameParamError(f"{source}: fparam {np.asarray(fparam).tolist()!r} given, but the model takes no frame "
                              "parameters (numb_fparam = 0); leave fparam out")
    if aparam is not None and nap == 0:
        raise FrameParamError(f"{source}: aparam given, but the model takes no atomic parameters "
                              "(numb_aparam = 0); leave aparam out")
    cols = []
    if nfp:
        if fparam is None:
            if fit.default_fparam is None:
                raise FrameParamError(f"{source}: the model takes {nfp} frame parameter(s) (numb_fparam) and has no "
                                      f"default_fparam; give them ({HOW})")
            fp = fit.default_fparam
        else:
            fp = _values("fparam", fparam, source)
            if fp.size != nfp:
                raise FrameParamError(f"{source}: fparam has {fp.size} value(s), the model takes numb_fparam = {nfp}")
        cols.append(np.broadcast_to((fp - fit.fparam_avg) * fit.fparam_inv_std, (nloc, nfp)))
    if nap:
        if aparam is None:
            if fit.use_aparam_as_mask:  # the nets do not read it
                return np.concatenate(cols, axis=1) if cols else None
            raise FrameParamError(f"{source}: the model takes {nap} atomic parameter(s) per atom (numb_aparam); "
                                  f"give them ({HOW})")
        ap = _values("aparam", aparam, source)
        if ap.size == nap:
            ap = np.broadcast_to(ap, (nloc, nap))
        elif ap.size == nloc * nap:
            ap = ap.reshape(nloc, nap)
        else:
            raise FrameParamError(f"{source}: aparam has {ap.size} value(s); the model takes numb_aparam = {nap} per "
                                  f"atom: give {nloc} x {nap} (one row per atom) or {nap} for every atom")
        if not fit.use_aparam_as_mask:
            cols.append((ap - fit.aparam_avg) * fit.aparam_inv_std)
    return np.ascontiguousarray(np.concatenate(cols, axis=1)) if cols else None


def check_sizes(fit: FittingParams, fparam=None, aparam=None, source: str = "<model>") -> None:
    """Check what is given without knowing the atom count (a calculator's keywords): sizes and values."""
    nap = fit.numb_aparam
    if fparam is not None:
        fitting_columns(fit, 1, fparam, None if nap == 0 else np.zeros(nap), source)
    if aparam is not None:
        ap = _values("aparam", aparam, source) if nap else np.asarray(aparam)
        n = ap.size // nap if nap and ap.size % nap == 0 and ap.size else 1
        fitting_columns(fit, n, fit.default_fparam if fit.numb_fparam else None, ap, source) if (
            fit.default_fparam is not None or fit.numb_fparam == 0) else _aparam_size(fit, ap, source)


def _aparam_size(fit: FittingParams, ap: np.ndarray, source: str) -> None:
    nap = fit.numb_aparam
    if ap.size == 0 or ap.size % nap:
        raise FrameParamError(f"{source}: aparam has {ap.size} value(s); the model takes numb_aparam = {nap} per "
                              f"atom: give natoms x {nap} (one row per atom) or {nap} for every atom")


def dedfparam(fit: FittingParams, grad_columns: np.ndarray) -> np.ndarray:
    """dE/dfparam (numb_fparam,) from dE/d(columns) of the local atoms (nloc, n_extra)."""
    nfp = fit.numb_fparam
    return grad_columns[:, :nfp].sum(axis=0) * fit.fparam_inv_std
