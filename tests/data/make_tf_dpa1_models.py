"""Regenerate the small DPA-1 TensorFlow graphs tests/data/models/tf_graphs/tf{22,32}_*se_atten*.pb.

Run with the Python of a DeePMD-kit environment (not the test environment):

    cd tests/data && /path/to/deepmd-2.2.11/bin/python make_tf_dpa1_models.py 22 [name ...]
    cd tests/data && /path/to/deepmd-3.2.0/bin/python make_tf_dpa1_models.py 32 [name ...]

Each model trains a few steps on tests/data/training/cuau (``dp [--tf] train``), is frozen
(``dp [--tf] freeze``) and evaluated by the same DeePMD-kit (``DeepPot``, atomic virials included)
on held-out configurations of refs/cuau_se_e2_a.npz: a periodic 32-atom and 108-atom cell and the
non-periodic 55-atom cluster. With sel 40 and rcut 4 every atom has fewer neighbours than sel, so
the padded slots of the neighbour list are always exercised. A fifth configuration, ``near_cut``, is
a small cluster with one neighbour 0.004 A inside rcut: its normalised direction is shorter than
TensorFlow's l2_normalize floor (1e-6), which then decides the angular gate. The references go to
refs/NAME.npz (keys ``CONF/{coord,box,atype}`` and ``CONF/pb/{energy,force,virial,atom_energy,atom_virial}``).

Between them the models set every DPA-1 option TensorFlow has to a non-default value: concat and
strip type embedding (``se_atten`` / ``se_atten_v2``), attention layers 0, 1 and 2, type_one_side,
exclude_types, smooth_type_embedding, set_davg_zero, attn_dotr, attn_mask, trainable_ln and ln_eps, and type
embeddings of one and two layers with and without bias. Models named ``*cuau3*`` have a third type
(Ag) without training data: their references relabel every third atom as type 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from deepmd_refs import eval_outputs
from make_tf_models import HERE, main
from make_tf_models import _input as _tf_input

CONFS = ("p32_0", "p108_1", "cluster55")


def _input(descriptor: dict, type_embedding: dict, type_map=("Cu", "Au")) -> dict:
    d = _tf_input(descriptor, {"neuron": [8, 8], "resnet_dt": True, "seed": 5})
    d["model"]["type_map"] = list(type_map)
    d["model"]["type_embedding"] = type_embedding
    return d


_BASE = {"sel": 40, "rcut_smth": 0.5, "rcut": 4.0, "neuron": [4, 8], "axis_neuron": 4, "attn": 8,
         "activation_function": "tanh", "seed": 11}
TEBD = {"neuron": [4], "seed": 3}

MODELS = {
    "32": {
        # TF's default DPA-1: concat, two attention layers; two-side type input and a non-zero davg
        "tf32_cuau_se_atten": _input(dict(_BASE, type="se_atten", attn_layer=2, type_one_side=False,
                                          set_davg_zero=False), dict(TEBD, use_tebd_bias=True)),
        # strip mode with attention (smooth type embedding), fixed layer norm with its own eps
        "tf32_cuau_se_atten_v2_a2": _input(dict(_BASE, type="se_atten_v2", attn_layer=2, set_davg_zero=False,
                                                trainable_ln=False, ln_eps=1e-4), TEBD),
        # three types, concat with the smooth type embedding, one-side type input, no angular gate,
        # an excluded pair (set_davg_zero: TF's smooth exclusion then leaves no trace)
        "tf32_cuau3_se_atten_smooth": _input(dict(_BASE, type="se_atten", attn_layer=1, type_one_side=True,
                                                  smooth_type_embedding=True, attn_dotr=False,
                                                  exclude_types=[[0, 2]], set_davg_zero=True),
                                             dict(TEBD, use_tebd_bias=True), ("Cu", "Au", "Ag")),
        # strip mode without the smooth type embedding: padding slots take the (centre, padding type) row of
        # the strip table, and with a non-zero davg they add to the descriptor; a two-layer gelu type
        # embedding without bias (its first layer as wide as the one-hot input: a shortcut, then a doubling)
        "tf32_cuau_se_atten_strip_sharp": _input(dict(_BASE, type="se_atten", tebd_input_mode="strip",
                                                      smooth_type_embedding=False, attn_layer=1,
                                                      set_davg_zero=False),
                                                 dict(TEBD, neuron=[2, 4], activation_function="gelu")),
        # concat without attention, an excluded pair without the smooth type embedding, non-zero davg
        "tf32_cuau_se_atten_a0_excl": _input(dict(_BASE, type="se_atten", attn_layer=0, type_one_side=False,
                                                  exclude_types=[[1, 1]], set_davg_zero=False), TEBD),
        # attn_mask: each slot's attention weight on itself zeroed; with the smooth type embedding
        "tf32_cuau_se_atten_mask": _input(dict(_BASE, type="se_atten", attn_layer=2, type_one_side=False,
                                               smooth_type_embedding=True, attn_mask=True, set_davg_zero=False),
                                          TEBD),
    },
    "22": {
        # DeePMD-kit 2.2's se_atten (Keras layer norm) with its defaults: concat, two layers
        "tf22_cuau_se_atten": _input(dict(_BASE, type="se_atten", attn_layer=2, type_one_side=False,
                                          set_davg_zero=False), TEBD),
        # 2.2's se_atten_v2 with attention
        "tf22_cuau_se_atten_v2_a2": _input(dict(_BASE, type="se_atten_v2", attn_layer=2, set_davg_zero=False),
                                           TEBD),
        # 2.2's se_atten with attn_mask (the sharp softmax over the real neighbours)
        "tf22_cuau_se_atten_mask": _input(dict(_BASE, type="se_atten", attn_layer=2, type_one_side=False,
                                               attn_mask=True, set_davg_zero=False), TEBD),
    },
}


def _third_type(atype: np.ndarray) -> np.ndarray:
    atype = atype.copy()
    atype[::3] = 2
    return atype


def _near_cut(rcut: float) -> dict:
    """Five atoms, one of them 0.004 A inside rcut of the first (no periodicity)."""
    coord = np.array([[0.0, 0.0, 0.0], [2.5, 0.1, 0.0], [0.2, 2.6, 0.1], [-1.5, -1.9, 0.3],
                      [0.3, 0.2, 0.0]])
    coord[4] = coord[4] / np.linalg.norm(coord[4]) * (rcut - 0.004)
    return {"near_cut/coord": coord, "near_cut/atype": np.array([0, 1, 0, 1, 1])}


def refs(name: str, pb: Path) -> None:
    """DeePMD-kit's own energies/forces/virials of ``pb`` on the held-out configurations."""
    write_refs(name, pb, 4.0, 4.0)


def write_refs(name: str, pb: Path, rcut: float, near_rcut: float) -> None:
    """refs/NAME.npz of the graph ``pb`` (cutoff ``rcut``), its ``near_cut`` neighbour just inside ``near_rcut``."""
    from deepmd.infer import DeepPot

    held = dict(np.load(HERE / "refs" / "cuau_se_e2_a.npz"))
    held.update(_near_cut(near_rcut))
    dp = DeepPot(str(pb))
    assert dp.get_rcut() == rcut
    out = {"names": np.array([*CONFS, "near_cut"]), "type_map": np.array(dp.get_type_map())}
    for c in [*CONFS, "near_cut"]:
        coord, atype = held[f"{c}/coord"], held[f"{c}/atype"]
        box = held.get(f"{c}/box")
        if "cuau3" in name:
            atype = _third_type(atype)
        out[f"{c}/coord"], out[f"{c}/atype"] = coord, atype
        if box is not None:
            out[f"{c}/box"] = box
        out.update(eval_outputs(dp, coord, box, atype, f"{c}/pb/"))
    np.savez(HERE / "refs" / f"{name}.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:], MODELS, refs)
