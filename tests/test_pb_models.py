"""End to end from frozen TensorFlow graphs: compress a .pb, evaluate, compare with DeePMD-kit."""

import sys

import pytest
from conftest import MODEL_CASES, MODELS, Reference, deviations, evaluate

from deepcomp_ase.cli import main
from deepcomp_ase.potential import DeepPotential

# fp_*: models with frame/atomic parameters, checked with their own references in test_fparam.py
PB_MODELS = sorted(p.stem for p in MODELS.glob("*.pb") if not p.stem.endswith("-compress")
                   and not p.stem.startswith("fp_"))
CONFS = ("p32_0", "p108_1", "p256")


#: the fast loop's graphs: se_e2_a, a hybrid (se_e2_a + se_e2_r) and the graph-only se_atten_v2;
#: every other graph runs with the slow tests
FAST_PB = ("cuau_se_e2_a", "cuau_hybrid", "cuau_se_atten_v2")


@pytest.mark.parametrize("name", [n if n in FAST_PB else pytest.param(n, marks=pytest.mark.slow) for n in PB_MODELS])
def test_compress_pb_and_reproduce_deepmd(tmp_path, name):
    out = tmp_path / f"{name}.dcz"
    assert main(["compress", "-i", str(MODELS / f"{name}.pb"), "-o", str(out), "-v", "WARNING"]) == 0
    ref = Reference(name)
    exact = DeepPotential.from_file(MODELS / f"{name}.pb", backend="numpy")
    comp = DeepPotential.from_file(out, backend="numpy")
    same_tables = MODEL_CASES[name].same_tables
    for conf in CONFS:
        n = len(ref.structure(conf)[1])
        dev = deviations(evaluate(exact, ref, conf), ref.output(conf, "pb"), n)
        assert dev["e_per_atom"] <= 1e-10 and dev["force"] <= 1e-9 and dev["virial_per_atom"] <= 1e-9, (conf, dev)
        target = ref.output(conf, "compress") if same_tables else ref.output(conf, "pb")
        bound = 1e-9
        dev = deviations(evaluate(comp, ref, conf), target, n)
        assert dev["e_per_atom"] <= 1e-10 and dev["force"] <= bound and dev["virial_per_atom"] <= 1e-9, (conf, dev)
    assert "tensorflow" not in sys.modules and "torch" not in sys.modules


def test_every_refsuite_model_has_a_pb():
    assert set(PB_MODELS) == {n for n in MODEL_CASES if not n.endswith("_jax")}
