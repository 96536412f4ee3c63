"""The DPA-1 CUDA kernels (kernels/dpa1.cu), compiled for the CPU (host_emulation.cuh), against the
numpy reference (descriptors/dpa1.py) on the tiny DPA-1 models of tests/data/models, compressed.

Structures are random: periodic cells with fewer neighbours than sel (padding slots), a dense one
with more (sel truncation, no dead slot), a cluster with an isolated atom (no neighbour at all),
a pair far inside the table's lower bound (the exact-net path and the overflow counters), and the
LAMMPS hand-off with ghost atoms. The kernels' own descriptor and per-pair gradient are checked
with a random dE/dD, the whole step (fitting included) on both device paths (device neighbour
list, and host pair lists).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import with_ghost_atoms  # noqa: E402
from kernel_cases import check_ghost_atoms, check_whole_model, needs_emulation, random_structure, rel_err  # noqa: E402
from kernel_cases import host_emulation  # noqa: E402,F401 - the fixture behind needs_emulation

from deepcomp_ase.backends import cuda_dpa1  # noqa: E402
from deepcomp_ase.backends.cupy_gpu import Backend  # noqa: E402
from deepcomp_ase.compress.api import compress_model  # noqa: E402
from deepcomp_ase.descriptors.block import BlockSlicer  # noqa: E402
from deepcomp_ase.evaluate import assemble  # noqa: E402
from deepcomp_ase.fileformat import load_compressed  # noqa: E402
from deepcomp_ase.model.params import parse_model  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402

MODELS = Path(__file__).parents[1] / "data" / "models"
#: concat (2 layers, dotr, normalize), strip (smooth, type_one_side, exclusions), concat smooth with
#: three types, se_atten_v2 with two layers (ng 16), se_atten_v2 without layers but with exclusions
DPA1_MODELS = ("pt_cuau_se_atten_v2_a2", "pt_cuau_dpa1_concat", "pt_cuau_dpa1_strip", "pt_cuau3_dpa1_concat_smooth",
               "pt_cuau_se_atten_v2_excl")


@pytest.fixture(scope="module")
def dpa1_model(tmp_path_factory):
    """dpa1_model(name) -> path of the compressed model (made once per module)."""
    tmp = tmp_path_factory.mktemp("dpa1_cuda")
    cache: dict = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = tmp / f"{name}.dcz"
            compress_model(MODELS / f"{name}.dp", cache[name])
        return cache[name]

    return get


def pot_of(path):
    return DeepPotential.from_file(path, backend="numpy", check_frequency=-1)


@pytest.fixture(scope="module")
def backend64(host_emulation):
    return Backend(precision="float64", emulate=True)


# ---------------------------------------------------------------------------- the kernels alone
def _device_step_parts(backend, pot, coord, atype, cell, pbc):
    st = backend._entry(pot)
    ws = backend._device_nlist(st, coord, atype, cell, pbc)
    assert ws is not None
    return st["model"].parts[0], ws.parts[0], ws


@pytest.mark.slow  # seconds of emulation: with the slow tests (fast loop under 4 min)
@needs_emulation
def test_blocks_loop_over_several_atoms(backend64, dpa1_model):
    """Fewer scratch rows than atoms: each block works through several atoms in turn (the grid is
    capped at DPA1_MAX_BLOCKS on a card), reusing its scratch row; same step as one block per atom."""
    path = dpa1_model("pt_cuau_se_atten_v2_a2")
    structure = random_structure("cluster", 2, seed=12)
    want = pot_of(path).compute_atoms(*structure, atomic_virial=True)
    pot = pot_of(path)
    part = backend64.device_model(pot).parts[0]
    part.dpa1.scratch = np.full((3, part.dpa1.stride), np.nan)  # values never written must never be read
    got = backend64.compute_atoms(pot, *structure, atomic_virial=True)
    assert abs(got.energy - want.energy) <= 1e-12 * abs(want.energy)
    for name in ("forces", "virial", "atom_energy", "atom_virial"):
        assert rel_err(getattr(got, name), getattr(want, name)) <= 1e-12, name


@needs_emulation
@pytest.mark.parametrize("name, kind", [
    ("pt_cuau_se_atten_v2_a2", "periodic"),
    pytest.param("pt_cuau_dpa1_concat", "dense", marks=pytest.mark.slow),
    pytest.param("pt_cuau3_dpa1_concat_smooth", "cluster", marks=pytest.mark.slow),
])
def test_kernels_match_the_reference_on_a_random_gradient(backend64, dpa1_model, name, kind):
    """dpa1_fwd's descriptor, and dpa1_bwd + prod_force_virial's forces and virial for a random
    dE/dD, against Dpa1.forward / Dpa1.backward of the numpy reference on the same pair list."""
    backend, pot = backend64, pot_of(dpa1_model(name))
    coord, atype, cell, pbc = random_structure(kind, pot.plan.ntypes, seed=3)
    part, pws, ws = _device_step_parts(backend, pot, coord, atype, cell, pbc)
    plan = pot.plan.parts[0]
    d, ev = plan.descriptor, plan.evaluator
    ref = backend.reference
    pairs = ref.select(plan, *ref.pairs_from_atoms(coord, cell, pbc, plan.select_rcut), atype, len(coord))
    nloc = len(coord)
    blk = BlockSlicer(pairs, atype, d.sel, d.rcut_smth, d.rcut, d.env_protection).block(0, nloc)
    desc_want, ctx = ev.forward(blk)
    cuda_dpa1.forward(backend.ctx, part, pws, ws)
    rows = backend.ctx.to_host(ws.row_of_atom)
    assert rel_err(np.asarray(pws.desc)[rows], desc_want) <= 1e-12
    g_desc = np.random.default_rng(5).normal(size=desc_want.shape)
    want_f, want_v, _ = assemble([pairs], [ev.backward(blk, ctx, g_desc)], nloc, False)
    pws.g_desc[rows] = g_desc
    ws.force.fill(0.0)
    backend._descriptor_backward(part, pws, ws, False)
    assert rel_err(ws.force, want_f) <= 1e-12
    assert rel_err(pws.virial_rows.sum(axis=0).reshape(3, 3), want_v) <= 1e-12


def test_scratch_stride_covers_the_layout():
    """The host's scratch size grows with every dimension of the kernel's layout (dpa1_layout)."""
    base = cuda_dpa1.scratch_stride(24, 8, 8, 2, 8)
    assert base == 11 * 24 + 2 * 24 * 8 + 2 * (2 * 24 * 8 + 3 * 24 * 8 + 3 * 24 + 2 * 24 * 24 + 24) + (
        3 * 24 * 8 + 24 * 8 + 3 * 24 * 24 + 3 * 24 * 8 + 8 * 24 + 4 * 8 + 4 * 8)
    for k in range(5):
        args = [24, 8, 8, 2, 8]
        args[k] += 1
        assert cuda_dpa1.scratch_stride(*args) > base


# ---------------------------------------------------------------------------- whole steps
@needs_emulation
@pytest.mark.parametrize("name, kind", [
    ("pt_cuau_dpa1_concat", "periodic"),  # the fast loop: one whole step; the rest with the slow tests
    *[pytest.param(n, k, marks=pytest.mark.slow) for n in DPA1_MODELS for k in ("periodic", "dense", "cluster")
      if (n, k) != ("pt_cuau_dpa1_concat", "periodic")],
])
def test_whole_step_matches_the_reference(backend64, dpa1_model, name, kind):
    path = dpa1_model(name)
    assert backend64.unsupported_reason(pot_of(path)) == ""
    structure = random_structure(kind, pot_of(path).plan.ntypes, seed={"periodic": 1, "dense": 2, "cluster": 3}[kind])
    errs = check_whole_model(backend64, pot_of(path), pot_of(path), *structure)
    print(name, kind, errs)


@needs_emulation
@pytest.mark.slow
@pytest.mark.parametrize("name", ["pt_cuau_se_atten_v2_a2", "pt_cuau_dpa1_concat", "pt_cuau3_dpa1_concat_smooth"])
def test_whole_step_float32(host_emulation, dpa1_model, name):
    """float32 within 1e-4. The 'close' structure of seed 1 also has a pair just inside rcut, where
    the switch polynomial cancels: evaluated in float, w came out negative there and turned the
    attn_dotr gate's direction around (forces off by 70 %); common.cuh evaluates it in double."""
    backend = Backend(precision="float32", emulate=True)
    path = dpa1_model(name)
    for kind in ("periodic", "close"):
        structure = random_structure(kind, pot_of(path).plan.ntypes, seed=1)
        print(name, kind, check_whole_model(backend, pot_of(path), pot_of(path), *structure))


