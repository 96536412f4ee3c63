"""Decks written for pair_style deepmd run unchanged with pair_style deepcomp.

* ``pair_coeff * * deepcomp Cu Au NULL`` claims every pair of types, so under ``hybrid`` and
  ``hybrid/overlay`` another style may cover the NULL type alone (``pair_coeff 3 3 lj/cut``);
* bare ``pair_coeff * *`` maps types by position in the model's type_map;
* every unit style but lj: energies by the ratio of LAMMPS's Boltzmann constants, lengths by
  LAMMPS's Angstrom (real, si and electron against metal);
* ``compute centroid/stress/atom``: the 9 components of the model's per-atom virial.

References: DeepPotential.compute_atoms on the same configuration, LAMMPS's own lj/cut, and
DeePMD-kit 3.2.0's pair_style deepmd on the same decks (tests/data/make_lammps_compat_refs.py).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from lammps_helpers import (DATA_500, REPO, SOURCE_MODEL, lammps, lammps_state, max_rel, model_file,  # noqa: F401
                            new_lammps, potential, setup_system)

pytestmark = pytest.mark.lammps

# the decks of DeePMD-kit's references, shared with the script that made them
_spec = importlib.util.spec_from_file_location("make_lammps_compat_refs",
                                               REPO / "tests" / "data" / "make_lammps_compat_refs.py")
compat_refs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compat_refs)
THREE_TYPES = compat_refs.THREE_TYPES

RTOL = 1e-10
TO_LAMMPS = [0, 4, 8, 3, 6, 7]  # DeePMD-kit row-major 3x3 -> xx yy zz xy xz yz
TO_CENTROID = [0, 4, 8, 3, 6, 7, 1, 2, 5]  # -> xx yy zz xy xz yz yx zx zy
PER_ATOM = """
    compute pa all pe/atom
    compute sa all stress/atom NULL virial
    compute ca all centroid/stress/atom NULL virial
    compute vir all pressure NULL virial
    thermo_style custom step pe press vol
"""
def results(lmp) -> dict:
    """Energy, forces, virial and per-atom energy / virial (6 and 9 components) in LAMMPS's units,
    sorted by atom id; virials as W (sum r x f), not stresses."""
    order, x, _, _, cell = lammps_state(lmp)
    out = compat_refs.results(lmp, lammps)
    sa = np.array(lmp.numpy.extract_compute("sa", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY)[:len(order)])
    out.update(x=x, cell=cell, energy=float(out["energy"]), atom_virial=-sa[order] / lmp.extract_global("nktv2p"))
    return out


def run(commands: str, log=None) -> dict:
    lmp = new_lammps(log)
    try:
        lmp.commands_string(commands + PER_ATOM + "\nrun 0")
        return results(lmp)
    finally:
        lmp.close()


def model_reference(potential, got, keep) -> dict:
    """compute_atoms on the atoms ``keep`` (types 1 Cu, 2 Au), spread back over all atoms (zero elsewhere)."""
    index = {name: k for k, name in enumerate(potential.type_map)}
    types = np.array([index[("Cu", "Au")[t - 1]] for t in got["types"][keep]])
    ref = potential.compute_atoms(got["x"][keep], types, got["cell"], (True, True, True), atomic_virial=True)
    n = len(got["x"])
    out = {"energy": ref.energy, "virial": ref.virial.reshape(9)[TO_LAMMPS], "forces": np.zeros((n, 3)),
           "atom_energy": np.zeros(n), "atom_virial": np.zeros((n, 6)), "centroid": np.zeros((n, 9))}
    out["forces"][keep] = ref.forces
    out["atom_energy"][keep] = ref.atom_energy
    out["atom_virial"][keep] = ref.atom_virial[:, TO_LAMMPS]
    out["centroid"][keep] = ref.atom_virial[:, TO_CENTROID]
    return out


def assert_close(got: dict, want: dict, keys=("forces", "virial", "atom_energy", "atom_virial", "centroid")):
    assert abs(got["energy"] - want["energy"]) <= RTOL * abs(want["energy"]), (got["energy"], want["energy"])
    for key in keys:
        assert max_rel(got[key], want[key]) <= RTOL, key


# ---------------------------------------------------------------------- centroid/stress/atom
def test_centroid_stress_has_the_models_nine_components(model_file, potential):
    """9 components = the model's per-atom virial; the first 6 = stress/atom; they sum to the virial."""
    box = """
        change_box all triclinic
        change_box all xy final 1.9 xz final -1.3 yz final 0.8 remap units box
        displace_atoms all random 0.05 0.05 0.05 8123 units box
    """
    lmp = new_lammps()
    try:
        setup_system(lmp)
        lmp.commands_string(box + f"pair_style deepcomp {model_file}\npair_coeff * * Cu Au\n" + PER_ATOM + "run 0")
        got = results(lmp)
    finally:
        lmp.close()
    assert_close(got, model_reference(potential, got, np.ones(len(got["x"]), dtype=bool)))
    assert np.array_equal(got["centroid"][:, :6], got["atom_virial"])
    # per-atom virials are not symmetric, their sum is
    assert max_rel(got["centroid"][:, 3:6], got["centroid"][:, 6:]) > 1e-3
    total = got["centroid"].sum(axis=0)
    assert max_rel(total, np.concatenate([got["virial"], got["virial"][3:]])) <= 1e-9


