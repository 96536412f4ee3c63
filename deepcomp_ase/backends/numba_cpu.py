"""The compiled CPU backend (numba): O(N) cell lists, fused table kernels, compiled fitting-net products.

Physics and conventions are those of the numpy reference (:mod:`deepcomp_ase.evaluate`); the
kernels live in :mod:`.numba_kernels`, each tested against its numpy twin. se_e2_a, se_atten_v2
and se_e2_r models, and hybrids of them, run compiled (se_atten_v2 through the se_e2_a kernels
with its type-pair term; its neighbour selection, "mixed" over types, is the numpy reference's;
a hybrid runs each part's kernels into its columns of the descriptor); compressed se_e3 models
run their own fused kernels (:mod:`.numba_kernels_se_e3`, packing and driver at the end of this
module); uncompressed se_e3 models and hybrids with an se_e3 part are delegated to the numpy
reference backend. DPA-1 models with attention layers run :mod:`.numba_dpa1` (GEMMs over the pairs
of a chunk of atoms and per-centre attention kernels); hybrids with a DPA-1 part are delegated.

Evaluation, per chunk of centre atoms (atoms ordered by type so that each type's fitting-net
rows are contiguous):

1. ``embedding_inputs``: the embedding input of every pair and its table region (one cheap
   pass). Inputs outside [xmin, xmax) are counted into the potential's tally and evaluated with
   the exact embedding net (numpy) -- as are inputs in relu-split intervals; the kernels then
   take G for those few pairs from that side array instead of the table.
2. ``tabulate_forward``: T and D per atom, G evaluated on the fly, padding folded in.
3. fitting net per type, float64 or float32, in blocks of rows: the products in
   :mod:`.numba_gemm` (CPUs with AVX-512; else numpy's BLAS), in float64 one compiled pass
   after each tanh (:mod:`.numba_fitting`).
4. ``tabulate_backward``: dE/dx per pair, G and G' re-evaluated from the table.
5. ``assemble_forces_virial``: forces, virial, per-atom virial.

The uncompressed model evaluates G with the exact nets in numpy (per chunk) and then uses the
same kernels with every pair taken from that side array.

Neighbour lists: ``pairs_from_atoms`` builds a cell list at rcut + skin and reuses it while no
atom moved more than skin/2 and cell, pbc and the atom count are unchanged (vectors are
recomputed from the current positions, then ``select`` cuts at rcut, so results equal a fresh
build). ``skin=0`` disables the reuse.

Threads: numba's pool follows NUMBA_NUM_THREADS, or OMP_NUM_THREADS when only that is set; each
call uses fewer while other processes keep cores busy (:class:`_ThreadGovernor`,
DEEPCOMP_ADAPT_THREADS). BLAS (fitting net where it is used) follows OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS. See
docs/performance.md.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from .. import config, numba_cache
from ..errors import BackendUnavailableError, InputError
from ..fitting_inputs import dedfparam
from ..neighbors import PairList

try:  # numba is optional (the "fast" extra)
    import numba

    _IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without numba
    numba = None
    _IMPORT_ERROR = exc

log = logging.getLogger(__name__)

DEFAULT_SKIN = 1.0  # Angstrom
#: kernel families (plan.PartPlan.kernel) the compiled kernels evaluate (alone or as parts of a hybrid)
COMPILED_KERNELS = ("se_a", "se_atten", "se_r")
CHUNK_ATOMS = 1024  # compressed: centre atoms per chunk (bounds the descriptor buffers)
CHUNK_ATOMS_EXACT = 256  # uncompressed: G and G' of every pair of a chunk are held in memory
#: fitting-net rows evaluated together: 240 x 120 doubles per activation stay in L2 (2000 rows at
#: once: ~8% slower at 4000 atoms, 1 thread)
ROWS_PER_FIT_BLOCK = 240  # a multiple of numba_gemm.MR (12 or 6): no padded tail rows


def is_available() -> bool:
    return numba is not None


def why_unavailable() -> str:
    return "" if numba is not None else f"numba cannot be imported ({_IMPORT_ERROR}); pip install numba"


def _apply_thread_env() -> None:
    """Let OMP_NUM_THREADS size numba's pool when NUMBA_NUM_THREADS is not set."""
    if numba is None or "NUMBA_NUM_THREADS" in os.environ:
        return
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        numba.set_num_threads(min(int(omp), numba.config.NUMBA_NUM_THREADS))


