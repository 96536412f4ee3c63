"""Energy, forces and virials of a se_e2_a model on a pair list (numpy reference backend).

Work is done per block of centre atoms: the embedding matrix exists only for one block, every
real neighbour is visited once, and DeePMD-kit's padding rows are folded in analytically
(``n_pad * G(x_pad) (x) [x_pad, 0, 0, 0]``) instead of being visited.

Conventions (DeePMD-kit): pair vector ``x_ij = r_j - r_i``; force ``F = -dE/dr``; virial
``W = -sum_pairs dE/dx_ij (x) x_ij``; the per-atom virial of a pair goes to the neighbour ``j``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .envmat import env_rows, rows_to_vector_gradient
from .model.params import ModelParams
from .neighbors import PairList


@dataclass
class Results:
    energy: float
    atom_energy: np.ndarray  # (nloc,)
    forces: np.ndarray  # (nall, 3)
    virial: np.ndarray  # (3, 3)
    atom_virial: np.ndarray | None  # (nall, 9)


def padding_embedding(model: ModelParams, embed) -> dict:
    """G at the padding input for every (centre type, neighbour type): {(ti, tj): (x_pad, G (ng,))}."""
    d = model.descriptor
    out = {}
    for ti in range(d.ntypes):
        x_pad = -d.davg[ti, 0] / d.dstd[ti, 0]
        for tj in range(d.ntypes):
            if d.sel[tj] == 0 or d.excluded(ti, tj):
                continue
            g, _ = embed(d.net_key(ti, tj), np.array([x_pad]))
            out[(ti, tj)] = (x_pad, g[0])
    return out


def _fitting_energy_and_grad(model: ModelParams, desc: np.ndarray, types: np.ndarray):
    """Atomic energies (n,) and dE_i/dD_i (n, dim) per type."""
    fit = model.fitting
    energy = np.zeros(len(types))
    grad = np.zeros_like(desc)
    for t in np.unique(types):
        rows = np.nonzero(types == t)[0]
        net = fit.nets[t]
        if net is None or t in fit.exclude_types:
            continue
        e, g = net.value_and_gradient(desc[rows])
        energy[rows] = e[:, 0] + fit.bias_atom_e[t]
        grad[rows] = g
    energy += model.out_bias[types]
    if model.atom_exclude_types:
        mask = np.array([t not in model.atom_exclude_types for t in types])
        energy *= mask
        grad *= mask[:, None]
    return energy, grad


def evaluate_se_e2_a(model: ModelParams, embed, pairs: PairList, atype_all: np.ndarray,
                     *, atomic_virial: bool = False, block_atoms: int = 128,
                     pad_cache: dict | None = None) -> Results:
    """Evaluate a se_e2_a model. ``embed(key, x) -> (G, dG/dx)`` is exact or tabulated."""
    d = model.descriptor
    nloc, nall = pairs.nloc, pairs.nall
    ng, m2, ntypes = d.ng, d.axis_neuron, d.ntypes
    inv_n = 1.0 / d.nnei
    atype = atype_all[:nloc]
    pad = pad_cache if pad_cache is not None else padding_embedding(model, embed)

    atom_energy = np.zeros(nloc)
    g_vec_all = np.zeros_like(pairs.vectors)
    # pairs are sorted by centre: offsets of each centre's run
    counts = np.bincount(pairs.centers, minlength=nloc)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n_pad = np.asarray(d.sel)[None, :] - pairs.slots_used  # (nloc, ntypes)

    for a0 in range(0, nloc, block_atoms):
        a1 = min(nloc, a0 + block_atoms)
        p0, p1 = offsets[a0], offsets[a1]
        nb = a1 - a0
        ci = pairs.centers[p0:p1] - a0
        slot = np.arange(p0, p1) - offsets[pairs.centers[p0:p1]]
        nmax = int(counts[a0:a1].max()) if nb else 0
        ti = atype[pairs.centers[p0:p1]]
        tj = atype_all[pairs.neighbors[p0:p1]]
        env = env_rows(pairs.vectors[p0:p1], d.rcut_smth, d.rcut, d.env_protection)
        rhat = (env.rows - d.davg[ti]) / d.dstd[ti]
        x = rhat[:, 0]
        g = np.empty((p1 - p0, ng))
        dg = np.empty((p1 - p0, ng))
        for key in {d.net_key(a, b) for a, b in zip(*np.unique(np.stack([ti, tj]), axis=1))} if len(ti) else ():
            sel_mask = (tj == key[-1]) if d.type_one_side else ((ti == key[0]) & (tj == key[1]))
            rows = np.nonzero(sel_mask)[0]
            g[rows], dg[rows] = embed(key, x[rows])
        # dense per-block layout: (nb, nmax, .) with zeros where an atom has fewer neighbours
        gd = np.zeros((nb, nmax, ng))
        rd = np.zeros((nb, nmax, 4))
        gd[ci, slot] = g
        rd[ci, slot] = rhat
        t_mat = np.matmul(gd.transpose(0, 2, 1), rd)  # (nb, ng, 4)
        tb = atype[a0:a1]
        for (ta, tn), (x_pad, g_pad) in pad.items():
            rows = np.nonzero(tb == ta)[0]
            if len(rows):
                t_mat[rows, :, 0] += n_pad[a0 + rows, tn][:, None] * (g_pad * x_pad)[None, :]
        t_mat *= inv_n
        t_small = t_mat[:, :m2, :]
        desc = np.matmul(t_mat, t_small.transpose(0, 2, 1)).reshape(nb, ng * m2)
        e_blk, g_desc = _fitting_energy_and_grad(model, desc, tb)
        atom_energy[a0:a1] = e_blk
        g_desc = g_desc.reshape(nb, ng, m2)
        g_t = np.matmul(g_desc, t_small)  # (nb, ng, 4)
        g_t[:, :m2, :] += np.matmul(g_desc.transpose(0, 2, 1), t_mat)
        g_t *= inv_n
        # back to the pairs: dE/dR^ = G gT, dE/dx = sum_a G'_a (gT R^)_a
        g_rhat_d = np.matmul(gd, g_t)  # (nb, nmax, 4)
        gt_r = np.matmul(rd, g_t.transpose(0, 2, 1))  # (nb, nmax, ng)
        g_rhat = g_rhat_d[ci, slot]
        g_rhat[:, 0] += np.einsum("pa,pa->p", dg, gt_r[ci, slot])
        g_rows = g_rhat / d.dstd[ti]
        g_vec_all[p0:p1] = rows_to_vector_gradient(env, g_rows)

    forces = np.zeros((nall, 3))
    np.add.at(forces, pairs.neighbors, -g_vec_all)
    np.add.at(forces, pairs.centers, g_vec_all)
    pair_virial = -g_vec_all[:, :, None] * pairs.vectors[:, None, :]  # (npair, 3, 3)
    virial = pair_virial.sum(axis=0)
    atom_virial = None
    if atomic_virial:
        atom_virial = np.zeros((nall, 9))
        np.add.at(atom_virial, pairs.neighbors, pair_virial.reshape(-1, 9))
    return Results(energy=float(atom_energy.sum()), atom_energy=atom_energy, forces=forces,
                   virial=virial, atom_virial=atom_virial)
