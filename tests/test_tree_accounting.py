"""Every field and weight of a model file is used, or the file is refused naming it.

For each format (.dp, .yaml, .pth, .pt) a committed model is edited in the way a newer or
hand-edited file would differ: one extra unknown weight, one used key removed or renamed. Both
must be refused with the path of the field. Settings that decide the arithmetic must agree with
the arrays the file holds; the backend-dependent type_one_side is read from the networks.
DeePMD-kit's own deeppot_sea.pth (no type_one_side key: PyTorch's default, true) is checked
against DeePMD-kit's expected values (tests/data/make_deepmd_kit_refs.py), as is its deeppot-r.yaml.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import Reference, deviations, evaluate

from deepcomp_ase.errors import DeepCompError, ModelFormatError, UnsupportedModelError
from deepcomp_ase.io import read_model_tree
from deepcomp_ase.model import tree_check
from deepcomp_ase.model.params import parse_model
from deepcomp_ase.potential import DeepPotential

DATA = Path(__file__).parent / "data"
MODELS = DATA / "models"


def load(path, **kw):
    return parse_model(read_model_tree(path, **kw), str(path))


def refused(path, *names, cls=DeepCompError, **kw):
    with pytest.raises(cls) as info:
        load(path, **kw)
    message = str(info.value)
    assert str(path) in message
    for name in names:
        assert name in message, message
    return message


@pytest.fixture(scope="module")
def tf_tree():
    return read_model_tree(MODELS / "cuau_se_e2_a.dp")


def parsed(tree, edit):
    t = copy.deepcopy(tree)
    edit(t)
    return parse_model(t, "edited.dp")


# --------------------------------------------------------------------------- .dp (HDF5)


def edit_dp(src: Path, dst: Path, edit, arrays: dict | None = None) -> Path:
    """Copy a .dp and edit its JSON tree; ``arrays`` adds datasets the tree may point to."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        tree = json.loads(f.attrs["json"])
        edit(tree)
        f.attrs["json"] = json.dumps(tree)
        for name, value in (arrays or {}).items():
            f.create_dataset(name, data=value)
    return dst


def test_dp_extra_weight_is_refused(tmp_path):
    def add(t):
        t["model"]["descriptor"]["embeddings"]["networks"][3]["layers"][1]["@variables"]["foo"] = "/variable_extra"

    path = edit_dp(MODELS / "cuau_se_e2_a.dp", tmp_path / "extra.dp", add, {"variable_extra": np.ones(50)})
    message = refused(path, "'model.descriptor.embeddings.networks[3].layers[1].@variables.foo'",
                      "shape (50,)", cls=UnsupportedModelError)
    assert "refused" in message


def test_dp_removed_key_is_refused(tmp_path):
    path = edit_dp(MODELS / "cuau_se_e2_a.dp", tmp_path / "removed.dp",
                   lambda t: t["model"]["fitting"]["@variables"].pop("bias_atom_e"))
    refused(path, "model.fitting.@variables.bias_atom_e", cls=ModelFormatError)


def test_dp_renamed_weight_is_refused(tmp_path):
    def rename(t):
        var = t["model"]["fitting"]["nets"]["networks"][1]["layers"][2]["@variables"]
        var["idt_renamed"] = var.pop("idt")

    path = edit_dp(MODELS / "cuau_se_e2_a.dp", tmp_path / "renamed.dp", rename)
    # the layer says use_timestep but holds no idt any more
    refused(path, "model.fitting.nets.networks[1].layers[2].use_timestep", "@variables.idt", cls=ModelFormatError)


# --------------------------------------------------------------------------- .yaml


def edit_yaml(dst: Path, old: str, new: str) -> Path:
    text = (MODELS / "deeppot_sea.yaml").read_text()
    assert old in text
    dst.write_text(text.replace(old, new, 1))  # the first occurrence: the model, not model_def_script
    return dst


