"""Frame and atomic parameters (fparam / aparam): DeePMD-kit's numbers, dE/dfparam, ASE, model-devi.

Models and references: tests/data/make_fparam_models.py (DeePMD-kit 3.2 PyTorch and TensorFlow,
2.2 TensorFlow; numb_fparam 1-2, numb_aparam 1, default_fparam, use_aparam_as_mask).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS, REFS

from deepcomp_ase.errors import FrameParamError, ModelFormatError
from deepcomp_ase.potential import DeepPotential

#: (reference name, model file suffix)
CASES = [("fp_pt_f2a1", "pth"), ("fp_pt_f2a1", "dp"), ("fp_tf_f2a1", "pb"), ("fp_tf_f2a1", "dp"), ("fp_tf_mask", "pb"),
         ("fp_tf_mask", "dp"),
         ("fp_tf22_f1a1", "pb"), ("fp_pt_default", "pth"), ("fp_pt_default", "dp"), ("fp_pt_mask", "pth"),
         ("fp_pt_mask", "dp"), ("fp_pt_attn", "pth"), ("fp_pt_attn", "dp")]


def _inputs(ref, conf):
    fp = ref[f"{conf}/fparam"] if f"{conf}/fparam" in ref.files else None
    ap = ref[f"{conf}/aparam"] if f"{conf}/aparam" in ref.files else None
    return fp, ap


def _structure(ref, conf):
    return ref[f"{conf}/coord"].reshape(-1, 3), ref[f"{conf}/atype"], ref[f"{conf}/box"].reshape(3, 3)


def _assert_matches(res, ref, conf, tag=""):
    n = len(ref[f"{conf}/atype"])
    assert abs(res.energy - ref[f"{conf}/{tag}energy"]) / n < 1e-10
    np.testing.assert_allclose(res.atom_energy, ref[f"{conf}/{tag}atom_energy"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.forces[:n], ref[f"{conf}/{tag}force"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.virial, ref[f"{conf}/{tag}virial"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.atom_virial[:n], ref[f"{conf}/{tag}atom_virial"], rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def pots():
    cache = {}

    def get(name, suffix, backend="numpy"):
        key = (name, suffix, backend)
        if key not in cache:
            cache[key] = DeepPotential.from_file(MODELS / f"{name}.{suffix}", backend=backend)
        return cache[key]

    return get


@pytest.mark.parametrize(("name", "suffix"), CASES, ids=[f"{n}.{s}" for n, s in CASES])
def test_equals_deepmd(pots, name, suffix):
    ref = np.load(REFS / f"{name}.npz")
    pot = pots(name, suffix)
    assert (pot.dim_fparam, pot.dim_aparam) == (int(ref["numb_fparam"]), int(ref["numb_aparam"]))
    for conf in ref["names"]:
        fp, ap = _inputs(ref, conf)
        pos, atype, box = _structure(ref, conf)
        res = pot.compute_atoms(pos, atype, box, (True,) * 3, atomic_virial=True, fparam=fp, aparam=ap)
        _assert_matches(res, ref, conf)
        if f"{conf}/nofp/energy" in ref.files:  # default_fparam
            res = pot.compute_atoms(pos, atype, box, (True,) * 3, atomic_virial=True, aparam=ap)
            _assert_matches(res, ref, conf, "nofp/")


@pytest.mark.parametrize("name", ["fp_pt_f2a1", "fp_tf22_f1a1", "fp_pt_mask",
                                  pytest.param("fp_pt_attn", marks=pytest.mark.slow)])  # se_atten kernels compile
def test_numba_equals_numpy(pots, name):
    pytest.importorskip("numba")
    suffix = "pth" if name.startswith("fp_pt") else "pb"
    ref = np.load(REFS / f"{name}.npz")
    conf = str(ref["names"][-1])
    fp, ap = _inputs(ref, conf)
    pos, atype, box = _structure(ref, conf)
    a = pots(name, suffix).compute_atoms(pos, atype, box, (True,) * 3, atomic_virial=True, fparam=fp, aparam=ap)
    b = pots(name, suffix, "numba").compute_atoms(pos, atype, box, (True,) * 3, atomic_virial=True, fparam=fp,
                                                   aparam=ap)
    assert abs(a.energy - b.energy) < 1e-10
    np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(b.atom_virial, a.atom_virial, rtol=0, atol=1e-10)
    if a.dedfparam is None:
        assert b.dedfparam is None
    else:
        np.testing.assert_allclose(b.dedfparam, a.dedfparam, rtol=1e-12, atol=1e-12)


def test_dedfparam_is_the_energy_derivative(pots):
    pot = pots("fp_pt_f2a1", "pth")
    ref = np.load(REFS / "fp_pt_f2a1.npz")
    fp, ap = _inputs(ref, "p32_0")
    pos, atype, box = _structure(ref, "p32_0")
    res = pot.compute_atoms(pos, atype, box, (True,) * 3, fparam=fp, aparam=ap)
    h = 1e-5
    for k in range(2):
        d = np.zeros(2)
        d[k] = h
        ep = pot.compute_atoms(pos, atype, box, (True,) * 3, fparam=fp + d, aparam=ap).energy
        em = pot.compute_atoms(pos, atype, box, (True,) * 3, fparam=fp - d, aparam=ap).energy
        assert abs((ep - em) / (2 * h) - res.dedfparam[k]) < 1e-7 * max(1.0, abs(res.dedfparam[k]))


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    from deepcomp_ase.compress.api import compress_model

    out = tmp_path_factory.mktemp("fparam") / "fp.dcz"
    compress_model(MODELS / "fp_pt_f2a1.pth", out)
    return DeepPotential.from_file(out, backend="numpy")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_atomic_parameters_only(backend):
    # numb_fparam 0, numb_aparam 1 read by the net: fp_pt_mask's tree without use_aparam_as_mask, its
    # fitting nets given one more input row (zero weights: the energy stays that of the masked model)
    import copy

    from deepcomp_ase.io import read_model_tree
    from deepcomp_ase.model.params import parse_model

    tree = copy.deepcopy(read_model_tree(MODELS / "fp_pt_mask.dp"))
    fit = tree["model"]["fitting"]
    fit["use_aparam_as_mask"] = False
    fit["@variables"].update(aparam_avg=np.zeros(1), aparam_inv_std=np.ones(1))
    for net in fit["nets"]["networks"]:
        first = net["layers"][0]["@variables"]
        first["w"] = np.concatenate([first["w"], np.zeros((1, first["w"].shape[1]))])
        net["in_dim"] += 1
    if backend == "numba":
        pytest.importorskip("numba")
    pot = DeepPotential(parse_model(tree, "aparam_only.dp"), backend=backend)
    ref = np.load(REFS / "fp_pt_mask.npz")
    pos, atype, box = _structure(ref, "p32_0")
    res = pot.compute_atoms(pos, atype, box, (True,) * 3, aparam=ref["p32_0/aparam"])
    assert res.dedfparam is None
    assert abs(res.energy - ref["p32_0/energy"]) < 1e-9


def test_compressed_model_keeps_the_parameters(compressed, pots):
    comp = compressed
    exact = pots("fp_pt_f2a1", "pth")
    ref = np.load(REFS / "fp_pt_f2a1.npz")
    fp, ap = _inputs(ref, "p108_0")
    pos, atype, box = _structure(ref, "p108_0")
    a = exact.compute_atoms(pos, atype, box, (True,) * 3, fparam=fp, aparam=ap)
    b = comp.compute_atoms(pos, atype, box, (True,) * 3, fparam=fp, aparam=ap)
    assert abs(a.energy - b.energy) / len(atype) < 1e-9
    np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=1e-8)
    np.testing.assert_allclose(b.dedfparam, a.dedfparam, rtol=1e-9)


def test_cuda_backend_leaves_parameter_models_to_the_host(compressed):
    # the device fitting kernel reads the descriptor only: such a model is evaluated by the numpy
    # reference (as uncompressed ones are), and the reason is stated
    from deepcomp_ase.backends.cupy_gpu import Backend

    backend = Backend.__new__(Backend)  # the reason needs no device
    assert "frame/atomic parameters" in backend.unsupported_reason(compressed)


def test_info_names_the_parameters():
    from deepcomp_ase.info import describe

    assert "parameters:  numb_fparam 1 (default_fparam [0.9]), numb_aparam 0" in describe(MODELS / "fp_pt_default.pth")
    assert "numb_aparam 1 (use_aparam_as_mask" in describe(MODELS / "fp_pt_mask.pth")


def test_uniform_aparam_broadcasts(pots):
    pot = pots("fp_pt_f2a1", "pth")
    ref = np.load(REFS / "fp_pt_f2a1.npz")
    fp, _ = _inputs(ref, "p32_0")
    pos, atype, box = _structure(ref, "p32_0")
    a = pot.compute_atoms(pos, atype, box, (True,) * 3, fparam=fp, aparam=[0.3])
    b = pot.compute_atoms(pos, atype, box, (True,) * 3, fparam=fp, aparam=np.full((len(atype), 1), 0.3))
    assert a.energy == b.energy


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"aparam": [0.1]}, r"takes 2 frame parameter\(s\) \(numb_fparam\) and has no default_fparam"),
    ({"fparam": [1.0], "aparam": [0.1]}, "fparam has 1 value.*numb_fparam = 2"),
    ({"fparam": [1.0, 2.0]}, r"takes 1 atomic parameter\(s\) per atom"),
    ({"fparam": [1.0, 2.0], "aparam": [0.1, 0.2, 0.3]}, "aparam has 3 value.*give 32 x 1"),
    ({"fparam": [1.0, np.nan], "aparam": [0.1]}, "non-finite"),
])
def test_wrong_parameters_are_named(pots, kwargs, match):
    pot = pots("fp_pt_f2a1", "pth")
    ref = np.load(REFS / "fp_pt_f2a1.npz")
    pos, atype, box = _structure(ref, "p32_0")
    with pytest.raises(FrameParamError, match=match) as info:
        pot.compute_atoms(pos, atype, box, (True,) * 3, **kwargs)
    assert "fp_pt_f2a1.pth" in str(info.value)


def test_parameters_for_a_model_without_them_are_refused():
    pot = DeepPotential.from_file(MODELS / "cuau_se_e2_a.dp", backend="numpy")
    ref = np.load(REFS / "fp_pt_f2a1.npz")
    pos, atype, box = _structure(ref, "p32_0")
    with pytest.raises(FrameParamError, match="numb_fparam = 0"):
        pot.compute_atoms(pos, atype, box, (True,) * 3, fparam=[1.0])


def test_tree_without_statistics_is_refused(tmp_path):
    import copy

    from deepcomp_ase.io import read_model_tree
    from deepcomp_ase.model.params import parse_model

    tree = read_model_tree(MODELS / "fp_pt_f2a1.dp")
    bad = copy.deepcopy(tree)
    bad["model"]["fitting"]["@variables"]["fparam_inv_std"] = None
    with pytest.raises(ModelFormatError, match="fparam_inv_std"):
        parse_model(bad, "bad.dp")
    bad = copy.deepcopy(tree)
    bad["model"]["fitting"]["numb_fparam"] = 1
    with pytest.raises(ModelFormatError, match="fparam_avg|takes 67 inputs"):
        parse_model(bad, "bad.dp")
    bad = copy.deepcopy(tree)
    bad["model"]["fitting"]["default_fparam"] = [1.0]
    with pytest.raises(ModelFormatError, match="default_fparam"):
        parse_model(bad, "bad.dp")


# ------------------------------------------------------------------ ASE
def _atoms(ref, conf):
    from ase import Atoms

    pos, atype, box = _structure(ref, conf)
    names = [str(n) for n in ref["model_type_map"]]
    return Atoms([names[t] for t in atype], positions=pos, cell=box, pbc=True)


def test_ase_calculator_takes_parameters_as_deepmd(pots):
    from deepcomp_ase.calculator import DeepCompCalculator

    ref = np.load(REFS / "fp_pt_f2a1.npz")
    fp, ap = _inputs(ref, "p32_0")
    pot = pots("fp_pt_f2a1", "pth")
    atoms = _atoms(ref, "p32_0")
    atoms.calc = DeepCompCalculator(pot, fparam=fp, aparam=ap)
    assert abs(atoms.get_potential_energy() - ref["p32_0/energy"]) < 1e-9
    np.testing.assert_allclose(atoms.get_forces(), ref["p32_0/force"], rtol=0, atol=1e-9)
    assert atoms.calc.results["dedfparam"].shape == (2,)
    # atoms.info takes precedence (DeePMD-kit's calculator reads it there); a change is seen
    atoms.info["fparam"] = fp + 0.1
    e_info = atoms.get_potential_energy()
    direct = pot.compute_atoms(atoms.positions, pot.types_of(atoms.get_chemical_symbols()), atoms.cell.array,
                               (True,) * 3, fparam=fp + 0.1, aparam=ap)
    assert e_info == direct.energy
    del atoms.info["fparam"]
    assert abs(atoms.get_potential_energy() - ref["p32_0/energy"]) < 1e-9
    # set() changes them and drops the old results
    atoms.calc.set(fparam=fp + 0.1)
    assert atoms.get_potential_energy() == direct.energy


def test_ensemble_calculator_gives_every_model_the_parameters(pots):
    from deepcomp_ase.ensemble_calculator import DeepCompEnsembleCalculator

    a, b = np.load(REFS / "fp_pt_f2a1.npz"), np.load(REFS / "fp_tf_f2a1.npz")
    fp, ap = _inputs(a, "p32_0")
    atoms = _atoms(a, "p32_0")
    atoms.calc = DeepCompEnsembleCalculator([pots("fp_pt_f2a1", "pth"), pots("fp_tf_f2a1", "pb")], fparam=fp,
                                            aparam=ap)
    assert abs(atoms.get_potential_energy() - a["p32_0/energy"]) < 1e-9
    devi = atoms.calc.get_model_devi()
    want = np.linalg.norm(np.std([a["p32_0/force"], b["p32_0/force"]], axis=0), axis=-1)
    np.testing.assert_allclose(devi.atom_devi_f, want, rtol=1e-7, atol=1e-10)


def test_ase_calculator_checks_sizes_when_built(pots):
    from deepcomp_ase.calculator import DeepCompCalculator

    with pytest.raises(FrameParamError, match="numb_fparam = 2"):
        DeepCompCalculator(pots("fp_pt_f2a1", "pth"), fparam=[1.0, 2.0, 3.0])


# ------------------------------------------------------------------ model deviation
def _system(tmp_path, ref, confs):
    sysdir = tmp_path / "sys"
    (sysdir / "set.000").mkdir(parents=True)
    atype = ref[f"{confs[0]}/atype"]
    (sysdir / "type.raw").write_text(" ".join(str(t) for t in atype))
    (sysdir / "type_map.raw").write_text(" ".join(str(n) for n in ref["model_type_map"]))
    np.save(sysdir / "set.000" / "coord.npy", np.array([ref[f"{c}/coord"].ravel() for c in confs]))
    np.save(sysdir / "set.000" / "box.npy", np.array([ref[f"{c}/box"].ravel() for c in confs]))
    np.save(sysdir / "set.000" / "fparam.npy", np.array([ref[f"{c}/fparam"] for c in confs]))
    np.save(sysdir / "set.000" / "aparam.npy", np.array([ref[f"{c}/aparam"].ravel() for c in confs]))
    return sysdir


def test_model_devi_reads_fparam_and_aparam(tmp_path, capsys):
    """Two models with numb_fparam 2, numb_aparam 1 on frames with set.000/fparam.npy, aparam.npy:
    the deviation from DeePMD-kit's own forces, virials and energies of each model."""
    from deepcomp_ase.cli import main
    from deepcomp_ase.model_devi import model_deviation, read_model_devi

    a, b = np.load(REFS / "fp_pt_f2a1.npz"), np.load(REFS / "fp_tf_f2a1.npz")
    confs = ["p32_0"]  # the configurations differ in their types: one system holds one of them
    for c in confs:  # both were evaluated on the same seeded parameters
        np.testing.assert_array_equal(a[f"{c}/fparam"], b[f"{c}/fparam"])
    sysdir = _system(tmp_path, a, confs)
    out = tmp_path / "md.out"
    rc = main(["model-devi", "-m", str(MODELS / "fp_pt_f2a1.pth"), str(MODELS / "fp_tf_f2a1.pb"), "-s", str(sysdir),
               "-o", str(out), "--backend", "numpy"])
    assert rc == 0, capsys.readouterr().err
    rows = read_model_devi(out)
    for k, c in enumerate(confs):
        n = len(a[f"{c}/atype"])
        d = model_deviation(np.array([a[f"{c}/force"], b[f"{c}/force"]]),
                            np.array([a[f"{c}/virial"], b[f"{c}/virial"]]), n,
                            np.array([a[f"{c}/energy"], b[f"{c}/energy"]]))
        np.testing.assert_allclose(rows[k, 1:8], [*d.row(), d.devi_e], rtol=1e-5, atol=1e-9)


def test_model_devi_without_fparam_file_names_what_to_give(tmp_path, capsys):
    from deepcomp_ase.cli import main

    ref = np.load(REFS / "fp_pt_f2a1.npz")
    sysdir = _system(tmp_path, ref, ["p32_0"])
    (sysdir / "set.000" / "fparam.npy").unlink()
    m = str(MODELS / "fp_pt_f2a1.pth")
    assert main(["model-devi", "-m", m, m, "-s", str(sysdir), "-o", str(tmp_path / "o"), "--backend", "numpy"]) == 1
    assert "fparam.npy" in capsys.readouterr().err
