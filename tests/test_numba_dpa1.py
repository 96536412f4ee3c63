"""DPA-1 with attention layers on the numba backend (backends/numba_dpa1*.py) against the numpy reference.

Oracle: descriptors/dpa1.py (itself checked against DeePMD-kit in test_dpa1.py) on the same potential
file; every DPA-1 test model, exact and compressed, on the reference structures, on randomly displaced
ones, with LAMMPS-like ghost atoms, with descriptor exclusions and non-zero angular statistics, and in
chunks of a few atoms. The table tally must be the numpy reference's, count for count.
"""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import Reference, assert_ghost_atoms_agree
from test_dpa1 import _angular_davg, _edited, _smooth_concat

from deepcomp_ase.compress.api import compress_model
from deepcomp_ase.io.load import read_model_tree
from deepcomp_ase.io.tree import write_h5_tree
from deepcomp_ase.potential import DeepPotential

pytest.importorskip("numba")

MODELS = Path(__file__).parent / "data" / "models"
NAMES = ("pt_cuau_dpa1_concat", "pt_cuau_dpa1_strip", "pt_cuau_dpa1_strip_sharp", "pt_cuau_dpa1_concat_a0",
         "pt_cuau_se_atten_v2_a2", "pt_cuau3_dpa1_concat_smooth", "pt_cuau_dpa1_scaled")
CONFS = ("p32_0", "p108_1", "cluster55", "stretched_1.08A")
#: relative to the largest magnitude of each quantity
RTOL = 1e-10


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Model file per (name, compressed): compressed files made once per module."""
    tmp = tmp_path_factory.mktemp("numba_dpa1")
    cache = {}

    def get(src: Path, compressed: bool) -> Path:
        key = (str(src), compressed)
        if key not in cache:
            out = src
            if compressed:
                out = tmp / f"{src.stem}-{len(cache)}.dcz"
                compress_model(src, out)
            cache[key] = out
        return cache[key]

    return get


def _pair(path):
    return (DeepPotential.from_file(path, backend="numpy"), DeepPotential.from_file(path, backend="numba"))


def _assert_close(a, b, what="", rtol=RTOL):
    for name in ("energy", "forces", "virial", "atom_virial", "atom_energy"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        scale = max(float(np.abs(x).max()), 1e-300)
        assert float(np.abs(x - y).max()) <= rtol * scale, (what, name, float(np.abs(x - y).max()), scale)


def _compare(ref_pot, pot, structures, rtol=RTOL):
    for label, (coord, atype, box) in structures.items():
        pbc = [box is not None] * 3
        a = ref_pot.compute_atoms(coord, atype, box, pbc, atomic_virial=True)
        b = pot.compute_atoms(coord, atype, box, pbc, atomic_virial=True)
        _assert_close(a, b, label, rtol)
    want, got = ref_pot.tally.counts(), pot.tally.counts()
    assert np.array_equal(want.pop("worst_input"), got.pop("worst_input"), equal_nan=True)
    assert want == got


def _structures(name, confs=CONFS):
    ref = Reference(name)
    return {c: ref.structure(c) for c in confs if c in ref.names}


@pytest.mark.parametrize("compressed", [False, True], ids=["exact", "compressed"])
@pytest.mark.parametrize("name", NAMES)
def test_equals_numpy_on_reference_structures(files, name, compressed):
    ref_pot, pot = _pair(files(MODELS / f"{name}.pth", compressed))
    assert pot.backend.handles(pot)
    _compare(ref_pot, pot, _structures(name))
    if compressed:  # the reference structures reach beyond the tables: the exact side rows are used
        assert pot.tally.n_inputs > 0


@pytest.mark.parametrize("name", ["pt_cuau_dpa1_concat", "pt_cuau_dpa1_strip", "pt_cuau3_dpa1_concat_smooth"])
def test_equals_numpy_on_random_displacements(files, name):
    rng = np.random.default_rng(11)
    coord, atype, box = Reference(name).structure("p108_1")
    structures = {f"random{k}": (coord + rng.normal(scale=0.15, size=coord.shape), rng.permutation(atype), box)
                  for k in range(2)}
    for compressed in (False, True):
        _compare(*_pair(files(MODELS / f"{name}.pth", compressed)), structures)


def _exclude_and_davg(d):
    """Descriptor exclusions (the slot stays, the pair adds nothing) and non-zero angular statistics
    (padding rows and the r^.r^ gate move)."""
    d["exclude_types"] = [[0, 1]]
    _angular_davg(d)


@pytest.mark.parametrize("name,extra_edit", [("pt_cuau_dpa1_concat", _smooth_concat), ("pt_cuau_dpa1_strip", None),
                                             ("pt_cuau_dpa1_strip_sharp", None)])
def test_exclusions_and_angular_statistics(files, tmp_path, name, extra_edit):
    def edit(d):
        _exclude_and_davg(d)
        if extra_edit is not None:
            extra_edit(d)

    src = _edited(tmp_path, name, edit)
    for compressed in (False, True):
        ref_pot, pot = _pair(files(src, compressed))
        assert pot.plan.parts[0].slot_exclude
        _compare(ref_pot, pot, _structures(name, ("p32_0", "cluster55")))


@pytest.mark.parametrize("name", ["pt_cuau_dpa1_concat", "pt_cuau_dpa1_strip_sharp"])
def test_ghost_atoms_like_lammps(files, name):
    """Local + ghost atoms (LAMMPS) give the periodic result; padding takes local atom 0's type."""
    pot = DeepPotential.from_file(files(MODELS / f"{name}.pth", True), backend="numba")
    assert_ghost_atoms_agree(pot, *Reference(name).structure("p32_2"))