@needs_emulation
def test_ghost_atoms(backend64, dpa1_model):
    """The LAMMPS hand-off (local + ghost atoms, host pair list, Backend.evaluate): ghost forces
    folded onto their owners equal the periodic reference."""
    path = dpa1_model("pt_cuau_se_atten_v2_a2")
    coord, atype, cell, _ = random_structure("periodic", 2, seed=8)
    check_ghost_atoms(backend64, pot_of(path), pot_of(path), coord, atype, cell)


@pytest.mark.slow  # seconds of emulation: with the slow tests (fast loop under 4 min)
@needs_emulation
def test_exact_net_path_and_counters(backend64, dpa1_model):
    """A pair 0.25 A apart puts its input beyond the table: the kernels evaluate the exact net, and
    the device counters (read at the check) equal the reference's tally."""
    path = dpa1_model("pt_cuau_dpa1_concat")
    coord, atype, cell, pbc = random_structure("close", 2, seed=2)
    ref_pot = pot_of(path)
    dev_pot = DeepPotential.from_file(path, backend="numpy", check_frequency=2)
    want = ref_pot.compute_atoms(coord, atype, cell, pbc, atomic_virial=True)
    assert ref_pot.tally.n_beyond >= 1
    got = backend64.compute_atoms(dev_pot, coord, atype, cell, pbc, atomic_virial=True)
    assert abs(got.energy - want.energy) <= 1e-10 * abs(want.energy)
    assert rel_err(got.forces, want.forces) <= 1e-10
    assert dev_pot.tally.n_inputs == 0 and backend64.read_counters(dev_pot)[0] > 0  # still on the device
    backend64.compute_atoms(dev_pot, coord, atype, cell, pbc)  # the 2nd call reads them
    a, b = dev_pot.tally, ref_pot.tally
    assert (a.n_inputs, a.n_coarse, a.n_beyond) == (2 * b.n_inputs, 2 * b.n_coarse, 2 * b.n_beyond)
    assert a.worst_key == b.worst_key and abs(a.worst_x - b.worst_x) <= 1e-5 * max(1.0, abs(b.worst_x))


