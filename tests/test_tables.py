"""Table accuracy between nodes, continuity at nodes, and the DeePMD-kit ranges."""

import json

import numpy as np
import pytest
from conftest import MODELS

from deepcomp_ase.compress.api import tabulate_model
from deepcomp_ase.compress.tables import COARSE, FINE
from deepcomp_ase.compress.tabulate import build_table, hermite_quintic, radial_range_per_type
from deepcomp_ase.io import read_model_tree
from deepcomp_ase.model.params import parse_model

SHARED_TABLE_INFO = MODELS.parent / "table_info"


@pytest.fixture(scope="module")
def model():
    return parse_model(read_model_tree(MODELS / "cuau_se_e2_a.dp"))


def test_hermite_quintic_reproduces_end_conditions():
    rng = np.random.default_rng(1)
    y0, d0, s0, y1, d1, s1 = rng.normal(size=6)
    w = 0.37
    c = hermite_quintic(*(np.array([v]) for v in (y0, d0, s0, y1, d1, s1)), w)[0]
    p = np.polynomial.Polynomial(c)
    assert p(0) == pytest.approx(y0) and p(w) == pytest.approx(y1)
    assert p.deriv()(0) == pytest.approx(d0) and p.deriv()(w) == pytest.approx(d1)
    assert p.deriv(2)(0) == pytest.approx(s0) and p.deriv(2)(w) == pytest.approx(s1)


def test_table_accuracy_between_nodes(model):
    net = model.descriptor.embeddings[(0, 1)]
    table = build_table(net, -1.0, 7.0, 0.01, 0.1, 5)
    rng = np.random.default_rng(2)
    for lo, hi, region, tol_v, tol_d in ((-1, 7, FINE, 1e-12, 1e-10), (7, 35, COARSE, 1e-8, 1e-7)):
        x = rng.uniform(lo, hi, size=4000)
        idx, t, reg = table.locate(x)
        assert np.all(reg == region)
        v, d = table.evaluate(idx, t)
        ve, de = net.value_and_first_derivative(x)
        assert np.abs(v - ve).max() < tol_v
        assert np.abs(d - de).max() < tol_d


def test_table_is_c2_at_nodes(model):
    net = model.descriptor.embeddings[(1, 1)]
    table = build_table(net, -1.0, 7.0, 0.01, 0.1, 5)
    n = table.nspline
    left = np.arange(n - 1)
    width = np.where(left < table.first_stride, table.stride0, table.stride1)
    # end of interval l equals start of interval l+1: value, slope, curvature
    v_end, d_end = table.evaluate(left, width)
    s_end = table.evaluate_second(left, width)
    v_start, d_start = table.evaluate(left + 1, np.zeros(n - 1))
    s_start = table.evaluate_second(left + 1, np.zeros(n - 1))
    scale = np.abs(v_start).max()
    assert np.abs(v_end - v_start).max() < 1e-12 * scale
    assert np.abs(d_end - d_start).max() < 1e-9 * max(1, np.abs(d_start).max())
    assert np.abs(s_end - s_start).max() < 1e-6 * max(1, np.abs(s_start).max())


def test_ranges_equal_deepmd_tensorflow_tables(model):
    info = json.loads((SHARED_TABLE_INFO / "cuau_se_e2_a.json").read_text())
    rows = {tuple(v) for v in info["compress"]["table_info"].values()}
    d = model.descriptor
    lower, upper = radial_range_per_type(d.davg, d.dstd, model.min_nbor_dist, d.rcut_smth, d.rcut)
    ours = {(lo, up, 5 * up, 0.01, 0.1, -1.0) for lo, up in zip(lower, upper)}
    assert ours == rows


def test_table_grid_matches_deepmd_size(model):
    tables = tabulate_model(model, model.min_nbor_dist, 0.01, 5)
    for table in tables.values():
        # DeePMD-kit: nspline = (upper-lower)/s0 + (5*upper-upper)/s1 = 800 + 280
        assert table.nspline == 1080 and table.ng == 100


def test_coefficients_agree_with_deepmd_numpy_backend_tables():
    """DeePMD-kit's own numpy-backend tables (refsuite2): compare value/slope on their shared range."""
    z = np.load(SHARED_TABLE_INFO / "cu_se_e2_a_tanh_dp_tables.npz")
    meta = json.loads(str(z["meta"]))
    model = parse_model(read_model_tree(MODELS / "cu_se_e2_a_tanh.dp"))
    key = [k for k in z.files if k.endswith("/table")][0]
    prefix = key[: -len("/table")]
    info = z[prefix + "/table_info"]
    lower, upper, xmax, s0, s1 = (float(v) for v in info[:5])
    ng = model.descriptor.ng
    theirs = z[key].reshape(-1, ng, 6)
    mine = build_table(model.descriptor.embeddings[(0,)] if model.descriptor.type_one_side
                       else model.descriptor.embeddings[(0, 0)], lower, upper, s0, s1, xmax / upper)
    assert theirs.shape == mine.coeffs.shape, meta
    x = np.linspace(lower, xmax - 1e-9, 3001)
    idx, t, _ = mine.locate(x)
    v1, d1 = mine.evaluate(idx, t)
    from deepcomp_ase.compress.tables import Table

    other = Table(lower, upper, xmax, s0, s1, np.ascontiguousarray(theirs))
    v2, d2 = other.evaluate(idx, t)
    assert np.abs(v1 - v2).max() < 1e-12
    assert np.abs(d1 - d2).max() < 1e-10