def test_chunks_of_a_few_atoms(files):
    """Chunk boundaries (consecutive centre atoms, their pairs as GEMM rows) do not change the result."""
    name = "pt_cuau3_dpa1_concat_smooth"
    path = files(MODELS / f"{name}.pth", True)
    whole = DeepPotential.from_file(path, backend="numba")
    small = DeepPotential.from_file(path, backend="numba")
    small.backend.chunk_atoms = 7
    coord, atype, box = Reference(name).structure("p108_1")
    _assert_close(whole.compute_atoms(coord, atype, box, [True] * 3, atomic_virial=True),
                  small.compute_atoms(coord, atype, box, [True] * 3, atomic_virial=True), "chunks")


def test_hybrid_stays_on_numpy(files):
    """A hybrid with a DPA-1 part is evaluated by the numpy reference (numba_cpu._dpa1_compiled)."""
    ref_pot, pot = _pair(MODELS / "pt_cuau_hybrid_dpa1.pth")
    assert not pot.backend.handles(pot)
    _compare(ref_pot, pot, _structures("pt_cuau_hybrid_dpa1", ("p32_0",)))


def test_float32_fitting(files):
    """precision='float32' (descriptor rows and fitting net in float32) stays within float32 rounding."""
    name = "pt_cuau_dpa1_concat"
    path = files(MODELS / f"{name}.pth", True)
    ref_pot = DeepPotential.from_file(path, backend="numpy")
    pot = DeepPotential.from_file(path, backend="numba", precision="float32")
    coord, atype, box = Reference(name).structure("p32_0")
    a = ref_pot.compute_atoms(coord, atype, box, [True] * 3)
    b = pot.compute_atoms(coord, atype, box, [True] * 3)
    assert abs(a.energy - b.energy) <= 1e-5 * abs(a.energy)
    assert np.abs(a.forces - b.forces).max() <= 1e-4 * np.abs(a.forces).max()


def test_exact_net_slope_is_the_reference_one():
    """The exact nets' value and slope (Network.value_and_first_derivative, tanh in place on the uncompressed
    path) equal those of the second-order evaluation bit for bit (shortcuts of both kinds, timestep, tanh and
    another activation)."""
    from deepcomp_ase.model.nets import Layer, Network

    rng = np.random.default_rng(5)

    def layer(n_in, n_out, activation="tanh", resnet=False, idt=False):
        return Layer(w=rng.normal(size=(n_in, n_out)), b=rng.normal(size=n_out),
                     idt=rng.normal(size=n_out) if idt else None, activation=activation, resnet=resnet)

    net = Network((layer(1, 4), layer(4, 8, resnet=True), layer(8, 8, resnet=True, idt=True),
                   layer(8, 8, activation="gelu")))
    assert [la.shortcut for la in net.layers] == [0, 2, 1, 0]
    x = rng.normal(size=50) * 3
    want, got = net.value_and_input_derivatives(x)[:2], net.value_and_first_derivative(x)
    assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])


