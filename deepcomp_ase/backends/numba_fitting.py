"""One compiled pass after a tanh layer of the fitting net (float64, numba backend).

numpy would make five passes over the layer's rows (y*y, 1 - ., the timestep ``idt`` on y and
on the slope, the residual shortcut); this makes one, with the same operations in the same
order (no FMA contraction), so the values are bit-for-bit numpy's. tanh itself stays in numpy,
whose SIMD tanh is several times faster than the scalar libm call a numba loop would make.
"""

from __future__ import annotations

from numba import njit, prange

from .. import numba_cache

numba_cache.configure()  # NUMBA_CACHE_DIR must be known before the kernel below is defined


@njit(parallel=True, cache=True, fastmath=False)
def tanh_layer_tail(y, h, idt, shortcut, slope):
    """Given ``y = tanh(x W + b)`` (n, m) in place: ``slope = (1 - y^2) * idt`` and
    ``y = y * idt + shortcut term``: h (shortcut 1, same width), [h, h] (shortcut 2, m = 2 * width
    of h), nothing (shortcut 0). ``idt``: (m,) timestep weights (ones for none)."""
    n, m = y.shape
    half = h.shape[1]
    for i in prange(n):
        for j in range(m):
            t = y[i, j]
            d = 1.0 - t * t
            slope[i, j] = d * idt[j]
            y[i, j] = t * idt[j]
        if shortcut == 1:
            for j in range(m):
                y[i, j] += h[i, j]
        elif shortcut == 2:
            for j in range(half):
                y[i, j] += h[i, j]
                y[i, half + j] += h[i, j]
