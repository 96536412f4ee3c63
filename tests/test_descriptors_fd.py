"""Central-difference forces and virials for every descriptor and every activation.

Each model is checked uncompressed and compressed on a small periodic cell. Activations the
refsuite lacks (sigmoid, relu6) come from the tanh model with its activations swapped: odd
weights, but valid nets, which is all a derivative check needs.
"""

import copy

import h5py
import numpy as np
import pytest
from conftest import MODEL_CASES, MODELS, Reference, central_difference_force, central_difference_virial

from deepcomp_ase.compress.api import compress_model
from deepcomp_ase.io import read_model_tree
from deepcomp_ase.io.tree import write_h5_tree
from deepcomp_ase.potential import DeepPotential

DESCRIPTOR_MODELS = ["cuau_se_e2_r", "cuau_se_e2_r_tos", "cuau_se_e3", "cuau_hybrid", "cuau_se_atten_v2",
                     "cuau_se_atten_v2_jax"]
ACTIVATION_MODELS = ["cu_se_e2_a_gelu", "cu_se_e2_a_softplus", "cu_se_e2_a_relu", "swap:sigmoid", "swap:relu6"]


def swapped_activation_model(activation, directory):
    tree = copy.deepcopy(read_model_tree(MODELS / "cu_se_e2_a_tanh.dp"))
    tree["model"]["descriptor"]["activation_function"] = activation  # the nets must agree with it
    for net in tree["model"]["descriptor"]["embeddings"]["networks"]:
        net["activation_function"] = activation
        for layer in net["layers"]:
            layer["activation_function"] = activation
    path = directory / f"cu_se_e2_a_{activation}.dp"
    with h5py.File(path, "w") as f:
        write_h5_tree(f, tree)
    return path


@pytest.fixture(scope="module")
def potentials(tmp_path_factory):
    cache = {}
    tmp = tmp_path_factory.mktemp("fd")

    def get(name, compressed):
        key = (name, compressed)
        if key not in cache:
            if name.startswith("swap:"):
                src, script, refname = swapped_activation_model(name[5:], tmp), None, "cu_se_e2_a_tanh"
            else:
                case = MODEL_CASES[name]
                src, script, refname = case.source, case.training_script, name
            if compressed:
                out = tmp / f"{name.replace(':', '_')}.dcz"
                compress_model(src, out, training_script=script)
                src = out
            cache[key] = (DeepPotential.from_file(src, backend="numpy"), Reference(refname))
        return cache[key]

    return get


def check_central_differences(pot, ref, conf="p32_0"):
    coord, atype, box = ref.structure(conf)
    res = pot.compute_atoms(coord, atype, box, [True] * 3)
    rng = np.random.default_rng(5)
    for a in rng.choice(len(coord), size=3, replace=False):
        for k in range(3):
            fd = central_difference_force(pot, coord, atype, box, a, k)
            assert res.forces[a, k] == pytest.approx(fd, abs=2e-6 * max(1.0, abs(fd))), (a, k)
    fd_virial = central_difference_virial(pot, coord, atype, box)
    np.testing.assert_allclose(res.virial, fd_virial, atol=5e-5 * max(1.0, np.abs(fd_virial).max()))


SLOW_FD = ("cuau_se_e3", "cuau_se_atten_v2", "cuau_se_atten_v2_jax")  # large sel or three-body on numpy
#: the fast loop's representatives (37 numpy evaluations each): se_e2_a + se_e2_r through the
#: hybrid, the relu split tables, and the activations no DeePMD-kit reference checks (the others'
#: exact forces equal DeePMD-kit's in test_reference_evaluation); the rest run with the slow tests
FAST_FD = {("cuau_hybrid", False), ("cuau_hybrid", True), ("cu_se_e2_a_relu", True), ("swap:sigmoid", False),
           ("swap:relu6", False)}


@pytest.mark.parametrize("name, compressed", [
    pytest.param(n, c, id=f"{n}-{'compressed' if c else 'exact'}",
                 marks=() if (n, c) in FAST_FD and n not in SLOW_FD else pytest.mark.slow)
    for n in DESCRIPTOR_MODELS + ACTIVATION_MODELS for c in (False, True)])
def test_forces_and_virial_by_central_differences(potentials, name, compressed):
    pot, ref = potentials(name, compressed)
    check_central_differences(pot, ref)


@pytest.mark.parametrize("activation", ["sigmoid", "relu6"])
def test_swapped_activation_compresses_exactly(potentials, activation):
    exact, ref = potentials(f"swap:{activation}", False)
    comp, _ = potentials(f"swap:{activation}", True)
    coord, atype, box = ref.structure("p108_0")
    a = exact.compute_atoms(coord, atype, box, [True] * 3)
    b = comp.compute_atoms(coord, atype, box, [True] * 3)
    assert np.abs(a.forces - b.forces).max() < 1e-9
    assert abs(a.energy - b.energy) / len(coord) < 1e-10
