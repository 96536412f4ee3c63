"""Port of DeePMD-kit's source/tests/tf/test_model_devi_mix.py (TestMakeModelDeviMix).

Models: its se_atten_no_atten_1.pbtxt and se_atten_no_atten_2.pbtxt (se_atten with a concat type
embedding and no attention layer, frozen by DeePMD-kit 2.x, model version 1.1) as .pb
(tests/data/make_deepmd_test_graphs.py). System: its ``gen_data()`` frame (as in test_tf_model_devi.py)
twice; the mixed-type variant swaps the types of the first and the last atom in the second frame
(``set.000/real_atom_types.npy``). Expected rows: the test's, to its 6 places.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepcomp_ase.cli import main
from deepcomp_ase.ensemble import model_devi_frames
from deepcomp_ase.potential import DeepPotential

DATA = Path(__file__).resolve().parents[1] / "data"
GRAPHS = DATA / "models" / "tf_graphs"
MODELS = [GRAPHS / "deepmd_se_atten_no_atten_1.pb", GRAPHS / "deepmd_se_atten_no_atten_2.pb"]
REF = json.loads((DATA / "refs" / "deepmd_suite" / "test_model_devi.json").read_text())
FREQ = 10
# DeePMD-kit's expected rows: step, max/min/avg devi_v, max/min/avg devi_f, devi_e
EXPECT = np.array([
    [0, 1.83881698e-01, 1.70085937e-04, 6.76134909e-02, 2.60789586e-01, 8.95047307e-02, 1.88914900e-01,
     2.194880e-01],
    [FREQ, 2.01793650e-01, 2.15067866e-04, 7.92811595e-02, 3.80715927e-01, 1.88116279e-01, 2.76809413e-01,
     2.045956e-01],
])


def _frames():
    coord = np.reshape(REF["coord"][0], (-1, 3))
    atype = np.array(REF["atype"])
    mixed = np.stack([atype, atype])
    mixed[1][0], mixed[1][-1] = 1, 0
    return np.stack([coord, coord]), atype, mixed


@pytest.fixture(scope="module")
def pots():
    return [DeepPotential.from_file(m, backend="numpy") for m in MODELS]


def _rows(devi):
    return np.array([d.row() + (d.devi_e,) for d in devi])


def test_calc_model_devi(pots):
    coords, atype, _ = _frames()
    rows = _rows(model_devi_frames(pots, coords, [REF["type_map"][t] for t in atype], cells=None))
    np.testing.assert_almost_equal(rows[0], EXPECT[0][1:8], 6)
    np.testing.assert_almost_equal(rows[0], rows[1], 6)


def test_calc_model_devi_mixed(pots):
    coords, _, mixed = _frames()
    symbols = [[REF["type_map"][t] for t in frame] for frame in mixed]
    rows = _rows(model_devi_frames(pots, coords, symbols, cells=None))
    np.testing.assert_almost_equal(rows, EXPECT[:, 1:8], 6)


def test_make_model_devi_mixed(tmp_path):
    """``dp model-devi`` on a mixed-type system (its box, periodic, as make_model_devi reads it)."""
    coords, atype, mixed = _frames()
    system = tmp_path / "system"
    (system / "set.000").mkdir(parents=True)
    np.save(system / "set.000" / "coord.npy", coords.reshape(2, -1))
    np.save(system / "set.000" / "box.npy", np.vstack([REF["box"][0]] * 2))
    np.save(system / "set.000" / "real_atom_types.npy", mixed)
    (system / "type.raw").write_text("\n".join(map(str, atype)) + "\n")
    (system / "type_map.raw").write_text("O\nH")
    out = tmp_path / "model_devi.out"
    rc = main(["model-devi", "-m", *map(str, MODELS), "-s", str(system), "-o", str(out), "-f", str(FREQ),
               "--backend", "numpy"])
    assert rc in (0, None)
    np.testing.assert_almost_equal(np.loadtxt(out), EXPECT, 6)
