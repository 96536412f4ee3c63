"""The fitting net's compiled matrix products (backends/numba_gemm.py) against numpy's BLAS."""

import numpy as np
import pytest

pytest.importorskip("numba")

from deepcomp_ase.backends import numba_gemm as G  # noqa: E402
from deepcomp_ase.errors import InputError  # noqa: E402

# shapes of real fitting nets (1600 -> 240/120, 120 -> 120, their transposes) and awkward edges:
# rows and columns not multiples of the tile, K across several KC blocks, one row, one column
SHAPES = [(1, 5, 8), (1, 1600, 120), (13, 1600, 120), (100, 120, 1600), (107, 120, 120), (25, 240, 240),
          (5, 7, 9), (50, 1000, 121), (37, 2 * G.KC + 3, 17), (G.MR * 9 + 1, 64, 8), (G.MC + G.MR + 2, 33, 40)]


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_equals_blas(m, k, n, dtype, tol):
    rng = np.random.default_rng(m * 10007 + k * 101 + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((k, n))
    packed = G.PackedWeights(w, dtype=dtype)
    ref = a.astype(np.float64) @ w.astype(dtype).astype(np.float64)
    got = packed.matmul(a)
    assert got.shape == (m, n) and got.dtype == dtype
    # one rounding per product, summed in order: the usual GEMM bound (~sqrt(K) eps), far below tol here
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * np.abs(ref).max())
    out = np.full((m, n), np.nan, dtype=dtype)
    assert packed.matmul(a, out=out) is out
    np.testing.assert_array_equal(out, got)


def test_strided_operands_and_in_place_output():
    """Row slices of wider buffers (the descriptor buffer of a chunk) are read and written in place."""
    rng = np.random.default_rng(7)
    buf_a = rng.standard_normal((30, 200))
    a = buf_a[3:29, :160]  # row stride 200, unit column stride
    w = rng.standard_normal((160, 24))
    buf_c = np.full((30, 40), np.nan)
    out = buf_c[2:28, 8:32]
    packed = G.PackedWeights(w)
    packed.matmul(a, out=out)
    np.testing.assert_allclose(out, a @ w, rtol=0, atol=1e-12 * np.abs(a @ w).max())
    assert np.isnan(buf_c[:2]).all() and np.isnan(buf_c[28:]).all()  # nothing written outside
    assert np.isnan(buf_c[:, :8]).all() and np.isnan(buf_c[:, 32:]).all()


def test_result_does_not_depend_on_threads():
    numba = pytest.importorskip("numba")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((G.MC * 3 + 5, 300))
    packed = G.PackedWeights(rng.standard_normal((300, 40)))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = packed.matmul(a)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = packed.matmul(a)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)


