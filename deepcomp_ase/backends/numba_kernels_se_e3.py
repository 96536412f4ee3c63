"""Compiled (numba) kernels of the se_e3 descriptor, forward and backward, with their numpy twin
:class:`deepcomp_ase.descriptors.se_e3.SeE3` (via :class:`deepcomp_ase.embedding.TabulatedEmbedding`
or :class:`~deepcomp_ase.embedding.ExactEmbedding`).

Per centre atom i, with rho_j = ((R_ij - davg) / dstd)[1:4] (the normalised direction part of the
environment row) and the pairs of i grouped in sections by neighbour type:

    D_c = sum_{t1 <= t2} scale_{t1 t2} sum_{j in t1, k in t2} e_jk G_c^{t1 t2}(e_jk),  e_jk = rho_j . rho_k

Inside a section (t1 == t2) e_jk = e_kj, so each unordered pair {j, k} is evaluated once with
weight 2 (1 on the diagonal j == k); across sections every (j, k) is one pair. The backward pass
re-evaluates the tables: h_jk = f scale sum_c dE/dD_c (G_c + e_jk G'_c) with f = 2 inside a section
(both orders), then dE/drho_j += h_jk rho_k and dE/drho_k += h_jk rho_j, and the env-matrix chain
rule to the pair vectors. Only real pairs are visited: padding has rho = 0 and adds nothing.

G comes from, per input x = e_jk:

* the quintic table (located as :func:`numba_kernels._locate` does, the se_e3 layout with its low
  coarse part [xmin, lower) included) -- the ordinary case;
* the linear sub-pieces of a relu-split interval (``split``/``sub_*``: Table.evaluate's rule);
* the stored embedding net itself, evaluated here (``net_*``: flat layers as the CUDA kernels'
  ``dc_exact_embed_block``), for inputs outside [xmin, xmax) of a compressed model and for every
  input of an uncompressed one.

Tables and nets are packed for all net keys (t1, t2), t1 <= t2, in sorted key order:
``tabf``/``tabi`` rows as :func:`numba_kernels._locate` reads them, ``coeffs`` (rows, 6, ngp)
power-major with outputs innermost (ngp = ng rounded up to 8, zero padded). ``e3key[t1, t2]``
(symmetric) is the key index of a section pair or -1, ``scale[t1, t2] = 1/(sel_t1 sel_t2)``.

The forward kernel also counts the table inputs as ``OverflowTally.add`` does (every ordered pair
(j, k), so an off-diagonal pair inside a section counts twice): per atom the number of inputs, of
inputs in a coarse part and of inputs outside the table, and per (atom, key) the worst excess
beyond [lower, upper) and its input; the caller reduces them in the numpy reference's order.

Pairs of a centre must be sorted by neighbour type (``select_pairs`` sorts by type, distance).
The forward kernel is strict IEEE (``fastmath=False``); the backward kernel's inner loop is a dot
product over the outputs and allows re-association and FMA contraction only, as
``numba_kernels.tabulate_backward`` (rounding changes of order 1e-16 relative).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .numba_kernels import _TABLE_FASTMATH, COARSE, FINE, _env_chain, _env_pair, _locate_in

_PAR = dict(parallel=True, cache=True, fastmath=False)
_SER = dict(cache=True, fastmath=False)
#: per-input helpers of the pair loops: inlined into the kernels (numba IR): with the table grid hoisted
#: per section pair (_grid) and numba_kernels._locate_in and _piece inlined, both kernels run 1.4-1.9x
#: faster (500 Cu/Au atoms, 1 thread) than calling numba_kernels._locate per input
_INL = dict(cache=True, fastmath=False, inline="always")
_TAB = dict(parallel=True, cache=True, fastmath=_TABLE_FASTMATH)

#: activation codes of the packed nets (the CUDA kernels' DC_ACT_* numbering)
ACT_NONE, ACT_TANH, ACT_GELU, ACT_RELU, ACT_RELU6, ACT_SOFTPLUS, ACT_SIGMOID = 0, 1, 2, 3, 4, 5, 6
ACTIVATION_CODES = {"none": ACT_NONE, "linear": ACT_NONE, "tanh": ACT_TANH, "gelu": ACT_GELU, "gelu_tf": ACT_GELU,
                    "relu": ACT_RELU, "relu6": ACT_RELU6, "softplus": ACT_SOFTPLUS, "sigmoid": ACT_SIGMOID}
#: columns of a packed layer row
L_NIN, L_NOUT, L_W, L_B, L_IDT, L_ACT, L_SHORTCUT = 0, 1, 2, 3, 4, 5, 6
#: sources of G for one input
SRC_TABLE, SRC_SUB, SRC_NET = 0, 1, 2

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


# ---------------------------------------------------------------------------------- exact nets
@njit(**_SER)
def _activation(code, x):
    """phi(x), phi'(x) (model.activations, same formulas)."""
    if code == ACT_TANH:
        y = math.tanh(x)
        return y, 1.0 - y * y
    if code == ACT_GELU:
        u = _SQRT_2_OVER_PI * (x + _GELU_C * x * x * x)
        t = math.tanh(u)
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x * x)
        return 0.5 * x * (1.0 + t), 0.5 * x * (1.0 - t * t) * du + 0.5 * t + 0.5
    if code == ACT_RELU:
        return (x if x > 0.0 else 0.0), (1.0 if x > 0.0 else 0.0)
    if code == ACT_RELU6:
        y = 0.0 if x <= 0.0 else (x if x < 6.0 else 6.0)
        return y, (1.0 if (x > 0.0 and x < 6.0) else 0.0)
    if code == ACT_SOFTPLUS or code == ACT_SIGMOID:
        if x >= 0.0:
            s = 1.0 / (1.0 + math.exp(-x))
        else:
            ex = math.exp(x)
            s = ex / (1.0 + ex)
        if code == ACT_SIGMOID:
            return s, s * (1.0 - s)
        # np.logaddexp(0, x)
        return (x if x > 0.0 else 0.0) + math.log1p(math.exp(-abs(x))), s
    return x, 1.0