def test_yaml_extra_weight_is_refused(tmp_path):
    extra = ('      fparam_inv_std: null\n      foo:\n        "@class": np.ndarray\n        dtype: float64\n'
             '        value: [1.0, 2.0]\n')
    path = edit_yaml(tmp_path / "extra.yaml", "      fparam_inv_std: null\n", extra)
    refused(path, "'model.fitting.@variables.foo'", "shape (2,)", cls=UnsupportedModelError)


def test_yaml_removed_key_is_refused(tmp_path):
    path = edit_yaml(tmp_path / "removed.yaml", "    axis_neuron: 2\n", "")
    refused(path, "model.descriptor.axis_neuron", cls=ModelFormatError)


def test_yaml_renamed_key_is_refused(tmp_path):
    path = edit_yaml(tmp_path / "renamed.yaml", "    type_one_side: true\n", "    type_one_sided: true\n")
    refused(path, "'model.descriptor.type_one_sided'", cls=UnsupportedModelError)


def test_yaml_without_type_one_side_reads_the_networks(tmp_path):
    path = edit_yaml(tmp_path / "no_tos.yaml", "    type_one_side: true\n", "")
    assert load(path).descriptor.type_one_side is True


# --------------------------------------------------------------------------- .pth (TorchScript)


def edit_pth(dst: Path, old: bytes, new: bytes, src: Path = MODELS / "deeppot_sea.pth") -> Path:
    """Rename a module attribute in data.pkl (same length: the pickle stays valid)."""
    assert len(old) == len(new)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("/data.pkl"):
                pickled = b"X" + len(old).to_bytes(4, "little") + old
                assert data.count(pickled) == 1
                data = data.replace(pickled, b"X" + len(new).to_bytes(4, "little") + new)
            zout.writestr(item, data)
    return dst


def test_pth_unknown_tensor_is_refused(tmp_path):
    # the fitting nets' idt arrays under a name no DeePMD-kit model has
    path = edit_pth(tmp_path / "extra.pth", b"idt", b"idx")
    refused(path, "'atomic_model.fitting_net.filter_layers.networks.0.layers.1.idx'", cls=UnsupportedModelError)


def test_pth_alias_tensors_are_checked(tmp_path):
    # TorchScript's second name of the networks (_networks) is accepted only as a copy of the first
    path = edit_pth(tmp_path / "alias.pth", b"_networks", b"_netwerks")
    refused(path, "atomic_model.descriptor.sea.filter_layers._netwerks.0.layers.0.bias", cls=UnsupportedModelError)


def test_pth_removed_tensor_is_refused(tmp_path):
    path = edit_pth(tmp_path / "removed.pth", b"mean", b"meen")
    refused(path, "'atomic_model.descriptor.sea.mean' is missing", cls=ModelFormatError)


