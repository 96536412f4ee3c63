"""Uncompressed float64 evaluation against DeePMD-kit 3.2's frozen-model outputs."""

import numpy as np
import pytest
from conftest import MODELS, SE_E2_A_MODELS, Reference, deviations, evaluate

from deepcomp_ase.potential import DeepPotential


@pytest.fixture(scope="module", params=SE_E2_A_MODELS)
def model_and_ref(request):
    name = request.param
    return DeepPotential.from_file(MODELS / f"{name}.dp"), Reference(name)


@pytest.mark.parametrize("kind", ["in_dist", "stretched", "overflow"])
def test_uncompressed_matches_deepmd(model_and_ref, kind):
    pot, ref = model_and_ref
    for conf in ref.confs(kind):
        res = evaluate(pot, ref, conf)
        out = ref.output(conf, "pb")
        n = len(res.atom_energy)
        dev = deviations(res, out, n)
        # the overflow configurations of unbounded activations have energies of 1e4 eV: relative bound there
        scale = max(1.0, abs(float(out["energy"])) / n) if kind == "overflow" else 1.0
        assert dev["e_per_atom"] <= 1e-10 * scale, (conf, dev)
        assert dev["force"] <= 1e-9 * max(1.0, float(np.abs(out["force"]).max()) / 100), (conf, dev)
        assert dev["virial_per_atom"] <= 1e-9 * scale, (conf, dev)
        assert dev["atom_energy"] <= 1e-9 * scale, (conf, dev)
        np.testing.assert_allclose(res.atom_virial, out["atom_virial"], rtol=0, atol=1e-9 * scale)


def test_atom_quantities_sum_to_totals(model_and_ref):
    pot, ref = model_and_ref
    res = evaluate(pot, ref, "p108_1")
    assert res.energy == pytest.approx(res.atom_energy.sum(), abs=1e-10)
    np.testing.assert_allclose(res.atom_virial.sum(0).reshape(3, 3), res.virial, atol=1e-10)
    np.testing.assert_allclose(res.forces.sum(0), 0.0, atol=1e-10)
