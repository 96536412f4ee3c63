"""Settings come from what a frozen graph holds, and every weight it holds is used.

Graphs: tiny models frozen by DeePMD-kit 2.2.11 and 3.2.0 (tests/data/make_tf_models.py) and
DeePMD-kit's own test graphs (tests/data/make_deepmd_test_graphs.py), each with DeePMD-kit's
energies, forces and virials. Tolerances are DeePMD-kit's own for double precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepcomp_ase.errors import ModelFormatError, UnsupportedModelError
from deepcomp_ase.io import protobuf_wire as pw
from deepcomp_ase.io.pb import read_pb
from deepcomp_ase.io.pb_nodes import IRRELEVANT_NODES, is_model_state
from deepcomp_ase.potential import DeepPotential

DATA = Path(__file__).parent / "data"
MODELS = DATA / "models" / "tf_graphs"


def _assert_matches(path: Path, ref: dict, prefix: str) -> None:
    pot = DeepPotential.from_file(path, backend="numpy")
    coord, atype, box = ref[f"{prefix}coord"].reshape(-1, 3), ref[f"{prefix}atype"], ref[f"{prefix}box"].reshape(3, 3)
    res = pot.compute_atoms(coord, atype, box, [True] * 3, atomic_virial=True)
    n = len(atype)
    assert abs(res.energy - float(ref["energy"])) / n < 1e-10
    np.testing.assert_allclose(res.forces, ref["force"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.virial, ref["virial"], rtol=0, atol=1e-10 * n)
    np.testing.assert_allclose(res.atom_energy, ref["atom_energy"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.atom_virial, ref["atom_virial"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["tf22_cuau_se_e2_r_fitw", "tf32_cuau_se_e2_r_fitw", "tf22_cuau_se_atten_v2",
                                  "tf22_cuau_se_e2_a_excl", "tf32_cuau_se_e2_a_cut"])
def test_tiny_tf_graphs_match_deepmd(name):
    z = np.load(DATA / "refs" / f"{name}.npz")
    for conf in ("p32_0", "p108_1"):
        out = {k: z[f"{conf}/pb/{k}"] for k in ("energy", "force", "virial", "atom_energy", "atom_virial")}
        out.update({f"{conf}/{k}": z[f"{conf}/{k}"] for k in ("coord", "atype", "box")})
        _assert_matches(MODELS / f"{name}.pb", out, f"{conf}/")


@pytest.mark.parametrize("name", ["deeppot", "deeppot-r", "deeppot_sea"])
def test_deepmd_test_graphs_match_deepmd(name):
    z = np.load(DATA / "refs" / "deepmd_graphs.npz")
    ref = {k: z[f"{name}/{k}"] for k in ("energy", "force", "virial", "atom_energy", "atom_virial")}
    ref.update({k: z[k] for k in ("coord", "atype", "box")})
    _assert_matches(MODELS / f"deepmd_{name}.pb", ref, "")


@pytest.mark.parametrize("name, width", [("tf22_cuau_se_e2_r_fitw", 8), ("tf32_cuau_se_e2_r_fitw", 8),
                                         ("tf22_cuau_se_atten_v2", 24)])
def test_fitting_skip_follows_tf_rule(name, width):
    """Fitting [w, 2w, 2w] on a w-wide descriptor: TF adds a skip (and idt) only in the last hidden layer."""
    layers = read_pb(MODELS / f"{name}.pb")["model"]["fitting"]["nets"]["networks"][0]["layers"]
    shapes = [lay["@variables"]["w"].shape for lay in layers]
    assert shapes == [(width, width), (width, 2 * width), (2 * width, 2 * width), (2 * width, 1)]
    assert [lay["resnet"] for lay in layers[:3]] == [False, False, True]
    assert [lay["use_timestep"] for lay in layers[:3]] == [False, False, True]


def test_settings_from_graph_not_script_defaults():
    # 2.2 se_atten_v2: the script has no use_tebd_bias, the graph holds the bias
    tree = read_pb(MODELS / "tf22_cuau_se_atten_v2.pb")
    assert "use_tebd_bias" not in tree["model_def_script"]["descriptor"]
    # its script says type_one_side, but TF always builds the two-side strip net
    assert tree["model_def_script"]["descriptor"]["type_one_side"] is True
    assert tree["model"]["descriptor"]["type_one_side"] is False
    te = tree["model"]["descriptor"]["type_embedding"]
    assert te["use_tebd_bias"] is True and te["embedding"]["layers"][0]["@variables"]["b"].shape == (te["neuron"][0],)
    # a graph from `dp convert-backend deeppot_sea.yaml x.pb`: no type_one_side key, one-side nets
    tree = read_pb(MODELS / "deepmd_deeppot_sea.pb")
    assert "type_one_side" not in tree["model_def_script"]["descriptor"]
    assert tree["model"]["descriptor"]["type_one_side"] is True
    assert tree["model"]["descriptor"]["embeddings"]["ndim"] == 1


def test_settings_rebuilt_without_training_script():
    tree = read_pb(MODELS / "deepmd_deeppot.pb")
    d, f = tree["model_def_script"]["descriptor"], tree["model_def_script"]["fitting_net"]
    assert tree["model_def_script"]["type_map"] == ["O", "H"]
    assert (d["type"], d["sel"], d["rcut"], d["rcut_smth"]) == ("se_e2_a", [46, 92], 6.0, 0.5)
    assert (d["neuron"], d["axis_neuron"], d["type_one_side"]) == ([2, 4, 8], 4, False)
    assert d["activation_function"] == "tanh"
    assert (f["neuron"], f["resnet_dt"], f["numb_fparam"]) == ([6, 6, 6], True, 0)
    assert read_pb(MODELS / "deepmd_deeppot-r.pb")["model"]["descriptor"]["type"] == "se_r"


def _edit(src: Path, dst: Path, *, drop=(), rename=None, add=()) -> Path:
    """Copy a GraphDef, dropping, renaming or adding nodes at the wire level."""
    rename = rename or {}
    out = []
    for number, wire, value in pw.iter_fields(src.read_bytes()):
        if number == 1:
            name = pw.parse_node(value).name
            if name in drop:
                continue
            if name in rename:
                rest = b"".join(pw._enc_field(n, w, v) for n, w, v in pw.iter_fields(value) if n != 1)
                value = pw._enc_field(1, pw.WIRE_BYTES, rename[name].encode()) + rest
        out.append(pw._enc_field(number, wire, value))
    dst.write_bytes(b"".join(out) + b"".join(pw._enc_field(1, pw.WIRE_BYTES, n) for n in add))
    return dst


def test_sea_012_upgraded_by_convert_from(tmp_path):
    """`dp convert-from 0.12` output: no element names and a 0.12 layout (top-level t_avg): refused."""
    src = MODELS / "deepmd_sea_012-v2.pb"
    with pytest.raises(UnsupportedModelError, match="'model_attr/tmap' is empty"):
        read_pb(src)
    named = _edit(src, tmp_path / "named.pb", drop={"model_attr/tmap"},
                  add=[pw.encode_const_node("model_attr/tmap", np.array("O H", dtype=object))])
    with pytest.raises(UnsupportedModelError, match="cannot be rebuilt from the graph alone"):
        read_pb(named)


@pytest.mark.parametrize("src", ["tf32_cuau_se_e2_r_fitw.pb", "deepmd_deeppot.pb"])
def test_extra_weight_refused(tmp_path, src):
    extra = pw.encode_const_node("layer_1_type_0/matrix_extra", np.ones((6, 6)))
    path = _edit(MODELS / src, tmp_path / "extra.pb", add=[extra])
    with pytest.raises(UnsupportedModelError, match="'layer_1_type_0/matrix_extra'"):
        read_pb(path)
    path = _edit(MODELS / src, tmp_path / "attr.pb", add=[pw.encode_const_node("fitting_attr/t_new", np.ones(2))])
    with pytest.raises(UnsupportedModelError, match="'fitting_attr/t_new'"):
        read_pb(path)


def test_renamed_or_removed_weight_refused(tmp_path):
    # renamed: the reader would drop the type-embedding bias (the 2.2 silent error) -> named instead
    path = _edit(MODELS / "tf22_cuau_se_atten_v2.pb", tmp_path / "renamed.pb",
                 rename={"type_embed_net/bias_1": "type_embed_net/bias_one"})
    with pytest.raises(UnsupportedModelError, match="'type_embed_net/bias_one'"):
        read_pb(path)
    for src in ("tf22_cuau_se_e2_r_fitw.pb", "deepmd_deeppot.pb"):
        path = _edit(MODELS / src, tmp_path / "removed.pb", drop={"layer_2_type_0/idt"})
        with pytest.raises(ModelFormatError, match="'layer_2_type_0/idt' is missing"):
            read_pb(path)


def test_model_state_classification():
    """Which Const nodes count as model state (names from real 2.2/3.2 graphs)."""
    state = ["filter_type_0/matrix_1_1", "filter_type_all/bias_2_two_side_ebd", "layer_0_type_1/idt",
             "final_layer/bias", "type_embed_net/bias_1", "descrpt_attr_1/sel", "model_attr/model_attr/t_out_bias",
             "train_attr/min_nbor_dist", "fitting_attr/dfparam", "model_type", "share_fit_type_0/matrix"]
    internal = ["filter_type_0/Reshape_3/shape", "filter_type_all/concat_1/axis", "layer_0_type_0/Reshape/shape",
                "gradients/filter_type_0/Slice_1_grad/Rank", "strided_slice_4/stack_1", "mul_2/y", "Const_3",
                "filter_type_1/truediv/y", "type_embed_net/Reshape/shape"]
    assert all(is_model_state(n) for n in state)
    assert not any(is_model_state(n) for n in internal)
    # the documented exceptions are model state that is deliberately not read
    assert IRRELEVANT_NODES and all(is_model_state(n) for n in IRRELEVANT_NODES)


@pytest.mark.parametrize("name", ["cuau_se_e2_a", "cuau_se_e2_r_tos", "cuau_se_e3", "cuau_hybrid",
                                  "cu_se_e2_a_gelu", "cu_se_e2_a_relu", "cu_se_e2_a_softplus"])
def test_graph_alone_gives_the_scripted_model(tmp_path, name):
    """Drop the training script from a 3.2 graph: the settings rebuilt from the graph give the same model."""
    from test_pb_reader import assert_same_tree

    src = DATA / "models" / f"{name}.pb"
    bare = _edit(src, tmp_path / "bare.pb", drop={"train_attr/training_script"})
    assert_same_tree(read_pb(bare)["model"], read_pb(src)["model"])


def test_changed_sel_refused(tmp_path):
    """A model frozen with a sel other than its training sel: DeePMD-kit then divides by the original count."""
    src = DATA / "models" / "cuau_se_e2_a.pb"
    sel = read_pb(src)["model"]["descriptor"]["sel"]
    path = _edit(src, tmp_path / "sel.pb", drop={"descrpt_attr/original_sel"},
                 add=[pw.encode_const_node("descrpt_attr/original_sel", np.array(sel, np.int32) + 2)])
    with pytest.raises(UnsupportedModelError, match="original_sel"):
        read_pb(path)


@pytest.mark.parametrize("key, value, message", [
    ("activation_function", "relu", "activation 'relu'.*applies 'tanh'"),
    ("rcut_smth", 0.6, "rcut_smth' is 0.6 but op 'ProdEnvMatA'"),
    ("sel", [30, 30], "sel' is \\[30, 30\\] but op"),
])
def test_script_checked_against_graph(tmp_path, key, value, message):
    """A training script that disagrees with what the graph computes is refused, naming both."""
    import json

    src = DATA / "models" / "cuau_se_e2_a.pb"
    script = json.loads(_script_text(src))
    script["model"]["descriptor"][key] = value
    path = _edit(src, tmp_path / "edited.pb", drop={"train_attr/training_script"},
                 add=[pw.encode_const_node("train_attr/training_script", np.array(json.dumps(script), dtype=object))])
    with pytest.raises(ModelFormatError, match=message):
        read_pb(path)


def _script_text(path: Path) -> str:
    for number, _, value in pw.iter_fields(path.read_bytes()):
        if number == 1:
            node = pw.parse_node(value)
            if node.name == "train_attr/training_script":
                return node.tensor().to_numpy().item().decode()
    raise AssertionError("no training script")
