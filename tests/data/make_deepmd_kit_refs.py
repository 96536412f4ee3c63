"""Copy test models of DeePMD-kit's own repository and their expected values into tests/data.

DeePMD-kit's repository holds, under source/tests/infer/:

* ``deeppot_sea.pth`` (se_e2_a, frozen by its PyTorch backend from a hand-written model definition
  without ``type_one_side``: the PyTorch default, true, applies) and ``deeppot_sea.yaml`` (the same
  model, backend-neutral), with expected values in ``deeppot-testcase.yaml``;
* ``deeppot-r.yaml`` (se_e2_r, backend-neutral), with expected values in ``deeppot-r-testcase.yaml``.

This copies the models to models/ and the expected atomic energies, forces and atomic virials of
their three structures (without intermediate descriptor/fitting values) to
refs/<testcase>.json:

    python make_deepmd_kit_refs.py /path/to/deepmd-kit/source/tests/infer

The files used here came from deepmd-kit commit bc902daf747d93c5d7314338d287fd2dd0a7e32c.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CASES = {"deeppot-testcase.yaml": ("deeppot_sea.pth", "deeppot_sea.yaml"), "deeppot-r-testcase.yaml": ("deeppot-r.yaml",)}
ARRAYS = ("coord", "atomic_energy", "force", "atomic_virial")


def _numbers(values):
    return None if values is None else [float(v) for v in values]


def main(infer: Path) -> None:
    for testcase, models in CASES.items():
        for name in models:
            shutil.copyfile(infer / name, HERE / "models" / name)
        case = yaml.safe_load((infer / testcase).read_text())
        results = [{"atype": [int(t) for t in r["atype"]], "box": _numbers(r["box"]),
                    **{k: _numbers(r[k]) for k in ARRAYS}} for r in case["results"]]
        out = {"source": f"deepmd-kit source/tests/infer/{testcase}", "models": list(models),
               "type_map": case["type_map"], "results": results}
        (HERE / "refs" / testcase.replace(".yaml", ".json")).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
