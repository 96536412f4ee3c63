"""Build quintic tables from embedding nets, as ``dp compress`` does.

Node values, first and second derivatives come analytically from the net
(:meth:`Network.value_and_input_derivatives`); each interval gets the unique quintic matching
them at both ends, so the table is C2 across nodes.
"""

from __future__ import annotations

import math

import numpy as np

from ..envmat import switch
from ..model.nets import Network
from .tables import Table


def hermite_quintic(y0, d0, s0, y1, d1, s1, width):
    """Coefficients (..., 6) of the quintic through (value, slope, curvature) at both ends."""
    h = y1 - y0
    w = width
    a3 = (20.0 * h - (8.0 * d1 + 12.0 * d0) * w - (3.0 * s0 - s1) * w * w) / (2.0 * w**3)
    a4 = (-30.0 * h + (14.0 * d1 + 16.0 * d0) * w + (3.0 * s0 - 2.0 * s1) * w * w) / (2.0 * w**4)
    a5 = (12.0 * h - 6.0 * (d1 + d0) * w + (s1 - s0) * w * w) / (2.0 * w**5)
    return np.stack([y0, d0, 0.5 * s0, a3, a4, a5], axis=-1)


def node_grid(lower: float, upper: float, stride0: float, stride1: float, extrapolate: float):
    """Nodes and interval widths of a two-stride table ("A"/"R"/"Atten" layout of DeePMD-kit)."""
    xmax = extrapolate * upper
    fine = np.arange(lower, upper, stride0, dtype=np.float64)
    coarse = np.arange(upper, xmax, stride1, dtype=np.float64)
    nodes = np.concatenate([fine, coarse, [xmax]])
    nspline = int((upper - lower) / stride0 + (xmax - upper) / stride1)
    first_stride = int((upper - lower) / stride0)
    if len(fine) != first_stride or len(nodes) != nspline + 1:
        raise ValueError(
            f"table grid is inconsistent for range [{lower}, {upper}) with step {stride0}: "
            f"{len(fine)} fine nodes vs {first_stride} intervals; choose a step that divides the range"
        )
    widths = np.where(np.arange(nspline) < first_stride, stride0, stride1)
    return nodes, widths, xmax


def build_table(net: Network, lower: float, upper: float, stride0: float, stride1: float,
                extrapolate: float) -> Table:
    """Tabulate ``net`` on [lower, extrapolate*upper]."""
    nodes, widths, xmax = node_grid(lower, upper, stride0, stride1, extrapolate)
    y, dy, d2y = net.value_and_input_derivatives(nodes)
    w = widths[:, None]
    coeffs = hermite_quintic(y[:-1], dy[:-1], d2y[:-1], y[1:], dy[1:], d2y[1:], w)
    return Table(lower=float(lower), upper=float(upper), xmax=float(xmax), stride0=float(stride0),
                 stride1=float(stride1), coeffs=np.ascontiguousarray(coeffs))


def radial_range_per_type(davg: np.ndarray, dstd: np.ndarray, min_nbor_dist: float,
                          rcut_smth: float, rcut: float):
    """Integer table bounds of the normalised radial input, per centre type.

    The smallest input is a padding/out-of-cutoff slot (raw 0); the largest a neighbour at
    ``min_nbor_dist``. Rounded outward to integers, from the radial statistics only (the
    TensorFlow backend's rule, which the refsuite's compressed models use).
    """
    w, _ = switch(np.array([min_nbor_dist]), rcut_smth, rcut)
    s_max = float(w[0]) / min_nbor_dist
    lower = np.floor(-davg[:, 0] / dstd[:, 0])
    upper = np.ceil((s_max - davg[:, 0]) / dstd[:, 0])
    return lower, upper


def check_step(step: float, extrapolate: float) -> None:
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be a positive number, got {step}")
    if not (extrapolate >= 1 and math.isfinite(extrapolate)):
        raise ValueError(f"extrapolate must be >= 1, got {extrapolate}")
