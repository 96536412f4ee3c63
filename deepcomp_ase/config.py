"""Every environment variable deepcomp reads, with its default and meaning (one place).

Python code reads them through :func:`get`; the LAMMPS plugin (C++) reads the ones marked
"plugin" itself. Importing deepcomp changes no environment variable; the few settings that
must be exported for the process (see :func:`apply_omp_wait_policy`) are applied explicitly
when the component that needs them is created, and logged. This module imports nothing heavy:
the LAMMPS entry point uses it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # "" = unset
    meaning: str
    read_by: str


SETTINGS = {s.name: s for s in (
    Setting("DEEPCOMP_GPU_PRECISION", "float64",
            "working precision of the CUDA backend when none is given ('float64' or 'float32')",
            "backends/cupy_gpu.py"),
    Setting("DEEPCOMP_GPU_TABLE_LAYOUT", "output-major",
            "order of the table coefficients on the device: 'output-major' (DeePMD-kit's: the six coefficients of "
            "one output together) or 'coefficient-major' (one coefficient of every output together, so a warp's "
            "loads are contiguous); results are equal bit for bit, only the speed differs",
            "backends/cuda_state.py"),
    Setting("DEEPCOMP_GPU_GRAPH", "0",
            "'1': the CUDA backend captures the part of a step after the neighbour list (descriptor, fitting, "
            "forces) in a CUDA graph once per system size and replays it (one launch instead of ~25); falls back "
            "to plain launches, with a warning, where CuPy cannot capture; '0': plain launches",
            "backends/cupy_gpu.py"),
    Setting("DEEPCOMP_OMP_WAIT_POLICY", "PASSIVE",
            "OMP_WAIT_POLICY the numba backend exports when it is created and OMP_WAIT_POLICY is unset "
            "(idle OpenMP workers otherwise spin and slow down the BLAS calls of the fitting net); "
            "empty: leave OMP_WAIT_POLICY alone", "backends/numba_cpu.py"),
    Setting("DEEPCOMP_ADAPT_THREADS", "1",
            "'1': before a force call (sampled at most every 0.2 s) the numba backend uses only as many of its "
            "threads as the other processes leave cores idle (Linux: /proc/stat and this process's CPU time), "
            "since on a busy machine every parallel kernel waits for its slowest thread; '0': always the whole "
            "pool (NUMBA_NUM_THREADS / OMP_NUM_THREADS)", "backends/numba_cpu.py"),
    Setting("DEEPCOMP_FITTING_GEMM", "auto",
            "who multiplies the fitting net's matrices in the numba backend: 'numba' (kernels compiled for "
            "this CPU, backends/numba_gemm.py), 'blas' (numpy's BLAS) or 'auto' (numba when the CPU has AVX-512, "
            "where it was measured faster than OpenBLAS, else BLAS)", "backends/numba_gemm.py"),
    Setting("DEEPCOMP_LAMMPS_MALLOC", "keep",
            "'keep': the LAMMPS plugin asks glibc's allocator (mallopt) to serve blocks up to 32 MiB from its heap "
            "and to keep up to 1 GiB of freed heap, so the arrays of each step reuse the pages of the last one instead "
            "of faulting in fresh ones (4000-atom deck: 143 -> 128 ms/step, 188k -> 46k page faults; peak memory "
            "unchanged); empty: leave the allocator alone", "lammps/bridge.py"),
    Setting("DEEPCOMP_CACHE", str(Path(tempfile.gettempdir()) / "deepcomp_ase_emulation"),
            "directory of the compiled host emulation of the CUDA kernels (tests without a GPU)",
            "kernels/loader.py"),
    Setting("DEEPCOMP_NUMBA_CACHE", "", "directory of the compiled numba kernels when NUMBA_CACHE_DIR is unset "
            "(exported as NUMBA_CACHE_DIR and logged); unset: numba's default next to the package when writable, "
            "else $XDG_CACHE_HOME/deepcomp/numba (~/.cache/deepcomp/numba)", "numba_cache.py"),
    Setting("DEEPCOMP_PLUGIN_DIR", "", "directory searched first for deepcompplugin.so", "lammps/__init__.py"),
    Setting("DEEPCOMP_NO_MPI_PRELOAD", "", "'1': do not preload the mpich wheel's libmpi.so.12",
            "lammps/__init__.py"),
    Setting("DEEPCOMP_PYTHON", "", "Python interpreter the LAMMPS plugin embeds; the lmp launcher of this "
            "environment exports it when unset", "plugin (bridge_loader.cpp), lammps/__init__.py"),
    Setting("DEEPCOMP_LIBPYTHON", "", "libpython the LAMMPS plugin loads (default: the one recorded at build "
            "time); the lmp launcher exports it when unset", "plugin (bridge_loader.cpp), lammps/__init__.py"),
    Setting("DEEPCOMP_BRIDGE", "", "path of libdeepcomp_bridge.so the plugin loads (default: next to the plugin)",
            "plugin (bridge_loader.cpp)"),
    Setting("DEEPCOMP_IGNORE_LAMMPS_VERSION", "", "'1': load the plugin into a LAMMPS of another version (at "
            "your own risk: C++ class layouts may differ)", "plugin (deepcomp_plugin.cpp)"),
    Setting("DEEPCOMP_BENCH_CACHE", "~/.cache/deepcomp-bench", "cache directory of the benchmark scripts",
            "benchmarks/"),
    Setting("DEEPCOMP_BENCH_TIMING", "", "JSON file the LAMMPS benchmark's timing hook writes", "benchmarks/"),
    Setting("DEEPCOMP_BENCH_DUMP", "", "npz file the LAMMPS benchmark's hook dumps the first inputs to",
            "benchmarks/"),
    Setting("DEEPCOMP_VENV", "", "environment of deepcomp in the LAMMPS benchmark (default: this one)",
            "benchmarks/"),
)}


def get(name: str) -> str:
    """The value of a setting: the environment's, else its default."""
    return os.environ.get(name, SETTINGS[name].default)


