"""Wrong input to pair_style deepcomp ends in a LAMMPS error with a clear message (no crash)."""

from __future__ import annotations

import re

import pytest
from lammps_helpers import DATA_500, compressed_model, lammps_error, new_lammps

pytestmark = pytest.mark.lammps


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    return compressed_model(tmp_path_factory)


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        ("pair_style deepcomp {model}\npair_coeff * * Cu Ag", r"'Ag' given for atom type 2 is not in the type_map"),
        ("pair_style deepcomp {model}\npair_coeff * * Cu", r"one element name \(or NULL\) per atom type"),
        ("pair_style deepcomp {model}\npair_coeff 1 2 Cu Au", r"\* \*"),
        ("pair_style deepcomp /nonexistent/model.dcz\npair_coeff * * Cu Au", r"model file not found"),
        ("pair_style deepcomp {model} overflow sometimes\npair_coeff * * Cu Au", r"'sometimes' for keyword overflow"),
        ("pair_style deepcomp {model} colour blue\npair_coeff * * Cu Au", r"keyword 'colour'"),
        ("pair_style deepcomp {model} check_frequency\npair_coeff * * Cu Au", r"check_frequency needs a value"),
        ("pair_style deepcomp", r"Illegal pair_style deepcomp command"),
        ("newton off on\npair_style deepcomp {model}\npair_coeff * * Cu Au", r"requires newton pair on"),
        ("pair_style deepcomp {model}\npair_coeff * * NULL NULL", r"every type is NULL"),
        ("pair_style deepcomp {model} device cuda\npair_coeff * * Cu Au", r"device cuda"),
    ],
)
def test_input_errors(model_file, commands, expected):
    message = lammps_error(commands.format(model=model_file))
    assert re.search(expected, message), message


def test_units_lj_is_refused(model_file):
    """As pair_style deepmd: every unit style but lj (which has no eV or Angstrom)."""
    message = lammps_error(f"pair_style deepcomp {model_file}\npair_coeff * * Cu Au", units="lj")
    assert "cannot use 'units lj'" in message and "units metal" in message, message


def test_precision_single(model_file):
    """float32 runs on the compiled backends; without one the refusal says what to install."""
    from deepcomp_ase.backends import available

    if not available("numba"):
        assert "float32 needs numba" in lammps_error(
            f"pair_style deepcomp {model_file} precision single\npair_coeff * * Cu Au")
        return
    from lammps_helpers import setup_system

    energies = {}
    for precision in ("double", "single"):
        lmp = new_lammps()
        try:
            setup_system(lmp)
            lmp.commands_string(f"pair_style deepcomp {model_file} device cpu precision {precision}\n"
                                "pair_coeff * * Cu Au\nrun 0")
            energies[precision] = lmp.get_thermo("pe")
        finally:
            lmp.close()
    assert energies["single"] == pytest.approx(energies["double"], rel=1e-6, abs=1e-4)


def test_two_atoms_at_one_place(model_file):
    """Atom 2 moved onto atom 1: an error naming both atoms and their distance (no NaN forces)."""
    lmp = new_lammps()
    try:
        lmp.commands_string(f"units metal\natom_style atomic\natom_modify map array\nread_data {DATA_500}\n"
                            "variable x1 equal x[1]\nvariable y1 equal y[1]\nvariable z1 equal z[1]\n"
                            "set atom 2 x ${x1} y ${y1} z ${z1}\n"
                            f"pair_style deepcomp {model_file}\npair_coeff * * Cu Au")
        with pytest.raises(Exception) as info:
            lmp.command("run 0")
        message = str(info.value)
    finally:
        lmp.close()
    atom = r"(atom ID \d+|local atom \d+|ghost atom \d+)"
    assert re.search(rf"AtomsTooCloseError: {atom} and {atom} are [0-9.e+-]+ A apart", message), message
