"""The checked launcher, on numpy stand-ins (no GPU, no CuPy): every violation, every message."""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pytest

from deepcomp_ase.errors import DeepCompError
from deepcomp_ase.kernels.launch import (CTYPES, KERNELS, ArgSpec, KernelArgumentError, KernelSpec, check_args,
                                         checked_launch, launch_config)

SPEC = KernelSpec(
    "tabulate_fusion_se_a",
    args=(ArgSpec("em_x", "fp", ("nloc", "nnei")), ArgSpec("em", "fp", ("nloc", "nnei", 4)),
          ArgSpec("pair_table", "int32", ("ntypes*ntypes",)), ArgSpec("extra", "float64", ("nloc",), optional=True),
          ArgSpec("nloc", "int32", symbol="nloc"), ArgSpec("ntypes", "int32", symbol="ntypes"),
          ArgSpec("scale", "fp")),
    grid=lambda d, th: (d["nloc"],), block=lambda d, limit: 128, shared=lambda d, item: 4 * item * d["nnei"])


def good(fp=np.float64, nloc=12, nnei=48):
    return [np.zeros((nloc, nnei), fp), np.zeros((nloc, nnei, 4), fp), np.zeros(4, np.int32), None, nloc, 2, 0.5]


def message(args, fp=np.float64, **kw):
    with pytest.raises(KernelArgumentError) as info:
        check_args(SPEC, args, fp, **kw)
    return str(info.value)


def test_good_arguments_are_cast_to_exact_types():
    out, dims = check_args(SPEC, good(), np.float64)
    assert dims == {"nloc": 12, "nnei": 48, "ntypes": 2}
    assert type(out[4]) is np.int32 and type(out[5]) is np.int32
    assert type(out[6]) is np.float64
    out, _ = check_args(SPEC, good(np.float32), np.float32)
    assert type(out[6]) is np.float32  # 'fp' scalars follow the launch precision
    assert out[3] is None


def test_error_is_a_deepcomp_and_value_error():
    assert issubclass(KernelArgumentError, DeepCompError) and issubclass(KernelArgumentError, ValueError)


def test_dtype_message_names_kernel_argument_expectation_and_value():
    args = good()
    args[0] = np.zeros((12, 48), np.float32)
    assert message(args) == ("tabulate_fusion_se_a: argument 'em_x' expects float64 C-contiguous [nloc, nnei], "
                             "got float32 [12, 48]")


def test_ndim():
    args = good()
    args[1] = np.zeros((12, 48 * 4))
    assert "argument 'em' expects float64 C-contiguous [nloc, nnei, 4], got float64 [12, 192]" in message(args)


def test_fixed_dimension():
    args = good()
    args[1] = np.zeros((12, 48, 3))
    assert "argument 'em' expects float64 C-contiguous [nloc, nnei, 4], got float64 [12, 48, 3]" in message(args)


def test_shape_relation_names_where_the_symbol_was_bound():
    args = good()
    args[1] = np.zeros((12, 40, 4))
    assert message(args) == ("tabulate_fusion_se_a: argument 'em' expects float64 C-contiguous [nloc, nnei, 4] "
                             "with nnei=48 (from 'em_x'), got float64 [12, 40, 4]")


def test_non_contiguous():
    args = good()
    args[0] = np.zeros((48, 12)).T
    assert "got float64 non-contiguous [12, 48]" in message(args)


def test_expression_dimension():
    args = good()
    args[2] = np.zeros(3, np.int32)
    msg = message(args)
    assert "argument 'pair_table' expects int32 C-contiguous [ntypes*ntypes]" in msg
    assert "ntypes=2 (from 'ntypes')" in msg and "got int32 [3]" in msg


def test_scalar_symbol_must_agree_with_arrays():
    args = good()
    args[4] = 11
    assert message(args) == "tabulate_fusion_se_a: argument 'nloc' is 11 but nloc=12 (from 'em_x')"


@pytest.mark.parametrize("value, text", [
    (2.5, "argument 'ntypes' expects int32 scalar, got float 2.5"),
    (True, "argument 'ntypes' expects int32 scalar, got bool True"),
    ("2", "argument 'ntypes' expects int32 scalar, got str '2'"),
    (2**31, "argument 'ntypes' = 2147483648 does not fit in int32"),
    (np.zeros(2), "argument 'ntypes' expects int32 scalar, got an array of shape (2,)"),
])
def test_scalar_checks(value, text):
    args = good()
    args[5] = value
    assert text in message(args)