@njit(**_SER)
def net_value_and_derivative(x, layers, first, nlayers, params, y, dy, ny, ndy):
    """G(x) and dG/dx of a scalar-input net (Network.value_and_first_derivative).

    ``layers`` rows: n_in, n_out, offsets of W (n_in x n_out, row-major), b and idt (-1: none) in
    ``params``, activation code, shortcut (0 none, 1 identity, 2 input repeated twice). ``y``,
    ``dy``, ``ny``, ``ndy`` are scratch of the widest layer; returns the two arrays holding the
    result (valid in their first n_out entries).
    """
    y[0] = x
    dy[0] = 1.0
    for l in range(first, first + nlayers):
        n_in = layers[l, L_NIN]
        n_out = layers[l, L_NOUT]
        w0 = layers[l, L_W]
        b0 = layers[l, L_B]
        idt0 = layers[l, L_IDT]
        act = layers[l, L_ACT]
        sc = layers[l, L_SHORTCUT]
        for o in range(n_out):
            pre = 0.0
            a1 = 0.0
            for q in range(n_in):
                wv = params[w0 + q * n_out + o]
                pre += y[q] * wv
                a1 += dy[q] * wv
            pre += params[b0 + o]
            f, f1 = _activation(act, pre)
            z = f
            dz = f1 * a1
            if idt0 >= 0:
                z *= params[idt0 + o]
                dz *= params[idt0 + o]
            if sc == 1:
                z += y[o]
                dz += dy[o]
            elif sc == 2:
                z += y[o % n_in]
                dz += dy[o % n_in]
            ny[o] = z
            ndy[o] = dz
        y, ny = ny, y
        dy, ndy = ndy, dy
    return y, dy


# ---------------------------------------------------------------------------------- tables
@njit(**_SER)
def _grid(key, tabf, tabi, sub_off):
    """Table ``key``'s grid as scalars for :func:`_piece` (hoisted out of the pair loops)."""
    return (tabf[key, 0], tabf[key, 1], tabf[key, 2], tabf[key, 3], tabf[key, 4], tabf[key, 5], tabi[key, 0],
            tabi[key, 1], tabi[key, 2], tabi[key, 3], sub_off[key], sub_off[key + 1])


@njit(**_INL)
def _piece(x, compressed, grid, split, sub_start):
    """Where G(x) comes from: (source, coefficient row, offset t, region).

    SRC_TABLE: ``coeffs[row]`` at t; SRC_SUB: ``sub_coeffs[row]`` at t (relu-split interval: the
    last sub-piece of the table starting at or before x, Table.evaluate's rule); SRC_NET: the
    exact net (outside the table, or an uncompressed model). ``region`` is FINE for an
    uncompressed model (nothing is counted). ``grid`` comes from :func:`_grid`.
    """
    if not compressed:
        return SRC_NET, -1, 0.0, FINE
    lower, upper, xmax, s0, s1, xmin, first_stride, nspline, row0, n_low, sub_a, sub_b = grid
    row, t, region = _locate_in(x, lower, upper, xmax, s0, s1, xmin, first_stride, nspline, row0, n_low)
    if row < 0:
        return SRC_NET, -1, 0.0, region
    if sub_b > sub_a and split[row]:
        lo = sub_a
        hi = sub_b
        while lo < hi:  # first sub-piece starting after x
            mid = (lo + hi) // 2
            if sub_start[mid] <= x:
                lo = mid + 1
            else:
                hi = mid
        j = lo - 1 if lo - 1 >= sub_a else sub_a
        return SRC_SUB, j, x - sub_start[j], region
    return SRC_TABLE, row, t, region


