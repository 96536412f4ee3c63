"""A tabulated scalar-input embedding net: uniform grids of quintic Hermite pieces.

Layout follows DeePMD-kit: ``coeffs[l, m, k]`` is the coefficient of ``t**k`` (k = 0..5) for
output ``m`` on interval ``l``. Intervals, in order:

* ``[xmin, lower)`` with width ``stride1`` (only se_e3 tables have this low coarse part);
* ``[lower, upper)`` with width ``stride0`` (the fine table);
* ``[upper, xmax)`` with width ``stride1`` (the extrapolation table, ``xmax = extrapolate*upper``).

Each part holds a whole number of intervals: when a step does not divide DeePMD-kit's range,
``upper``, ``xmax`` and ``xmin`` are moved outward to the next interval end
(:func:`deepcomp_ase.compress.tabulate.table_grid`).

Nets with relu/relu6 are piecewise linear with kinks; intervals that contain a kink are
"split": their pieces are replaced by sub-pieces between consecutive kinks, stored in
``sub_start`` (ascending absolute start of every sub-piece) and ``sub_coeffs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# region codes returned by Table.locate
FINE, COARSE, BELOW, ABOVE = 0, 1, 2, 3


@dataclass(frozen=True)
class Table:
    lower: float
    upper: float
    xmax: float
    stride0: float
    stride1: float
    coeffs: np.ndarray  # (nspline, ng, 6) float64
    xmin: float | None = None  # defaults to lower (no low coarse part)
    split_intervals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sub_start: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sub_coeffs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 6)))
    #: (n_low, first_stride) as DeePMD-kit truncates them, for its own tables (dp compress) whose
    #: ranges are not whole numbers of intervals; None: rounded from the bounds (deepcomp's tables)
    index_counts: tuple | None = None

    def __post_init__(self):
        if self.xmin is None:
            object.__setattr__(self, "xmin", self.lower)

    @property
    def nspline(self) -> int:
        return self.coeffs.shape[0]

    @property
    def ng(self) -> int:
        return self.coeffs.shape[1]

    @property
    def n_low(self) -> int:
        if self.index_counts is not None:
            return int(self.index_counts[0])
        return int(round((self.lower - self.xmin) / self.stride1))

    @property
    def first_stride(self) -> int:
        if self.index_counts is not None:
            return int(self.index_counts[1])
        # rounded, not truncated: [lower, upper) holds a whole number of fine intervals
        # (compress.tabulate.table_grid), and (upper - lower) / stride0 may be 799.9999...
        return int(round((self.upper - self.lower) / self.stride0))

    @property
    def info(self) -> np.ndarray:
        """DeePMD-kit's table_info minus the check frequency."""
        return np.array([self.lower, self.upper, self.xmax, self.stride0, self.stride1])

    def interval_starts(self) -> np.ndarray:
        n_low, nf = self.n_low, self.first_stride
        low = self.xmin + self.stride1 * np.arange(n_low)
        fine = self.lower + self.stride0 * np.arange(nf)
        high = self.upper + self.stride1 * np.arange(self.nspline - n_low - nf)
        return np.concatenate([low, fine, high])

    def locate(self, x: np.ndarray):
        """Interval index, offset inside it and region code of each input (DeePMD-kit arithmetic)."""
        x = np.asarray(x, dtype=np.float64)
        fine = (x >= self.lower) & (x < self.upper)
        high = (x >= self.upper) & (x < self.xmax)
        low = (x >= self.xmin) & (x < self.lower)
        region = np.where(fine, FINE, np.where(high | low, COARSE, np.where(x < self.xmin, BELOW, ABOVE)))
        idx = np.zeros(x.shape, dtype=np.int64)
        t = np.zeros_like(x)
        n_low = self.n_low
        if low.any():
            xl = x[low]
            il = ((xl - self.xmin) / self.stride1).astype(np.int64)
            idx[low] = il
            t[low] = xl - (il * self.stride1 + self.xmin)
        xf = x[fine]
        i0 = ((xf - self.lower) / self.stride0).astype(np.int64)
        idx[fine] = n_low + i0
        t[fine] = xf - (i0 * self.stride0 + self.lower)
        xc = x[high]
        i1 = ((xc - self.upper) / self.stride1).astype(np.int64)
        idx[high] = n_low + self.first_stride + i1
        t[high] = xc - (i1 * self.stride1 + self.upper)
        # guard against round-off putting an input one past the last interval
        np.minimum(idx, self.nspline - 1, out=idx)
        return idx, t, region

    @cached_property
    def _coeffs_by_power(self) -> np.ndarray:
        """(nspline, 6, ng): one contiguous row per power, for the batched evaluation below."""
        return np.ascontiguousarray(self.coeffs.transpose(0, 2, 1))

    @cached_property
    def _sub_by_power(self) -> np.ndarray:
        return np.ascontiguousarray(self.sub_coeffs.transpose(0, 2, 1))

    @staticmethod
    def _powers(t: np.ndarray) -> np.ndarray:
        one, zero = np.ones_like(t), np.zeros_like(t)
        t2 = t * t
        t3 = t2 * t
        return np.stack([
            np.stack([one, t, t2, t3, t3 * t, t3 * t2], axis=1),
            np.stack([zero, one, 2.0 * t, 3.0 * t2, 4.0 * t3, 5.0 * t3 * t], axis=1),
        ], axis=1)  # (n, 2, 6)

    def evaluate(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray | None = None):
        """Value and first derivative of the pieces ``idx`` at offsets ``t`` -> two (n, ng) arrays.

        Both come from one batched product [t^k; k t^(k-1)] @ coeffs, which numpy runs far
        faster than a Horner loop over gathered (n, ng, 6) arrays. ``x`` (the inputs) is needed
        when the table has split intervals.
        """
        t = np.asarray(t, dtype=np.float64)
        both = np.matmul(self._powers(t), self._coeffs_by_power[idx])  # (n, 2, ng)
        val, der = both[:, 0], both[:, 1]
        if len(self.split_intervals) and x is not None:
            split = np.isin(idx, self.split_intervals)
            if split.any():
                xs = np.asarray(x)[split]
                j = np.searchsorted(self.sub_start, xs, side="right") - 1
                sub = np.matmul(self._powers(xs - self.sub_start[j]), self._sub_by_power[j])
                val[split] = sub[:, 0]
                der[split] = sub[:, 1]
        return val, der

    def evaluate_second(self, idx: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Second derivative of the pieces (used by continuity tests)."""
        c = self.coeffs[idx]
        tt = t[:, None]
        d2 = 20.0 * c[..., 5]
        for k in (4, 3):
            d2 = d2 * tt + k * (k - 1) * c[..., k]
        return d2 * tt + 2.0 * c[..., 2]

    def value_and_derivative(self, x: np.ndarray):
        """Table value and slope at ``x`` (inside [xmin, xmax))."""
        idx, t, _ = self.locate(x)
        return self.evaluate(idx, t, x)
