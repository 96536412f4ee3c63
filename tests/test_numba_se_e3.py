"""se_e3 on the compiled CPU backend (numba_kernels_se_e3) against the numpy reference backend."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import MODELS, Reference, evaluate, with_ghost_atoms

numba = pytest.importorskip("numba")

from deepcomp_ase.backends import numba_cpu  # noqa: E402
from deepcomp_ase.backends import numba_kernels_se_e3 as K3  # noqa: E402
from deepcomp_ase.compress.api import tabulate_model  # noqa: E402
from deepcomp_ase.model.nets import Layer, Network  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402

NAME = "cuau_se_e3"
REL = 1e-12
REL32 = 1e-5
FIELDS = ("atom_energy", "forces", "virial", "atom_virial")


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max()) / max(float(np.abs(b).max()), 1e-300) if b.size else 0.0


@pytest.fixture(scope="module")
def compressed(compressed_model):
    return compressed_model(NAME)


@pytest.fixture(scope="module")
def ref():
    return Reference(NAME)


def _pots(path, **kw):
    fast = DeepPotential.from_file(path, backend="numba", **kw)
    assert isinstance(fast.backend, numba_cpu.Backend) and fast.backend.handles(fast)
    return fast, DeepPotential.from_file(path, backend="numpy")


def _assert_tallies_equal(fast, slow, where):
    """Counts identical; the worst input the same pair and value (e_jk may differ in the last bit:
    numpy forms it by matmul)."""
    a, b = fast.tally.counts(), slow.tally.counts()
    worst_a, worst_b = a.pop("worst_input"), b.pop("worst_input")
    assert a == b, where
    assert (np.isnan(worst_a) and np.isnan(worst_b)) or abs(worst_a - worst_b) <= REL * abs(worst_b), where


def _compare(fast, slow, run, where, rel=REL):
    fast.tally.reset()
    slow.tally.reset()
    a, b = run(fast), run(slow)
    assert abs(a.energy - b.energy) <= rel * abs(b.energy), where
    for field in FIELDS:
        assert _rel(getattr(a, field), getattr(b, field)) < rel, (where, field)
    return a, b


def _refsuite(fast, slow, ref, confs):
    for conf in confs:
        _compare(fast, slow, lambda p: evaluate(p, ref, conf), conf)
        _assert_tallies_equal(fast, slow, conf)
        if conf.startswith("overflow"):  # e_jk past the table: exact net, counted
            assert fast.tally.n_beyond > 0 and fast.tally.n_coarse > 0, conf
        if conf.startswith("stretched"):
            assert fast.tally.n_beyond == 0 and fast.tally.n_coarse > 0, conf


# ------------------------------------------------------------------------------ exact nets
@pytest.mark.parametrize("act", ["tanh", "gelu", "relu", "relu6", "softplus", "sigmoid", "none"])
def test_net_kernel_matches_network(act):
    """The in-kernel net (every activation, timestep idt, both resnet shortcuts) = Network."""
    rng = np.random.default_rng(len(act))
    widths = [1, 4, 8, 8, 16]
    layers = []
    for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        idt = rng.normal(size=n_out) if k == 2 else None
        layers.append(Layer(w=rng.normal(size=(n_in, n_out)), b=rng.normal(size=n_out), idt=idt, activation=act,
                            resnet=k > 0))
    net = Network(tuple(layers))
    x = np.concatenate([rng.normal(size=50) * 4.0, [0.0, -7.5, 9.0]])
    g_ref, dg_ref = net.value_and_first_derivative(x)
    flat, rows, pos = [], [], 0
    for la in layers:
        row = [la.n_in, la.n_out, pos, pos + la.w.size, -1, K3.ACTIVATION_CODES[act], la.shortcut]
        flat += [la.w.reshape(-1), la.b]
        pos += la.w.size + la.n_out
        if la.idt is not None:
            row[4] = pos
            flat.append(la.idt)
            pos += la.n_out
        rows.append(row)
    rows, params = np.array(rows, dtype=np.int64), np.concatenate(flat)
    bufs = [np.empty(16) for _ in range(4)]
    for n, xv in enumerate(x):
        g, dg = K3.net_value_and_derivative(xv, rows, 0, len(rows), params, *bufs)
        assert _rel(g[:16], g_ref[n]) < REL and _rel(dg[:16], dg_ref[n]) < REL


# ------------------------------------------------------------------------------ table location
def test_locate_matches_table(compressed):
    """_locate_in/_piece = numba_kernels._locate = Table.locate/evaluate on every part of the se_e3 grid
    (low coarse, fine, high coarse, outside, nodes)."""
    from deepcomp_ase.backends import numba_kernels as K

    pot = DeepPotential.from_file(compressed, backend="numba")
    pot.compute_atoms(np.zeros((1, 3)), [0])  # packs the model
    pk = next(iter(pot.backend._packed.values()))
    assert isinstance(pk, numba_cpu._PackedSeE3)
    rng = np.random.default_rng(7)
    for n, table in enumerate(spec.table for spec in pot.plan.parts[0].tables):
        nodes = table.interval_starts()
        x = np.concatenate([rng.uniform(table.xmin * 1.1, table.xmax * 1.1, 400), nodes, [table.xmax, -np.inf]])
        grid = K3._grid(n, pk.tabf, pk.tabi, pk.sub_off)
        idx, t_ref, region_ref = table.locate(x)
        for k, xv in enumerate(x):
            row, t, region = K3._locate_in(xv, *grid[:10])
            assert (row, t, region) == K._locate(xv, pk.tabf, pk.tabi, n)
            assert region == region_ref[k]
            src, row2, t2, region2 = K3._piece(xv, True, grid, pk.split, pk.sub_start)
            if row >= 0:
                assert src == K3.SRC_TABLE and row2 - pk.tabi[n, 2] == idx[k] and t2 == t_ref[k]
            else:
                assert src == K3.SRC_NET


# ------------------------------------------------------------------------------ whole model
def test_refsuite_compressed_few(compressed, ref):
    """In distribution, stretched (coarse parts) and overflow (past the table: exact net)."""
    _refsuite(*_pots(compressed), ref, ("p32_0", "stretched_1.53A", "overflow_0.15A"))


@pytest.mark.slow
def test_refsuite_compressed_all(compressed, ref):
    _refsuite(*_pots(compressed), ref, ref.names)


def test_uncompressed_kernels(ref):
    """Every e_jk through the in-kernel net. The backend leaves uncompressed se_e3 to numpy (faster
    there), so the driver is called directly on the numba backend's pair list."""
    fast = DeepPotential.from_file(MODELS / f"{NAME}.dp", backend="numba")
    slow = DeepPotential.from_file(MODELS / f"{NAME}.dp", backend="numpy")
    assert not fast.backend.handles(fast)
    pk = numba_cpu._PackedSeE3(fast.plan, "float64")
    for conf in ("p32_1", "cluster55"):
        coord, atype, box = ref.structure(conf)
        pbc = [box is not None] * 3
        cell = np.zeros((3, 3)) if box is None else np.asarray(box, dtype=np.float64).reshape(3, 3)
        i, j, vec = fast.backend.pairs_from_atoms(coord, cell, np.array(pbc), fast.rcut)
        pairs = fast.backend.select(fast.plan.parts[0], i, j, vec, atype, len(coord))
        fast.tally.reset()
        a = numba_cpu.evaluate_se_e3(pk, pairs, np.asarray(atype, dtype=np.int64), fast.tally, True)
        b = evaluate(slow, ref, conf)
        assert abs(a.energy - b.energy) <= REL * abs(b.energy), conf
        for field in FIELDS:
            assert _rel(getattr(a, field), getattr(b, field)) < REL, (conf, field)
        assert fast.tally.n_inputs == slow.tally.n_inputs == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_random_clusters(compressed, seed):
    """Random open clusters with some atoms very close (inputs in every table part and beyond),
    any atom order and type mix, one centre with no neighbour."""
    fast, slow = _pots(compressed)
    rng = np.random.default_rng(seed)
    n = 60
    pos = rng.random((n, 3)) * 9.0
    pos[1::9] = pos[::9][: len(pos[1::9])] + rng.normal(scale=0.25, size=(len(pos[1::9]), 3))
    pos[-1] = [40.0, 40.0, 40.0]  # isolated
    atype = rng.integers(0, 2, n)
    run = lambda p: p.compute_atoms(pos, atype, None, [False] * 3, atomic_virial=True)  # noqa: E731
    _compare(fast, slow, run, seed)
    _assert_tallies_equal(fast, slow, seed)
    assert fast.tally.n_beyond > 0 and fast.tally.n_coarse > 0


