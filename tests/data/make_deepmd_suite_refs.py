"""Expected values and models of the DeePMD-kit tests ported in tests/deepmd_suite/.

Run with the Python of a DeePMD-kit 3.2 environment (TensorFlow backend, dpdata), given a checkout
of github.com/deepmodeling/deepmd-kit (the ports were made against commit bc902daf7 of its master
branch, 2026; the files read are unchanged since 3.1):

    cd tests/data && /path/to/deepmd-3.2.0/bin/python make_deepmd_suite_refs.py /path/to/deepmd-kit \
        [/path/to/deepmd-kit-v2.2.11]

Nothing is computed here for the LAMMPS ports: their expected values are the literal arrays of
DeePMD-kit's test modules, read with ``ast`` (no code of them is run) and written as they are to
refs/deepmd_suite/<module>.json. Written:

* ``test_lammps.json``, ``test_lammps_pt.json``, ``test_lammps_3types.json``, ``test_lammps_faparam.json``:
  the module-level ``expected_*``, ``box``, ``coord``, ``type_OH``, ``type_HO`` of
  source/lmp/tests/<module>.py (those it has).
* ``test_model_devi.json``: source/tests/tf/test_model_devi.py's expected rows (``expect``, the
  real-error row) and the system its ``gen_data()`` writes (coordinates, box, types: made by running
  source/tests/tf/common.py's ``gen_data`` in a scratch directory, with a stand-in for dpdata's writer).
* ``test_deeppot_a_v2.2.11.json``, ``test_deeppot_r_v2.2.11.json`` (with a checkout of tag v2.2.11 as second
  argument): the set-up (coordinates, types, box) and expected arrays of source/tests/test_deeppot_a.py's
  TestDeepPotAPBC, TestDeepPotANoPBC, TestDeepPotALargeBoxNoPBC and test_deeppot_r.py's counterparts, for
  deeppot.pbtxt and deeppot-r.pbtxt (unchanged since).
* ``test_transfer.json``: source/tests/tf/test_transfer.py's expected arrays (TestTransform).
* ``fparam_aparam-testcase.json``: source/tests/infer/fparam_aparam-testcase.yaml as JSON.

Models (models/tf_graphs/): ``deepmd_deeppot-1.pb`` (source/tests/infer/deeppot-1.pbtxt, the second
model of DeePMD-kit's model-deviation tests), ``deepmd_deeppot-r-yaml.pb`` (``dp convert-backend
deeppot-r.yaml``, as source/tests/infer/case.py makes the .pb of the se_e2_r case) and
``deepmd_fparam_aparam.pb`` (source/tests/infer/fparam_aparam.pbtxt, the model of test_lammps_faparam.py),
``deepmd_fparam_aparam-yaml.pb`` (``dp convert-backend fparam_aparam.yaml``: the model of
fparam_aparam-testcase.yaml, copied to models/fparam_aparam.yaml too), ``deepmd_transfer.pb`` (``dp transfer
-O deeppot.pb -r deeppot-1.pb``, as test_transfer.py makes it). The .pb files equal the committed
ones as graphs; their bytes may differ (protobuf map order).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
OUT = HERE / "refs" / "deepmd_suite"
GRAPHS = HERE / "models" / "tf_graphs"
LAMMPS_NAMES = ("expected_ae", "expected_f", "expected_f2", "expected_v", "expected_v2", "box", "coord",
                "type_OH", "type_HO")


def literal(node: ast.AST):
    """The value of ``np.array([...])``, ``-np.array(...)`` and ``.reshape(...)`` of them."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -literal(node.operand)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "array":
            return np.array(ast.literal_eval(node.args[0]), dtype=float)
        if node.func.attr == "reshape":
            return literal(node.func.value).reshape([ast.literal_eval(a) for a in node.args])
    raise ValueError(f"not a literal array: {ast.dump(node)[:200]}")


def module_arrays(path: Path, names=LAMMPS_NAMES) -> dict:
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in names:
                out[node.targets[0].id] = literal(node.value).tolist()
    return out


def class_arrays(path: Path, cls_name: str) -> dict:
    """What a test class sets up: its ``cls.``/``self.`` ``expected_*`` arrays, ``coords``, ``atype``,
    ``box`` (None where it sets None), ``fparam``, ``aparam``."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    out = {}
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            name = node.targets[0].attr
            if name.startswith("expected_") or name in ("coords", "atype", "box"):
                try:
                    value = literal(node.value).tolist()
                except ValueError:
                    value = ast.literal_eval(node.value)
                out[name] = value
    return out


DEEPPOT_22 = {"test_deeppot_a": ("TestDeepPotAPBC", "TestDeepPotANoPBC", "TestDeepPotALargeBoxNoPBC"),
              "test_deeppot_r": ("TestDeepPotRPBC", "TestDeepPotRNoPBC", "TestDeepPotRLargeBoxNoPBC")}


def model_devi_expected(path: Path) -> dict:
    """``self.expect`` and the real-error row of TestMakeModelDevi."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TestMakeModelDevi")
    out = {}
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute) \
                and node.targets[0].attr == "expect":
            out["expect"] = literal(node.value).tolist()
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_make_model_devi_real"):
            call = next(c for c in ast.walk(node) if isinstance(c, ast.Call)
                        and getattr(c.func, "attr", "") == "assert_allclose")
            out["expect_real_error"] = literal(call.args[1]).tolist()
    return out


