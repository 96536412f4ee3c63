"""One checked launcher for every CUDA kernel of the package.

CuPy validates nothing it passes to a ``RawKernel`` (a Python ``int`` becomes ``long long``, a
float32 array given to a ``double*`` is silently reinterpreted). Every kernel therefore has a
:class:`KernelSpec` here, in the order of its C++ parameter list, and every launch goes through
:func:`check_args`, which verifies

* the number of arguments;
* for arrays: dtype (``"fp"`` is the launch precision), ndim, shape relations between arguments
  (symbolic dimensions such as ``nloc`` bind at first use and must agree afterwards; expressions
  like ``ntypes*ntypes`` are checked after binding), C-contiguity and the device;
* for scalars: type and range, cast to the exact numpy type of the C++ parameter.

Messages name the kernel and the argument, e.g. ``tabulate_fusion_se_a_fwd: argument 'em'
expects float64 C-contiguous [nloc, nnei, 4], got float32 [12, 48, 4]``.

The checks run on numpy arrays too (``device_check=None``), so the validation logic is tested
on machines without a GPU. A step launches the same kernels with the same shapes again and
again, so :class:`LaunchCache` remembers each validated signature (kernel, precision, every
array's type, dtype, shape, layout and device, every scalar's type and value) with its launch
configuration: a repeated launch costs one key and one dictionary look-up.

Block sizes come from the compiled kernel: the threads a block may have depend on the registers
the compiler gave it (``max_threads_per_block`` of a CuPy kernel), so the per-atom kernels loop
over embedding outputs when the net is wider than the block, and the se_a backward kernel works
in output tiles when its shared memory would exceed 48 KiB.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import DeepCompError

#: C++ parameter types of each ArgSpec dtype (used by the signature consistency test)
CTYPES = {
    "fp": "FPTYPE", "float64": "double", "float32": "float", "int32": "int", "int64": "long long",
    "uint64": "unsigned long long",
}
_NUMPY = {"float64": np.float64, "float32": np.float32, "int32": np.int32, "int64": np.int64,
          "uint64": np.uint64}
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1)}
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID_X = 2**31 - 1
MAX_DYNAMIC_SHARED = 48 * 1024


class KernelArgumentError(DeepCompError, ValueError):
    """A kernel was called with an argument of the wrong dtype, shape, layout, device or type."""


@dataclass(frozen=True)
class ArgSpec:
    """One kernel parameter.

    ``shape`` holds ints, symbol names (``"nloc"``) or small expressions of symbols
    (``"ntypes*ntypes"``, ``"ntypes+1"``). A scalar with ``symbol`` set must equal that dimension
    (or binds it). ``optional`` arrays may be ``None`` (a null pointer).
    """

    name: str
    dtype: str
    shape: tuple | None = None  # None: a scalar
    symbol: str | None = None
    optional: bool = False
    output: bool = False

    @property
    def is_array(self) -> bool:
        return self.shape is not None

    def describe(self, fp: str) -> str:
        dt = fp if self.dtype == "fp" else self.dtype
        if not self.is_array:
            return f"{dt} scalar"
        dims = ", ".join(str(d) for d in self.shape)
        return f"{dt} C-contiguous [{dims}]"


@dataclass(frozen=True)
class KernelSpec:
    """A kernel: its name in the .cu sources, its parameters, and its launch geometry.

    ``block(dims, limit)`` returns the threads per block (at most ``limit``, the compiled kernel's
    ``max_threads_per_block``), ``grid(dims, threads)`` the grid, ``shared(dims, itemsize)`` the
    dynamic shared memory in bytes.
    """

    name: str
    args: tuple[ArgSpec, ...]
    grid: Callable[[dict, int], tuple] = field(compare=False)  # (dims, threads per block)
    block: Callable[[dict, int], int] = field(compare=False)  # (dims, the kernel's thread limit) -> threads
    shared: Callable[[dict, int], int] = field(default=lambda dims, itemsize: 0, compare=False)
    source: str = ""

    def arg(self, name: str) -> ArgSpec:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)


# --------------------------------------------------------------------------- shape expressions
_ALLOWED = (ast.Expression, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Name, ast.Load, ast.Constant)


def _symbols(expr) -> set[str]:
    if isinstance(expr, int):
        return set()
    tree = ast.parse(str(expr), mode="eval")
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def eval_dim(expr, dims: dict) -> int:
    """Value of a dimension: an int, a bound symbol or an arithmetic expression of symbols."""
    if isinstance(expr, (int, np.integer)):
        return int(expr)
    tree = ast.parse(str(expr), mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ValueError(f"unsupported shape expression {expr!r}")
    return int(eval(compile(tree, "<dim>", "eval"), {"__builtins__": {}}, dict(dims)))  # noqa: S307 - checked AST


def _is_plain_symbol(expr) -> bool:
    return isinstance(expr, str) and expr.isidentifier()


# --------------------------------------------------------------------------- checking
def _describe_array(a) -> str:
    dt = np.dtype(a.dtype).name
    contig = "" if a.flags.c_contiguous else " non-contiguous"
    return f"{dt}{contig} [{', '.join(str(s) for s in a.shape)}]"


def _bound_text(dims: dict, origin: dict, syms) -> str:
    parts = [f"{s}={dims[s]} (from '{origin[s]}')" for s in sorted(syms) if s in dims]
    return " with " + ", ".join(parts) if parts else ""


def check_args(spec: KernelSpec, args, fp_dtype, *, device_check: Callable | None = None,
               array_type=None) -> tuple[tuple, dict]:
    """Validate ``args`` against ``spec``; return (launch arguments, bound dimensions).

    ``fp_dtype`` is the kernel precision (np.float32 or np.float64). ``device_check(arr)``
    returns None when ``arr`` is on the launch device, else a text saying where it is; it is
    None for numpy stand-ins. ``array_type`` (e.g. ``cupy.ndarray``) rejects other array kinds.
    """
    fp = np.dtype(fp_dtype).name
    if fp not in ("float32", "float64"):
        raise KernelArgumentError(f"{spec.name}: precision must be float32 or float64, got {fp}")
    args = tuple(args)
    if len(args) != len(spec.args):
        raise KernelArgumentError(
            f"{spec.name}: expects {len(spec.args)} arguments ({', '.join(a.name for a in spec.args)}), "
            f"got {len(args)}")
    dims: dict[str, int] = {}
    origin: dict[str, str] = {}
    out = []
    deferred = []
    # pass 1: arrays bind plain symbols and are checked for dtype/ndim/layout/device
    for a, value in zip(spec.args, args):
        if not a.is_array:
            continue
        want = fp if a.dtype == "fp" else a.dtype
        if value is None:
            if a.optional:
                continue
            raise KernelArgumentError(f"{spec.name}: argument '{a.name}' expects {a.describe(fp)}, got None")
        if array_type is not None and not isinstance(value, array_type):
            raise KernelArgumentError(
                f"{spec.name}: argument '{a.name}' expects a {array_type.__module__}.{array_type.__name__} "
                f"({a.describe(fp)}), got {type(value).__module__}.{type(value).__name__}")
        if not hasattr(value, "dtype") or not hasattr(value, "shape") or not hasattr(value, "flags"):
            raise KernelArgumentError(
                f"{spec.name}: argument '{a.name}' expects {a.describe(fp)}, got {type(value).__name__}")
        ok = (np.dtype(value.dtype).name == want and value.ndim == len(a.shape) and value.flags.c_contiguous)
        if not ok:
            raise KernelArgumentError(
                f"{spec.name}: argument '{a.name}' expects {a.describe(fp)}, got {_describe_array(value)}")
        if device_check is not None:
            where = device_check(value)
            if where:
                raise KernelArgumentError(f"{spec.name}: argument '{a.name}' {where}")
        for d, (expr, size) in enumerate(zip(a.shape, value.shape)):
            if _is_plain_symbol(expr):
                if expr in dims and dims[expr] != size:
                    raise KernelArgumentError(
                        f"{spec.name}: argument '{a.name}' expects {a.describe(fp)}"
                        f"{_bound_text(dims, origin, [expr])}, got {_describe_array(value)}")
                if expr not in dims:
                    dims[expr], origin[expr] = int(size), a.name
            elif not isinstance(expr, int):
                deferred.append((a, value))
            elif size != expr:
                raise KernelArgumentError(
                    f"{spec.name}: argument '{a.name}' expects {a.describe(fp)}, got {_describe_array(value)}")
    # pass 2: scalars (cast; symbols bind or must agree)
    for a, value in zip(spec.args, args):
        if a.is_array:
            continue
        want = fp if a.dtype == "fp" else a.dtype
        cast = _cast_scalar(spec, a, value, want)
        if a.symbol is not None:
            if a.symbol in dims and dims[a.symbol] != int(cast):
                raise KernelArgumentError(
                    f"{spec.name}: argument '{a.name}' is {int(cast)} but {a.symbol}={dims[a.symbol]} "
                    f"(from '{origin[a.symbol]}')")
            if a.symbol not in dims:
                dims[a.symbol], origin[a.symbol] = int(cast), a.name
    # pass 3: expressions
    for a, value in deferred:
        for expr, size in zip(a.shape, value.shape):
            if isinstance(expr, int) or _is_plain_symbol(expr):
                continue
            missing = _symbols(expr) - set(dims)
            if missing:
                raise KernelArgumentError(
                    f"{spec.name}: argument '{a.name}': dimension {expr} uses unbound {sorted(missing)}")
            if eval_dim(expr, dims) != size:
                raise KernelArgumentError(
                    f"{spec.name}: argument '{a.name}' expects {a.describe(fp)}"
                    f"{_bound_text(dims, origin, _symbols(expr))}, got {_describe_array(value)}")
    # assemble in order
    for a, value in zip(spec.args, args):
        if a.is_array:
            out.append(value)
        else:
            out.append(_cast_scalar(spec, a, value, fp if a.dtype == "fp" else a.dtype))
    return tuple(out), dims


def _cast_scalar(spec: KernelSpec, a: ArgSpec, value, want: str):
    if hasattr(value, "shape") and getattr(value, "ndim", 0) != 0:
        raise KernelArgumentError(
            f"{spec.name}: argument '{a.name}' expects {want} scalar, got an array of shape {tuple(value.shape)}")
    if isinstance(value, (bool, np.bool_)):
        raise KernelArgumentError(f"{spec.name}: argument '{a.name}' expects {want} scalar, got bool {value!r}")
    if want in _INT_RANGE:
        if isinstance(value, (int, np.integer)):
            v = int(value)
        elif isinstance(value, (float, np.floating)) and float(value).is_integer():
            v = int(value)
        else:
            raise KernelArgumentError(
                f"{spec.name}: argument '{a.name}' expects {want} scalar, got {type(value).__name__} {value!r}")
        lo, hi = _INT_RANGE[want]
        if not lo <= v <= hi:
            raise KernelArgumentError(f"{spec.name}: argument '{a.name}' = {v} does not fit in {want}")
        return _NUMPY[want](v)
    if not isinstance(value, (int, float, np.integer, np.floating)):
        raise KernelArgumentError(
            f"{spec.name}: argument '{a.name}' expects {want} scalar, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise KernelArgumentError(f"{spec.name}: argument '{a.name}' must be finite, got {v!r}")
    return _NUMPY[want](v)


def launch_config(spec: KernelSpec, dims: dict, itemsize: int, max_threads: int = MAX_THREADS_PER_BLOCK):
    """(grid, block, shared bytes) of a launch, checked against the CUDA limits.

    ``max_threads``: the compiled kernel's ``max_threads_per_block`` (it depends on the registers
    the compiler used); whole warps only.
    """
    limit = usable_threads(max_threads)
    threads = int(spec.block(dims, limit))
    block = (threads,)
    grid = tuple(int(g) for g in spec.grid(dims, threads))
    shared = int(spec.shared({**dims, "threads": threads}, itemsize))
    if threads > limit or threads < 1:
        raise KernelArgumentError(f"{spec.name}: block of {threads} threads; the compiled kernel allows {limit}")
    if grid and grid[0] > MAX_GRID_X:
        raise KernelArgumentError(f"{spec.name}: grid {grid} too large")
    if shared > MAX_DYNAMIC_SHARED:
        raise KernelArgumentError(
            f"{spec.name}: needs {shared} bytes of dynamic shared memory (more than {MAX_DYNAMIC_SHARED // 1024} KiB "
            "without an opt-in); the embedding net is too wide for this kernel")
    return grid, block, shared


def usable_threads(max_threads: int) -> int:
    """Threads per block a kernel may use: its limit rounded down to whole warps (at least one)."""
    return max(32, min(int(max_threads), MAX_THREADS_PER_BLOCK) // 32 * 32)


def kernel_thread_limit(function) -> int:
    """``max_threads_per_block`` of a compiled kernel (CuPy RawKernel, or the emulated stand-in)."""
    return int(getattr(function, "max_threads_per_block", MAX_THREADS_PER_BLOCK))


#: scalar types a launch may pass (anything else is checked as an array, or rejected by check_args)
_SCALARS = frozenset({int, float, bool, np.int32, np.int64, np.uint64, np.float32, np.float64, np.bool_})
_FP_NAMES = {np.float64: "float64", np.float32: "float32"}


def _same(args, last) -> bool:
    """The same objects, or scalars of the same type and value, position by position."""
    if len(args) != len(last):
        return False
    for a, b in zip(args, last):
        if a is not b and not (type(a) is type(b) and type(a) in _SCALARS and a == b):
            return False
    return True


class LaunchCache:
    """Validated launch signatures -> (scalar template, grid, block, shared bytes, dims).

    The key holds everything :func:`check_args` looks at, so a hit is a launch that would pass
    the same checks with the same result. ``device_key(array)`` gives the array's device (None
    for numpy). Bounded: cleared when it holds ``max_entries`` (LAMMPS changes the ghost count
    at every re-neighbouring).
    """

    def __init__(self, device_key: Callable | None = None, max_entries: int = 4096):
        self.device_key = device_key
        self.max_entries = max_entries
        self.entries: dict = {}
        self.last: dict = {}  # kernel name -> (function, precision, arguments, entry) of its last launch
        self.hits = self.misses = 0

    def key(self, spec: KernelSpec, args, fp_name: str, max_threads: int):
        """Everything check_args looks at; AttributeError/TypeError for what it would reject."""
        dev = self.device_key
        if dev is None:  # numpy stand-ins: no device
            return (spec.name, fp_name, max_threads, *[
                (t, a) if t in _SCALARS else (None if a is None else (t, a.dtype, a.shape, a.strides))
                for a in args for t in (type(a),)])
        return (spec.name, fp_name, max_threads, *[
            (t, a) if t in _SCALARS else (None if a is None else (t, a.dtype, a.shape, a.strides, dev(a)))
            for a in args for t in (type(a),)])

    def launch(self, function, spec: KernelSpec, args, fp_dtype, *, device_check=None, array_type=None):
        """As :func:`checked_launch`, validating a signature only the first time it is seen."""
        fp_name = _FP_NAMES.get(fp_dtype) or np.dtype(fp_dtype).name
        max_threads = getattr(function, "max_threads_per_block", MAX_THREADS_PER_BLOCK)
        # the same arrays (identity: an array's dtype, shape, layout and device cannot change) and
        # equal scalars as the kernel's last launch: that launch's validation holds
        last = self.last.get(spec.name)
        if last is not None and last[0] is function and last[1] == fp_name and _same(args, last[2]):
            self.hits += 1
            return self._go(function, args, last[3])
        try:
            key = self.key(spec, args, fp_name, max_threads)
            hit = self.entries.get(key)
        except (AttributeError, TypeError):  # not an array, or unhashable: the full check explains it
            key = hit = None
        if hit is None:
            cast, dims = check_args(spec, args, fp_dtype, device_check=device_check, array_type=array_type)
            grid, block, shared = launch_config(spec, dims, np.dtype(fp_dtype).itemsize, max_threads)
            # the scalars as cast (exact numpy types); arrays are passed through as given
            scalars = tuple((k, c) for k, (c, a) in enumerate(zip(cast, args)) if c is not a)
            hit = (scalars, grid, block, shared, dims)
            if key is not None:
                if len(self.entries) >= self.max_entries:
                    self.entries.clear()
                self.entries[key] = hit
            self.misses += 1
        else:
            self.hits += 1
        if key is not None:
            self.last[spec.name] = (function, fp_name, args, hit)
        return self._go(function, args, hit)

    @staticmethod
    def _go(function, args, hit):
        scalars, grid, block, shared, dims = hit
        if not grid or min(grid) == 0:
            return dims
        out = list(args)
        for k, c in scalars:
            out[k] = c
        function(grid, block, tuple(out), shared_mem=shared)
        return dims


def checked_launch(function, spec: KernelSpec, args, fp_dtype, *, device_check=None, array_type=None):
    """Validate, then launch ``function(grid, block, args, shared_mem=...)``; no launch on an empty grid."""
    cast, dims = check_args(spec, args, fp_dtype, device_check=device_check, array_type=array_type)
    grid, block, shared = launch_config(spec, dims, np.dtype(fp_dtype).itemsize, kernel_thread_limit(function))
    if not grid or min(grid) == 0:
        return dims
    function(grid, block, cast, shared_mem=shared)
    return dims


# --------------------------------------------------------------------------- the kernels
#: most blocks of a one-dimensional grid; kernels with more work items loop (grid-stride)
GRID_CAP = 65535 * 64


def _blocks(n: int, threads: int) -> int:
    return max(0, min(-(-n // threads), GRID_CAP))


def _ng_threads(dims: dict, limit: int = MAX_THREADS_PER_BLOCK) -> int:
    """Threads of the per-atom kernels: one per embedding output, rounded up to whole warps (>= 64),
    at most the kernel's limit (the kernels then loop over the outputs)."""
    return min(max(64, -(-dims["ng"] // 32) * 32), limit)


def _linear(threads: int):
    return lambda d, limit: min(threads, limit)


def _per_atom(d, limit):
    return (d["nloc"],)


LINEAR_THREADS = 256
A = ArgSpec

_TABLE_ARGS = (
    A("table", "fp", ("ncoef",)),
    A("table_info", "fp", ("ntab", 10)),
    A("table_offset", "int64", ("ntab", 2)),
    A("net_layers", "int32", ("nlayer", 8)),
    A("net_first", "int32", ("ntab", 2)),
    A("net_params", "fp", ("nparam",)),
)
def _atom_args(flags_written: bool) -> tuple:
    """Per-atom inputs of the tabulate kernels; the forward kernels flag atoms (relu-split inputs)."""
    return (
        A("em", "fp", ("nloc", "nnei", 4)),
        A("nnbr", "int32", ("nloc", "ntypes")),
        A("atom_flags", "int32", ("nloc",), output=flags_written),
        A("atype", "int32", ("nall",)),
        A("sec", "int32", ("ntypes+1",)),
        A("pair_table", "int32", ("nct", "ntypes")),
        A("row_of_atom", "int32", ("nloc",)),
    )


_ATOM_ARGS_FWD, _ATOM_ARGS = _atom_args(True), _atom_args(False)
_SE_A_SCALARS = (
    A("nloc", "int32", symbol="nloc"), A("nnei", "int32", symbol="nnei"), A("ntypes", "int32", symbol="ntypes"),
    A("ng", "int32", symbol="ng"), A("m2", "int32", symbol="m2"), A("ldd", "int32", symbol="ldd"),
    A("maxw", "int32", symbol="maxw"), A("inv_nnei", "fp"),
)
#: se_atten_v2's type-pair term (tabulate_fusion_se_a.cu, DcTypeTerm)
_TYPE_TERM_ARGS = (
    A("nlist", "int32", ("nloc", "nnei")), A("rij", "fp", ("nloc", "nnei", 3)),
    A("type_term", "fp", ("nterm", "ng")), A("term_row", "int32", ("ntypes_all*ntypes_all",)),
)
_TYPE_TERM_SCALARS = (
    A("ntypes_all", "int32", symbol="ntypes_all"), A("tf_switch", "int32"), A("rcut_smth", "fp"), A("rcut", "fp"),
    A("protection", "fp"),
)
_SE_R_SCALARS = (
    A("nloc", "int32", symbol="nloc"), A("nnei", "int32", symbol="nnei"), A("ntypes", "int32", symbol="ntypes"),
    A("ng", "int32", symbol="ng"), A("ldd", "int32", symbol="ldd"), A("maxw", "int32", symbol="maxw"),
    A("scale", "fp"),
)


def _se_a_fwd_shared(dims: dict, itemsize: int) -> int:
    return itemsize * (4 * dims["m2"] + 4 * dims["maxw"])


def _warps(dims: dict) -> int:
    """Warps of the launch (the reduction scratch); the most a block can have before the launch is known."""
    return dims.get("threads", MAX_THREADS_PER_BLOCK) // 32


def _se_a_bwd_shared(dims: dict, itemsize: int) -> int:
    warps = _warps(dims)
    return itemsize * (4 * dims["m2"] + 4 * dims["tile"] + 4 * dims["maxw"] + 8 * warps)


def se_a_tile(ng: int, m2: int, maxw: int, itemsize: int) -> int:
    """Outputs per pass of the se_a backward kernel: ``ng`` when its gT fits in shared memory,
    else the largest multiple of 32 that does (0: not even 32 outputs fit)."""
    fixed = _se_a_bwd_shared({"m2": m2, "tile": 0, "maxw": maxw}, itemsize)
    room = (MAX_DYNAMIC_SHARED - fixed) // (4 * itemsize)
    if room >= ng:
        return int(ng)
    return max(0, room // 32 * 32)


def shared_memory_problem(ng: int, m2: int, maxw: int, itemsize: int) -> str:
    """Empty when the per-atom kernels of a net (ng outputs, widest layer maxw) fit in the
    shared memory a block gets without an opt-in, else why not."""
    need = max(_se_a_fwd_shared({"m2": m2, "maxw": maxw}, itemsize),
               _se_e3_shared({"ng": ng, "maxw": maxw}, itemsize))
    # a net narrower than 32 outputs is one pass (tile == ng), not a failed fallback
    if need > MAX_DYNAMIC_SHARED or se_a_tile(ng, m2, maxw, itemsize) < min(ng, 32):
        return (f"embedding width {ng} (widest layer {maxw}) needs more than {MAX_DYNAMIC_SHARED // 1024} KiB of "
                f"shared memory per block in {np.dtype(f'f{itemsize}').name}")
    return ""


def _se_r_shared(dims: dict, itemsize: int) -> int:
    warps = _warps(dims)
    return itemsize * (4 * dims["maxw"] + 8 * warps)


KERNELS: dict[str, KernelSpec] = {}


def _register(spec: KernelSpec) -> None:
    KERNELS[spec.name] = spec


_register(KernelSpec(
    "cell_bin", source="cell_list.cu",
    args=(A("pos", "float64", ("n", 3)), A("frame", "float64", (12,)), A("inv_frame", "float64", (9,)),
          A("grid_info", "int32", (8,)), A("pos_wrapped", "float64", ("n", 3), output=True),
          A("bin_of_atom", "int32", ("n",), output=True), A("n", "int32", symbol="n")),
    grid=lambda d, th: (_blocks(d["n"], th),), block=_linear(LINEAR_THREADS)))

_register(KernelSpec(
    "build_nlist", source="cell_list.cu",
    args=(A("pos_wrapped", "float64", ("n", 3)), A("frame", "float64", (12,)), A("grid_info", "int32", (8,)),
          A("bin_of_atom", "int32", ("n",)), A("bin_start", "int32", ("nbins+1",)),
          A("bin_atoms", "int32", ("n",)), A("atype", "int32", ("n",)), A("sec", "int32", ("nsec+1",)),
          A("model_exclude", "int32", ("ntypes*ntypes",)),
          A("nlist", "int32", ("nloc", "nnei"), output=True), A("rij", "fp", ("nloc", "nnei", 3), output=True),
          A("key", "float64", ("nloc", "nnei"), output=True), A("nnbr", "int32", ("nloc", "nsec"), output=True),
          A("counters", "uint64", (8,), output=True),
          A("n", "int32", symbol="n"), A("nloc", "int32", symbol="nloc"), A("nnei", "int32", symbol="nnei"),
          A("ntypes", "int32", symbol="ntypes"), A("nsec", "int32", symbol="nsec"), A("nbins", "int32", symbol="nbins"),
          A("rcut2", "float64"), A("min_r2", "float64")),
    grid=lambda d, th: (_blocks(d["nloc"], th),), block=_linear(128)))

_register(KernelSpec(
    "env_mat_se_a", source="env_mat.cu",
    args=(A("nlist", "int32", ("nloc", "nnei")), A("rij", "fp", ("nloc", "nnei", 3)), A("atype", "int32", ("nall",)),
          A("sec", "int32", ("ntypes+1",)), A("pair_table", "int32", ("nct", "ntypes")),
          A("davg", "fp", ("nct", 4)), A("dstd", "fp", ("nct", 4)), A("table_info", "fp", ("ntab", 10)),
          A("em", "fp", ("nloc", "nnei", 4), output=True), A("atom_flags", "int32", ("nloc",), output=True),
          A("counters", "uint64", (8,), output=True),
          A("nloc", "int32", symbol="nloc"), A("nnei", "int32", symbol="nnei"), A("ntypes", "int32", symbol="ntypes"),
          A("rcut_smth", "fp"), A("rcut", "fp"), A("protection", "fp"), A("count_inputs", "int32")),
    grid=lambda d, th: (_blocks(d["nloc"] * d["nnei"], th),), block=_linear(LINEAR_THREADS)))

_register(KernelSpec(
    "tabulate_fusion_se_a_fwd", source="tabulate_fusion_se_a.cu",
    args=_TABLE_ARGS + _ATOM_ARGS_FWD + (
        A("pad_vec", "fp", ("nct", "ntypes", "ng")),
        A("t_out", "fp", ("nloc", "ng", 4), output=True), A("desc", "fp", ("nloc", "ldd"), output=True),
    ) + _SE_A_SCALARS,
    grid=_per_atom, block=_ng_threads, shared=_se_a_fwd_shared))

_register(KernelSpec(
    "tabulate_fusion_se_a_bwd", source="tabulate_fusion_se_a.cu",
    args=_TABLE_ARGS + _ATOM_ARGS + (
        A("t_in", "fp", ("nloc", "ng", 4)), A("g_desc", "fp", ("nloc", "ldd")),
        A("g_em", "fp", ("nloc", "nnei", 4), output=True),
    ) + _SE_A_SCALARS + (A("tile", "int32", symbol="tile"),),
    grid=_per_atom, block=_ng_threads, shared=_se_a_bwd_shared))

_register(KernelSpec(
    "tabulate_fusion_se_atten_fwd", source="tabulate_fusion_se_a.cu",
    args=_TABLE_ARGS + _ATOM_ARGS_FWD + (A("pad_vec", "fp", ("nct", "ntypes", "ng")),) + _TYPE_TERM_ARGS + (
        A("t_out", "fp", ("nloc", "ng", 4), output=True), A("desc", "fp", ("nloc", "ldd"), output=True),
    ) + _SE_A_SCALARS + _TYPE_TERM_SCALARS,
    grid=_per_atom, block=_ng_threads, shared=_se_a_fwd_shared))

_register(KernelSpec(
    "tabulate_fusion_se_atten_bwd", source="tabulate_fusion_se_a.cu",
    args=_TABLE_ARGS + _ATOM_ARGS + (A("t_in", "fp", ("nloc", "ng", 4)), A("g_desc", "fp", ("nloc", "ldd"))) +
    _TYPE_TERM_ARGS + (
        A("g_em", "fp", ("nloc", "nnei", 4), output=True), A("g_r", "fp", ("nloc", "nnei"), output=True),
    ) + _SE_A_SCALARS + _TYPE_TERM_SCALARS + (A("tile", "int32", symbol="tile"),),
    grid=_per_atom, block=_ng_threads, shared=_se_a_bwd_shared))

_register(KernelSpec(
    "tabulate_fusion_se_r_fwd", source="tabulate_fusion_se_r.cu",
    args=_TABLE_ARGS + _ATOM_ARGS_FWD + (
        A("pad_vec", "fp", ("nct", "ntypes", "ng")), A("desc", "fp", ("nloc", "ldd"), output=True),
    ) + _SE_R_SCALARS,
    grid=_per_atom, block=_ng_threads, shared=_se_r_shared))

_register(KernelSpec(
    "tabulate_fusion_se_r_bwd", source="tabulate_fusion_se_r.cu",
    args=_TABLE_ARGS + _ATOM_ARGS + (
        A("g_desc", "fp", ("nloc", "ldd")), A("g_em", "fp", ("nloc", "nnei", 4), output=True),
    ) + _SE_R_SCALARS,
    grid=_per_atom, block=_ng_threads, shared=_se_r_shared))

_SE_E3_SCALARS = (
    A("nloc", "int32", symbol="nloc"), A("nnei", "int32", symbol="nnei"), A("ntypes", "int32", symbol="ntypes"),
    A("ng", "int32", symbol="ng"), A("ldd", "int32", symbol="ldd"), A("maxw", "int32", symbol="maxw"),
)


def _se_e3_shared(dims: dict, itemsize: int) -> int:
    warps = _warps(dims)
    return itemsize * (dims["ng"] + 4 * dims["maxw"] + 8 * warps)


_register(KernelSpec(
    "tabulate_fusion_se_e3_fwd", source="tabulate_fusion_se_e3.cu",
    args=_TABLE_ARGS + _ATOM_ARGS_FWD + (
        A("e3_table", "int32", ("ntypes*ntypes",)), A("desc", "fp", ("nloc", "ldd"), output=True),
        A("counters", "uint64", (8,), output=True),
    ) + _SE_E3_SCALARS,
    grid=_per_atom, block=_ng_threads, shared=_se_e3_shared))

_register(KernelSpec(
    "tabulate_fusion_se_e3_bwd", source="tabulate_fusion_se_e3.cu",
    args=_TABLE_ARGS + _ATOM_ARGS + (
        A("e3_table", "int32", ("ntypes*ntypes",)), A("g_desc", "fp", ("nloc", "ldd")),
        A("g_em", "fp", ("nloc", "nnei", 4), output=True),
    ) + _SE_E3_SCALARS,
    grid=_per_atom, block=_ng_threads, shared=_se_e3_shared))

_register(KernelSpec(
    "prod_force_virial", source="prod_force_virial.cu",
    args=(A("nlist", "int32", ("nloc", "nnei")), A("rij", "fp", ("nloc", "nnei", 3)),
          A("g_em", "fp", ("nloc", "nnei", "ncomp")), A("g_r", "fp", ("nloc", "nnei"), optional=True),
          A("nnbr", "int32", ("nloc", "ntypes")), A("atype", "int32", ("nall",)), A("sec", "int32", ("ntypes+1",)),
          A("pair_table", "int32", ("nct", "ntypes")), A("dstd", "fp", ("nct", "ncomp")),
          A("force", "float64", ("nall", 3), output=True), A("virial_rows", "float64", ("nloc", 9), output=True),
          A("atom_virial", "float64", ("nall", 9), optional=True, output=True),
          A("nloc", "int32", symbol="nloc"), A("nnei", "int32", symbol="nnei"), A("ntypes", "int32", symbol="ntypes"),
          A("ncomp", "int32", symbol="ncomp"), A("rcut_smth", "fp"), A("rcut", "fp"), A("protection", "fp")),
    grid=lambda d, th: (_blocks(d["nloc"], th // 32),), block=_linear(128)))

_register(KernelSpec(
    "fitting_activation", source="fitting.cu",
    args=(A("y", "fp", ("n", "m"), output=True), A("dact", "fp", ("n", "m"), output=True),
          A("bias", "fp", ("m",)), A("idt", "fp", ("m",), optional=True), A("x_in", "fp", ("n", "m_in")),
          A("n", "int32", symbol="n"), A("m", "int32", symbol="m"), A("m_in", "int32", symbol="m_in"),
          A("act", "int32"), A("shortcut", "int32")),
    grid=lambda d, th: (_blocks(d["n"] * d["m"], th),), block=_linear(LINEAR_THREADS)))

_register(KernelSpec(
    "fitting_grad_pre", source="fitting.cu",
    args=(A("g_pre", "fp", ("n", "m"), output=True), A("grad", "fp", ("n", "m"), optional=True),
          A("dact", "fp", ("n", "m")), A("n", "int32", symbol="n"), A("m", "int32", symbol="m")),
    grid=lambda d, th: (_blocks(d["n"] * d["m"], th),), block=_linear(LINEAR_THREADS)))

_register(KernelSpec(
    "fitting_grad_shortcut", source="fitting.cu",
    args=(A("g_in", "fp", ("n", "m_in"), output=True), A("grad", "fp", ("n", "m")),
          A("n", "int32", symbol="n"), A("m_in", "int32", symbol="m_in"), A("m", "int32", symbol="m"),
          A("shortcut", "int32")),
    grid=lambda d, th: (_blocks(d["n"] * d["m_in"], th),), block=_linear(LINEAR_THREADS)))

_register(KernelSpec(
    "atom_energy", source="fitting.cu",
    args=(A("out_rows", "fp", ("nloc", 1)), A("row_of_atom", "int32", ("nloc",)), A("atype", "int32", ("nall",)),
          A("type_info", "float64", ("ntypes", 4)), A("atom_energy", "float64", ("nloc",), output=True),
          A("nloc", "int32", symbol="nloc")),
    grid=lambda d, th: (_blocks(d["nloc"], th),), block=_linear(LINEAR_THREADS)))
