"""The TensorFlow-free ``.pb`` reader gives the tree ``dp convert-backend x.pb x.dp`` writes.

Every refsuite model that has both a ``.pb`` and a ``.dp`` (DeePMD-kit 3.2.0) is compared
key by key and array by array. Keys that legitimately differ:

* ``time``: when the tree was made;
* ``tf_version``: the TensorFlow version DeePMD-kit ran under while converting. A frozen graph
  does not record it, and no TensorFlow runs here, so the ``.pb`` reader leaves it out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepcomp_ase.errors import ModelFormatError, UnsupportedModelError
from deepcomp_ase.io import protobuf_wire as pw
from deepcomp_ase.io.load import read_dp, read_model_tree
from deepcomp_ase.io.pb import read_pb

MODELS = Path(__file__).parent / "data" / "models"
IGNORED_KEYS = {"time", "tf_version"}

PAIRS = sorted(
    p.stem for p in MODELS.glob("*.pb") if (MODELS / f"{p.stem}.dp").exists()
)


def assert_same_tree(got, want, where=""):
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {type(got).__name__} instead of dict"
        g_keys = set(got) - IGNORED_KEYS
        w_keys = set(want) - IGNORED_KEYS
        assert g_keys == w_keys, f"{where}: extra {sorted(g_keys - w_keys)}, missing {sorted(w_keys - g_keys)}"
        for k in w_keys:
            assert_same_tree(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list):
        assert isinstance(got, list), f"{where}: {type(got).__name__} instead of list"
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_tree(g, w, f"{where}[{i}]")
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), f"{where}: {type(got).__name__} instead of an array"
        assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-15, atol=0, err_msg=where)
        else:
            np.testing.assert_array_equal(got, want, err_msg=where)
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def test_pairs_present():
    assert {"cuau_se_e2_a", "cuau_se_e2_r", "cuau_se_e2_r_tos", "cuau_se_e3", "cuau_hybrid"} <= set(PAIRS)


@pytest.mark.parametrize("name", PAIRS)
def test_pb_tree_equals_dp_tree(name):
    got = read_pb(MODELS / f"{name}.pb")
    want = read_dp(MODELS / f"{name}.dp")
    assert_same_tree(got, want)
    # the same key order as DeePMD-kit, so that a re-written .dp matches too
    assert [k for k in got if k not in IGNORED_KEYS] == [k for k in want if k not in IGNORED_KEYS]
    assert list(got["model"]["descriptor"]) == list(want["model"]["descriptor"])
    assert got["backend"] == "TensorFlow"


def test_read_model_tree_dispatches_pb():
    tree = read_model_tree(MODELS / "cuau_se_e2_r_tos.pb")
    assert tree["model"]["descriptor"]["type"] == "se_r"
    assert tree["model"]["descriptor"]["embeddings"]["ndim"] == 1


# --------------------------------------------------------------------------- se_atten_v2


def _skeleton(tree):
    """Keys and nesting only (arrays reduced to their rank)."""
    if isinstance(tree, dict):
        return {k: _skeleton(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_skeleton(v) for v in tree]
    if isinstance(tree, np.ndarray):
        return ("array", tree.ndim)
    return type(tree).__name__


def test_se_atten_v2_structure():
    tree = read_pb(MODELS / "cuau_se_atten_v2.pb")
    d = tree["model"]["descriptor"]
    ntypes = len(tree["model"]["type_map"])
    # same layout as the tree the JAX backend writes for se_atten_v2 (refsuite2)
    jax = read_dp(MODELS / "cuau_se_atten_v2_jax.dp")
    assert _skeleton(d) == _skeleton(jax["model"]["descriptor"])
    assert set(tree["model"]["fitting"]) == set(jax["model"]["fitting"])
    assert list(d) == list(jax["model"]["descriptor"])

    assert d["type"] == "se_atten_v2" and d["attn_layer"] == 0
    assert d["attention_layers"]["layer_num"] == 0 and d["attention_layers"]["attention_layers"] == []
    nnei = sum(d["sel"])
    assert d["@variables"]["davg"].shape == (ntypes, nnei, 4)
    assert d["@variables"]["dstd"].shape == (ntypes, nnei, 4)
    assert np.all(d["@variables"]["dstd"] > 0)
    tebd = d["tebd_dim"]
    te = d["type_embedding"]["embedding"]
    assert te["layers"][0]["@variables"]["w"].shape == (ntypes, tebd)
    assert te["layers"][0]["@variables"]["b"] is None and te["bias"] is False

    for key, in_dim in (("embeddings", 1), ("embeddings_strip", 2 * tebd)):
        coll = d[key]
        assert coll["ndim"] == 0 and len(coll["networks"]) == 1
        net = coll["networks"][0]
        assert net["in_dim"] == in_dim
        n_in = in_dim
        for layer, n_out in zip(net["layers"], net["neuron"]):
            assert layer["@variables"]["w"].shape == (n_in, n_out)
            assert layer["@variables"]["b"].shape == (n_out,)
            n_in = n_out

    fit = tree["model"]["fitting"]
    assert fit["mixed_types"] is True and fit["nets"]["ndim"] == 0
    dim = d["neuron"][-1] * d["axis_neuron"] + tebd
    assert fit["dim_descrpt"] == dim
    assert fit["nets"]["networks"][0]["layers"][0]["@variables"]["w"].shape[0] == dim
    assert fit["@variables"]["bias_atom_e"].shape == (ntypes, 1)
    assert tree["@variables"]["min_nbor_dist"].shape == ()


# --------------------------------------------------------------------------- refusals


def _const(name, value):
    return pw.encode_const_node(name, np.array(value, dtype=object) if isinstance(value, (str, bytes)) else value)


def test_pre_v2_graph_refused(tmp_path):
    path = tmp_path / "old.pb"
    nodes = [
        _const("descrpt_attr/rcut", np.array(6.0)),
        pw.encode_node("DescrptSeA", "DescrptSeA", {"T": pw._enc_field(6, pw.WIRE_VARINT, pw.DT_DOUBLE)}),
    ]
    path.write_bytes(pw.encode_graph_def([*nodes, _const("model_attr/tmap", "O H")]))
    with pytest.raises(UnsupportedModelError) as err:
        read_pb(path)
    msg = str(err.value)
    assert "model_attr/model_version" in msg and "dp convert-from 1.3 -i old.pb -o old-v2.pb" in msg

    # without element names (0.12 graphs) `dp convert-from` would not help: no advice to run it
    for graph in (nodes, [pw.encode_node("DescrptNorot", "DescrptNorot"), _const("model_attr/tmap", "O H")]):
        path.write_bytes(pw.encode_graph_def(graph))
        with pytest.raises(UnsupportedModelError, match="names no element") as err:
            read_pb(path)
        assert "convert-from" not in str(err.value)

    path.write_bytes(pw.encode_graph_def([_const("model_attr/model_version", "0.1")]))
    with pytest.raises(UnsupportedModelError, match="'0.1'"):
        read_pb(path)


@pytest.mark.parametrize("content", [
    b"this is not a protobuf at all\n",
    b"\x89HDF\r\n\x1a\n" + bytes(64),
    b"",
    bytes(range(256)) * 4,
])
def test_garbage_refused(tmp_path, content):
    path = tmp_path / "garbage.pb"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError) as err:
        read_pb(path)
    assert str(path) in str(err.value) and "GraphDef" in str(err.value)
    with pytest.raises(ModelFormatError):
        read_model_tree(path)


def test_truncated_graph_refused(tmp_path):
    data = (MODELS / "cuau_se_e2_r_tos.pb").read_bytes()
    path = tmp_path / "cut.pb"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="cut.pb"):
        read_pb(path)


def test_missing_node_named(tmp_path):
    """A graph whose constants do not match its script names the missing node."""
    from deepcomp_ase.io.protobuf_wire import parse_graph_def

    data = (MODELS / "cuau_se_e2_r_tos.pb").read_bytes()
    kept = []
    for number, wire, value in pw.iter_fields(data):
        if number == 1 and pw.parse_node(value).name == "filter_type_all/matrix_2_1":
            continue
        kept.append(pw._enc_field(number, wire, value) if wire == pw.WIRE_BYTES else None)
    assert None not in kept
    path = tmp_path / "broken.pb"
    path.write_bytes(b"".join(kept))
    assert len(parse_graph_def(path.read_bytes())) > 10
    with pytest.raises(ModelFormatError, match="filter_type_all/matrix_2_1"):
        read_pb(path)


# --------------------------------------------------------------------------- wire format


def test_tensor_value_forms():
    # packed double_val holding a single value broadcasts over the shape
    t = pw.parse_tensor(pw.encode_tensor_raw(pw.DT_DOUBLE, (2, 3), [1.5], packed_values=True))
    np.testing.assert_array_equal(t.to_numpy(), np.full((2, 3), 1.5))
    # shorter list: the last value repeats
    t = pw.parse_tensor(pw.encode_tensor_raw(pw.DT_INT32, (4,), [7, -2], packed_values=True))
    a = t.to_numpy()
    assert a.dtype == np.int32 and a.tolist() == [7, -2, -2, -2]
    # no values at all: zeros
    t = pw.parse_tensor(pw.encode_tensor_raw(pw.DT_FLOAT, (3,), [], packed_values=True))
    assert t.to_numpy().tolist() == [0.0, 0.0, 0.0] and t.to_numpy().dtype == np.float32
    # int64, negative, full length
    t = pw.parse_tensor(pw.encode_tensor_raw(pw.DT_INT64, (3,), [-(2**40), 0, 5], packed_values=True))
    assert t.to_numpy().tolist() == [-(2**40), 0, 5] and t.to_numpy().dtype == np.int64
    # tensor_content
    x = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    t = pw.parse_tensor(pw.encode_tensor(x))
    np.testing.assert_array_equal(t.to_numpy(), x)
    # strings
    t = pw.parse_tensor(pw.encode_tensor(np.array([b"Cu Au"], dtype=object).reshape(())))
    assert t.to_numpy().item() == b"Cu Au"
    # too many values is an error
    with pytest.raises(pw.WireError):
        pw.parse_tensor(pw.encode_tensor_raw(pw.DT_DOUBLE, (1,), [1.0, 2.0], packed_values=True)).to_numpy()


def test_unpacked_repeated_values():
    """Repeated scalars written one record per value (non-packed) decode too."""
    msg = pw._enc_field(1, pw.WIRE_VARINT, pw.DT_FLOAT)
    msg += pw._enc_field(2, pw.WIRE_BYTES, b"".join(
        pw._enc_field(2, pw.WIRE_BYTES, pw._enc_field(1, pw.WIRE_VARINT, 2)) for _ in range(1)))
    msg += pw._enc_field(5, pw.WIRE_FIXED32, np.float32(0.25).tobytes())
    msg += pw._enc_field(5, pw.WIRE_FIXED32, np.float32(-3.0).tobytes())
    assert pw.parse_tensor(msg).to_numpy().tolist() == [0.25, -3.0]
    msg = pw._enc_field(1, pw.WIRE_VARINT, pw.DT_INT32) + pw._enc_field(7, pw.WIRE_VARINT, -1)
    assert pw.parse_tensor(msg).to_numpy().tolist() == -1


def test_node_attrs_roundtrip():
    node = pw.parse_node(pw.encode_const_node("a/b", np.array([1.0, 2.0], np.float32)))
    assert node.name == "a/b" and node.op == "Const"
    assert node.attr["dtype"].kind == "type" and node.attr["dtype"].value == pw.DT_FLOAT
    assert node.tensor().to_numpy().tolist() == [1.0, 2.0]
