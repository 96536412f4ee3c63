"""Launch limits and the launch cache, on numpy stand-ins (no GPU, no compiler): block sizes from
the compiled kernel's thread limit, the se_a backward tile when shared memory is short, the
capped grid of prod_force_virial, and validation once per signature (issue 25)."""

from __future__ import annotations

import numpy as np
import pytest

from deepcomp_ase.kernels import launch
from deepcomp_ase.kernels.launch import (KERNELS, MAX_DYNAMIC_SHARED, ArgSpec, KernelArgumentError, KernelSpec,
                                         LaunchCache, launch_config, se_a_tile, shared_memory_problem, usable_threads)


def se_a_dims(ng=100, m2=16, maxw=100, nloc=12, tile=None):
    return {"nloc": nloc, "nnei": 136, "ntypes": 2, "ng": ng, "m2": m2, "ldd": ng * m2, "maxw": maxw,
            "tile": ng if tile is None else tile}


class Recorder:
    """Stands in for a compiled kernel: records launches, reports a thread limit."""

    def __init__(self, max_threads_per_block=1024):
        self.max_threads_per_block = max_threads_per_block
        self.calls = []

    def __call__(self, grid, block, args, shared_mem=0):
        self.calls.append((grid, block, args, shared_mem))


def test_usable_threads_whole_warps():
    assert usable_threads(1024) == 1024
    assert usable_threads(672) == 672  # 96 registers per thread on a 64k-register SM
    assert usable_threads(700) == 672
    assert usable_threads(4096) == 1024
    assert usable_threads(20) == 32


@pytest.mark.parametrize("name", ["tabulate_fusion_se_a_fwd", "tabulate_fusion_se_a_bwd", "tabulate_fusion_se_r_fwd",
                                  "tabulate_fusion_se_e3_fwd"])
def test_per_atom_block_follows_the_compiled_limit(name):
    """A 1024-wide net cannot launch 1024 threads at 96 registers per thread: the block takes the
    kernel's limit and the kernel loops over the outputs."""
    dims = se_a_dims(ng=1024, maxw=1024, tile=224)
    grid, block, _ = launch_config(KERNELS[name], dims, 4, max_threads=672)
    assert block == (672,) and grid == (12,)
    _, block, _ = launch_config(KERNELS[name], se_a_dims(ng=100), 8, max_threads=1024)
    assert block == (128,)  # whole warps over the outputs when they fit
    _, block, _ = launch_config(KERNELS[name], se_a_dims(ng=100), 8, max_threads=64)
    assert block == (64,)


@pytest.mark.parametrize("name, per_block", [("cell_bin", 256), ("env_mat_se_a", 256), ("prod_force_virial", 128),
                                             ("fitting_activation", 256)])
def test_linear_kernels_shrink_to_the_limit(name, per_block):
    dims = {"n": 10_000, "nloc": 10_000, "nnei": 1, "m": 1, "m_in": 1}
    grid, block, _ = launch_config(KERNELS[name], dims, 8, max_threads=1024)
    assert block == (per_block,)
    grid2, block2, _ = launch_config(KERNELS[name], dims, 8, max_threads=64)
    assert block2 == (64,) and grid2[0] > grid[0]


def test_se_a_backward_tile_falls_back_instead_of_raising():
    # float64, 1024 outputs: the full gT (32 KiB) plus the exact-net scratch (32 KiB) do not fit in 48 KiB
    tile = se_a_tile(1024, 16, 1024, 8)
    assert 32 <= tile < 1024 and tile % 32 == 0
    _, _, shared = launch_config(KERNELS["tabulate_fusion_se_a_bwd"], se_a_dims(1024, maxw=1024, tile=tile), 8)
    assert shared <= MAX_DYNAMIC_SHARED
    assert shared_memory_problem(1024, 16, 1024, 8) == ""
    assert se_a_tile(100, 16, 100, 8) == 100  # the usual nets: one pass
    assert se_a_tile(512, 16, 512, 8) == 512
    assert se_a_tile(16, 16, 16, 8) == 16 and shared_memory_problem(16, 16, 16, 8) == ""  # narrow nets: one pass
    # beyond any tile: said once, before a launch (the backend then hands the model to the reference)
    problem = shared_memory_problem(2048, 16, 2048, 8)
    assert "2048" in problem and "shared memory" in problem
    with pytest.raises(KernelArgumentError, match="shared memory"):
        launch_config(KERNELS["tabulate_fusion_se_a_bwd"], se_a_dims(1024, maxw=1024, tile=1024), 8)