class _System:
    """Stands in for ``dpdata.LabeledSystem`` in ``gen_data`` (only its data are wanted)."""

    def __init__(self):
        self.data = {}

    def to_deepmd_npy(self, folder, prec=np.float64):
        Path(folder, "set.000").mkdir(parents=True)
        nframes = len(self.data["coords"])
        np.save(Path(folder, "set.000", "coord.npy"), np.reshape(self.data["coords"], (nframes, -1)).astype(prec))
        np.save(Path(folder, "set.000", "box.npy"), np.reshape(self.data["cells"], (nframes, 9)).astype(prec))
        np.savetxt(Path(folder, "type.raw"), self.data["atom_types"], fmt="%d")


def model_devi_system(checkout: Path) -> dict:
    sys.modules.setdefault("dpdata", types.SimpleNamespace(LabeledSystem=_System))
    spec = importlib.util.spec_from_file_location("dp_tf_common", checkout / "source/tests/tf/common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            common.gen_data()
            return {"coord": np.load("system/set.000/coord.npy").tolist(),
                    "box": np.load("system/set.000/box.npy").tolist(),
                    "atype": np.loadtxt("system/type.raw", dtype=int).tolist(), "type_map": ["O", "H"]}
        finally:
            os.chdir(cwd)


def pbtxt_to_pb(src: Path, dst: Path) -> None:
    from google.protobuf import text_format
    from tensorflow.core.framework import graph_pb2

    dst.write_bytes(text_format.Parse(src.read_text(), graph_pb2.GraphDef()).SerializeToString())


def main(checkout: str, checkout_22: str | None = None) -> None:
    root = Path(checkout)
    if checkout_22:  # the classes moved to infer/test_models.py in 3.0; 2.2.11 states their values
        for module, classes in DEEPPOT_22.items():
            data = {c: class_arrays(Path(checkout_22) / "source/tests" / f"{module}.py", c) for c in classes}
            data["source"] = f"deepmd-kit v2.2.11 source/tests/{module}.py"
            (OUT / f"{module}_v2.2.11.json").write_text(json.dumps(data, indent=1))
    OUT.mkdir(parents=True, exist_ok=True)
    for module in ("test_lammps", "test_lammps_pt", "test_lammps_3types", "test_lammps_faparam"):
        data = module_arrays(root / "source/lmp/tests" / f"{module}.py")
        data["source"] = f"deepmd-kit source/lmp/tests/{module}.py"
        (OUT / f"{module}.json").write_text(json.dumps(data, indent=1))
    devi = model_devi_expected(root / "source/tests/tf/test_model_devi.py")
    devi.update(model_devi_system(root), source="deepmd-kit source/tests/tf/test_model_devi.py")
    (OUT / "test_model_devi.json").write_text(json.dumps(devi, indent=1))
    transfer = class_arrays(root / "source/tests/tf/test_transfer.py", "TestTransform")
    transfer["source"] = "deepmd-kit source/tests/tf/test_transfer.py"
    (OUT / "test_transfer.json").write_text(json.dumps(transfer, indent=1))
    case = yaml.safe_load((root / "source/tests/infer/fparam_aparam-testcase.yaml").read_text())
    case["source"] = "deepmd-kit source/tests/infer/fparam_aparam-testcase.yaml"
    (OUT / "fparam_aparam-testcase.json").write_text(json.dumps(case, indent=1))

    infer = root / "source/tests/infer"
    pbtxt_to_pb(infer / "deeppot-1.pbtxt", GRAPHS / "deepmd_deeppot-1.pb")
    pbtxt_to_pb(infer / "fparam_aparam.pbtxt", GRAPHS / "deepmd_fparam_aparam.pb")
    dp = str(Path(sys.executable).parent / "dp")
    with tempfile.TemporaryDirectory() as tmp:  # test_transfer.py: deeppot-1's weights into deeppot's graph
        old, raw = Path(tmp) / "old.pb", Path(tmp) / "raw.pb"
        pbtxt_to_pb(infer / "deeppot.pbtxt", old)
        pbtxt_to_pb(infer / "deeppot-1.pbtxt", raw)
        subprocess.run([dp, "--tf", "transfer", "-O", str(old), "-r", str(raw), "-o", str(GRAPHS / "deepmd_transfer.pb")],
                       check=True)
    subprocess.run([dp, "convert-backend", str(infer / "deeppot-r.yaml"), str(GRAPHS / "deepmd_deeppot-r-yaml.pb")],
                   check=True, env=dict(os.environ, DP_BACKEND="tensorflow"))
    shutil.copyfile(infer / "fparam_aparam.yaml", HERE / "models" / "fparam_aparam.yaml")
    subprocess.run([dp, "convert-backend", str(infer / "fparam_aparam.yaml"),
                    str(GRAPHS / "deepmd_fparam_aparam-yaml.pb")], check=True, env=dict(os.environ, DP_BACKEND="tensorflow"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
