"""A block of centre atoms and their pairs, in the dense per-block layout the evaluators use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..envmat import EnvRows, env_rows
from ..neighbors import PairList, rank_in_group


@dataclass
class Block:
    """Centre atoms [a0, a1) and their pairs [p0, p1) of one descriptor's pair list."""

    a0: int
    a1: int
    p0: int
    p1: int
    ci: np.ndarray  # (np,) centre index inside the block
    slot: np.ndarray  # (np,) position among the centre's pairs
    type_slot: np.ndarray  # (np,) position among the centre's pairs of the same neighbour type
    nmax: int  # largest number of pairs of one centre in the block
    ti: np.ndarray  # (np,) centre type
    tj: np.ndarray  # (np,) neighbour type
    atype: np.ndarray  # (nb,) centre types
    n_pad: np.ndarray  # (nb, n_sel_blocks) padding slots per sel block
    env: EnvRows
    pad_type: int  # type of the frame's first atom: what DPA-1 gives its padding slots

    @property
    def nb(self) -> int:
        return self.a1 - self.a0

    @property
    def npair(self) -> int:
        return self.p1 - self.p0


class BlockSlicer:
    """Cut a pair list into blocks of centre atoms."""

    def __init__(self, pairs: PairList, atype_all: np.ndarray, sel, rcut_smth: float, rcut: float,
                 protection: float):
        self.pairs = pairs
        self.atype_all = atype_all
        self.sel = np.asarray(sel)
        self.rcut_smth, self.rcut, self.protection = rcut_smth, rcut, protection
        counts = np.bincount(pairs.centers, minlength=pairs.nloc)
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.n_pad = self.sel[None, :] - pairs.slots_used
        tj = atype_all[pairs.neighbors] if len(self.sel) > 1 else np.zeros(len(pairs.neighbors), dtype=np.int64)
        # pairs are sorted by (centre, type, distance)
        self.type_slot_all, _ = rank_in_group(pairs.centers * len(self.sel) + tj, pairs.nloc * len(self.sel))

    def block(self, a0: int, a1: int) -> Block:
        pairs = self.pairs
        p0, p1 = int(self.offsets[a0]), int(self.offsets[a1])
        centers = pairs.centers[p0:p1]
        atype = self.atype_all[: pairs.nloc]
        return Block(
            a0=a0, a1=a1, p0=p0, p1=p1,
            ci=centers - a0,
            slot=np.arange(p0, p1) - self.offsets[centers],
            type_slot=self.type_slot_all[p0:p1],
            nmax=int(self.counts[a0:a1].max()) if a1 > a0 else 0,
            ti=atype[centers],
            tj=self.atype_all[pairs.neighbors[p0:p1]],
            atype=atype[a0:a1],
            n_pad=self.n_pad[a0:a1],
            env=env_rows(pairs.vectors[p0:p1], self.rcut_smth, self.rcut, self.protection),
            pad_type=int(self.atype_all[0]) if len(self.atype_all) else 0,
        )


def embed_by_key(embed, keys: np.ndarray, x: np.ndarray, ng: int, key_of):
    """Evaluate G and dG/dx for inputs grouped by net key; ``keys`` is an integer code per input."""
    g = np.empty((len(x), ng))
    dg = np.empty((len(x), ng))
    for code in np.unique(keys):
        rows = np.nonzero(keys == code)[0]
        g[rows], dg[rows] = embed(key_of(int(code)), x[rows])
    return g, dg
