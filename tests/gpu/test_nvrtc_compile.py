"""The exact source the loader hands to cupy.RawModule compiles under NVRTC (no GPU needed).

Uses libnvrtc through ctypes: from the ``nvidia-cuda-nvrtc-cu12`` wheel or a CUDA toolkit.
Skipped with a reason when no NVRTC library is found.
"""

from __future__ import annotations

import ctypes
import glob
import os

import pytest

from deepcomp_ase.kernels import loader
from deepcomp_ase.kernels.launch import KERNELS


def _find_nvrtc():
    candidates = []
    try:
        import nvidia.cuda_nvrtc as pkg  # pip install nvidia-cuda-nvrtc-cu12

        for root in pkg.__path__:
            candidates += sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    for root in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda", "/usr/lib/x86_64-linux-gnu"):
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
            candidates += sorted(glob.glob(os.path.join(root, "libnvrtc.so*")))
    for path in candidates:
        if "builtins" in path or "alt" in os.path.basename(path):
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError:
            continue
    return None, None


NVRTC, NVRTC_PATH = _find_nvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason="no libnvrtc found (pip install nvidia-cuda-nvrtc-cu12)")


def _compile(source: str, names, options) -> dict:
    lib = NVRTC
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"deepcomp_kernels.cu", 0, None, None)
    assert rc == 0, f"nvrtcCreateProgram: {rc}"
    for name in names:
        assert lib.nvrtcAddNameExpression(prog, name.encode()) == 0
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace")
    assert rc == 0, f"NVRTC failed ({rc}):\n{text}"
    lowered = {}
    for name in names:
        out = ctypes.c_char_p()
        assert lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)) == 0, name
        lowered[name] = out.value.decode()
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return {"lowered": lowered, "log": text}


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_module_compiles_under_nvrtc(precision):
    names = loader.name_expressions(precision)
    # the options cupy adds itself: -arch and -ftz=true
    res = _compile(loader.module_source(), names, loader.NVRTC_OPTIONS + ("-arch=compute_80", "-ftz=true"))
    assert set(res["lowered"]) == set(names)
    assert len(names) == len(KERNELS)
    assert "warning" not in res["log"].lower(), res["log"]