@njit(**_SER)
def _gather_rho(i, ti, offsets, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut, protection, rho, sec):
    """rho of each pair of centre i (rows of ``rho``) and the section starts by neighbour type."""
    p0 = offsets[i]
    n = offsets[i + 1] - p0
    sec[:] = 0
    for u in range(n):
        p = p0 + u
        r, rr, w, dw, a, b, c, d = _env_pair(vectors[p, 0], vectors[p, 1], vectors[p, 2], rcut_smth, rcut,
                                              protection)
        rho[u, 0] = (b - davg[ti, 1]) / dstd[ti, 1]
        rho[u, 1] = (c - davg[ti, 2]) / dstd[ti, 2]
        rho[u, 2] = (d - davg[ti, 3]) / dstd[ti, 3]
        sec[atype_all[neighbors[p]] + 1] += 1
    for t in range(sec.shape[0] - 1):
        sec[t + 1] += sec[t]


# ---------------------------------------------------------------------------------- forward
@njit(**_PAR)
def se_e3_forward(atoms, offsets, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut, protection, e3key,
                  scale, compressed, tabf, tabi, coeffs, split, sub_off, sub_start, sub_coeffs, net_layers,
                  net_first, net_params, maxw, ng, desc, counts, worst_ex, worst_x):
    """D of each listed centre atom (row k of ``desc``, float64 or float32) and the table tallies.

    ``counts[k]`` = (inputs, inputs in a coarse part, inputs outside the table);
    ``worst_ex[k, key]``/``worst_x[k, key]``: the largest excess beyond [lower, upper) of the key's
    inputs (-inf if none left the fine table) and its input, first in (j, k) order.
    """
    nt = e3key.shape[0]
    ngp = coeffs.shape[2]
    nkeys = worst_ex.shape[1]
    for k in prange(atoms.shape[0]):
        i = atoms[k]
        ti = atype_all[i]
        n = offsets[i + 1] - offsets[i]
        rho = np.empty((n, 3))
        sec = np.zeros(nt + 1, dtype=np.int64)
        _gather_rho(i, ti, offsets, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut, protection, rho, sec)
        acc = np.zeros(ngp)
        sacc = np.empty(ngp)
        y = np.empty(maxw)
        dy = np.empty(maxw)
        ny = np.empty(maxw)
        ndy = np.empty(maxw)
        n_in = 0
        n_coarse = 0
        n_beyond = 0
        for q in range(nkeys):
            worst_ex[k, q] = -np.inf
            worst_x[k, q] = np.nan
        for t1 in range(nt):
            a1 = sec[t1]
            b1 = sec[t1 + 1]
            for t2 in range(t1, nt):
                key = e3key[t1, t2]
                a2 = sec[t2]
                b2 = sec[t2 + 1]
                if key < 0 or a1 == b1 or a2 == b2:
                    continue
                same = t1 == t2
                grid = _grid(key, tabf, tabi, sub_off)
                lower = grid[0]
                upper = grid[1]
                wex = worst_ex[k, key]
                wx = worst_x[k, key]
                sacc[:] = 0.0
                for j in range(a1, b1):
                    r0 = rho[j, 0]
                    r1 = rho[j, 1]
                    r2 = rho[j, 2]
                    for kk in range(j if same else a2, b2):
                        x = r0 * rho[kk, 0] + r1 * rho[kk, 1] + r2 * rho[kk, 2]
                        mult = 2 if (same and kk != j) else 1
                        xm = x * mult
                        src, row, t, region = _piece(x, compressed, grid, split, sub_start)
                        if compressed:
                            n_in += mult
                            if region != FINE:
                                if region == COARSE:
                                    n_coarse += mult
                                else:
                                    n_beyond += mult
                                ex = x - upper if x >= upper else lower - x
                                if ex > wex:
                                    wex = ex
                                    wx = x
                        if src == SRC_NET:
                            g, dg = net_value_and_derivative(x, net_layers, net_first[key, 0], net_first[key, 1],
                                                             net_params, y, dy, ny, ndy)
                            for m in range(ng):
                                sacc[m] += xm * g[m]
                            continue
                        cf = coeffs[row] if src == SRC_TABLE else sub_coeffs[row]
                        t2_ = t * t
                        t3 = t2_ * t
                        t4 = t3 * t
                        t5 = t4 * t
                        for m in range(ngp):
                            sacc[m] += xm * (cf[0, m] + cf[1, m] * t + cf[2, m] * t2_ + cf[3, m] * t3
                                             + cf[4, m] * t4 + cf[5, m] * t5)
                worst_ex[k, key] = wex
                worst_x[k, key] = wx
                s = scale[t1, t2]
                for m in range(ngp):
                    acc[m] += sacc[m] * s
        for m in range(ng):
            desc[k, m] = acc[m]
        counts[k, 0] = n_in
        counts[k, 1] = n_coarse
        counts[k, 2] = n_beyond


