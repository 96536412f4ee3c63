"""Regenerate the small PyTorch-backend test models tests/data/models/pt_*_{se_e2_r,se_e3,se_e2_a_tos,se_e2_a_excl,hybrid}.

Needs a Python environment with DeePMD-kit and torch (not the test environment, which has no torch):

    python -m venv /tmp/dpvenv && /tmp/dpvenv/bin/pip install "deepmd-kit==3.2.0" "torch==2.11.0"
    cd tests/data && /tmp/dpvenv/bin/python make_pt_models.py [name ...]

Also pt_cuau_se_e2_r-compress.pth (``dp --pt compress``) and a multi-task checkpoint, pt_cuau_multitask.ckpt.pt, with the .dp of its head CuAu_b.

For each model: train a few steps on tests/data/training/cuau (``dp --pt train``), freeze
(``dp --pt freeze`` -> NAME.pth), convert (``dp convert-backend NAME.pth NAME.dp``) and evaluate the
.pth with DeePMD-kit on the held-out configurations of refs/cuau_se_e2_a.npz (variant ``pth``, same
layout as refsuite3's references). The models are tiny and barely trained: they exist to check
that the reader lays out each descriptor as DeePMD-kit does, not to be good potentials. The
TorchScript debug members (code/**/*.debug_pkl, source paths of the machine that froze the model)
are dropped from the .pth, as in refsuite3.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from deepmd_refs import eval_outputs

HERE = Path(__file__).resolve().parent
STEPS = 20


def _input(descriptor: dict, fitting: dict) -> dict:
    base = json.loads((HERE / "training" / "input.json").read_text())
    d = copy.deepcopy(base)
    d["model"]["descriptor"] = descriptor
    d["model"]["fitting_net"] = fitting
    d["training"]["numb_steps"] = STEPS
    d["training"]["save_freq"] = STEPS
    d["training"]["disp_freq"] = STEPS
    d["training"]["training_data"]["systems"] = [
        str(HERE / "training" / s) for s in d["training"]["training_data"]["systems"]]
    d["learning_rate"]["decay_steps"] = 5
    return d


FIT = {"neuron": [16, 16], "resnet_dt": True, "activation_function": "tanh", "seed": 7}
MODELS = {
    "pt_cuau_se_e2_r": _input({"type": "se_e2_r", "sel": [72, 64], "rcut_smth": 0.5, "rcut": 6.0,
                               "neuron": [4, 8, 16], "activation_function": "gelu", "seed": 4}, FIT),
    "pt_cuau_se_e3": _input({"type": "se_e3", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5,
                             "neuron": [4, 8, 16], "activation_function": "tanh", "seed": 5}, FIT),
    # type_one_side true (one net per neighbour type) and, without it, an excluded type pair
    "pt_cuau_se_e2_a_tos": _input({"type": "se_e2_a", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5,
                                   "neuron": [4, 8, 16], "axis_neuron": 4, "type_one_side": True,
                                   "activation_function": "tanh", "seed": 8}, FIT),
    "pt_cuau_se_e2_a_excl": _input({"type": "se_e2_a", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5,
                                    "neuron": [4, 8, 16], "axis_neuron": 4, "type_one_side": False,
                                    "exclude_types": [[0, 1]], "activation_function": "tanh", "seed": 9}, FIT),
    "pt_cuau_hybrid": _input({"type": "hybrid", "list": [
        {"type": "se_e2_a", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8, 16],
         "axis_neuron": 4, "activation_function": "tanh", "seed": 6},
        {"type": "se_e2_r", "sel": [72, 64], "rcut_smth": 0.5, "rcut": 6.0, "neuron": [4, 8],
         "activation_function": "tanh", "seed": 6}]}, FIT),
}


def _multitask_input() -> dict:
    """Two heads sharing one se_e2_a descriptor (names resolved through shared_dict)."""
    train = HERE / "training" / "cuau" / "train"
    desc = {"type": "se_e2_a", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5, "neuron": [4, 8], "axis_neuron": 4,
            "seed": 1}
    fit = {"neuron": [8, 8], "resnet_dt": True, "seed": 1}
    loss = {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1}
    return {
        "model": {"shared_dict": {"my_type_map": ["Cu", "Au"], "my_descriptor": desc},
                  "model_dict": {
                      "CuAu_a": {"type_map": "my_type_map", "descriptor": "my_descriptor", "fitting_net": fit},
                      "CuAu_b": {"type_map": "my_type_map", "descriptor": "my_descriptor",
                                 "fitting_net": dict(fit, seed=2)}}},
        "learning_rate": {"type": "exp", "start_lr": 0.001, "stop_lr": 1e-05, "decay_steps": 5},
        "loss_dict": {"CuAu_a": loss, "CuAu_b": loss},
        "training": {"model_prob": {"CuAu_a": 0.5, "CuAu_b": 0.5},
                     "data_dict": {
                         "CuAu_a": {"training_data": {"systems": [str(train / "n32_x25"), str(train / "n32_x40")],
                                                      "batch_size": 1}},
                         "CuAu_b": {"training_data": {"systems": [str(train / "n32_x50"), str(train / "n32_x75")],
                                                      "batch_size": 1}}},
                     "numb_steps": 6, "save_freq": 6, "disp_freq": 6, "seed": 1},
    }


def _make_multitask(dp: str) -> None:
    """pt_cuau_multitask.ckpt.pt (a multi-task checkpoint) and pt_cuau_multitask_CuAu_b.dp, the
    tree of its head CuAu_b (dp --pt freeze --head CuAu_b, then dp convert-backend)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "input.json").write_text(json.dumps(_multitask_input(), indent=1))
        _run([dp, "--pt", "train", "input.json"], work)
        _run([dp, "--pt", "freeze", "--head", "CuAu_b", "-o", "b.pth"], work)
        _run([dp, "convert-backend", "b.pth", str(HERE / "models" / "pt_cuau_multitask_CuAu_b.dp")], work)
        shutil.copyfile(work / "model.ckpt-6.pt", HERE / "models" / "pt_cuau_multitask.ckpt.pt")