def test_ghost_atoms_like_lammps(compressed, ref):
    """LAMMPS's local + ghost layout: per-atom results on the ghosts folded onto their owners
    equal the periodic evaluation."""
    fast, slow = _pots(compressed)
    coord, atype, box = ref.structure("p32_2")
    cell = np.asarray(box, dtype=np.float64).reshape(3, 3)
    want = slow.compute_atoms(coord, atype, cell, [True] * 3, atomic_virial=True)
    atype_all, centers, neighbors, vectors, owner = with_ghost_atoms(coord, atype, cell, fast.rcut)
    nloc = len(coord)
    for pot in (fast, slow):
        got = pot.compute_pairs(atype_all, nloc, centers, neighbors, vectors, atomic_virial=True)
        forces, avir = got.forces[:nloc].copy(), got.atom_virial[:nloc].copy()
        np.add.at(forces, owner, got.forces[nloc:])
        np.add.at(avir, owner, got.atom_virial[nloc:])
        assert abs(got.energy - want.energy) <= REL * abs(want.energy)
        assert _rel(got.atom_energy, want.atom_energy) < REL
        assert _rel(forces, want.forces) < REL and _rel(got.virial, want.virial) < REL
        assert _rel(avir, want.atom_virial) < REL


def test_float32(compressed, ref):
    fast = DeepPotential.from_file(compressed, backend="numba", precision="float32")
    slow = DeepPotential.from_file(compressed, backend="numpy")
    assert fast.backend.handles(fast)
    for conf in ("p32_0", "overflow_0.30A"):
        _compare(fast, slow, lambda p: evaluate(p, ref, conf), conf, rel=REL32)
        _assert_tallies_equal(fast, slow, conf)


def test_relu_split_intervals(ref):
    """A relu se_e3 model: tables with intervals split at the kinks take G from the sub-pieces."""
    base = DeepPotential.from_file(MODELS / f"{NAME}.dp", backend="numpy").params
    d = base.descriptor
    nets = {k: Network(tuple(dataclasses.replace(la, activation="relu") for la in net.layers))
            for k, net in d.embeddings.items()}
    params = dataclasses.replace(base, descriptor=dataclasses.replace(d, embeddings=nets, activation="relu"))
    tables = tabulate_model(params, 2.0, 0.01, 5)
    assert any(len(t.split_intervals) for t in tables.values())
    fast = DeepPotential(params, tables, backend="numba")
    slow = DeepPotential(params, tables, backend="numpy")
    for conf in ("p32_0", "overflow_0.30A"):
        _compare(fast, slow, lambda p: evaluate(p, ref, conf), conf)
        _assert_tallies_equal(fast, slow, conf)
