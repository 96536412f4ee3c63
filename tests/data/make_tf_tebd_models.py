"""Regenerate the small TensorFlow test models tests/data/models/tf_graphs/tf{22,32}_cuau*_se_a_tebd*.pb (se_e2_a with a
model-level ``type_embedding``) and their references refs/NAME.npz.

Run with the Python of the DeePMD-kit release the model is for (2.2.x for ``tf22_*``, 3.x for ``tf32_*``):

    cd tests/data && /path/to/dp22/bin/python make_tf_tebd_models.py tf22
    cd tests/data && /path/to/dp32/bin/python make_tf_tebd_models.py tf32
    cd tests/data && /path/to/dp32/bin/python make_tf_tebd_models.py deepmd_graph

Each model is trained a few steps on tests/data/training/cuau (``dp train``, TensorFlow), frozen
(``dp freeze``) and evaluated with DeePMD-kit's DeepPot on the held-out configurations of
refs/cuau_se_e2_a.npz (variant ``pb``; the cluster is non-periodic and its neighbour lists are padded).
Between them the models cover type_one_side true and false, type-embedding nets of one and two layers
(with resnet_dt, the one-hot input passing through a doubling shortcut), with and without the
type-embedding bias (3.x's use_tebd_bias; 2.2 always has one), exclude_types, three types (the
third, Ag, has no training data: every third atom is relabelled in the references) and frame/atomic
parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from make_pt_models import HERE, _input, _refs, _run

FIT = {"neuron": [8, 8], "resnet_dt": True, "activation_function": "tanh", "seed": 7}
_DESC = {"type": "se_e2_a", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8, 16],
         "axis_neuron": 4, "activation_function": "tanh", "seed": 21}
MODELS = {
    # two-side: the embedding net reads [s, tebd(neighbour), tebd(centre)]; a two-layer type
    # embedding (2 -> 4 doubles the one-hot input, 4 -> 4 adds it) with resnet_dt
    "tf32_cuau_se_a_tebd": (
        dict(_DESC, type_one_side=False),
        {"neuron": [4, 4], "resnet_dt": True, "activation_function": "tanh", "use_tebd_bias": True, "seed": 3}),
    # one-side ([s, tebd(neighbour)]), no type-embedding bias (3.x's default), an excluded type pair
    "tf32_cuau_se_a_tebd_tos": (
        dict(_DESC, type_one_side=True, exclude_types=[[0, 1]], activation_function="gelu"),
        {"neuron": [5], "activation_function": "tanh", "seed": 4}),
    # refused by deepcomp: the embedding net's first layer reads 1 + 3 inputs and has 4 outputs, so
    # DeePMD-kit adds its input [s, tebd] to the output (a shortcut no scalar-input net can hold)
    "tf32_cuau_se_a_tebd_shortcut": (
        dict(_DESC, type_one_side=True),
        {"neuron": [3], "activation_function": "tanh", "seed": 4}),
    # three types, two-side, set_davg_zero
    "tf32_cuau3_se_a_tebd": (
        dict(_DESC, type_one_side=False, set_davg_zero=True, sel=[30, 30, 20]),
        {"neuron": [2, 5], "activation_function": "softplus", "use_tebd_bias": True, "seed": 5}),
    # DeePMD-kit 2.2: two-side and one-side, its type embedding always has a bias
    "tf22_cuau_se_a_tebd": (
        dict(_DESC, type_one_side=False),
        {"neuron": [5], "activation_function": "tanh", "seed": 6}),
    "tf22_cuau_se_a_tebd_tos": (
        dict(_DESC, type_one_side=True),
        {"neuron": [2, 4], "resnet_dt": True, "activation_function": "tanh", "seed": 7}),
}
#: with frame and atomic parameters: TF's fitting net reads [D, tebd(type), fparam, aparam]; trained on
#: copies of two systems with seeded fparam/aparam and referenced as make_fparam_models.py does (refs/NAME.npz
#: in its layout, read by tests/test_tebd_se_a.py)
PARAMS = {"tf32_cuau_se_a_tebd_f2a1": {"numb_fparam": 2, "numb_aparam": 1}}
MODELS["tf32_cuau_se_a_tebd_f2a1"] = (dict(_DESC, type_one_side=False),
                                      {"neuron": [3], "activation_function": "tanh", "seed": 8})
THREE_TYPES = ("tf32_cuau3_se_a_tebd",)
REFUSED = ("tf32_cuau_se_a_tebd_shortcut",)  # no references


def _third_type(atype):
    atype[::3] = 2
    return atype


def _script(name: str, work: Path) -> dict:
    desc, tebd = MODELS[name]
    script = _input(desc, dict(FIT, **PARAMS.get(name, {})))
    script["model"]["type_embedding"] = dict(tebd)
    if name in THREE_TYPES:
        script["model"]["type_map"] = ["Cu", "Au", "Ag"]
    # relative data paths: the graph stores its training script, which must not name this machine
    if name in PARAMS:
        from make_fparam_models import _data

        systems = _data(work / "data", PARAMS[name].get("numb_fparam", 0), PARAMS[name].get("numb_aparam", 0))
        script["training"]["training_data"] = {"systems": [str(Path(s).relative_to(work)) for s in systems],
                                               "batch_size": 1}
    else:
        script["training"]["training_data"]["systems"] = [
            str(Path(s).relative_to(HERE / "training")) for s in script["training"]["training_data"]["systems"]]
    return script


def _param_refs(name: str, pb: Path) -> None:
    """References with seeded fparam/aparam, by make_fparam_models.py's own reference writer."""
    import make_fparam_models

    make_fparam_models.MODELS[name] = ("dp32", "tf", PARAMS[name])
    make_fparam_models._refs(name, pb)


