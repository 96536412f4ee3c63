"""se_atten_v2 (DPA-1 in strip mode, smooth type embedding) without attention layers.

g_j = G(s_j) * (1 + w(r_j) tt[centre type, neighbour type]), where the type-pair term tt is
the strip net evaluated once per type pair; then T = (1/N) sum_j g_j (x) R_j and D = T T<^T as
in se_e2_a, followed by the centre's type embedding. Neighbours are the sel nearest of any type.
"""

from __future__ import annotations

import numpy as np

from ..envmat import rows_to_vector_gradient
from .block import Block
from .se_e2_a import angular_backward, angular_forward, padding_embedding


def type_term_switch(d, env):
    """The smooth factor of the type term and its derivative d/dr.

    DeePMD-kit's backend-neutral se_atten_v2 uses the environment switch w(r). Its TensorFlow
    implementation instead rebuilds it from the radial entry s = w/r as 1 - (1 - rcut_smth*s)^3,
    clipped to [0, 1]; models read from TensorFlow graphs get that function, so they reproduce
    their frozen-model energies.
    """
    if not d.tf_switch:
        return env.w, env.dw
    rs = getattr(d, "switch_rcut_smth", None)  # DPA-1 graphs: TF's double (the op's is float32)
    rs = d.rcut_smth if rs is None else rs
    s = env.w / env.rho
    uu = 1.0 - rs * s
    w = 1.0 - uu * uu * uu
    inside = (w > 0.0) & (w < 1.0)
    ds_dr = env.dw / env.rho - env.w / (env.rho * env.rho)
    dw = np.where(inside, 3.0 * uu * uu * rs * ds_dr, 0.0)
    return np.clip(w, 0.0, 1.0), dw


def type_pair_rows(d) -> np.ndarray:
    """(ntypes, ntypes) int64: the strip-net table row of every (centre type, neighbour type)."""
    t = np.arange(d.ntypes)
    return np.ascontiguousarray(np.broadcast_to(d.type_pair_row(t[:, None], t[None, :]), (d.ntypes, d.ntypes)),
                                dtype=np.int64)


class SeAttenV2:
    block_atoms = 128

    def __init__(self, params, embed):
        self.d = params
        self.embed = embed
        # padding has w = 0, so its type term vanishes: the se_e2_a fold applies unchanged
        self.pad = padding_embedding(params, embed)

    def forward(self, blk: Block):
        d = self.d
        rhat = (blk.env.rows - d.davg[blk.ti]) / d.dstd[blk.ti]
        gs, dgs = self.embed((), rhat[:, 0])
        tt = d.type_pair_table[d.type_pair_row(blk.ti, blk.tj)]
        sw, dsw = type_term_switch(d, blk.env)
        gt1 = 1.0 + tt * sw[:, None]
        # with g = G (1 + tt w), T and D are se_e2_a's
        desc, actx = angular_forward(d, blk, gs * gt1, rhat, self.pad)
        if d.concat_output_tebd:
            desc = np.concatenate([desc, d.type_embedding[blk.atype]], axis=1)
        return desc, (actx, gs, dgs, tt, gt1, dsw)

    def backward(self, blk: Block, ctx, g_desc):
        d = self.d
        actx, gs, dgs, tt, gt1, dsw = ctx
        g_desc = g_desc[:, : d.ng * d.axis_neuron]  # the type embedding does not move
        g_rhat, q = angular_backward(d, blk, actx, dgs * gt1, g_desc)  # q: dE/dg per pair
        g_vec = rows_to_vector_gradient(blk.env, g_rhat / d.dstd[blk.ti])
        # the switch also scales the type term: dE/dw * dw/dr along the bond
        g_w = np.einsum("pa,pa->p", q, gs * tt)
        env = blk.env
        g_vec += (g_w * dsw / env.r)[:, None] * env.vec
        return g_vec
