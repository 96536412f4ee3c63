"""Build quintic tables from embedding nets, as ``dp compress`` does (and a little better).

Node values, first and second derivatives come analytically from the net
(:meth:`Network.value_and_input_derivatives`); each interval gets the unique quintic matching
them at both ends, so the table is C2 across nodes. Differences from DeePMD-kit, on purpose:

* se_e3 tables get the interval widths right (DeePMD-kit fits the first fine and the first
  upper coarse interval with the other grid's width) and one range valid for every centre type;
* nets made of relu/relu6 are piecewise linear: their kinks are located exactly and every
  interval containing one is split at the kinks, so such tables are exact to round-off.
"""

from __future__ import annotations

import math

import numpy as np

from ..envmat import switch
from ..errors import InputError
from ..model.activations import PIECEWISE_LINEAR
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


def node_grid(lower: float, upper: float, stride0: float, stride1: float, extrapolate: float,
              low_coarse: bool = False):
    """Nodes and interval widths of a table.

    DeePMD-kit's "A"/"R"/"Atten" layout is [lower, upper) by stride0 then [upper, e*upper) by
    stride1; the "T" (se_e3) layout adds [e*lower, lower) by stride1 in front.
    """
    xmax = extrapolate * upper
    parts = []
    if low_coarse:
        parts.append(np.arange(extrapolate * lower, lower, stride1, dtype=np.float64))
    fine = np.arange(lower, upper, stride0, dtype=np.float64)
    parts += [fine, np.arange(upper, xmax, stride1, dtype=np.float64), np.array([xmax])]
    nodes = np.concatenate(parts)
    n_low = len(parts[0]) if low_coarse else 0
    first_stride = int((upper - lower) / stride0)
    n_high = int(round((xmax - upper) / stride1))
    expected_low = int(round((lower - extrapolate * lower) / stride1)) if low_coarse else 0
    if len(fine) != first_stride or n_low != expected_low or len(nodes) != n_low + first_stride + n_high + 1:
        raise InputError(
            f"table grid is inconsistent for range [{lower}, {upper}) with step {stride0}: "
            f"{len(fine)} fine nodes vs {first_stride} intervals; choose a step that divides the range"
        )
    nspline = len(nodes) - 1
    idx = np.arange(nspline)
    widths = np.where((idx >= n_low) & (idx < n_low + first_stride), stride0, stride1)
    xmin = extrapolate * lower if low_coarse else lower
    return nodes, widths, xmin, xmax


def is_piecewise_linear(net: Network) -> bool:
    return all(layer.activation in PIECEWISE_LINEAR + ("none",) for layer in net.layers)


def find_kinks(net: Network, a: float, b: float) -> np.ndarray:
    """Exact kink positions in (a, b) of a net made of relu/relu6/linear layers.

    Layer by layer the input is piecewise linear in x with known breakpoints; on each linear
    piece a pre-activation crosses 0 (and 6 for relu6) at most once, found by linear
    interpolation between the piece's ends, which is exact for a linear function.
    """
    breaks = np.array([a, b], dtype=np.float64)
    y = np.asarray(breaks).reshape(-1, 1)
    for depth, layer in enumerate(net.layers, start=1):
        pre = y @ layer.w + layer.b  # (nbreaks, n_out), exact at the breakpoints
        levels = {"relu": (0.0,), "relu6": (0.0, 6.0)}.get(layer.activation, ())
        new = []
        for level in levels:
            left, right = pre[:-1] - level, pre[1:] - level
            cross = (left * right) < 0
            seg, unit = np.nonzero(cross)
            frac = left[seg, unit] / (left[seg, unit] - right[seg, unit])
            new.append(breaks[seg] + frac * (breaks[seg + 1] - breaks[seg]))
        if new:
            breaks = np.unique(np.concatenate([breaks, *new]))
        # propagate the (piecewise-linear) layer output to the refined breakpoints
        y = _forward_upto(net, breaks, depth)
    return breaks[(breaks > a) & (breaks < b)]


