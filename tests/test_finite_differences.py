"""Forces and virial against central differences of the energy (uncompressed and compressed)."""

import numpy as np
import pytest
from conftest import MODELS, Reference

from deepcomp_ase.potential import DeepPotential


def _energy(pot, coord, atype, box, pbc):
    return pot.compute_atoms(coord, atype, box, pbc, atomic_virial=False).energy


@pytest.fixture(scope="module", params=["uncompressed", "compressed"])
def potential(request, compressed_model):
    if request.param == "uncompressed":
        return DeepPotential.from_file(MODELS / "cuau_se_e2_a.dp")
    return DeepPotential.from_file(compressed_model("cuau_se_e2_a"))


@pytest.mark.parametrize("conf", ["p32_0", "cluster55", "stretched_1.53A"])
def test_forces_central_difference(potential, conf):
    ref = Reference("cuau_se_e2_a")
    coord, atype, box = ref.structure(conf)
    pbc = [box is not None] * 3
    res = potential.compute_atoms(coord, atype, box, pbc)
    rng = np.random.default_rng(0)
    atoms = rng.choice(len(coord), size=4, replace=False)
    if conf.startswith("stretched"):  # include the close pair: closest atoms
        dist = np.linalg.norm(coord[:, None] - coord[None], axis=-1) + np.eye(len(coord)) * 99
        atoms = np.unique(np.r_[atoms, np.unravel_index(np.argmin(dist), dist.shape)])
    h = 1e-5
    for a in atoms:
        for k in range(3):
            plus, minus = coord.copy(), coord.copy()
            plus[a, k] += h
            minus[a, k] -= h
            fd = -(_energy(potential, plus, atype, box, pbc) - _energy(potential, minus, atype, box, pbc)) / (2 * h)
            assert res.forces[a, k] == pytest.approx(fd, abs=2e-6), (a, k)


def test_virial_central_difference(potential):
    """W = -dE/d(strain) for a homogeneous deformation of cell and positions."""
    ref = Reference("cuau_se_e2_a")
    coord, atype, box = ref.structure("p32_1")
    pbc = [True] * 3
    res = potential.compute_atoms(coord, atype, box, pbc)
    h = 1e-6
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            e = []
            for sign in (1, -1):
                deform = np.eye(3) + sign * eps
                e.append(_energy(potential, coord @ deform, atype, box @ deform, pbc))
            fd[a, b] = -(e[0] - e[1]) / (2 * h)
    np.testing.assert_allclose(res.virial, fd, atol=2e-5)
    # the virial of an isolated-atom-free periodic system is symmetric
    np.testing.assert_allclose(res.virial, res.virial.T, atol=1e-9)
