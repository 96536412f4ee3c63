"""Port of DeePMD-kit 2.2.11's source/tests/test_deeppot_a.py and test_deeppot_r.py (TestDeepPotAPBC,
TestDeepPotANoPBC, TestDeepPotALargeBoxNoPBC and the se_e2_r TestDeepPotR* counterparts).

Graphs: deeppot.pbtxt and deeppot-r.pbtxt as .pb (frozen without a training script; unchanged
since 2.2.11). Set-up and expected values: those classes' own (tests/data/refs/deepmd_suite/
test_deeppot_*_v2.2.11.json, tests/data/make_deepmd_suite_refs.py), to their 10 places. Since 3.0
these classes live on in infer/test_models.py (test_infer_models.py). Not ported: test_2frame_atm
(two frames in one call of DeePMD-kit's API).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepcomp_ase.potential import DeepPotential

DATA = Path(__file__).resolve().parents[1] / "data"
GRAPHS = DATA / "models" / "tf_graphs"
PLACES = 10
MODULES = {"test_deeppot_a": GRAPHS / "deepmd_deeppot.pb", "test_deeppot_r": GRAPHS / "deepmd_deeppot-r.pb"}
CASES = [(module, cls) for module in MODULES
         for cls in json.loads((DATA / "refs" / "deepmd_suite" / f"{module}_v2.2.11.json").read_text())
         if cls != "source"]
_POTS: dict = {}


@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-{c}" for m, c in CASES])
def case(request):
    module, cls = request.param
    if module not in _POTS:
        _POTS[module] = DeepPotential.from_file(MODULES[module], backend="numpy")
    data = json.loads((DATA / "refs" / "deepmd_suite" / f"{module}_v2.2.11.json").read_text())[cls]
    return _POTS[module], data


def _eval(pot, d):
    box = None if d["box"] is None else np.reshape(d["box"], (3, 3))
    return pot.compute_atoms(np.reshape(d["coords"], (-1, 3)), np.array(d["atype"]), box, [box is not None] * 3,
                             atomic_virial=True)


def test_attrs(case):
    pot, _ = case
    assert len(pot.type_map) == 2 and pot.type_map == ("O", "H")
    np.testing.assert_almost_equal(pot.rcut, 6.0, PLACES)


def test_1frame(case):
    pot, d = case
    res = _eval(pot, d)
    e, v = np.array(d["expected_e"]), np.reshape(d["expected_v"], (-1, 9))
    np.testing.assert_almost_equal(res.forces.ravel(), np.ravel(d["expected_f"]), PLACES)
    np.testing.assert_almost_equal(res.energy, e.sum(), PLACES)
    np.testing.assert_almost_equal(res.virial.ravel(), v.sum(0), PLACES)


def test_1frame_atm(case):
    pot, d = case
    res = _eval(pot, d)
    np.testing.assert_almost_equal(res.forces.ravel(), np.ravel(d["expected_f"]), PLACES)
    np.testing.assert_almost_equal(res.atom_energy.ravel(), np.ravel(d["expected_e"]), PLACES)
    np.testing.assert_almost_equal(res.atom_virial.ravel(), np.ravel(d["expected_v"]), PLACES)


def test_zero_input(case):
    pot, d = case
    box = None if d["box"] is None else np.reshape(d["box"], (3, 3))
    res = pot.compute_atoms(np.zeros((0, 3)), np.zeros(0, dtype=int), box, [box is not None] * 3)
    assert np.shape(res.forces) == (0, 3)
    np.testing.assert_almost_equal(res.energy, 0, PLACES)
    np.testing.assert_almost_equal(np.ravel(res.virial), np.zeros(9), PLACES)
