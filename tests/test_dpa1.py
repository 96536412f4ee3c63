"""DPA-1 with attention layers (dpa1 / se_atten, se_atten_v2 with attn_layer > 0).

Oracle: DeePMD-kit 3.2's PyTorch backend on the tiny models tests/data/make_dpa1_models.py trains
(refs/<name>.npz, variant ``pth``) and the ``.dp`` trees ``dp convert-backend`` wrote from them.
Between them the models set every DPA-1 option to a non-default value (see that script), with
two and three types; what no trained model has (non-zero angular statistics) is checked by central
differences on edited trees.
"""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import (Reference, assert_ghost_atoms_agree, assert_within_table_error, central_difference_force,
                      central_difference_virial, deviations, evaluate)
from test_pth_reader import assert_bitwise_same

from deepcomp_ase.compress.api import compress_model
from deepcomp_ase.errors import ModelFormatError, UnsupportedModelError
from deepcomp_ase.io.load import read_dp, read_model_tree
from deepcomp_ase.io.tree import write_h5_tree
from deepcomp_ase.model.params import parse_model
from deepcomp_ase.potential import DeepPotential

MODELS = Path(__file__).parent / "data" / "models"
NAMES = ("pt_cuau_dpa1_concat", "pt_cuau_dpa1_strip", "pt_cuau_dpa1_strip_sharp", "pt_cuau_dpa1_concat_a0",
         "pt_cuau_se_atten_v2_a2", "pt_cuau_hybrid_dpa1", "pt_cuau3_dpa1_concat_smooth", "pt_cuau_dpa1_scaled")


@pytest.fixture(scope="module")
def potential(tmp_path_factory):
    cache = {}
    tmp = tmp_path_factory.mktemp("dpa1")

    def get(source, compressed=False):
        key = (str(source), compressed)
        if key not in cache:
            src = source
            if compressed:
                src = tmp / f"{Path(source).stem}-{len(cache)}.dcz"
                compress_model(source, src)
            cache[key] = DeepPotential.from_file(src, backend="numpy")
        return cache[key]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_pth_tree_equals_convert_backend_dp(name):
    got = read_model_tree(MODELS / f"{name}.pth")
    want = read_dp(MODELS / f"{name}.dp")
    assert_bitwise_same(got, want)


@pytest.mark.parametrize("name", NAMES)
def test_uncompressed_matches_deepmd(potential, name):
    pot = potential(MODELS / f"{name}.pth")
    assert pot.plan.parts[0].descriptor.kind == "dpa1"
    _check(pot, name)


def _check(pot, name):
    ref = Reference(name)
    for conf in ref.names:
        dev = deviations(evaluate(pot, ref, conf), ref.output(conf, "pth"), len(ref.structure(conf)[1]))
        assert dev["e_per_atom"] <= 1e-10, (conf, dev)
        assert dev["force"] <= 1e-9, (conf, dev)
        assert dev["virial_per_atom"] <= 1e-9, (conf, dev)
        assert dev["atom_energy"] <= 1e-9, (conf, dev)


@pytest.mark.parametrize("name", NAMES)
def test_compressed_within_table_error(potential, name):
    exact = potential(MODELS / f"{name}.pth")
    tab = potential(MODELS / f"{name}.pth", compressed=True)
    assert tab.plan.parts[0].compressed
    assert_within_table_error(exact, tab, Reference(name), ("p32_0", "p108_1", "cluster55", "stretched_1.08A"))


def test_yaml_model_matches_deepmd(potential):
    """The .yaml DeePMD-kit wrote (dp convert-backend) reads as the .pth does."""
    _check(potential(MODELS / "pt_cuau_dpa1_concat.yaml"), "pt_cuau_dpa1_concat")


@pytest.mark.parametrize("name", ["pt_cuau_dpa1_concat", "pt_cuau_dpa1_strip_sharp"])
def test_ghost_atoms_like_lammps(potential, name):
    """LAMMPS's local + ghost atoms give the periodic result: padding takes local atom 0's type."""
    pot = potential(MODELS / f"{name}.pth")
    assert_ghost_atoms_agree(pot, *Reference(name).structure("p32_2"))


