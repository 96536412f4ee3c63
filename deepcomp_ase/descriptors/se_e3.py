"""se_e3: three-body embedding. For neighbour-type blocks t1 <= t2,
D = sum_{t1<=t2} 1/(sel_t1 sel_t2) sum_{j in t1, k in t2} e_jk G_{t1 t2}(e_jk), e_jk = rho_j . rho_k,
with rho the normalised direction part of the environment row. Padding has rho = 0 and adds nothing.
"""

from __future__ import annotations

import numpy as np

from ..envmat import rows_to_vector_gradient
from .block import Block


class SeE3:
    block_atoms = 16

    def __init__(self, params, embed):
        self.d = params
        self.embed = embed
        self.keys = sorted(params.embeddings)

    def _dense_rho(self, blk: Block):
        d = self.d
        rhat = (blk.env.rows - d.davg[blk.ti]) / d.dstd[blk.ti]
        per_type = []
        for t in range(d.ntypes):
            rows = np.nonzero(blk.tj == t)[0]
            n = int(blk.type_slot[rows].max()) + 1 if len(rows) else 0
            dense = np.zeros((blk.nb, n, 3))
            mask = np.zeros((blk.nb, n), dtype=bool)
            dense[blk.ci[rows], blk.type_slot[rows]] = rhat[rows, 1:]
            mask[blk.ci[rows], blk.type_slot[rows]] = True
            per_type.append((rows, dense, mask))
        return per_type

    def forward(self, blk: Block):
        d = self.d
        per_type = self._dense_rho(blk)
        desc = np.zeros((blk.nb, d.ng))
        ctx = []
        for t1, t2 in self.keys:
            _, rho1, m1 = per_type[t1]
            _, rho2, m2 = per_type[t2]
            if rho1.shape[1] == 0 or rho2.shape[1] == 0:
                continue
            e = np.matmul(rho1, rho2.transpose(0, 2, 1))  # (nb, n1, n2)
            valid = m1[:, :, None] & m2[:, None, :]
            ev = e[valid]
            g, dg = self.embed((t1, t2), ev)
            scale = 1.0 / (d.sel[t1] * d.sel[t2])
            contrib = np.zeros((blk.nb, e.shape[1], e.shape[2], d.ng))
            contrib[valid] = ev[:, None] * g
            desc += contrib.sum(axis=(1, 2)) * scale
            ctx.append((t1, t2, valid, ev, g, dg, scale))
        return desc, (per_type, ctx)

    def backward(self, blk: Block, context, g_desc):
        d = self.d
        per_type, ctx = context
        g_rho = [np.zeros_like(dense) for _, dense, _ in per_type]
        for t1, t2, valid, ev, g, dg, scale in ctx:
            _, rho1, _ = per_type[t1]
            _, rho2, _ = per_type[t2]
            # dE/de_jk = sum_a gD_a (G_a + e G'_a) / (sel1 sel2)
            bidx = np.nonzero(valid)[0]
            h = np.zeros(valid.shape)
            h[valid] = np.einsum("pa,pa->p", g + ev[:, None] * dg, g_desc[bidx]) * scale
            g_rho[t1] += np.matmul(h, rho2)
            g_rho[t2] += np.matmul(h.transpose(0, 2, 1), rho1)
        g_rows = np.zeros((blk.npair, 4))
        for t, (rows, _, _) in enumerate(per_type):
            if len(rows):
                g_rows[rows, 1:] = g_rho[t][blk.ci[rows], blk.type_slot[rows]]
        return rows_to_vector_gradient(blk.env, g_rows / d.dstd[blk.ti])
