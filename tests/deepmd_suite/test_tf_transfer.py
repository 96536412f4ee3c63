"""Port of DeePMD-kit's source/tests/tf/test_transfer.py (TestTransform).

``dp transfer -O deeppot.pb -r deeppot-1.pb``: deeppot-1's weights in deeppot's graph
(tests/data/models/tf_graphs/deepmd_transfer.pb, tests/data/make_deepmd_suite_refs.py), against the
test's expected values to its 10 places. Its test_2frame_atm (two frames in one call of DeePMD-kit's
API) has no deepcomp counterpart and is not ported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepcomp_ase.potential import DeepPotential

DATA = Path(__file__).resolve().parents[1] / "data"
REF = json.loads((DATA / "refs" / "deepmd_suite" / "test_transfer.json").read_text())
PLACES = 10
COORD = np.array([12.83, 2.56, 2.18, 12.09, 2.87, 2.74, 00.25, 3.32, 1.68,
                  3.36, 3.00, 1.81, 3.51, 2.51, 2.60, 4.27, 3.22, 1.56]).reshape(-1, 3)
ATYPE = np.array([0, 1, 1, 0, 1, 1])
BOX = np.diag([13.0, 13.0, 13.0])


@pytest.fixture(scope="module")
def pot():
    return DeepPotential.from_file(DATA / "models" / "tf_graphs" / "deepmd_transfer.pb", backend="numpy")


def test_attrs(pot):
    assert pot.type_map == ("O", "H")
    np.testing.assert_almost_equal(pot.rcut, 6.0, PLACES)


def test_1frame_atm(pot):
    res = pot.compute_atoms(COORD, ATYPE, BOX, [True] * 3, atomic_virial=True)
    e, f, v = (np.array(REF[k]) for k in ("expected_e", "expected_f", "expected_v"))
    np.testing.assert_almost_equal(res.forces.ravel(), f.ravel(), PLACES)
    np.testing.assert_almost_equal(res.atom_energy.ravel(), e.ravel(), PLACES)
    np.testing.assert_almost_equal(res.atom_virial.ravel(), v.ravel(), PLACES)
    np.testing.assert_almost_equal(res.energy, e.sum(), PLACES)
    np.testing.assert_almost_equal(res.virial.ravel(), v.reshape(-1, 9).sum(0), PLACES)
