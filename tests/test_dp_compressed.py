"""Models compressed by DeePMD-kit (``dp compress``): its own tables, evaluated as DeePMD-kit does.

References: DeePMD-kit's DeepPot on the compressed file itself (variant ``compress``), from
refsuite (cu_se_e2_a_tanh-compress.pb) and from tests/data/make_compressed_models.py (the
``*-compress`` models: DeePMD-kit 3.2 TensorFlow and backend-neutral .dp, 2.2 TensorFlow), and
pt_cuau_se_e2_r-compress.pth (``dp --pt compress``, tests/data/make_pt_models.py).
"""

import logging
import zipfile
import pickle

import numpy as np
import pytest
from conftest import MODELS, Reference, deviations, evaluate

from deepcomp_ase.cli import main
from deepcomp_ase.compress.dp_tables import BEYOND_EXTRAPOLATED, extrapolation_network
from deepcomp_ase.compress.tables import Table
from deepcomp_ase.errors import DeepCompError, ModelFormatError, TableOverflowError
from deepcomp_ase.info import describe
from deepcomp_ase.io import protobuf_wire as pw
from deepcomp_ase.io import read_model_tree
from deepcomp_ase.io.pb import read_pb
from deepcomp_ase.model.params import parse_model
from deepcomp_ase.potential import DeepPotential

TF_SMALL = sorted(p.name for p in MODELS.glob("tf*-compress.pb"))
DP_SMALL = sorted(p.name for p in MODELS.glob("dp*-compress.dp"))
#: refsuite's DeePMD-kit 3.2 compressed graph (default -s 0.01 -e 5) and its references
REFSUITE = ("cu_se_e2_a_tanh-compress.pb", "cu_se_e2_a_tanh")

_POTS: dict = {}


def _pot(name, **kw) -> DeepPotential:
    key = (name, tuple(sorted(kw.items())))
    if key not in _POTS:
        _POTS[key] = DeepPotential.from_file(MODELS / name, backend=kw.pop("backend", "numpy"), **kw)
    return _POTS[key]


def _ref_name(model: str) -> str:
    return model.rsplit(".", 1)[0]


def _check(pot, ref: Reference, conf: str, variant: str = "compress"):
    n = len(ref.structure(conf)[1])
    dev = deviations(evaluate(pot, ref, conf, atomic_virial=False), ref.output(conf, variant), n)
    assert dev["e_per_atom"] <= 1e-10 and dev["force"] <= 1e-9 and dev["virial_per_atom"] <= 1e-9, (conf, dev)
    assert dev["atom_energy"] <= 1e-9, (conf, dev)


@pytest.mark.parametrize("model", TF_SMALL)
def test_tf_graph_equals_deepmd_on_its_compressed_file(model):
    """Every configuration, the overflow one included (DeePMD-kit's linear continuation)."""
    ref = Reference(_ref_name(model))
    pot = _pot(model)
    assert pot.compressed and pot.meta["beyond_tables"] == BEYOND_EXTRAPOLATED
    # graphs made by DeePMD-kit 2.2 carry its outputs (variant compress, 2.2 clamps past the tables) and
    # DeePMD-kit 3.2's (compress_dp32, 3.2 continues them linearly, as deepcomp does)
    newest = "compress_dp32" if ref.has(ref.names[0], "compress_dp32") else "compress"
    for conf in ref.names:
        pot.tally.reset()
        _check(pot, ref, conf, newest)
        if newest != "compress" and pot.tally.n_beyond == 0:
            _check(pot, ref, conf, "compress")
    pot.tally.reset()


@pytest.mark.parametrize("model", DP_SMALL)
def test_dp_file_equals_deepmd_inside_its_tables(model):
    """``dp --dp compress`` output (.dp, the layout PyTorch shares; the nets stay): DeePMD-kit's NumPy
    DeepPot gives energies only. Beyond the tables deepcomp evaluates the stored net exactly (DeePMD-kit
    extrapolates), so the overflow configuration is only counted."""
    ref = Reference(_ref_name(model))
    pot = _pot(model)
    assert pot.compressed and "stored in the file" in pot.meta["beyond_tables"]
    for conf in ("p32_0", "cluster55", "overflow_0.30A"):
        pot.tally.reset()
        res = evaluate(pot, ref, conf, atomic_virial=False)
        if conf.startswith("overflow"):
            assert pot.tally.n_beyond > 0
            continue
        out = ref.output(conf, "compress")
        assert abs(res.energy - out["energy"]) / len(res.atom_energy) <= 1e-10, conf
        assert np.abs(res.atom_energy - out["atom_energy"]).max() <= 1e-10, conf


