"""Kernel-vs-twin and whole-model checks, run on any backend context.

``test_kernels_emulated.py`` runs them with ``Backend(emulate=True)`` (the CUDA sources compiled
for the CPU, CI); ``test_gpu_backend.py`` with the CuPy backend on a GPU (``pytest -m gpu``).
"""

from __future__ import annotations

import numpy as np
import pytest
from twins import Model, twin_backward, twin_env_mat, twin_forward, twin_nlist, twin_prod_force

from deepcomp_ase.backends.cupy_gpu import Workspace
from deepcomp_ase.evaluate import fitting_energy_and_grad

TOL = {"float64": 1e-11, "float32": 3e-4}


@pytest.fixture(scope="session")
def host_emulation():
    """The kernels compiled for the CPU (g++, cached), or a skip saying why. A fixture, so the
    build happens when an emulated test runs, never at collection (``pytest -m gpu`` on the GPU
    machine collects these files and builds nothing)."""
    from deepcomp_ase.kernels import loader

    try:
        return loader.emulation_library()
    except Exception as exc:  # noqa: BLE001 - no compiler, or no C++20 library
        pytest.skip(f"host emulation unavailable: {str(exc)[:300]}")


#: mark of the tests that run emulated kernels
needs_emulation = pytest.mark.usefixtures("host_emulation")


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)) if b.size else 0.0


def assert_close(a, b, precision, what, tol=None):
    err = rel_err(a, b)
    tol = TOL[precision] if tol is None else tol
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e} ({precision})"
    return err


def host(backend, a):
    return backend.ctx.to_host(a)


def structure(ref, conf):
    coord, atype, box = ref.structure(conf)
    pbc = np.array([box is not None] * 3)
    cell = np.zeros((3, 3)) if box is None else np.asarray(box, dtype=np.float64).reshape(3, 3)
    return np.asarray(coord, dtype=np.float64), np.asarray(atype, dtype=np.int64), cell, pbc


def random_structure(kind: str, ntypes: int, seed: int = 0):
    """(coord, atype, cell, pbc) of the DPA-1 checks (rcut 4, sel 24): 'periodic' (12 atoms, padding),
    'dense' (36 atoms, more neighbours than sel), 'cluster' (non-periodic, one isolated atom),
    'close' (periodic, one pair 0.25 A apart: an input beyond the table)."""
    rng = np.random.default_rng(seed)
    n = {"periodic": 12, "dense": 36, "cluster": 10, "close": 12}[kind]
    if kind == "cluster":
        coord = rng.uniform(0, 4.0, size=(n, 3))
        coord[-1] = [20.0, 20.0, 20.0]  # no neighbour within rcut: only padding rows
        cell, pbc = np.zeros((3, 3)), np.array([False] * 3)
    else:
        cell = np.diag([7.0, 7.2, 7.4]) + np.array([[0, 0, 0], [0.4, 0, 0], [0.2, 0.3, 0]])
        coord = rng.uniform(0, 1, size=(n, 3)) @ cell
        pbc = np.array([True] * 3)
        if kind == "close":
            coord[1] = coord[0] + [0.25, 0.0, 0.0]
    atype = rng.integers(0, ntypes, n)
    atype[0] = ntypes - 1  # DPA-1's padding rows take the type of atom 0: not always type 0
    return coord, atype.astype(np.int64), cell, pbc


# ---------------------------------------------------------------------------- cell list
def sections_sorted(nlist, rij, sec):
    """Per (atom, section): rows sorted by (distance rounded, j) so ties compare equal."""
    out = []
    for i in range(nlist.shape[0]):
        for t in range(len(sec) - 1):
            js = nlist[i, sec[t]:sec[t + 1]]
            v = rij[i, sec[t]:sec[t + 1]]
            real = js >= 0
            js, v = js[real], v[real]
            r = np.round(v.astype(np.float64), 6)
            key = np.lexsort((r[:, 2], r[:, 1], r[:, 0], js, np.round(np.einsum("pi,pi->p", r, r), 5)))
            out.append((js[key], v[key]))
    return out


