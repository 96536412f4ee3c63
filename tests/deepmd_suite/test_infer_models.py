"""Port of DeePMD-kit's source/tests/infer/test_models.py (TestDeepPot, TestDeepPotNeighborList).

DeePMD-kit's test models and expected values (its ``*-testcase.yaml``, as JSON in tests/data/refs;
tests/data/make_deepmd_kit_refs.py and make_deepmd_suite_refs.py) evaluated through deepcomp's
DeepPotential and ASE calculator, with DeePMD-kit's tolerances: ``assert_almost_equal`` to 12 places
for se_e2_a and se_e2_r (its STRICT_KEYS), 7 otherwise. The model files are the ones its
``case.py`` evaluates: the yaml itself, ``dp convert-backend`` of it to .pb, and its own
deeppot_sea.pth (DeePMD-kit skips se_e2_r as .pth; so do we). The DeePMD-kit API tests with no
deepcomp counterpart (eval_descriptor, eval_fitting_last_layer, dpdata driver, model_def_script,
the .pte/.pt2 exports) are not ported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import NewPrimitiveNeighborList

from deepcomp_ase import DeepCompCalculator
from deepcomp_ase.potential import DeepPotential

DATA = Path(__file__).resolve().parents[1] / "data"
MODELS = DATA / "models"
GRAPHS = MODELS / "tf_graphs"
DEFAULT_PLACES, STRICT_PLACES = 7, 12
# The .pb's environment op holds rcut_smth 1.8 in float32 and DeePMD-kit's switch ends at float32(6.0 - 1.8)
# above it: deepcomp takes that end, 5.99999976, as the model's cut-off (io/pb.py _op_cutoffs, to reproduce
# the switch exactly) and reports it as rcut, where DeePMD-kit's get_rcut() reports descrpt_attr/rcut, 6.0.
RCUT_XFAIL = pytest.mark.xfail(reason="rcut reported as the float32 end of the switch (5.99999976), not "
                                      "descrpt_attr/rcut (6.0): io/pb.py _op_cutoffs", strict=True)

CASES = {  # DeePMD-kit key: testcase, model files (its extensions .yaml, .pb, .pth)
    "se_e2_a": ("deeppot-testcase.json", {".yaml": MODELS / "deeppot_sea.yaml", ".pb": GRAPHS / "deepmd_deeppot_sea.pb",
                                          ".pth": MODELS / "deeppot_sea.pth"}),
    "se_e2_r": ("deeppot-r-testcase.json", {".yaml": MODELS / "deeppot-r.yaml",
                                            ".pb": GRAPHS / "deepmd_deeppot-r-yaml.pb"}),
    "fparam_aparam": ("deepmd_suite/fparam_aparam-testcase.json", {".yaml": MODELS / "fparam_aparam.yaml",
                                                                    ".pb": GRAPHS / "deepmd_fparam_aparam-yaml.pb"}),
}
PARAMS = [pytest.param((key, ext), id=f"{key}{ext}") for key, (_, files) in CASES.items() for ext in files]


class Case:
    def __init__(self, key: str, ext: str):
        testcase, files = CASES[key]
        self.data = json.loads((DATA / "refs" / testcase).read_text())
        self.places = STRICT_PLACES if key in ("se_e2_a", "se_e2_r") else DEFAULT_PLACES
        self.path = files[ext]
        self.pot = DeepPotential.from_file(self.path, backend="numpy")

    def results(self):
        for ii, r in enumerate(self.data["results"]):
            atype = np.array(r["atype"])
            coord = np.reshape(r["coord"], (-1, 3))
            box = None if r["box"] is None else np.reshape(r["box"], (3, 3))
            kw = {}
            if "fparam" in r:
                kw["fparam"] = np.ravel(r["fparam"])
            if "aparam" in r:
                kw["aparam"] = np.reshape(r["aparam"], (len(atype), -1))
            yield ii, atype, coord, box, kw, r

    def evaluate(self, atype, coord, box, kw):
        pbc = [box is not None] * 3
        return self.pot.compute_atoms(coord, atype, box, pbc, atomic_virial=True, **kw)


_LOADED: dict = {}


@pytest.fixture(scope="module", params=PARAMS)
def case(request):
    key = request.param
    if key not in _LOADED:
        _LOADED[key] = Case(*key)
    return _LOADED[key]


def test_attrs(case, request):
    d = case.data
    if case.path.name == "deepmd_fparam_aparam-yaml.pb":
        request.applymarker(RCUT_XFAIL)
    assert len(case.pot.type_map) == d["ntypes"]
    np.testing.assert_almost_equal(case.pot.rcut, d["rcut"], case.places)
    assert list(case.pot.type_map) == d["type_map"]


def test_1frame(case):
    for ii, atype, coord, box, kw, r in case.results():
        res = case.evaluate(atype, coord, box, kw)
        np.testing.assert_almost_equal(res.forces.ravel(), np.ravel(r["force"]), case.places,
                                       err_msg=f"Result {ii} force")
        np.testing.assert_almost_equal(res.energy, np.sum(r["atomic_energy"]), case.places,
                                       err_msg=f"Result {ii} energy")
        np.testing.assert_almost_equal(res.virial.ravel(), np.reshape(r["atomic_virial"], (-1, 9)).sum(0),
                                       case.places, err_msg=f"Result {ii} virial")


def test_1frame_atm(case):
    for ii, atype, coord, box, kw, r in case.results():
        res = case.evaluate(atype, coord, box, kw)
        assert res.atom_energy.shape == (len(atype),)
        assert res.atom_virial.reshape(len(atype), -1).shape == (len(atype), 9)
        np.testing.assert_almost_equal(res.atom_energy.ravel(), np.ravel(r["atomic_energy"]), case.places,
                                       err_msg=f"Result {ii} atomic energy")
        np.testing.assert_almost_equal(res.atom_virial.ravel(), np.ravel(r["atomic_virial"]), case.places,
                                       err_msg=f"Result {ii} atomic virial")


def test_zero_input(case):
    """No atoms at all: zero energy, an empty force array, zero virial (with and without a box)."""
    for box in (np.eye(3), None):
        kw = {}
        if case.data.get("dim_fparam"):
            kw["fparam"] = np.zeros(case.data["dim_fparam"])
        if case.data.get("dim_aparam"):
            kw["aparam"] = np.zeros((0, case.data["dim_aparam"]))
        res = case.evaluate(np.zeros(0, dtype=int), np.zeros((0, 3)), box, kw)
        assert np.shape(res.forces) == (0, 3)
        np.testing.assert_almost_equal(res.energy, 0, case.places)
        np.testing.assert_almost_equal(np.ravel(res.virial), np.zeros(9), case.places)


def test_ase(case):
    if case.data.get("dim_fparam") or case.data.get("dim_aparam"):
        pytest.skip("DeePMD-kit skips this test for fparam/aparam models too")
    calc = DeepCompCalculator(case.pot)
    for ii, atype, coord, box, _, r in case.results():
        atoms = Atoms(np.array(case.data["type_map"])[atype].tolist(), positions=coord,
                      cell=box, pbc=box is not None, calculator=calc)
        np.testing.assert_almost_equal(atoms.get_forces().ravel(), np.ravel(r["force"]), case.places,
                                       err_msg=f"Result {ii} force")
        np.testing.assert_almost_equal(atoms.get_potential_energy(), np.sum(r["atomic_energy"]), case.places,
                                       err_msg=f"Result {ii} energy")


# ------------------------------------------------------------------ TestDeepPotNeighborList
def _ase_pairs(coord, box, rcut):
    """All (i, j, r_j - r_i) within rcut from ASE's neighbour list (both ways), as DeePMD-kit's
    ``neighbor_list=`` option builds them."""
    pbc = [box is not None] * 3
    cell = np.zeros((3, 3)) if box is None else box
    nl = NewPrimitiveNeighborList(cutoffs=[rcut / 2] * len(coord), bothways=True, self_interaction=False,
                                  skin=0.0)
    nl.update(pbc, cell, coord)
    i, j, vec = [], [], []
    for a in range(len(coord)):
        idx, offsets = nl.get_neighbors(a)
        i += [a] * len(idx)
        j += list(idx)
        vec += list(coord[idx] + offsets @ cell - coord[a])
    return np.array(i, dtype=int), np.array(j, dtype=int), np.reshape(vec, (-1, 3))


def test_neighbor_list_matches_reference():
    """TestDeepPotNeighborList (se_e2_a .pb): an external ASE neighbour list gives DeePMD-kit's values,
    the open-boundary block to 12 places (its test_nopbc_matches_reference) and the others too."""
    case = Case("se_e2_a", ".pb")
    for ii, atype, coord, box, _, r in case.results():
        i, j, vec = _ase_pairs(coord, box, case.pot.rcut)
        nloc = len(atype)
        # every neighbour a ghost atom of its own (index nloc + k), folded back onto its owner j[k]
        res = case.pot.compute_pairs(np.concatenate([atype, atype[j]]), nloc, i, nloc + np.arange(len(j)), vec,
                                     atomic_virial=True)
        forces, atom_virial = res.forces[:nloc].copy(), res.atom_virial.reshape(-1, 9)[:nloc].copy()
        np.add.at(forces, j, res.forces[nloc:])
        np.add.at(atom_virial, j, res.atom_virial.reshape(-1, 9)[nloc:])
        np.testing.assert_almost_equal(forces.ravel(), np.ravel(r["force"]), STRICT_PLACES, err_msg=f"Result {ii}")
        np.testing.assert_almost_equal(res.atom_energy[:nloc], np.ravel(r["atomic_energy"]), STRICT_PLACES)
        np.testing.assert_almost_equal(atom_virial.ravel(), np.ravel(r["atomic_virial"]), STRICT_PLACES)
        np.testing.assert_almost_equal(res.energy, np.sum(r["atomic_energy"]), STRICT_PLACES)
        np.testing.assert_almost_equal(res.virial.ravel(), np.reshape(r["atomic_virial"], (-1, 9)).sum(0),
                                       STRICT_PLACES)