def apply_omp_wait_policy() -> None:
    """Export OMP_WAIT_POLICY (DEEPCOMP_OMP_WAIT_POLICY, default PASSIVE) unless it is set already.

    Must run before the OpenMP runtime starts (numba's first parallel kernel); it affects the
    whole process, so it is logged.
    """
    want = get("DEEPCOMP_OMP_WAIT_POLICY").strip()
    if not want or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = want
    log.info("numba backend: set OMP_WAIT_POLICY=%s for this process (idle OpenMP threads sleep instead of "
             "spinning); set OMP_WAIT_POLICY yourself, or DEEPCOMP_OMP_WAIT_POLICY= (empty) to leave it alone", want)


#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest M_MMAP_THRESHOLD glibc accepts on 64-bit systems (4 * 1024 * 1024 * sizeof(long))
_MMAP_THRESHOLD_MAX = 32 << 20


def apply_lammps_malloc_policy() -> bool:
    """In a LAMMPS process: keep freed memory in glibc's heap for the next step (DEEPCOMP_LAMMPS_MALLOC).

    Without it, blocks of 128 kB-32 MB (pair lists, descriptor and force buffers) are mmap'ed and
    unmapped every step there, and each step faults their pages in again (glibc's adaptive threshold
    does not take over in the LAMMPS process). Affects the whole process, so it is logged; returns
    True when applied. Not glibc (musl, macOS): nothing to do.
    """
    if get("DEEPCOMP_LAMMPS_MALLOC").strip().lower() != "keep":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    if ok:
        log.info("LAMMPS: glibc malloc keeps freed memory for the next step (M_MMAP_THRESHOLD 32 MiB, "
                 "M_TRIM_THRESHOLD 1 GiB); DEEPCOMP_LAMMPS_MALLOC= (empty) leaves the allocator alone")
    return ok


def describe() -> str:
    """Markdown table of the settings (docs/configuration.md is generated from it)."""
    rows = ["| variable | default | meaning | read by |", "|---|---|---|---|"]
    for s in SETTINGS.values():
        default = f"`{s.default}`" if s.default else "unset"
        if s.name == "DEEPCOMP_CACHE":
            default = "`<tmp>/deepcomp_ase_emulation`"
        rows.append(f"| `{s.name}` | {default} | {s.meaning} | {s.read_by} |")
    return "\n".join(rows) + "\n"
