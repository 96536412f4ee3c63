"""Port of DeePMD-kit's source/tests/tf/test_model_compression_se_a.py, _se_r.py and
_se_a_type_one_side_exclude_types.py (TestDeepPotAPBC, TestDeepPotANoPBC, TestDeepPotALargeBoxNoPBC).

Graphs: trained, frozen and compressed (``dp compress -s 0.1``) as those tests make them
(tests/data/make_deepmd_compress_suite.py, which says why the step is 0.1 and not the default 0.01).
Those tests check that the compressed graph gives the original's values to 10 places; here deepcomp
reads the compressed graph (DeePMD-kit's tables as they are) and gives the original graph's values
(DeePMD-kit's evaluation) to those 10 places, and DeePMD-kit's values for the compressed graph too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepcomp_ase.potential import DeepPotential

DATA = Path(__file__).resolve().parents[1] / "data"
REF = np.load(DATA / "refs" / "deepmd_suite" / "compress.npz")
PLACES = 10
VARIANTS = ("se_a", "se_a_type_one_side_exclude_types", "se_r")
CONFS = ("pbc", "nopbc", "largebox")
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")
_POTS: dict = {}


def _result(variant: str, conf: str):
    if variant not in _POTS:
        _POTS[variant] = DeepPotential.from_file(DATA / "models" / "tf_graphs" / f"deepmd_compress_{variant}.pb",
                                                 backend="numpy")
    pot = _POTS[variant]
    assert pot.compressed
    box = REF[f"box/{conf}"]
    box = None if box.size == 0 else box
    res = pot.compute_atoms(REF["coord"], REF["atype"], box, [box is not None] * 3, atomic_virial=True)
    return {"energy": res.energy, "force": res.forces, "virial": res.virial.reshape(3, 3),
            "atom_energy": res.atom_energy, "atom_virial": res.atom_virial.reshape(-1, 9)}


@pytest.mark.parametrize("which", ["original", "compressed"])
@pytest.mark.parametrize("conf", CONFS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_compressed_matches(variant, conf, which):
    """The tests' own criterion (``which`` = original: the compressed graph gives the original's values to
    10 places), and DeePMD-kit's evaluation of the compressed graph to the same places."""
    got = _result(variant, conf)
    for key in KEYS:
        want = REF[f"{variant}/{conf}/{which}/{key}"]
        np.testing.assert_almost_equal(np.ravel(got[key]), np.ravel(want), PLACES, err_msg=key)


def test_ase():
    """TestDeepPotALargeBoxNoPBC.test_ase (se_a): the ASE calculator on the compressed graph."""
    from ase import Atoms

    from deepcomp_ase import DeepCompCalculator

    _result("se_a", "largebox")  # loads the model
    atoms = Atoms([("O", "H")[t] for t in REF["atype"]], positions=REF["coord"],
                  cell=REF["box/largebox"], pbc=False)
    atoms.calc = DeepCompCalculator(_POTS["se_a"])
    want = "se_a/largebox/original"
    np.testing.assert_almost_equal(atoms.get_forces().ravel(), REF[f"{want}/force"].ravel(), PLACES)
    np.testing.assert_almost_equal(atoms.get_potential_energy(), float(REF[f"{want}/energy"]), PLACES)