def check_cell_list(backend, pot, coord, atype, cell, pbc):
    m = Model(pot)
    got = backend.neighbor_list(pot, coord, atype, cell, pbc)
    assert got is not None, "device cell list refused the cell"
    nlist, rij, nnbr = (host(backend, a) for a in got)
    t_nlist, t_rij, t_nnbr, _ = twin_nlist(coord, cell, pbc, atype, m.d, m.d.rcut)
    np.testing.assert_array_equal(nnbr, t_nnbr)
    for (j1, v1), (j2, v2) in zip(sections_sorted(nlist, rij, m.sec), sections_sorted(t_nlist, t_rij, m.sec)):
        np.testing.assert_array_equal(j1, j2)
        assert_close(v1, v2, backend.precision, "pair vectors", tol=1e-12 if backend.precision == "float64" else 1e-6)
    # distance order inside each section
    d2 = np.einsum("ijk,ijk->ij", rij.astype(np.float64), rij.astype(np.float64))
    for t in range(m.nt):
        blk = d2[:, m.sec[t]:m.sec[t + 1]]
        real = nlist[:, m.sec[t]:m.sec[t + 1]] >= 0
        both = real[:, 1:] & real[:, :-1]
        assert np.all(np.diff(blk, axis=1)[both] >= -1e-6)
        assert np.all(real[:, 1:] <= real[:, :-1])  # real slots first, then padding


# ---------------------------------------------------------------------------- kernels
class Inputs:
    """A real structure's padded neighbour list, plus embedding inputs pushed out of the table."""

    def __init__(self, backend, pot, coord, atype, cell, pbc, seed=0):
        self.m = m = Model(pot)
        self.ctx = ctx = backend.ctx
        self.model_dm = backend.device_model(pot)
        self.dm = self.model_dm.parts[0]
        fp = ctx.fp
        self.atype = atype
        nlist, rij, nnbr, _ = twin_nlist(coord, cell, pbc, atype, m.d, m.d.rcut)
        rij = rij.astype(fp).astype(np.float64)
        # squeeze two pairs: one far beyond the table (exact net), one in the coarse part or beyond
        for i, r_new in ((0, 0.3), (1, 1.2)):
            s = m.sec[0] if nnbr[i, 0] else m.sec[1]
            rij[i, s] *= r_new / np.linalg.norm(rij[i, s])
        self.nlist, self.rij, self.nnbr = nlist, rij, nnbr
        self.em, self.flags, self.counts = twin_env_mat(m, nlist, rij, atype)
        self.nloc = len(coord)
        order = np.argsort(atype, kind="stable")
        self.row_of_atom = np.empty(self.nloc, dtype=np.int32)
        self.row_of_atom[order] = np.arange(self.nloc)
        self.rng = np.random.default_rng(seed)

    def dev(self, a, dtype=None):
        return self.ctx.asarray(a, dtype if dtype is not None else self.ctx.fp)

    def real_mask(self):
        m = self.m
        mask = np.zeros(self.nlist.shape, dtype=bool)
        for i in range(self.nloc):
            for t in range(m.nt):
                if m.pair_table[self.atype[i] * m.nt + t] >= 0:
                    mask[i, m.sec[t]:m.sec[t] + self.nnbr[i, t]] = True
        return mask


def check_env_mat(backend, inp: Inputs):
    ctx, dm, xp = inp.ctx, inp.dm, inp.ctx.xp
    em = xp.empty((inp.nloc, dm.nnei, 4), dtype=ctx.fp)
    flags = xp.zeros(inp.nloc, dtype=np.int32)
    counters = xp.zeros(8, dtype=np.uint64)
    ctx.launch("env_mat_se_a", inp.dev(inp.nlist, np.int32), inp.dev(inp.rij), inp.dev(inp.atype, np.int32), dm.sec,
               dm.pair_table, dm.davg, dm.dstd, dm.table_info, em, flags, counters, inp.nloc, dm.nnei, dm.ntypes,
               dm.rcut_smth, dm.rcut, dm.protection, 1)
    assert_close(host(backend, em), inp.em, backend.precision, "env_mat_se_a em")
    np.testing.assert_array_equal(host(backend, flags), inp.flags)
    c = host(backend, counters)
    np.testing.assert_array_equal(c[:3], inp.counts)
    assert inp.counts[2] >= 1, "the squeezed pair should be beyond the table"


