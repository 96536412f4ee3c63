"""Load the CUDA kernels: cupy.RawModule on a GPU, or the same sources compiled for the host.

The ``.cu``/``.cuh`` files ship inside the package and are read with :mod:`importlib.resources`.
Local ``#include "x.cuh"`` lines are inlined (NVRTC then needs no include path), and all sources
form one module per precision, compiled once (``functools.cache``; CuPy also caches the binary on
disk). Kernels are ``template <typename FPTYPE>`` functions instantiated through
``name_expressions`` (``"tabulate_fusion_se_a_fwd<double>"``).

:func:`emulated_context` compiles the very same sources with g++ and ``host_emulation.cuh`` and
runs them on the CPU with numpy arrays: the CPU tests of the kernels and of the whole GPU
backend use it. :class:`KernelContext` is what the backend talks to in both cases.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np

from .. import config
from ..errors import BuildError, InputError
from .launch import KERNELS, LaunchCache, kernel_thread_limit, usable_threads

#: source files of the module, in order (common.cuh comes in through the includes)
SOURCES = ("cell_list.cu", "env_mat.cu", "tabulate_fusion_se_a.cu", "tabulate_fusion_se_r.cu",
           "tabulate_fusion_se_e3.cu", "prod_force_virial.cu", "fitting.cu", "dpa1.cu")
CTYPE = {"float32": "float", "float64": "double"}
#: NVRTC options: IEEE division and square root (no fast math), so float64 matches numpy
NVRTC_OPTIONS = ("--std=c++14",)
#: activation codes of common.cuh (DC_ACT_*)
ACTIVATION_CODES = {"none": 0, "linear": 0, "tanh": 1, "gelu": 2, "gelu_tf": 2, "relu": 3, "relu6": 4,
                    "softplus": 5, "sigmoid": 6}
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.M)


def precision_name(precision) -> str:
    """'float32' or 'float64' from a dtype, a numpy type or a name ('double', 'single', ...)."""
    aliases = {"double": "float64", "single": "float32", "float": "float32", "fp64": "float64", "fp32": "float32"}
    if isinstance(precision, str) and precision.lower() in aliases:
        return aliases[precision.lower()]
    name = np.dtype(precision).name
    if name not in CTYPE:
        raise InputError(f"precision must be float32 or float64, got {precision!r}")
    return name


def read_source(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _inline(text: str, seen: set) -> str:
    def repl(match):
        inc = match.group(1)
        if inc in seen:
            return f"// {inc} already included\n"
        seen.add(inc)
        return _inline(read_source(inc), seen)

    return _INCLUDE.sub(repl, text)


def module_source() -> str:
    """All kernel sources with local includes inlined, as one translation unit."""
    seen: set = set()
    return "\n".join(f"// ---- {name}\n" + _inline(read_source(name), seen) for name in SOURCES)


def name_expressions(precision) -> tuple[str, ...]:
    ctype = CTYPE[precision_name(precision)]
    return tuple(f"{name}<{ctype}>" for name in KERNELS)


# --------------------------------------------------------------------------- CuPy
@functools.cache
def get_module(precision):
    """The compiled cupy.RawModule of one precision (compiled at first use, cached)."""
    import cupy

    p = precision_name(precision)
    return cupy.RawModule(code=module_source(), options=NVRTC_OPTIONS, name_expressions=name_expressions(p))


def get_function(name: str, precision):
    return get_module(precision_name(precision)).get_function(f"{name}<{CTYPE[precision_name(precision)]}>")


class KernelContext:
    """Array module + kernel functions + the checked launcher, for one precision on one device."""

    def __init__(self, xp, precision, function, device_check=None, array_type=None, synchronize=None,
                 device_id=None, device_key=None):
        self.xp = xp
        self.precision = precision_name(precision)
        self.fp = np.dtype(self.precision).type
        self._function = function
        self.device_check = device_check
        self.array_type = array_type
        self.synchronize = synchronize or (lambda: None)
        self.device_id = device_id
        self._cache: dict = {}
        self.launches = LaunchCache(device_key)

    @property
    def emulated(self) -> bool:
        return self.xp is np

    def function(self, name: str):
        if name not in self._cache:
            self._cache[name] = self._function(name)
        return self._cache[name]

    def launch(self, name: str, *args):
        """Checked launch of kernel ``name`` (validated once per signature); returns the bound dimensions."""
        return self.launches.launch(self.function(name), KERNELS[name], args, self.fp,
                                    device_check=self.device_check, array_type=self.array_type)

    def thread_limit(self, name: str) -> int:
        """Threads per block kernel ``name`` may use, as compiled (whole warps)."""
        return usable_threads(kernel_thread_limit(self.function(name)))

    def kernel_report(self, name: str) -> dict:
        """Registers, static shared and local memory and the thread limit of the compiled kernel
        (None where the emulation has no such figure)."""
        f = self.function(name)
        row = {"kernel": name, "precision": self.precision}
        for attr in ("num_regs", "shared_size_bytes", "local_size_bytes", "const_size_bytes",
                     "max_threads_per_block", "max_dynamic_shared_size_bytes", "ptx_version", "binary_version"):
            try:
                value = getattr(f, attr)
            except Exception:  # noqa: BLE001 - an attribute this CuPy or driver does not give
                value = None
            row[attr] = None if value is None else int(value)
        return row

    def to_host(self, a):
        return a if self.xp is np else a.get()

    def asarray(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))


def cupy_context(precision, device_id: int | None = None) -> KernelContext:
    import cupy

    p = precision_name(precision)
    dev = cupy.cuda.Device(device_id) if device_id is not None else cupy.cuda.Device()

    def device_check(a):
        if a.device.id != dev.id:
            return f"is on device {a.device.id}, the kernel runs on device {dev.id}"
        return None

    def function(name):
        with dev:
            return get_function(name, p)

    return KernelContext(cupy, p, function, device_check=device_check, array_type=cupy.ndarray,
                         synchronize=lambda: cupy.cuda.Stream.null.synchronize(), device_id=dev.id,
                         device_key=lambda a: a.data.device_id)


# --------------------------------------------------------------------------- host emulation
_SCALAR_CTYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
                  np.dtype(np.uint64): ctypes.c_uint64, np.dtype(np.float32): ctypes.c_float,
                  np.dtype(np.float64): ctypes.c_double}


def host_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")


def emulation_source() -> str:
    wrappers = []
    for name in KERNELS:
        for ctype in ("float", "double"):
            wrappers.append(
                f'extern "C" int dc_launch_{name}_{ctype}(const unsigned* g, const unsigned* b, '
                f"unsigned long long sh, void** a) {{ return dc_emu::launch(&{name}<{ctype}>, g, b, sh, a); }}")
    return read_source("host_emulation.cuh") + "\n" + module_source() + "\n" + "\n".join(wrappers) + "\n"


@functools.cache
def emulation_library() -> ctypes.CDLL:
    """Compile the kernels for the host (g++ -std=c++20), cached by source hash."""
    cxx = host_compiler()
    if cxx is None:
        raise BuildError("no C++ compiler (g++ or clang++) to build the host emulation of the kernels; "
                         "install g++ (or clang++)")
    src = emulation_source()
    digest = hashlib.sha256(src.encode()).hexdigest()[:16]
    cache = Path(config.get("DEEPCOMP_CACHE"))
    cache.mkdir(parents=True, exist_ok=True)
    lib = cache / f"kernels_{digest}.so"
    if not lib.exists():
        cpp = cache / f"kernels_{digest}.cpp"
        cpp.write_text(src)
        tmp = cache / f"kernels_{digest}.{os.getpid()}.so"
        cmd = [cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread", "-x", "c++",
               str(cpp), "-o", str(tmp)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise BuildError(f"host emulation build failed ({' '.join(cmd)}):\n{res.stderr[-4000:]}")
        os.replace(tmp, lib)
    return ctypes.CDLL(str(lib))


class EmulatedFunction:
    """Callable like a cupy RawKernel function: f(grid, block, args, shared_mem=0), numpy arrays.

    ``max_threads_per_block`` stands for the compiled kernel's limit (CUDA's 1024 unless a test
    lowers it to exercise the launch-limit paths); registers and shared sizes have no meaning here.
    """

    def __init__(self, lib, name: str, ctype: str, max_threads_per_block: int = 1024):
        self.name = name
        self.max_threads_per_block = int(max_threads_per_block)
        self._fn = getattr(lib, f"dc_launch_{name}_{ctype}")
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint), ctypes.c_ulonglong,
                             ctypes.POINTER(ctypes.c_void_p)]

    def __call__(self, grid, block, args, shared_mem=0):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        keep = []
        for a in args:
            if a is None:
                keep.append(ctypes.c_void_p(None))
            elif isinstance(a, np.ndarray):
                keep.append(ctypes.c_void_p(a.ctypes.data))
            else:
                keep.append(_SCALAR_CTYPES[np.dtype(type(a))](a))
        params = (ctypes.c_void_p * max(1, len(keep)))(*[ctypes.addressof(k) for k in keep])
        g = (ctypes.c_uint * 3)(*grid)
        b = (ctypes.c_uint * 3)(*block)
        self._fn(g, b, int(shared_mem), params)


def emulated_context(precision, max_threads_per_block: int = 1024) -> KernelContext:
    """Kernels compiled for the CPU, numpy arrays standing in for device arrays.

    ``max_threads_per_block``: the thread limit every emulated kernel reports (tests of the
    launch limits lower it, as a kernel with many registers would on a GPU).
    """
    p = precision_name(precision)
    lib = emulation_library()
    ctype = CTYPE[p]

    def device_check(a):
        return None if isinstance(a, np.ndarray) else f"is a {type(a).__name__}, not a host numpy array"

    return KernelContext(np, p, lambda name: EmulatedFunction(lib, name, ctype, max_threads_per_block),
                         device_check=device_check, array_type=np.ndarray)