# ---------------------------------------------------------------------------------- backward
@njit(**_TAB)
def se_e3_backward(atoms, offsets, pbase, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut, protection,
                   e3key, scale, compressed, tabf, tabi, coeffs, split, sub_off, sub_start, sub_coeffs, net_layers,
                   net_first, net_params, maxw, ng, gdesc, gvec):
    """dE/dD of each listed centre atom (row k of ``gdesc``) -> dE/dx_ij of each of its pairs,
    written at ``gvec[pbase[k] + slot]``. G and G' are re-evaluated (tables, sub-pieces or net)."""
    nt = e3key.shape[0]
    ngp = coeffs.shape[2]
    for k in prange(atoms.shape[0]):
        i = atoms[k]
        ti = atype_all[i]
        p0 = offsets[i]
        n = offsets[i + 1] - p0
        rho = np.empty((n, 3))
        sec = np.zeros(nt + 1, dtype=np.int64)
        _gather_rho(i, ti, offsets, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut, protection, rho, sec)
        gd = np.zeros(ngp)
        for m in range(ng):
            gd[m] = gdesc[k, m]
        grho = np.zeros((n, 3))
        y = np.empty(maxw)
        dy = np.empty(maxw)
        ny = np.empty(maxw)
        ndy = np.empty(maxw)
        for t1 in range(nt):
            a1 = sec[t1]
            b1 = sec[t1 + 1]
            for t2 in range(t1, nt):
                key = e3key[t1, t2]
                a2 = sec[t2]
                b2 = sec[t2 + 1]
                if key < 0 or a1 == b1 or a2 == b2:
                    continue
                same = t1 == t2
                f = scale[t1, t2] * (2.0 if same else 1.0)  # inside a section: both orders of the pair
                grid = _grid(key, tabf, tabi, sub_off)
                for j in range(a1, b1):
                    r0 = rho[j, 0]
                    r1 = rho[j, 1]
                    r2 = rho[j, 2]
                    g0 = 0.0
                    g1 = 0.0
                    g2 = 0.0
                    for kk in range(j if same else a2, b2):
                        s0 = rho[kk, 0]
                        s1 = rho[kk, 1]
                        s2 = rho[kk, 2]
                        x = r0 * s0 + r1 * s1 + r2 * s2
                        src, row, t, region = _piece(x, compressed, grid, split, sub_start)
                        s = 0.0
                        if src == SRC_NET:
                            g, dg = net_value_and_derivative(x, net_layers, net_first[key, 0], net_first[key, 1],
                                                             net_params, y, dy, ny, ndy)
                            for m in range(ng):
                                s += gd[m] * (g[m] + x * dg[m])
                        else:
                            # G + x G' = sum_p cf_p (t^p + x p t^(p-1)): one weight per power
                            cf = coeffs[row] if src == SRC_TABLE else sub_coeffs[row]
                            tt2 = t * t
                            tt3 = tt2 * t
                            tt4 = tt3 * t
                            w1 = t + x
                            w2 = tt2 + 2.0 * x * t
                            w3 = tt3 + 3.0 * x * tt2
                            w4 = tt4 + 4.0 * x * tt3
                            w5 = tt4 * t + 5.0 * x * tt4
                            for m in range(ngp):
                                s += gd[m] * (cf[0, m] + cf[1, m] * w1 + cf[2, m] * w2 + cf[3, m] * w3
                                              + cf[4, m] * w4 + cf[5, m] * w5)
                        h = s * f
                        g0 += h * s0
                        g1 += h * s1
                        g2 += h * s2
                        if kk != j:
                            grho[kk, 0] += h * r0
                            grho[kk, 1] += h * r1
                            grho[kk, 2] += h * r2
                    grho[j, 0] += g0
                    grho[j, 1] += g1
                    grho[j, 2] += g2
        for u in range(n):
            p = p0 + u
            v0 = vectors[p, 0]
            v1 = vectors[p, 1]
            v2 = vectors[p, 2]
            r, rr, w, dw, a, b, c, d = _env_pair(v0, v1, v2, rcut_smth, rcut, protection)
            gx, gy, gz = _env_chain(0.0, grho[u, 0] / dstd[ti, 1], grho[u, 1] / dstd[ti, 2], grho[u, 2] / dstd[ti, 3],
                                    v0, v1, v2, r, rr, w, dw)
            q = pbase[k] + u
            gvec[q, 0] = gx
            gvec[q, 1] = gy
            gvec[q, 2] = gz
