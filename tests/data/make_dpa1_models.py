"""Regenerate the small DPA-1 test models tests/data/models/pt_cuau_dpa1_*.{pth,dp} and their references.

Needs a Python environment with DeePMD-kit 3.2 and torch (not the test environment):

    cd tests/data && /path/to/dpvenv/bin/python make_dpa1_models.py [name ...]

Each model is trained a few steps on tests/data/training/cuau (``dp --pt train``), frozen to NAME.pth,
converted to NAME.dp (``dp convert-backend``) and evaluated with DeePMD-kit's DeepPot on the held-out
configurations of refs/cuau_se_e2_a.npz (refs/NAME.npz, variant ``pth``), as make_pt_models.py does.
The settings differ from model to model so that between them every DPA-1 option deepcomp reads is
exercised with a non-default value: concat and strip type embedding, attention layers 0 and 2,
attn_dotr, normalize, temperature, scaling_factor, trainable_ln/ln_eps,
smooth_type_embedding, type_one_side, exclude_types, set_davg_zero, concat_output_tebd, use_tebd_bias.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from make_pt_models import HERE, _input, _refs, _run, train_freeze_convert

FIT = {"neuron": [8, 8], "resnet_dt": True, "activation_function": "tanh", "seed": 7}
_BASE = {"sel": 24, "rcut_smth": 0.5, "rcut": 4.0, "neuron": [4, 8], "axis_neuron": 4, "tebd_dim": 4,
         "attn": 8, "activation_function": "tanh", "seed": 11}
MODELS = {
    # concat, two attention layers, DeePMD-kit's defaults otherwise (dot-product gate, normalise, ...)
    "pt_cuau_dpa1_concat": _input(dict(_BASE, type="dpa1", tebd_input_mode="concat", attn_layer=2,
                                       set_davg_zero=False, smooth_type_embedding=False), FIT),
    # strip, two layers, the smooth type embedding and the less common switches
    "pt_cuau_dpa1_strip": _input(dict(_BASE, type="dpa1", tebd_input_mode="strip", attn_layer=2,
                                      smooth_type_embedding=True, type_one_side=True, attn_dotr=False,
                                      scaling_factor=0.5, temperature=2.0, normalize=False, ln_eps=1e-3,
                                      trainable_ln=False, set_davg_zero=True, use_tebd_bias=True,
                                      concat_output_tebd=False, exclude_types=[[0, 1]],
                                      activation_function="gelu"), FIT),
    # strip without the smooth type embedding: padding rows take the first atom's type term, and with
    # non-zero davg excluded pairs (zero rows) differ from padding (-davg/dstd rows)
    "pt_cuau_dpa1_strip_sharp": _input(dict(_BASE, type="dpa1", tebd_input_mode="strip", attn_layer=1,
                                            smooth_type_embedding=False, set_davg_zero=False,
                                            exclude_types=[[1, 1]], use_tebd_bias=True), FIT),
    # scaling_factor without temperature, one-side concat with attention, no normalisation or dotr
    "pt_cuau_dpa1_scaled": _input(dict(_BASE, type="dpa1", tebd_input_mode="concat", attn_layer=1,
                                       scaling_factor=0.6, normalize=False, attn_dotr=False, type_one_side=True,
                                       smooth_type_embedding=True, set_davg_zero=False), FIT),
    # concat without attention, type_one_side
    "pt_cuau_dpa1_concat_a0": _input(dict(_BASE, type="dpa1", tebd_input_mode="concat", attn_layer=0,
                                          type_one_side=True, set_davg_zero=False), FIT),
    # a hybrid with a DPA-1 part (one attention layer) and an se_e2_r part
    "pt_cuau_hybrid_dpa1": _input({"type": "hybrid", "list": [
        dict(_BASE, type="dpa1", tebd_input_mode="concat", attn_layer=1, set_davg_zero=False),
        {"type": "se_e2_r", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8],
         "activation_function": "tanh", "seed": 12}]}, FIT),
    # se_atten_v2 without attention (deepcomp's compiled se_atten path) with exclude_types and non-zero davg:
    # excluded pairs keep their slot and add nothing, padding adds -davg/dstd rows
    "pt_cuau_se_atten_v2_excl": _input(dict(_BASE, type="se_atten_v2", attn_layer=0, exclude_types=[[0, 1]],
                                            set_davg_zero=False), FIT),
    # three types (Ag has no training data: it is only relabelled in the references), concat with the
    # smooth type embedding
    "pt_cuau3_dpa1_concat_smooth": _input(dict(_BASE, type="dpa1", tebd_input_mode="concat", attn_layer=2,
                                               smooth_type_embedding=True, set_davg_zero=False), FIT),
    # se_atten_v2 with attention layers (strip + smooth type embedding by construction)
    "pt_cuau_se_atten_v2_a2": _input(dict(_BASE, type="se_atten_v2", attn_layer=2,
                                          set_davg_zero=False, neuron=[4, 8, 16]), FIT),
}


MODELS["pt_cuau3_dpa1_concat_smooth"]["model"]["type_map"] = ["Cu", "Au", "Ag"]
#: models whose references relabel every third atom as type 2 (so that a third type is evaluated)
THREE_TYPES = ("pt_cuau3_dpa1_concat_smooth",)
YAML = ("pt_cuau_dpa1_concat",)  # also written as .yaml (the backend-neutral text format)


def _yaml(dp: str, name: str, work: Path) -> None:
    _run([dp, "convert-backend", str(HERE / "models" / f"{name}.pth"), str(HERE / "models" / f"{name}.yaml")], work)


def _third_type(atype):
    atype[::3] = 2
    return atype


def main(names: list[str]) -> None:
    dp = shutil.which("dp", path=os.path.dirname(sys.executable)) or "dp"
    for name in names or list(MODELS):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            train_freeze_convert(dp, name, MODELS[name], work)
            if name in YAML:
                _yaml(dp, name, work)
            _refs(name, HERE / "models" / f"{name}.pth", relabel=_third_type if name in THREE_TYPES else None)
        print(name, "done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