# ---------------------------------------------------------------------- NULL types under hybrid
@pytest.mark.parametrize("style", ["hybrid", "hybrid/overlay"])
def test_null_type_left_to_another_style(model_file, potential, style):
    """``pair_coeff * * deepcomp Cu Au NULL`` + ``pair_coeff 3 3 lj/cut``: no pair is left unset
    (1-3 and 2-3 belong to deepcomp, which leaves type 3 out); the sum of the model on types 1, 2
    and lj/cut on type 3 alone, per-atom virials (6 and 9 components) included."""
    lj = "0.02 2.6"
    got = run(THREE_TYPES + f"""
        pair_style {style} deepcomp {model_file} lj/cut 5.0
        pair_coeff * * deepcomp Cu Au NULL
        pair_coeff 3 3 lj/cut {lj}
    """)
    only_lj = run(THREE_TYPES + f"""
        pair_style lj/cut 5.0
        pair_coeff * * 0.0 1.0
        pair_coeff 3 3 {lj}
    """)
    keep = got["types"] < 3
    assert 0 < (~keep).sum() < len(keep)
    assert abs(only_lj["energy"]) > 1e-3  # the lj part is there to be seen
    ref = model_reference(potential, got, keep)
    want = {key: ref[key] + only_lj[key] for key in ref}
    assert_close(got, want)


def test_null_type_under_plain_style_is_warned_and_left_out(model_file, potential, tmp_path):
    """As pair_style deepmd, NULL also works without hybrid: those atoms get no force (a warning says so)."""
    log = tmp_path / "log.lammps"
    got = run(THREE_TYPES + f"pair_style deepcomp {model_file}\npair_coeff * * Cu Au NULL\n", log)
    keep = got["types"] < 3
    assert_close(got, model_reference(potential, got, keep))
    assert np.all(got["forces"][~keep] == 0.0)
    text = log.read_text()
    assert "WARNING: pair_coeff deepcomp: atom type(s) 3 are NULL" in text, text[-2000:]


# ---------------------------------------------------------------------- bare pair_coeff * *
def test_bare_pair_coeff_maps_types_by_position(model_file, potential):
    assert list(potential.type_map)[:2] == ["Cu", "Au"]
    named = run(f"units metal\natom_style atomic\natom_modify map array sort 0 0.0\nread_data {DATA_500}\n"
                f"pair_style deepcomp {model_file}\npair_coeff * * Cu Au\n")
    bare = run(f"units metal\natom_style atomic\natom_modify map array sort 0 0.0\nread_data {DATA_500}\n"
               f"pair_style deepcomp {model_file}\npair_coeff * *\n")
    for key in ("energy", "forces", "virial", "centroid"):
        assert np.array_equal(bare[key], named[key]), key


def test_bare_pair_coeff_with_more_types_than_elements_is_refused(model_file):
    lmp = new_lammps()
    try:
        lmp.commands_string(THREE_TYPES + f"pair_style deepcomp {model_file}")
        with pytest.raises(Exception, match=r"3 atom types but model .* only 2 elements"):
            lmp.commands_string("pair_coeff * *\nrun 0")
    finally:
        lmp.close()


def test_bare_pair_coeff_with_fewer_types_warns(model_file, tmp_path):
    log = tmp_path / "log.lammps"
    lmp = new_lammps(log)
    try:
        lmp.commands_string(f"""
            units metal
            region box block 0 12 0 12 0 12
            create_box 1 box
            create_atoms 1 random 40 4321 NULL overlap 2.0
            mass 1 63.5
            pair_style deepcomp {model_file}
            pair_coeff * *
            run 0
        """)
    finally:
        lmp.close()
    assert "maps the 1 atom types onto the first 1 of the model's elements" in log.read_text()


# ---------------------------------------------------------------------- unit styles
@pytest.fixture(scope="module")
def metal_state(model_file):
    lmp = new_lammps()
    try:
        setup_system(lmp)
        lmp.commands_string(f"pair_style deepcomp {model_file}\npair_coeff * * Cu Au\n" + PER_ATOM + "run 0")
        return results(lmp), lmp.extract_global("boltz")
    finally:
        lmp.close()


def run_in_units(units: str, x, types, cell, pair: str) -> tuple[dict, float, float]:
    """The metal configuration rebuilt in ``units`` (lengths times LAMMPS's Angstrom)."""
    lmp = new_lammps()
    try:
        compat_refs.build_in_units(lmp, units, x, types, np.diag(cell))
        lmp.commands_string(pair + PER_ATOM + "run 0")
        return results(lmp), lmp.extract_global("boltz"), lmp.extract_global("angstrom")
    finally:
        lmp.close()


