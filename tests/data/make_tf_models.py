"""Regenerate the small TensorFlow-backend test graphs tests/data/models/tf_graphs/tf{22,32}_*.pb.

Run with the Python of a DeePMD-kit environment (not the test environment):

    cd tests/data && /path/to/deepmd-2.2.11/bin/python make_tf_models.py 22
    cd tests/data && /path/to/deepmd-3.2.0/bin/python make_tf_models.py 32

``22`` makes the graphs frozen by DeePMD-kit 2.2.11, ``32`` those of 3.2.0 (TF backend). Each model
trains a few steps on tests/data/training/cuau (``dp train``), is frozen (``dp freeze``) and
evaluated by that DeePMD-kit (``DeepPot``) on held-out configurations of refs/cuau_se_e2_a.npz; the
references go to refs/NAME.npz (keys ``CONF/{coord,box,atype}`` and
``CONF/pb/{energy,force,virial,atom_energy,atom_virial}``, as refsuite's). The models are tiny and
barely trained: they check how the reader lays a graph out, not the physics.

What each one is for:

* ``tf*_cuau_se_e2_r_fitw``: the first fitting width equals the descriptor width (8) and the next
  one doubles it; DeePMD-kit's TF fitting net has no skip connection (and no ``idt``) in either.
* ``tf22_cuau_se_e2_a_excl``: se_e2_a with ``exclude_types`` and a first fitting width equal to
  the descriptor width (8 * 2).
* ``tf32_cuau_se_e2_a_cut``: cut-offs not exact in float32 (rcut 4.3, rcut_smth 0.3), which
  DeePMD-kit's environment-matrix op computes with in float32.
* ``tf22_cuau_se_atten_v2``: se_atten_v2 frozen by 2.2, whose training script has no
  ``use_tebd_bias`` key while the graph holds ``type_embed_net/bias_1``; its script says
  ``type_one_side`` true, yet TF builds the two-side strip net; fitting widths 24 (the descriptor
  width, 8 * 2 + 8) then doubling to 48.

A graph made by ``dp convert-backend`` (one-side nets, no ``type_one_side`` key) comes from
DeePMD-kit's own test model instead: see make_deepmd_test_graphs.py.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from deepmd_refs import eval_outputs

HERE = Path(__file__).resolve().parent
STEPS = 10
CONFS = ("p32_0", "p108_1")
ENV = dict(os.environ, OMP_NUM_THREADS="1", TF_INTRA_OP_PARALLELISM_THREADS="1",
           TF_INTER_OP_PARALLELISM_THREADS="1", DP_INTRA_OP_PARALLELISM_THREADS="1",
           DP_INTER_OP_PARALLELISM_THREADS="1")


def _input(descriptor: dict, fitting: dict) -> dict:
    d = copy.deepcopy(json.loads((HERE / "training" / "input.json").read_text()))
    d["model"]["descriptor"] = descriptor
    d["model"]["fitting_net"] = fitting
    tr = d["training"]
    tr.update(numb_steps=STEPS, save_freq=STEPS, disp_freq=STEPS)
    tr["training_data"]["systems"] = [str(HERE / "training" / "cuau" / "train" / s)
                                      for s in ("n32_x25", "n32_x50")]
    tr["training_data"]["batch_size"] = 1
    d["learning_rate"]["decay_steps"] = 5
    return d


SE_R = {"type": "se_e2_r", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8],
        "resnet_dt": False, "activation_function": "tanh", "seed": 3}
FIT_W = {"neuron": [8, 16, 16], "resnet_dt": True, "activation_function": "tanh", "seed": 3}
SE_A_EXCL = {"type": "se_e2_a", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8],
             "axis_neuron": 2, "exclude_types": [[0, 1]], "seed": 1}
ATTEN_V2 = {"type": "se_atten_v2", "sel": 60, "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8],
            "axis_neuron": 2, "attn_layer": 0, "type_one_side": True, "activation_function": "tanh", "seed": 4}
FIT = {"neuron": [8, 8], "resnet_dt": True, "seed": 5}

MODELS = {
    "22": {"tf22_cuau_se_e2_r_fitw": _input(SE_R, FIT_W),
           "tf22_cuau_se_atten_v2": _input(ATTEN_V2, dict(FIT, neuron=[24, 48, 48])),
           "tf22_cuau_se_e2_a_excl": _input(SE_A_EXCL, dict(FIT, neuron=[16, 16]))},
    "32": {"tf32_cuau_se_e2_r_fitw": _input(SE_R, FIT_W),
           "tf32_cuau_se_e2_a_cut": _input(dict(SE_A_EXCL, rcut=4.3, rcut_smth=0.3, exclude_types=[]), FIT)},
}


def _run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")


def refs(name: str, pb: Path) -> None:
    """DeePMD-kit's own energies/forces/virials of ``pb`` on the held-out configurations."""
    from deepmd.infer import DeepPot

    held = np.load(HERE / "refs" / "cuau_se_e2_a.npz")
    dp = DeepPot(str(pb))
    out = {"names": np.array(CONFS), "type_map": np.array(dp.get_type_map())}
    for c in CONFS:
        coord, box, atype = held[f"{c}/coord"], held[f"{c}/box"], held[f"{c}/atype"]
        out[f"{c}/coord"], out[f"{c}/box"], out[f"{c}/atype"] = coord, box, atype
        out.update(eval_outputs(dp, coord, box, atype, f"{c}/pb/"))
    np.savez(HERE / "refs" / f"{name}.npz", **out)


def train_freeze(version: str, inp: dict, target: Path) -> None:
    """``dp [--tf] train`` on ``inp`` and ``dp [--tf] freeze`` to ``target`` (version "22": DeePMD-kit 2.2)."""
    dp = shutil.which("dp", path=os.path.dirname(sys.executable)) or "dp"
    flag = [] if version == "22" else ["--tf"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "input.json").write_text(json.dumps(inp, indent=1))
        _run([dp, *flag, "train", "input.json"], work)
        _run([dp, *flag, "freeze", "-o", str(target)], work)


def main(version: str, names: list[str], models: dict | None = None, make_refs=None) -> None:
    """Train, freeze and reference the models of ``version`` (``names``: only those); another script's
    ``models`` and ``make_refs(name, pb)`` may stand in for this one's."""
    for name, inp in (models or MODELS)[version].items():
        if names and name not in names:
            continue
        target = HERE / "models" / "tf_graphs" / f"{name}.pb"
        train_freeze(version, inp, target)
        (make_refs or refs)(name, target)
        print(name, "done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
