"""``pair_style deepcomp M1 M2 M3 M4 out_freq N out_file F [relative X] [relative_v Y] [atomic]``.

The model_devi files of DeePMD-kit 3.2.0's ``pair_style deepmd`` with the same four models on the
same deck (tests/data/model_devi, made by tests/data/make_model_devi_refs.py) are the oracle: ours
must agree to the printed precision with our compressed (.dcz) and uncompressed (.dp/.pb) models
mixed, on 1 and 2 ranks; the first model drives the dynamics (the thermo matches too). Bad input
ends in a LAMMPS error on every rank without a hang.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from lammps_helpers import DATA_500, REPO, compress_models, lammps_error, new_lammps, run_lmp, thermo_table

pytestmark = pytest.mark.lammps

REFS = REPO / "tests" / "data" / "model_devi"
MODELS = REPO / "tests" / "data" / "models"
DECK = REFS / "in.model_devi"
DATA = REPO / "tests" / "data" / "cuau_500.lmp"
NAMES = ("cuau_se_e2_a", "cuau_se_e2_r", "cuau_hybrid", "cuau_se_e3")
OPTIONS = {"lammps_plain": "out_freq 5", "lammps_rel_atomic": "out_freq 5 relative 1.0 relative_v 1.0 atomic"}


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> dict:
    return compress_models(tmp_path_factory.mktemp("model_devi_models"), NAMES)


def model_list(compressed: dict, first_compressed: bool) -> list[Path]:
    """Compressed and uncompressed models alternate (.dp and .pb for the uncompressed ones)."""
    files = []
    for k, name in enumerate(NAMES):
        if (k % 2 == 0) == first_compressed:
            files.append(compressed[name])
        else:
            files.append(MODELS / (f"{name}.pb" if k == 2 else f"{name}.dp"))
    return files


def assert_same_model_devi(ours: str, ref: str):
    """Same header and row layout byte for byte; the same numbers to the printed precision."""
    a, b = ours.splitlines(), ref.splitlines()
    assert a[0] == b[0]
    assert len(a) == len(b), f"{len(a)} lines, DeePMD-kit wrote {len(b)}"
    for la, lb in zip(a[1:], b[1:]):
        assert [len(t) for t in re.findall(r" *\S+", la)] == [len(t) for t in re.findall(r" *\S+", lb)]
        np.testing.assert_allclose([float(t) for t in la.split()], [float(t) for t in lb.split()], rtol=1e-6,
                                   atol=1e-12)


@pytest.mark.parametrize("nprocs", [1, pytest.param(2, marks=[pytest.mark.slow, pytest.mark.mpi])])
# the fast loop runs the deck once (every option, models mixed); the plain file with the other
# mix of compressed and uncompressed models runs with the slow tests
@pytest.mark.parametrize("case", [c if c == "lammps_rel_atomic" else pytest.param(c, marks=pytest.mark.slow)
                                  for c in OPTIONS])
def test_model_devi_equals_pair_style_deepmd(tmp_path, compressed, case, nprocs):
    models = model_list(compressed, first_compressed=(case == "lammps_plain"))
    (tmp_path / "pair.in").write_text(f"pair_style deepcomp {' '.join(map(str, models))} out_file md.out "
                                      f"{OPTIONS[case]}\npair_coeff * * Cu Au\n")
    shutil.copy(DECK, tmp_path / "in.model_devi")
    rc, out, _ = run_lmp((tmp_path / "in.model_devi").read_text(), tmp_path, nprocs=nprocs,
                         variables={"data": DATA})
    assert rc == 0, out[-4000:]
    assert_same_model_devi((tmp_path / "md.out").read_text(), (REFS / f"{case}.out").read_text())
    # the first model drives: DeePMD-kit's thermo with its first model
    _, ours = thermo_table(out)
    _, ref = thermo_table((REFS / f"{case}.thermo").read_text() + "Loop time\n")
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-6)


def error_cases(compressed: dict, tmp: Path) -> list[tuple[str, str]]:
    a, b = compressed["cuau_se_e2_a"], MODELS / "cuau_se_e2_r.dp"
    cu_only = MODELS / "cu_se_e2_a_tanh.dp"
    return [
        (f"pair_style deepcomp {a} {cu_only} out_file {tmp}/x.out\npair_coeff * * Cu Au",
         r"'Au' given for atom type 2 is not in the type_map .* must share the pair_coeff elements"),
        (f"pair_style deepcomp {a} {tmp}/missing.dcz out_file {tmp}/x.out\npair_coeff * * Cu Au",
         r"keyword '\S*missing\.dcz': neither a keyword .* nor a readable model file"),
        (f"pair_style deepcomp {tmp}/missing.dcz {a} out_file {tmp}/x.out\npair_coeff * * Cu Au",
         r"missing\.dcz: model file not found"),
        (f"pair_style deepcomp {a} {b} out_file {tmp}/no/such/dir/x.out\npair_coeff * * Cu Au",
         r"cannot write the model deviation file out_file .*no/such/dir/x\.out"),
        (f"pair_style deepcomp {a} {b} atomic\npair_coeff * * Cu Au", r"atomic needs out_file"),
        (f"pair_style deepcomp {a} {b} out_freq -1\npair_coeff * * Cu Au", r"out_freq -1: must be >= 0"),
    ]


def test_bad_input_errors(compressed, tmp_path):
    for commands, expected in error_cases(compressed, tmp_path):
        message = lammps_error(commands)
        assert re.search(expected, message), (commands, message)


@pytest.mark.slow
@pytest.mark.mpi
def test_bad_input_errors_on_every_rank(compressed, tmp_path):
    """2 ranks: every rank stops with the error (error->all), no hang (run_lmp kills and fails on timeout)."""
    for k, (commands, expected) in enumerate(error_cases(compressed, tmp_path)):
        work = tmp_path / f"case{k}"
        work.mkdir()
        deck = f"units metal\natom_style atomic\nread_data {DATA_500}\n{commands}\nrun 0\n"
        rc, out, _ = run_lmp(deck, work, nprocs=2, timeout=180)
        assert rc != 0, out[-3000:]
        assert "ERROR: " in out, out[-3000:]
        assert re.search(expected, out), out[-3000:]
        assert "MPI_ABORT" not in out and "ERROR on proc 1" not in out, out[-3000:]


def test_one_model_keeps_single_model_behaviour(compressed, tmp_path):
    """No model deviation with one model: no file is written (the keywords only warn)."""
    lmp = new_lammps()
    try:
        lmp.commands_string(f"units metal\natom_style atomic\nread_data {DATA_500}\n"
                            f"pair_style deepcomp {compressed['cuau_se_e2_a']} out_file {tmp_path}/one.out\n"
                            "pair_coeff * * Cu Au\nrun 0")
        assert not (tmp_path / "one.out").exists()
    finally:
        lmp.close()


def model_with_rcut(src: Path, dst: Path, rcut: float) -> Path:
    """A copy of a DeePMD-kit .dp model with another descriptor cutoff (a different, still valid model)."""
    import json

    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        tree = json.loads(f.attrs["json"])
        tree["model"]["descriptor"]["rcut"] = rcut
        tree["model"]["descriptor"]["env_mat"]["rcut"] = rcut  # the record must agree with it
        f.attrs["json"] = json.dumps(tree)
    return dst


@pytest.mark.parametrize("small_first", [False, True])
def test_models_with_different_cutoffs(tmp_path, compressed, small_first):
    """One list at the largest cutoff; each model sees its own: LAMMPS equals model_devi_frames (ASE neighbours)."""
    from ase.io import read

    from deepcomp_ase.ensemble import model_devi_frames
    from deepcomp_ase.model_devi import read_model_devi

    small = model_with_rcut(MODELS / "cuau_se_e2_r.dp", tmp_path / "se_e2_r_rc4.5.dp", 4.5)
    models = [small, compressed["cuau_se_e2_a"]] if small_first else [compressed["cuau_se_e2_a"], small]
    lmp = new_lammps()
    try:
        lmp.commands_string(f"units metal\natom_style atomic\natom_modify map array sort 0 0.0\nread_data {DATA}\n"
                            f"pair_style deepcomp {models[0]} {models[1]} out_freq 1 out_file {tmp_path}/md.out "
                            "atomic\npair_coeff * * Cu Au\nrun 0")
    finally:
        lmp.close()
    ours = read_model_devi(tmp_path / "md.out")
    atoms = read(DATA, format="lammps-data", atom_style="atomic")
    atoms.set_chemical_symbols(["Cu" if t == 1 else "Au" for t in atoms.get_array("type")])
    (devi,) = model_devi_frames(models, atoms.positions[None], atoms.get_chemical_symbols(), atoms.cell.array[None],
                                True)
    np.testing.assert_allclose(ours[0, 1:7], devi.row(), rtol=1e-6)
    ids = atoms.get_array("id") if "id" in atoms.arrays else np.arange(1, len(atoms) + 1)
    np.testing.assert_allclose(ours[0, 7:][ids - 1], devi.atom_devi_f, rtol=1e-6, atol=1e-12)
