"""Models of the DeePMD-kit compression tests ported in tests/deepmd_suite/test_tf_model_compression.py.

Run with the Python of a DeePMD-kit 3.2 environment (TensorFlow backend), given a checkout of
github.com/deepmodeling/deepmd-kit:

    cd tests/data && /path/to/deepmd-3.2.0/bin/python make_deepmd_compress_suite.py /path/to/deepmd-kit

As source/tests/tf/test_model_compression_{se_a,se_r,se_a_type_one_side_exclude_types}.py make
them: its model_compression/input.json (and data) with the test's changes to the descriptor, ``dp train``
(1 step), ``dp freeze``, ``dp compress -s 0.1`` (the tests' default step, 0.01, makes graphs of 3 to 16 MB
here; 0.1 keeps them under 1 MB; se_t and se_a with exclude_types [[0, 1]] are left out for size, the
refsuite's compressed se_e3 and exclude-types graphs cover them). Written: the compressed graphs
models/tf_graphs/deepmd_compress_<variant>.pb and refs/deepmd_suite/compress.npz with, for each variant
and each configuration of the tests (``pbc``: 13 A box; ``nopbc``; ``largebox``: 19x13x13 box),
DeePMD-kit's ``DeepPot`` outputs of the original graph (``<variant>/<conf>/original/...``) and of the
compressed one (``.../compressed/...``): energy, force, virial, atom_energy, atom_virial.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COORD = np.array([12.83, 2.56, 2.18, 12.09, 2.87, 2.74, 00.25, 3.32, 1.68,
                  3.36, 3.00, 1.81, 3.51, 2.51, 2.60, 4.27, 3.22, 1.56])
ATYPE = [0, 1, 1, 0, 1, 1]
CONFS = {"pbc": np.diag([13.0, 13.0, 13.0]).ravel(), "nopbc": None, "largebox": np.diag([19.0, 13.0, 13.0]).ravel()}
SE_R = {"type": "se_e2_r", "sel": [46, 92], "rcut_smth": 0.5, "rcut": 6.0, "neuron": [5, 10, 20],
        "resnet_dt": False, "seed": 1}
STEP = 0.1
VARIANTS = {  # name: change to the descriptor of input.json (the tests' own)
    "se_a": lambda d: d,
    "se_a_type_one_side_exclude_types": lambda d: {**d, "type_one_side": True, "exclude_types": [[0, 0]]},
    "se_r": lambda d: dict(SE_R),
}


def run(*args, cwd):
    env = dict(os.environ, DP_BACKEND="tensorflow")
    subprocess.run([str(Path(sys.executable).parent / "dp"), "--tf", *args], cwd=cwd, check=True, env=env)


def outputs(dp, box) -> dict:
    e, f, v, ae, av = dp.eval(COORD.reshape(1, -1), None if box is None else box.reshape(1, -1), ATYPE, atomic=True)
    return {"energy": np.ravel(e)[0], "force": f.reshape(-1, 3), "virial": v.reshape(3, 3),
            "atom_energy": ae.reshape(-1), "atom_virial": av.reshape(-1, 9)}


def main(checkout: str) -> None:
    from deepmd.infer import DeepPot

    src = Path(checkout) / "source" / "tests" / "tf" / "model_compression"
    out = {}
    for name, change in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            shutil.copytree(src / "data", work / "data")
            jdata = json.loads((src / "input.json").read_text())
            jdata["model"]["descriptor"] = change(jdata["model"]["descriptor"])
            for key in ("training_data", "validation_data"):
                jdata["training"][key]["systems"] = str(work / "data")
            (work / "input.json").write_text(json.dumps(jdata, indent=1))
            run("train", "input.json", cwd=work)
            run("freeze", "-o", "original.pb", cwd=work)
            target = HERE / "models" / "tf_graphs" / f"deepmd_compress_{name}.pb"
            run("compress", "-i", "original.pb", "-o", str(target), "-s", str(STEP), cwd=work)
            for which, path in (("original", work / "original.pb"), ("compressed", target)):
                dp = DeepPot(str(path))
                for conf, box in CONFS.items():
                    for key, value in outputs(dp, box).items():
                        out[f"{name}/{conf}/{which}/{key}"] = value
    out.update(coord=COORD.reshape(-1, 3), atype=np.array(ATYPE))
    for conf, box in CONFS.items():
        out[f"box/{conf}"] = np.zeros(0) if box is None else box.reshape(3, 3)
    np.savez(HERE / "refs" / "deepmd_suite" / "compress.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1])