def check_tabulate(backend, inp: Inputs):
    """Forward and backward, with inputs below, in the coarse part of and beyond the table."""
    ctx, dm, xp, m = inp.ctx, inp.dm, inp.ctx.xp, inp.m
    em = inp.em.copy()
    mask = inp.real_mask()
    slots = np.argwhere(mask)
    picks = inp.rng.choice(len(slots), size=min(6, len(slots)), replace=False)
    flags = inp.flags.copy()
    for k, (i, s) in enumerate(slots[picks]):
        t = int(np.searchsorted(m.sec, s, side="right") - 1)
        tab = m.tables[m.keys[m.pair_table[inp.atype[i] * m.nt + t]]]
        x = (tab.lower - 0.37, tab.upper + 0.4 * (tab.xmax - tab.upper), tab.xmax + 1.3)[k % 3]
        em[i, s, 0] = x
        if k % 3 != 1:
            flags[i] = 1
    em = em.astype(ctx.fp).astype(np.float64)
    t_want, d_want = twin_forward(m, em, inp.nnbr, inp.atype, inp.row_of_atom)
    common = (dm.table, dm.table_info, dm.table_offset, dm.net_layers, dm.net_first, dm.net_params, inp.dev(em),
              inp.dev(inp.nnbr, np.int32), inp.dev(flags, np.int32), inp.dev(inp.atype, np.int32), dm.sec,
              dm.pair_table, inp.dev(inp.row_of_atom, np.int32))
    scalars = (inp.nloc, dm.nnei, dm.ntypes, dm.ng, dm.m2, dm.ldd, dm.maxw, 1.0 / dm.nnei)
    t_out = xp.empty((inp.nloc, dm.ng, 4), dtype=ctx.fp)
    desc = xp.empty((inp.nloc, dm.ng * dm.m2), dtype=ctx.fp)
    ctx.launch("tabulate_fusion_se_a_fwd", *common, dm.pad_vec, t_out, desc, *scalars)
    errs = {"fwd T": assert_close(host(backend, t_out), t_want, backend.precision, "tabulate_fusion_se_a_fwd T"),
            "fwd D": assert_close(host(backend, desc), d_want, backend.precision, "tabulate_fusion_se_a_fwd D")}
    g_desc = inp.rng.normal(size=d_want.shape).astype(ctx.fp).astype(np.float64)
    t_in = host(backend, t_out).astype(np.float64)
    g_want = twin_backward(m, em, inp.nnbr, inp.atype, inp.row_of_atom, t_in, g_desc)
    g_em = xp.zeros((inp.nloc, dm.nnei, 4), dtype=ctx.fp)
    ctx.launch("tabulate_fusion_se_a_bwd", *common, inp.dev(t_in), inp.dev(g_desc), g_em, *scalars, dm.tile)
    got = host(backend, g_em)
    errs["bwd"] = assert_close(got[mask], g_want[mask], backend.precision, "tabulate_fusion_se_a_bwd g_em")
    # the same with no flag: only in-table inputs, fast (warp) path
    em2 = inp.em.astype(ctx.fp).astype(np.float64)
    clean = inp.flags == 0
    g_want2 = twin_backward(m, em2, inp.nnbr, inp.atype, inp.row_of_atom, t_in, g_desc)
    common2 = common[:6] + (inp.dev(em2),) + common[7:]
    ctx.launch("tabulate_fusion_se_a_bwd", *common2, inp.dev(t_in), inp.dev(g_desc), g_em, *scalars, dm.tile)
    got2 = host(backend, g_em)
    errs["bwd fast"] = assert_close(got2[mask & clean[:, None]], g_want2[mask & clean[:, None]], backend.precision,
                                    "tabulate_fusion_se_a_bwd (warp path) g_em")
    return errs


def check_prod_force(backend, inp: Inputs, nall=None):
    ctx, dm, xp, m = inp.ctx, inp.dm, inp.ctx.xp, inp.m
    nall = nall or inp.nloc
    mask = inp.real_mask()
    g_em = np.where(mask[..., None], inp.rng.normal(size=inp.em.shape), 0.0).astype(ctx.fp).astype(np.float64)
    atype_all = np.concatenate([inp.atype, np.zeros(nall - inp.nloc, dtype=np.int64)])
    want = twin_prod_force(m, inp.nlist, inp.rij, g_em, inp.nnbr, atype_all, nall)
    force = xp.zeros((nall, 3))
    vrows = xp.zeros((inp.nloc, 9))
    avir = xp.zeros((nall, 9))
    ctx.launch("prod_force_virial", inp.dev(inp.nlist, np.int32), inp.dev(inp.rij), inp.dev(g_em), None,
               inp.dev(inp.nnbr, np.int32), inp.dev(atype_all, np.int32), dm.sec, dm.pair_table, dm.dstd, force, vrows,
               avir, inp.nloc, dm.nnei, dm.ntypes, 4, dm.rcut_smth, dm.rcut, dm.protection)
    for got, exp, name in zip((force, vrows, avir), want, ("force", "virial rows", "atom virial")):
        assert_close(host(backend, got), exp, backend.precision, f"prod_force_virial {name}")


