"""Physical-range checks of a parsed model: every setting read from an untrusted file, bounded.

:func:`parse_model` checks that fields exist and have the right types and shapes; this module
checks that their values make sense, so that a damaged or hostile file fails at load with an
error naming the field, not later with a hang (``rcut`` 1e4: every atom a neighbour of every
other), a silently wrong energy (``sel`` 1e9) or finite nonsense (``rcut`` 0, NaN).
The limits are far above any trained DeePMD-kit model (docs/security.md lists them).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ModelFormatError
from ..io.untrusted import check_tree_finite

#: largest cutoff radius accepted (Angstrom); DeePMD-kit models use 4-12
MAX_RCUT = 30.0
#: largest number of neighbour slots (sum of sel) of one descriptor; DeePMD-kit models use < 1000
MAX_NNEI = 10_000
#: widest network layer (neuron entries, axis_neuron)
MAX_WIDTH = 8192
#: most element types
MAX_TYPES = 256


def _fail(source: str, field: str, found, why: str) -> ModelFormatError:
    return ModelFormatError(f"{source}: field '{field}' is {found!r:.120}; {why}. The model file is damaged or "
                            "was not written by DeePMD-kit")


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def check_descriptor(d, source: str, where: str) -> None:
    """rcut, rcut_smth, sel, neuron and axis_neuron of one descriptor (hybrid: of each part)."""
    parts = getattr(d, "parts", None)
    if parts is not None:
        for k, part in enumerate(parts):
            check_descriptor(part, source, f"{where}.list[{k}]")
        return
    if not _finite(d.rcut) or not 0.0 < d.rcut <= MAX_RCUT:
        raise _fail(source, f"{where}.rcut", d.rcut, f"the cutoff radius must be a number in (0, {MAX_RCUT:g}] A")
    if not _finite(d.rcut_smth) or d.rcut_smth >= d.rcut:
        raise _fail(source, f"{where}.rcut_smth", d.rcut_smth,
                    f"the smoothing start must be a finite number below rcut ({d.rcut:g} A)")
    sel = tuple(d.sel)
    if any(s < 0 for s in sel) or sum(sel) > MAX_NNEI or sum(sel) < 1:
        raise _fail(source, f"{where}.sel", list(sel), f"neighbour counts must be >= 0 with a sum in [1, {MAX_NNEI}]")
    neuron = tuple(getattr(d, "neuron", ()) or ())
    if any(not 1 <= n <= MAX_WIDTH for n in neuron):
        raise _fail(source, f"{where}.neuron", list(neuron), f"layer widths must be in [1, {MAX_WIDTH}]")
    dstd = getattr(d, "dstd", None)
    if dstd is not None and np.any(np.asarray(dstd) == 0):
        raise _fail(source, f"{where}.@variables.dstd", "0 in places",
                    "the environment statistics divide by it; DeePMD-kit never stores a zero")
    axis = getattr(d, "axis_neuron", None)
    if axis is not None and neuron and not 1 <= axis <= neuron[-1]:
        raise _fail(source, f"{where}.axis_neuron", axis, f"must be in [1, {neuron[-1]}] (the last neuron width)")


def check_model_ranges(params, tree: dict, source: str) -> None:
    """Refuse settings outside their physical range and non-finite weights, naming the field."""
    if not 1 <= len(params.type_map) <= MAX_TYPES:
        raise _fail(source, "model.type_map", list(params.type_map)[:10], f"must name 1 to {MAX_TYPES} elements")
    check_descriptor(params.descriptor, source, "model.descriptor")
    mnd = params.min_nbor_dist
    if mnd is not None and (not _finite(mnd) or mnd >= params.rcut):
        raise _fail(source, "min_nbor_dist", mnd,
                    f"the smallest training distance must be a finite number below rcut ({params.rcut:g} A)")
    for net in [n for n in (*params.fitting.nets, params.fitting.shared) if n is not None]:
        for layer in net.layers:
            if max(layer.w.shape) > MAX_WIDTH:
                raise _fail(source, "model.fitting", f"a layer of shape {layer.w.shape}",
                            f"layer widths must be at most {MAX_WIDTH}")
    check_tree_finite(tree, source)
