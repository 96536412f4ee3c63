"""se_e2_a with a model-level type embedding (TensorFlow graphs), read folded into a plain se_e2_a.

Oracle: DeePMD-kit's DeepPot (2.2.11 and 3.2, TF) on the tiny models tests/data/make_tf_tebd_models.py
trains (refs/<name>.npz, variant ``pb``; periodic cells and a padded non-periodic cluster) and on
DeePMD-kit's own test graph deepmd_se_e2_a_tebd.pb. The fold itself (io/pb_tebd.py) is checked
against the unfolded nets evaluated from the graph's constants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import Reference, assert_within_table_error, central_difference_force, deviations, evaluate
from test_pb_graph_settings import _edit

from deepcomp_ase.cli import main
from deepcomp_ase.compress.api import compress_model
from deepcomp_ase.errors import ModelFormatError, UnsupportedModelError
from deepcomp_ase.io import protobuf_wire as pw
from deepcomp_ase.io.pb import read_pb
from deepcomp_ase.model.nets import Layer, Network
from deepcomp_ase.model.params import parse_model
from deepcomp_ase.potential import DeepPotential

DATA = Path(__file__).parent / "data"
MODELS = DATA / "models" / "tf_graphs"
NAMES = ("tf32_cuau_se_a_tebd", "tf32_cuau_se_a_tebd_tos", "tf32_cuau3_se_a_tebd", "tf22_cuau_se_a_tebd",
         "tf22_cuau_se_a_tebd_tos")
ONE_SIDE = {"tf32_cuau_se_a_tebd_tos", "tf22_cuau_se_a_tebd_tos"}


@pytest.fixture(scope="module")
def potential(tmp_path_factory):
    cache = {}
    tmp = tmp_path_factory.mktemp("tebd")

    def get(name, compressed=False, backend="numpy"):
        key = (name, compressed, backend)
        if key not in cache:
            src = MODELS / f"{name}.pb"
            if compressed:
                src = tmp / f"{name}.dcz"
                if not src.exists():
                    compress_model(MODELS / f"{name}.pb", src)
            cache[key] = DeepPotential.from_file(src, backend=backend, check_frequency=-1)
        return cache[key]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_uncompressed_matches_deepmd(potential, name):
    pot = potential(name)
    ref = Reference(name)
    for conf in ref.names:
        coord, atype, box = ref.structure(conf)
        res = evaluate(pot, ref, conf)
        want = ref.output(conf, "pb")
        dev = deviations(res, want, len(atype))
        assert dev["e_per_atom"] <= 1e-10, (conf, dev)
        assert dev["force"] <= 1e-9, (conf, dev)
        assert dev["virial_per_atom"] <= 1e-9, (conf, dev)
        assert dev["atom_energy"] <= 1e-9, (conf, dev)
        assert np.abs(res.atom_virial.reshape(-1, 9) - want["atom_virial"]).max() <= 1e-9, conf


def test_references_exercise_padding_and_every_type():
    """The cluster's neighbour lists are padded (fewer neighbours than sel); the 3-type model sees Ag."""
    ref = Reference("tf32_cuau_se_a_tebd")
    coord, atype, box = ref.structure("cluster55")
    assert box is None
    d = np.linalg.norm(coord[:, None] - coord[None], axis=-1)
    assert ((d < 4.5).sum(axis=1) - 1).max() < 40
    assert set(Reference("tf32_cuau3_se_a_tebd").structure("p32_0")[1]) == {0, 1, 2}


def test_deepmd_kit_test_graph():
    """DeePMD-kit's own se_e2_a + type embedding test graph (one side, a fitting net without hidden layers)."""
    z = np.load(DATA / "refs" / "deepmd_se_e2_a_tebd.npz")
    pot = DeepPotential.from_file(MODELS / "deepmd_se_e2_a_tebd.pb", backend="numpy")
    res = pot.compute_atoms(z["coord"], z["atype"], z["box"], [True] * 3, atomic_virial=True)
    n = len(z["atype"])
    assert abs(res.energy - float(z["energy"])) / n <= 1e-10
    assert np.abs(res.forces - z["force"].reshape(-1, 3)).max() <= 1e-9
    assert np.abs(res.virial - z["virial"].reshape(3, 3)).max() / n <= 1e-9
    assert np.abs(res.atom_virial.reshape(-1, 9) - z["atom_virial"].reshape(-1, 9)).max() <= 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_read_as_plain_se_e2_a(name):
    model = parse_model(read_pb(MODELS / f"{name}.pb"), name)
    d, fit = model.descriptor, model.fitting
    nt = model.ntypes
    assert d.kind == "se_e2_a" and d.type_one_side == (name in ONE_SIDE)
    assert set(d.embeddings) == ({(j,) for j in range(nt)} if d.type_one_side
                                 else {(i, j) for i in range(nt) for j in range(nt)})
    assert all(net.n_in == 1 for net in d.embeddings.values())
    assert fit.shared is None and len(fit.nets) == nt and all(n.n_in == d.dim_out for n in fit.nets)


def _graph_consts(path):
    nodes = {n.name: n for n in pw.parse_graph_def(path.read_bytes())}
    return lambda name: nodes[name].tensor().to_numpy() if name in nodes else None


