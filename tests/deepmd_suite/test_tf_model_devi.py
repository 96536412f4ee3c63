"""Port of DeePMD-kit's source/tests/tf/test_model_devi.py (TestMakeModelDevi).

Models: deeppot.pbtxt and deeppot-1.pbtxt (as .pb); system: the one its ``gen_data()`` writes (one
frame of 6 atoms in a 20 A box, zero energy and force labels; tests/data/make_deepmd_suite_refs.py),
with type_map.raw "O H" as the test adds it. ``calc_model_devi`` maps to
:func:`deepcomp_ase.ensemble.model_devi_frames`, ``make_model_devi`` to ``deepcomp model-devi``.
Expected rows and places: the test's (``assert_almost_equal`` to 6 places; where it calls
``assert_allclose(x, expect, 6)``, i.e. rtol=6, the 6 places are kept as meant). Its per-atom tests
build the expected virial deviation from the 3x3 virial summed over one axis (3 numbers, passing only
by that rtol=6, and relative_v as a per-component |mean|); here from the 9 components and the norm of
their mean, as dp model-devi computes them (deepmd/infer/model_devi.py calc_model_devi_v; EXPECT agrees).
TestMakeModelDeviFparamAparam: fparam.npy/aparam.npy read from the system.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepcomp_ase.cli import main
from deepcomp_ase.ensemble import model_devi_frames
from deepcomp_ase.potential import DeepPotential

DATA = Path(__file__).resolve().parents[1] / "data"
GRAPHS = DATA / "models" / "tf_graphs"
MODELS = [GRAPHS / "deepmd_deeppot.pb", GRAPHS / "deepmd_deeppot-1.pb"]
REF = json.loads((DATA / "refs" / "deepmd_suite" / "test_model_devi.json").read_text())
EXPECT = np.array(REF["expect"])
FREQ = 10


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    root = tmp_path_factory.mktemp("model_devi") / "system"
    (root / "set.000").mkdir(parents=True)
    coord, box = np.array(REF["coord"]), np.array(REF["box"])
    np.save(root / "set.000" / "coord.npy", coord)
    np.save(root / "set.000" / "box.npy", box)
    np.save(root / "set.000" / "energy.npy", np.zeros((len(coord), 1)))
    np.save(root / "set.000" / "force.npy", np.zeros_like(coord))
    (root / "type.raw").write_text("\n".join(map(str, REF["atype"])) + "\n")
    (root / "type_map.raw").write_text("O\nH")
    return root


@pytest.fixture(scope="module")
def pots():
    return [DeepPotential.from_file(m, backend="numpy") for m in MODELS]


def _make_model_devi(system, tmp_path, *extra) -> np.ndarray:
    out = tmp_path / "model_devi.out"
    rc = main(["model-devi", "-m", *map(str, MODELS), "-s", str(system), "-o", str(out), "-f", str(FREQ),
               "--backend", "numpy", *extra])
    assert rc in (0, None)
    return np.loadtxt(out)


def _reference(pots):
    """DeePMD-kit's test evaluates both graphs on the frame (with its box) for the per-atom columns."""
    coord = np.reshape(REF["coord"][0], (-1, 3))
    box = np.reshape(REF["box"][0], (3, 3))
    res = [p.compute_atoms(coord, np.array(REF["atype"]), box, [True] * 3) for p in pots]
    return res[0].forces, res[1].forces, res[0].virial.reshape(9), res[1].virial.reshape(9)


def test_calc_model_devi(pots):
    coord = np.reshape(REF["coord"][0], (-1, 3))
    symbols = [REF["type_map"][t] for t in REF["atype"]]
    devi = model_devi_frames(pots, np.stack([coord, coord]), symbols, cells=None)
    rows = np.array([d.row() + (d.devi_e,) for d in devi])
    np.testing.assert_almost_equal(rows[0][:7], EXPECT[1:8], 6)
    np.testing.assert_almost_equal(rows[0], rows[1], 6)