#: DPA-1 graphs from TensorFlow (tests/test_pb_dpa1.py): TF's smooth weight 1 - (1 - rcut_smth s)^3, norms
#: floored at 1e-6 (with its own backward branch) and padding rows of the padding type
TF_GRAPHS = ("tf32_cuau_se_atten_v2_a2", "tf32_cuau_se_atten", "tf32_cuau3_se_atten_smooth", "tf32_cuau_se_atten_a0_excl",
             "tf22_cuau_se_atten", "tf22_cuau_se_atten_v2_a2", "tf32_cuau_se_atten_strip_sharp",
             "tf32_cuau_se_atten_mask", "tf22_cuau_se_atten_mask")
#: in the fast run: the default graph and attn_mask (the zeroed diagonal, smooth attention)
FAST_TF = ("tf32_cuau_se_atten_mask",)  # the fast loop: one TF graph (TF semantics and the mask); all with slow


@needs_emulation
@pytest.mark.parametrize("name", [n if n in FAST_TF else pytest.param(n, marks=pytest.mark.slow) for n in TF_GRAPHS])
def test_tensorflow_graphs(backend64, tmp_path, name):
    """DPA-1 read from .pb graphs, evaluated as TensorFlow does, on the device. The close pair (0.25 A,
    far beyond the table) costs digits: 1e-9 there (measured <= 1.2e-10, atom virials of one graph)."""
    path = tmp_path / f"{name}.dcz"
    compress_model(MODELS / "tf_graphs" / f"{name}.pb", path)
    d = pot_of(path).plan.parts[0].descriptor
    assert d.tf_switch and d.unit_floor > 1e-12 and d.attn_mask == name.endswith("_mask")
    kinds = ("periodic",) if name in FAST_TF else ("periodic", "cluster", "close")
    for kind in kinds:
        structure = random_structure(kind, pot_of(path).plan.ntypes, seed=1)
        errs = check_whole_model(backend64, pot_of(path), pot_of(path), *structure,
                                 tol=1e-9 if kind == "close" else None)
        print(name, kind, errs)