def check_fitting(backend, pot, inp: Inputs):
    """Per-type fitting nets (cuBLAS + element-wise kernels) and atom_energy vs the reference."""
    ctx, dm = inp.ctx, inp.model_dm
    ws = Workspace(ctx, dm, inp.atype, inp.nloc)
    desc = inp.rng.normal(scale=0.3, size=(inp.nloc, dm.ldd)).astype(ctx.fp).astype(np.float64)
    ws.desc[...] = ctx.asarray(desc[inp.row_of_atom] if False else desc, ctx.fp)
    backend._fitting(dm, ws)
    ctx.launch("atom_energy", ws.out_rows, ws.row_of_atom, ws.atype, dm.type_info, ws.atom_energy, inp.nloc)
    # rows are grouped by type: atom i's descriptor is row row_of_atom[i]
    e_want, g_want = fitting_energy_and_grad(pot.params, desc[inp.row_of_atom], inp.atype)
    assert_close(host(backend, ws.atom_energy), e_want, backend.precision, "fitting energy")
    assert_close(host(backend, ws.g_desc)[inp.row_of_atom], g_want, backend.precision, "fitting dE/dD")


# ---------------------------------------------------------------------------- whole model
def check_whole_model(backend, dev_pot, ref_pot, coord, atype, cell, pbc, tol=None, want=None):
    """compute_atoms on the device vs the numpy reference (``want``: its result, when already
    computed); host pair-list path too. Returns the relative errors."""
    if want is None:
        want = ref_pot.compute_atoms(coord, atype, cell, pbc, atomic_virial=True)
    got = backend.compute_atoms(dev_pot, coord, atype, cell, pbc, atomic_virial=True)
    p = backend.precision
    errs = {
        "energy": abs(got.energy - want.energy) / abs(want.energy),
        "forces": rel_err(got.forces, want.forces),
        "virial": rel_err(got.virial, want.virial),
        "atom_energy": rel_err(got.atom_energy, want.atom_energy),
        "atom_virial": rel_err(got.atom_virial, want.atom_virial),
    }
    tol = {"float64": 1e-10, "float32": 1e-4}[p] if tol is None else tol
    assert max(errs.values()) <= tol, (p, errs)
    pair_lists = [dev_pot.backend.select(part, *dev_pot.backend.pairs_from_atoms(coord, cell, pbc, dev_pot.rcut),
                                         atype, len(coord))
                  for part in dev_pot.plan.parts]
    via_pairs = backend.evaluate(dev_pot, pair_lists, atype, True)
    assert rel_err(via_pairs.forces, want.forces) <= tol
    assert abs(via_pairs.energy - want.energy) / abs(want.energy) <= tol
    return errs


def check_ghost_atoms(backend, dev_pot, ref_pot, coord, atype, cell, tol=1e-10):
    """The LAMMPS hand-off on the device path: a pair list over local + ghost atoms
    (DeepPotential.compute_pairs -> host select -> Backend.evaluate) of a periodic cell. Ghost
    forces and atom virials folded onto their owners, energy, virial and local atom energies
    equal the periodic reference within ``tol`` (relative)."""
    from conftest import with_ghost_atoms

    pbc = np.array([True] * 3)
    want = ref_pot.compute_atoms(coord, atype, cell, pbc, atomic_virial=True)
    atype_all, centers, neighbors, vectors, owner = with_ghost_atoms(coord, atype, cell, dev_pot.rcut)
    assert len(owner) > len(coord)  # many ghosts: a real domain-decomposition layout
    dev_pot.backend = backend
    got = dev_pot.compute_pairs(atype_all, len(coord), centers, neighbors, vectors, atomic_virial=True)
    assert backend.supports(dev_pot)
    nloc = len(coord)
    forces = got.forces[:nloc].copy()
    np.add.at(forces, owner, got.forces[nloc:])
    atom_virial = got.atom_virial[:nloc].copy()
    np.add.at(atom_virial, owner, got.atom_virial[nloc:])
    assert abs(got.energy - want.energy) <= tol * abs(want.energy)
    for a, b in ((forces, want.forces), (got.virial, want.virial), (got.atom_energy, want.atom_energy),
                 (atom_virial, want.atom_virial)):
        assert rel_err(a, b) <= tol


def check_counters(backend, dev_pot, ref_pot):
    """Device overflow counters, flushed into the tally, equal the reference tally."""
    backend.flush_overflow(dev_pot)
    a, b = dev_pot.tally, ref_pot.tally
    assert (a.n_inputs, a.n_coarse, a.n_beyond, a.n_sel_dropped) == (b.n_inputs, b.n_coarse, b.n_beyond,
                                                                      b.n_sel_dropped), (a.counts(), b.counts())
    if np.isfinite(b.worst_excess):
        assert a.worst_key == b.worst_key
        assert abs(a.worst_x - b.worst_x) <= 1e-5 * max(1.0, abs(b.worst_x))