def _openblas_threads():
    """(get, set) of the thread count of the OpenBLAS numpy uses (Linux, found among the loaded
    libraries), or None: the fitting net's BLAS threads are then left alone."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split(None, 5)[5].strip() for line in fh if "openblas" in line.lower() and ".so" in line
                     and len(line.split(None, 5)) == 6}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"),
                               ("openblas_", "")):
            get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


class _ThreadGovernor:
    """Threads per force call from the load of the other processes (DEEPCOMP_ADAPT_THREADS).

    Every parallel kernel ends at a barrier: on a core shared with a busy process a thread is
    descheduled for whole time slices and the others wait for it, so two threads on a busy
    2-core machine were 4-6x slower than one (benchmarks/threads_contention.py). Before a call
    (re-sampled at most every ``INTERVAL`` s) the cores the other processes keep busy are
    estimated as the busy time of this process's CPUs (/proc/stat) minus this process's own CPU
    time, over the time since the last sample, and the call runs with
    ``min(pool, round(cores - others))`` threads (at least one). The same cap applies to numpy's
    OpenBLAS during the fitting net (:meth:`blas`; its count is restored afterwards, so the
    host's own BLAS calls keep theirs): its threads spin while they wait and took 4x the CPU
    time of one thread on the busy machine. Only thread counts change: results do not depend
    on them.
    """

    INTERVAL = 0.2  # s between samples

    def __init__(self, pool: int):
        self.pool = pool
        self.threads = pool
        self.enabled = pool > 1 and config.get("DEEPCOMP_ADAPT_THREADS").strip() not in ("0", "")
        self.cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._sample() if self.enabled else None
        if self.last is None:
            self.enabled = False
        else:
            log.info("numba backend: up to %d threads, fewer while other processes keep cores busy "
                     "(DEEPCOMP_ADAPT_THREADS=0: always %d)", pool, pool)
        self._blas = _openblas_threads() if self.enabled else None

    def _sample(self):
        """(monotonic time, busy seconds of our CPUs, this process's CPU seconds), None if unreadable."""
        try:
            with open("/proc/stat", "rb") as fh:
                text = fh.read()
        except OSError:
            return None
        want = {f"cpu{c}".encode() for c in self.cpus}
        busy = 0
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] in want:
                ticks = [int(v) for v in fields[1:8]]  # user nice system idle iowait irq softirq
                busy += sum(ticks) - ticks[3] - ticks[4]
        return time.monotonic(), busy / self.hz, time.process_time()

    def apply(self) -> int:
        """Set numba's thread count for this call; returns it."""
        if not self.enabled:
            return self.pool
        now = time.monotonic()
        if now - self.last[0] >= self.INTERVAL:
            sample = self._sample()
            if sample is not None:
                dt = sample[0] - self.last[0]
                others = max(0.0, (sample[1] - self.last[1]) - (sample[2] - self.last[2])) / dt
                threads = max(1, min(self.pool, int(len(self.cpus) - others + 0.5)))
                if threads != self.threads:
                    log.debug("numba backend: %d threads (other processes busy on %.1f cores)", threads, others)
                self.threads = threads
                self.last = sample
        numba.set_num_threads(self.threads)
        return self.threads

    def blas(self):
        """Context of the fitting net: OpenBLAS capped at this call's thread count, then restored."""
        return _BlasCap(self._blas, self.threads if self.enabled else 0)


class _BlasCap:
    def __init__(self, blas, cap: int):
        self.blas, self.cap, self.before = blas, cap, 0

    def __enter__(self):
        if self.blas is not None and self.cap > 0:
            self.before = self.blas[0]()
            if self.before > self.cap:
                self.blas[1](self.cap)
            else:
                self.before = 0
        return self

    def __exit__(self, *exc):
        if self.before:
            self.blas[1](self.before)
        return False


def _kernels():
    numba_cache.configure()  # NUMBA_CACHE_DIR must be set before the kernels are defined
    from . import numba_kernels

    return numba_kernels


def _gemm():
    from . import numba_gemm  # compiled on first use, like the kernels

    return numba_gemm


def _fitting_kernels():
    from . import numba_fitting

    return numba_fitting


def _numpy_backend():
    from .numpy_ref import Backend

    return Backend()


# ------------------------------------------------------------------------------ cell lists
def cell_list_setup(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, rcut: float):
    """Binning parameters of :func:`numba_kernels.neighbor_pairs` (an invertible cell, bins, search)."""
    n = len(positions)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not pbc.any():
        used = np.eye(3)
    else:
        from ase.geometry import complete_cell

        for k in np.nonzero(pbc)[0]:
            if not np.any(cell[k]):
                raise InputError(f"periodic along axis {k} but cell vector {k} is zero; give a cell vector or "
                                 "switch periodicity off along that axis")
        used = complete_cell(cell)
        if abs(np.linalg.det(used)) < 1e-12:
            raise InputError(f"cell {cell.tolist()} is singular; give three independent cell vectors")
    inv = np.linalg.inv(used)
    height = 1.0 / np.linalg.norm(inv, axis=0)  # distance between lattice planes per axis
    frac = positions @ inv if n else np.zeros((0, 3))
    fmin = np.zeros(3)
    fspan = np.ones(3)
    width = height.copy()
    for k in range(3):
        if not pbc[k] and n:
            lo, hi = float(frac[:, k].min()), float(frac[:, k].max())
            fmin[k] = lo
            fspan[k] = max(hi - lo, 1e-12) * (1.0 + 1e-9)
            width[k] = height[k] * fspan[k]
    nbins = np.maximum(np.floor(width / rcut).astype(np.int64), 1)
    while nbins.prod() > 4 * n + 64:
        k = int(np.argmax(nbins))
        nbins[k] = max(1, nbins[k] // 2)
    nsearch = np.ceil(rcut * nbins / width).astype(np.int64)
    for k in range(3):
        if not pbc[k]:
            nsearch[k] = min(nsearch[k], nbins[k] - 1)
    return used, inv, pbc.astype(np.bool_), nbins, nsearch, fmin, fspan


def neighbor_pairs(positions, cell, pbc, rcut):
    """(i, j, shifts, vectors) of all pairs within rcut (twin: neighbors.neighbor_pairs_ase)."""
    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    used, inv, pbc_b, nbins, nsearch, fmin, fspan = cell_list_setup(positions, cell, pbc, rcut)
    K = _kernels()
    return K.neighbor_pairs(positions, np.ascontiguousarray(used), np.ascontiguousarray(inv), pbc_b, float(rcut),
                            nbins, nsearch, fmin, fspan)


def pair_vectors(positions, centers, neighbors) -> np.ndarray:
    """``positions[neighbors] - positions[centers]`` (any integer index arrays); compiled when numba is
    installed (the LAMMPS bridge: one pass instead of numpy's three temporaries: 0.4 instead of 5.2 ms CPU for
    the 4000-atom deck's full list), numpy otherwise. Equal results either way."""
    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    if numba is None:
        return positions[neighbors] - positions[centers]
    kernels = _kernels()
    with numba_cache.first_use("pair_vectors"):  # N LAMMPS ranks on a cold cache: one compiles
        return kernels.pair_vectors(positions, centers, neighbors)


class _PairCache:
    """A pair list built at rcut + skin, with what decides whether it can be reused."""

    def __init__(self, positions, cell, pbc, rcut, skin, pi, pj, shifts, used_cell):
        self.positions = positions.copy()
        self.cell = cell.copy()
        self.pbc = pbc.copy()
        self.rcut = rcut
        self.skin = skin
        self.pi, self.pj, self.shifts = pi, pj, shifts
        self.used_cell = used_cell

    def valid_for(self, positions, cell, pbc, rcut) -> bool:
        if (positions.shape != self.positions.shape or rcut != self.rcut or not np.array_equal(pbc, self.pbc)
                or not np.array_equal(cell, self.cell)):
            return False
        if not len(positions):
            return True
        d2 = _kernels().max_displacement2(positions, self.positions)
        return d2 < (0.5 * self.skin) ** 2


# ------------------------------------------------------------------------------ model packing
def _pack_tables(specs, ng: int, ngp: int):
    """plan.TableSpec records in the kernels' layout (numba_kernels._locate / _locate_in):
    ``tabf`` (lower, upper, xmax, stride0, stride1, xmin) and ``tabi`` (first_stride, nspline, first
    row, n_low) per table, ``coeffs`` (rows, 6, ngp) power-major with outputs innermost (zero padded
    to ngp), ``split`` per row (relu-split interval), and the sub-pieces of the split intervals:
    ``sub_off`` (per table, into) ``sub_start`` and ``sub_coeffs`` (n, 6, ngp). Arrays keep at least
    one row so that the kernels' signatures do not depend on the model."""
    nk = len(specs)
    tabf = np.zeros((max(nk, 1), 6))
    tabi = np.zeros((max(nk, 1), 4), dtype=np.int64)
    sub_off = np.zeros(nk + 1, dtype=np.int64)
    rows = 0
    for n, t in enumerate(specs):
        tabf[n] = (t.lower, t.upper, t.xmax, t.stride0, t.stride1, t.xmin)
        tabi[n] = (t.first_stride, t.nspline, rows, t.n_low)
        rows += t.nspline
        sub_off[n + 1] = sub_off[n] + len(t.sub_start)
    coeffs = np.zeros((max(rows, 1), 6, ngp))
    split = np.zeros(max(rows, 1), dtype=np.bool_)
    sub_start = np.zeros(max(int(sub_off[-1]), 1))
    sub_coeffs = np.zeros((max(int(sub_off[-1]), 1), 6, ngp))
    for n, t in enumerate(specs):
        r0, s0, s1 = tabi[n, 2], sub_off[n], sub_off[n + 1]
        coeffs[r0:r0 + t.nspline, :, :ng] = np.asarray(t.coeffs).transpose(0, 2, 1)
        split[r0 + t.split_intervals] = True
        if s1 > s0:
            sub_start[s0:s1] = t.sub_start
            sub_coeffs[s0:s1, :, :ng] = np.asarray(t.sub_coeffs).transpose(0, 2, 1)
    return tabf, tabi, coeffs, split, sub_off, sub_start, sub_coeffs


class _Packed:
    """One descriptor part of a plan in kernel layouts (built once). ``fitting`` is the model's
    (the same object for every part)."""

    def __init__(self, plan, k: int, fitting):
        part = plan.parts[k]
        self.plan = plan
        self.part = part
        self.nt = part.ntypes
        self.ng = part.ng
        self.ngp = -(-part.ng // 8) * 8
        self.m2 = part.m2
        self.radial = part.padding == "radial"  # D = sum G (no angular rows): the *_r kernels
        # se_atten_v2: strip-net type-pair term (ngp wide), its row per (centre, neighbour) type,
        # the switch variant, and the type embedding appended to the descriptor
        self.tterm = np.zeros((0, self.ngp))
        self.term_row = np.zeros((self.nt, self.nt), dtype=np.int64)
        self.tf_switch = False
        self.tebd = np.zeros((self.nt, 0))
        tt = part.type_term
        if tt is not None:
            self.tterm = np.zeros((tt.table.shape[0], self.ngp))
            self.tterm[:, :part.ng] = tt.table
            self.term_row = tt.rows
            self.tf_switch = tt.tf_switch
            self.tebd = tt.tebd
        # descriptor width, its 1/N scale, selection, statistics, nets and their index per type pair
        self.ldd, self.inv_n, self.sel, self.davg, self.dstd = part.dim_out, part.scale, part.sel, part.davg, part.dstd
        self.compressed, self.keys, self.nets, self.kidx = part.compressed, part.keys, part.nets, part.net_index
        (self.tabf, self.tabi, self.coeffs, self.split, *_) = _pack_tables(part.tables or (), self.ng, self.ngp)
        self.tables = [t.table for t in part.tables] if self.compressed else None
        self.padx = np.zeros((self.nt, part.nsec, self.ngp))
        self.padx[:, :, :self.ng] = part.pad_fold
        self.fitting = fitting


class _Layer:
    def __init__(self, layer, dtype, own_gemm: bool):
        self.w = np.ascontiguousarray(layer.w, dtype=dtype)
        # the backward GEMM reads W transposed in place (BLAS 'T'): one copy of the weights in cache,
        # not two -- for small systems reading the weights is most of the fitting net's time
        self.wt = self.w.T
        self.b = np.asarray(layer.b, dtype=dtype)
        self.idt = None if layer.idt is None else np.asarray(layer.idt, dtype=dtype)
        self.activation = layer.activation
        self.shortcut = layer.shortcut
        # products of real matrices (not the 1-wide output layer) in numba_gemm's kernels, in the
        # working precision: weights packed once, forward (W) and backward (W^T)
        k, n = self.w.shape
        own = own_gemm and min(k, n) >= _gemm().MIN_WIDTH
        self.fwd = _gemm().PackedWeights(self.w, self.b, dtype) if own else None  # x W + b
        self.bwd = _gemm().PackedWeights(self.wt, None, dtype) if own else None
        # float64 tanh layers on that path: one compiled pass for slope, timestep and shortcut (numpy's
        # operations, bit for bit; in float32 numpy's own passes keep float32 rounding)
        self.fused_tail = own and self.activation == "tanh" and dtype == np.float64
        self.idt_or_ones = np.ones(n) if self.idt is None else self.idt


class _Fitting:
    """Per-type fitting nets in the working precision; value and input gradient (numba_gemm or BLAS)."""

    def __init__(self, params, precision):
        from ..model.activations import activation_with_derivatives

        self._act = activation_with_derivatives
        self.dtype = np.dtype(precision)
        fit = params.fitting
        nets = fit.nets if fit.shared is None else [fit.shared] * len(params.out_bias)  # mixed_types: one net
        own_gemm = _gemm().use_for_fitting()
        self.nets = [None if net is None else [_Layer(la, self.dtype, own_gemm) for la in net.layers] for net in nets]
        self.bias = np.asarray(fit.bias_atom_e, dtype=np.float64)
        self.fit_excluded = frozenset(fit.exclude_types)
        self.out_bias = np.asarray(params.out_bias, dtype=np.float64)
        self.atom_excluded = frozenset(params.atom_exclude_types)

    def energy_and_grad(self, t: int, x: np.ndarray):
        """Atomic energies (n,) float64 of type t; dE/dD overwrites ``x`` in place."""
        n = x.shape[0]
        layers = self.nets[t]
        if layers is None or t in self.fit_excluded or t in self.atom_excluded:
            energy = np.zeros(n) if t in self.atom_excluded else np.full(n, self.out_bias[t])
            x[...] = 0.0
            return energy
        if n > ROWS_PER_FIT_BLOCK:  # blocks of rows: the layers' activations stay in L2 between passes
            return np.concatenate([self._energy_and_grad(layers, t, x[a:a + ROWS_PER_FIT_BLOCK])
                                   for a in range(0, n, ROWS_PER_FIT_BLOCK)])
        return self._energy_and_grad(layers, t, x)

    def energy_and_grad_with(self, t: int, x: np.ndarray, extra: np.ndarray | None):
        """:meth:`energy_and_grad` of a model with frame/atomic parameter columns ``extra`` (n, k) read
        after the descriptor: dE/dD overwrites ``x``; returns (energies, dE/d(extra)) (None without)."""
        if extra is None:
            return self.energy_and_grad(t, x), None
        d = x.shape[1]
        full = np.empty((x.shape[0], d + extra.shape[1]), dtype=self.dtype)
        full[:, :d] = x
        full[:, d:] = extra
        energy = self.energy_and_grad(t, full)
        x[...] = full[:, :d]
        return energy, full[:, d:]

    def _energy_and_grad(self, layers, t, x):
        n = x.shape[0]
        h = x
        slopes = []
        for la in layers:
            if la.fused_tail:
                y = la.fwd.matmul(h)
                np.tanh(y, out=y)
                f1 = np.empty_like(y)
                _fitting_kernels().tanh_layer_tail(y, h, la.idt_or_ones, la.shortcut, f1)
                slopes.append(f1)
                h = y
                continue
            if la.fwd is not None:
                pre = la.fwd.matmul(h)  # x W + b
            else:
                pre = h @ la.w
                pre += la.b
            if la.activation == "tanh":
                y = np.tanh(pre, out=pre)
                f1 = y * y
                np.subtract(1.0, f1, out=f1)
            else:
                y, f1, _ = self._act(la.activation, pre)
                y = np.ascontiguousarray(y, dtype=self.dtype)
                f1 = np.ascontiguousarray(f1, dtype=self.dtype)
            if la.idt is not None:
                y *= la.idt
                f1 *= la.idt
            if la.shortcut == 1:
                y += h
            elif la.shortcut == 2:
                y += np.concatenate([h, h], axis=1)
            slopes.append(f1)
            h = y
        energy = h[:, 0].astype(np.float64) + self.bias[t] + self.out_bias[t]
        grad = np.ones((n, 1), dtype=self.dtype)
        for k in range(len(layers) - 1, -1, -1):
            la = layers[k]
            g_pre = slopes[k]
            g_pre *= grad
            if la.bwd is not None:
                g_in = la.bwd.matmul(g_pre, out=x if k == 0 else None)
            else:
                g_in = np.matmul(g_pre, la.wt, out=x) if k == 0 else g_pre @ la.wt
            if la.shortcut == 1:
                g_in += grad
            elif la.shortcut == 2:
                half = la.w.shape[0]
                g_in += grad[:, :half] + grad[:, half:]
            grad = g_in
        return energy


# ------------------------------------------------------------------------------ backend
class Backend:
    """Compiled CPU backend.

    Parameters
    ----------
    precision
        'float64' (default) or 'float32': the working precision of the fitting net and of the
        descriptor it reads (embedding, tables and env matrix stay float64).
    skin
        Neighbour-list skin in Angstrom for reuse across calls (default 1.0; 0 disables).
    chunk_atoms
        Centre atoms per chunk (memory bound of the descriptor buffers).
    """

    name = "numba"
    builds_neighbors = False
    device_counters = False

    def __init__(self, precision: str = "float64", skin: float | None = None, chunk_atoms: int | None = None):
        if not is_available():
            raise BackendUnavailableError(why_unavailable())
        if precision not in ("float64", "float32"):
            raise BackendUnavailableError(f"precision must be 'float64' or 'float32', not {precision!r}")
        # numba's OpenMP workers otherwise spin after each parallel kernel and slow down the BLAS
        # calls of the fitting net; exported (and logged) here, before the first parallel kernel
        config.apply_omp_wait_policy()
        _apply_thread_env()
        self._threads = _ThreadGovernor(numba.get_num_threads())
        self.precision = precision
        self.skin = DEFAULT_SKIN if skin is None else float(skin)
        self.chunk_atoms = chunk_atoms
        self._cache: _PairCache | None = None
        self._packed: dict = {}
        self.n_builds = 0  # neighbour-list builds (for tests and diagnostics)

    # -------------------------------------------------------------- neighbour lists
    def pairs_from_atoms(self, positions, cell, pbc, rcut):
        """(centers, neighbors, vectors) of all pairs within rcut (+ skin when reused)."""
        self._threads.apply()
        positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
        cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        pbc = np.asarray(pbc, dtype=bool).reshape(3)
        K = _kernels()
        c = self._cache
        if self.skin > 0 and c is not None and c.valid_for(positions, cell, pbc, rcut):
            vec = K.shifted_vectors(positions, c.used_cell, c.pi, c.pj, c.shifts)
            return c.pi, c.pj, vec
        reach = rcut + self.skin
        used, inv, pbc_b, nbins, nsearch, fmin, fspan = cell_list_setup(positions, cell, pbc, reach)
        with numba_cache.first_use("neighbors"):  # one process compiles, the others wait and load
            pi, pj, shifts, vec = K.neighbor_pairs(positions, np.ascontiguousarray(used), np.ascontiguousarray(inv),
                                                   pbc_b, float(reach), nbins, nsearch, fmin, fspan)
        self.n_builds += 1
        if self.skin > 0:
            self._cache = _PairCache(positions, cell, pbc, rcut, self.skin, pi, pj, shifts, np.ascontiguousarray(used))
        return pi, pj, vec

    def select(self, part, centers, neighbors, vectors, atype_all, nloc):
        """DeePMD-kit's selection of one descriptor part (plan.PartPlan); mixed-type selections
        are the numpy reference's."""
        self._threads.apply()  # LAMMPS starts here (no pairs_from_atoms)
        if part.mixed_types:
            return _numpy_backend().select(part, centers, neighbors, vectors, atype_all, nloc)
        atype_all = np.ascontiguousarray(atype_all, dtype=np.int64)
        K = _kernels()
        with numba_cache.first_use("select"):
            c, n, v, slots, n_dropped, max_per_type, _ = K.select_pairs(
                np.ascontiguousarray(centers, dtype=np.int64), np.ascontiguousarray(neighbors, dtype=np.int64),
                np.ascontiguousarray(vectors, dtype=np.float64).reshape(-1, 3), atype_all, int(nloc), part.sel,
                part.rcut, part.select_exclude_mask, part.slot_exclude_mask)
        return PairList(centers=c, neighbors=n, vectors=v, slots_used=slots, nloc=int(nloc), nall=len(atype_all),
                        n_dropped=int(n_dropped), max_per_type=max_per_type)

    # -------------------------------------------------------------- evaluation
    @staticmethod
    def handles(model) -> bool:
        """True for what the compiled path evaluates: se_e2_a, se_atten_v2, se_e2_r, hybrids of them,
        compressed se_e3 models and DPA-1 models (not in hybrids: see _dpa1_compiled)."""
        parts = model.plan.parts
        return all(p.kernel in COMPILED_KERNELS for p in parts) or _se_e3_compiled(parts) or _dpa1_compiled(parts)

    def _packs(self, model) -> list:
        """One :class:`_Packed` per descriptor part (built once per plan)."""
        plan = model.plan
        packs = self._packed.get(id(plan))
        if packs is None or packs[0].plan is not plan:
            fitting = _Fitting(plan.params, self.precision)
            packs = [_Packed(plan, k, fitting) for k in range(len(plan.parts))]
            self._packed = {id(plan): packs}
        return packs

    def _pack(self, model, k: int = 0) -> _Packed:
        return self._packs(model)[k]

    def evaluate(self, model, pair_lists, atype_all, atomic_virial: bool, extra=None):
        if not self.handles(model):
            return _numpy_backend().evaluate(model, pair_lists, atype_all, atomic_virial, extra=extra)
        if not isinstance(pair_lists, (list, tuple)):
            pair_lists = [pair_lists]
        with self._threads.blas():
            res = self._evaluate(model, pair_lists, atype_all, atomic_virial, extra)
        if extra is not None:
            res.dedfparam = dedfparam(model.plan.params.fitting, res.dedfparam)
        return res

    def _evaluate(self, model, pair_lists, atype_all, atomic_virial, extra):
        plan = model.plan
        key = f"evaluate-{self.precision}-{'+'.join(sorted({p.kernel for p in plan.parts}))}-{plan.compressed}"
        with numba_cache.first_use(key):
            if _se_e3_compiled(plan.parts):  # se_e3: its own packing and kernels, see the end of this module
                pk = self._packed.get(("se_e3", id(plan)))
                if pk is None or pk.plan is not plan:
                    pk = _PackedSeE3(plan, self.precision)
                    self._packed = {("se_e3", id(plan)): pk}
                return evaluate_se_e3(pk, pair_lists[0], np.ascontiguousarray(atype_all, dtype=np.int64),
                                      model.tally, atomic_virial, self.chunk_atoms, extra)
            if _dpa1_compiled(plan.parts):  # DPA-1: backends/numba_dpa1.py
                pk = self._packed.get(("dpa1", id(plan)))
                if pk is None or pk.plan is not plan:
                    from .numba_dpa1 import PackedDpa1

                    pk = PackedDpa1(plan, _Packed(plan, 0, _Fitting(plan.params, self.precision)))
                    self._packed = {("dpa1", id(plan)): pk}
                return _evaluate_dpa1(pk, pair_lists[0], np.ascontiguousarray(atype_all, dtype=np.int64),
                                      model.tally, atomic_virial, self.chunk_atoms, extra)
            return evaluate_parts(self._packs(model), pair_lists, np.ascontiguousarray(atype_all, dtype=np.int64),
                                  model.tally, atomic_virial, self.chunk_atoms, extra)


# ------------------------------------------------------------------------------ evaluation
def _tally_and_overrides(pk: _Packed, pairs: PairList, atype_all, xs, code, tally):
    """Count table use; exact (or split-interval) G for the flagged pairs -> (ext_row, g, dg)."""
    npair = len(xs)
    tally.n_inputs += npair
    flagged = np.flatnonzero(code)
    empty = (np.zeros(0, dtype=np.int64), np.zeros((0, pk.ngp)), np.zeros((0, pk.ngp)))
    if not len(flagged):
        return empty
    from ..compress.tables import ABOVE, BELOW

    key_of = pk.kidx[atype_all[pairs.centers[flagged]], atype_all[pairs.neighbors[flagged]]]
    region = (code[flagged] & 3).astype(np.int64)
    split = (code[flagged] & 4) != 0
    need = (region == ABOVE) | (region == BELOW) | split
    rows = flagged[need]
    ext_row = np.full(npair, -1, dtype=np.int64)
    ext_row[rows] = np.arange(len(rows))
    g = np.zeros((len(rows), pk.ngp))
    dg = np.zeros((len(rows), pk.ngp))
    for kk in np.unique(key_of):
        key = pk.keys[kk]
        table = pk.tables[kk]
        sel = key_of == kk
        x = xs[flagged[sel]]
        tally.add(x, region[sel], key, table.lower, table.upper)
        tally.n_inputs -= int(sel.sum())  # counted above already
        mine = sel[need]
        if not mine.any():
            continue
        xr = xs[rows[mine]]
        outside = (region[need][mine] == ABOVE) | (region[need][mine] == BELOW)
        gk = np.empty((len(xr), pk.ng))
        dgk = np.empty((len(xr), pk.ng))
        if outside.any():
            gk[outside], dgk[outside] = pk.nets[kk].value_and_first_derivative(xr[outside])
        if (~outside).any():
            xi = xr[~outside]
            idx, t, _ = table.locate(xi)
            gk[~outside], dgk[~outside] = table.evaluate(idx, t, xi)
        g[np.flatnonzero(mine), :pk.ng] = gk
        dg[np.flatnonzero(mine), :pk.ng] = dgk
    return ext_row, g, dg


def _exact_chunk(pk: _Packed, pairs: PairList, atype_all, pidx, xs, ext_row):
    """G and G' of the chunk's pairs with the exact nets (uncompressed model)."""
    keys = pk.kidx[atype_all[pairs.centers[pidx]], atype_all[pairs.neighbors[pidx]]]
    g = np.zeros((len(pidx), pk.ngp))
    dg = np.zeros((len(pidx), pk.ngp))
    for kk in np.unique(keys):
        if kk < 0:
            continue
        rows = np.flatnonzero(keys == kk)
        g[rows, :pk.ng], dg[rows, :pk.ng] = pk.nets[kk].value_and_first_derivative(xs[pidx[rows]])
    ext_row[pidx] = np.arange(len(pidx))
    return g, dg


class _PartInputs:
    """One descriptor part's pair list in kernel layouts, its embedding inputs and the G/G' side
    arrays of the pairs the tables do not cover (exact net, relu-split intervals)."""

    def __init__(self, pk: _Packed, pairs: PairList, atype_all, tally):
        K = _kernels()
        part = pk.part
        self.pairs = pairs
        self.centers = np.ascontiguousarray(pairs.centers, dtype=np.int64)
        self.neighbors = np.ascontiguousarray(pairs.neighbors, dtype=np.int64)
        self.vectors = np.ascontiguousarray(pairs.vectors, dtype=np.float64)
        self.offsets = np.searchsorted(self.centers, np.arange(pairs.nloc + 1)).astype(np.int64)
        self.n_pad = np.ascontiguousarray(pk.sel[None, :] - np.asarray(pairs.slots_used, dtype=np.int64))
        self.env = (part.rcut_smth, part.rcut, part.env_protection)
        self.xs, code = K.embedding_inputs(self.centers, self.neighbors, self.vectors, atype_all, pk.davg, pk.dstd,
                                           *self.env, pk.kidx, pk.tabf, pk.tabi, pk.split, pk.compressed)
        if pk.compressed:
            self.ext_row, self.g_ext, self.dg_ext = _tally_and_overrides(pk, pairs, atype_all, self.xs, code, tally)
        else:
            self.ext_row = np.full(len(self.xs), -1, dtype=np.int64)
            self.g_ext = self.dg_ext = None


def _result_buffers(atype, nloc: int, nall: int, atomic_virial: bool):
    """Atoms in type order (the fitting nets run per type) and zeroed outputs of one evaluation."""
    return (np.argsort(atype, kind="stable"), np.zeros(nloc), np.zeros((nall, 3)),
            np.zeros((nall, 9)) if atomic_virial else np.zeros((0, 9)), np.zeros((3, 3)))


def evaluate_parts(pks: list, pair_lists: list, atype_all, tally, atomic_virial: bool, chunk_atoms=None,
                   extra=None):
    """Energy, forces and virials of a model whose descriptor parts are all compiled kinds.

    Per chunk of centre atoms: each part's fused forward into its columns of the descriptor,
    the fitting nets (BLAS) on the concatenated rows, each part's fused backward and force
    assembly. A single-part model writes straight into the descriptor buffer. ``extra``: the
    fitting net's frame/atomic parameter columns (nloc, k); the result's ``dedfparam`` then holds
    dE/d(extra) per atom (the caller reduces it).
    """
    from .base import Results

    K = _kernels()
    nloc, nall = pair_lists[0].nloc, pair_lists[0].nall
    atype = atype_all[:nloc]
    inputs = [_PartInputs(pk, pairs, atype_all, tally) for pk, pairs in zip(pks, pair_lists)]
    compressed = pks[0].compressed
    chunk = chunk_atoms or (CHUNK_ATOMS if compressed else CHUNK_ATOMS_EXACT)
    chunk = max(1, min(chunk, nloc))
    fitting = pks[0].fitting
    dtype = fitting.dtype
    col0 = np.concatenate([[0], np.cumsum([pk.ldd for pk in pks])])
    single = len(pks) == 1
    dbuf = np.empty((chunk, int(col0[-1])), dtype=dtype)
    part_dbuf = [dbuf if single else np.empty((chunk, pk.ldd), dtype=dtype) for pk in pks]
    tbufs = [np.empty((chunk, 4, pk.ngp)) for pk in pks]
    gbufs = [np.empty((0, 3)) for _ in pks]
    order, atom_energy, forces, atom_virial, virial = _result_buffers(atype, nloc, nall, atomic_virial)
    g_extra = None if extra is None else np.zeros(extra.shape)
    for c0 in range(0, nloc, chunk):
        atoms = np.ascontiguousarray(order[c0:c0 + chunk])
        nb = len(atoms)
        types = atype[atoms]
        bases = []
        for k, (pk, inp) in enumerate(zip(pks, inputs)):
            pbase, pidx = K.pair_bases(atoms, inp.offsets)
            if not compressed:
                inp.g_ext, inp.dg_ext = _exact_chunk(pk, inp.pairs, atype_all, pidx, inp.xs, inp.ext_row)
            desc = part_dbuf[k][:nb]
            args = (atoms, inp.offsets, inp.neighbors, inp.vectors, atype_all, pk.davg, pk.dstd, *inp.env, pk.kidx,
                    pk.tabf, pk.tabi, pk.coeffs, inp.ext_row, inp.g_ext, inp.n_pad, pk.padx, pk.inv_n, pk.ng)
            if pk.radial:
                K.tabulate_forward_r(*args, desc)
            else:
                K.tabulate_forward(*args, pk.m2, pk.tterm, pk.term_row, pk.tf_switch, tbufs[k][:nb], desc)
                if pk.tebd.shape[1]:
                    desc[:, pk.ng * pk.m2:] = pk.tebd[types]
            if not single:
                dbuf[:nb, col0[k]:col0[k + 1]] = desc
            bases.append(pbase)
        desc_all = dbuf[:nb]
        bounds = np.searchsorted(types, np.arange(pks[0].nt + 1))
        for t in range(pks[0].nt):
            a0, a1 = bounds[t], bounds[t + 1]
            if a1 > a0:
                rows = atoms[a0:a1]
                atom_energy[rows], gx = fitting.energy_and_grad_with(t, desc_all[a0:a1],
                                                                     None if extra is None else extra[rows])
                if gx is not None:
                    g_extra[rows] = gx
        for k, (pk, inp, pbase) in enumerate(zip(pks, inputs, bases)):
            gdesc = desc_all if single else np.ascontiguousarray(desc_all[:, col0[k]:col0[k + 1]])
            if len(gbufs[k]) < pbase[-1]:
                gbufs[k] = np.empty((int(pbase[-1] * 1.1) + 16, 3))
            gvec = gbufs[k][:pbase[-1]]
            if pk.radial:
                K.tabulate_backward_r(atoms, inp.offsets, pbase, inp.neighbors, inp.vectors, atype_all, pk.davg,
                                      pk.dstd, *inp.env, pk.kidx, pk.tabf, pk.tabi, pk.coeffs, inp.ext_row,
                                      inp.dg_ext, gdesc, pk.inv_n, pk.ng, gvec)
            else:
                K.tabulate_backward(atoms, inp.offsets, pbase, inp.neighbors, inp.vectors, atype_all, pk.davg,
                                    pk.dstd, *inp.env, pk.kidx, pk.tabf, pk.tabi, pk.coeffs, inp.ext_row, inp.g_ext,
                                    inp.dg_ext, tbufs[k][:nb], gdesc, pk.inv_n, pk.ng, pk.m2, pk.tterm, pk.term_row,
                                    pk.tf_switch, gvec)
            virial += K.assemble_forces_virial(atoms, inp.offsets, pbase, inp.neighbors, inp.vectors, gvec, forces,
                                               atom_virial, atomic_virial)
    return Results(energy=float(atom_energy.sum()), atom_energy=atom_energy, forces=forces, virial=virial,
                   atom_virial=atom_virial if atomic_virial else None, dedfparam=g_extra)


def thread_count() -> int:
    return numba.get_num_threads() if numba is not None else 1


__all__ = ["Backend", "is_available", "why_unavailable", "neighbor_pairs", "cell_list_setup", "thread_count",
           "pair_vectors"]


# ============================================================================== DPA-1 (issue 24)
def _dpa1_compiled(parts) -> bool:
    """A model whose only part is DPA-1 runs backends/numba_dpa1.py. In a hybrid a DPA-1 part stays on the
    numpy reference: evaluate_parts runs every part through the se_e2_a-style fused kernels per chunk of
    type-ordered atoms, which the attention layers (chunks of consecutive atoms, GEMMs over their pairs)
    do not fit without a second driver."""
    return len(parts) == 1 and parts[0].kernel == "dpa1"


def _evaluate_dpa1(pk, pairs: PairList, atype_all, tally, atomic_virial: bool, chunk_atoms, extra):
    from .numba_dpa1 import evaluate_dpa1

    return evaluate_dpa1(pk, _PartInputs(pk.base, pairs, atype_all, tally), atype_all, tally, atomic_virial,
                         chunk_atoms, extra)


# ============================================================================== se_e3 (issue 15)
# The packing of an se_e3 plan part for the kernels of numba_kernels_se_e3 and its evaluation
# driver. Reached from Backend.handles/Backend.evaluate through _se_e3_compiled only.
def _se_e3_compiled(parts) -> bool:
    """A compressed model whose only part is se_e3 runs the se_e3 kernels. Uncompressed ones stay on the
    numpy reference: every e_jk then needs the net (28 tanh each for cuau_se_e3), which numpy's vectorised
    tanh does 2x faster than the kernels' scalar one evaluated in both passes (922 vs 482 ms CPU, 500
    atoms); evaluate_se_e3 runs them correctly all the same (tests/test_numba_se_e3.py)."""
    return len(parts) == 1 and parts[0].kernel == "se_e3" and parts[0].compressed


def _pack_nets(nets):
    """Exact nets as flat layer rows (n_in, n_out, offsets of W, b, idt, activation, shortcut) and
    parameters -> (layers, first layer and count per net, params, widest layer)."""
    from .numba_kernels_se_e3 import ACTIVATION_CODES

    layers, flat, pos, maxw = [], [], 0, 1
    first = np.zeros((max(len(nets), 1), 2), dtype=np.int64)
    for n, net in enumerate(nets):
        first[n] = (len(layers), len(net.layers))
        for la in net.layers:
            w = np.ascontiguousarray(la.w, dtype=np.float64).reshape(-1)
            row = [la.n_in, la.n_out, pos, pos + w.size, -1, ACTIVATION_CODES[la.activation], la.shortcut]
            flat += [w, np.asarray(la.b, dtype=np.float64).reshape(-1)]
            pos += w.size + la.n_out
            if la.idt is not None:
                row[4] = pos
                flat.append(np.asarray(la.idt, dtype=np.float64).reshape(-1))
                pos += la.n_out
            layers.append(row)
            maxw = max(maxw, la.n_in, la.n_out)
    rows = np.array(layers if layers else [[0] * 7], dtype=np.int64).reshape(-1, 7)
    return rows, first, (np.concatenate(flat) if flat else np.zeros(1)), maxw


class _PackedSeE3:
    """An se_e3 plan (one part) in the layouts of :mod:`.numba_kernels_se_e3` (built once per plan)."""

    def __init__(self, plan, precision):
        part = plan.parts[0]
        self.plan = plan
        self.nt, self.ng, self.keys = part.ntypes, part.ng, part.keys
        self.e3key = np.ascontiguousarray(part.e3_index, dtype=np.int64)
        sel = part.sel.astype(np.float64)
        with np.errstate(divide="ignore"):
            self.scale = np.where(np.outer(sel, sel) > 0, 1.0 / np.outer(sel, sel), 0.0)
        self.davg, self.dstd = part.davg, part.dstd
        self.env = (part.rcut_smth, part.rcut, part.env_protection)
        self.compressed = part.compressed
        (self.tabf, self.tabi, self.coeffs, self.split, self.sub_off, self.sub_start,
         self.sub_coeffs) = _pack_tables(part.tables or (), part.ng, -(-part.ng // 8) * 8)
        self.net_layers, self.net_first, self.net_params, self.maxw = _pack_nets(part.nets)
        self.fitting = _Fitting(plan.params, precision)
        # the numpy reference's blocks of centre atoms: the order in which it updates the worst input
        self.block_atoms = plan.block_atoms or part.evaluator.block_atoms

    def kernel_args(self):
        """Arguments of se_e3_forward/se_e3_backward after the pair list (e3key .. ng)."""
        return (self.e3key, self.scale, self.compressed, self.tabf, self.tabi, self.coeffs, self.split,
                self.sub_off, self.sub_start, self.sub_coeffs, self.net_layers, self.net_first, self.net_params,
                self.maxw, self.ng)


def _tally_se_e3(pk: _PackedSeE3, tally, counts, worst_ex, worst_x):
    """Add the kernels' per-atom counts to ``tally``; the worst input is the first maximum in the numpy
    reference's order (blocks of atoms, then keys, then atoms), as repeated OverflowTally.add calls."""
    tally.n_inputs += int(counts[:, 0].sum())
    tally.n_coarse += int(counts[:, 1].sum())
    tally.n_beyond += int(counts[:, 2].sum())
    if not len(worst_ex) or not np.isfinite(worst_ex).any():
        return
    nloc, nk = worst_ex.shape
    atom, key = np.meshgrid(np.arange(nloc), np.arange(nk), indexing="ij")
    order = np.lexsort((atom.ravel(), key.ravel(), atom.ravel() // pk.block_atoms))
    ex = worst_ex.ravel()[order]
    best = int(np.argmax(ex))
    if ex[best] > tally.worst_excess:
        kk = int(key.ravel()[order[best]])
        tally.worst_excess = float(ex[best])
        tally.worst_x = float(worst_x.ravel()[order[best]])
        tally.worst_key = tuple(pk.keys[kk])
        tally.worst_upper = float(pk.tabf[kk, 1])


def evaluate_se_e3(pk: _PackedSeE3, pairs: PairList, atype_all, tally, atomic_virial: bool, chunk_atoms=None,
                   extra=None):
    """Energy, forces and virials of an se_e3 model: per chunk of centre atoms (ordered by type),
    the fused forward, the fitting nets (BLAS), the fused backward and the force assembly
    (``extra`` as in :func:`evaluate_parts`)."""
    from . import numba_kernels_se_e3 as K3
    from .base import Results

    K = _kernels()
    nloc, nall = pairs.nloc, pairs.nall
    atype = atype_all[:nloc]
    neighbors = np.ascontiguousarray(pairs.neighbors, dtype=np.int64)
    vectors = np.ascontiguousarray(pairs.vectors, dtype=np.float64)
    offsets = np.searchsorted(np.asarray(pairs.centers, dtype=np.int64), np.arange(nloc + 1)).astype(np.int64)
    chunk = max(1, min(chunk_atoms or (CHUNK_ATOMS if pk.compressed else CHUNK_ATOMS_EXACT), max(nloc, 1)))
    fitting = pk.fitting
    args = (neighbors, vectors, atype_all, pk.davg, pk.dstd, *pk.env, *pk.kernel_args())
    nk = len(pk.keys)
    dbuf = np.empty((chunk, pk.ng), dtype=fitting.dtype)
    counts = np.zeros((nloc, 3), dtype=np.int64)
    worst_ex = np.full((nloc, nk), -np.inf)
    worst_x = np.full((nloc, nk), np.nan)
    gbuf = np.empty((0, 3))
    order, atom_energy, forces, atom_virial, virial = _result_buffers(atype, nloc, nall, atomic_virial)
    g_extra = None if extra is None else np.zeros(extra.shape)
    for c0 in range(0, nloc, chunk):
        atoms = np.ascontiguousarray(order[c0:c0 + chunk])
        nb = len(atoms)
        types = atype[atoms]
        desc = dbuf[:nb]
        cnt = np.empty((nb, 3), dtype=np.int64)
        wex = np.empty((nb, nk))
        wx = np.empty((nb, nk))
        K3.se_e3_forward(atoms, offsets, *args, desc, cnt, wex, wx)
        counts[atoms], worst_ex[atoms], worst_x[atoms] = cnt, wex, wx
        bounds = np.searchsorted(types, np.arange(pk.nt + 1))
        for t in range(pk.nt):
            a0, a1 = bounds[t], bounds[t + 1]
            if a1 > a0:  # dE/dD overwrites the descriptor rows
                rows = atoms[a0:a1]
                atom_energy[rows], gx = fitting.energy_and_grad_with(t, desc[a0:a1],
                                                                     None if extra is None else extra[rows])
                if gx is not None:
                    g_extra[rows] = gx
        pbase, _ = K.pair_bases(atoms, offsets)
        if len(gbuf) < pbase[-1]:
            gbuf = np.empty((int(pbase[-1] * 1.1) + 16, 3))
        gvec = gbuf[:pbase[-1]]
        K3.se_e3_backward(atoms, offsets, pbase, *args, desc, gvec)
        virial += K.assemble_forces_virial(atoms, offsets, pbase, neighbors, vectors, gvec, forces, atom_virial,
                                           atomic_virial)
    if pk.compressed:
        _tally_se_e3(pk, tally, counts, worst_ex, worst_x)
    return Results(energy=float(atom_energy.sum()), atom_energy=atom_energy, forces=forces, virial=virial,
                   atom_virial=atom_virial if atomic_virial else None, dedfparam=g_extra)
# ============================================================================== end se_e3 (issue 15)