def test_integral_float_and_numpy_scalars_are_accepted():
    args = good()
    args[5] = 2.0
    args[6] = np.float32(0.25)
    out, _ = check_args(SPEC, args, np.float64)
    assert type(out[5]) is np.int32 and out[5] == 2 and type(out[6]) is np.float64


def test_non_finite_float_scalar():
    args = good()
    args[6] = float("nan")
    assert "argument 'scale' must be finite" in message(args)


def test_argument_count():
    assert message(good()[:-1]).startswith("tabulate_fusion_se_a: expects 7 arguments (em_x, em, pair_table, extra,")


def test_none_only_for_optional():
    args = good()
    args[0] = None
    assert "argument 'em_x' expects float64 C-contiguous [nloc, nnei], got None" in message(args)


def test_not_an_array():
    args = good()
    args[1] = [[0.0]]
    assert "argument 'em' expects float64 C-contiguous [nloc, nnei, 4], got list" in message(args)


def test_device_hook_and_array_type():
    def on_device_one(a):
        return "is on device 1, the kernel runs on device 0" if a.ndim == 3 else None

    assert message(good(), device_check=on_device_one) == (
        "tabulate_fusion_se_a: argument 'em' is on device 1, the kernel runs on device 0")

    class DeviceArray(np.ndarray):
        pass

    assert "argument 'em_x' expects a " in message(good(), array_type=DeviceArray)
    assert "got numpy.ndarray" in message(good(), array_type=DeviceArray)


def test_precision_must_be_float():
    with pytest.raises(KernelArgumentError, match="precision must be float32 or float64"):
        check_args(SPEC, good(), np.int32)


def test_launch_config_and_empty_grid():
    calls = []
    dims = checked_launch(lambda g, b, a, shared_mem: calls.append((g, b, shared_mem)), SPEC, good(), np.float64)
    assert calls == [((12,), (128,), 4 * 8 * 48)] and dims["nloc"] == 12
    calls.clear()
    checked_launch(lambda *a, **k: calls.append(a), SPEC, good(nloc=0), np.float64)
    assert calls == []  # nothing to do: no launch with an empty grid
    big = KernelSpec("k", args=(), grid=lambda d, th: (1,), block=lambda d, limit: 2048)
    with pytest.raises(KernelArgumentError, match="block of 2048 threads; the compiled kernel allows 1024"):
        launch_config(big, {}, 8)
    fat = KernelSpec("k", args=(), grid=lambda d, th: (1,), block=lambda d, limit: 32, shared=lambda d, i: 1 << 20)
    with pytest.raises(KernelArgumentError, match="shared memory"):
        launch_config(fat, {}, 8)


# ---------------------------------------------------------------------------- specs vs .cu sources
# an optional launch-bounds macro may stand between "void" and the name (dpa1.cu DC_DPA1_BOUNDS)
_KERNEL = re.compile(r"template\s*<typename FPTYPE>\s*__global__\s+void\s+(?:[A-Z_0-9]+\s+)?(\w+)\s*\(([^)]*)\)", re.S)


def kernel_signatures() -> dict:
    out = {}
    for name in {s.source for s in KERNELS.values()}:
        text = resources.files("deepcomp_ase.kernels").joinpath(name).read_text()
        for kname, params in _KERNEL.findall(text):
            out[kname] = (name, [" ".join(p.split()) for p in params.split(",")])
    return out


def test_every_kernel_has_a_spec_and_every_spec_a_kernel():
    sigs = kernel_signatures()
    assert set(sigs) == set(KERNELS)
    for name, spec in KERNELS.items():
        assert sigs[name][0] == spec.source


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_spec_matches_the_cuda_parameter_list(name):
    """Same order, names, C types, pointer-ness, and const exactly on the inputs."""
    _, params = kernel_signatures()[name]
    spec = KERNELS[name]
    assert [p.split()[-1] for p in params] == [a.name for a in spec.args]
    for text, a in zip(params, spec.args):
        const = text.startswith("const ")
        body = text[6:] if const else text
        ctype, _, pname = body.rpartition(" ")
        pointer = ctype.endswith("*")
        ctype = ctype.rstrip("*").strip()
        assert ctype == CTYPES[a.dtype], (name, a.name, ctype)
        assert pointer == a.is_array, (name, a.name)
        if pointer:
            assert const == (not a.output), (name, a.name, "const must mark exactly the inputs")
