"""Forces and virial against central differences of the energy (uncompressed and compressed)."""

import numpy as np
import pytest
from conftest import MODELS, Reference, central_difference_force, central_difference_virial

from deepcomp_ase.potential import DeepPotential


@pytest.fixture(scope="module", params=["uncompressed", "compressed"])
def potential(request, compressed_model):
    if request.param == "uncompressed":
        return DeepPotential.from_file(MODELS / "cuau_se_e2_a.dp", backend="numpy")
    return DeepPotential.from_file(compressed_model("cuau_se_e2_a"), backend="numpy")


@pytest.mark.parametrize("conf", ["p32_0", pytest.param("cluster55", marks=pytest.mark.slow),
                                  pytest.param("stretched_1.53A", marks=pytest.mark.slow)])
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
    for a in atoms:
        for k in range(3):
            fd = central_difference_force(potential, coord, atype, box, a, k)
            assert res.forces[a, k] == pytest.approx(fd, abs=2e-6), (a, k)


def test_virial_central_difference(potential):
    """W = -dE/d(strain) for a homogeneous deformation of cell and positions."""
    ref = Reference("cuau_se_e2_a")
    coord, atype, box = ref.structure("p32_1")
    pbc = [True] * 3
    res = potential.compute_atoms(coord, atype, box, pbc)
    fd = central_difference_virial(potential, coord, atype, box)
    np.testing.assert_allclose(res.virial, fd, atol=2e-5)
    # the virial of an isolated-atom-free periodic system is symmetric
    np.testing.assert_allclose(res.virial, res.virial.T, atol=1e-9)