def _deepmd_graph_refs() -> None:
    """refs/deepmd_se_e2_a_tebd.npz: DeepPot on DeePMD-kit's own se_e2_a + type embedding test graph
    (models/tf_graphs/deepmd_se_e2_a_tebd.pb, see make_deepmd_test_graphs.py) and its water configuration."""
    from deepmd.infer import DeepPot
    from deepmd_refs import eval_outputs
    from make_deepmd_test_graphs import ATYPE, BOX, COORD

    dp = DeepPot(str(HERE / "models" / "tf_graphs" / "deepmd_se_e2_a_tebd.pb"))
    out = {"coord": COORD.reshape(-1, 3), "box": BOX.reshape(3, 3), "atype": ATYPE}
    out.update(eval_outputs(dp, COORD, BOX, ATYPE, ""))
    np.savez(HERE / "refs" / "deepmd_se_e2_a_tebd.npz", **out)


def main(args: list[str]) -> None:
    import deepmd

    if args == ["deepmd_graph"]:
        _deepmd_graph_refs()
        return

    release = "tf22" if deepmd.__version__.startswith("2.") else "tf32"
    names = [n for n in args if n in MODELS] or [n for n in MODELS if n.startswith(release)]
    dp = shutil.which("dp", path=os.path.dirname(sys.executable)) or "dp"
    backend = [] if release == "tf22" else ["--tf"]
    for name in names:
        if not name.startswith(release):
            sys.exit(f"{name} is made with DeePMD-kit {'2.2' if name.startswith('tf22') else '3.x'}, "
                     f"this is {deepmd.__version__}")
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "cuau").symlink_to(HERE / "training" / "cuau")
            (work / "input.json").write_text(json.dumps(_script(name, work), indent=1))
            _run([dp, *backend, "train", "input.json"], work)
            pb = HERE / "models" / "tf_graphs" / f"{name}.pb"
            _run([dp, *backend, "freeze", "-o", str(pb)], work)
            if name in PARAMS:
                _param_refs(name, pb)
            elif name not in REFUSED:
                _refs(name, pb, variant="pb", relabel=_third_type if name in THREE_TYPES else None)
        print(name, "done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
