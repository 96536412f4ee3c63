"""DPA-1 (se_atten / dpa1 / se_atten_v2) with gated self-attention over the neighbours.

Per centre atom, neighbours j (the sel nearest of any type) get an embedding row X_j:
concat ``G_{ti,tj}(s_j)`` (type embedding folded into the net, model/params_dpa1.py) or strip
``G(s_j) (1 + tt[ti,tj] w_j)`` (w_j = 1 without the smooth type embedding). Each attention layer:

    q, k, v = X W_in + b_in              (each normalised to unit length when ``normalize``)
    L = scaling q k^T
    smooth:  a = softmax_j((L + c) S - c) over all sel slots, S_ij = w_i w_j, c = 20;  A = a S
    else:    a = softmax_j(L) over the real neighbours;                               A = a
    A *= r^_i . r^_j (attn_dotr)
    A_jj = 0 (TensorFlow's attn_mask; no renormalisation)
    X <- LayerNorm(X + (A v) W_out + b_out)

then T = (1/sel) sum_j X_j (x) R^_j and D = T T<^T as in se_e2_a. Slots without a neighbour
("dead": padding and excluded type pairs) enter the smooth softmax only through its denominator,
as (number of dead slots) exp(-c). Padding slots also have their own row: DeePMD-kit gives them
the radial input -davg/dstd and the type of the frame's first atom (its neighbour-list index 0);
the attention never mixes them with real rows (their keys are masked), so each padding row is a
constant per (centre type, first atom's type), computed once, and adds n_pad X_pad (x) R^_pad to T.
Excluded pairs keep their slot and contribute nothing (DeePMD-kit zeroes their rows).

Models read from TensorFlow graphs (Dpa1Params.tf_switch, unit_floor, pad_input) take TF's smooth
weight instead of w, floor every norm at 1e-6, and give padding slots a first row of their own per
centre type (the padding type), so pad_type plays no part (docs/descriptors.md).

The backward pass is written out by hand (no autodiff): LayerNorm, projections, softmax, the
switch products S and the angular gate r^_i . r^_j, back to s_j, w_j and r^_j.
"""

from __future__ import annotations

import numpy as np

from ..envmat import rows_to_vector_gradient
from ..model.params_dpa1 import ATTNW_SHIFT
from .block import Block, embed_by_key
from .se_atten_v2 import type_term_switch
from .se_e2_a import angular_backward


def _unit(x: np.ndarray, floor: float = 1e-12):
    """x / max(|x|, floor) along the last axis and that divisor (zero rows stay zero, as torch's
    normalize does; TensorFlow's l2_normalize floors at 1e-6, see Dpa1Params.unit_floor)."""
    n = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    safe = np.maximum(n, floor)
    return x / safe, safe


def _unit_backward(y: np.ndarray, n: np.ndarray, g: np.ndarray, floor: float | None = None) -> np.ndarray:
    """dE/dx of y = x / max(|x|, floor) from dE/dy; ``floor`` None: every |x| above the floor."""
    out = (g - y * np.einsum("...i,...i->...", y, g)[..., None]) / n
    if floor is not None:  # below the floor y = x / floor: a plain scaling
        out = np.where(n <= floor, g / floor, out)
    return out


def _floor(d):
    """The floor of the backward's _unit_backward: None for DeePMD-kit 3's 1e-12 (as before)."""
    return d.unit_floor if d.unit_floor != 1e-12 else None


def _off_diagonal(n: int) -> np.ndarray:
    """attn_mask's factor 1 - I on the (n, n) weights of each centre."""
    return 1.0 - np.eye(n)


def layer_forward(d, layer, x, mask, sw, dead, runit):
    """One attention layer on a dense block: x (nb, n, ng) -> x' and the context of the backward.

    ``mask`` (nb, n) real neighbours, ``sw`` (nb, n) the switch (0 where masked), ``dead`` (nb,) the
    number of sel slots without a real neighbour, ``runit`` (nb, n, 3) unit directions.
    """
    h = layer.hidden
    p = x @ layer.w_in + layer.b_in
    q, k, v = p[..., :h], p[..., h:2 * h], p[..., 2 * h:]
    if d.normalize:
        (q, nq), (k, nk), (v, nv) = _unit(q, d.unit_floor), _unit(k, d.unit_floor), _unit(v, d.unit_floor)
    else:
        nq = nk = nv = None
    logits = d.scaling * np.matmul(q, k.transpose(0, 2, 1))
    mcol = mask[:, None, :]
    if d.smooth:
        s = sw[:, :, None] * sw[:, None, :]
        lp = (logits + ATTNW_SHIFT) * s - ATTNW_SHIFT
        top = np.max(np.where(mcol, lp, -np.inf), axis=2, initial=-np.inf)
        top = np.where(dead[:, None] > 0, np.maximum(top, -ATTNW_SHIFT), top)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.where(mcol, np.exp(lp - top[:, :, None]), 0.0)
        z = e.sum(axis=2) + dead[:, None] * np.exp(-ATTNW_SHIFT - top)
        a = e / np.where(z > 0, z, 1.0)[:, :, None]
        amp = a * s
    else:
        s = None
        top = np.max(np.where(mcol, logits, -np.inf), axis=2, initial=-np.inf)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.where(mcol, np.exp(logits - top[:, :, None]), 0.0)
        z = e.sum(axis=2)
        a = e / np.where(z > 0, z, 1.0)[:, :, None]
        amp = a
    amp = amp * mask[:, :, None]
    if d.attn_dotr:
        dotr = np.matmul(runit, runit.transpose(0, 2, 1))
        weights = amp * dotr
    else:
        dotr = None
        weights = amp
    if d.attn_mask:
        weights = weights * _off_diagonal(weights.shape[1])
    o = np.matmul(weights, v)
    y = x + o @ layer.w_out + layer.b_out
    mu = y.mean(axis=2, keepdims=True)
    yc = y - mu
    sig = np.sqrt((yc * yc).mean(axis=2, keepdims=True) + layer.ln_eps)
    yh = yc / sig
    out = (yh * layer.ln_w + layer.ln_b) * mask[:, :, None]
    ctx = (q, k, v, nq, nk, nv, logits, s, a, amp, dotr, weights, yh, sig)
    return out, ctx