def test_numba_backend_evaluates_dpa1(tmp_path):
    """The numba backend selects neighbours (excluded pairs keep their slot) and evaluates a DPA-1 model
    with its own kernels (backends/numba_dpa1.py; tests/test_numba_dpa1.py compares them with numpy)."""
    pytest.importorskip("numba")
    name = "pt_cuau_dpa1_strip_sharp"
    pot = DeepPotential.from_file(MODELS / f"{name}.pth", backend="numba")
    assert pot.backend.handles(pot)
    _check(pot, name)


def test_coarse_tables_are_really_used(potential, tmp_path):
    """A coarse step moves the forces measurably: the compressed path evaluates the tables."""
    src = MODELS / "pt_cuau_dpa1_concat.pth"
    compress_model(src, tmp_path / "coarse.dcz", step=0.2)
    coarse = DeepPotential.from_file(tmp_path / "coarse.dcz", backend="numpy")
    ref = Reference("pt_cuau_dpa1_concat")
    diff = np.abs(evaluate(coarse, ref, "p32_0").forces - evaluate(potential(src), ref, "p32_0").forces).max()
    assert 1e-12 < diff < 1e-6


# --------------------------------------------------------------------------- central differences


def _edited(tmp_path, name, edit):
    tree = copy.deepcopy(read_model_tree(MODELS / f"{name}.dp"))
    edit(tree["model"]["descriptor"])
    path = tmp_path / f"{name}-edited.dp"
    with h5py.File(path, "w") as f:
        write_h5_tree(f, tree)
    return path


def _smooth_concat(d):
    """The concat model with the smooth type embedding (switch-weighted attention)."""
    d["smooth_type_embedding"] = True
    for layer in d["attention_layers"]["attention_layers"]:
        layer["attention_layer"]["smooth"] = True


def _angular_davg(d):
    """Non-zero statistics in every column: padding rows (-davg/dstd) and the attn_dotr directions move."""
    d["set_davg_zero"] = False
    davg = d["@variables"]["davg"]
    davg[..., 1:] = np.array([0.03, -0.02, 0.05])
    d["@variables"]["dstd"][..., 1:] *= np.array([1.0, 1.3, 0.8])


def check_central_differences(pot, conf="p32_0", atoms=2):
    ref = Reference("pt_cuau_dpa1_concat")
    coord, atype, box = ref.structure(conf)
    res = pot.compute_atoms(coord, atype, box, [True] * 3)
    rng = np.random.default_rng(3)
    for a in rng.choice(len(coord), size=atoms, replace=False):
        for k in range(3):
            fd = central_difference_force(pot, coord, atype, box, a, k)
            assert res.forces[a, k] == pytest.approx(fd, abs=2e-6 * max(1.0, abs(fd))), (a, k)
    # the helper strains as coord @ (1 + eps), which gives W transposed; this matters here since
    # anisotropic statistics make the model (and its virial) not rotation-invariant
    fd_virial = central_difference_virial(pot, coord, atype, box).T
    np.testing.assert_allclose(res.virial, fd_virial, atol=5e-5 * max(1.0, np.abs(fd_virial).max()))


CASES = {
    "concat": ("pt_cuau_dpa1_concat", None),
    "concat_smooth_davg": ("pt_cuau_dpa1_concat", lambda d: (_smooth_concat(d), _angular_davg(d))),
    "strip_smooth": ("pt_cuau_dpa1_strip", _angular_davg),
    "strip_sharp": ("pt_cuau_dpa1_strip_sharp", _angular_davg),
}


FAST_FD = {("concat_smooth_davg", False), ("strip_smooth", False)}  # ~6 s each; the rest in the slow run


@pytest.mark.parametrize("case,compressed", [
    pytest.param(c, comp, id=f"{c}-{'compressed' if comp else 'exact'}",
                 marks=() if (c, comp) in FAST_FD else pytest.mark.slow)
    for c in CASES for comp in (False, True)])
