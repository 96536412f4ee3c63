"""The fitting net's matrix products, compiled by numba for this machine's CPU.

Why not numpy's ``@`` (BLAS): the two largest products of an MD step are the fitting net's first
layer, descriptor (n x M1*M2) times weights (M1*M2 x width), and its transpose in the backward
pass; together they are about 40% of a compressed se_e2_a step. How fast BLAS runs them depends
on the kernels it picked at load time, which the environment can pin below what the CPU does:
with ``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine (AMD Zen 5) OpenBLAS runs these shapes
at 52-58 GFLOPS, its own choice at 70-94, and this module at 89-103 (benchmarks/fitting_gemm.py,
docs/benchmarks.md). numba (LLVM) compiles for the host CPU whatever BLAS does.

The kernel is the classic register tile: ``MR`` rows of C by one 64-byte vector of columns (8
float64 or 16 float32), each row's columns held in one vector register (two on AVX2) through a
loop over K that loads one vector of weights, broadcasts one element of each of the MR rows of A
and issues MR fused multiply-adds. The weights are packed once per layer into panels of one
vector's width (zero-padded at the right edge) and prefetched ahead; A and C are read and written
in place (unit column stride, any row stride). Loop nest: threads over blocks of at most ``MC``
rows, then blocks of ``KC`` of K (A's block stays in L2), then panels.

Each element of C is the sum over K in order, block by block, whatever the thread count: the
result does not depend on threads (it differs from BLAS's in the last bits, ~1e-16 relative).
:func:`use_for_fitting` says when the fitting net uses it (DEEPCOMP_FITTING_GEMM).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import config, numba_cache

numba_cache.configure()  # NUMBA_CACHE_DIR must be known before the kernels below are defined

VECTOR_BYTES = 64  # one vector of the tile: 8 float64 or 16 float32 (one zmm, two ymm)
#: products with fewer rows of weights or columns (the 1-wide output layer) are left to BLAS
MIN_WIDTH = 8
KC = 384  # K per block: MR rows of A (12 x 384 x 8 B = 36 kB) stay in L1/L2 across the panels
#: weight rows (64 B each) prefetched ahead of the tile loop: with few rows of A the weights stream from
#: memory and the hardware prefetcher alone leaves the loop waiting (54 rows, cold cache: 1.9 -> 1.4-1.6 ms
#: for two nets; 256 and more evict what is still needed)
PREFETCH = 128
# the intrinsic's name carries the pointer type until LLVM 15 (opaque pointers)
_PREFETCH_INTRINSIC = "llvm.prefetch.p0" if llvm.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"
MC = 240  # rows per block at most: 240 x 384 x 8 B = 720 kB of A in L2; the weights are read once per block


def _numba_target_has_avx512() -> bool:
    """True when numba compiles for a CPU with AVX-512F (32 vector registers of 8 doubles): this machine's,
    or the target NUMBA_CPU_FEATURES names; a named NUMBA_CPU_NAME target without features counts as not."""
    from numba.core import config as numba_config

    if numba_config.CPU_FEATURES:
        return "+avx512f" in numba_config.CPU_FEATURES.replace(" ", "").split(",")
    if numba_config.CPU_NAME and numba_config.CPU_NAME != "host":
        return False  # e.g. 'generic' for portable caches: assume nothing
    try:
        return bool(llvm.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:  # features unknown (exotic platform): assume the smaller register file
        return False


#: numba's target CPU has AVX-512 (read once: it decides the tile and the 'auto' choice)
TARGET_AVX512 = _numba_target_has_avx512()
#: rows per register tile: 12 accumulators of 8 doubles fit AVX-512's 32 registers with room for
#: the weights and a broadcast; AVX2 (16 registers of 4) holds 6 rows x 2 registers
MR = 12 if TARGET_AVX512 else 6


def use_for_fitting() -> bool:
    """Whether the fitting net's products run here rather than in BLAS (DEEPCOMP_FITTING_GEMM).

    'auto' (default): here when the CPU has AVX-512 -- measured faster than OpenBLAS whichever kernels it
    loaded (docs/benchmarks.md); on other CPUs BLAS, where no measurement says otherwise. 'numba': here;
    'blas': numpy's BLAS.
    """
    choice = config.get("DEEPCOMP_FITTING_GEMM").strip().lower()
    if choice not in ("auto", "numba", "blas"):
        from ..errors import InputError

        raise InputError(f"DEEPCOMP_FITTING_GEMM={choice!r}: use 'auto', 'numba' or 'blas'")
    if choice == "auto":
        return TARGET_AVX512
    return choice == "numba"


def _lanes(dtype) -> int:
    """Columns per vector (and per packed panel): 8 float64 or 16 float32."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


