"""DPA-1 from frozen TensorFlow graphs (se_atten / se_atten_v2 with attention layers, concat and strip).

Oracle: DeePMD-kit 2.2.11 and 3.2's TensorFlow backends on the tiny graphs
tests/data/make_tf_dpa1_models.py trains (refs/<name>.npz, variant ``pb``): periodic cells, a
cluster, every atom with fewer neighbours than sel (padded slots), and ``near_cut``, a neighbour so
close to rcut that TensorFlow's l2_normalize floor decides its angular gate.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import (Reference, assert_within_table_error, central_difference_force, deviations, evaluate,
                      with_ghost_atoms)
from test_dpa1 import check_central_differences
from test_pb_graph_settings import _assert_matches, _edit

from deepcomp_ase.compress.api import compress_model
from deepcomp_ase.errors import ModelFormatError, UnsupportedModelError
from deepcomp_ase.io import protobuf_wire as pw
from deepcomp_ase.io.load import read_dp
from deepcomp_ase.io.pb import read_pb
from deepcomp_ase.model.params import parse_model
from deepcomp_ase.potential import DeepPotential

GRAPHS = Path(__file__).parent / "data" / "models" / "tf_graphs"
MODELS = Path(__file__).parent / "data" / "models"
NAMES = ("tf32_cuau_se_atten", "tf32_cuau_se_atten_v2_a2", "tf32_cuau3_se_atten_smooth", "tf32_cuau_se_atten_a0_excl",
         "tf22_cuau_se_atten", "tf22_cuau_se_atten_v2_a2", "tf32_cuau_se_atten_strip_sharp")
#: attn_mask true (each slot's weight on itself zeroed), two layers: 3.2 smooth concat, 2.2 sharp concat
MASKED = ("tf32_cuau_se_atten_mask", "tf22_cuau_se_atten_mask")


@pytest.fixture(scope="module")
def potential(tmp_path_factory):
    cache = {}
    tmp = tmp_path_factory.mktemp("pb_dpa1")

    def get(name, compressed=False):
        key = (name, compressed)
        if key not in cache:
            src = GRAPHS / f"{name}.pb"
            if compressed:
                src = tmp / f"{name}.dcz"
                compress_model(GRAPHS / f"{name}.pb", src)
            cache[key] = DeepPotential.from_file(src, backend="numpy")
        return cache[key]

    return get


@pytest.mark.parametrize("name", NAMES + MASKED)
def test_uncompressed_matches_deepmd(potential, name):
    pot = potential(name)
    d = pot.plan.parts[0].descriptor
    assert d.kind == "dpa1" and d.tf_switch and d.unit_floor == 1e-6 and d.pad_input.shape == (d.ntypes, d.ng)
    ref = Reference(name)
    assert "near_cut" in ref.names and "cluster55" in ref.names
    for conf in ref.names:
        n = len(ref.structure(conf)[1])
        res = evaluate(pot, ref, conf)
        out = ref.output(conf, "pb")
        dev = deviations(res, out, n)
        assert dev["e_per_atom"] <= 1e-10, (conf, dev)
        assert dev["force"] <= 1e-9, (conf, dev)
        assert dev["virial_per_atom"] <= 1e-9, (conf, dev)
        assert dev["atom_energy"] <= 1e-9, (conf, dev)
        # an atom's virial sums r (x) f over its pairs: near_cut's gate (w ~ 1e-8, where the switch polynomial
        # cancels to ~1e-8 relative) moves it by ~1e-9
        assert np.abs(res.atom_virial.reshape(-1, 9) - out["atom_virial"]).max() <= 3e-9, conf


@pytest.mark.parametrize("name", ["se_atten_no_atten_1", "se_atten_no_atten_2"])
def test_deepmd_test_graphs_match_deepmd(name):
    """DeePMD-kit's own se_atten test graphs (model version 1.1): no type_embedding section (its one linear
    layer read from the graph), sel 10 with padding, and an embedding net [2, 4, 8] whose first width 2 must
    not gain a shortcut when the type columns are folded into the bias."""
    z = np.load(Path(__file__).parent / "data" / "refs" / "deepmd_graphs.npz")
    ref = {k: z[f"{name}/{k}"] for k in ("energy", "force", "virial", "atom_energy", "atom_virial")}
    ref.update({k: z[k] for k in ("coord", "atype", "box")})
    path = GRAPHS / f"deepmd_{name}.pb"
    assert "type_embedding" not in read_pb(path)["model_def_script"]
    _assert_matches(path, ref, "")


def test_references_have_padded_slots():
    """Every configuration leaves slots of the neighbour list empty (fewer neighbours than sel 40)."""
    from ase.neighborlist import primitive_neighbor_list

    ref = Reference("tf32_cuau_se_atten")
    for conf in ref.names:
        coord, _, box = ref.structure(conf)
        cell = np.asarray(box).reshape(3, 3) if box is not None else np.eye(3) * 100.0
        i = primitive_neighbor_list("i", [box is not None] * 3, cell, coord, 4.0)
        assert np.bincount(i).max() < 40, conf


def test_settings_from_the_graph(potential):
    """What each graph holds: attention layers, mode, one-side input, smooth, exclusions, layer-norm eps."""
    got = {n: potential(n).plan.parts[0].descriptor for n in NAMES}
    assert [len(got[n].layers) for n in NAMES] == [2, 2, 1, 0, 2, 2, 1]
    assert [got[n].tebd_input_mode for n in NAMES] == ["concat", "strip", "concat", "concat", "concat", "strip",
                                                       "strip"]
    assert [got[n].smooth for n in NAMES] == [False, True, True, False, False, True, False]
    assert got["tf32_cuau3_se_atten_smooth"].type_one_side and not got["tf32_cuau3_se_atten_smooth"].attn_dotr
    assert got["tf32_cuau3_se_atten_smooth"].ntypes == 3
    assert got["tf32_cuau3_se_atten_smooth"].exclude_types == {(0, 2), (2, 0)}
    assert got["tf32_cuau_se_atten_a0_excl"].exclude_types == {(1, 1)}
    assert got["tf32_cuau_se_atten_v2_a2"].layers[0].ln_eps == 1e-4
    assert got["tf22_cuau_se_atten"].layers[1].ln_eps == 1e-3  # 2.2: Keras' default
    assert all(got[n].scaling == 1.0 and got[n].normalize for n in NAMES)
    assert not any(got[n].attn_mask for n in NAMES)


@pytest.mark.parametrize("name", MASKED)
def test_attn_mask_from_the_graph(potential, name):
    """The graph's mask is read and matters: without it the results leave DeePMD-kit's by >= 100 times the
    tolerance of test_uncompressed_matches_deepmd (measured: 1.2e-7 eV/atom, 1.9e-5 eV/A for tf32)."""
    pot = potential(name)
    d = pot.plan.parts[0].descriptor
    assert d.attn_mask and len(d.layers) == 2 and d.smooth == ("tf32" in name)
    assert "attn_mask" in d.summary()
    params = dataclasses.replace(pot.params, descriptor=dataclasses.replace(d, attn_mask=False))
    unmasked = DeepPotential(params, backend="numpy")
    ref = Reference(name)
    res = evaluate(unmasked, ref, "p32_0")
    dev = deviations(res, ref.output("p32_0", "pb"), len(ref.structure("p32_0")[1]))
    assert dev["e_per_atom"] > 1e-8 and dev["force"] > 1e-7, dev


@pytest.mark.parametrize("name", ["tf32_cuau_se_atten", "tf32_cuau_se_atten_v2_a2", "tf32_cuau_se_atten_strip_sharp",
                                  "tf32_cuau3_se_atten_smooth", "tf22_cuau_se_atten", *MASKED])
def test_compressed_within_table_error(potential, name):
    exact, tab = potential(name), potential(name, compressed=True)
    assert tab.plan.parts[0].compressed and tab.plan.parts[0].descriptor.tf_switch
    assert_within_table_error(exact, tab, Reference(name), ("p32_0", "p108_1", "cluster55", "near_cut"))


@pytest.mark.parametrize("name", ["tf32_cuau_se_atten", *[pytest.param(n, marks=pytest.mark.slow) for n in (
    "tf32_cuau_se_atten_v2_a2", "tf32_cuau_se_atten_strip_sharp", *MASKED)]])
def test_forces_are_energy_gradients(potential, name):
    """TF's branches (norm floor, rebuilt switch, padding rows) in the hand-written backward pass: central
    differences on near_cut, whose last atom sits where the floor acts. There the gate is w(r) / 1e-6 with
    w ~ 1e-8, whose polynomial cancels to ~1e-8 relative: the energy is noisy at ~1e-13 and strongly curved,
    so no step does better than a few 1e-7 (the forces equal DeePMD-kit's autodiff to 1e-10, see above)."""
    pot = potential(name)
    coord, atype, _ = Reference(name).structure("near_cut")
    res = pot.compute_atoms(coord, atype, None, [False] * 3)
    for atom in (0, 4):
        for axis in range(3):
            fd = central_difference_force(pot, coord, atype, None, atom, axis, h=1e-5)
            assert abs(res.forces[atom, axis] - fd) <= 1e-6, (atom, axis)
    check_central_differences(pot)  # the periodic p32_0


def test_ghost_atoms_like_lammps(potential):
    """Local + ghost atoms give the periodic result: TF's padding slots have their own type, not atom 0's."""
    pot = potential("tf32_cuau_se_atten")
    coord, atype, box = Reference("tf32_cuau_se_atten").structure("p32_0")
    atype = atype.copy()
    atype[0] = 1 - atype[0]  # a first atom of the other type: PyTorch's padding rule would differ
    cell = np.asarray(box, dtype=np.float64).reshape(3, 3)
    want = pot.compute_atoms(coord, atype, cell, [True] * 3)
    atype_all, centers, neighbors, vectors, owner = with_ghost_atoms(coord, atype, cell, pot.rcut)
    got = pot.compute_pairs(atype_all, len(coord), centers, neighbors, vectors)
    assert abs(got.energy - want.energy) <= 1e-10 * len(coord)


#: TF hybrids of an se_atten part and an se_e2_a part (make_tf_hybrid_dpa1_models.py): se_atten (rcut 3.5) inside a
#: wider se_e2_a (4.5), 3.2 with two attention layers and a one-side se_e2_a, 2.2 with one; se_atten_v2 (rcut 4.5,
#: one layer) wider than its se_e2_a (3.8)
HYBRIDS = ("tf32_cuau_hyb_atten_small", "tf22_cuau_hyb_atten_small", "tf32_cuau_hyb_atten_v2_large")


@pytest.mark.parametrize("name", HYBRIDS)
def test_hybrid_matches_deepmd(potential, name):
    pot = potential(name)
    atten, se_a = pot.plan.parts
    assert atten.descriptor.kind == "dpa1" and atten.descriptor.tf_switch and se_a.descriptor.kind == "se_e2_a"
    # each part selects within its own cutoff, as TF builds each part's neighbour list
    assert [p.select_rcut for p in pot.plan.parts] == [p.descriptor.rcut for p in pot.plan.parts]
    assert abs(atten.descriptor.rcut - se_a.descriptor.rcut) > 0.5 and abs(pot.rcut - 4.5) < 1e-6  # float32 op cut-offs
    ref = Reference(name)
    for conf in ref.names:
        n = len(ref.structure(conf)[1])
        dev = deviations(evaluate(pot, ref, conf), ref.output(conf, "pb"), n)
        # near_cut (a neighbour 0.004 A inside the se_atten part's rcut, where l2_normalize's floor acts) is noisy
        # in forces at ~1e-9 in both codes: moving its near atom by 1e-14 relative moves deepcomp's forces by
        # 7e-10 (tf22), so 3e-9 there
        tol = 3e-9 if conf == "near_cut" else 1e-9
        assert dev["e_per_atom"] <= 1e-10, (conf, dev)
        assert dev["force"] <= tol and dev["virial_per_atom"] <= tol and dev["atom_energy"] <= 1e-9, (conf, dev)


def test_hybrid_part_selects_within_its_own_cutoff(potential):
    """PyTorch's rule (the DPA-1 part takes its sel nearest within the hybrid's cutoff) would be wrong here."""
    name = "tf32_cuau_hyb_atten_small"
    pot = potential(name)
    parts = pot.params.descriptor.parts
    wide = dataclasses.replace(parts[0], select_rcut=4.5)
    other = DeepPotential(dataclasses.replace(pot.params, descriptor=dataclasses.replace(
        pot.params.descriptor, parts=(wide, *parts[1:]))), backend="numpy")
    ref = Reference(name)
    dev = deviations(evaluate(other, ref, "p32_0"), ref.output("p32_0", "pb"), len(ref.structure("p32_0")[1]))
    assert dev["e_per_atom"] > 1e-6, dev


@pytest.mark.parametrize("name", HYBRIDS)
def test_hybrid_compressed_within_table_error(potential, name):
    exact, tab = potential(name), potential(name, compressed=True)
    assert all(p.compressed for p in tab.plan.parts) and tab.plan.parts[0].descriptor.tf_switch
    assert_within_table_error(exact, tab, Reference(name), ("p32_0", "cluster55", "near_cut"))


def test_info_names_tensorflow_evaluation(potential):
    assert "evaluated as TensorFlow does" in potential("tf22_cuau_se_atten").plan.parts[0].descriptor.summary()


# --------------------------------------------------------------------------- refusals


def _script(path: Path) -> dict:
    return json.loads(read_pb_node(path, "train_attr/training_script").item().decode())


def read_pb_node(path: Path, name: str):
    for node in pw.parse_graph_def(path.read_bytes()):
        if node.name == name:
            return node.tensor().to_numpy()
    raise KeyError(name)


def _with_script(src: Path, dst: Path, edit) -> Path:
    script = _script(src)
    edit(script["model"])
    node = pw.encode_const_node("train_attr/training_script", np.array(json.dumps(script).encode(), dtype=object))
    return _edit(src, dst, drop={"train_attr/training_script"}, add=[node])


def test_extra_weight_refused(tmp_path):
    src = GRAPHS / "tf32_cuau_se_atten.pb"
    for extra in ("attention_layer_0/c_gate/matrix", "attention_layer_1/c_out/idt"):
        path = _edit(src, tmp_path / "extra.pb", add=[pw.encode_const_node(extra, np.ones((8, 8)))])
        with pytest.raises(UnsupportedModelError, match=f"'{extra}'"):
            read_pb(path)
    # a third attention layer (complete) the script does not know of
    nodes = [pw.encode_const_node(f"attention_layer_2/{p}/{k}", np.ones((8, 8) if k == "matrix" else 8))
             for p in ("c_query", "c_key", "c_value", "c_out") for k in ("matrix", "bias")]
    path = _edit(src, tmp_path / "third.pb", add=nodes)
    with pytest.raises(ModelFormatError, match="attn_layer' is 2 but the graph holds 3 attention layers"):
        read_pb(path)


def test_hybrid_extra_or_renamed_node_named(tmp_path):
    src = GRAPHS / "tf32_cuau_hyb_atten_small.pb"
    extra = "attention_layer_0_0/c_gate/matrix"
    path = _edit(src, tmp_path / "extra.pb", add=[pw.encode_const_node(extra, np.ones((8, 8)))])
    with pytest.raises(UnsupportedModelError, match=f"'{extra}'"):
        read_pb(path)
    for node in ("filter_type_all_1/bias_2", "attention_layer_1_0/layer_normalization/gamma"):
        path = _edit(src, tmp_path / "renamed.pb", rename={node: node.replace("_1", "_one", 1)})
        with pytest.raises(ModelFormatError, match=node.split("/")[0]):
            read_pb(path)


def test_hybrid_with_two_dpa1_parts_refused(tmp_path):
    path = _with_script(GRAPHS / "tf32_cuau_hyb_atten_small.pb", tmp_path / "two.pb",
                        lambda m: m["descriptor"]["list"][1].update(type="se_atten"))
    with pytest.raises(UnsupportedModelError, match=r"list\[1\]\.type' is 'se_atten'.*one DPA-1"):
        read_pb(path)


@pytest.mark.parametrize("name, node", [
    ("tf32_cuau_se_atten_v2_a2", "attention_layer_1/c_key/bias"),
    ("tf32_cuau_se_atten_v2_a2", "attention_layer_0/layer_normalization/beta"),
    ("tf32_cuau_se_atten_v2_a2", "filter_type_all/bias_2_two_side_ebd"),
    ("tf32_cuau_se_atten_strip_sharp", "type_embed_net/matrix_2"),
])
def test_removed_weight_named(tmp_path, name, node):
    path = _edit(GRAPHS / f"{name}.pb", tmp_path / "removed.pb", drop={node})
    with pytest.raises(ModelFormatError, match=node):
        read_pb(path)


def test_renamed_weight_named(tmp_path):
    # 2.2's layer norm of layer 1 has a Keras-numbered scope: renaming it leaves the layer without one
    src = GRAPHS / "tf22_cuau_se_atten.pb"
    names = [n.name for n in pw.parse_graph_def(src.read_bytes()) if n.name.startswith("attention_layer_1/layer_")]
    gamma = next(n for n in names if n.endswith("/gamma"))
    path = _edit(src, tmp_path / "renamed.pb", rename={gamma: gamma.replace("attention_layer_1", "attention_layer_one")})
    with pytest.raises(ModelFormatError, match="attention layer 1 has 0 layer norms"):
        read_pb(path)
    path = _edit(GRAPHS / "tf32_cuau_se_atten.pb", tmp_path / "renamed2.pb",
                 rename={"type_embed_net/bias_1": "type_embed_net/bias_one"})
    with pytest.raises(ModelFormatError, match="use_tebd_bias"):
        read_pb(path)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["descriptor"].update(attn_mask=True), "attn_mask' is True but the graph's attention layers lack"),
    (lambda m: m["descriptor"].update(attn=16), "attn' is 16 but 'attention_layer_0/c_query/matrix' has 8"),
    (lambda m: m["descriptor"].update(tebd_input_mode="strip"), "tebd_input_mode' is 'strip'"),
    (lambda m: m["descriptor"].update(type_one_side=True), "type_one_side' is True"),
    (lambda m: m["descriptor"].update(temperature=2.0), "temperature' is 2.0"),
    (lambda m: m["type_embedding"].update(neuron=[2, 4]), "type_embedding.neuron"),
    (lambda m: m["type_embedding"].update(use_tebd_bias=False), "use_tebd_bias"),
])
def test_script_contradicting_the_graph_refused(tmp_path, edit, match):
    path = _with_script(GRAPHS / "tf32_cuau_se_atten.pb", tmp_path / "edited.pb", edit)
    with pytest.raises((ModelFormatError, UnsupportedModelError), match=match):
        read_pb(path)


