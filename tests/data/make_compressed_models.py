"""Regenerate the small DeePMD-kit-compressed test models tests/data/models/{tf32,tf22,dp32}_*-compress.{pb,dp}.

Needs DeePMD-kit environments (not the test environment): 3.2.0 for the ``tf32_*`` models (TensorFlow)
and ``dp32_*`` (``dp --dp compress`` of a committed PyTorch model's .dp), 2.2.x (TensorFlow) for the
``tf22_*`` ones:

    cd tests/data && /path/to/dp32/bin/python make_compressed_models.py tf32
    cd tests/data && /path/to/dp22/bin/python make_compressed_models.py tf22
    cd tests/data && /path/to/dp32/bin/python make_compressed_models.py refs32:tf22_cuau_se_e2_a-compress.pb \
        refs32:tf22_cuau_se_e2_r-compress.pb
    cd tests/data && /path/to/dp32/bin/python make_compressed_models.py dp32:pt_cuau_se_e2_r
    cd tests/data && /path/to/dp32/bin/python make_compressed_models.py refs:pt_cuau_se_e2_r-compress.pth

(``refs:*.pth`` needs DeePMD-kit's PyTorch ops, i.e. the torch version the deepmd-kit wheel was built
with; they did not load where these files were made, so the compressed .pth of the tests is
pt_cuau_se_e2_r-compress.pth from make_pt_models.py, checked against DeePMD-kit's uncompressed outputs.)

For each model: train a few steps on tests/data/training/cuau, freeze, compress with
``dp compress -s 0.1 -e 2`` (coarse steps keep the files small; a short extrapolated range lets
the overflow configuration leave the tables), and evaluate the *compressed* file with DeePMD-kit's
DeepPot on five held-out configurations of refs/cuau_se_e2_a.npz (variant ``compress``), among them
``overflow_0.30A``, whose closest pair lies beyond the tables. The models are tiny and barely
trained: they exist to check that deepcomp reads DeePMD-kit's tables and evaluates them as
DeePMD-kit does.
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
from make_pt_models import _refs as _deepmd_refs
from make_pt_models import _run, _strip_debug

HERE = Path(__file__).resolve().parent
STEPS = 10
CONFS = ["p32_0", "p108_0", "cluster55", "stretched_1.08A", "overflow_0.30A"]
STEP, EXTRAPOLATE = "0.1", "2"

FIT = {"neuron": [12, 12], "resnet_dt": True, "activation_function": "tanh", "seed": 7}
SE_A = {"type": "se_e2_a", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8], "axis_neuron": 4,
        "activation_function": "tanh", "seed": 3}
SE_R = {"type": "se_e2_r", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8],
        "activation_function": "tanh", "seed": 4}
SE_T = {"type": "se_e3", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8],
        "activation_function": "tanh", "seed": 5}
ATTN = {"type": "se_atten_v2", "sel": 76, "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8], "axis_neuron": 4,
        "attn_layer": 0, "activation_function": "tanh", "seed": 6}
DESCRIPTORS = {
    "se_e2_a": SE_A,
    "se_e2_a_tos_excl": dict(SE_A, type_one_side=True, exclude_types=[[0, 1]], seed=8),
    "se_e2_r": SE_R,
    "se_e3": SE_T,
    "se_atten_v2": ATTN,
    "hybrid": {"type": "hybrid", "list": [SE_A, dict(SE_R, rcut=4.0, rcut_smth=2.0)]},
}
SETS = {
    "tf32": ("tf", ["se_e2_a", "se_e2_a_tos_excl", "se_e2_r", "se_e3", "se_atten_v2", "hybrid"]),
    "tf22": ("tf", ["se_e2_a", "se_e2_r"]),
}


def _input(descriptor: dict) -> dict:
    d = copy.deepcopy(json.loads((HERE / "training" / "input.json").read_text()))
    d["model"]["descriptor"] = copy.deepcopy(descriptor)
    d["model"]["fitting_net"] = dict(FIT)
    d["training"].update(numb_steps=STEPS, save_freq=STEPS, disp_freq=STEPS)
    d["training"]["training_data"]["systems"] = [
        str(HERE / "training" / s) for s in d["training"]["training_data"]["systems"]][4:]
    d["training"]["training_data"]["batch_size"] = 1
    d["learning_rate"]["decay_steps"] = 5
    return d


def _refs(name: str, model: Path) -> None:
    _deepmd_refs(name, model, "compress", CONFS)


def make(tag: str, desc: str, dp: str) -> None:
    backend = SETS[tag][0]
    ext = "pb" if backend == "tf" else "pth"
    name = f"{tag}_cuau_{desc}-compress"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "input.json").write_text(json.dumps(_input(DESCRIPTORS[desc]), indent=1))
        flag = [] if tag == "tf22" else [f"--{backend}"]
        _run([dp, *flag, "train", "input.json"], work)
        _run([dp, *flag, "freeze", "-o", f"frozen.{ext}"], work)
        _run([dp, *flag, "compress", "-i", f"frozen.{ext}", "-o", f"compressed.{ext}", "-s", STEP,
              "-e", EXTRAPOLATE], work)
        target = HERE / "models" / f"{name}.{ext}"
        if ext == "pth":
            _strip_debug(work / "compressed.pth", target)
        else:
            shutil.copyfile(work / "compressed.pb", target)
        _refs(name, target)
    print(name, "done", target.stat().st_size, flush=True)


def add_refs(model: str, variant: str) -> None:
    """Add DeePMD-kit's outputs of models/MODEL, evaluated by *this* DeePMD-kit, to refs/MODEL-stem.npz as
    ``variant`` (a 2.2 graph evaluated by 3.2, which continues the tables past their ends where 2.2 clamps)."""
    from deepmd.infer import DeepPot

    path = HERE / "refs" / f"{Path(model).stem}.npz"
    out = dict(np.load(path))
    dp = DeepPot(str(HERE / "models" / model))
    for c in CONFS:
        box = out[f"{c}/box"].reshape(1, 9) if f"{c}/box" in out else None
        e, f, v, ae, av = dp.eval(out[f"{c}/coord"].reshape(1, -1), box, out[f"{c}/atype"], atomic=True)
        out.update({f"{c}/{variant}/energy": np.float64(e.ravel()[0]), f"{c}/{variant}/force": f.reshape(-1, 3),
                    f"{c}/{variant}/virial": v.reshape(3, 3), f"{c}/{variant}/atom_energy": ae.ravel(),
                    f"{c}/{variant}/atom_virial": av.reshape(-1, 9)})
    out["variants"] = np.array(sorted(set(out["variants"].tolist()) | {variant}))
    np.savez(path, **out)


def make_dp(src: str, dp: str) -> None:
    """``dp --dp compress`` of a committed .dp (the backend-neutral layout PyTorch shares): DeePMD-kit's
    NumPy DeepPot gives energies only (its forces are NaN)."""
    from deepmd.dpmodel.utils.serialization import load_dp_model, save_dp_model

    name = f"dp32_{src.split('_', 1)[1]}-compress"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        d = load_dp_model(str(HERE / "models" / f"{src}.dp"))
        # dp --dp compress reads min_nbor_dist from the top level only, a converted .dp has it in @variables
        d["min_nbor_dist"] = float(d["@variables"]["min_nbor_dist"])
        save_dp_model(str(work / "in.dp"), d)
        target = HERE / "models" / f"{name}.dp"
        _run([dp, "--dp", "compress", "-i", "in.dp", "-o", str(target), "-s", STEP, "-e", EXTRAPOLATE], work)
        _refs(name, target)
    print(name, "done", target.stat().st_size, flush=True)


def main(args: list[str]) -> None:
    dp = shutil.which("dp", path=os.path.dirname(sys.executable)) or "dp"
    for arg in args:
        tag, _, only = arg.partition(":")
        if tag == "dp32":  # dp32:pt_cuau_se_e2_r compresses models/pt_cuau_se_e2_r.dp
            make_dp(only, dp)
            continue
        if tag == "refs32":  # refs32:tf22_cuau_se_e2_a-compress.pb, run with DeePMD-kit 3.2
            add_refs(only, "compress_dp32")
            continue
        if tag == "refs":  # references only, for a compressed model already in models/ (e.g. made by make_pt_models.py)
            _refs(Path(only).stem, HERE / "models" / only)
            continue
        for desc in ([only] if only else SETS[tag][1]):
            make(tag, desc, dp)


if __name__ == "__main__":
    main(sys.argv[1:])
