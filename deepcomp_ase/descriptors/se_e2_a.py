"""se_e2_a: T = (1/N) sum_j G(s_j) (x) R_j, D = T T<^T (DeePMD-kit's DeepPot-SE descriptor).

Padding slots (fewer real neighbours than sel) are DeePMD-kit rows (-davg/dstd, 0, 0, 0) that do
contribute; they are folded in analytically as n_pad * G(x_pad) x_pad in column 0.
"""

from __future__ import annotations

import numpy as np

from ..envmat import rows_to_vector_gradient
from .block import Block, embed_by_key


def padding_embedding(d, embed) -> dict:
    """{(ti, tj): (x_pad, G(x_pad))} for every centre type and neighbour sel block."""
    out = {}
    for ti in range(d.ntypes):
        x_pad = -d.davg[ti, 0] / d.dstd[ti, 0]
        for tj in range(len(d.sel)):
            # an excluded pair's padding slots still count where the backend masks only real neighbours
            if d.sel[tj] == 0 or (d.excluded(ti, tj) and not getattr(d, "pad_excluded", False)):
                continue
            key = d.net_key(ti, tj)
            g, _ = embed(key, np.array([x_pad]))
            out[(ti, tj)] = (x_pad, g[0])
    return out


def _pad_row(x_pad, g_pad, radial: bool) -> np.ndarray:
    """What one padding slot adds: G(x_pad) x_pad to T's column 0 (se_e2_a, se_atten_v2), or
    G(x_pad) to D (se_e2_r, ``radial``)."""
    return np.asarray(g_pad) * (1.0 if radial else x_pad)


def padding_fold(pad: dict, radial: bool, shape) -> np.ndarray:
    """The padding rows' constant contribution per (centre type, sel block), as the compiled
    backends add it (:func:`_pad_row`). ``pad`` is :func:`padding_embedding`'s; ``shape`` is
    (ntypes, blocks, width >= ng) so that kernels may pad the output axis with zeros."""
    out = np.zeros(shape)
    for (ta, tn), (x_pad, g_pad) in pad.items():
        row = _pad_row(x_pad, g_pad, radial)
        out[ta, tn, :len(row)] = row
    return out


def add_padding(target: np.ndarray, blk: Block, pad: dict, radial: bool) -> None:
    """target[atom] += n_pad(atom, block) * :func:`_pad_row` for the atoms of a block; ``target`` is
    T's column 0, (nb, ng), or D (se_e2_r)."""
    for (ta, tn), (x_pad, g_pad) in pad.items():
        rows = np.nonzero(blk.atype == ta)[0]
        if len(rows):
            target[rows] += blk.n_pad[rows, tn][:, None] * _pad_row(x_pad, g_pad, radial)[None, :]


class PairwiseEmbedding:
    """Shared by the two-body descriptors: one net per (centre, neighbour) type or per neighbour type."""

    block_atoms = 128

    def __init__(self, params, embed):
        self.d = params
        self.embed = embed
        self.pad = padding_embedding(params, embed)

    def _embedding(self, blk: Block, x):
        d = self.d
        nt = d.ntypes
        if d.type_one_side:
            return embed_by_key(self.embed, blk.tj, x, d.ng, lambda c: (c,))
        return embed_by_key(self.embed, blk.ti * nt + blk.tj, x, d.ng, lambda c: (c // nt, c % nt))


def angular_forward(d, blk: Block, g, rhat, pad):
    """T = (1/N)(sum_j g_j (x) R^_j + padding), D = T T<^T for a block, from each pair's embedding
    g (npair, ng) and normalised row R^ (npair, 4); shared by se_e2_a and se_atten_v2.
    Returns D (nb, ng*m2) and the context of :func:`angular_backward`."""
    nb, ng, m2 = blk.nb, d.ng, d.axis_neuron
    # dense per-block layout (nb, nmax, .) with zeros where an atom has fewer neighbours
    gd = np.zeros((nb, blk.nmax, ng))
    rd = np.zeros((nb, blk.nmax, 4))
    gd[blk.ci, blk.slot] = g
    rd[blk.ci, blk.slot] = rhat
    t_mat = np.matmul(gd.transpose(0, 2, 1), rd)  # (nb, ng, 4)
    add_padding(t_mat[:, :, 0], blk, pad, radial=False)
    t_mat *= 1.0 / d.nnei
    desc = np.matmul(t_mat, t_mat[:, :m2, :].transpose(0, 2, 1)).reshape(nb, ng * m2)
    return desc, (gd, rd, t_mat)


def angular_backward(d, blk: Block, ctx, dg, g_desc):
    """From dE/dD (nb, ng*m2): dE/dR^ per pair (npair, 4) -- the input-slope term added with
    ``dg`` = dg_j/ds (npair, ng) -- and dE/dg per pair (npair, ng)."""
    gd, rd, t_mat = ctx
    nb, ng, m2 = blk.nb, d.ng, d.axis_neuron
    g_desc = g_desc.reshape(nb, ng, m2)
    g_t = np.matmul(g_desc, t_mat[:, :m2, :])  # (nb, ng, 4)
    g_t[:, :m2, :] += np.matmul(g_desc.transpose(0, 2, 1), t_mat)
    g_t *= 1.0 / d.nnei
    # dE/dR^ = G gT ; dE/dx = sum_a G'_a (gT R^)_a
    g_rhat = np.matmul(gd, g_t)[blk.ci, blk.slot]
    gt_r = np.matmul(rd, g_t.transpose(0, 2, 1))[blk.ci, blk.slot]
    g_rhat[:, 0] += np.einsum("pa,pa->p", dg, gt_r)
    return g_rhat, gt_r


class SeE2A(PairwiseEmbedding):

    def forward(self, blk: Block):
        d = self.d
        rhat = (blk.env.rows - d.davg[blk.ti]) / d.dstd[blk.ti]
        g, dg = self._embedding(blk, rhat[:, 0])
        desc, ctx = angular_forward(d, blk, g, rhat, self.pad)
        return desc, (ctx, dg)

    def backward(self, blk: Block, ctx, g_desc):
        d = self.d
        ctx, dg = ctx
        g_rhat, _ = angular_backward(d, blk, ctx, dg, g_desc)
        return rows_to_vector_gradient(blk.env, g_rhat / d.dstd[blk.ti])
