"""Regenerate the small fparam/aparam test models tests/data/models/fp_*.{pth,dp,pb} and refs/fp_*.npz.

Run once per DeePMD-kit environment (not the test environment):

    cd tests/data && /path/to/deepmd-3.2/bin/python make_fparam_models.py dp32
    cd tests/data && /path/to/deepmd-2.2/bin/python make_fparam_models.py dp22
    cd tests/data && /path/to/deepmd-3.2/bin/python make_fparam_models.py refs fp_tf22_f1a1

The last line re-evaluates the 2.2 graph with DeePMD-kit 3.2: DeePMD-kit 2.2.11's own ``DeepPot``
gives other energies for this graph as soon as the atomic parameters differ between atoms (with
the same aparam on every atom the two agree); 3.2's values are those of the fitting net as the
graph defines it, and deepcomp's.

The training systems are two of tests/data/training/cuau copied to a scratch folder with a
``fparam.npy`` (nframes x numb_fparam) and an ``aparam.npy`` (nframes x natoms * numb_aparam) of
seeded random values, so that the stored averages and inverse deviations are not 0 and 1. Each
model trains a few steps (tiny, barely trained: they check the input layout, not the physics),
is frozen, and evaluated by DeePMD-kit's DeepPot on three held-out configurations of
refs/cuau_se_e2_a.npz with seeded fparam/aparam (stored in the .npz with the results). A model
with ``default_fparam`` is also evaluated without fparam (``nofp/`` keys).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from deepmd_refs import eval_outputs
from make_pt_models import _run, _strip_debug  # the same commands and .pth clean-up

HERE = Path(__file__).resolve().parent
STEPS = 20
SYSTEMS = ("n32_x25", "n32_x50")
CONFIGS = ("p32_0", "p32_1", "p108_0")
DESC = {"type": "se_e2_a", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8, 16], "axis_neuron": 4,
        "activation_function": "tanh", "seed": 3}
FIT = {"neuron": [16, 16], "resnet_dt": True, "activation_function": "tanh", "seed": 7}

# name: (environment, backend flag, fitting extras); backend "tf" writes .pb, "pt" .pth (+ .dp)
MODELS = {
    "fp_pt_f2a1": ("dp32", "pt", {"numb_fparam": 2, "numb_aparam": 1}),
    "fp_pt_default": ("dp32", "pt", {"numb_fparam": 1, "default_fparam": [0.9]}),
    "fp_pt_mask": ("dp32", "pt", {"numb_aparam": 1, "use_aparam_as_mask": True}),
    "fp_pt_attn": ("dp32", "pt", {"numb_fparam": 1, "numb_aparam": 1}),
    "fp_tf_f2a1": ("dp32", "tf", {"numb_fparam": 2, "numb_aparam": 1}),
    "fp_tf_mask": ("dp32", "tf", {"numb_fparam": 1, "numb_aparam": 1, "use_aparam_as_mask": True}),
    "fp_tf22_f1a1": ("dp22", "tf", {"numb_fparam": 1, "numb_aparam": 1}),
}
ATTN = {"type": "se_atten_v2", "sel": 60, "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8], "axis_neuron": 4,
        "attn_layer": 0, "tebd_dim": 4, "activation_function": "tanh", "seed": 3}


def _data(root: Path, nfp: int, nap: int) -> list[str]:
    """Copies of the training systems with seeded fparam.npy / aparam.npy."""
    rng = np.random.default_rng(11)
    out = []
    for name in SYSTEMS:
        dst = root / name
        shutil.copytree(HERE / "training" / "cuau" / "train" / name, dst)
        nframes, natoms3 = np.load(dst / "set.000" / "coord.npy").shape
        if nfp:
            np.save(dst / "set.000" / "fparam.npy", rng.uniform(0.5, 1.5, (nframes, nfp)))
        if nap:
            np.save(dst / "set.000" / "aparam.npy", rng.uniform(-1.0, 1.0, (nframes, natoms3 // 3 * nap)))
        out.append(str(dst))
    return out


def _input(name: str, systems: list[str]) -> dict:
    base = json.loads((HERE / "training" / "input.json").read_text())
    d = copy.deepcopy(base)
    d["model"]["descriptor"] = dict(ATTN if name == "fp_pt_attn" else DESC)
    d["model"]["fitting_net"] = dict(FIT, **MODELS[name][2])
    tr = d["training"]
    tr.update(numb_steps=STEPS, save_freq=STEPS, disp_freq=STEPS)
    tr["training_data"] = {"systems": systems, "batch_size": 1}
    d["learning_rate"]["decay_steps"] = 5
    return d


def _refs(name: str, model: Path) -> None:
    from deepmd.infer import DeepPot

    nfp = int(MODELS[name][2].get("numb_fparam", 0))
    nap = int(MODELS[name][2].get("numb_aparam", 0))
    held = np.load(HERE / "refs" / "cuau_se_e2_a.npz")
    dp = DeepPot(str(model))
    rng = np.random.default_rng(5)
    out = {"names": np.array(CONFIGS), "model_type_map": np.array(dp.get_type_map()),
           "numb_fparam": nfp, "numb_aparam": nap}
    for c in CONFIGS:
        coord, atype, box = held[f"{c}/coord"], held[f"{c}/atype"], held[f"{c}/box"]
        fp = rng.uniform(0.5, 1.5, nfp) if nfp else None
        ap = rng.uniform(-1.0, 1.0, (len(atype), nap)) if nap else None
        out.update({f"{c}/coord": coord, f"{c}/box": box, f"{c}/atype": atype})
        if fp is not None:
            out[f"{c}/fparam"] = fp
        if ap is not None:
            out[f"{c}/aparam"] = ap
        runs = [("", fp)]
        if "default_fparam" in MODELS[name][2]:
            runs.append(("nofp/", None))
        for tag, fparam in runs:
            out.update(eval_outputs(dp, coord, box, atype, f"{c}/{tag}", fparam=fparam, aparam=ap))
    np.savez(HERE / "refs" / f"{name}.npz", **out)


def main(env: str, names: list[str]) -> None:
    if env == "refs":  # references only, with the DeePMD-kit running this script
        for name in names:
            _refs(name, HERE / "models" / f"{name}.{'pth' if MODELS[name][1] == 'pt' else 'pb'}")
        return
    dp = shutil.which("dp", path=os.path.dirname(sys.executable)) or "dp"
    for name in names or [n for n, m in MODELS.items() if m[0] == env]:
        backend = MODELS[name][1]
        extras = MODELS[name][2]
        flag = [] if env == "dp22" else [f"--{backend}"]
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            systems = _data(work / "data", int(extras.get("numb_fparam", 0)), int(extras.get("numb_aparam", 0)))
            (work / "input.json").write_text(json.dumps(_input(name, systems), indent=1))
            _run([dp, *flag, "train", "input.json"], work)
            models = HERE / "models"
            if backend == "pt":
                _run([dp, *flag, "freeze", "-o", "frozen.pth"], work)
                _strip_debug(work / "frozen.pth", models / f"{name}.pth")
                _run([dp, "convert-backend", str(models / f"{name}.pth"), str(models / f"{name}.dp")], work)
                _refs(name, models / f"{name}.pth")
            else:
                _run([dp, *flag, "freeze", "-o", str(models / f"{name}.pb")], work)
                if env == "dp32":  # the .dp DeePMD-kit makes of the graph (tests/test_pb_reader.py compares trees)
                    _run([dp, "convert-backend", str(models / f"{name}.pb"), str(models / f"{name}.dp")], work)
                _refs(name, models / f"{name}.pb")
        print(name, "done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
