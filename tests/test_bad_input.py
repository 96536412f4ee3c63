"""Every refused input gets an error that names the file, the field and what to do."""

import copy

import numpy as np
import pytest
from conftest import DATA, MODELS, edited, write_dp

from deepcomp_ase.compress.api import compress_model
from deepcomp_ase.errors import DeepCompError, ModelFormatError, TypeMapError, UnsupportedModelError
from deepcomp_ase.io import read_model_tree
from deepcomp_ase.model.params import parse_model
from deepcomp_ase.potential import DeepPotential


@pytest.fixture(scope="module")
def tree():
    return read_model_tree(MODELS / "cuau_se_e2_a.dp")


CASES = {
    "descriptor type": (lambda t: t["model"]["descriptor"].update(type="dpa2"), "model.descriptor.type", "dpa2"),
    "case embedding": (lambda t: t["model"]["fitting"].update(dim_case_embd=4), "dim_case_embd", "4"),
    "embedding resnet_dt": (lambda t: t["model"]["descriptor"].update(resnet_dt=True), "resnet_dt", "True"),
    "embedding idt": (
        lambda t: t["model"]["descriptor"]["embeddings"]["networks"][0]["layers"][1]["@variables"].update(
            idt=np.ones(50)), "idt", "resnet_dt"),
    "activation": (
        lambda t: t["model"]["descriptor"]["embeddings"]["networks"][0].update(activation_function="silu"),
        "activation_function", "silu"),
    "layer activation": (
        lambda t: t["model"]["descriptor"]["embeddings"]["networks"][0]["layers"][0].update(
            activation_function="swish"), "activation_function", "swish"),
    "model version": (lambda t: t["model"].update({"@version": 99}), "model.@version", "99"),
    "descriptor version": (lambda t: t["model"]["descriptor"].update({"@version": 9}), "descriptor.@version", "9"),
    "model type": (lambda t: t["model"].update(type="zbl"), "model.type", "zbl"),
    "fitting type": (lambda t: t["model"]["fitting"].update(type="dipole"), "model.fitting.type", "dipole"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unsupported_feature_is_refused(tree, tmp_path, case):
    edit, field, value = CASES[case]
    path = write_dp(edited(tree, edit), tmp_path / "bad.dp")
    with pytest.raises(UnsupportedModelError) as info:
        parse_model(read_model_tree(path), str(path))
    message = str(info.value)
    assert str(path) in message and field in message and value in message


def test_unsupported_lists_what_is_supported(tree, tmp_path):
    path = write_dp(edited(tree, CASES["descriptor type"][0]), tmp_path / "bad.dp")
    with pytest.raises(UnsupportedModelError, match="supported descriptors: .*se_e2_a"):
        DeepPotential.from_file(path)


def test_damaged_pytorch_archive_names_the_file(tmp_path):
    # .pth/.pt are read directly (tests/test_pth_reader.py); a broken zip is a clear format error
    path = tmp_path / "model.pth"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ModelFormatError, match=f"{path}: cannot be read as a PyTorch zip archive"):
        read_model_tree(path)


@pytest.mark.parametrize("content", [b"", b"hello world", b"\x89HDF\r\n\x1a\n garbage"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "model.dp"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=str(path)):
        read_model_tree(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="not found"):
        read_model_tree(tmp_path / "nothing.dp")


def test_truncated_tree(tree, tmp_path):
    t = edited(tree, lambda t: t["model"]["descriptor"].pop("sel"))
    path = write_dp(t, tmp_path / "bad.dp")
    with pytest.raises(ModelFormatError, match="model.descriptor.sel"):
        parse_model(read_model_tree(path), str(path))


def test_element_not_in_type_map():
    pot = DeepPotential.from_file(MODELS / "cuau_se_e2_a.dp")
    with pytest.raises(TypeMapError, match="'Ag' is not in the model's type_map \\['Cu', 'Au'\\]"):
        pot.types_of(["Cu", "Ag"])


def test_missing_min_nbor_dist_asks_for_training_script(tree, tmp_path):
    t = edited(tree, lambda t: t.pop("@variables"))
    path = write_dp(t, tmp_path / "nomnd.dp")
    out = tmp_path / "out.dcz"
    with pytest.raises(DeepCompError, match="-t input.json"):
        compress_model(path, out)
    assert not out.exists()


@pytest.mark.slow  # reads the whole training set
def test_training_script_gives_min_nbor_dist(tree, tmp_path):
    t = edited(tree, lambda t: t.pop("@variables"))
    path = write_dp(t, tmp_path / "nomnd.dp")
    content = compress_model(path, tmp_path / "out.dcz", training_script=DATA / "training" / "input.json")
    # DeePMD-kit's neighbour statistics of the same data gave the value stored in the model
    assert content.meta["options"]["min_nbor_dist"] == pytest.approx(1.7969306339965678, abs=1e-12)


def test_compressing_a_compressed_file_is_refused(compressed_model, tmp_path):
    with pytest.raises(DeepCompError, match="already a deepcomp compressed model"):
        compress_model(compressed_model("cu_se_e2_a_tanh"), tmp_path / "again.dcz")


def test_bad_step_is_refused(tmp_path):
    with pytest.raises(ValueError, match="step"):
        compress_model(MODELS / "cu_se_e2_a_tanh.dp", tmp_path / "x.dcz", step=-1)
    assert not (tmp_path / "x.dcz").exists()


MORE_CASES = {
    "DPA-1 moment bases": ("pt_cuau_dpa1_concat.dp", lambda t: t["model"]["descriptor"].update(lmax=2),
                           "lmax", "lmax 1"),
    "se_e3_tebd": ("cuau_se_e3.dp", lambda t: t["model"]["descriptor"].update(type="se_e3_tebd"),
                   "se_e3_tebd", "se_e2_a, se_e2_r, se_e3, se_atten_v2, dpa1"),
    "dpa3": ("cuau_se_e2_a.dp", lambda t: t["model"]["descriptor"].update(type="dpa3"), "dpa3", "se_atten_v2"),
    "silut": ("cuau_se_e2_r.dp",
              lambda t: t["model"]["descriptor"]["embeddings"]["networks"][0].update(activation_function="silut"),
              "silut", "tanh, gelu, relu, relu6, softplus, sigmoid"),
    "nested hybrid": ("cuau_hybrid.dp",
                      lambda t: t["model"]["descriptor"]["list"].append(copy.deepcopy(t["model"]["descriptor"])),
                      "list[2].type", "nested"),
}


@pytest.mark.parametrize("case", list(MORE_CASES))
def test_unsupported_descriptor_features(tmp_path, case):
    source, edit, field, hint = MORE_CASES[case]
    path = write_dp(edited(read_model_tree(MODELS / source), edit), tmp_path / "bad.dp")
    with pytest.raises(UnsupportedModelError) as info:
        DeepPotential.from_file(path)
    assert field in str(info.value) and hint in str(info.value)