def _tf_net(get, scope, n, act, resnet_dt=False):
    """An embedding net as TF builds it (shortcuts by width), from the graph's constants."""
    layers = []
    for l in range(1, n + 1):
        w, b = get(f"{scope}/matrix_{l}"), get(f"{scope}/bias_{l}")
        idt = get(f"{scope}/idt_{l}") if resnet_dt else None
        layers.append(Layer(w=w, b=np.zeros(w.shape[1]) if b is None else b,
                            idt=None if idt is None else idt.ravel(), activation=act, resnet=True))
    return Network(tuple(layers))


@pytest.mark.parametrize("name, tebd_layers, tebd_act, resnet_dt", [
    ("tf32_cuau_se_a_tebd", 2, "tanh", True), ("tf32_cuau_se_a_tebd_tos", 1, "tanh", False),
    ("tf32_cuau3_se_a_tebd", 2, "softplus", False)])
def test_folded_nets_equal_the_unfolded_net(name, tebd_layers, tebd_act, resnet_dt):
    """G_(ti,tj)(s) of the folded nets is TF's net on [s, T(tj)(, T(ti))], T from the one-hot types."""
    get = _graph_consts(MODELS / f"{name}.pb")
    model = parse_model(read_pb(MODELS / f"{name}.pb"), name)
    nt = model.ntypes
    tebd = _tf_net(get, "type_embed_net", tebd_layers, tebd_act, resnet_dt)(np.eye(nt))
    d = model.descriptor
    embed = _tf_net(get, "filter_type_all", len(d.neuron), d.activation)
    s = np.linspace(-1.0, 8.0, 37)[:, None]
    for ti in range(nt):
        for tj in range(nt):
            cols = [s, np.repeat(tebd[tj][None], len(s), 0)]
            if not d.type_one_side:
                cols.append(np.repeat(tebd[ti][None], len(s), 0))
            want = embed(np.concatenate(cols, axis=1))
            got = d.embeddings[d.net_key(ti, tj)](s)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


def test_finite_difference_forces(potential):
    pot = potential("tf32_cuau3_se_a_tebd")
    coord, atype, box = Reference("tf32_cuau3_se_a_tebd").structure("p32_1")
    res = pot.compute_atoms(coord, atype, box, [True] * 3)
    for atom, axis in ((0, 0), (7, 2)):
        fd = central_difference_force(pot, coord, atype, box, atom, axis)
        assert abs(fd - res.forces[atom, axis]) <= 1e-6


@pytest.mark.parametrize("name", ["tf32_cuau_se_a_tebd", "tf32_cuau_se_a_tebd_tos", "tf22_cuau_se_a_tebd"])
def test_compressed_within_table_error(potential, name):
    exact, tab = potential(name), potential(name, compressed=True)
    assert tab.plan.parts[0].compressed
    assert_within_table_error(exact, tab, Reference(name), ("p32_0", "p108_1", "cluster55", "stretched_1.08A"))


@pytest.mark.slow  # compiles the numba kernels where no cache exists
@pytest.mark.parametrize("name", ["tf32_cuau3_se_a_tebd", "tf32_cuau_se_a_tebd_tos"])
def test_numba_equals_numpy(potential, name):
    pytest.importorskip("numba")
    ref = Reference(name)
    for compressed in (False, True):
        a, b = potential(name, compressed), potential(name, compressed, backend="numba")
        assert b.backend.handles(b)  # the numba kernels, not a delegation to numpy
        for conf in ("p32_0", "cluster55", "overflow_0.30A"):
            x, y = evaluate(a, ref, conf), evaluate(b, ref, conf)
            assert abs(x.energy - y.energy) / len(x.atom_energy) <= 1e-12, conf
            assert np.abs(x.forces - y.forces).max() <= 1e-10, conf
            assert np.abs(x.virial - y.virial).max() <= 1e-10, conf


def test_cli_info_and_compress(tmp_path, capsys):
    src = MODELS / "tf32_cuau_se_a_tebd_tos.pb"
    assert main(["info", str(src)]) == 0
    out = capsys.readouterr().out
    assert "type embedding: [5] tanh, folded into 2 scalar-input embedding nets (per neighbour type)" in out
    assert "exclude_types [(0, 1)" in out
    dcz = tmp_path / "tos.dcz"
    assert main(["compress", "-i", str(src), "-o", str(dcz), "-v", "ERROR"]) == 0
    assert main(["info", str(dcz)]) == 0
    out = capsys.readouterr().out
    assert "deepcomp compressed model" in out and "folded into 2 scalar-input" in out


# --------------------------------------------------------------------------- refusals


def test_first_layer_shortcut_refused():
    """neuron[0] equal to the net's input width (1 + tebd): DeePMD-kit adds [s, tebd] to the output."""
    with pytest.raises(UnsupportedModelError, match=r"'model.descriptor.neuron' is \[4, 8, 16\].*shortcut"):
        read_pb(MODELS / "tf32_cuau_se_a_tebd_shortcut.pb")


