"""Regenerate the small TensorFlow-backend test model tests/data/models/tf_graphs/tf_cuau_se_e2_a_excl.{pb,dp}.

se_e2_a with an excluded type pair and softplus embedding nets: TensorFlow zeroes an excluded
pair's whole block (padding slots included), while PyTorch/dpmodel put its padding slots through
the pair's net (softplus(0) != 0, so the two differ). Needs DeePMD-kit with TensorFlow:

    cd tests/data && /path/to/python make_tf_excl_model.py

Trains a few steps on tests/data/training/cuau (``dp --tf train``), freezes (``dp --tf freeze``),
converts (``dp convert-backend NAME.pb NAME.dp``) and evaluates the .pb with DeePMD-kit's DeepPot on
the held-out configurations of refs/cuau_se_e2_a.npz (variant ``pb``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from make_pt_models import FIT, HERE, _input, _run

MODELS = {
    "tf_cuau_se_e2_a_excl": _input({"type": "se_e2_a", "sel": [40, 36], "rcut_smth": 0.5, "rcut": 4.5,
                                    "neuron": [4, 8, 16], "axis_neuron": 4, "type_one_side": False,
                                    "exclude_types": [[0, 1]], "activation_function": "softplus", "seed": 10},
                                   FIT),
}


def _refs(name: str, pb: Path) -> None:
    from deepmd.infer import DeepPot

    held = np.load(HERE / "refs" / "cuau_se_e2_a.npz")
    names = [str(n) for n in held["names"]]
    out = {"names": np.array(names), "type_map": held["type_map"], "variants": np.array(["pb"])}
    dp = DeepPot(str(pb))
    for c in names:
        for k in ("coord", "box", "atype", "min_dist"):
            if f"{c}/{k}" in held.files:
                out[f"{c}/{k}"] = held[f"{c}/{k}"]
        box = held[f"{c}/box"].reshape(1, 9) if f"{c}/box" in held.files else None
        e, f, v, ae, av = dp.eval(held[f"{c}/coord"].reshape(1, -1), box, held[f"{c}/atype"], atomic=True)
        out[f"{c}/pb/energy"] = np.float64(e.ravel()[0])
        out[f"{c}/pb/force"] = f.reshape(-1, 3)
        out[f"{c}/pb/virial"] = v.reshape(3, 3)
        out[f"{c}/pb/atom_energy"] = ae.ravel()
        out[f"{c}/pb/atom_virial"] = av.reshape(-1, 9)
    np.savez(HERE / "refs" / f"{name}.npz", **out)


def main(names: list[str]) -> None:
    dp = shutil.which("dp", path=os.path.dirname(sys.executable)) or "dp"
    for name in names or list(MODELS):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            # relative data paths: the graph stores its training script, which must not name this machine
            script = MODELS[name]
            script["training"]["training_data"]["systems"] = [
                str(Path(s).relative_to(HERE / "training")) for s in script["training"]["training_data"]["systems"]]
            (work / "cuau").symlink_to(HERE / "training" / "cuau")
            (work / "input.json").write_text(json.dumps(script, indent=1))
            _run([dp, "--tf", "train", "input.json"], work)
            _run([dp, "--tf", "freeze", "-o", str(HERE / "models" / "tf_graphs" / f"{name}.pb")], work)
            _run([dp, "convert-backend", str(HERE / "models" / "tf_graphs" / f"{name}.pb"), str(HERE / "models" / "tf_graphs" / f"{name}.dp")], work)
            _refs(name, HERE / "models" / "tf_graphs" / f"{name}.pb")
        print(name, "done")


if __name__ == "__main__":
    main(sys.argv[1:])
