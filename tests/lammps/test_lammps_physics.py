"""pair_style deepcomp in an in-process LAMMPS (one rank) against DeepPotential.compute_atoms.

Energies, forces, the global virial, per-atom energies (compute pe/atom) and per-atom virials
(compute stress/atom) must equal the Python reference on the same configuration to 1e-10
relative: orthogonal and triclinic boxes, hybrid/overlay (Python-returned virial), NULL
types under hybrid, and restart files.
"""

from __future__ import annotations

import importlib.metadata
import os

import numpy as np
import pytest
from lammps_helpers import (DATA_500, lammps, lammps_state, max_rel, model_file,  # noqa: F401 - fixtures
                            new_lammps, potential, setup_system)

pytestmark = pytest.mark.lammps


RTOL = 1e-10
# DeePMD-kit row-major 3x3 -> LAMMPS xx yy zz xy xz yz
TO_LAMMPS = [0, 4, 8, 3, 6, 7]

PER_ATOM = """
    compute pa all pe/atom
    compute sa all stress/atom NULL virial
    compute vir all pressure NULL virial
"""


def model_types(potential, lammps_types, names=("Cu", "Au")):
    index = {n: k for k, n in enumerate(potential.type_map)}
    return np.array([index[names[t - 1]] for t in lammps_types])