def test_mask_the_script_denies_refused(tmp_path):
    path = _with_script(GRAPHS / "tf32_cuau_se_atten_mask.pb", tmp_path / "edited.pb",
                        lambda m: m["descriptor"].update(attn_mask=False))
    with pytest.raises(ModelFormatError, match="attn_mask' is False but the graph's attention layers have"):
        read_pb(path)


def test_layer_mask_contradicting_attn_mask_refused():
    tree = read_pb(GRAPHS / "tf32_cuau_se_atten_mask.pb")
    tree["model"]["descriptor"]["attention_layers"]["attention_layers"][1]["attention_layer"]["do_mask"] = False
    with pytest.raises(ModelFormatError, match="do_mask' is False, which contradicts the descriptor's attn_mask"):
        parse_model(tree, "edited.pb")


def test_smooth_exclusion_with_davg_refused(tmp_path):
    """TF's smooth type embedding fills an excluded neighbour's row with the centre's davg."""
    src = GRAPHS / "tf32_cuau3_se_atten_smooth.pb"
    avg = read_pb_node(src, "descrpt_attr/t_avg").copy()
    avg[:, 0::4] = 0.01
    path = _with_script(src, tmp_path / "script.pb", lambda m: m["descriptor"].update(set_davg_zero=False))
    path = _edit(path, tmp_path / "davg.pb", drop={"descrpt_attr/t_avg"},
                 add=[pw.encode_const_node("descrpt_attr/t_avg", avg)])
    with pytest.raises(UnsupportedModelError, match="exclude_types.*set_davg_zero true"):
        read_pb(path)


def test_tensorflow_evaluation_only_in_tensorflow_trees():
    """The marker belongs to trees of TF graphs; a DeePMD-kit tree of a TF model (no marker) stays refused."""
    tree = read_dp(MODELS / "pt_cuau_dpa1_concat.dp")
    tree["model"]["descriptor"]["evaluation"] = {"backend": "tensorflow", "switch_rcut_smth": 0.5}
    with pytest.raises(ModelFormatError, match="evaluation"):
        parse_model(tree, "edited.dp")
    tree = read_pb(GRAPHS / "tf32_cuau_se_atten.pb")
    tree["model"]["descriptor"]["evaluation"]["switch_rcut_smth"] = 0.6
    with pytest.raises(ModelFormatError, match="switch_rcut_smth"):
        parse_model(tree, "edited.pb")
    for name in ("tf32_cuau_se_atten", "tf32_cuau_se_atten_mask"):  # the latter: attn_mask true
        tree = read_pb(GRAPHS / f"{name}.pb")
        del tree["model"]["descriptor"]["evaluation"]
        with pytest.raises(UnsupportedModelError, match="converted from a TensorFlow graph"):
            parse_model(tree, "converted.dp")