def _tile_intrinsic(accumulate: bool):
    """C[crow:crow+MR, ccol:ccol+L] (+)= A[arow:arow+MR, acol:acol+kc] @ B[0:kc, 0:L], as LLVM vector code
    (L = 8 float64 or 16 float32 lanes, one 64-byte vector).

    A and C: 2-D arrays with unit column stride; B: a packed panel (kc, L), contiguous; all of one
    dtype. ``accumulate`` False stores the tile plus ``bias[ccol:ccol+L]`` (the layer's bias, padded
    like the panels), True adds the tile to C (bias unused).
    """

    @intrinsic
    def tile(typingctx, a, arow, acol, b, kc, c, crow, ccol, bias):
        if not (isinstance(a, types.Array) and a.dtype in (types.float32, types.float64)):
            return None
        if not all(isinstance(x, types.Array) and x.dtype == a.dtype and x.ndim == 2 for x in (a, b, c)):
            return None
        if not (isinstance(bias, types.Array) and bias.dtype == a.dtype and bias.ndim == 1):
            return None
        single = a.dtype == types.float32
        sig = types.void(a, arow, acol, b, kc, c, crow, ccol, bias)

        def codegen(context, builder, signature, args):
            a_arr = context.make_array(signature.args[0])(context, builder, args[0])
            b_arr = context.make_array(signature.args[3])(context, builder, args[3])
            c_arr = context.make_array(signature.args[5])(context, builder, args[5])
            arow_v, acol_v, kc_v, crow_v, ccol_v = (context.cast(builder, args[k], signature.args[k], types.int64)
                                                    for k in (1, 2, 4, 6, 7))
            i64 = ir.IntType(64)
            elem = ir.FloatType() if single else ir.DoubleType()
            lanes = _lanes(np.float32 if single else np.float64)
            vec = ir.VectorType(elem, lanes)
            byte_ptr = ir.IntType(8).as_pointer()
            itemsize = ir.Constant(i64, VECTOR_BYTES // lanes)

            def row_ptr(arr, row, col):  # address of arr[row, col] (strides are in bytes)
                offset = builder.add(builder.mul(row, builder.extract_value(arr.strides, 0)),
                                     builder.mul(col, itemsize))
                return builder.gep(builder.bitcast(arr.data, byte_ptr), [offset])

            a_rows = [builder.bitcast(row_ptr(a_arr, builder.add(arow_v, ir.Constant(i64, r)), acol_v),
                                      elem.as_pointer()) for r in range(MR)]
            b_base = builder.bitcast(b_arr.data, byte_ptr)
            b_stride = builder.extract_value(b_arr.strides, 0)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                                 f"llvm.fma.v{lanes}f{32 if single else 64}")
            zero = ir.Constant(vec, [0.0] * lanes)
            undef = ir.Constant(vec, None)
            splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

            entry = builder.block
            loop = builder.append_basic_block("tile_k")
            done = builder.append_basic_block("tile_done")
            builder.cbranch(builder.icmp_signed(">", kc_v, ir.Constant(i64, 0)), loop, done)

            builder.position_at_end(loop)
            k = builder.phi(i64)
            acc = [builder.phi(vec) for _ in range(MR)]
            bv = builder.load(builder.bitcast(builder.gep(b_base, [builder.mul(k, b_stride)]), vec.as_pointer()),
                              align=4)
            if PREFETCH:  # a hint: never faults, also past the end of the panels
                ahead = builder.gep(b_base, [builder.mul(builder.add(k, ir.Constant(i64, PREFETCH)), b_stride)])
                prefetch = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, ir.IntType(32), ir.IntType(32),
                                                                    ir.IntType(32)]), _PREFETCH_INTRINSIC)
                builder.call(prefetch, [ahead, ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 3),
                                        ir.Constant(ir.IntType(32), 1)])
            new = []
            for r in range(MR):
                ar = builder.load(builder.gep(a_rows[r], [k]), align=4)
                splat = builder.shuffle_vector(builder.insert_element(undef, ar, ir.Constant(ir.IntType(32), 0)),
                                               undef, splat_mask)
                new.append(builder.call(fma, [splat, bv, acc[r]]))
            k_next = builder.add(k, ir.Constant(i64, 1))
            tail = builder.block
            k.add_incoming(ir.Constant(i64, 0), entry)
            k.add_incoming(k_next, tail)
            for r in range(MR):
                acc[r].add_incoming(zero, entry)
                acc[r].add_incoming(new[r], tail)
            builder.cbranch(builder.icmp_signed("<", k_next, kc_v), loop, done)

            builder.position_at_end(done)
            sums = []
            for r in range(MR):  # phi nodes first: LLVM requires them at the top of the block
                s = builder.phi(vec)
                s.add_incoming(zero, entry)
                s.add_incoming(new[r], tail)
                sums.append(s)
            if not accumulate:
                bias_arr = context.make_array(signature.args[8])(context, builder, args[8])
                bias_ptr = builder.gep(builder.bitcast(bias_arr.data, byte_ptr), [builder.mul(ccol_v, itemsize)])
                bias_v = builder.load(builder.bitcast(bias_ptr, vec.as_pointer()), align=4)
            for r in range(MR):
                cp = builder.bitcast(row_ptr(c_arr, builder.add(crow_v, ir.Constant(i64, r)), ccol_v), vec.as_pointer())
                out = builder.fadd(builder.load(cp, align=4), sums[r]) if accumulate else builder.fadd(sums[r], bias_v)
                builder.store(out, cp, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile_store = _tile_intrinsic(accumulate=False)
_tile_add = _tile_intrinsic(accumulate=True)


def pack_panels(w: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Weights (K, N) as panels (ceil(N/L), K, L) of L = 8 (float64) or 16 (float32) columns, zero-padded at
    the right edge."""
    lanes = _lanes(dtype)
    k, n = w.shape
    npan = -(-n // lanes)
    padded = np.zeros((k, npan * lanes), dtype=dtype)
    padded[:, :n] = w
    return np.ascontiguousarray(padded.reshape(k, npan, lanes).transpose(1, 0, 2))


@njit(inline="always")
def _rows_times_panels(a, r0, r1, a_tail, c_tail, with_tail, panels, bias, c):
    """C[r] = A[r] @ W + bias for rows r0..r1 of A (r1 - r0 a multiple of MR), and the same for the MR
    rows of ``a_tail`` into ``c_tail`` when ``with_tail``: in the same pass over the weights, which for
    a few rows are read from memory and dominate the time."""
    k_total = a.shape[1]
    lanes = panels.shape[2]
    for k0 in range(0, k_total, KC):
        kc = min(k_total - k0, KC)
        for p in range(panels.shape[0]):
            panel = panels[p, k0:k0 + kc]
            for i0 in range(r0, r1, MR):
                if k0 == 0:
                    _tile_store(a, i0, k0, panel, kc, c, i0, p * lanes, bias)
                else:
                    _tile_add(a, i0, k0, panel, kc, c, i0, p * lanes, bias)
            if with_tail:
                if k0 == 0:
                    _tile_store(a_tail, 0, k0, panel, kc, c_tail, 0, p * lanes, bias)
                else:
                    _tile_add(a_tail, 0, k0, panel, kc, c_tail, 0, p * lanes, bias)


@njit(parallel=True, cache=True)
def matmul_packed(a, panels, bias, c, threads):
    """c[:, :L*npan] = a @ W + bias for W packed by :func:`pack_panels` (bias: L*npan values; all of one
    dtype, float64 or float32); ``threads``: numba's current thread count (an argument: reading it here
    would stop the caching).

    ``a`` (n, K) and ``c`` (n, >= L * npan) with unit column stride (row strides free); the padded
    columns of c receive zeros. Rows past the last whole tile go through a zero-padded copy (in the
    last block's pass), so every row of c is computed in the same order.
    """
    n, k_total = a.shape
    width = panels.shape[0] * panels.shape[2]
    tiles = n // MR
    full = tiles * MR
    rest = n - full
    a_tail = np.zeros((MR if rest else 0, k_total), a.dtype)
    c_tail = np.empty((MR if rest else 0, width), a.dtype)
    if rest:
        a_tail[:rest] = a[full:]
    # blocks of at most MC rows (one block's A stays in L2 while the weights stream past it once), as many
    # as a multiple of the threads so that each thread gets the same work
    nblocks = max(1, -(-(-(-full // MC)) // threads) * threads)
    per_block = -(-tiles // nblocks)  # tiles
    for ib in prange(nblocks):
        r0 = min(full, ib * per_block * MR)
        r1 = min(full, r0 + per_block * MR)
        _rows_times_panels(a, r0, r1, a_tail, c_tail, rest > 0 and ib == nblocks - 1, panels, bias, c)
    if rest:
        c[full:, :width] = c_tail[:rest]


class PackedWeights:
    """One layer's weights (K, N), and optionally its bias (N,), packed for :func:`matmul_packed` in
    ``dtype`` (float64 or float32); :meth:`matmul` returns ``a @ w (+ bias)``."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None = None, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        self.k, self.n = w.shape
        self.panels = pack_panels(w, self.dtype)
        self.width = self.panels.shape[0] * self.panels.shape[2]  # padded width of the output rows
        self.bias = np.zeros(self.width, dtype=self.dtype)
        if bias is not None:
            self.bias[:self.n] = bias

    def matmul(self, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``a @ w + bias``; into ``out`` (n, N) when given (written in place when its rows hold the padded
        width, else through a scratch buffer)."""
        if a.dtype != self.dtype or a.ndim != 2 or a.shape[1] != self.k:
            raise ValueError(f"expected {self.dtype} rows of {self.k} values, got {a.dtype} {a.shape}")
        if a.strides[1] != a.itemsize:
            a = np.ascontiguousarray(a)
        n = a.shape[0]
        if (out is not None and self.width == self.n and out.dtype == self.dtype and out.strides[1] == a.itemsize
                and out.shape == (n, self.n)):
            matmul_packed(a, self.panels, self.bias, out, get_num_threads())
            return out
        c = np.empty((n, self.width), dtype=self.dtype)
        matmul_packed(a, self.panels, self.bias, c, get_num_threads())
        if out is None:
            return c[:, :self.n]
        out[...] = c[:, :self.n]
        return out