def edit_pth_definition(dst: Path, edit, src: Path = MODELS / "deeppot_sea.pth") -> Path:
    """Edit the model definition (the JSON string ``model_def_script``) in data.pkl."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("/data.pkl"):
                start = data.index(b"model_def_script") + len(b"model_def_scriptq\x03")
                assert data[start:start + 1] == b"X"
                size = int.from_bytes(data[start + 1:start + 5], "little")
                model_def = json.loads(data[start + 5:start + 5 + size])
                edit(model_def)
                text = json.dumps(model_def).encode()
                data = data[:start + 1] + len(text).to_bytes(4, "little") + text + data[start + 5 + size:]
            zout.writestr(item, data)
    return dst


def test_pth_exclusion_mask_must_match_the_definition(tmp_path):
    # the definition excludes the O-H pair, but the saved pair mask (emask.type_mask) excludes nothing
    path = edit_pth_definition(tmp_path / "mask.pth", lambda m: m["descriptor"].update(exclude_types=[[0, 1]]))
    refused(path, "atomic_model.descriptor.sea.emask.type_mask", "model.descriptor.exclude_types",
            cls=ModelFormatError)


def test_pth_type_one_side_must_match_the_networks(tmp_path):
    path = edit_pth_definition(tmp_path / "tos.pth", lambda m: m["descriptor"].update(type_one_side=False))
    refused(path, "model.descriptor.type_one_side", "holds 2 networks", cls=ModelFormatError)


# --------------------------------------------------------------------------- .pt (checkpoint)


@pytest.fixture(scope="module")
def ckpt_state():
    from test_pth_reader import _checkpoint_state

    return _checkpoint_state()


def test_pt_extra_tensor_is_refused(tmp_path, ckpt_state):
    from test_pth_reader import write_checkpoint

    state = dict(ckpt_state)
    state["model.Default.atomic_model.fitting_net.filter_layers.networks.0.layers.0.gamma"] = np.ones(64)
    path = write_checkpoint(tmp_path / "extra.pt", state)
    refused(path, "'model.Default.atomic_model.fitting_net.filter_layers.networks.0.layers.0.gamma'",
            cls=UnsupportedModelError)


def test_pt_removed_tensor_is_refused(tmp_path, ckpt_state):
    from test_pth_reader import write_checkpoint

    state = dict(ckpt_state)
    del state["model.Default.atomic_model.fitting_net.bias_atom_e"]
    path = write_checkpoint(tmp_path / "removed.pt", state)
    refused(path, "'model.Default.atomic_model.fitting_net.bias_atom_e' is missing", cls=ModelFormatError)


def test_pt_renamed_tensor_is_refused(tmp_path, ckpt_state):
    from test_pth_reader import write_checkpoint

    state = dict(ckpt_state)
    old = "model.Default.atomic_model.descriptor.type_embedding.embedding.embedding_net.layers.0.matrix"
    state[old.replace("matrix", "weight")] = state.pop(old)
    path = write_checkpoint(tmp_path / "renamed.pt", state)
    refused(path, f"'{old}' is missing", cls=ModelFormatError)


# --------------------------------------------------------------------------- the tree-level rule


def test_every_committed_model_is_fully_accounted_for():
    for name in ("cuau_se_e2_a.dp", "cuau_se_e3.dp", "cuau_hybrid.dp", "cuau_se_atten_v2_jax.dp",
                 "pt_cuau_se_atten_v2.dp", "pt_cuau_se_e2_r.pth", "pt_cuau_se_e2_a_excl.pth", "deeppot_sea.yaml"):
        tree = tree_check.track(read_model_tree(MODELS / name))
        parse_model(tree, name)
        assert tree_check.unread(tree) == []


def test_only_listed_fields_can_be_ignored():
    with pytest.raises(KeyError, match="IRRELEVANT"):
        tree_check.ignore(tree_check.track({"idt": 1}), "idt")
    assert all(reason for reason in tree_check.IRRELEVANT.values())


def test_unknown_field_anywhere_is_named(tf_tree):
    cases = {
        "zbl_weight": lambda t: t.update(zbl_weight=1.0),
        "model.use_srtab": lambda t: t["model"].update(use_srtab="table.txt"),
        "model.descriptor.env_mat.use_smooth": lambda t: t["model"]["descriptor"]["env_mat"].update(use_smooth=1),
        "model.fitting.nets.networks[1].layer_norm": lambda t: t["model"]["fitting"]["nets"]["networks"][1].update(
            layer_norm=True),
        "model.@variables.out_scale": lambda t: t["model"]["@variables"].update(out_scale=np.ones((1, 2, 1))),
    }
    for path, edit in cases.items():
        with pytest.raises(UnsupportedModelError, match=re.escape(f"'{path}'")):
            parsed(tf_tree, edit)


def test_listed_fields_are_ignored(tf_tree):
    def edit(t):
        t["model"]["descriptor"]["trainable"] = False
        t["model"]["fitting"]["rcond"] = 1e-3
        t["model"]["@variables"]["out_std"] = np.full((1, 2, 1), 7.0)
        t["model_def_script"]["anything"] = {"goes": 1}

    base = parse_model(copy.deepcopy(tf_tree), "a.dp")
    other = parsed(tf_tree, edit)
    assert np.array_equal(base.out_bias, other.out_bias)


CONTRADICTIONS = {
    "bias flag": (lambda t: t["model"]["descriptor"]["embeddings"]["networks"][0]["layers"][0].update(bias=False),
                  "networks[0].layers[0].bias"),
    "bias array": (lambda t: t["model"]["descriptor"]["embeddings"]["networks"][0]["layers"][0]["@variables"].update(
        b=None), "networks[0].layers[0].bias"),
    "use_timestep": (lambda t: t["model"]["fitting"]["nets"]["networks"][0]["layers"][1].update(use_timestep=False),
                     "nets.networks[0].layers[1].use_timestep"),
    "fitting resnet_dt": (lambda t: t["model"]["fitting"]["nets"]["networks"][0].update(resnet_dt=False),
                          "nets.networks[0].resnet_dt"),
    "type_one_side": (lambda t: t["model"]["descriptor"].update(type_one_side=True), "model.descriptor.type_one_side"),
    "set_davg_zero": (lambda t: t["model"]["descriptor"].update(set_davg_zero=True), "set_davg_zero"),
    "neuron": (lambda t: t["model"]["descriptor"]["embeddings"]["networks"][2].update(neuron=[25, 50, 99]),
               "networks[2].neuron"),
    "in_dim": (lambda t: t["model"]["fitting"]["nets"]["networks"][1].update(in_dim=1599), "networks[1].in_dim"),
    "precision": (lambda t: t["model"]["fitting"]["nets"]["networks"][1]["layers"][0].update(precision="float32"),
                  "networks[1].layers[0].@variables.w"),
    "dim_descrpt": (lambda t: t["model"]["fitting"].update(dim_descrpt=800), "model.fitting.dim_descrpt"),
    "mixed_types": (lambda t: t["model"]["fitting"].update(mixed_types=True), "model.fitting.mixed_types"),
    "env_mat.rcut": (lambda t: t["model"]["descriptor"]["env_mat"].update(rcut=5.0), "env_mat.rcut"),
    "descriptor type_map": (lambda t: t["model"]["descriptor"].update(type_map=["Au", "Cu"]),
                            "model.descriptor.type_map"),
    "out_bias shape": (lambda t: t["model"]["@variables"].update(out_bias=np.zeros((2, 2, 1))),
                       "model.@variables.out_bias"),
    "fitting stats": (lambda t: t["model"]["fitting"]["@variables"].update(fparam_avg=np.zeros(1)),
                      "model.fitting.@variables.fparam_avg"),
    "atom_ener": (lambda t: t["model"]["fitting"].update(atom_ener=[None, -1.0]), "model.fitting.atom_ener"),
}


@pytest.mark.parametrize("case", list(CONTRADICTIONS))
def test_settings_must_agree_with_the_arrays(tf_tree, case):
    edit, field = CONTRADICTIONS[case]
    with pytest.raises(DeepCompError) as info:
        parsed(tf_tree, edit)
    assert field in str(info.value) and "edited.dp" in str(info.value)


def test_type_embedding_bias_must_match_use_tebd_bias():
    tree = read_model_tree(MODELS / "pt_cuau_se_atten_v2.dp")
    layer = tree["model"]["descriptor"]["type_embedding"]["embedding"]["layers"][0]
    layer["@variables"]["b"] = np.ones(8)
    with pytest.raises(ModelFormatError, match=r"type_embedding\.embedding\.layers\[0\]\.bias"):
        parse_model(copy.deepcopy(tree), "x.dp")
    # flags and array in agreement, but the descriptor's use_tebd_bias still says false
    layer["bias"] = True
    tree["model"]["descriptor"]["type_embedding"]["embedding"]["bias"] = True
    tree["model"]["descriptor"]["type_embedding"]["use_tebd_bias"] = True
    with pytest.raises(ModelFormatError, match=r"'model\.descriptor\.use_tebd_bias' is False"):
        parse_model(tree, "x.dp")


def test_se_e3_nets_never_evaluated_are_accepted_unread():
    # se_e3 stores ntypes**2 nets and evaluates those with t1 <= t2
    tree = read_model_tree(MODELS / "cuau_se_e3.dp")
    tree["model"]["descriptor"]["embeddings"]["networks"][1]["layers"][0]["@variables"]["w"] = np.full((1, 4), 9.0)
    assert set(parse_model(tree, "e3.dp").descriptor.embeddings) == {(0, 0), (0, 1), (1, 1)}


def test_excluded_pair_padding_follows_the_backend(tf_tree):
    # TensorFlow zeroes an excluded pair's whole block; PyTorch masks only its real neighbours, so its
    # padding slots still go through the pair's net (tests/test_pth_reader.py checks the numbers)
    tf = parsed(tf_tree, lambda t: t["model"]["descriptor"].update(exclude_types=[[0, 1]]))
    assert tf.descriptor.exclude_types == {(0, 1), (1, 0)} and not tf.descriptor.pad_excluded
    pt = load(MODELS / "pt_cuau_se_e2_a_excl.pth")
    assert pt.descriptor.pad_excluded and {(0, 1), (1, 0)} <= set(pt.descriptor.embeddings)


@pytest.mark.parametrize("ext", [".pb", ".dp"])
def test_tensorflow_excluded_pair_matches_deepmd_kit(ext):
    # softplus embedding nets: putting the excluded pair's padding slots through a (zero) net would
    # add softplus(0) terms that TensorFlow does not have (tests/data/make_tf_excl_model.py)
    name = "tf_cuau_se_e2_a_excl"
    pot = DeepPotential.from_file(MODELS / "tf_graphs" / f"{name}{ext}", backend="numpy")
    assert pot.params.descriptor.exclude_types and not pot.params.descriptor.pad_excluded
    ref = Reference(name)
    for conf in ref.confs("in_dist") + ref.confs("stretched"):
        res = evaluate(pot, ref, conf)
        dev = deviations(res, ref.output(conf, "pb"), len(res.atom_energy))
        assert dev["e_per_atom"] <= 1e-10 and dev["force"] <= 1e-9 and dev["virial_per_atom"] <= 1e-9, (conf, dev)


# --------------------------------------------------------------------------- type_one_side (item 3)


def test_deepmd_kit_deeppot_sea_pth_has_no_type_one_side_key():
    tree = read_model_tree(MODELS / "deeppot_sea.pth")
    assert "type_one_side" not in tree["model_def_script"]["descriptor"]
    assert tree["model"]["descriptor"]["type_one_side"] is True
    assert tree["model"]["descriptor"]["embeddings"]["ndim"] == 1


def _testcase(name):
    return json.loads((DATA / "refs" / name).read_text())


@pytest.mark.parametrize("name,testcase", [("deeppot_sea.pth", "deeppot-testcase.json"),
                                           ("deeppot_sea.yaml", "deeppot-testcase.json"),
                                           ("deeppot-r.yaml", "deeppot-r-testcase.json")])
def test_deepmd_kit_test_models_match_its_expected_values(name, testcase):
    case = _testcase(testcase)
    assert name in case["models"]
    pot = DeepPotential.from_file(MODELS / name, backend="numpy")
    assert pot.type_map == tuple(case["type_map"])
    for conf in case["results"]:
        coord = np.reshape(conf["coord"], (-1, 3))
        box = None if conf["box"] is None else np.reshape(conf["box"], (3, 3))
        res = pot.compute_atoms(coord, np.array(conf["atype"]), box, [box is not None] * 3, atomic_virial=True)
        want_e = np.array(conf["atomic_energy"])
        assert abs(res.energy - want_e.sum()) / len(coord) <= 1e-10
        assert np.abs(res.atom_energy - want_e).max() <= 1e-10
        assert np.abs(res.forces - np.reshape(conf["force"], (-1, 3))).max() <= 1e-9
        assert np.abs(res.atom_virial.reshape(-1, 9) - np.reshape(conf["atomic_virial"], (-1, 9))).max() <= 1e-9