def test_rejects_wrong_operands():
    packed = G.PackedWeights(np.ones((4, 8)))
    with pytest.raises(ValueError, match="float64 rows of 4"):
        packed.matmul(np.ones((3, 5)))
    with pytest.raises(ValueError, match="float64 rows of 4"):
        packed.matmul(np.ones((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="float32 rows of 4"):
        G.PackedWeights(np.ones((4, 8)), dtype=np.float32).matmul(np.ones((3, 4)))


@pytest.mark.parametrize("value,expected", [("numba", True), ("blas", False), ("BLAS ", False),
                                            ("auto", G.TARGET_AVX512)])
def test_choice_from_environment(monkeypatch, value, expected):
    monkeypatch.setenv("DEEPCOMP_FITTING_GEMM", value)
    assert G.use_for_fitting() is expected


def test_bad_choice_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DEEPCOMP_FITTING_GEMM", "mkl")
    with pytest.raises(InputError, match="DEEPCOMP_FITTING_GEMM='mkl'"):
        G.use_for_fitting()


@pytest.mark.parametrize("m,k,n", [(3, 1600, 120), (40, 2 * G.KC + 1, 13), (G.MR * 4, 120, 120)])
def test_bias_is_added(m, k, n):
    rng = np.random.default_rng(11)
    a, w, b = rng.standard_normal((m, k)), rng.standard_normal((k, n)), rng.standard_normal(n)
    got = G.PackedWeights(w, b).matmul(a)
    ref = a @ w + b
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("shortcut", [0, 1, 2])
@pytest.mark.parametrize("timestep", [False, True])
def test_tanh_layer_tail_is_numpys_arithmetic(shortcut, timestep):
    """The fused pass after a tanh layer gives numpy's values bit for bit (same operations, same order)."""
    from deepcomp_ase.backends.numba_fitting import tanh_layer_tail

    rng = np.random.default_rng(shortcut * 2 + timestep)
    m = 24
    h = rng.standard_normal((17, m // 2 if shortcut == 2 else m))
    y = np.tanh(rng.standard_normal((17, m)))
    idt = rng.uniform(0.05, 0.2, m) if timestep else None
    want_slope = 1.0 - y * y
    want_y = y.copy()
    if idt is not None:
        want_y *= idt
        want_slope *= idt
    if shortcut == 1:
        want_y += h
    elif shortcut == 2:
        want_y += np.concatenate([h, h], axis=1)
    slope = np.empty_like(y)
    tanh_layer_tail(y, h, np.ones(m) if idt is None else idt, shortcut, slope)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(slope, want_slope)


@pytest.mark.slow
def test_avx2_tile_in_a_subprocess(tmp_path):
    """The 6-row tile (CPUs without AVX-512, DEEPCOMP_FITTING_GEMM=numba) computes the same products, float64
    and float32."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np; from deepcomp_ase.backends import numba_gemm as G; assert G.MR == 6, G.MR; "
            "r = np.random.default_rng(5); bad = 0\n"
            "for m, k, n in [(1, 1600, 120), (13, 1600, 120), (100, 120, 1600), (G.MC + 7, 2 * G.KC + 5, 17)]:\n"
            "    for dt, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):\n"
            "        a, w, b = (r.standard_normal(s).astype(dt) for s in ((m, k), (k, n), (n,)))\n"
            "        ref = a.astype(float) @ w.astype(float) + b; got = G.PackedWeights(w, b, dt).matmul(a)\n"
            "        bad += np.abs(got - ref).max() > tol * np.abs(ref).max()\n"
            "print('bad', bad)")
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="+avx,+avx2,+fma,+sse4.2,+popcnt",
               NUMBA_CACHE_DIR=str(tmp_path), DEEPCOMP_NUMBA_CACHE=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bad 0" in proc.stdout


@pytest.mark.parametrize("precision,tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("rows", [7, 300])
def test_fitting_net_with_odd_widths_equals_the_reference(monkeypatch, rows, precision, tol):
    """numba_cpu's fitting net on the compiled products (widths that are not multiples of 8, a doubling and an
    identity shortcut, timestep weights, a gelu layer, rows across blocks) equals model.nets' numpy reference."""
    from types import SimpleNamespace

    from deepcomp_ase.backends import numba_cpu
    from deepcomp_ase.model.nets import Layer, Network

    monkeypatch.setenv("DEEPCOMP_FITTING_GEMM", "numba")
    rng = np.random.default_rng(rows)

    def layer(n_in, n_out, act, resnet=False, idt=False):
        return Layer(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in), rng.standard_normal(n_out) * 0.1,
                     rng.uniform(0.05, 0.2, n_out) if idt else None, act, resnet)

    net = Network((layer(1000, 50, "tanh"), layer(50, 100, "tanh", resnet=True, idt=True),
                   layer(100, 100, "tanh", resnet=True, idt=True), layer(100, 100, "gelu", resnet=True),
                   layer(100, 1, "none")))
    params = SimpleNamespace(fitting=SimpleNamespace(nets=(net,), shared=None, bias_atom_e=np.array([0.25]),
                                                     exclude_types=frozenset()),
                             out_bias=np.array([-1.5]), atom_exclude_types=frozenset())
    fitting = numba_cpu._Fitting(params, precision)
    assert all(la.fwd is not None for la in fitting.nets[0][:-1])  # every product but the 1-wide one is ours
    x = rng.standard_normal((rows, 1000)) * 0.3
    want_e, want_g = net.value_and_gradient(x)
    got_g = x.astype(precision)
    got_e = fitting.energy_and_grad(0, got_g)
    np.testing.assert_allclose(got_e, want_e[:, 0] + 0.25 - 1.5, rtol=tol, atol=0)
    np.testing.assert_allclose(got_g, want_g, rtol=0, atol=tol * np.abs(want_g).max())