def layer_backward(d, layer, ctx, g_out, mask, sw, runit):
    """dE/dx (nb, n, ng), dE/dsw (nb, n) and dE/dr^ (nb, n, 3) of one layer from dE/dx'."""
    q, k, v, nq, nk, nv, logits, s, a, amp, dotr, weights, yh, sig = ctx
    m3 = mask[:, :, None]
    g_yh = g_out * m3 * layer.ln_w
    g_y = (g_yh - g_yh.mean(axis=2, keepdims=True) - yh * (g_yh * yh).mean(axis=2, keepdims=True)) / sig
    g_x = g_y.copy()
    g_o = g_y @ layer.w_out.T
    g_w = np.matmul(g_o, v.transpose(0, 2, 1))
    if d.attn_mask:  # the zeroed diagonal passes nothing back
        g_w *= _off_diagonal(g_w.shape[1])
    g_v = np.matmul(weights.transpose(0, 2, 1), g_o)
    g_sw = np.zeros(sw.shape)
    g_r = None
    if d.attn_dotr:
        g_dot = g_w * amp
        g_r = np.matmul(g_dot, runit) + np.matmul(g_dot.transpose(0, 2, 1), runit)
        g_amp = g_w * dotr
    else:
        g_amp = g_w
    g_amp = g_amp * m3
    if d.smooth:
        g_a = g_amp * s
        g_s = g_amp * a
    else:
        g_a = g_amp
    # softmax: the dead slots' logits are constants; their weights only rescale a
    g_lp = a * (g_a - np.einsum("bij,bij->bi", g_a, a)[:, :, None])
    if d.smooth:
        g_logit = g_lp * s
        g_s = g_s + g_lp * (logits + ATTNW_SHIFT)
        g_sw = np.einsum("bij,bj->bi", g_s, sw) + np.einsum("bij,bi->bj", g_s, sw)
    else:
        g_logit = g_lp
    g_q = d.scaling * np.matmul(g_logit, k)
    g_k = d.scaling * np.matmul(g_logit.transpose(0, 2, 1), q)
    if d.normalize:
        fl = _floor(d)
        g_q, g_k, g_v = _unit_backward(q, nq, g_q, fl), _unit_backward(k, nk, g_k, fl), _unit_backward(v, nv, g_v, fl)
    g_p = np.concatenate([g_q, g_k, g_v], axis=2)
    g_x += g_p @ layer.w_in.T
    return g_x * m3, g_sw * mask, g_r


def padding_rows(d, embed) -> np.ndarray:
    """(ntypes centre, ntypes first-atom type, ng): a padding slot's row after every layer.

    Its query never sees a key (all masked), so a layer maps it to LN(x + b_out). With
    ``d.pad_input`` (TensorFlow) the first row depends on the centre type alone."""
    nt = d.ntypes
    out = np.zeros((nt, nt, d.ng))
    for ti in range(nt):
        x_pad = np.array([-d.davg[ti, 0] / d.dstd[ti, 0]])
        for tp in range(nt):
            if d.pad_input is not None:
                row = d.pad_input[ti]
            elif d.tebd_input_mode == "strip":
                g, _ = embed((), x_pad)
                # smooth: the switch of a padding slot is 0, so the type term vanishes
                row = g[0] * (1.0 if d.smooth else 1.0 + d.type_pair_table[d.type_pair_row(ti, tp)])
            else:
                g, _ = embed(d.net_key(ti, tp), x_pad)
                row = g[0]
            for layer in d.layers:
                y = row + layer.b_out
                yc = y - y.mean()
                row = yc / np.sqrt((yc * yc).mean() + layer.ln_eps) * layer.ln_w + layer.ln_b
            out[ti, tp] = row
    return out


