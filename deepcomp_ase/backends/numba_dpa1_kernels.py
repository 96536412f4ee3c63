"""Compiled (numba) kernels of DPA-1 with attention layers; the numpy twin is descriptors/dpa1.py.

==========================  ==========================================================
kernel                      numpy twin (descriptors/dpa1.py)
==========================  ==========================================================
pair_geometry               R^ = (R - davg)/dstd, switch w, r^ = R^[1:4]/|R^[1:4]| (``_unit``)
table_embedding             G(s), dG/ds from the packed quintic tables (or the exact side rows)
table_embedding_projection  the same and the first projection G(s) W_in from tables of G W_in (concat)
strip_input                 X0 = G (1 + tt w), dX0/ds, dX0/dw (``Dpa1._input``, strip mode)
attention_forward           q/k/v normalisation, logits, softmax, switch and r^.r^ gates, A v
attention_backward          its hand-written backward (``layer_backward`` between the projections)
layer_norm                  X' = LN(Y) (``layer_forward``'s tail)
layer_norm_backward         dE/dY from dE/dX'
descriptor_forward          T = (1/N)(sum_j X_j (x) R^_j + n_pad X_pad (x) R^_pad), D = T T<^T
descriptor_backward         dE/dX_j, dE/dR^_j from dE/dD
input_backward              dE/ds, dE/dw, dE/dr^ -> dE/dx_ij (``Dpa1.backward``'s tail)
==========================  ==========================================================

Layout: the pairs of a chunk of consecutive centre atoms are rows of 2-D arrays in pair-list order
(centre, then distance), ``offs`` (nb + 1) the first row of each centre; no padding rows (those are
constants, see descriptors/dpa1.py). The projections X W_in and O W_out are single BLAS GEMMs over
all rows (the driver, numba_dpa1.py); the kernels here do the per-centre parts, threaded over centre
atoms (``prange``), each writing only its own rows. Per centre the attention probabilities and
logits are kept for the backward pass in a flat array (``o2``: offset of centre i's n_i x n_i block).

In the attention kernels the per-centre n x h x n products (q k^T, weights v and the four of the
backward pass) are BLAS GEMMs: np.dot inside numba (scipy's BLAS) on contiguous copies of the centre's
q, k, v (as axpy / dot loops they ran at ~9 Gflop/s, load/store bound; a 50 x 32 x 50 GEMM takes
~6.5 us, ~25 Gflop/s). The other loops are dot products and axpys over the attention width or the
embedding width; they vectorise only with re-association allowed, so these kernels use the flags of
numba_kernels.tabulate_backward (re-association and FMA contraction, nothing else): results agree
with the numpy reference to rounding (~1e-15 relative).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import numba_cache
from .numba_kernels import _env_chain, _env_pair, _locate, _powers, _quintic, _quintic_slope

numba_cache.configure()

_FM = {"reassoc", "contract"}
_PAR = dict(parallel=True, cache=True, fastmath=_FM)
#: DeePMD-kit's logit shift of the smooth attention (model/params_dpa1.ATTNW_SHIFT)
SHIFT = 20.0


# ---------------------------------------------------------------------------------- pair inputs
@njit(inline="always")
def _smooth_weight(rho, w, dw, tf_switch, rs):
    """The smooth weight of the type term and attention and d/dr: the switch w(r), or for models read from
    TensorFlow graphs 1 - (1 - rs w/rho)^3 clipped to [0, 1] (descriptors/se_atten_v2.type_term_switch)."""
    if not tf_switch:
        return w, dw
    uu = 1.0 - rs * (w / rho)
    v = 1.0 - uu * uu * uu
    if v > 0.0 and v < 1.0:
        return v, 3.0 * uu * uu * rs * (dw / rho - w / (rho * rho))
    return (0.0 if v <= 0.0 else 1.0), 0.0


@njit(inline="always")
def _unit_grad(g, y, yg, nn, floor, floor_branch):
    """dE/dx of y = x / max(|x|, floor) from dE/dy (descriptors/dpa1._unit_backward): below the floor
    (TensorFlow's 1e-6, ``floor_branch``) a plain scaling."""
    if floor_branch and nn <= floor:
        return g / floor
    return (g - y * yg) / nn


@njit(**_PAR)
def pair_geometry(vectors, ti, davg, dstd, rcut_smth, rcut, protection, tf_switch, rs, floor, rhat, sw, runit,
                  rnorm):
    """Per pair: normalised env row R^ (4), smooth weight (:func:`_smooth_weight`), unit direction r^ of
    R^[1:4] (norm floored at ``floor``) and that norm."""
    for p in prange(vectors.shape[0]):
        r, rho, w, dw, a, b, c, d = _env_pair(vectors[p, 0], vectors[p, 1], vectors[p, 2], rcut_smth, rcut,
                                              protection)
        t = ti[p]
        rhat[p, 0] = (a - davg[t, 0]) / dstd[t, 0]
        h1 = (b - davg[t, 1]) / dstd[t, 1]
        h2 = (c - davg[t, 2]) / dstd[t, 2]
        h3 = (d - davg[t, 3]) / dstd[t, 3]
        rhat[p, 1] = h1
        rhat[p, 2] = h2
        rhat[p, 3] = h3
        sw[p] = _smooth_weight(rho, w, dw, tf_switch, rs)[0]
        nn = max(math.sqrt(h1 * h1 + h2 * h2 + h3 * h3), floor)
        rnorm[p] = nn
        runit[p, 0] = h1 / nn
        runit[p, 1] = h2 / nn
        runit[p, 2] = h3 / nn


@njit(inline="always")
def _quintic_rows(cf, t, p, out, dout):
    """Value and slope of every output of the quintic piece ``cf`` at offset t into row p of out / dout."""
    t2, t3, t4, t5 = _powers(t)
    for m in range(out.shape[1]):
        out[p, m] = _quintic(cf, m, t, t2, t3, t4, t5)
        dout[p, m] = _quintic_slope(cf, m, t, t2, t3, t4)


@njit(**_PAR)
def table_embedding(xs, keys, ext, g_ext, dg_ext, tabf, tabi, coeffs, g, dg):
    """G (m, ng) and dG/ds of every pair: the quintic of its table interval, or row ``ext[p]`` of the
    side arrays (exact net outside the tables, relu-split intervals) when ``ext[p] >= 0``."""
    ng = g.shape[1]
    for p in prange(xs.shape[0]):
        e = ext[p]
        if e >= 0:
            for m in range(ng):
                g[p, m] = g_ext[e, m]
                dg[p, m] = dg_ext[e, m]
            continue
        row, t, region = _locate(xs[p], tabf, tabi, keys[p])
        _quintic_rows(coeffs[row], t, p, g, dg)


@njit(**_PAR)
def table_embedding_projection(xs, keys, ext, tabf, tabi, coeffs, pcoeffs, g, dg, proj, dproj):
    """:func:`table_embedding` and the first layer's projection X0 W_in (without b_in) with its slope
    d(X0 W_in)/ds from the same interval of tables whose coefficients are G's times W_in (``pcoeffs``
    (rows, 6, 3h), rows as ``coeffs``): one quintic of width 3h instead of a GEMM row of ng x 3h, and no
    transposed GEMM in the backward pass. Pairs with ``ext[p] >= 0`` are left to the driver (exact rows).
    (Visiting the pairs sorted by key and input, for cache reuse of coefficient rows, was slower: 5.8 vs
    3.6 ms per 10k pairs; a centre's pairs come in distance order already.)"""
    for p in prange(xs.shape[0]):
        if ext[p] >= 0:
            continue
        row, t, region = _locate(xs[p], tabf, tabi, keys[p])
        _quintic_rows(coeffs[row], t, p, g, dg)
        _quintic_rows(pcoeffs[row], t, p, proj, dproj)


@njit(**_PAR)
def strip_input(g, dg, tt, pair_row, sw, smooth, x0, dx0, dx0w):
    """Strip mode: X0 = G (1 + tt w) (w = 1 without the smooth type embedding), dX0/ds, and dX0/dw = G tt
    (smooth only; ``dx0w`` may then be written)."""
    ng = g.shape[1]
    for p in prange(g.shape[0]):
        trow = tt[pair_row[p]]
        s = sw[p] if smooth else 1.0
        for m in range(ng):
            gate = 1.0 + trow[m] * s
            x0[p, m] = g[p, m] * gate
            dx0[p, m] = dg[p, m] * gate
            if smooth:
                dx0w[p, m] = g[p, m] * trow[m]


# ---------------------------------------------------------------------------------- attention
#: exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 in two parts (Cody-Waite), |r| <= ln2/2
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e+00


@njit(cache=True, fastmath=_FM)
def _exp_inplace(x, n, bits):
    """x[:n] = exp(x[:n]) for x <= 0 in loops that vectorise (libm's exp is a call per element: 11.5 ns
    against 3.4 here). Degree-13 Taylor polynomial on |r| <= ln2/2 (truncation < 1e-17 relative), 2^k from
    its bits; relative error <= 2.3e-16 measured over [-700, 0]. Inputs below -708 give exp(-708) ~ 3e-308
    instead of a subnormal or 0: the softmax sums it to terms >= 1."""
    fl = bits.view(np.float64)
    for l in range(n):
        v = x[l]
        if v < -708.0:
            v = -708.0
        k = math.floor(v * _INV_LN2 + 0.5)
        r = (v - k * _LN2_HI) - k * _LN2_LO
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        x[l] = p
        bits[l] = (np.int64(k) + 1023) << 52
    for l in range(n):
        x[l] *= fl[l]


@njit(cache=True, fastmath=_FM)
def _dotr(runit, b, n, dr):
    """r^_j . r^_l of a centre's neighbours into dr (n, n), from a transposed copy (3, n) of their r^
    (the inner loop then vectorises: 0.8 against 2.6 us for n = 50); returns that copy."""
    r = np.empty((3, n))
    for l in range(n):
        for x in range(3):
            r[x, l] = runit[b + l, x]
    for j in range(n):
        a0 = r[0, j]
        a1 = r[1, j]
        a2 = r[2, j]
        for l in range(n):
            dr[j, l] = a0 * r[0, l] + a1 * r[1, l] + a2 * r[2, l]
    return r


@njit(cache=True, fastmath=_FM)
def _centre_qkv(qkv, b, n, h, q, k, v):
    """Copies of a centre's q, k, v rows into contiguous (n, h) arrays (for BLAS)."""
    for j in range(n):
        row = qkv[b + j]
        for c in range(h):
            q[j, c] = row[c]
            k[j, c] = row[h + c]
            v[j, c] = row[2 * h + c]


@njit(**_PAR)
def attention_forward(offs, o2, dead, qkv, b_in, nrm, normalize, floor, scaling, smooth, dotr, sw, runit, a_st,
                      l_st, out, self_mask=False):
    """Per centre: q, k, v = rows of ``qkv`` (X W_in) + b_in, normalised in place when ``normalize`` (norms
    into ``nrm``); logits L = scaling q k^T (kept in ``l_st``), softmax a (kept in ``a_st``), weights a S
    (r^.r^) and O = weights v into ``out`` (m, h). The two n x h x n products are BLAS GEMMs (np.dot) on
    contiguous copies of the centre's q, k, v (loops of dot products / axpys ran at ~9 Gflop/s, load/store
    bound)."""
    h = out.shape[1]
    for i in prange(offs.shape[0] - 1):
        b = offs[i]
        n = offs[i + 1] - b
        if n == 0:
            continue
        for j in range(b, b + n):
            for c in range(3 * h):
                qkv[j, c] += b_in[c]
            if normalize:
                for part in range(3):
                    ss = 0.0
                    for c in range(part * h, part * h + h):
                        ss += qkv[j, c] * qkv[j, c]
                    nn = max(math.sqrt(ss), floor)
                    nrm[j, part] = nn
                    for c in range(part * h, part * h + h):
                        qkv[j, c] = qkv[j, c] / nn
        dr = np.empty((n, n))
        if dotr:
            _dotr(runit, b, n, dr)
        base = o2[i]
        nd = dead[i]
        q = np.empty((n, h))
        k = np.empty((n, h))
        v = np.empty((n, h))
        _centre_qkv(qkv, b, n, h, q, k, v)
        lm = np.dot(q, k.T)  # (n, n) q_j . k_l
        wm = np.empty((n, n))
        bits = np.empty(n, dtype=np.int64)
        for j in range(n):
            row = lm[j]
            swj = sw[b + j]
            top = -np.inf
            for l in range(n):
                lg = scaling * row[l]
                l_st[base + j * n + l] = lg
                if smooth:
                    lg = (lg + SHIFT) * (swj * sw[b + l]) - SHIFT
                row[l] = lg
                top = max(top, lg)
            if smooth and nd > 0:
                top = max(top, -SHIFT)
            for l in range(n):
                row[l] -= top
            _exp_inplace(row, n, bits)
            z = 0.0
            for l in range(n):
                z += row[l]
            if smooth:
                z += nd * math.exp(-SHIFT - top)
            for l in range(n):
                a = row[l] / z
                a_st[base + j * n + l] = a
                wt = a
                if smooth:
                    wt *= swj * sw[b + l]
                if dotr:
                    wt *= dr[j, l]
                if self_mask and l == j:  # attn_mask: a slot's weight on itself is zero
                    wt = 0.0
                wm[j, l] = wt
        o = np.dot(wm, v)
        for j in range(n):
            for c in range(h):
                out[b + j, c] = o[j, c]


@njit(**_PAR)
def attention_backward(offs, o2, qkv, nrm, normalize, floor, floor_branch, scaling, smooth, dotr, sw, runit, a_st,
                       l_st, g_out, g_qkv, g_sw, g_ru, self_mask=False):
    """dE/d(q,k,v before normalisation) into ``g_qkv`` (m, 3h) from dE/dO (m, h); adds dE/dw into ``g_sw``
    and dE/dr^ into ``g_ru`` (rows of the centre only). The four n x h x n products (g_o v^T, weights^T g_o,
    dL k, dL^T q) are BLAS GEMMs on contiguous per-centre copies, as in :func:`attention_forward`."""
    h = g_out.shape[1]
    for i in prange(offs.shape[0] - 1):
        b = offs[i]
        n = offs[i + 1] - b
        if n == 0:
            continue
        base = o2[i]
        dr = np.empty((n, n))
        rt = _dotr(runit, b, n, dr) if dotr else np.empty((3, 0))
        q = np.empty((n, h))
        k = np.empty((n, h))
        v = np.empty((n, h))
        _centre_qkv(qkv, b, n, h, q, k, v)
        go = np.empty((n, h))
        for j in range(n):
            for c in range(h):
                go[j, c] = g_out[b + j, c]
        gwm = np.dot(go, v.T)  # dE/d(weights) = g_o v^T
        gl = np.empty((n, n))  # dE/dlogit
        wm = np.empty((n, n))  # the weights a S (r^.r^)
        gdr = np.empty((n, n)) if dotr else np.empty((0, 0))  # dE/d(r^_j . r^_l)
        gamp_row = np.empty(n)
        gsw = np.zeros(n)  # dE/dw of the centre's rows, added to g_sw at the end
        for j in range(n):
            swj = sw[b + j]
            # through the r^ gate and the switch product -> dE/da
            dot_sum = 0.0
            for l in range(n):
                gw = gwm[j, l]
                masked = self_mask and l == j  # attn_mask: the diagonal weight is 0, its gradient too
                if masked:
                    gw = 0.0
                a = a_st[base + j * n + l]
                s = swj * sw[b + l] if smooth else 1.0
                amp = a * s
                if dotr:
                    gdr[j, l] = gw * amp
                    wt = amp * dr[j, l]
                    gamp = gw * dr[j, l]
                else:
                    wt = amp
                    gamp = gw
                if masked:
                    wt = 0.0
                wm[j, l] = wt
                gamp_row[l] = gamp
                ga = gamp * s
                gl[j, l] = ga
                dot_sum += ga * a
            # softmax backward (the dead slots' constant logits only rescale a); smooth: S enters both
            # the logits and the weights
            gsj = 0.0
            for l in range(n):
                a = a_st[base + j * n + l]
                glp = a * (gl[j, l] - dot_sum)
                if smooth:
                    gs = gamp_row[l] * a + glp * (l_st[base + j * n + l] + SHIFT)
                    gsj += gs * sw[b + l]
                    gsw[l] += gs * swj
                    gl[j, l] = scaling * glp * (swj * sw[b + l])
                else:
                    gl[j, l] = scaling * glp
            gsw[j] += gsj
        if smooth:
            for l in range(n):
                g_sw[b + l] += gsw[l]
        if dotr:  # d(r^_j . r^_l): r^_l to row j, r^_j to row l
            gr = np.zeros((3, n))
            for j in range(n):
                a0 = rt[0, j]
                a1 = rt[1, j]
                a2 = rt[2, j]
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                for l in range(n):
                    gd = gdr[j, l]
                    s0 += gd * rt[0, l]
                    s1 += gd * rt[1, l]
                    s2 += gd * rt[2, l]
                    gr[0, l] += gd * a0
                    gr[1, l] += gd * a1
                    gr[2, l] += gd * a2
                gr[0, j] += s0
                gr[1, j] += s1
                gr[2, j] += s2
            for l in range(n):
                for x in range(3):
                    g_ru[b + l, x] += gr[x, l]
        gv = np.dot(wm.T, go)  # dE/dv_l = sum_j w_jl g_o,j
        gq = np.dot(gl, k)  # dE/dq_j = sum_l gl_jl k_l
        gk = np.dot(gl.T, q)  # dE/dk_l = sum_j gl_jl q_j
        for j in range(n):
            row = qkv[b + j]
            for part in range(3):
                src = gq[j] if part == 0 else (gk[j] if part == 1 else gv[j])
                if normalize:
                    yg = 0.0
                    for c in range(h):
                        yg += row[part * h + c] * src[c]
                    nn = nrm[b + j, part]
                    for c in range(h):
                        g_qkv[b + j, part * h + c] = _unit_grad(src[c], row[part * h + c], yg, nn, floor,
                                                                floor_branch)
                else:
                    for c in range(h):
                        g_qkv[b + j, part * h + c] = src[c]


# ---------------------------------------------------------------------------------- layer norm
@njit(**_PAR)
def layer_norm(y, x, b_out, ln_w, ln_b, eps, out, sig):
    """Row-wise Y = (O W_out, given as ``y``) + b_out + X, then LN: y becomes y^ = (Y - mean)/sig in place,
    out = y^ ln_w + ln_b, sig per row."""
    ng = y.shape[1]
    for p in prange(y.shape[0]):
        mu = 0.0
        for m in range(ng):
            v = (y[p, m] + b_out[m]) + x[p, m]
            y[p, m] = v
            mu += v
        mu /= ng
        var = 0.0
        for m in range(ng):
            c = y[p, m] - mu
            var += c * c
        s = math.sqrt(var / ng + eps)
        sig[p] = s
        for m in range(ng):
            yh = (y[p, m] - mu) / s
            y[p, m] = yh
            out[p, m] = yh * ln_w[m] + ln_b[m]


@njit(**_PAR)
def layer_norm_backward(g, yh, sig, ln_w):
    """dE/dX' (``g``) becomes dE/dY in place."""
    ng = g.shape[1]
    for p in prange(g.shape[0]):
        m1 = 0.0
        m2 = 0.0
        for m in range(ng):
            gy = g[p, m] * ln_w[m]
            m1 += gy
            m2 += gy * yh[p, m]
        m1 /= ng
        m2 /= ng
        s = sig[p]
        for m in range(ng):
            g[p, m] = (g[p, m] * ln_w[m] - m1 - yh[p, m] * m2) / s


# ---------------------------------------------------------------------------------- descriptor
@njit(**_PAR)
def descriptor_forward(offs, x, rhat, n_pad, prow, prhat, inv_n, m2, t_out, desc):
    """T (nb, ng, 4) = (1/N)(sum_j X_j (x) R^_j + n_pad X_pad (x) R^_pad) and the first ng*m2 columns of
    ``desc`` (T T<^T, row-major (ng, m2)); ``prow`` (nb, ng) / ``prhat`` (nb, 4): each centre's padding row."""
    ng = x.shape[1]
    for i in prange(offs.shape[0] - 1):
        t = t_out[i]
        npd = n_pad[i]
        for a in range(ng):
            for c in range(4):
                t[a, c] = npd * prow[i, a] * prhat[i, c]
        for j in range(offs[i], offs[i + 1]):
            r0 = rhat[j, 0]
            r1 = rhat[j, 1]
            r2 = rhat[j, 2]
            r3 = rhat[j, 3]
            for a in range(ng):
                xa = x[j, a]
                t[a, 0] += xa * r0
                t[a, 1] += xa * r1
                t[a, 2] += xa * r2
                t[a, 3] += xa * r3
        for a in range(ng):
            for c in range(4):
                t[a, c] *= inv_n
        for a in range(ng):
            for bb in range(m2):
                desc[i, a * m2 + bb] = t[a, 0] * t[bb, 0] + t[a, 1] * t[bb, 1] + t[a, 2] * t[bb, 2] + \
                    t[a, 3] * t[bb, 3]


@njit(**_PAR)
def descriptor_backward(offs, x, rhat, t_in, g_desc, inv_n, m2, g_x, g_rhat):
    """From dE/dD (nb, >= ng*m2): dE/dX_j (m, ng) into ``g_x`` and dE/dR^_j (m, 4) into ``g_rhat``."""
    ng = x.shape[1]
    for i in prange(offs.shape[0] - 1):
        t = t_in[i]
        gt = np.zeros((ng, 4))
        # dE/dT_ac = sum_b gD_ab T_bc + [a < m2] sum_a' gD_a'a T_a'c, as two passes (one output row each)
        for a in range(ng):
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for bb in range(m2):
                gd = g_desc[i, a * m2 + bb]
                s0 += gd * t[bb, 0]
                s1 += gd * t[bb, 1]
                s2 += gd * t[bb, 2]
                s3 += gd * t[bb, 3]
            gt[a, 0] = s0
            gt[a, 1] = s1
            gt[a, 2] = s2
            gt[a, 3] = s3
        for a2 in range(ng):
            g0 = t[a2, 0]
            g1 = t[a2, 1]
            g2 = t[a2, 2]
            g3 = t[a2, 3]
            for bb in range(m2):
                gd = g_desc[i, a2 * m2 + bb]
                gt[bb, 0] += gd * g0
                gt[bb, 1] += gd * g1
                gt[bb, 2] += gd * g2
                gt[bb, 3] += gd * g3
        for a in range(ng):
            for c in range(4):
                gt[a, c] *= inv_n
        for j in range(offs[i], offs[i + 1]):
            r0 = rhat[j, 0]
            r1 = rhat[j, 1]
            r2 = rhat[j, 2]
            r3 = rhat[j, 3]
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for a in range(ng):
                g_x[j, a] = gt[a, 0] * r0 + gt[a, 1] * r1 + gt[a, 2] * r2 + gt[a, 3] * r3
                xa = x[j, a]
                s0 += gt[a, 0] * xa
                s1 += gt[a, 1] * xa
                s2 += gt[a, 2] * xa
                s3 += gt[a, 3] * xa
            g_rhat[j, 0] = s0
            g_rhat[j, 1] = s1
            g_rhat[j, 2] = s2
            g_rhat[j, 3] = s3


@njit(**_PAR)
def input_backward(vectors, ti, dstd, rcut_smth, rcut, protection, tf_switch, rs, floor, floor_branch, g_x, dx0,
                   dx0w, dp, dp_s, g_rhat, g_sw, g_ru, runit, rnorm, gvec):
    """dE/dx_ij (m, 3) of every pair: dE/ds = dE/dR^_0 + g_x . dX0/ds (+ dE/dP . dP/ds where the first
    projection came from the tables: ``dp``/``dp_s`` non-empty), dE/dw (+ g_x . dX0/dw), dE/dr^ through
    the unit vector, then the env-matrix chain (as envmat.rows_to_vector_gradient) and the switch."""
    ng = g_x.shape[1]
    have_w = dx0w.shape[0] > 0
    have_p = dp.shape[0] > 0
    for p in prange(vectors.shape[0]):
        s = 0.0
        for m in range(ng):
            s += g_x[p, m] * dx0[p, m]
        if have_p:
            for m in range(dp.shape[1]):
                s += dp[p, m] * dp_s[p, m]
        gs = g_sw[p]
        if have_w:
            for m in range(ng):
                gs += g_x[p, m] * dx0w[p, m]
        u0 = runit[p, 0]
        u1 = runit[p, 1]
        u2 = runit[p, 2]
        gr0 = g_ru[p, 0]
        gr1 = g_ru[p, 1]
        gr2 = g_ru[p, 2]
        ug = u0 * gr0 + u1 * gr1 + u2 * gr2
        nn = rnorm[p]
        t = ti[p]
        g0 = (g_rhat[p, 0] + s) / dstd[t, 0]
        g1 = (g_rhat[p, 1] + _unit_grad(gr0, u0, ug, nn, floor, floor_branch)) / dstd[t, 1]
        g2 = (g_rhat[p, 2] + _unit_grad(gr1, u1, ug, nn, floor, floor_branch)) / dstd[t, 2]
        g3 = (g_rhat[p, 3] + _unit_grad(gr2, u2, ug, nn, floor, floor_branch)) / dstd[t, 3]
        v0 = vectors[p, 0]
        v1 = vectors[p, 1]
        v2 = vectors[p, 2]
        r, rho, w, dw, a, b, c, d = _env_pair(v0, v1, v2, rcut_smth, rcut, protection)
        x, y, z = _env_chain(g0, g1, g2, g3, v0, v1, v2, r, rho, w, dw)
        f = gs * _smooth_weight(rho, w, dw, tf_switch, rs)[1] / r
        gvec[p, 0] = x + f * v0
        gvec[p, 1] = y + f * v1
        gvec[p, 2] = z + f * v2