TF_GRAPHS = ("tf32_cuau_se_atten", "tf32_cuau_se_atten_v2_a2", "tf32_cuau3_se_atten_smooth",
             "tf32_cuau_se_atten_a0_excl", "tf22_cuau_se_atten", "tf32_cuau_se_atten_strip_sharp",
             "tf32_cuau_se_atten_mask", "tf22_cuau_se_atten_mask")  # the last two: attn_mask


@pytest.mark.parametrize("name", TF_GRAPHS)
def test_equals_numpy_on_tensorflow_graphs(files, name):
    """Graphs read by io/pb_dpa1.py: TensorFlow's smooth weight, norm floor (1e-6) and padding rows.

    In cluster55 pairs at the cutoff have |R^[1:4]| ~ 3e-7..1e-4 (zero davg), at and near that floor, so
    r^ = R^[1:4] / max(|.|, 1e-6) amplifies rounding ~1e6-fold: the numpy reference itself moves by up to 7e-10
    (forces) and 2e-9 (atomic virial) when the cluster is translated by (0.123, 0.456, 0.789) A. The yardstick
    is that sensitivity (twice it), or 1e-10 relative where it is smaller."""
    src = MODELS / "tf_graphs" / f"{name}.pb"
    for compressed in (False, True):
        ref_pot, pot = _pair(files(src, compressed))
        assert pot.backend.handles(pot) and pot.plan.parts[0].descriptor.tf_switch
        for label, (coord, atype, box) in _structures(name, ("p32_0", "cluster55")).items():
            pbc = [box is not None] * 3
            a = ref_pot.compute_atoms(coord, atype, box, pbc, atomic_virial=True)
            moved = ref_pot.compute_atoms(coord + np.array([0.123, 0.456, 0.789]), atype, box, pbc,
                                          atomic_virial=True)
            b = pot.compute_atoms(coord, atype, box, pbc, atomic_virial=True)
            for q in ("energy", "forces", "virial", "atom_virial", "atom_energy"):
                x, y, z = (np.asarray(getattr(r, q)) for r in (a, b, moved))
                bound = max(RTOL * float(np.abs(x).max()), 2.0 * float(np.abs(x - z).max()))
                assert float(np.abs(x - y).max()) <= bound, (label, q, compressed)


def test_frame_and_atomic_parameters(tmp_path):
    """fparam / aparam columns of the fitting net (and dE/dfparam) through the DPA-1 driver: the fparam test
    model's se_atten_v2 descriptor read as DPA-1 (strip, smooth, no layers), which is the same model, against
    DeePMD-kit's values and the numpy reference."""
    from test_fparam import REFS, _assert_matches, _inputs, _structure

    tree = copy.deepcopy(read_model_tree(MODELS / "fp_pt_attn.dp"))
    d = tree["model"]["descriptor"]
    d["type"], d["tebd_input_mode"], d["smooth_type_embedding"] = "dpa1", "strip", True
    path = tmp_path / "fp_dpa1.dp"
    with h5py.File(path, "w") as f:
        write_h5_tree(f, tree)
    ref_pot, pot = _pair(path)
    assert pot.plan.parts[0].descriptor.kind == "dpa1" and pot.backend.handles(pot)
    ref = np.load(REFS / "fp_pt_attn.npz")
    for conf in ref["names"]:
        fp, ap = _inputs(ref, conf)
        pos, atype, box = _structure(ref, conf)
        b = pot.compute_atoms(pos, atype, box, (True,) * 3, atomic_virial=True, fparam=fp, aparam=ap)
        _assert_matches(b, ref, conf)
        a = ref_pot.compute_atoms(pos, atype, box, (True,) * 3, atomic_virial=True, fparam=fp, aparam=ap)
        _assert_close(a, b, conf)
        if a.dedfparam is not None:
            np.testing.assert_allclose(b.dedfparam, a.dedfparam, rtol=1e-12, atol=1e-12)