def test_prod_force_virial_grid_is_capped():
    """Beyond GRID_CAP blocks the kernel's grid-stride loop covers the centres (tested emulated
    in test_device_step_emulated.py); the grid itself never exceeds the cap."""
    spec = KERNELS["prod_force_virial"]
    cap = launch.GRID_CAP
    grid, block, _ = launch_config(spec, {"nloc": cap * 4}, 8)
    assert block == (128,) and grid == (cap,)
    grid, _, _ = launch_config(spec, {"nloc": cap * 4 + 1}, 8)
    assert grid == (cap,)  # 16.8M + 1 centres: one block short of covering them without the loop
    grid, _, _ = launch_config(spec, {"nloc": 1000}, 8)
    assert grid == (250,)


# ---------------------------------------------------------------------------- launch cache
SPEC = KernelSpec(
    "k", args=(ArgSpec("x", "fp", ("n", 3)), ArgSpec("y", "int32", ("n",), optional=True),
               ArgSpec("n", "int32", symbol="n"), ArgSpec("s", "fp")),
    grid=lambda d, th: (-(-d["n"] // th),), block=lambda d, limit: min(64, limit))


def test_cache_validates_each_signature_once():
    cache, f = LaunchCache(), Recorder()
    x, y = np.zeros((100, 3)), np.zeros(100, np.int32)
    for _ in range(5):
        cache.launch(f, SPEC, (x, y, 100, 0.5), np.float64)
    assert (cache.misses, cache.hits) == (1, 4)
    grid, block, args, _ = f.calls[-1]
    assert grid == (2,) and block == (64,)
    assert args[0] is x and args[1] is y and type(args[2]) is np.int32 and type(args[3]) is np.float64
    # another array of the same signature reuses the entry and is passed through
    x2 = np.ones((100, 3))
    cache.launch(f, SPEC, (x2, None, 100, 0.5), np.float64)
    cache.launch(f, SPEC, (x2, None, 100, 0.5), np.float64)
    assert f.calls[-1][2][0] is x2 and f.calls[-1][2][1] is None
    assert (cache.misses, cache.hits) == (2, 5)


def test_cache_never_hides_an_error():
    cache, f = LaunchCache(), Recorder()
    x = np.zeros((100, 3))
    cache.launch(f, SPEC, (x, None, 100, 0.5), np.float64)
    with pytest.raises(KernelArgumentError, match="'n' is 99 but n=100"):
        cache.launch(f, SPEC, (x, None, 99, 0.5), np.float64)  # a scalar value is part of the key
    with pytest.raises(KernelArgumentError, match="expects float64 C-contiguous"):
        cache.launch(f, SPEC, (np.zeros((3, 100)).T, None, 100, 0.5), np.float64)  # same shape, other layout
    with pytest.raises(KernelArgumentError, match="expects float32"):
        cache.launch(f, SPEC, (x, None, 100, 0.5), np.float32)  # the precision is part of the key
    with pytest.raises(KernelArgumentError, match="must be finite"):
        cache.launch(f, SPEC, (x, None, 100, float("nan")), np.float64)
    assert len(f.calls) == 1


def test_cache_key_includes_the_thread_limit_and_is_bounded():
    cache = LaunchCache(max_entries=3)
    x = np.zeros((100, 3))
    a, b = Recorder(1024), Recorder(32)
    cache.launch(a, SPEC, (x, None, 100, 0.5), np.float64)
    cache.launch(b, SPEC, (x, None, 100, 0.5), np.float64)
    assert a.calls[-1][1] == (64,) and b.calls[-1][1] == (32,)
    for n in range(1, 6):
        cache.launch(a, SPEC, (np.zeros((n, 3)), None, n, 0.5), np.float64)
    assert len(cache.entries) <= 3


def test_cache_no_launch_on_an_empty_grid():
    cache, f = LaunchCache(), Recorder()
    cache.launch(f, SPEC, (np.zeros((0, 3)), None, 0, 0.5), np.float64)
    cache.launch(f, SPEC, (np.zeros((0, 3)), None, 0, 0.5), np.float64)
    assert f.calls == []