def _with_model_exclusion(path, pairs):
    content = load_compressed(path)
    params = parse_model(content.tree, str(path))
    params = dataclasses.replace(params, pair_exclude_types=frozenset(pairs))
    return [DeepPotential(params, content.tables, backend="numpy") for _ in range(2)]


@needs_emulation
@pytest.mark.slow
@pytest.mark.parametrize("name", ["pt_cuau_se_atten_v2_excl", "pt_cuau_dpa1_strip"])
def test_descriptor_exclusions_keep_their_slot(backend64, dpa1_model, name):
    """exclude_types of a DPA-1 descriptor: the pair keeps its slot (no padding row) and adds
    nothing, also through the host pair-list path where its slot holds no neighbour."""
    path = dpa1_model(name)
    assert pot_of(path).plan.parts[0].slot_exclude
    print(check_whole_model(backend64, pot_of(path), pot_of(path), *random_structure("dense", 2, seed=4)))


@needs_emulation
@pytest.mark.slow
def test_model_exclusions_leave_the_selection(backend64, dpa1_model):
    dev_pot, ref_pot = _with_model_exclusion(dpa1_model("pt_cuau_dpa1_concat"), [(0, 1), (1, 0)])
    print(check_whole_model(backend64, dev_pot, ref_pot, *random_structure("dense", 2, seed=6)))


@needs_emulation
@pytest.mark.slow
def test_hybrid_with_dpa1(backend64, tmp_path):
    """A DPA-1 part inside a hybrid selects within the hybrid's cutoff (its select_rcut): pairs
    between its rcut and that cutoff keep a slot with zero environment rows."""
    out = tmp_path / "hybrid.dcz"
    compress_model(MODELS / "pt_cuau_hybrid_dpa1.dp", out)
    plan = pot_of(out).plan
    assert plan.parts[0].select_rcut > plan.parts[0].rcut
    print(check_whole_model(backend64, pot_of(out), pot_of(out), *random_structure("dense", 2, seed=9)))


def test_uncompressed_dpa1_stays_on_the_reference(host_emulation):
    backend = Backend(precision="float64", emulate=True)
    pot = DeepPotential.from_file(MODELS / "pt_cuau_dpa1_concat.dp", backend="numpy")
    assert "uncompressed" in backend.unsupported_reason(pot)


@pytest.mark.slow  # seconds of emulation: with the slow tests (fast loop under 4 min)
@needs_emulation
def test_lammps_device_path(dpa1_model):
    """The LAMMPS device path (positions of local + ghost atoms, the list built on the device over
    all of them) equals the reference on the pair list over local + ghost atoms; the same path
    again after the ghost count changed (new workspace views, the scratch kept)."""
    from deepcomp_ase.backends.cuda_lammps import LammpsDevicePath

    path = dpa1_model("pt_cuau3_dpa1_concat_smooth")
    ref_pot, dev_pot = pot_of(path), pot_of(path)
    device = LammpsDevicePath(Backend(precision="float64", emulate=True), dev_pot)
    for seed in (13, 14):
        coord, atype, cell, _ = random_structure("periodic", 3, seed=seed)
        atype_all, centers, neighbors, vectors, owner = with_ghost_atoms(coord, atype, cell, dev_pot.rcut)
        nloc = len(coord)
        x = np.zeros((len(atype_all), 3))
        x[:nloc] = coord
        x[neighbors] = coord[centers] + vectors  # each ghost where a local atom sees it
        want = ref_pot.compute_pairs(atype_all, nloc, centers, neighbors, vectors, atomic_virial=True)
        got = device.compute(x, atype_all, nloc, atom_energy=True, atomic_virial=True)
        assert abs(got.energy - want.energy) <= 1e-12 * abs(want.energy)
        for name in ("forces", "virial", "atom_energy", "atom_virial"):
            assert rel_err(getattr(got, name), getattr(want, name)) <= 1e-12, name