# ---------------------------------------------------------------- relu / relu6 kinks
def _relu_net(activation):
    net = parse_model(read_model_tree(MODELS / "cu_se_e2_a_relu.dp")).descriptor.embeddings[(0, 0)]
    from deepcomp_ase.model.nets import Layer, Network

    return Network(tuple(Layer(l.w, l.b, l.idt, activation, l.resnet) for l in net.layers))


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_kinks_are_found_exactly(activation):
    from deepcomp_ase.compress.tabulate import find_kinks

    net = _relu_net(activation)
    kinks = find_kinks(net, -1.0, 25.0)
    assert len(kinks) > 0
    # the slope jumps at every kink and nowhere in between
    h = 1e-7
    _, left = net.value_and_first_derivative(kinks - h)
    _, right = net.value_and_first_derivative(kinks + h)
    assert np.all(np.abs(left - right).max(axis=1) > 1e-8)
    mids = 0.5 * (kinks[1:] + kinks[:-1])
    _, a = net.value_and_first_derivative(mids - 0.25 * np.diff(kinks))
    _, b = net.value_and_first_derivative(mids + 0.25 * np.diff(kinks))
    np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_split_tables_are_exact_and_continuous(activation):
    net = _relu_net(activation)
    table = build_table(net, -1.0, 5.0, 0.01, 0.1, 5)
    assert len(table.split_intervals) > 0
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.uniform(-1, 25, 5000), table.sub_start + 1e-9, table.sub_start - 1e-9])
    x = x[(x >= -1) & (x < 25)]
    v, d = table.value_and_derivative(x)
    ve, de = net.value_and_first_derivative(x)
    assert np.abs(v - ve).max() < 1e-12 * max(1, np.abs(ve).max())
    # slopes agree except within round-off of a kink
    assert np.abs(d - de).max() < 1e-9 * max(1, np.abs(de).max())
    # value is continuous across every split point
    s = table.sub_start[(table.sub_start > -1) & (table.sub_start < 25)]
    vl, _ = table.value_and_derivative(s - 1e-12)
    vr, _ = table.value_and_derivative(s)
    assert np.abs(vl - vr).max() < 1e-10


def test_relu_table_survives_the_file(tmp_path):
    from deepcomp_ase.compress.api import compress_model
    from deepcomp_ase.fileformat import load_compressed

    content = compress_model(MODELS / "cu_se_e2_a_relu.dp", tmp_path / "relu.dcz")
    (name, table), = content.tables.items()
    loaded = load_compressed(tmp_path / "relu.dcz").tables[name]
    np.testing.assert_array_equal(loaded.sub_start, table.sub_start)
    np.testing.assert_array_equal(loaded.split_intervals, table.split_intervals)
    np.testing.assert_array_equal(loaded.sub_coeffs, table.sub_coeffs)


# ---------------------------------------------------------------- se_e3
def test_se_e3_table_has_right_widths_everywhere():
    """DeePMD-kit fits [lower, lower+s0) and [upper, upper+s1) with the other grid's width."""
    model = parse_model(read_model_tree(MODELS / "cuau_se_e3.dp"))
    tables = tabulate_model(model, model.min_nbor_dist, 0.01, 5)
    for name, table in tables.items():
        key = tuple(int(k) for k in name.split(":")[1].split("-"))
        net = model.descriptor.embeddings[key]
        assert (table.stride0, table.stride1) == (0.1, 1.0)
        assert table.xmin == 5 * table.lower and table.lower == -table.upper
        edges = [table.xmin, table.lower, table.upper]
        x = np.concatenate([np.linspace(e, e + 1.0, 200, endpoint=False) for e in edges])
        v, d = table.value_and_derivative(x)
        ve, de = net.value_and_first_derivative(x)
        assert np.abs(v - ve).max() < 1e-9
        assert np.abs(d - de).max() < 1e-8


def test_se_e3_range_covers_every_centre_type():
    model = parse_model(read_model_tree(MODELS / "cuau_se_e3.dp"))
    info = json.loads((SHARED_TABLE_INFO / "cuau_se_e3.json").read_text())["compress"]["table_info"]
    deepmd_upper = max(v[1] for v in info.values())  # DeePMD-kit uses a per-table row; we take the max
    tables = tabulate_model(model, model.min_nbor_dist, 0.01, 5)
    assert {t.upper for t in tables.values()} == {deepmd_upper}
