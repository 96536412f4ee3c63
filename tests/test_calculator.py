"""The ASE calculator: properties, conventions, MD and optimisers, overflow check."""

import logging

import numpy as np
import pytest
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from conftest import MODELS, Reference

from deepcomp_ase import DeepCompCalculator
from deepcomp_ase.errors import TableOverflowError, TypeMapError
from deepcomp_ase.md import thermalize


def atoms_of(ref: Reference, conf: str) -> Atoms:
    coord, atype, box = ref.structure(conf)
    symbols = [ref.z["type_map"][t] for t in atype]
    if box is None:
        return Atoms(symbols, positions=coord)
    return Atoms(symbols, positions=coord, cell=box, pbc=True)


def test_properties_match_reference(compressed_model):
    ref = Reference("cuau_se_e2_a")
    atoms = atoms_of(ref, "p108_2")
    atoms.calc = DeepCompCalculator(compressed_model("cuau_se_e2_a"))
    out = ref.output("p108_2", "compress")
    assert atoms.get_potential_energy() == pytest.approx(float(out["energy"]), abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), out["force"], atol=1e-9)
    np.testing.assert_allclose(atoms.get_potential_energies(), out["atom_energy"], atol=1e-9)
    virial = atoms.calc.get_property("virial")
    np.testing.assert_allclose(virial, out["virial"], atol=1e-8)
    stress = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(stress, -0.5 * (out["virial"] + out["virial"].T) / atoms.get_volume(), atol=1e-10)
    stresses = atoms.get_stresses()
    assert stresses.shape == (len(atoms), 6)
    np.testing.assert_allclose(stresses.sum(0), atoms.get_stress(), atol=1e-10)


def test_cluster_has_no_stress():
    ref = Reference("cuau_se_e2_a")
    atoms = atoms_of(ref, "cluster55")
    atoms.calc = DeepCompCalculator(MODELS / "cuau_se_e2_a.dp")
    out = ref.output("cluster55", "pb")
    np.testing.assert_allclose(atoms.get_forces(), out["force"], atol=1e-9)
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_unknown_element():
    atoms = Atoms("CuAg", positions=[[0, 0, 0], [2.5, 0, 0]])
    atoms.calc = DeepCompCalculator(MODELS / "cuau_se_e2_a.dp")
    with pytest.raises(TypeMapError, match="Ag"):
        atoms.get_potential_energy()


def test_nve_energy_is_conserved(compressed_model):
    ref = Reference("cu_se_e2_a_tanh")
    atoms = atoms_of(ref, "p32_1")
    atoms.calc = DeepCompCalculator(compressed_model("cu_se_e2_a_tanh"))
    thermalize(atoms, 300, np.random.default_rng(3))
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    e0 = atoms.get_total_energy()
    energies = []
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=5)
    dyn.run(60)
    assert max(abs(e - e0) for e in energies) / len(atoms) < 2e-4


def test_optimiser_lowers_the_energy(compressed_model):
    ref = Reference("cu_se_e2_a_tanh")
    atoms = atoms_of(ref, "p32_2")
    atoms.calc = DeepCompCalculator(compressed_model("cu_se_e2_a_tanh"))
    e0 = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=60)
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_forces()).max() < 0.05 * 1.01


def test_overflow_checked_every_n_steps(compressed_model, caplog):
    ref = Reference("cuau_se_e2_a")
    atoms = atoms_of(ref, "overflow_0.30A")
    calc = DeepCompCalculator(compressed_model("cuau_se_e2_a"), check_frequency=2)
    atoms.calc = calc
    def warnings():  # the backend's one-time INFO lines may reach caplog, depending on test order
        return [r for r in caplog.records if r.levelno >= logging.WARNING]

    with caplog.at_level(logging.WARNING, logger="deepcomp_ase"):
        atoms.get_potential_energy()
        assert calc.overflow_counts["beyond_table"] == 2 and not warnings()
        atoms.positions[0, 0] += 1e-4
        atoms.get_potential_energy()  # second call: the check runs
    assert len(warnings()) == 1
    message = warnings()[0].getMessage()
    assert "4 beyond it" in message and "type pair" in message and "worst input" in message
    assert calc.overflow_counts["beyond_table"] == 0  # reset after the check
    assert calc.overflow_total["beyond_table"] == 4


def test_overflow_error_policy(compressed_model):
    ref = Reference("cuau_se_e2_a")
    atoms = atoms_of(ref, "overflow_0.15A")
    atoms.calc = DeepCompCalculator(compressed_model("cuau_se_e2_a"), check_frequency=1, overflow="error")
    with pytest.raises(TableOverflowError, match="beyond it"):
        atoms.get_potential_energy()


def test_cuau_500_cell_matches_deepmd_lammps_anchor(compressed_model):
    """The refsuite's LAMMPS speed anchor: DeePMD-kit's LAMMPS run printed E = 34.915439 eV on cuau_500.

    (Its DeepPot value 34.915439115628 came from coordinates rounded differently from the data file, which
    moves the energy by ~1e-7 eV, so only the printed digits are an oracle here.)"""
    from ase.io import read

    from conftest import DATA

    atoms = read(DATA / "cuau_500.lmp", format="lammps-data", atom_style="atomic")
    atoms.set_chemical_symbols(np.where(atoms.get_array("type") == 1, "Cu", "Au"))
    atoms.calc = DeepCompCalculator(MODELS / "cuau_se_e2_a.dp")
    exact = atoms.get_potential_energy()
    assert exact == pytest.approx(34.915439, abs=5e-7)
    atoms.calc = DeepCompCalculator(compressed_model("cuau_se_e2_a"))
    assert atoms.get_potential_energy() == pytest.approx(exact, abs=1e-10)