@pytest.mark.parametrize(("units", "ev", "angstrom"), [
    ("real", 23.060549, 1.0),  # kcal/mol per eV
    ("si", 1.602176634e-19, 1e-10),  # J per eV, m per Angstrom
    ("electron", 1.0 / 27.211386, 1.8897261),  # Hartree per eV, Bohr per Angstrom
])
def test_unit_styles_give_the_physics_of_metal(model_file, metal_state, units, ev, angstrom):
    """Energies times boltz(units)/boltz(metal), lengths times angstrom, as pair_style deepmd
    converts; LAMMPS's constants agree with the physical ones to ~1e-6."""
    metal, boltz_metal = metal_state
    got, boltz, ang = run_in_units(units, metal["x"], metal["types"], metal["cell"],
                                   f"pair_style deepcomp {model_file}\npair_coeff * * Cu Au\n")
    e = boltz / boltz_metal
    assert e == pytest.approx(ev, rel=2e-6) and ang == pytest.approx(angstrom, rel=1e-6)
    assert abs(got["energy"] - e * metal["energy"]) <= RTOL * abs(e * metal["energy"])
    assert max_rel(got["forces"], metal["forces"] * e / ang) <= RTOL
    for key in ("virial", "atom_energy", "atom_virial", "centroid"):
        assert max_rel(got[key], metal[key] * e) <= RTOL, key


def test_si_default_skin_is_refused_with_the_fix(model_file):
    """LAMMPS's si default skin (1 mm) would fill it with ghost atoms for minutes before failing."""
    lmp = new_lammps()
    try:
        lmp.commands_string(f"""
            units si
            region box block 0 12e-10 0 12e-10 0 12e-10 units box
            create_box 2 box
            create_atoms 1 random 20 4321 NULL overlap 2.0e-10
            mass * 1e-25
            pair_style deepcomp {model_file}
            pair_coeff * * Cu Au
        """)
        with pytest.raises(Exception, match=r"neighbor skin 0.001 is .* times the model cutoff .*'neighbor 2e-10 bin'"):
            lmp.command("run 0")
    finally:
        lmp.close()


def test_model_deviation_in_si_units(model_file, metal_state, tmp_path):
    """The deviation file in LAMMPS units: forces in N, virials per atom in J; ``relative`` is a
    force and ``relative_v`` an energy in LAMMPS units."""
    from deepcomp_ase.model_devi import read_model_devi

    second = SOURCE_MODEL.with_name("cuau_se_e2_r.dp")
    metal, _ = metal_state
    out = {}
    for units in ("metal", "si"):
        e, ang = (1.0, 1.0) if units == "metal" else (None, None)
        lmp = new_lammps()
        try:
            lmp.command(f"units {units}")
            e = lmp.extract_global("boltz") / 8.617343e-5
            ang = lmp.extract_global("angstrom")
        finally:
            lmp.close()
        path = tmp_path / f"devi_{units}.out"
        run_in_units(units, metal["x"], metal["types"], metal["cell"],
                     f"pair_style deepcomp {model_file} {second} out_freq 1 out_file {path} "
                     f"relative {1.0 * e / ang!r} relative_v {0.5 * e!r} atomic\npair_coeff * * Cu Au\n")
        out[units] = (read_model_devi(path), e, ang)
    rows_metal, _, _ = out["metal"]
    rows_si, e, ang = out["si"]
    assert rows_metal.shape == rows_si.shape == (1, 7 + 500)
    assert rows_metal[0, 1] > 0.0
    scale = np.concatenate([[1.0], [e] * 3, [e / ang] * (3 + 500)])
    np.testing.assert_allclose(rows_si, rows_metal * scale, rtol=2e-6)


# ---------------------------------------------------------------------- against pair_style deepmd
@pytest.mark.parametrize("case", compat_refs.CASES)
def test_same_as_pair_style_deepmd(metal_state, case):
    """The decks DeePMD-kit 3.2.0's pair_style deepmd ran (hybrid/overlay with a NULL type, units
    real and si), with the same model file: the same numbers in LAMMPS's units."""
    ref = np.load(REPO / "tests" / "data" / "lammps_compat" / "deepmd_refs.npz")
    model = REPO / "tests" / "data" / "models" / "cuau_se_e2_a.pb"
    lmp = new_lammps()
    try:
        if case != "overlay_null":
            metal, _ = metal_state
            compat_refs.build_in_units(lmp, case, metal["x"], metal["types"], np.diag(metal["cell"]))
        lmp.commands_string(compat_refs.deck(case, "deepcomp", str(model)) + PER_ATOM + "run 0")
        got = results(lmp)
    finally:
        lmp.close()
    assert np.array_equal(got["types"], ref[f"{case}_types"])
    energy = float(ref[f"{case}_energy"])
    assert abs(got["energy"] - energy) <= RTOL * abs(energy)
    for key in ("forces", "virial", "atom_energy", "centroid"):
        assert max_rel(got[key], ref[f"{case}_{key}"]) <= 1e-9, key
