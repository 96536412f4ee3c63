"""Compressed models against DeePMD-kit's compressed outputs and against our uncompressed model."""

import numpy as np
import pytest
from conftest import MODELS, SE_E2_A_MODELS, Reference, deviations, evaluate

from deepcomp_ase.potential import DeepPotential

VARIANTS = {"compress": dict(step=0.01, extrapolate=5), "compress_fine": dict(step=0.005, extrapolate=10)}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", SE_E2_A_MODELS)
def test_compressed_matches_deepmd_compressed(compressed_model, name, variant):
    ref = Reference(name)
    pot = DeepPotential.from_file(compressed_model(name, **VARIANTS[variant]))
    for conf in ref.confs("in_dist"):
        assert ref.has(conf, variant)
        res = evaluate(pot, ref, conf)
        dev = deviations(res, ref.output(conf, variant), len(res.atom_energy))
        assert dev["e_per_atom"] <= 1e-10, (conf, dev)
        assert dev["force"] <= 1e-9, (conf, dev)
        assert dev["virial_per_atom"] <= 1e-9, (conf, dev)


@pytest.mark.parametrize("name", SE_E2_A_MODELS)
def test_compressed_out_of_distribution_matches_uncompressed(compressed_model, name):
    ref = Reference(name)
    exact = DeepPotential.from_file(MODELS / f"{name}.dp")
    pot = DeepPotential.from_file(compressed_model(name))
    if name.endswith("relu"):
        pytest.skip("relu tables built the DeePMD-kit way are off at the kinks (issue: kink-aware tables)")
    for kind, bound in (("stretched", 1e-7), ("overflow", 1e-8)):
        for conf in ref.confs(kind):
            pot.tally.reset()
            res = evaluate(pot, ref, conf)
            res_exact = evaluate(exact, ref, conf)
            assert np.abs(res.forces - res_exact.forces).max() <= bound, conf
            assert abs(res.energy - res_exact.energy) / len(res.atom_energy) <= bound, conf
            if kind == "overflow":
                # the close pair lands beyond the extrapolated table: counted, evaluated exactly
                assert pot.tally.n_beyond >= 2, (conf, pot.tally.counts())
            else:
                assert pot.tally.n_coarse >= 2 and pot.tally.n_beyond == 0, (conf, pot.tally.counts())


def test_in_distribution_stays_in_fine_table(compressed_model):
    ref = Reference("cuau_se_e2_a")
    pot = DeepPotential.from_file(compressed_model("cuau_se_e2_a"))
    for conf in ref.confs("in_dist"):
        evaluate(pot, ref, conf)
    assert pot.tally.n_inputs > 0
    assert pot.tally.n_coarse == 0 and pot.tally.n_beyond == 0 and pot.tally.n_sel_dropped == 0