def test_renamed_or_extra_weight_refused(tmp_path):
    src = MODELS / "tf32_cuau_se_a_tebd.pb"
    path = _edit(src, tmp_path / "renamed.pb", rename={"type_embed_net/idt_2": "type_embed_net/idt_two"})
    with pytest.raises(ModelFormatError, match="'type_embed_net/idt_2' is missing"):
        read_pb(path)
    path = _edit(src, tmp_path / "renamed.pb", rename={"type_embed_net/bias_2": "type_embed_net/bias_two"})
    with pytest.raises(ModelFormatError, match="'type_embed_net/bias_2' is missing"):
        read_pb(path)
    # a 2.2 script does not say whether the type embedding has a bias (the graph does): a renamed
    # bias would be dropped without a word, and is named instead
    path = _edit(MODELS / "tf22_cuau_se_a_tebd.pb", tmp_path / "renamed22.pb",
                 rename={"type_embed_net/bias_1": "type_embed_net/bias_one"})
    with pytest.raises(UnsupportedModelError, match="'type_embed_net/bias_one'"):
        read_pb(path)
    path = _edit(src, tmp_path / "extra.pb", add=[pw.encode_const_node("type_embed_net/matrix_9", np.ones((4, 4)))])
    with pytest.raises(UnsupportedModelError, match="'type_embed_net/matrix_9'"):
        read_pb(path)
    path = _edit(src, tmp_path / "deeper.pb", add=[pw.encode_const_node("type_embed_net/matrix_3", np.ones((4, 4)))])
    with pytest.raises(ModelFormatError, match="'type_embed_net/matrix_3' exists but 'model.type_embedding.neuron'"):
        read_pb(path)


def test_neighbour_types_checked(tmp_path):
    """The slots' neighbour types are the graph's own constant; another order is refused."""
    src = MODELS / "tf32_cuau_se_a_tebd.pb"
    mixed = np.tile([0, 1], 38).astype(np.int32)
    path = _edit(src, tmp_path / "mixed.pb", drop={"filter_type_all/Const"},
                 add=[pw.encode_const_node("filter_type_all/Const", mixed)])
    with pytest.raises(UnsupportedModelError, match="'filter_type_all/Const' gives the neighbour slots"):
        read_pb(path)


def test_script_without_type_embedding_refused(tmp_path):
    import json

    src = MODELS / "tf32_cuau_se_a_tebd.pb"
    script = json.loads(_script_text(src))
    del script["model"]["type_embedding"]
    path = _edit(src, tmp_path / "noscript.pb", drop={"train_attr/training_script"},
                 add=[pw.encode_const_node("train_attr/training_script", np.array(json.dumps(script), dtype=object))])
    with pytest.raises(ModelFormatError,
                       match="'model.type_embedding' is None and graph node 'type_embed_net/matrix_1' is present"):
        read_pb(path)


def _script_text(path):
    get = _graph_consts(path)
    return get("train_attr/training_script").item().decode()


@pytest.mark.parametrize("key, value, message", [
    ("type", "se_e2_r", "'model.descriptor.type' is 'se_e2_r'; of the descriptors with a model-level type_embedding"),
    ("tebd_input_mode", "strip", "'model.descriptor.tebd_input_mode' is 'strip'"),
    ("type_one_side", True, "'model.descriptor.type_one_side' is True but 'filter_type_all/matrix_1' reads 9"),
])
def test_script_settings_checked(tmp_path, key, value, message):
    import json

    src = MODELS / "tf32_cuau_se_a_tebd.pb"
    script = json.loads(_script_text(src))
    script["model"]["descriptor"][key] = value
    path = _edit(src, tmp_path / "edited.pb", drop={"train_attr/training_script"},
                 add=[pw.encode_const_node("train_attr/training_script", np.array(json.dumps(script), dtype=object))])
    with pytest.raises((UnsupportedModelError, ModelFormatError), match=message):
        read_pb(path)


def test_frame_and_atomic_parameters():
    """TF's fitting net reads [D, tebd(type), fparam, aparam]: the columns after the type embedding stay."""
    z = np.load(DATA / "refs" / "tf32_cuau_se_a_tebd_f2a1.npz")
    pot = DeepPotential.from_file(MODELS / "tf32_cuau_se_a_tebd_f2a1.pb", backend="numpy")
    assert (pot.dim_fparam, pot.dim_aparam) == (2, 1)
    for conf in z["names"]:
        atype = z[f"{conf}/atype"]
        n = len(atype)
        res = pot.compute_atoms(z[f"{conf}/coord"].reshape(-1, 3), atype, z[f"{conf}/box"].reshape(3, 3), (True,) * 3,
                                atomic_virial=True, fparam=z[f"{conf}/fparam"], aparam=z[f"{conf}/aparam"])
        assert abs(res.energy - float(z[f"{conf}/energy"])) / n <= 1e-10
        assert np.abs(res.atom_energy - z[f"{conf}/atom_energy"]).max() <= 1e-10
        assert np.abs(res.forces - z[f"{conf}/force"]).max() <= 1e-9
        assert np.abs(res.virial - z[f"{conf}/virial"].reshape(3, 3)).max() / n <= 1e-9
