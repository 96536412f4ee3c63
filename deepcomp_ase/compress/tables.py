"""A tabulated scalar-input embedding net: two uniform grids of quintic Hermite pieces.

Layout follows DeePMD-kit: ``coeffs[l, m, k]`` is the coefficient of ``t**k`` (k = 0..5) for
output ``m`` on interval ``l``; the first ``first_stride`` intervals have width ``stride0`` and
cover [lower, upper), the rest width ``stride1`` up to ``xmax = extrapolate * upper``.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    @property
    def nspline(self) -> int:
        return self.coeffs.shape[0]

    @property
    def ng(self) -> int:
        return self.coeffs.shape[1]

    @property
    def first_stride(self) -> int:
        return int((self.upper - self.lower) / self.stride0)

    @property
    def info(self) -> np.ndarray:
        """DeePMD-kit's table_info minus the check frequency."""
        return np.array([self.lower, self.upper, self.xmax, self.stride0, self.stride1])

    def locate(self, x: np.ndarray):
        """Interval index, offset inside it and region code of each input (DeePMD-kit arithmetic)."""
        x = np.asarray(x, dtype=np.float64)
        fine = (x >= self.lower) & (x < self.upper)
        coarse = (x >= self.upper) & (x < self.xmax)
        region = np.where(fine, FINE, np.where(coarse, COARSE, np.where(x < self.lower, BELOW, ABOVE)))
        idx = np.zeros(x.shape, dtype=np.int64)
        t = np.zeros_like(x)
        xf = x[fine]
        i0 = ((xf - self.lower) / self.stride0).astype(np.int64)
        idx[fine] = i0
        t[fine] = xf - (i0 * self.stride0 + self.lower)
        xc = x[coarse]
        i1 = ((xc - self.upper) / self.stride1).astype(np.int64)
        idx[coarse] = self.first_stride + i1
        t[coarse] = xc - (i1 * self.stride1 + self.upper)
        # guard against round-off putting an input one past the last interval
        np.minimum(idx, self.nspline - 1, out=idx)
        return idx, t, region

    @cached_property
    def _coeffs_by_power(self) -> np.ndarray:
        """(nspline, 6, ng): one contiguous row per power, for the batched evaluation below."""
        return np.ascontiguousarray(self.coeffs.transpose(0, 2, 1))

    def evaluate(self, idx: np.ndarray, t: np.ndarray):
        """Value and first derivative of the pieces ``idx`` at offsets ``t`` -> two (n, ng) arrays.

        Both come from one batched product [t^k; k t^(k-1)] @ coeffs, which numpy runs far
        faster than a Horner loop over gathered (n, ng, 6) arrays.
        """
        t = np.asarray(t, dtype=np.float64)
        one, zero = np.ones_like(t), np.zeros_like(t)
        t2 = t * t
        t3 = t2 * t
        powers = np.stack([
            np.stack([one, t, t2, t3, t3 * t, t3 * t2], axis=1),
            np.stack([zero, one, 2.0 * t, 3.0 * t2, 4.0 * t3, 5.0 * t3 * t], axis=1),
        ], axis=1)  # (n, 2, 6)
        both = np.matmul(powers, self._coeffs_by_power[idx])  # (n, 2, ng)
        return both[:, 0], both[:, 1]

    def evaluate_second(self, idx: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Second derivative of the pieces (used by continuity tests)."""
        c = self.coeffs[idx]
        tt = t[:, None]
        d2 = 20.0 * c[..., 5]
        for k in (4, 3):
            d2 = d2 * tt + k * (k - 1) * c[..., k]
        return d2 * tt + 2.0 * c[..., 2]