class Dpa1:
    block_atoms = 32

    def __init__(self, params, embed):
        self.d = params
        self.embed = embed
        self.pad = {}  # the compiled backends' padding fold does not apply (padding = "attention")
        self.pad_rows = padding_rows(params, embed)
        # a padding slot's normalised row: -davg/dstd in every column (DeePMD-kit's EnvMat)
        self.pad_rhat = -params.davg / params.dstd

    def _input(self, blk: Block, rhat, sw):
        """Each pair's first embedding row X_j, dX_j/ds_j, and (strip, smooth) dX_j/dw_j."""
        d = self.d
        x = rhat[:, 0]
        if d.tebd_input_mode == "strip":
            gs, dgs = self.embed((), x)
            tt = d.type_pair_table[d.type_pair_row(blk.ti, blk.tj)]
            gate = 1.0 + tt * (sw[:, None] if d.smooth else 1.0)
            return gs * gate, dgs * gate, (gs * tt if d.smooth else None)
        nt = d.ntypes
        if d.type_one_side:
            g, dg = embed_by_key(self.embed, blk.tj, x, d.ng, lambda c: (c,))
        else:
            g, dg = embed_by_key(self.embed, blk.ti * nt + blk.tj, x, d.ng, lambda c: (c // nt, c % nt))
        return g, dg, None

    def forward(self, blk: Block):
        d = self.d
        nb, n, ng, m2 = blk.nb, blk.nmax, d.ng, d.axis_neuron
        env = blk.env
        rhat = (env.rows - d.davg[blk.ti]) / d.dstd[blk.ti]
        sw, dsw = type_term_switch(d, env)  # the smooth weight: w(r), or TensorFlow's
        x0, dx0, dx0_sw = self._input(blk, rhat, sw)
        runit_p, rnorm = _unit(rhat[:, 1:4], d.unit_floor)
        mask = np.zeros((nb, n), dtype=bool)
        mask[blk.ci, blk.slot] = True
        swd = np.zeros((nb, n))
        swd[blk.ci, blk.slot] = sw
        rud = np.zeros((nb, n, 3))
        rud[blk.ci, blk.slot] = runit_p
        xd = np.zeros((nb, n, ng))
        xd[blk.ci, blk.slot] = x0
        dead = d.nnei - mask.sum(axis=1)
        ctxs = []
        for layer in d.layers:
            xd, c = layer_forward(d, layer, xd, mask, swd, dead, rud)
            ctxs.append(c)
        rd = np.zeros((nb, n, 4))
        rd[blk.ci, blk.slot] = rhat
        t_mat = np.matmul(xd.transpose(0, 2, 1), rd)  # (nb, ng, 4)
        n_pad = blk.n_pad[:, 0].astype(np.float64)
        prow = self.pad_rows[blk.atype, blk.pad_type]
        t_mat += n_pad[:, None, None] * prow[:, :, None] * self.pad_rhat[blk.atype][:, None, :]
        t_mat *= 1.0 / d.nnei
        desc = np.matmul(t_mat, t_mat[:, :m2, :].transpose(0, 2, 1)).reshape(nb, ng * m2)
        if d.concat_output_tebd:
            desc = np.concatenate([desc, d.type_embedding[blk.atype]], axis=1)
        ctx = ((xd, rd, t_mat), ctxs, mask, swd, rud, dx0, dx0_sw, runit_p, rnorm, dsw)
        return desc, ctx

    def backward(self, blk: Block, ctx, g_desc):
        d = self.d
        actx, ctxs, mask, swd, rud, dx0, dx0_sw, runit_p, rnorm, dsw = ctx
        g_desc = g_desc[:, : d.ng * d.axis_neuron]  # the type embedding does not move
        # q: dE/dX_j of the last layer's rows; the padding rows are constants
        g_rhat, q = angular_backward(d, blk, actx, np.zeros((blk.npair, d.ng)), g_desc)
        gx = np.zeros(actx[0].shape)
        gx[blk.ci, blk.slot] = q
        g_swd = np.zeros(swd.shape)
        g_rud = np.zeros(rud.shape)
        for layer, c in zip(reversed(d.layers), reversed(ctxs)):
            gx, g_s, g_r = layer_backward(d, layer, c, gx, mask, swd, rud)
            g_swd += g_s
            if g_r is not None:
                g_rud += g_r
        g0 = gx[blk.ci, blk.slot]
        g_rhat[:, 0] += np.einsum("pa,pa->p", g0, dx0)
        g_sw = g_swd[blk.ci, blk.slot]
        if dx0_sw is not None:
            g_sw = g_sw + np.einsum("pa,pa->p", g0, dx0_sw)
        g_rhat[:, 1:4] += _unit_backward(runit_p, rnorm, g_rud[blk.ci, blk.slot], _floor(d))
        env = blk.env
        g_vec = rows_to_vector_gradient(env, g_rhat / d.dstd[blk.ti])
        g_vec += (g_sw * dsw / env.r)[:, None] * env.vec
        return g_vec
