"""Uncompressed float64 evaluation against DeePMD-kit 3.2's outputs, for every refsuite model."""

import numpy as np
import pytest
from conftest import MODEL_CASES, Reference, deviations, evaluate

from deepcomp_ase.potential import DeepPotential

_LOADED = {}


def load(name):
    if name not in _LOADED:
        case = MODEL_CASES[name]
        _LOADED[name] = (DeepPotential.from_file(case.source, backend="numpy"), Reference(name), case)
    return _LOADED[name]


SLOW_MODELS = ("cuau_se_e3", "cuau_se_atten_v2_jax")  # three-body on numpy; larger sel


# the long runs carry the slow marker (pytest -m "not slow" is the developer loop; CI runs all)
@pytest.mark.parametrize("kind", [pytest.param("in_dist", marks=pytest.mark.slow), "stretched", "overflow"])
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n
                                  for n in MODEL_CASES])
def test_uncompressed_matches_deepmd(name, kind):
    pot, ref, case = load(name)
    checked = 0
    for conf in ref.confs(kind):
        if not ref.has(conf, case.reference):
            continue
        res = evaluate(pot, ref, conf)
        out = ref.output(conf, case.reference)
        n = len(res.atom_energy)
        dev = deviations(res, out, n)
        # the overflow configurations of unbounded activations have energies of 1e4 eV: relative bound there
        scale = max(1.0, abs(float(out["energy"])) / n) if kind == "overflow" else 1.0
        assert dev["e_per_atom"] <= 1e-10 * scale, (conf, dev)
        assert dev["force"] <= 1e-9 * max(1.0, float(np.abs(out["force"]).max()) / 100), (conf, dev)
        assert dev["virial_per_atom"] <= 1e-9 * scale, (conf, dev)
        assert dev["atom_energy"] <= 1e-9 * scale, (conf, dev)
        np.testing.assert_allclose(res.atom_virial, out["atom_virial"], rtol=0, atol=1e-9 * scale)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("name", ["cuau_se_e2_a", "cuau_hybrid", pytest.param("cuau_se_e3", marks=pytest.mark.slow),
                                  "cuau_se_atten_v2"])
def test_atom_quantities_sum_to_totals(name):
    pot, ref, _ = load(name)
    res = evaluate(pot, ref, "p108_1")
    assert res.energy == pytest.approx(res.atom_energy.sum(), abs=1e-10)
    np.testing.assert_allclose(res.atom_virial.sum(0).reshape(3, 3), res.virial, atol=1e-10)
    np.testing.assert_allclose(res.forces.sum(0), 0.0, atol=1e-10)


def test_pb_and_dp_give_the_same_numbers():
    """The TensorFlow-graph reader and the .dp reader feed the same evaluation."""
    from conftest import MODELS

    ref = Reference("cuau_hybrid")
    a = evaluate(DeepPotential.from_file(MODELS / "cuau_hybrid.pb", backend="numpy"), ref, "p32_2")
    b = evaluate(DeepPotential.from_file(MODELS / "cuau_hybrid.dp", backend="numpy"), ref, "p32_2")
    assert a.energy == b.energy
    np.testing.assert_array_equal(a.forces, b.forces)
