"""pair_style deepcomp with frame and atomic parameters, and compute deepcomp/fparam/dedn.

The keywords of pair_style deepmd (fparam, aparam, fparam_from_compute, aparam_from_compute,
fparam_from_fix) with its checks and errors; every number is compared with the Python path
(``DeepPotential.compute_atoms`` with the same fparam / aparam), which tests/test_fparam.py
compares with DeePMD-kit. Models: tests/data/make_fparam_models.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from lammps_helpers import REPO, lammps_error, lammps_state, max_rel, new_lammps, setup_system

from deepcomp_ase.potential import DeepPotential

MODELS = REPO / "tests" / "data" / "models"
F2A1 = MODELS / "fp_pt_f2a1.pth"  # numb_fparam 2, numb_aparam 1
F2A1_TF = MODELS / "fp_tf_f2a1.pb"  # the same dimensions (model deviation)
F1A1 = MODELS / "fp_tf22_f1a1.pb"  # numb_fparam 1, numb_aparam 1
RTOL = 1e-10
NKTV2P = 1.6021765e6  # units metal: pressure * volume -> eV
TO_LAMMPS = [0, 4, 8, 3, 6, 7]


@pytest.fixture(scope="module")
def pots():
    cache = {}

    def get(path):
        if path not in cache:
            cache[path] = DeepPotential.from_file(path, backend="numpy")
        return cache[path]

    return get


def run0(commands: str, thermo: str = ""):
    lmp = new_lammps()
    setup_system(lmp)
    lmp.commands_string(commands + f"\ncompute V all pressure NULL virial\nthermo_style custom step pe c_V[*] {thermo}"
                        "\nrun 0")
    return lmp


def python_results(lmp, pot, fparam, aparam):
    order, x, t, _, cell = lammps_state(lmp)
    types = pot.types_of(["Cu" if k == 1 else "Au" for k in t])
    ap = None if aparam is None else np.asarray(aparam)[order] if np.size(aparam) == len(x) else aparam
    return pot.compute_atoms(x, types, cell, (True,) * 3, fparam=fparam, aparam=ap)


def check(lmp, ref):
    _, _, _, f, cell = lammps_state(lmp)
    energy = lmp.get_thermo("pe")
    virial = np.array([lmp.extract_compute("V", 0, 1)[k] for k in range(6)]) * abs(np.linalg.det(cell)) / NKTV2P
    assert abs(energy - ref.energy) <= RTOL * abs(ref.energy)
    assert max_rel(f, ref.forces) <= RTOL
    assert max_rel(virial, ref.virial.reshape(9)[TO_LAMMPS]) <= 1e-9


def test_constant_fparam_and_aparam_from_compute(pots):
    lmp = run0(f"compute AP all property/atom xs\npair_style deepcomp {F2A1} fparam 0.8 1.2 aparam_from_compute AP\n"
               "pair_coeff * * Cu Au")
    try:
        xs = np.array(lmp.numpy.extract_compute("AP", 1, 1))
        check(lmp, python_results(lmp, pots(F2A1), [0.8, 1.2], xs.reshape(-1, 1)))
    finally:
        lmp.close()


def test_uniform_aparam(pots):
    lmp = run0(f"pair_style deepcomp {F2A1} aparam 0.3 fparam 0.8 1.2\npair_coeff * * Cu Au")
    try:
        check(lmp, python_results(lmp, pots(F2A1), [0.8, 1.2], [0.3]))
    finally:
        lmp.close()


def test_fparam_from_compute_and_fix(pots):
    common = "velocity all create 900 4928 dist gaussian\ncompute T all temp\n"
    lmp = run0(common + f"pair_style deepcomp {F1A1} fparam_from_compute T aparam 0.2\npair_coeff * * Cu Au")
    try:
        temp = lmp.extract_compute("T", 0, 0)
        check(lmp, python_results(lmp, pots(F1A1), [temp / 1000.0 * 1000.0], [0.2]))
    finally:
        lmp.close()
    # a fix's scalar (fix nvt: its thermostat energy) as the frame parameter
    lmp = run0(common + "fix N all nvt temp 900 900 0.1\n"
               f"pair_style deepcomp {F1A1} fparam_from_fix N aparam 0.2\npair_coeff * * Cu Au")
    try:
        check(lmp, python_results(lmp, pots(F1A1), [lmp.extract_fix("N", 0, 0)], [0.2]))
    finally:
        lmp.close()


def test_dedn_compute(pots):
    # the source is the pair style's own frame parameter (a compute): the derivative of the force call
    lmp = run0("velocity all create 900 4928 dist gaussian\ncompute T all temp\n"
               f"pair_style deepcomp {F1A1} fparam_from_compute T aparam 0.2\npair_coeff * * Cu Au\n"
               "compute D all deepcomp/fparam/dedn c_T 1e-6", "c_D")
    try:
        ref = python_results(lmp, pots(F1A1), [lmp.extract_compute("T", 0, 0)], [0.2])
        assert abs(lmp.extract_compute("D", 0, 0) - ref.dedfparam[0]) <= 1e-10 * abs(ref.dedfparam[0])
    finally:
        lmp.close()
    # a source with another value than the pair style's: evaluated at that value
    lmp = run0("variable s equal 1.3\n"
               f"pair_style deepcomp {F1A1} fparam 1.0 aparam 0.2\npair_coeff * * Cu Au\n"
               "compute D all deepcomp/fparam/dedn v_s", "c_D")
    try:
        ref = python_results(lmp, pots(F1A1), [1.3], [0.2])
        assert abs(lmp.extract_compute("D", 0, 0) - ref.dedfparam[0]) <= 1e-10 * abs(ref.dedfparam[0])
        assert abs(lmp.get_thermo("pe") - python_results(lmp, pots(F1A1), [1.0], [0.2]).energy) < 1e-9
    finally:
        lmp.close()


def test_model_deviation_with_parameters(pots, tmp_path):
    from deepcomp_ase.model_devi import model_deviation, read_model_devi

    out = tmp_path / "md.out"
    lmp = run0(f"compute AP all property/atom xs\npair_style deepcomp {F2A1} {F2A1_TF} fparam 0.8 1.2 "
               f"aparam_from_compute AP out_freq 1 out_file {out}\npair_coeff * * Cu Au")
    try:
        xs = np.array(lmp.numpy.extract_compute("AP", 1, 1)).reshape(-1, 1)
        res = [python_results(lmp, pots(p), [0.8, 1.2], xs) for p in (F2A1, F2A1_TF)]
        n = len(xs)
    finally:
        lmp.close()
    row = read_model_devi(out)[0]
    d = model_deviation(np.array([r.forces[:n] for r in res]), np.array([r.virial for r in res]), n)
    np.testing.assert_allclose(row[1:7], d.row(), rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize(("commands", "message"), [
    (f"pair_style deepcomp {F2A1} fparam 1.0 aparam 0.1", "Illegal fparam, the dimension should be 2"),
    (f"pair_style deepcomp {F2A1} fparam 1 2", r"takes 1 atomic parameter\(s\)"),
    (f"pair_style deepcomp {F2A1} aparam 0.1", r"takes 2 frame parameter\(s\)"),
    (f"pair_style deepcomp {MODELS / 'cuau_se_e2_a.dp'} fparam 1.0", "takes no fparam"),
    (f"compute T all temp\npair_style deepcomp {F1A1} fparam 1 fparam_from_compute T aparam 0.1",
     "fparam and fparam_from_compute should NOT be set simultaneously"),
    (f"pair_style deepcomp {F1A1} fparam_from_fix", "invalid fparam_from_fix key"),
    (f"pair_style deepcomp {F1A1} fparam_from_fix N 0 aparam 0.1", "vector index must be a positive 1-based"),
    (f"pair_style deepcomp {F1A1} fparam_from_compute NOPE aparam 0.1", "compute NOPE for fparam is not found"),
    (f"pair_style deepcomp {F2A1} {F1A1} fparam 1 2 aparam 0.1", "take different frame/atomic parameters"),
])
def test_keyword_errors(commands, message):
    err = lammps_error(commands + "\npair_coeff * * Cu Au")
    assert message in err or __import__("re").search(message, err), err


def test_dedn_compute_errors():
    err = lammps_error(f"pair_style deepcomp {F2A1} fparam 1 2 aparam 0.1\npair_coeff * * Cu Au\n"
                       "compute D all deepcomp/fparam/dedn v_s\nthermo_style custom step c_D")
    assert "single frame-parameter dimension only" in err, err
    err = lammps_error(f"pair_style deepcomp {F1A1} fparam 1 aparam 0.1\npair_coeff * * Cu Au\n"
                       "compute D all deepcomp/fparam/dedn s")
    assert "must be a variable, compute, or fix reference" in err, err


MPI_DECK = """
units metal
atom_style atomic
boundary p p p
read_data {data}
velocity all create 900 4928 dist gaussian
compute T all temp
compute AP all property/atom xs
variable s equal 1.3
pair_style deepcomp {model} fparam_from_compute T aparam_from_compute AP
pair_coeff * * Cu Au
compute D all deepcomp/fparam/dedn c_T
compute D2 all deepcomp/fparam/dedn v_s
fix 1 all nve
thermo_style custom step pe c_D c_D2
thermo_modify format float %20.12e
thermo 1
run 3
"""


@pytest.mark.slow
@pytest.mark.mpi
def test_parameters_and_dedn_same_on_1_and_2_ranks(tmp_path):
    """aparam of the local atoms of each rank, dE/dfparam summed over the ranks (both compute paths)."""
    from lammps_helpers import DATA_500, run_lmp, thermo_table

    tables = []
    for n in (1, 2):
        work = tmp_path / f"np{n}"
        work.mkdir()
        rc, text, _ = run_lmp(MPI_DECK.format(data=DATA_500, model=F1A1), work, nprocs=n, timeout=300)
        assert rc == 0, text[-3000:]
        tables.append(thermo_table(text)[1])
    assert tables[0].shape == (4, 4)
    np.testing.assert_allclose(tables[1], tables[0], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ DeePMD-kit's pair_style deepmd
DEEPMD_REFS = REPO / "tests" / "data" / "lammps_compat" / "deepmd_fparam_refs.npz"


@pytest.mark.parametrize("case", ["constant", "from_compute", "dedn"])
def test_equals_pair_style_deepmd(case):
    """The decks of tests/data/make_lammps_fparam_refs.py with deepcomp in place of deepmd."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "data"))
    from make_lammps_fparam_refs import deck

    ref = np.load(DEEPMD_REFS)
    lmp = new_lammps()
    setup_system(lmp)
    lmp.commands_string(deck(case, "deepcomp", MODELS) + "compute V all pressure NULL virial\n"
                        "thermo_style custom step pe vol\nrun 0")
    try:
        _, _, _, f, _ = lammps_state(lmp)
        energy = lmp.get_thermo("pe")
        virial = np.array([lmp.extract_compute("V", 0, 1)[k] for k in range(6)]) * lmp.get_thermo("vol") / NKTV2P
        dedn = lmp.extract_compute("D", 0, 0) if case == "dedn" else None
    finally:
        lmp.close()
    assert abs(energy - ref[f"{case}_energy"]) <= 1e-10 * abs(ref[f"{case}_energy"])
    assert max_rel(f, ref[f"{case}_forces"]) <= 1e-9
    assert max_rel(virial, ref[f"{case}_virial"]) <= 1e-9
    if dedn is not None:  # deepmd's central difference (delta 1e-6) against the exact derivative
        assert abs(dedn - float(ref["dedn_value"])) <= 1e-6 * max(1.0, abs(dedn))
