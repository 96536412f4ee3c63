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
from dataclasses import dataclass

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


def whole_intervals(start: float, end: float, stride: float) -> int:
    """Number of ``stride``-wide intervals needed to cover [start, end) (0 for an empty range).

    A ratio within round-off of an integer counts as that integer: 0.01 divides [-1, 7) even
    though (7 - -1) / 0.01 is not exactly 800 in floating point.
    """
    ratio = (end - start) / stride
    nearest = round(ratio)
    if abs(ratio - nearest) <= 1e-9 * max(1.0, abs(ratio)):
        return max(int(nearest), 0)
    return max(math.ceil(ratio), 0)


@dataclass(frozen=True)
class Grid:
    """Bounds and interval counts of one table, each range extended to whole intervals.

    ``lower`` is never moved. ``upper`` is moved up to the end of the last fine interval,
    ``xmax`` to the end of the last coarse interval past it and ``xmin`` (se_e3's low coarse
    part) down to the start of the first one. A bound stays exactly as requested when the step
    already divides its range (DeePMD-kit's tables for the usual steps).
    """

    lower: float
    upper: float
    xmax: float
    xmin: float
    n_low: int
    n_fine: int
    n_high: int

    @property
    def nspline(self) -> int:
        return self.n_low + self.n_fine + self.n_high


def table_grid(lower: float, upper: float, stride0: float, stride1: float, extrapolate: float,
               low_coarse: bool = False) -> Grid:
    """DeePMD-kit's layout, for any positive step.

    "A"/"R"/"Atten" tables are [lower, upper) by stride0 then [upper, e*upper) by stride1; the
    "T" (se_e3) layout adds [e*lower, lower) by stride1 in front. DeePMD-kit assumes the steps
    divide these ranges; here a range they do not divide is extended to the next whole interval.
    """
    n_fine = max(whole_intervals(lower, upper, stride0), 1)
    upper_used = upper if math.isclose(lower + n_fine * stride0, upper, rel_tol=1e-9, abs_tol=1e-12) \
        else lower + n_fine * stride0
    xmax_req = extrapolate * upper
    n_high = whole_intervals(upper_used, xmax_req, stride1)
    xmax = xmax_req if n_high and math.isclose(upper_used + n_high * stride1, xmax_req, rel_tol=1e-9,
                                                abs_tol=1e-12) else upper_used + n_high * stride1
    n_low, xmin = 0, lower
    if low_coarse:
        xmin_req = extrapolate * lower
        n_low = whole_intervals(xmin_req, lower, stride1)
        xmin = xmin_req if n_low and math.isclose(lower - n_low * stride1, xmin_req, rel_tol=1e-9,
                                                   abs_tol=1e-12) else lower - n_low * stride1
    return Grid(float(lower), float(upper_used), float(xmax), float(xmin), n_low, n_fine, n_high)


def table_bytes(grid: Grid, n_out: int) -> int:
    """Size of the coefficients of one table (float64, 6 per interval and output)."""
    return grid.nspline * n_out * 6 * 8


def node_grid(lower: float, upper: float, stride0: float, stride1: float, extrapolate: float,
              low_coarse: bool = False):
    """Nodes and interval widths of a table (see :func:`table_grid`), and its grid."""
    g = table_grid(lower, upper, stride0, stride1, extrapolate, low_coarse)
    # node positions as Table.locate computes interval starts: start + i * stride
    nodes = np.concatenate([
        g.xmin + stride1 * np.arange(g.n_low, dtype=np.float64),
        g.lower + stride0 * np.arange(g.n_fine, dtype=np.float64),
        g.upper + stride1 * np.arange(g.n_high, dtype=np.float64),
        [g.xmax],
    ])
    idx = np.arange(g.nspline)
    widths = np.where((idx >= g.n_low) & (idx < g.n_low + g.n_fine), stride0, stride1)
    return nodes, widths, g


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
    nodes, widths, g = node_grid(lower, upper, stride0, stride1, extrapolate, low_coarse)
    xmin, xmax = g.xmin, g.xmax
    y, dy, d2y = net.value_and_input_derivatives(nodes)
    w = widths[:, None]
    coeffs = hermite_quintic(y[:-1], dy[:-1], d2y[:-1], y[1:], dy[1:], d2y[1:], w)
    extra = {}
    if is_piecewise_linear(net):
        kinks = find_kinks(net, xmin, xmax)
        if len(kinks):
            hit, sub_start, sub_coeffs = _split_pieces(net, nodes[:-1], widths, kinks)
            extra = dict(split_intervals=hit, sub_start=sub_start, sub_coeffs=sub_coeffs)
    return Table(lower=g.lower, upper=g.upper, xmax=float(xmax), stride0=float(stride0),
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
