"""Bad structures get a named error on every backend (issue 13): two atoms at one place, NaN/inf.

The oracle of "no error" cases is the numpy reference on the same structure; the refused cases
check the error class, the atoms named and the distance.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from conftest import MODELS

from deepcomp_ase.backends import available
from deepcomp_ase.calculator import DeepCompCalculator
from deepcomp_ase.errors import AtomsTooCloseError, DeepCompError, NonFiniteInputError
from deepcomp_ase.potential import DeepPotential
from deepcomp_ase.validate import MIN_DISTANCE

BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not available("numba"), reason="no numba"))]


@pytest.fixture(scope="module")
def model_file(compressed_model):
    return compressed_model("cuau_se_e2_a")


def crystal():
    """32 Cu/Au atoms, fcc, periodic."""
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    atoms.symbols[::3] = "Au"
    atoms.rattle(0.05, seed=1)
    return atoms


def pot(path, backend, precision="float64"):
    return DeepPotential.from_file(path, backend=backend, precision=precision, overflow="ignore")


def args(atoms, potential):
    return atoms.positions.copy(), potential.types_of(atoms.get_chemical_symbols()), atoms.cell.array, atoms.pbc


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offset", [0.0, 1e-12, 1e-7, 5e-4])
def test_two_atoms_at_one_place(model_file, backend, offset):
    p = pot(model_file, backend)
    pos, types, cell, pbc = args(crystal(), p)
    pos[7] = pos[3] + [offset, 0.0, 0.0]
    with pytest.raises(AtomsTooCloseError) as info:
        p.compute_atoms(pos, types, cell, pbc)
    assert set(info.value.atoms) == {3, 7}
    assert info.value.distance == pytest.approx(offset, abs=1e-15)
    message = str(info.value)
    assert "atom 3" in message and "atom 7" in message and "same position" in message, message
    assert isinstance(info.value, DeepCompError)


@pytest.mark.parametrize("backend", BACKENDS)
def test_atom_on_a_periodic_image_of_another(model_file, backend):
    p = pot(model_file, backend)
    pos, types, cell, pbc = args(crystal(), p)
    pos[7] = pos[3] + cell[0]  # same place, one cell over
    with pytest.raises(AtomsTooCloseError, match=r"atom [37] and atom [37] are 0 A apart"):
        p.compute_atoms(pos, types, cell, pbc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_uncompressed_model_and_float32(backend):
    """The exact-net path (uncompressed) and, where compiled, float32 refuse the same way."""
    for precision in (("float64", "float32") if backend == "numba" else ("float64",)):
        p = pot(MODELS / "cuau_se_e2_a.dp", backend, precision)
        pos, types, cell, pbc = args(crystal(), p)
        pos[0] = pos[5]
        with pytest.raises(AtomsTooCloseError, match="atom 0 and atom 5|atom 5 and atom 0"):
            p.compute_atoms(pos, types, cell, pbc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_close_but_not_coincident_still_evaluates(model_file, backend):
    """Just above the limit the potential evaluates (finite, the numpy reference's numbers)."""
    ref = pot(model_file, "numpy")
    p = pot(model_file, backend)
    pos, types, cell, pbc = args(crystal(), p)
    pos[7] = pos[3] + [2 * MIN_DISTANCE, 0.0, 0.0]
    res = p.compute_atoms(pos, types, cell, pbc)
    want = ref.compute_atoms(pos, types, cell, pbc)
    assert np.isfinite(res.energy) and np.isfinite(res.forces).all()
    assert res.energy == pytest.approx(want.energy, rel=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_position(model_file, backend, bad):
    p = pot(model_file, backend)
    pos, types, cell, pbc = args(crystal(), p)
    pos[11, 1] = bad
    with pytest.raises(NonFiniteInputError, match=r"^atom 11 has position \[.*(nan|inf)"):
        p.compute_atoms(pos, types, cell, pbc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_cell(model_file, backend):
    p = pot(model_file, backend)
    pos, types, cell, pbc = args(crystal(), p)
    cell = cell.copy()
    cell[2, 0] = np.nan
    with pytest.raises(NonFiniteInputError, match=r"cell vector 2 is \[nan"):
        p.compute_atoms(pos, types, cell, pbc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compute_pairs(model_file, backend):
    """The raw pair-list entry (LAMMPS's): a NaN vector and a zero vector, atoms named by index."""
    p = pot(model_file, backend)
    types = np.array([0, 1, 0, 1])
    centers = np.array([0, 1, 2, 3, 2])
    neighbors = np.array([1, 0, 3, 2, 0])
    vectors = np.array([[2.5, 0, 0], [-2.5, 0, 0], [0, 2.5, 0], [0, -2.5, 0], [0.0, 0.0, 0.0]])
    with pytest.raises(AtomsTooCloseError, match="atom 2 and atom 0 are 0 A apart"):
        p.compute_pairs(types, 4, centers, neighbors, vectors)
    vectors[4] = [np.nan, 1.0, 0.0]
    with pytest.raises(NonFiniteInputError, match=r"vector from atom 2 to atom 0 is \[nan, 1, 0\]"):
        p.compute_pairs(types, 4, centers, neighbors, vectors)
    vectors[4] = [2.5, 2.5, 0.0]
    assert np.isfinite(p.compute_pairs(types, 4, centers, neighbors, vectors).energy)


@pytest.mark.parametrize("backend", BACKENDS)
def test_calculator(model_file, backend):
    atoms = crystal()
    atoms.positions[9] = atoms.positions[2]
    atoms.calc = DeepCompCalculator(str(model_file), backend=backend)
    with pytest.raises(AtomsTooCloseError, match="atom (2|9) and atom (2|9) are 0 A apart"):
        atoms.get_potential_energy()
    atoms = crystal()
    atoms.positions[4, 2] = np.nan
    atoms.calc = DeepCompCalculator(str(model_file), backend=backend)
    with pytest.raises(NonFiniteInputError, match="atom 4 has position"):
        atoms.get_forces()


# ----------------------------------------------------------------------------- LAMMPS bridge
def lammps_view(atoms, model):
    """The arrays the LAMMPS plugin hands to the bridge: local + ghost atoms, full pair list, 1-based types."""
    from conftest import with_ghost_atoms

    types = model.types_of(atoms.get_chemical_symbols())
    atype_all, centers, neighbors, vectors, owner = with_ghost_atoms(atoms.positions, types, atoms.cell.array,
                                                                      model.rcut)
    ghost_pos = {}
    for c, n, v in zip(centers, neighbors, vectors):
        if n >= len(atoms):
            ghost_pos[int(n)] = atoms.positions[c] + v
    x = np.concatenate([atoms.positions, np.array([ghost_pos[k] for k in range(len(atoms), len(atype_all))])])
    tag = np.concatenate([np.arange(1, len(atoms) + 1), owner + 1]).astype(np.intc)
    return (np.ascontiguousarray(x), (atype_all + 1).astype(np.intc), centers.astype(np.intc),
            neighbors.astype(np.intc), tag)


def bridge_compute(model_file, atoms, with_tags: bool, edit=None):
    from deepcomp_ase.lammps import bridge

    lm = bridge.create(str(model_file), ["Cu", "Au"], 0, 0, 1, {"device": "cpu"})
    x, types, pi, pj, tag = lammps_view(atoms, lm.potential)
    if edit is not None:
        edit(x)
    f = np.zeros_like(x)
    return lm.compute(x, f, types, pi, pj, len(atoms), len(x) - len(atoms), None, None, 0, 7,
                      tag if with_tags else None)


@pytest.mark.parametrize("with_tags", [True, False])
def test_lammps_bridge_names_atoms(model_file, with_tags):
    """IDs when LAMMPS passes them, else local/ghost indices; the step and rank are named."""
    atoms = crystal()
    energy, _ = bridge_compute(model_file, atoms, with_tags)
    assert np.isfinite(energy)
    atoms.positions[9] = atoms.positions[2]
    with pytest.raises(AtomsTooCloseError) as info:
        bridge_compute(model_file, atoms, with_tags)
    names = ("atom ID 3", "atom ID 10") if with_tags else ("local atom 2", "local atom 9")
    message = str(info.value)
    assert all(n in message for n in names) and "0 A apart" in message and "step 7, MPI rank 0" in message, message

    def nan_atom(x):
        x[4, 0] = np.inf

    with pytest.raises(NonFiniteInputError, match=("atom ID 5" if with_tags else "local atom 4")
                       + r" has position \[inf, .*\(step 7, MPI rank 0\)"):
        bridge_compute(model_file, crystal(), with_tags, nan_atom)


# ----------------------------------------------------------------------------- command line
@pytest.mark.parametrize(("edit", "expected"), [
    (lambda a: a.positions.__setitem__(5, a.positions[2]), r"atom (2|5) and atom (2|5) are 0 A apart"),
    (lambda a: a.positions.__setitem__((6, 0), np.nan), r"atom 6 has position \[nan"),
])
def test_md_command_refuses_bad_structures(model_file, tmp_path, edit, expected):
    """``deepcomp md --structure`` prints one error line naming the atoms, exit status 1."""
    from ase.io import write

    atoms = crystal()
    edit(atoms)
    path = tmp_path / "bad.xyz"
    write(path, atoms, format="extxyz")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "deepcomp_ase", "md", str(model_file), "--structure", str(path),
                           "--steps", "2", "--backend", "numpy"], capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "RuntimeWarning" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"deepcomp md: error: " + expected, proc.stderr), proc.stderr[-2000:]
