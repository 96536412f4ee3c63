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
