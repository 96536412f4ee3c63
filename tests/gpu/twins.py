"""Numpy twins of the CUDA kernels: same argument meaning, written from the reference modules.

Each twin is the reference arithmetic (envmat, Table.locate/evaluate, the exact nets, the
neighbour selection) laid out like its kernel. ``kernel_cases`` runs a kernel and its twin on
the same random inputs, including embedding inputs below, inside the coarse part of and beyond
the tables, on any KernelContext: emulated on the CPU (CI), CuPy on a GPU (pytest -m gpu).
"""

from __future__ import annotations

import numpy as np

from deepcomp_ase.backends.cupy_gpu import padded_from_pairs
from deepcomp_ase.compress.tables import ABOVE, BELOW, COARSE
from deepcomp_ase.embedding import TabulatedEmbedding
from deepcomp_ase.envmat import env_rows, rows_to_vector_gradient
from deepcomp_ase.neighbors import neighbor_pairs_ase, select_neighbors
from deepcomp_ase.overflow import OverflowTally


class Model:
    """Host view of what DeviceModel uploads (float64)."""

    def __init__(self, potential):
        d = potential.parts[0]
        self.d = d
        self.tables = potential.embedders[0].tables
        self.keys = sorted(self.tables)
        self.embed = TabulatedEmbedding(self.tables, d.embeddings, OverflowTally())
        nt = d.ntypes
        self.nt, self.ng, self.m2, self.nnei = nt, d.ng, d.axis_neuron, d.nnei
        self.sel = np.asarray(d.sel)
        self.sec = np.concatenate([[0], np.cumsum(d.sel)]).astype(np.int64)
        index = {k: n for n, k in enumerate(self.keys)}
        self.pair_table = np.full(nt * nt, -1)
        for ti in range(nt):
            for tj in range(nt):
                if not d.excluded(ti, tj) and d.sel[tj] > 0:
                    self.pair_table[ti * nt + tj] = index[d.net_key(ti, tj)]
        self.pad_vec = np.zeros((nt * nt, d.ng))
        for (ta, tn), (x_pad, g_pad) in potential.evaluators[0].pad.items():
            self.pad_vec[ta * nt + tn] = g_pad * x_pad

    def g(self, tab, x):
        return self.embed(self.keys[tab], np.asarray(x, dtype=np.float64))


def twin_nlist(positions, cell, pbc, atype, d, rcut, model_exclude=frozenset()):
    """nlist, rij (padded, per-type sections) and nnbr from ASE + select_neighbors."""
    i, j, vec = neighbor_pairs_ase(positions, cell, pbc, rcut)
    pairs = select_neighbors(i, j, vec, atype, len(positions), d.sel, rcut, frozenset(), model_exclude)
    nlist, rij = padded_from_pairs(pairs, atype, d.sel)
    return nlist, rij, pairs.slots_used.astype(np.int32), pairs.n_dropped


def twin_env_mat(m: Model, nlist, rij, atype):
    d = m.d
    nloc, nnei = nlist.shape
    em = np.empty((nloc, nnei, 4))
    flags = np.zeros(nloc, dtype=np.int32)
    counts = np.zeros(3, dtype=np.int64)
    slot_type = np.searchsorted(m.sec, np.arange(nnei), side="right") - 1
    for i in range(nloc):
        ti = atype[i]
        tab = m.pair_table[ti * m.nt + slot_type]
        real = (nlist[i] >= 0) & (tab >= 0)
        rows = np.zeros((nnei, 4))
        if real.any():
            rows[real] = env_rows(rij[i][real], d.rcut_smth, d.rcut, d.env_protection).rows
        em[i] = (rows - d.davg[ti]) / d.dstd[ti]
        for s in np.nonzero(real)[0]:
            _, _, region = m.tables[m.keys[tab[s]]].locate(em[i, s, :1])
            counts[0] += 1
            counts[1] += region[0] == COARSE
            if region[0] in (BELOW, ABOVE):
                counts[2] += 1
                flags[i] = 1
    return em, flags, counts


def twin_forward(m: Model, em, nnbr, atype, row_of_atom):
    nloc = em.shape[0]
    t_out = np.zeros((nloc, m.ng, 4))
    desc = np.zeros((nloc, m.ng * m.m2))
    for i in range(nloc):
        ti = atype[i]
        T = np.zeros((m.ng, 4))
        for t in range(m.nt):
            tab = m.pair_table[ti * m.nt + t]
            if tab < 0:
                continue
            e = em[i, m.sec[t]:m.sec[t] + nnbr[i, t]]
            if len(e):
                g, _ = m.g(tab, e[:, 0])
                T += g.T @ e
            T[:, 0] += (m.sel[t] - nnbr[i, t]) * m.pad_vec[ti * m.nt + t]
        T /= m.nnei
        t_out[i] = T
        desc[row_of_atom[i]] = (T @ T[:m.m2].T).reshape(-1)
    return t_out, desc


def twin_backward(m: Model, em, nnbr, atype, row_of_atom, t_in, g_desc):
    nloc = em.shape[0]
    g_em = np.zeros_like(em)
    for i in range(nloc):
        ti = atype[i]
        T = t_in[i]
        gD = g_desc[row_of_atom[i]].reshape(m.ng, m.m2)
        gT = gD @ T[:m.m2]
        gT[:m.m2] += gD.T @ T
        gT /= m.nnei
        for t in range(m.nt):
            tab = m.pair_table[ti * m.nt + t]
            if tab < 0 or nnbr[i, t] == 0:
                continue
            sl = slice(m.sec[t], m.sec[t] + nnbr[i, t])
            e = em[i, sl]
            g, dg = m.g(tab, e[:, 0])
            out = g @ gT
            out[:, 0] += np.einsum("pc,pc->p", dg, e @ gT.T)
            g_em[i, sl] = out
    return g_em


def twin_prod_force(m: Model, nlist, rij, g_em, nnbr, atype, nall):
    d = m.d
    nloc = nlist.shape[0]
    force = np.zeros((nall, 3))
    virial_rows = np.zeros((nloc, 9))
    atom_virial = np.zeros((nall, 9))
    for i in range(nloc):
        ti = atype[i]
        for t in range(m.nt):
            if m.pair_table[ti * m.nt + t] < 0 or nnbr[i, t] == 0:
                continue
            sl = slice(m.sec[t], m.sec[t] + nnbr[i, t])
            js, vec = nlist[i, sl], rij[i, sl]
            env = env_rows(vec, d.rcut_smth, d.rcut, d.env_protection)
            gv = rows_to_vector_gradient(env, g_em[i, sl] / d.dstd[ti])
            force[i] += gv.sum(axis=0)
            np.add.at(force, js, -gv)
            pv = (-gv[:, :, None] * vec[:, None, :]).reshape(-1, 9)
            virial_rows[i] += pv.sum(axis=0)
            np.add.at(atom_virial, js, pv)
    return force, virial_rows, atom_virial
