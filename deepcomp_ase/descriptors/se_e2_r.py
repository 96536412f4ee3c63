"""se_e2_r: radial-only embedding, D = (1/5) (1/N) sum_j G(s_j) (DeePMD-kit's scaling)."""

from __future__ import annotations

import numpy as np

from ..envmat import rows_to_vector_gradient
from .block import Block
from .se_e2_a import PairwiseEmbedding, add_padding

RESCALE = 0.2  # DeePMD-kit divides the se_e2_r descriptor by 5


class SeE2R(PairwiseEmbedding):
    block_atoms = 256

    def forward(self, blk: Block):
        d = self.d
        x = (blk.env.rows[:, 0] - d.davg[blk.ti, 0]) / d.dstd[blk.ti, 0]
        g, dg = self._embedding(blk, x)
        desc = np.zeros((blk.nb, d.ng))
        np.add.at(desc, blk.ci, g)
        add_padding(desc, blk, self.pad, radial=True)
        desc *= RESCALE / d.nnei
        return desc, dg

    def backward(self, blk: Block, dg, g_desc):
        d = self.d
        gx = np.einsum("pa,pa->p", dg, g_desc[blk.ci]) * (RESCALE / d.nnei)
        g_rows = np.zeros((blk.npair, 4))
        g_rows[:, 0] = gx / d.dstd[blk.ti, 0]
        return rows_to_vector_gradient(blk.env, g_rows)