def _run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")


def _strip_debug(src: Path, dst: Path) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            if not item.filename.endswith(".debug_pkl"):
                zout.writestr(item, zin.read(item))


def _refs(name: str, pth: Path, variant: str = "pth", names: list[str] | None = None, relabel=None) -> None:
    """DeePMD-kit's DeepPot outputs of ``pth`` (any model file) on the held-out configurations ``names``
    (default: all) -> refs/NAME.npz, variant ``variant``; ``relabel(atype)`` may change the atom types
    first (they are stored with the references)."""
    from deepmd.infer import DeepPot

    held = np.load(HERE / "refs" / "cuau_se_e2_a.npz")
    names = names or [str(n) for n in held["names"]]
    dp = DeepPot(str(pth))
    type_map = held["type_map"] if relabel is None else np.array(dp.get_type_map())
    out = {"names": np.array(names), "type_map": type_map, "variants": np.array([variant])}
    out["model_type_map"] = np.array(dp.get_type_map())
    for c in names:
        for k in ("coord", "box", "atype", "min_dist"):
            if f"{c}/{k}" in held.files:
                out[f"{c}/{k}"] = held[f"{c}/{k}"]
        coord, atype = held[f"{c}/coord"], held[f"{c}/atype"]
        if relabel is not None:
            atype = out[f"{c}/atype"] = relabel(atype.copy())
        box = held[f"{c}/box"] if f"{c}/box" in held.files else None
        out.update(eval_outputs(dp, coord, box, atype, f"{c}/{variant}/"))
    np.savez(HERE / "refs" / f"{name}.npz", **out)


def train_freeze_convert(dp: str, name: str, config: dict, work: Path) -> None:
    """``dp --pt train`` on ``config``, freeze to models/NAME.pth (debug members dropped), convert to NAME.dp."""
    (work / "input.json").write_text(json.dumps(config, indent=1))
    _run([dp, "--pt", "train", "input.json"], work)
    _run([dp, "--pt", "freeze", "-o", "frozen.pth"], work)
    _strip_debug(work / "frozen.pth", HERE / "models" / f"{name}.pth")
    _run([dp, "convert-backend", str(HERE / "models" / f"{name}.pth"), str(HERE / "models" / f"{name}.dp")], work)


def main(names: list[str]) -> None:
    dp = shutil.which("dp", path=os.path.dirname(sys.executable)) or "dp"
    for name in names or [*MODELS, "pt_cuau_multitask"]:
        if name == "pt_cuau_multitask":
            _make_multitask(dp)
            print(name, "done")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            train_freeze_convert(dp, name, MODELS[name], work)
            _refs(name, HERE / "models" / f"{name}.pth")
            if name == "pt_cuau_se_e2_r":  # a model compressed by DeePMD-kit, which deepcomp refuses
                # (coarse tables: only its refusal is tested, so keep the file small)
                _run([dp, "--pt", "compress", "-i", str(HERE / "models" / f"{name}.pth"), "-o", "compressed.pth",
                      "-s", "0.1", "-e", "2"], work)
                _strip_debug(work / "compressed.pth", HERE / "models" / f"{name}-compress.pth")
        print(name, "done")


if __name__ == "__main__":
    main(sys.argv[1:])