def lammps_results(lmp):
    """Energy, forces, global virial (LAMMPS order) and per-atom energy/virial, sorted by atom id."""
    order, x, t, f, cell = lammps_state(lmp)
    nktv2p = lmp.extract_global("nktv2p")
    volume = lmp.get_thermo("vol")
    pressure = np.array(lmp.numpy.extract_compute("vir", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
    n = len(order)
    eatom = np.array(lmp.numpy.extract_compute("pa", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR)[:n])[order]
    satom = np.array(lmp.numpy.extract_compute("sa", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY)[:n])[order]
    return {
        "x": x, "types": t, "cell": cell, "energy": lmp.get_thermo("pe"), "forces": f,
        "virial": pressure * volume / nktv2p,  # pressure NULL virial = W / V (in pressure units)
        "atom_energy": eatom, "atom_virial": -satom / nktv2p,  # stress/atom = -W_i (in pressure*volume)
    }


def check_against_reference(potential, got, mask=None):
    """Compare with compute_atoms; ``mask`` keeps a subset of atoms (NULL types under hybrid)."""
    x, types = got["x"], model_types(potential, got["types"])
    keep = np.ones(len(x), dtype=bool) if mask is None else mask
    ref = potential.compute_atoms(x[keep], types[keep], got["cell"], (True, True, True), atomic_virial=True)
    assert abs(got["energy"] - ref.energy) <= RTOL * abs(ref.energy)
    assert max_rel(got["forces"][keep], ref.forces) <= RTOL
    assert max_rel(got["virial"], ref.virial.reshape(9)[TO_LAMMPS]) <= RTOL
    assert max_rel(got["atom_energy"][keep], ref.atom_energy) <= RTOL
    assert max_rel(got["atom_virial"][keep], ref.atom_virial[:, TO_LAMMPS]) <= RTOL
    if mask is not None:
        assert np.all(got["forces"][~keep] == 0.0)
        assert np.all(got["atom_energy"][~keep] == 0.0)
    # sum rules
    assert abs(got["atom_energy"].sum() - got["energy"]) <= RTOL * abs(got["energy"])
    assert max_rel(got["atom_virial"].sum(axis=0), got["virial"]) <= 1e-9
    return ref


def run0(model_file, pair_lines: str, box_lines: str = "", log=None):
    lmp = new_lammps(log)
    setup_system(lmp)
    lmp.commands_string(box_lines)
    lmp.commands_string(pair_lines.format(model=model_file))
    lmp.commands_string(PER_ATOM + "\nthermo_style custom step pe press vol\nrun 0")
    return lmp


def test_plugin_is_registered():
    eps = [ep for ep in importlib.metadata.entry_points(group="lammps.plugins") if ep.name == "deepcomp"]
    assert eps, "the lammps.plugins entry point 'deepcomp' is not registered: reinstall deepcomp-ase"
    directory = eps[0].load()()
    assert os.path.isfile(os.path.join(directory, "deepcompplugin.so")), directory
    lmp = new_lammps()
    try:
        assert lmp.has_style("pair", "deepcomp"), "pair style deepcomp not loaded by LAMMPS"
    finally:
        lmp.close()


def test_orthogonal_box_matches_compute_atoms(model_file, potential):
    lmp = run0(model_file, "pair_style deepcomp {model}\npair_coeff * * Cu Au")
    try:
        got = lammps_results(lmp)
    finally:
        lmp.close()
    check_against_reference(potential, got)


def test_triclinic_box_matches_compute_atoms(model_file, potential):
    box = """
        change_box all triclinic
        change_box all xy final 1.9 xz final -1.3 yz final 0.8 remap units box
        displace_atoms all random 0.05 0.05 0.05 8123 units box
    """
    lmp = run0(model_file, "pair_style deepcomp {model}\npair_coeff * * Cu Au", box)
    try:
        assert lmp.extract_global("triclinic") == 1
        got = lammps_results(lmp)
    finally:
        lmp.close()
    check_against_reference(potential, got)


def test_hybrid_overlay_uses_python_virial(model_file, potential):
    """Under hybrid the sub-style cannot use F.r: the virial comes from Python."""
    lmp = run0(model_file, """
        pair_style hybrid/overlay deepcomp {model} zero 6.0
        pair_coeff * * deepcomp Cu Au
        pair_coeff * * zero
    """)
    try:
        got = lammps_results(lmp)
    finally:
        lmp.close()
    check_against_reference(potential, got)


def test_hybrid_null_type_is_left_out(model_file, potential):
    """pair_coeff * * deepcomp Cu NULL: the Au atoms do not exist for the model."""
    lmp = run0(model_file, """
        pair_style hybrid/overlay deepcomp {model} zero 6.0
        pair_coeff * * deepcomp Cu NULL
        pair_coeff * * zero
    """)
    try:
        got = lammps_results(lmp)
    finally:
        lmp.close()
    check_against_reference(potential, got, mask=got["types"] == 1)


def test_restart_reloads_model_and_settings(model_file, tmp_path):
    restart = tmp_path / "cuau.restart"
    lmp = run0(model_file, "pair_style deepcomp {model} check_frequency 7 overflow ignore\npair_coeff * * Cu Au")
    try:
        pe = lmp.get_thermo("pe")
        lmp.command(f"write_restart {restart}")
    finally:
        lmp.close()

    log = tmp_path / "log.restart"
    lmp = new_lammps(log)
    try:
        lmp.commands_string(f"read_restart {restart}\nthermo_style custom step pe\nrun 0")
        pe2 = lmp.get_thermo("pe")
    finally:
        lmp.close()
    assert abs(pe2 - pe) <= RTOL * abs(pe)
    text = log.read_text()
    assert "deepcomp: reloading model" in text
    assert "overflow check every 7 steps (ignore)" in text


def test_energy_unchanged_across_reneighboring(model_file, potential):
    """A short NVE run with frequent neighbour-list rebuilds: final state matches the reference."""
    lmp = new_lammps()
    try:
        setup_system(lmp)
        lmp.commands_string(f"""
            pair_style deepcomp {model_file}
            pair_coeff * * Cu Au
            neighbor 0.3 bin
            neigh_modify every 1 delay 0 check yes
            velocity all create 900.0 87287 dist gaussian
            fix 1 all nve
            timestep 0.002
            {PER_ATOM}
            thermo_style custom step pe press
            run 3
            run 0
        """)
        got = lammps_results(lmp)
    finally:
        lmp.close()
    check_against_reference(potential, got)


def test_real_units_are_converted(model_file, potential):
    """units real: same Angstrom, energies in kcal/mol (as pair_style deepmd: LAMMPS's Boltzmann
    constant of units real over that of units metal; other unit styles: test_lammps_compat.py)."""
    results = {}
    for units in ("metal", "real"):
        lmp = new_lammps()
        try:
            lmp.commands_string(f"""
                units {units}
                atom_style atomic
                atom_modify map array sort 0 0.0
                read_data {DATA_500}
                pair_style deepcomp {model_file}
                pair_coeff * * Cu Au
                {PER_ATOM}
                thermo_style custom step pe press vol
                run 0
            """)
            results[units] = lammps_results(lmp)
        finally:
            lmp.close()
    factor = 0.0019872067 / 8.617343e-5  # force->boltz of units real / of units metal
    metal, real = results["metal"], results["real"]
    assert abs(real["energy"] - factor * metal["energy"]) <= RTOL * abs(real["energy"])
    for key in ("forces", "virial", "atom_energy", "atom_virial"):
        assert max_rel(real[key], factor * metal[key]) <= RTOL, key
