"""Energy, forces and virials of a DeePMD-kit energy model on pair lists (numpy reference).

Work is done per block of centre atoms: each descriptor part computes its descriptor for the
block (the embedding matrix exists only for one block), the fitting net gives the atomic
energies and dE/dD, and each part maps dE/dD back to dE/dx_ij for its pairs.

Conventions (DeePMD-kit): pair vector ``x_ij = r_j - r_i``; force ``F = -dE/dr``; virial
``W = -sum_pairs dE/dx_ij (x) x_ij``; the per-atom virial of a pair goes to the neighbour ``j``.
"""

from __future__ import annotations

import numpy as np

from .backends.base import Results  # noqa: F401 (its old home; every backend returns it)
from .descriptors.block import BlockSlicer
from .fitting_inputs import dedfparam
from .model.params import ModelParams
from .neighbors import PairList


def fitting_energy_and_grad(model: ModelParams, desc: np.ndarray, types: np.ndarray, extra: np.ndarray | None = None):
    """Atomic energies (n,) and dE_i/dD_i (n, dim); with ``extra`` (the frame/atomic parameter columns,
    :mod:`fitting_inputs`) the nets read ``[desc, extra]`` and the gradient covers both."""
    fit = model.fitting
    if extra is not None:
        desc = np.concatenate([desc, extra], axis=1)
    energy = np.zeros(len(types))
    grad = np.zeros_like(desc)
    if fit.shared is not None:
        e, g = fit.shared.value_and_gradient(desc)
        energy[:] = e[:, 0] + fit.bias_atom_e[types]
        grad[:] = g
    else:
        for t in np.unique(types):
            rows = np.nonzero(types == t)[0]
            net = fit.nets[t]
            if net is None:
                continue
            e, g = net.value_and_gradient(desc[rows])
            energy[rows] = e[:, 0] + fit.bias_atom_e[t]
            grad[rows] = g
    if fit.exclude_types:
        mask = np.array([t not in fit.exclude_types for t in types])
        energy *= mask
        grad *= mask[:, None]
    energy += model.out_bias[types]
    if model.atom_exclude_types:
        mask = np.array([t not in model.atom_exclude_types for t in types])
        energy *= mask
        grad *= mask[:, None]
    return energy, grad


def assemble(pair_lists: list[PairList], pair_grads: list[np.ndarray], nall: int, atomic_virial: bool):
    """Forces, virial and per-atom virial from dE/dx_ij of every pair."""
    forces = np.zeros((nall, 3))
    virial = np.zeros((3, 3))
    atom_virial = np.zeros((nall, 9)) if atomic_virial else None
    for pairs, g in zip(pair_lists, pair_grads):
        for k in range(3):
            forces[:, k] += np.bincount(pairs.centers, weights=g[:, k], minlength=nall)
            forces[:, k] -= np.bincount(pairs.neighbors, weights=g[:, k], minlength=nall)
        pv = -g[:, :, None] * pairs.vectors[:, None, :]  # (npair, 3, 3)
        virial += pv.sum(axis=0)
        if atomic_virial:
            pv = pv.reshape(-1, 9)
            for k in range(9):
                atom_virial[:, k] += np.bincount(pairs.neighbors, weights=pv[:, k], minlength=nall)
    return forces, virial, atom_virial


def evaluate_model(model: ModelParams, evaluators, pair_lists: list[PairList], atype_all: np.ndarray,
                   *, atomic_virial: bool = False, block_atoms: int | None = None,
                   extra: np.ndarray | None = None) -> Results:
    """Evaluate a model whose descriptor parts are ``evaluators`` with their ``pair_lists``;
    ``extra``: the (nloc, n) frame/atomic parameter columns of the fitting net, or None."""
    nloc, nall = pair_lists[0].nloc, pair_lists[0].nall
    atype = atype_all[:nloc]
    slicers = [BlockSlicer(pl, atype_all, ev.d.sel, ev.d.rcut_smth, ev.d.rcut, ev.d.env_protection)
               for ev, pl in zip(evaluators, pair_lists)]
    block = block_atoms or min(ev.block_atoms for ev in evaluators)
    dims = np.cumsum([0] + [ev.d.dim_out for ev in evaluators])
    grads = [np.zeros_like(pl.vectors) for pl in pair_lists]
    atom_energy = np.zeros(nloc)
    g_extra = None if extra is None else np.zeros_like(extra)
    for a0 in range(0, nloc, block):
        a1 = min(nloc, a0 + block)
        blocks = [s.block(a0, a1) for s in slicers]
        outs = [ev.forward(b) for ev, b in zip(evaluators, blocks)]
        desc = outs[0][0] if len(outs) == 1 else np.concatenate([o[0] for o in outs], axis=1)
        energy, g_desc = fitting_energy_and_grad(model, desc, atype[a0:a1], None if extra is None else extra[a0:a1])
        atom_energy[a0:a1] = energy
        if extra is not None:
            g_extra[a0:a1] = g_desc[:, dims[-1]:]
        for k, (ev, b, (_, ctx)) in enumerate(zip(evaluators, blocks, outs)):
            grads[k][b.p0:b.p1] = ev.backward(b, ctx, g_desc[:, dims[k]:dims[k + 1]])
    forces, virial, atom_virial = assemble(pair_lists, grads, nall, atomic_virial)
    return Results(energy=float(atom_energy.sum()), atom_energy=atom_energy, forces=forces, virial=virial,
                   atom_virial=atom_virial, dedfparam=None if extra is None else dedfparam(model.fitting, g_extra))
