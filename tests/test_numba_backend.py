"""The compiled CPU backend: every kernel against its numpy twin, then whole models against numpy."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from conftest import MODELS, Reference, evaluate, with_ghost_atoms

numba = pytest.importorskip("numba")

from deepcomp_ase.backends import numba_cpu  # noqa: E402
from deepcomp_ase.backends import numba_kernels as K  # noqa: E402
from deepcomp_ase.compress.tables import ABOVE, BELOW, COARSE, FINE  # noqa: E402
from deepcomp_ase.envmat import env_rows, rows_to_vector_gradient  # noqa: E402
from deepcomp_ase.errors import BackendUnavailableError  # noqa: E402
from deepcomp_ase.neighbors import neighbor_pairs_ase, select_neighbors  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402

REL = 1e-12


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-300)
    return float(np.abs(a - b).max()) / scale if b.size else 0.0


def _pot(path, backend, **kw):
    return DeepPotential.from_file(path, backend=backend, **kw)


@pytest.fixture(scope="module")
def cuau_compressed(compressed_model):
    return compressed_model("cuau_se_e2_a")


# ------------------------------------------------------------------------------ neighbour lists
def _canon(i, j, v):
    """Pairs as a sorted array (i, j, rounded vector) for set comparison."""
    key = np.column_stack([i, j, np.round(v, 8)])
    return key[np.lexsort(key.T[::-1])], v[np.lexsort(np.column_stack([i, j, np.round(v, 8)]).T[::-1])]


def _random_cell(rng, kind):
    if kind == "cubic":
        return np.diag([14.0, 13.0, 15.0])
    if kind == "small":  # shorter than 2*rcut: several images of one atom
        return np.array([[4.1, 0.0, 0.0], [1.3, 3.9, 0.0], [0.7, -0.9, 4.4]])
    if kind == "tiny":  # shorter than rcut in every direction
        return np.array([[2.6, 0.2, 0.0], [0.9, 2.4, 0.1], [-0.3, 0.4, 2.5]])
    return np.array([[10.0, 0.0, 0.0], [4.5, 9.0, 0.0], [-3.0, 2.5, 8.5]])  # skewed triclinic


@pytest.mark.parametrize("kind", ["cubic", "small", "tiny", "triclinic"])
@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_neighbor_pairs_periodic_match_ase(kind, pbc):
    rng = np.random.default_rng(zlib.crc32(repr((kind, pbc)).encode()))  # fixed across processes
    cell = _random_cell(rng, kind)
    n = {"cubic": 120, "small": 5, "tiny": 2, "triclinic": 60}[kind]
    frac = rng.random((n, 3))
    frac[: n // 3] += rng.integers(-2, 3, (n // 3, 3))  # atoms outside the cell too
    pos = frac @ cell
    rcut = 6.0
    i0, j0, v0 = neighbor_pairs_ase(pos, cell, pbc, rcut)
    i1, j1, s1, v1 = numba_cpu.neighbor_pairs(pos, cell, pbc, rcut)
    assert len(i1) == len(i0) and len(i0) > 0
    k0, vv0 = _canon(i0, j0, v0)
    k1, vv1 = _canon(i1, j1, v1)
    assert np.array_equal(k0[:, :2], k1[:, :2])
    assert np.abs(vv0 - vv1).max() < 1e-12
    assert np.all(np.diff(i1) >= 0)  # grouped by centre
    # the shift vectors reproduce the vectors
    assert np.abs(pos[j1] - pos[i1] + s1 @ cell - v1).max() < 1e-12


@pytest.mark.parametrize("n", [1, 2, 40, 300])
def test_neighbor_pairs_cluster_match_ase(n):
    rng = np.random.default_rng(n)
    pos = rng.random((n, 3)) * np.array([12.0, 30.0, 8.0]) * (n / 300) ** (1 / 3) + 5.0
    for cell in (np.zeros((3, 3)), np.eye(3) * 3.0):
        i0, j0, v0 = neighbor_pairs_ase(pos, cell, (False, False, False), 6.0)
        i1, j1, s1, v1 = numba_cpu.neighbor_pairs(pos, cell, (False, False, False), 6.0)
        assert np.array_equal(_canon(i0, j0, v0)[0][:, :2], _canon(i1, j1, v1)[0][:, :2])
        assert not s1.any()


def test_neighbor_list_reuse_with_skin(cuau_compressed):
    ref = Reference("cuau_se_e2_a")
    coord, atype, box = ref.structure("p108_0")
    pot = _pot(cuau_compressed, "numba")
    fresh = _pot(cuau_compressed, "numba")
    fresh.backend.skin = 0.0
    rng = np.random.default_rng(1)
    pos = coord.copy()
    for step in range(6):
        pos = pos + rng.normal(scale=0.05, size=pos.shape)  # < skin/2 per step over a few steps
        a = pot.compute_atoms(pos, atype, box, [True] * 3, atomic_virial=True)
        b = fresh.compute_atoms(pos, atype, box, [True] * 3, atomic_virial=True)
        assert _rel(a.forces, b.forces) < REL and abs(a.energy - b.energy) <= REL * abs(b.energy)
        assert _rel(a.atom_virial, b.atom_virial) < REL
    assert pot.backend.n_builds < 6  # reused at least once
    builds = pot.backend.n_builds
    pot.compute_atoms(pos, atype, box * 1.001, [True] * 3)  # cell change: rebuild
    assert pot.backend.n_builds == builds + 1
    pot.compute_atoms(pos + 0.6, atype, box * 1.001, [True] * 3)  # uniform shift > skin/2: rebuild
    assert pot.backend.n_builds == builds + 2


# ------------------------------------------------------------------------------ selection
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    nloc, nall, nt = 30, 45, 3
    atype_all = rng.integers(0, nt, nall)
    npair = 2000
    centers = rng.integers(0, nloc, npair)
    neighbors = rng.integers(0, nall, npair)
    vectors = rng.normal(size=(npair, 3)) * 3.0
    vectors[1::11] = vectors[::11][: len(vectors[1::11])]  # exact ties in distance
    sel = [9, 4, 12]
    mex = frozenset({(0, 2), (2, 0)}) if seed else frozenset()
    dex = frozenset({(1, 1)}) if seed != 1 else frozenset()
    ref = select_neighbors(centers, neighbors, vectors, atype_all, nloc, sel, 5.0, dex, mex)
    mexm = np.zeros((nt, nt), dtype=bool)
    dexm = np.zeros((nt, nt), dtype=bool)
    for a, b in mex:
        mexm[a, b] = True
    for a, b in dex:
        dexm[a, b] = True
    c, n, v, slots, nd, mpt, off = K.select_pairs(centers, neighbors, vectors, atype_all, nloc,
                                                  np.asarray(sel, dtype=np.int64), 5.0, mexm, dexm)
    assert np.array_equal(c, ref.centers) and np.array_equal(n, ref.neighbors)
    assert np.array_equal(v, ref.vectors)
    assert np.array_equal(slots, ref.slots_used)
    assert nd == ref.n_dropped and nd > 0
    assert np.array_equal(mpt, ref.max_per_type)
    assert np.array_equal(off, np.searchsorted(c, np.arange(nloc + 1)))


# ------------------------------------------------------------------------------ env matrix
def test_env_mat_matches_numpy():
    rng = np.random.default_rng(3)
    vec = rng.normal(size=(500, 3))
    vec *= (rng.random(500) * 6.5 + 0.05)[:, None] / np.linalg.norm(vec, axis=1)[:, None]
    for prot in (0.0, 0.3):
        env = env_rows(vec, 0.5, 6.0, prot)
        rows, drows = K.env_mat(vec, 0.5, 6.0, prot)
        assert _rel(rows, env.rows) < REL
        g = rng.normal(size=(500, 4))
        assert _rel(np.einsum("pk,pkx->px", g, drows), rows_to_vector_gradient(env, g)) < REL


# ------------------------------------------------------------------------------ table kernels
def _random_pairs(rng, pot, nloc=12, per_atom=40, close=True):
    """A pair list of random geometry (some pairs very close: beyond the tables)."""
    d = pot.params.descriptor
    nall = nloc + 20
    atype_all = rng.integers(0, d.ntypes, nall)
    centers = np.repeat(np.arange(nloc), per_atom)
    neighbors = rng.integers(0, nall, len(centers))
    vec = rng.normal(size=(len(centers), 3))
    r = rng.random(len(centers)) * 4.5 + 1.8
    if close:
        r[::37] = rng.random(len(r[::37])) * 1.2 + 0.1  # extrapolation table and beyond
    vec *= (r / np.linalg.norm(vec, axis=1))[:, None]
    sel = numba_cpu.Backend().select(pot.plan.parts[0], centers, neighbors, vec, atype_all, nloc)
    return sel, atype_all


def test_embedding_inputs_match_table_locate(cuau_compressed):
    pot = _pot(cuau_compressed, "numba")
    pk = pot.backend._pack(pot)
    rng = np.random.default_rng(4)
    pairs, atype_all = _random_pairs(rng, pot, nloc=40)
    d = pot.params.descriptor
    xs, code = K.embedding_inputs(pairs.centers, pairs.neighbors, pairs.vectors, atype_all, pk.davg, pk.dstd,
                                  d.rcut_smth, d.rcut, d.env_protection, pk.kidx, pk.tabf, pk.tabi, pk.split, True)
    env = env_rows(pairs.vectors, d.rcut_smth, d.rcut, d.env_protection)
    ti = atype_all[pairs.centers]
    x_ref = (env.rows[:, 0] - d.davg[ti, 0]) / d.dstd[ti, 0]
    assert _rel(xs, x_ref) < REL
    tj = atype_all[pairs.neighbors]
    for p in range(len(xs)):
        _, _, region = pk.tables[pk.kidx[ti[p], tj[p]]].locate(np.array([xs[p]]))
        assert code[p] & 3 == region[0]
    assert {int(c) for c in np.unique(code)} >= {FINE, COARSE, ABOVE}
    x = np.array([-5.0, -1.0, 0.0, 6.999, 7.0, 34.99, 35.0, 1e3])
    for xv in x:
        row, t, region = K._locate(xv, pk.tabf, pk.tabi, 0)
        idx, t_ref, reg_ref = pk.tables[0].locate(np.array([xv]))
        assert region == reg_ref[0]
        if region in (FINE, COARSE):
            assert row == idx[0] and t == t_ref[0]
        else:
            assert row == -1 and region in (BELOW, ABOVE)


def _twin_forward_backward(pot, pairs, atype_all, gdesc):
    """numpy twin of tabulate_forward / tabulate_backward: the reference formulas per atom."""
    d = pot.params.descriptor
    embed = pot.plan.parts[0].embed
    pad = pot.plan.parts[0].pad
    nloc, ng, m2 = pairs.nloc, d.ng, d.axis_neuron
    env = env_rows(pairs.vectors, d.rcut_smth, d.rcut, d.env_protection)
    ti = atype_all[pairs.centers]
    tj = atype_all[pairs.neighbors]
    rhat = (env.rows - d.davg[ti]) / d.dstd[ti]
    g = np.zeros((len(ti), ng))
    dg = np.zeros((len(ti), ng))
    for p in range(len(ti)):
        g[p], dg[p] = (a[0] for a in embed(d.net_key(ti[p], tj[p]), rhat[p:p + 1, 0]))
    T = np.zeros((nloc, ng, 4))
    np.add.at(T, pairs.centers, g[:, :, None] * rhat[:, None, :])
    n_pad = np.asarray(d.sel)[None, :] - pairs.slots_used
    for (ta, tn), (x_pad, g_pad) in pad.items():
        rows = np.nonzero(atype_all[:nloc] == ta)[0]
        T[rows, :, 0] += n_pad[rows, tn][:, None] * (g_pad * x_pad)[None, :]
    T /= d.nnei
    desc = np.matmul(T, T[:, :m2].transpose(0, 2, 1)).reshape(nloc, -1)
    gd = gdesc.reshape(nloc, ng, m2)
    gT = np.matmul(gd, T[:, :m2])
    gT[:, :m2] += np.matmul(gd.transpose(0, 2, 1), T)
    gT /= d.nnei
    gt_p = gT[pairs.centers]  # (np, ng, 4)
    g_rhat = np.einsum("pa,pac->pc", g, gt_p)
    g_rhat[:, 0] += np.einsum("pa,pac,pc->p", dg, gt_p, rhat)
    return T, desc, rows_to_vector_gradient(env, g_rhat / d.dstd[ti])


@pytest.mark.parametrize("compressed", [True, False])
def test_tabulate_forward_backward_match_twin(cuau_compressed, compressed):
    pot = _pot(cuau_compressed if compressed else MODELS / "cuau_se_e2_a.dp", "numba")
    pk = pot.backend._pack(pot)
    d = pot.params.descriptor
    rng = np.random.default_rng(5)
    pairs, atype_all = _random_pairs(rng, pot)
    nloc = pairs.nloc
    gdesc = rng.normal(size=(nloc, d.ng * d.axis_neuron))
    T_ref, desc_ref, gvec_ref = _twin_forward_backward(pot, pairs, atype_all, gdesc)

    xs, code = K.embedding_inputs(pairs.centers, pairs.neighbors, pairs.vectors, atype_all, pk.davg, pk.dstd,
                                  d.rcut_smth, d.rcut, d.env_protection, pk.kidx, pk.tabf, pk.tabi, pk.split,
                                  compressed)
    if compressed:
        pot.tally.reset()
        ext_row, g_ext, dg_ext = numba_cpu._tally_and_overrides(pk, pairs, atype_all, xs, code, pot.tally)
        assert pot.tally.n_beyond > 0 and (ext_row >= 0).sum() == pot.tally.n_beyond  # flagged and counted
        assert pot.tally.n_inputs == len(xs)
    else:
        ext_row = np.full(len(xs), -1, dtype=np.int64)
        g_ext, dg_ext = numba_cpu._exact_chunk(pk, pairs, atype_all, np.arange(len(xs)), xs, ext_row)
    atoms = rng.permutation(nloc)  # any order of centre atoms
    offsets = np.searchsorted(pairs.centers, np.arange(nloc + 1))
    n_pad = np.asarray(d.sel)[None, :] - pairs.slots_used
    T = np.empty((nloc, 4, pk.ngp))
    desc = np.empty((nloc, d.ng * d.axis_neuron))
    args = (pairs.neighbors, pairs.vectors, atype_all, pk.davg, pk.dstd, d.rcut_smth, d.rcut, d.env_protection,
            pk.kidx, pk.tabf, pk.tabi, pk.coeffs, ext_row)
    K.tabulate_forward(atoms, offsets, *args, g_ext, n_pad, pk.padx, pk.inv_n, d.ng, d.axis_neuron, pk.tterm,
                       pk.term_row, pk.tf_switch, T, desc)
    assert _rel(T[:, :, : d.ng].transpose(0, 2, 1), T_ref[atoms]) < REL
    assert not T[:, :, d.ng:].any()
    assert _rel(desc, desc_ref[atoms]) < REL
    pbase, pidx = K.pair_bases(atoms, offsets)
    gvec = np.empty((len(pidx), 3))
    K.tabulate_backward(atoms, offsets, pbase, *args, g_ext, dg_ext, T, gdesc[atoms].copy(), pk.inv_n, d.ng,
                        d.axis_neuron, pk.tterm, pk.term_row, pk.tf_switch, gvec)
    assert _rel(gvec, gvec_ref[pidx]) < REL


def test_assemble_matches_add_at():
    rng = np.random.default_rng(6)
    nloc, nall, npair = 25, 40, 600
    centers = np.sort(rng.integers(0, nloc, npair))
    neighbors = rng.integers(0, nall, npair)
    vectors = rng.normal(size=(npair, 3))
    g = rng.normal(size=(npair, 3))
    f_ref = np.zeros((nall, 3))
    np.add.at(f_ref, neighbors, -g)
    np.add.at(f_ref, centers, g)
    pv = -g[:, :, None] * vectors[:, None, :]
    av_ref = np.zeros((nall, 9))
    np.add.at(av_ref, neighbors, pv.reshape(-1, 9))
    offsets = np.searchsorted(centers, np.arange(nloc + 1))
    forces = np.zeros((nall, 3))
    av = np.zeros((nall, 9))
    vir = np.zeros((3, 3))
    perm = rng.permutation(nloc)
    for atoms in (perm[:12], perm[12:]):  # two chunks, any atom order
        pbase, pidx = K.pair_bases(atoms, offsets)
        vir += K.assemble_forces_virial(atoms, offsets, pbase, neighbors, vectors, g[pidx], forces, av, True)
    assert _rel(forces, f_ref) < REL and _rel(av, av_ref) < REL and _rel(vir, pv.sum(axis=0)) < REL


# ------------------------------------------------------------------------------ whole models
def _assert_matches_numpy(fast, ref_pot, ref, confs, min_beyond: int = 0):
    """Every result field within REL of the numpy backend and identical overflow tallies, per
    configuration; overflow configurations must send at least ``min_beyond`` inputs past the table."""
    for conf in confs:
        fast.tally.reset()
        ref_pot.tally.reset()
        a, b = evaluate(fast, ref, conf), evaluate(ref_pot, ref, conf)
        assert abs(a.energy - b.energy) <= REL * abs(b.energy), conf
        for field in ("atom_energy", "forces", "virial", "atom_virial"):
            assert _rel(getattr(a, field), getattr(b, field)) < REL, (conf, field)
        assert fast.tally.counts() == ref_pot.tally.counts(), conf
        if conf.startswith("overflow"):
            assert fast.tally.n_beyond >= min_beyond, conf


# the long runs carry the slow marker (pytest -m "not slow" is the developer loop; CI runs all)
@pytest.mark.parametrize("compressed", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_refsuite_matches_numpy_backend(cuau_compressed, compressed):
    path = cuau_compressed if compressed else MODELS / "cuau_se_e2_a.dp"
    fast, ref_pot = _pot(path, "numba"), _pot(path, "numpy")
    assert isinstance(fast.backend, numba_cpu.Backend)
    ref = Reference("cuau_se_e2_a")
    # in-distribution, stretched and overflow configurations
    _assert_matches_numpy(fast, ref_pot, ref, ref.names, min_beyond=2 if compressed else 0)


@pytest.mark.parametrize("name", ["cu_se_e2_a_gelu", pytest.param("cu_se_e2_a_relu", marks=pytest.mark.slow)])
def test_other_activations_match_numpy_backend(compressed_model, name):
    ref = Reference(name)
    for path in (compressed_model(name), MODELS / f"{name}.dp"):
        fast, ref_pot = _pot(path, "numba"), _pot(path, "numpy")
        for conf in ("p32_0", "cluster79", "stretched_0.90A"):
            if conf not in ref.names:
                continue
            a, b = evaluate(fast, ref, conf), evaluate(ref_pot, ref, conf)
            assert abs(a.energy - b.energy) <= REL * abs(b.energy), conf
            assert _rel(a.forces, b.forces) < REL and _rel(a.virial, b.virial) < REL, conf
            assert fast.tally.counts() == ref_pot.tally.counts(), conf


@pytest.mark.parametrize("name, compressed", [
    pytest.param("cuau_se_atten_v2", True, marks=pytest.mark.slow),
    pytest.param("cuau_se_atten_v2_jax", True, marks=pytest.mark.slow), ("cuau_se_atten_v2_jax", False),
    ("cuau_se_e2_r", True), ("cuau_se_e2_r", False), ("cuau_se_e2_r_tos", True),
    ("cuau_hybrid", True), ("cuau_hybrid", False),
])
def test_other_compiled_descriptors_match_numpy_backend(compressed_model, name, compressed):
    """se_atten_v2 (type-pair term, its switch -- TensorFlow's for the .pb -- and the bond gradient
    through it; shared fitting net; type embedding columns), se_e2_r (both type_one_side) and the
    se_e2_a + se_e2_r hybrid (per-part pair lists and kernels, descriptors concatenated)."""
    path = compressed_model(name) if compressed else MODELS / f"{name}.dp"
    fast, ref_pot = _pot(path, "numba"), _pot(path, "numpy")
    assert fast.backend.handles(fast)
    ref = Reference(name)
    confs = ("p32_0", "cluster55", "stretched_1.08A", "overflow_0.30A") if compressed else ("p32_1",)
    _assert_matches_numpy(fast, ref_pot, ref, confs, min_beyond=1 if compressed else 0)


# the .dp se_atten_v2 takes min_nbor_dist from its training set when compressed (~1 min of CPU,
# once per session): the fast loop takes the mixed selection from the .pb one
@pytest.mark.parametrize("name", ["cuau_se_atten_v2", pytest.param("cuau_se_atten_v2_jax", marks=pytest.mark.slow),
                                  "cuau_hybrid"])
def test_ghost_atoms_like_lammps(compressed_model, name):
    """LAMMPS hands over local + ghost atoms: forces on ghosts folded onto their owners equal the
    periodic result (mixed selection of se_atten_v2, per-part lists of the hybrid)."""
    path = compressed_model(name)
    fast, ref_pot = _pot(path, "numba"), _pot(path, "numpy")
    coord, atype, box = Reference(name).structure("p32_2")
    cell = np.asarray(box, dtype=np.float64).reshape(3, 3)
    want = ref_pot.compute_atoms(coord, atype, cell, [True] * 3, atomic_virial=True)
    atype_all, centers, neighbors, vectors, owner = with_ghost_atoms(coord, atype, cell, fast.rcut)
    got = fast.compute_pairs(atype_all, len(coord), centers, neighbors, vectors, atomic_virial=True)
    nloc = len(coord)
    forces = got.forces[:nloc].copy()
    np.add.at(forces, owner, got.forces[nloc:])
    assert abs(got.energy - want.energy) <= REL * abs(want.energy)
    assert _rel(forces, want.forces) < REL and _rel(got.virial, want.virial) < REL


def test_se_e3_compressed_compiled_uncompressed_delegates(compressed_model):
    """Compressed se_e3 runs on its own kernels (tests/test_numba_se_e3.py); the uncompressed model and
    se_e3 as a hybrid part (not a compiled kind) go to the numpy reference."""
    comp = _pot(compressed_model("cuau_se_e3"), "numba")
    assert comp.backend.handles(comp)
    path = MODELS / "cuau_se_e3.dp"
    fast, ref_pot = _pot(path, "numba"), _pot(path, "numpy")
    assert not fast.backend.handles(fast) and "se_e3" not in numba_cpu.COMPILED_KERNELS
    ref = Reference("cuau_se_e3")
    a, b = evaluate(fast, ref, "p32_0"), evaluate(ref_pot, ref, "p32_0")
    assert abs(a.energy - b.energy) <= REL * abs(b.energy)
    assert _rel(a.forces, b.forces) < REL


@pytest.mark.slow
def test_float32_fitting_accuracy(cuau_compressed):
    ref = Reference("cuau_se_e2_a")
    pot64 = _pot(cuau_compressed, "numba")
    pot32 = _pot(cuau_compressed, "numba")
    pot32.backend = numba_cpu.Backend(precision="float32")
    worst = {"e_per_atom": 0.0, "force": 0.0}
    for conf in ref.confs("in_dist"):
        a, b = evaluate(pot32, ref, conf), evaluate(pot64, ref, conf)
        n = len(b.atom_energy)
        worst["e_per_atom"] = max(worst["e_per_atom"], abs(a.energy - b.energy) / n)
        worst["force"] = max(worst["force"], float(np.abs(a.forces - b.forces).max()))
    print("float32 vs float64:", worst)
    assert worst["e_per_atom"] < 1e-5 and worst["force"] < 1e-4
    with pytest.raises(BackendUnavailableError):
        numba_cpu.Backend(precision="float16")


def test_availability_and_threads(monkeypatch):
    assert numba_cpu.is_available() and numba_cpu.why_unavailable() == ""
    before = numba.get_num_threads()
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    numba_cpu.Backend()
    assert numba.get_num_threads() == 1
    numba.set_num_threads(before)
