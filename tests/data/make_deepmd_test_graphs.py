"""Turn DeePMD-kit's own test graphs into the .pb files tests/data/models/tf_graphs/deepmd_*.pb.

Run with the Python of a DeePMD-kit 3.2 environment (TensorFlow backend), given a checkout of
github.com/deepmodeling/deepmd-kit (the graphs are its source/tests/infer/*.pbtxt and
deeppot_sea.yaml):

    cd tests/data && /path/to/deepmd-3.2.0/bin/python make_deepmd_test_graphs.py /path/to/deepmd-kit

Graphs made:

* ``deepmd_deeppot.pb``, ``deepmd_deeppot-r.pb``: se_e2_a and se_e2_r graphs (model version 1.1)
  without a training script; deepcomp rebuilds their settings from the graph.
* ``deepmd_sea_012-v2.pb``: ``sea_012.pbtxt`` (frozen by DeePMD-kit 0.12) upgraded by
  ``dp convert-from 0.12``; no training script, no type map, a 0.12 layout: refused.
* ``deepmd_deeppot_sea.pb``: ``dp convert-backend deeppot_sea.yaml deeppot_sea.pb`` (one-side
  embedding nets, no ``type_one_side`` key in its script).
* ``deepmd_se_e2_a_tebd.pb``: se_e2_a with a type embedding.
* ``deepmd_se_atten_no_atten_1.pb``, ``deepmd_se_atten_no_atten_2.pb``: se_atten (concat type embedding,
  attn_layer 0), model version 1.1, the two models of DeePMD-kit's source/tests/tf/test_model_devi_mix.py.

References (refs/deepmd_graphs.npz): DeePMD-kit's ``DeepPot`` on the 6-atom water configuration
of its tests (source/tests/infer/*-testcase.yaml, first block: 13 A cubic box), keys
``NAME/{energy,force,virial,atom_energy,atom_virial}`` and ``coord``, ``box``, ``atype``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from deepmd_refs import eval_outputs

HERE = Path(__file__).resolve().parent
COORD = np.array([12.83, 2.56, 2.18, 12.09, 2.87, 2.74, 00.25, 3.32, 1.68,
                  3.36, 3.00, 1.81, 3.51, 2.51, 2.60, 4.27, 3.22, 1.56])
ATYPE = np.array([0, 1, 1, 0, 1, 1])
BOX = np.array([13.0, 0.0, 0.0, 0.0, 13.0, 0.0, 0.0, 0.0, 13.0])
EVALUATED = ("deeppot", "deeppot-r", "deeppot_sea", "se_atten_no_atten_1", "se_atten_no_atten_2")


def pbtxt_to_pb(src: Path, dst: Path) -> None:
    from google.protobuf import text_format
    from tensorflow.core.framework import graph_pb2

    graph = text_format.Parse(src.read_text(), graph_pb2.GraphDef())
    dst.write_bytes(graph.SerializeToString())


def main(checkout: str) -> None:
    infer = Path(checkout) / "source" / "tests" / "infer"
    models = HERE / "models" / "tf_graphs"
    dp = str(Path(sys.executable).parent / "dp")
    for name in ("deeppot", "deeppot-r", "se_e2_a_tebd", "se_atten_no_atten_1", "se_atten_no_atten_2"):
        pbtxt_to_pb(infer / f"{name}.pbtxt", models / f"deepmd_{name}.pb")
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "sea_012.pb"
        pbtxt_to_pb(infer / "sea_012.pbtxt", old)
        subprocess.run([dp, "convert-from", "0.12", "-i", str(old), "-o", str(models / "deepmd_sea_012-v2.pb")],
                       check=True)
    subprocess.run([dp, "convert-backend", str(infer / "deeppot_sea.yaml"), str(models / "deepmd_deeppot_sea.pb")],
                   check=True, env=dict(os.environ, DP_BACKEND="tensorflow"))

    from deepmd.infer import DeepPot

    out = {"coord": COORD.reshape(-1, 3), "box": BOX.reshape(3, 3), "atype": ATYPE}
    for name in EVALUATED:
        out.update(eval_outputs(DeepPot(str(models / f"deepmd_{name}.pb")), COORD, BOX, ATYPE, f"{name}/"))
    np.savez(HERE / "refs" / "deepmd_graphs.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1])
