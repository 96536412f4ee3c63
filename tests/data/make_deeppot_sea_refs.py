"""Copy DeePMD-kit's own se_e2_a test model and its expected values into tests/data.

DeePMD-kit's repository holds, under source/tests/infer/, ``deeppot_sea.pth`` (frozen by its
PyTorch backend, from a hand-written model definition without ``type_one_side``: the PyTorch
default, true, applies), ``deeppot_sea.yaml`` (the same model, backend-neutral) and
``deeppot-testcase.yaml`` (DeePMD-kit's expected atomic energies, forces and atomic virials of
three structures). This copies the two models to models/ and the expected values, without the
intermediate descriptor/fitting values, to refs/deeppot_sea_testcase.json:

    python make_deeppot_sea_refs.py /path/to/deepmd-kit/source/tests/infer

The files used here came from deepmd-kit commit bc902daf747d93c5d7314338d287fd2dd0a7e32c.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KEYS = ("coord", "atype", "box", "atomic_energy", "force", "atomic_virial")


def main(infer: Path) -> None:
    for name in ("deeppot_sea.pth", "deeppot_sea.yaml"):
        shutil.copyfile(infer / name, HERE / "models" / name)
    case = yaml.safe_load((infer / "deeppot-testcase.yaml").read_text())
    out = {"source": "deepmd-kit source/tests/infer/deeppot-testcase.yaml", "type_map": case["type_map"],
           "results": [{k: r[k] for k in KEYS} for r in case["results"]]}
    (HERE / "refs" / "deeppot_sea_testcase.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