def _forward_upto(net: Network, x: np.ndarray, nlayers: int) -> np.ndarray:
    return Network(net.layers[:nlayers])(np.asarray(x, dtype=np.float64).reshape(-1, 1))


def _split_pieces(net: Network, starts: np.ndarray, widths: np.ndarray, kinks: np.ndarray):
    """Sub-pieces of the intervals that contain kinks: linear between consecutive kinks."""
    ends = starts + widths
    hit = np.unique(np.clip(np.searchsorted(starts, kinks, side="right") - 1, 0, len(starts) - 1))
    # a kink exactly on a node affects the slopes on both sides: split both intervals
    on_node = np.searchsorted(starts, kinks)
    on_node = on_node[(on_node < len(starts)) & np.isin(kinks, starts)]
    hit = np.unique(np.concatenate([hit, on_node, np.maximum(on_node - 1, 0)])).astype(np.int64)
    sub_start = []
    for i in hit:
        inside = kinks[(kinks > starts[i]) & (kinks < ends[i])]
        sub_start.append(np.concatenate([[starts[i]], inside]))
    sub_start = np.concatenate(sub_start) if sub_start else np.zeros(0)
    sub_end = np.append(sub_start[1:], 0.0)
    # each sub-piece ends at the next start inside the same interval, else at the interval end
    owner = np.searchsorted(starts, sub_start, side="right") - 1
    last = np.append(owner[1:] != owner[:-1], True)
    sub_end[last] = ends[owner[last]]
    mid = 0.5 * (sub_start + sub_end)
    y_mid, slope = net.value_and_first_derivative(mid)
    value = y_mid - slope * (mid - sub_start)[:, None]
    coeffs = np.zeros((len(sub_start), slope.shape[1], 6))
    coeffs[:, :, 0] = value
    coeffs[:, :, 1] = slope
    return hit, sub_start, coeffs


def build_table(net: Network, lower: float, upper: float, stride0: float, stride1: float,
                extrapolate: float, low_coarse: bool = False) -> Table:
    """Tabulate ``net`` on [lower, extrapolate*upper] (and [extrapolate*lower, lower) for se_e3)."""
    nodes, widths, xmin, xmax = node_grid(lower, upper, stride0, stride1, extrapolate, low_coarse)
    y, dy, d2y = net.value_and_input_derivatives(nodes)
    w = widths[:, None]
    coeffs = hermite_quintic(y[:-1], dy[:-1], d2y[:-1], y[1:], dy[1:], d2y[1:], w)
    extra = {}
    if is_piecewise_linear(net):
        kinks = find_kinks(net, xmin, xmax)
        if len(kinks):
            hit, sub_start, sub_coeffs = _split_pieces(net, nodes[:-1], widths, kinks)
            extra = dict(split_intervals=hit, sub_start=sub_start, sub_coeffs=sub_coeffs)
    return Table(lower=float(lower), upper=float(upper), xmax=float(xmax), stride0=float(stride0),
                 stride1=float(stride1), coeffs=np.ascontiguousarray(coeffs), xmin=float(xmin), **extra)


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


def angular_range(dstd: np.ndarray, min_nbor_dist: float, rcut_smth: float, rcut: float):
    """Symmetric integer bound of e_jk = rho_j . rho_k for se_e3, valid for every centre type.

    |rho| <= w(d)/(d * std_xyz), so |e_jk| <= max over centre types of (w(d)/(d std_xyz))^2.
    """
    w, _ = switch(np.array([min_nbor_dist]), rcut_smth, rcut)
    bound = float(np.max((float(w[0]) / (min_nbor_dist * dstd[:, 1:4])) ** 2))
    upper = math.ceil(bound)
    return -float(upper), float(upper)


def check_step(step: float, extrapolate: float) -> None:
    if not (step > 0 and math.isfinite(step)):
        raise InputError(f"step must be a positive number, got {step}")
    if not (extrapolate >= 1 and math.isfinite(extrapolate)):
        raise InputError(f"extrapolate must be >= 1, got {extrapolate}")