def test_make_model_devi(system, tmp_path):
    x = _make_model_devi(system, tmp_path)
    np.testing.assert_almost_equal(x, EXPECT, 6)


def test_make_model_devi_real_error(system, tmp_path):
    """The system has no virial.npy: dp model-devi compares the virials with zeros, deepcomp writes nan
    there on purpose (with a warning; docs/model-deviation.md). The other columns are DeePMD-kit's; with
    the zeros dp assumes written as virial.npy, the whole row is."""
    want = np.array(REF["expect_real_error"])
    x = _make_model_devi(system, tmp_path, "--real-error")
    assert np.isnan(x[1:4]).all()
    np.testing.assert_almost_equal(x[[0, 4, 5, 6, 7]], want[[0, 4, 5, 6, 7]], 6)
    labelled = tmp_path / "labelled"
    shutil.copytree(system, labelled)
    np.save(labelled / "set.000" / "virial.npy", np.zeros((1, 9)))
    np.testing.assert_almost_equal(_make_model_devi(labelled, tmp_path, "--real-error"), want, 6)


def test_make_model_devi_atomic_relative(system, tmp_path, pots):
    f, f2, v, v2 = _reference(pots)
    relative = 1.0
    md = _make_model_devi(system, tmp_path, "--atomic", "--relative", str(relative))
    norm = np.linalg.norm(np.mean([f, f2], axis=0), axis=1)
    md_f = np.linalg.norm(np.std([f, f2], axis=0), axis=1) / (norm + relative)
    np.testing.assert_almost_equal(md[8:], md_f, 6)
    np.testing.assert_almost_equal(md[7], EXPECT[7], 6)
    np.testing.assert_almost_equal(md[4:7], [np.max(md_f), np.min(md_f), np.mean(md_f)], 6)
    np.testing.assert_almost_equal(md[1:4], EXPECT[1:4], 6)  # relative acts on the forces only


def test_make_model_devi_atomic_relative_v(system, tmp_path, pots):
    f, f2, v, v2 = _reference(pots)
    relative = 1.0
    md = _make_model_devi(system, tmp_path, "--atomic", "--relative-v", str(relative))
    md_f = np.linalg.norm(np.std([f, f2], axis=0), axis=1)
    np.testing.assert_almost_equal(md[8:], md_f, 6)
    np.testing.assert_almost_equal(md[7], EXPECT[7], 6)
    np.testing.assert_almost_equal(md[4:7], [np.max(md_f), np.min(md_f), np.mean(md_f)], 6)
    # dp's calc_model_devi_v: the magnitude is the norm of the mean per-atom virial (9 components)
    md_v = np.std([v, v2], axis=0) / 6 / (np.linalg.norm(np.mean([v, v2], axis=0)) / 6 + relative)
    np.testing.assert_almost_equal(md[1:4], [np.max(md_v), np.min(md_v), np.sqrt(np.mean(np.square(md_v)))], 6)


def test_make_model_devi_fparam_aparam(system, tmp_path):
    """TestMakeModelDeviFparamAparam: one type, fparam.npy/aparam.npy in the system; DeePMD-kit passes the one
    fparam_aparam model (deviation 0), deepcomp needs two models: the same one twice (deviation 0 too)."""
    sys2 = tmp_path / "system_fparam"
    shutil.copytree(system, sys2)
    natoms = len(REF["atype"])
    (sys2 / "type.raw").write_text("0\n" * natoms)
    (sys2 / "type_map.raw").unlink()
    np.save(sys2 / "set.000" / "fparam.npy", np.full((1, 1), 0.25852028))
    np.save(sys2 / "set.000" / "aparam.npy", np.full((1, natoms, 1), 0.25852028))
    out = tmp_path / "model_devi.out"
    model = str(GRAPHS / "deepmd_fparam_aparam.pb")
    rc = main(["model-devi", "-m", model, model, "-s", str(sys2), "-o", str(out), "-f", str(FREQ),
               "--backend", "numpy"])
    assert rc in (0, None)
    np.testing.assert_almost_equal(np.loadtxt(out), np.zeros(8), 6)
