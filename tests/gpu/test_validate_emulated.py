"""The CUDA backend (kernels compiled for the CPU) refuses two atoms at one place like the others:
the device neighbour list records the pair, the message is built on the host (issues 13, 25)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).parent))
from kernel_cases import host_emulation, needs_emulation  # noqa: E402,F401 - the fixture behind the mark

from deepcomp_ase.backends.cupy_gpu import Backend  # noqa: E402
from deepcomp_ase.errors import AtomsTooCloseError, NonFiniteInputError  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402
from deepcomp_ase.validate import MIN_DISTANCE  # noqa: E402

pytestmark = needs_emulation  # the kernels are compiled for the CPU when a test first runs


@pytest.fixture(scope="module")
def device_pots(compressed_model):
    """{precision: potential on the emulated device}, made at first use."""
    made = {}

    def get(precision):
        if precision not in made:
            p = DeepPotential.from_file(compressed_model("cuau_se_e2_a"), backend="numpy", overflow="ignore")
            p.backend = Backend(precision=precision, emulate=True)
            assert p.backend.builds_neighbors
            made[precision] = p
        return made[precision]

    return get


@pytest.fixture(scope="module", params=["float64", "float32"])
def device_pot(request, device_pots):
    return device_pots(request.param)


def structure(p):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    atoms.symbols[::3] = "Au"
    atoms.rattle(0.05, seed=1)
    return atoms.positions.copy(), p.types_of(atoms.get_chemical_symbols()), atoms.cell.array, atoms.pbc


# each case is a whole emulated step (~18 s of CPU): the fast loop keeps one, float32 runs with
# the slow tests (its kernels are checked one by one in test_kernels_emulated.py)
@pytest.mark.parametrize("precision, offset", [
    ("float64", 0.0),
    *[pytest.param(p, o, marks=pytest.mark.slow) for p, o in (("float64", 1e-9), ("float64", 5e-4),
                                                              ("float32", 0.0), ("float32", 1e-9),
                                                              ("float32", 5e-4))],
])
def test_two_atoms_at_one_place(device_pots, precision, offset):
    device_pot = device_pots(precision)
    pos, types, cell, pbc = structure(device_pot)
    pos[7] = pos[3] + [offset, 0.0, 0.0]
    with pytest.raises(AtomsTooCloseError) as info:
        device_pot.compute_atoms(pos, types, cell, pbc)
    assert set(info.value.atoms) == {3, 7}
    assert info.value.distance == pytest.approx(offset, abs=1e-7)
    assert "same position" in str(info.value)


@pytest.mark.slow  # the fast loop keeps test_two_atoms_at_one_place[float64-0.0] for the device check
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_just_above_the_limit_evaluates(device_pots, precision):
    device_pot = device_pots(precision)
    pos, types, cell, pbc = structure(device_pot)
    pos[7] = pos[3] + [2 * MIN_DISTANCE, 0.0, 0.0]
    assert np.isfinite(device_pot.compute_atoms(pos, types, cell, pbc).energy)


def test_nan_position(device_pot):
    pos, types, cell, pbc = structure(device_pot)
    pos[5, 0] = np.nan
    with pytest.raises(NonFiniteInputError, match="atom 5 has position"):
        device_pot.compute_atoms(pos, types, cell, pbc)