def test_pth_compressed_by_deepmd_uses_its_tables():
    """pt_cuau_se_e2_r-compress.pth (dp --pt compress -s 0.1 -e 2): DeePMD-kit's tables as they are (node
    values within 5e-8 of the net: PyTorch's tabulation), against DeePMD-kit's uncompressed outputs to
    within the table error."""
    ref = Reference("pt_cuau_se_e2_r")
    pot = _pot("pt_cuau_se_e2_r-compress.pth")
    tree = read_model_tree(MODELS / "pt_cuau_se_e2_r-compress.pth")
    stored = tree["model"]["descriptor"]["compress"]["@variables"]["compress_data"]
    for t, key in enumerate(pot.plan.parts[0].keys):
        np.testing.assert_array_equal(pot.plan.parts[0].tables[t].coeffs.reshape(len(stored[key[0]]), -1),
                                      stored[key[0]])
    for conf in ("p32_0", "cluster55", "stretched_1.08A"):
        n = len(ref.structure(conf)[1])
        dev = deviations(evaluate(pot, ref, conf, atomic_virial=False), ref.output(conf, "pth"), n)
        assert dev["e_per_atom"] <= 1e-8 and dev["force"] <= 1e-9, (conf, dev)


def test_refsuite_graph_equals_deepmd_in_and_beyond_its_tables():
    model, name = REFSUITE
    ref = Reference(name)
    pot = _pot(model)
    for conf in ("p32_0", "stretched_0.90A", "overflow_0.30A"):
        pot.tally.reset()
        _check(pot, ref, conf)
        if conf.startswith("overflow"):
            assert pot.tally.n_beyond == 2 and "the file holds no net" in pot.tally.summary()


@pytest.mark.slow
def test_refsuite_graph_every_configuration_numba():
    model, name = REFSUITE
    ref = Reference(name)
    pot = DeepPotential.from_file(MODELS / model, backend="numba")
    newest = "compress_dp32" if ref.has(ref.names[0], "compress_dp32") else "compress"
    for conf in ref.names:
        _check(pot, ref, conf, newest)


@pytest.mark.slow
@pytest.mark.parametrize("model", TF_SMALL)
def test_tf_graph_numba_equals_deepmd(model):
    """The compiled kernels: DeePMD-kit's tables, and its continuation past them (the packed
    extrapolation nets), for every configuration."""
    ref = Reference(_ref_name(model))
    pot = DeepPotential.from_file(MODELS / model, backend="numba")
    newest = "compress_dp32" if ref.has(ref.names[0], "compress_dp32") else "compress"
    for conf in ref.names:
        _check(pot, ref, conf, newest)


def test_overflow_follows_the_policy():
    model, name = REFSUITE
    ref = Reference(name)
    pot = _pot(model)
    pot.tally.reset()
    evaluate(pot, ref, "overflow_0.30A", atomic_virial=False)
    pot.overflow = "error"
    try:
        with pytest.raises(TableOverflowError, match="continued linearly from the table's ends"):
            pot.check_overflow()
    finally:
        pot.overflow = "warn"


def test_load_says_once_that_no_net_is_stored(caplog):
    with caplog.at_level(logging.WARNING, logger="deepcomp_ase"):
        DeepPotential.from_file(MODELS / REFSUITE[0], backend="numpy")
    said = [r.getMessage() for r in caplog.records if "no embedding nets" in r.getMessage()]
    assert len(said) == 1 and "dp compress (DeePMD-kit, TensorFlow graph)" in said[0]