def test_forces_and_virial_by_central_differences(potential, tmp_path, case, compressed):
    name, edit = CASES[case]
    src = MODELS / f"{name}.dp" if edit is None else _edited(tmp_path, name, edit)
    check_central_differences(potential(src, compressed))


# --------------------------------------------------------------------------- refusals


def _tree(name="pt_cuau_dpa1_concat"):
    return copy.deepcopy(read_model_tree(MODELS / f"{name}.dp"))


def test_refuses_higher_moment_bases():
    tree = _tree()
    tree["model"]["descriptor"]["lmax"] = 2
    with pytest.raises(UnsupportedModelError, match="lmax"):
        parse_model(tree, "m.dp")


def test_refuses_multi_head_attention():
    tree = _tree()
    tree["model"]["descriptor"]["attention_layers"]["attention_layers"][0]["attention_layer"]["num_heads"] = 2
    with pytest.raises(UnsupportedModelError, match="num_heads"):
        parse_model(tree, "m.dp")


def test_refuses_attn_mask():
    tree = _tree()
    tree["model"]["descriptor"]["attention_layers"]["attention_layers"][1]["attention_layer"]["do_mask"] = True
    with pytest.raises(UnsupportedModelError, match="attn_mask"):
        parse_model(tree, "m.dp")


def test_layer_count_must_match_attn_layer():
    tree = _tree()
    tree["model"]["descriptor"]["attention_layers"]["attention_layers"].pop()
    with pytest.raises(ModelFormatError, match="layer"):
        parse_model(tree, "m.dp")


def test_refuses_a_residual_first_layer_in_concat_mode():
    """A shortcut on the first layer would carry the type embedding past the net: not one-input."""
    tree = _tree()
    first = tree["model"]["descriptor"]["embeddings"]["networks"][0]["layers"][0]
    w = first["@variables"]["w"]
    first["@variables"]["w"] = np.concatenate([w, w[:, :1].repeat(w.shape[0] - w.shape[1], axis=1)], axis=1)
    first["@variables"]["b"] = np.zeros(w.shape[0])
    tree["model"]["descriptor"]["embeddings"]["networks"][0]["layers"][1]["@variables"]["w"] = np.zeros(
        (w.shape[0], 8))
    tree["model"]["descriptor"]["embeddings"]["networks"][0]["neuron"] = [w.shape[0], 8]
    tree["model"]["descriptor"]["neuron"] = [w.shape[0], 8]
    with pytest.raises(UnsupportedModelError, match="shortcut"):
        parse_model(tree, "m.dp")


def test_exclusion_semantics_of_se_atten_v2_without_attention(tmp_path):
    """se_atten_v2 with exclude_types and non-zero davg (DeePMD-kit 3.2): excluded pairs keep their slot
    and add nothing, padding adds -davg/dstd rows. Read as DPA-1 (strip, smooth, no layers), which
    implements exactly that."""
    name = "pt_cuau_se_atten_v2_excl"

    def as_dpa1(d):
        d["type"] = "dpa1"
        d["tebd_input_mode"] = "strip"
        d["smooth_type_embedding"] = True

    pot = DeepPotential.from_file(_edited(tmp_path, name, as_dpa1), backend="numpy")
    assert pot.plan.parts[0].descriptor.kind == "dpa1" and not pot.plan.parts[0].descriptor.layers
    _check(pot, name)


@pytest.mark.parametrize("ext", [".pth", ".dp"])
def test_se_atten_v2_with_excluded_pairs_is_read_as_deepmd_kit_evaluates_it(ext):
    """The unedited file: se_atten_v2 with exclude_types takes the DPA-1 path and equals DeePMD-kit
    (the se_atten_v2 path treated excluded pairs as padding: 0.19 eV/A off)."""
    name = "pt_cuau_se_atten_v2_excl"
    pot = DeepPotential.from_file(MODELS / f"{name}{ext}", backend="numpy")
    assert pot.plan.parts[0].descriptor.kind == "dpa1"
    _check(pot, name)