def test_extrapolation_network_is_deepmds_linear_continuation():
    from deepcomp_ase.model.params import _Ctx, _network

    coeffs = np.random.default_rng(3).normal(size=(8, 5, 6))
    radial = Table(lower=-1.0, upper=1.0, xmax=4.0, stride0=0.5, stride1=1.5, coeffs=coeffs[:6])
    three_body = Table(lower=-1.0, upper=1.0, xmax=4.0, stride0=0.5, stride1=1.5, coeffs=coeffs, xmin=-4.0)
    for t in (radial, three_body):
        net = _network(_Ctx("x"), extrapolation_network(t), "net", False, True)
        last = t.nspline - 1
        t_end = t.xmax - (t.upper + (last - t.n_low - t.first_stride) * t.stride1)
        v_hi, d_hi = t.evaluate(np.array([last]), np.array([t_end]))
        v_lo, d_lo = t.evaluate(np.array([0]), np.array([0.0]))
        for x, v, d, x0 in ((np.array([t.xmax, t.xmax + 0.3, 40.0]), v_hi, d_hi, t.xmax),
                            (np.array([t.xmin - 1e-3, t.xmin - 7.0]), v_lo, d_lo, t.xmin)):
            g, dg = net.value_and_first_derivative(x)
            np.testing.assert_allclose(g, v + d * (x - x0)[:, None], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(dg, np.repeat(d, len(x), axis=0), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- deepcomp compress / info


@pytest.mark.parametrize("model, name", [REFSUITE, ("tf32_cuau_se_e3-compress.pb", "tf32_cuau_se_e3-compress")])
def test_compress_stores_deepmds_tables_as_they_are(tmp_path, capsys, model, name):
    out = tmp_path / "x.dcz"
    assert main(["compress", "-i", str(MODELS / model), "-o", str(out), "-v", "WARNING"]) == 0
    said = capsys.readouterr().err
    assert "cannot build its own tables" in said and "as they are" in said and "uncompressed model" in said
    ref = Reference(name)
    pot = DeepPotential.from_file(out, backend="numpy")
    for conf in ("p32_0", "overflow_0.30A"):  # se_e3: misaligned tables, DeePMD-kit's counts kept in the file
        _check(pot, ref, conf)
    assert "continued linearly" in pot.tally.summary()
    text = describe(out)
    assert "tables from: dp compress (DeePMD-kit, TensorFlow graph)" in text


def test_compress_refuses_other_steps_without_nets(tmp_path):
    with pytest.raises(DeepCompError, match="no longer holds its embedding nets.*step 0.005"):
        from deepcomp_ase.compress.api import compress_model

        compress_model(MODELS / REFSUITE[0], tmp_path / "x.dcz", step=0.005)
    assert not (tmp_path / "x.dcz").exists()


def test_info_names_the_tables_origin():
    text = describe(MODELS / REFSUITE[0])
    assert "DeePMD-kit model compressed by dp compress" in text
    assert "tables from: dp compress (DeePMD-kit, TensorFlow graph), used as they are" in text
    assert "descriptor:0-0       [-1, 5) -> [-1, 25)   0.01 / 0.1   800 x 40" in text


def test_compress_of_a_pth_with_nets_builds_deepcomps_own_tables(tmp_path, capsys):
    out = tmp_path / "x.dcz"
    assert main(["compress", "-i", str(MODELS / "pt_cuau_se_e2_r-compress.pth"), "-o", str(out), "-s", "0.05",
                 "-v", "WARNING"]) == 0
    assert "builds its own tables" in capsys.readouterr().err
    assert "tables from" not in describe(out)


# --------------------------------------------------------------------------- every weight accounted for


def _graph_nodes(path):
    return pw.parse_graph_def(path.read_bytes())


def test_extra_weight_in_a_compressed_graph_is_refused(tmp_path):
    data = (MODELS / REFSUITE[0]).read_bytes()
    extra = pw.encode_const_node("filter_type_0/matrix_9_0", np.ones((3, 4)))
    path = tmp_path / "extra-compress.pb"
    path.write_bytes(data + pw.encode_graph_def([extra]))
    with pytest.raises(ModelFormatError, match=r"'filter_type_0/matrix_9_0' \(3, 4\)"):
        read_pb(path)


def test_missing_table_in_a_compressed_graph_is_refused(tmp_path):
    nodes = _graph_nodes(MODELS / REFSUITE[0])
    # rename the tabulation op: the graph then has fewer tables than its training script implies
    raw = (MODELS / REFSUITE[0]).read_bytes()
    path = tmp_path / "renamed-compress.pb"
    path.write_bytes(raw.replace(b"filter_type_0/TabulateFusionSeA\x12", b"filter_type_0/TabulateFusionSeB\x12"))
    assert any(n.op == "TabulateFusionSeA" for n in nodes)
    with pytest.raises(ModelFormatError, match="filter_type_0.*0 TabulateFusionSeA ops.*implies 1"):
        read_pb(path)


def test_pth_flagged_compressed_without_tables_is_refused(tmp_path):
    src = MODELS / "pt_cuau_se_e2_a.pth"
    path = tmp_path / "model-compress.pth"
    flag = b"X\x08\x00\x00\x00compressq"  # the descriptor's 'compress' attribute, then its memo slot
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("/data.pkl"):
                at = data.index(flag) + len(flag) + 1
                assert data[at:at + 1] == pickle.NEWFALSE
                data = data[:at] + pickle.NEWTRUE + data[at + 1:]
            zout.writestr(item, data)
    with pytest.raises(ModelFormatError, match="says the model was compressed, but its state dict holds no tables"):
        read_model_tree(path)


def test_compressed_graph_tree_has_no_nets_but_tables():
    tree = read_pb(MODELS / REFSUITE[0])
    d = tree["model"]["descriptor"]
    assert d["embeddings"]["networks"] == [None]
    data, info = d["compress"]["@variables"]["compress_data"], d["compress"]["@variables"]["compress_info"]
    assert data[0].shape == (800, 240) and list(info[0][:5]) == [-1.0, 5.0, 25.0, 0.01, 0.1]
    params = parse_model(tree, "x")
    net = params.descriptor.embeddings[(0, 0)]
    assert [la.activation for la in net.layers] == ["relu", "none"]  # the continuation past the table


@pytest.mark.slow  # the CUDA kernels compiled for the CPU: minutes of emulation
@pytest.mark.parametrize("model", ["tf32_cuau_se_e2_a-compress.pb", "tf32_cuau_se_e3-compress.pb"])
def test_cuda_kernels_emulated_equal_deepmd(model):
    """The GPU backend's kernels (host emulation): DeePMD-kit's tables and the extrapolation nets on the
    device's exact-net path, against DeePMD-kit's outputs (an input beyond the tables in overflow_0.30A)."""
    from deepcomp_ase.backends.cupy_gpu import Backend
    from deepcomp_ase.kernels import loader

    try:
        loader.emulation_library()
    except Exception as exc:  # no C++20 compiler
        pytest.skip(f"host emulation unavailable: {str(exc)[:200]}")
    backend = Backend(precision="float64", emulate=True)
    ref = Reference(_ref_name(model))
    pot = DeepPotential.from_file(MODELS / model, backend="numpy")
    for conf in ("p32_0", "overflow_0.30A"):
        coord, atype, box = ref.structure(conf)
        got = backend.compute_atoms(pot, coord, atype, box, np.array([box is not None] * 3), atomic_virial=False)
        n = len(atype)
        dev = deviations(got, ref.output(conf, "compress"), n)
        assert dev["e_per_atom"] <= 1e-10 and dev["force"] <= 1e-9 and dev["virial_per_atom"] <= 1e-9, (conf, dev)


def test_table_from_dp_checks_the_info_and_keeps_deepmds_counts():
    from deepcomp_ase.compress.dp_tables import table_from_dp
    from deepcomp_ase.errors import TableFormatError

    info = np.array([-1.0, 7.0, 14.0, 0.1, 1.0, -1.0])  # 80 fine + 7 coarse intervals
    t = table_from_dp(np.zeros((87, 12)), info, False, "t")
    assert (t.n_low, t.first_stride, t.nspline, t.ng) == (0, 80, 87, 2)
    for bad_data, bad_info, what in ((np.zeros((86, 12)), info, "86 intervals, its info implies 87"),
                                     (np.zeros((87, 13)), info, "6 x outputs"),
                                     (np.full((87, 12), np.nan), info, "non-finite"),
                                     (np.zeros((87, 12)), info[:5], "6 finite numbers")):
        with pytest.raises(TableFormatError, match=what):
            table_from_dp(bad_data, bad_info, False, "t")
    # se_e3 with a range of 14.6 coarse intervals: DeePMD-kit truncates (14) and so does the table
    info = np.array([-146.0, 146.0, 292.0, 1.0, 10.0, -1.0])
    t = table_from_dp(np.zeros((int(292 + 2 * 14.6), 6)), info, True, "se_e3 t")
    assert (t.xmin, t.n_low, t.first_stride) == (-292.0, 14, 292)
