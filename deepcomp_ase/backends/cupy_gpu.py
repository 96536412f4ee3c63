"""CUDA backend (CuPy): the whole step on the device with fused tabulate-contract kernels.

Data flow of one step (:meth:`Backend.compute_device`), every array on the device:

1. ``cell_bin`` + a sort by bin + ``build_nlist``: cell-list neighbour search straight into
   DeePMD-kit's padded layout ``nlist[nloc, nnei]`` (per-type sections of width ``sel[t]``,
   nearest first), pair vectors ``rij`` and the counts ``nnbr[nloc, ntypes]``;
2. ``env_mat_se_a``: normalised environment rows ``em[nloc, nnei, 4]``, overflow counters and
   the per-atom "has an input outside the table" flag;
3. ``tabulate_fusion_*_fwd``: one block per atom, T and the descriptor (padding folded);
   se_e2_a, se_atten_v2 (the same kernel with the type-pair term) and se_e2_r;
4. fitting nets: cuBLAS GEMMs (``xp.matmul(..., out=)``) into preallocated buffers, element-wise
   kernels for bias/activation/shortcut and their backward; atoms are grouped by type so each
   type's net works on contiguous rows;
5. ``tabulate_fusion_*_bwd``: gradient with respect to ``em`` (exact-net path for flagged atoms),
   for se_atten_v2 also the gradient along each bond through the type term's switch;
6. ``prod_force_virial``: forces (double atomicAdd), per-centre virial rows, atomic virials.

Tables, nets, statistics and the padding fold are uploaded once per potential and precision
(:class:`DeviceModel`); work buffers are kept per system size (:class:`Workspace`). The
overflow counters stay on the device and are read every ``potential.check_frequency`` calls.

Hybrid models run each part's neighbour list, environment matrix and tabulate kernels and
concatenate the descriptors. Uncompressed models are delegated to the numpy reference backend.
``Backend(emulate=True)`` runs the same kernels compiled for the CPU (numpy arrays): that is how
the CPU test suite checks this module without a GPU.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass

import numpy as np

from .. import config
from ..errors import BackendUnavailableError, InputError
from ..neighbors import rank_in_group
from ..validate import MIN_DISTANCE, check_pair_vectors, too_close_error
from . import cuda_dpa1
from .base import Results, select_parts
from .cuda_state import DeviceModel, Workspace, _rows, part_max_width

log = logging.getLogger(__name__)

#: kernel families (plan.PartPlan.kernel) with device kernels; others go to the numpy reference backend
SUPPORTED_KERNELS = ("se_a", "se_r", "se_e3", "se_atten", "dpa1")
#: counters[] slots of the first too-close pair (common.cuh DC_CNT_CLOSE_PAIR, DC_CNT_CLOSE_R2)
CLOSE_PAIR, CLOSE_R2 = 6, 7


# --------------------------------------------------------------------------- availability, devices
def why_unavailable() -> str:
    """Empty when CuPy imports and sees a CUDA device, else the reason."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return f"CuPy cannot be imported ({exc}); install it with pip install cupy-cuda12x"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy sees no usable CUDA device ({exc})"
    if n < 1:
        return "CuPy sees no CUDA device"
    return ""


def is_available() -> bool:
    return why_unavailable() == ""


def device_for_rank(local_rank: int, device_count: int) -> int:
    """GPU of a node-local MPI rank: ``local_rank mod device_count`` (ranks may share a GPU)."""
    if device_count < 1:
        raise BackendUnavailableError("no CUDA device to assign to this MPI rank")
    if local_rank < 0:
        raise InputError(f"local rank must be >= 0, got {local_rank}")
    return int(local_rank) % int(device_count)


# ---- GPU per MPI rank (issues 14, 16): one function, used by the LAMMPS bridge
#: launcher variables holding the rank within the node, most specific first
LOCAL_RANK_VARIABLES = (
    "MPI_LOCALRANKID",  # MPICH / Hydra (the mpich wheel's mpiexec)
    "PMI_LOCAL_RANK",  # PMI launchers (MPICH, Intel MPI)
    "OMPI_COMM_WORLD_LOCAL_RANK",  # Open MPI
    "SLURM_LOCALID",  # srun
    "PALS_LOCAL_RANKID",  # Cray PALS
    "MV2_COMM_WORLD_LOCAL_RANK",  # MVAPICH
)


def launcher_local_rank(environ=None) -> tuple[int, str] | None:
    """(node-local rank, variable) from the first launcher variable set to an integer >= 0, else None."""
    environ = os.environ if environ is None else environ
    for var in LOCAL_RANK_VARIABLES:
        try:
            rank = int(environ.get(var, ""))
        except ValueError:
            continue
        if rank >= 0:
            return rank, var
    return None


def choose_device(device_count: int, *, local_rank: int | None = None, gpu_id: int | None = None,
                  environ=None, node_rank=None) -> tuple[int, str]:
    """(GPU index, why) for this process. Pure: nothing is selected.

    ``gpu_id`` >= 0 (the pair style's ``gpu_id`` keyword) wins: every rank uses that GPU. Else
    the node-local rank: ``local_rank`` if given, else the launcher's variables
    (:data:`LOCAL_RANK_VARIABLES`, the first one set), else ``node_rank()`` (a callable: the rank
    in an MPI shared-memory communicator), else 0. The GPU is ``local rank mod device_count``:
    more ranks than GPUs share them round robin.
    """
    if device_count < 1:
        raise BackendUnavailableError("no CUDA device to assign to this MPI rank")
    if gpu_id is not None and int(gpu_id) >= 0:
        if int(gpu_id) >= device_count:
            raise BackendUnavailableError(
                f"gpu_id {gpu_id} asked for, but CuPy sees {device_count} GPU(s) (0..{device_count - 1}); "
                "check gpu_id and CUDA_VISIBLE_DEVICES")
        return int(gpu_id), f"gpu_id {int(gpu_id)}"
    if local_rank is not None:
        return device_for_rank(local_rank, device_count), f"local rank {local_rank} mod {device_count} GPU(s)"
    found = launcher_local_rank(environ)
    if found is not None:
        rank, var = found
        return device_for_rank(rank, device_count), f"local rank {rank} ({var}) mod {device_count} GPU(s)"
    if node_rank is not None:
        rank = int(node_rank())
        why = f"local rank {rank} (MPI shared-memory split) mod {device_count} GPU(s)"
        return device_for_rank(rank, device_count), why
    return 0, f"no launcher local rank: GPU 0 of {device_count}"


def select_device(local_rank: int | None = None, comm=None, *, gpu_id: int | None = None,
                  cupy_module=None) -> tuple[int, str]:
    """Make this process's GPU current; return (its index, how it was chosen, for the log).

    The one place a process (an MPI rank of LAMMPS, or a Python script) picks its GPU; call it
    before any CuPy allocation. The choice is :func:`choose_device`'s, with the node-local rank
    from ``comm`` split by shared memory when no launcher variable gives it. ``cupy_module``
    replaces CuPy (tests).
    """
    if cupy_module is None:
        import cupy as cupy_module
    node_rank = None
    if comm is not None and comm.Get_size() > 1:
        from ..lammps.mpi import shared_memory_rank

        node_rank = lambda: shared_memory_rank(comm)  # noqa: E731 - only called when needed
    count = int(cupy_module.cuda.runtime.getDeviceCount())
    dev, why = choose_device(count, local_rank=local_rank, gpu_id=gpu_id, node_rank=node_rank)
    cupy_module.cuda.Device(dev).use()
    return dev, why
# ---- end GPU per MPI rank


# --------------------------------------------------------------------------- cell list geometry
def _heights(frame: np.ndarray) -> np.ndarray:
    """Distance between opposite faces of the parallelepiped spanned by the rows of ``frame``."""
    vol = abs(np.linalg.det(frame))
    return np.array([vol / np.linalg.norm(np.cross(frame[(d + 1) % 3], frame[(d + 2) % 3])) for d in range(3)])


def cell_grid(cell, pbc, rcut: float, positions, xp=np, max_bins: int | None = None):
    """Frame, inverse frame, grid_info and bin count of the device cell list (see cell_list.cu).

    Periodic directions use the cell vectors. Non-periodic directions get a frame vector that
    spans the atoms (plus a margin); with no periodicity at all the frame is an axis-aligned box
    around the atoms, as in :func:`deepcomp_ase.neighbors.neighbor_pairs_ase`. Bins are at least
    ``rcut / m`` thick, and ``m`` bins are searched on each side. Returns None when the cell is
    degenerate in a way the device search does not handle (the caller then uses ASE).
    """
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    n = int(positions.shape[0])
    if max_bins is None:
        max_bins = max(64, 2 * n)
    origin = np.zeros(3)
    if not pbc.any():
        if n:
            lo = np.asarray(_host(xp, positions.min(axis=0)), dtype=np.float64)
            hi = np.asarray(_host(xp, positions.max(axis=0)), dtype=np.float64)
        else:
            lo = hi = np.zeros(3)
        frame = np.diag(hi - lo + 2.0 * rcut + 1.0)
        origin = lo - rcut - 0.5
    else:
        frame = cell.copy()
        norms = np.linalg.norm(frame, axis=1)
        if np.any(norms[pbc] < 1e-12):
            return None
        bad = (~pbc) & (norms < 1e-12)
        if bad.sum() > 1:
            return None
        for d in np.nonzero(bad)[0]:
            normal = np.cross(frame[(d + 1) % 3], frame[(d + 2) % 3])
            frame[d] = normal / np.linalg.norm(normal)
        if abs(np.linalg.det(frame)) < 1e-12 * max(1.0, float(np.prod(np.linalg.norm(frame, axis=1)))):
            return None
        if not pbc.all():
            inv = np.linalg.inv(frame)
            frac = positions @ xp.asarray(inv)
            smin = np.asarray(_host(xp, frac.min(axis=0))) if n else np.zeros(3)
            smax = np.asarray(_host(xp, frac.max(axis=0))) if n else np.zeros(3)
            for d in np.nonzero(~pbc)[0]:
                length = np.linalg.norm(frame[d])
                margin = (rcut + 0.5) / length  # fractional margin, as the box of the non-periodic case
                origin = origin + (smin[d] - margin) * frame[d]
                frame[d] = frame[d] * (smax[d] - smin[d] + 2.0 * margin)
    h = _heights(frame)
    nb = np.maximum(1, np.floor(h / rcut)).astype(np.int64)
    while int(np.prod(nb)) > max_bins and nb.max() > 1:
        k = int(np.argmax(nb))
        nb[k] = max(1, nb[k] // 2)
    m = np.maximum(1, np.ceil(rcut * nb / h * (1.0 + 1e-12))).astype(np.int64)
    bits = int(pbc[0]) | (int(pbc[1]) << 1) | (int(pbc[2]) << 2)
    grid_info = np.array([nb[0], nb[1], nb[2], m[0], m[1], m[2], bits, 0], dtype=np.int32)
    frame12 = np.concatenate([frame.reshape(9), origin]).astype(np.float64)
    inv9 = np.ascontiguousarray(np.linalg.inv(frame).reshape(9))
    return frame12, inv9, grid_info, int(np.prod(nb))


def _host(xp, a):
    return a if xp is np else a.get()


# --------------------------------------------------------------------------- uploaded model
@dataclass
class DeviceResults:
    """Outputs left on the device (arrays of the backend's array module, float64)."""

    energy: object  # 0-d
    atom_energy: object  # (nloc,)
    forces: object  # (nall, 3)
    virial: object  # (3, 3)
    atom_virial: object | None  # (nall, 9)

    def to_host(self, xp) -> Results:
        h = (lambda a: a) if xp is np else (lambda a: a.get())
        return Results(energy=float(h(self.energy)), atom_energy=np.array(h(self.atom_energy)),
                       forces=np.array(h(self.forces)), virial=np.array(h(self.virial)),
                       atom_virial=None if self.atom_virial is None else np.array(h(self.atom_virial)))


# --------------------------------------------------------------------------- the backend
class Backend:
    """GPU backend. ``precision`` 'float64' (default, or $DEEPCOMP_GPU_PRECISION) or 'float32'.

    ``device``: CUDA device index (default: the current one). ``emulate=True`` runs the kernels
    compiled for the CPU on numpy arrays (tests). ``table_layout``: order of the table
    coefficients on the device, 'output-major' or 'coefficient-major' (default:
    $DEEPCOMP_GPU_TABLE_LAYOUT); equal results, different memory access.
    """

    name = "cuda"
    builds_neighbors = True  # compute_atoms: the neighbour list is built on the device
    device_counters = True  # overflow counters stay on the device until flush_overflow

    def __init__(self, precision: str | None = None, device: int | None = None, *, emulate: bool = False,
                 table_layout: str | None = None, max_threads_per_block: int = 1024, context=None):
        from ..kernels import loader
        from .cuda_state import table_layout_code

        precision = precision or config.get("DEEPCOMP_GPU_PRECISION")
        self.precision = loader.precision_name(precision)
        table_layout_code(table_layout)  # a bad name fails here, not at the first step
        self.table_layout = table_layout
        if context is not None:  # a prepared KernelContext (benchmarks/gpu_host_overhead.py: no-op kernels)
            self.ctx = context
        elif emulate:  # max_threads_per_block: what the emulated kernels report (tests of the launch limits)
            self.ctx = loader.emulated_context(self.precision, max_threads_per_block)
        else:
            reason = why_unavailable()
            if reason:
                raise BackendUnavailableError(f"backend 'cuda' cannot run here: {reason}")
            self.ctx = loader.cupy_context(self.precision, device)
        self.xp = self.ctx.xp
        # CUDA graphs: CuPy only (stream capture), and only when asked for
        self.use_graph = self.xp is not np and config.get("DEEPCOMP_GPU_GRAPH") == "1"
        self._state: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._supported: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._numpy = None

    # ------------------------------------------------------------------ model support
    @property
    def reference(self):
        if self._numpy is None:
            from .numpy_ref import Backend as NumpyBackend

            self._numpy = NumpyBackend()
        return self._numpy

    def unsupported_reason(self, model) -> str:
        from ..kernels.launch import shared_memory_problem

        plan = model.plan
        if not plan.compressed:
            return "uncompressed model (the device kernels evaluate tables)"
        fit = plan.params.fitting
        if fit.numb_fparam or fit.numb_aparam:
            return "frame/atomic parameters (numb_fparam/numb_aparam; the device fitting kernel reads the descriptor only)"
        itemsize = np.dtype(self.precision).itemsize
        for part in plan.parts:
            if part.kernel not in SUPPORTED_KERNELS:
                return f"descriptor {part.descriptor.kind} has no device kernels"
            if part.kernel == "dpa1":  # per-block scratch in global memory, a few ints of shared memory
                problem = cuda_dpa1.unsupported_reason(part, part_max_width(part))
            else:
                problem = shared_memory_problem(part.ng, part.m2, part_max_width(part), itemsize)
            if problem:
                return problem
        return ""

    def supports(self, potential) -> bool:
        """Whether the device kernels run ``potential`` (decided once per potential)."""
        ok = self._supported.get(potential)
        if ok is None:
            ok = self._supported[potential] = self.unsupported_reason(potential) == ""
        return ok

    def _entry(self, potential) -> dict:
        st = self._state.get(potential)
        if st is None:
            st = {"model": DeviceModel(self.ctx, potential.plan, self.table_layout), "ws": None, "calls": 0}
            self._state[potential] = st
        return st

    def _workspace(self, st, atype: np.ndarray, nloc: int) -> Workspace:
        ws = st["ws"]
        if ws is None or not ws.matches(atype, nloc):
            ws = Workspace(self.ctx, st["model"], atype, nloc)
            st["ws"] = ws
        return ws

    # ------------------------------------------------------------------ Backend interface
    def pairs_from_atoms(self, positions, cell, pbc, rcut):
        """Host pair list (the reference's ASE search), for callers that need one.

        :meth:`compute_atoms` does not use it: it builds the neighbour list on the device.
        """
        return self.reference.pairs_from_atoms(positions, cell, pbc, rcut)

    def select(self, part, centers, neighbors, vectors, atype_all, nloc):
        """Host selection (the reference's), used with :meth:`evaluate` on host pair lists."""
        return self.reference.select(part, centers, neighbors, vectors, atype_all, nloc)

    def evaluate(self, potential, pair_lists, atype_all, atomic_virial: bool, extra=None):
        """Evaluate host pair lists (one per descriptor part, from :meth:`select`) on the device."""
        if extra is not None or not self.supports(potential):
            return self.reference.evaluate(potential, pair_lists, atype_all, atomic_virial, extra=extra)
        st = self._entry(potential)
        dm = st["model"]
        atype_all = np.asarray(atype_all, dtype=np.int64)
        ws = self._workspace(st, atype_all, pair_lists[0].nloc)
        xp = self.xp
        for part, pws, pairs in zip(dm.parts, ws.parts, pair_lists):
            nlist, rij = padded_from_pairs(pairs, atype_all, part.sel, mixed=part.mixed)
            pws.nlist[...] = xp.asarray(nlist)
            pws.rij[...] = xp.asarray(rij.astype(self.ctx.fp))
            pws.nnbr[...] = xp.asarray(pairs.slots_used.astype(np.int32))
        out = self._evaluate_padded(st, ws, atomic_virial)
        self._count_call(potential, st)
        return out.to_host(xp)

    def compute_atoms(self, potential, positions, atype, cell=None, pbc=(False, False, False), *,
                      atomic_virial: bool = False) -> Results:
        """Positions in, energy/forces/virial out: the whole step on the device."""
        out = self.compute_device(potential, positions, atype, cell, pbc, atomic_virial=atomic_virial)
        if isinstance(out, Results):
            return out
        return out.to_host(self.xp)

    def compute_device(self, potential, positions, atype, cell=None, pbc=(False, False, False), *,
                       atomic_virial: bool = False):
        """Like :meth:`compute_atoms` but results stay on the device (:class:`DeviceResults`).

        ``positions`` may be a host or a device array (n, 3). Unsupported models return host
        :class:`Results` from the numpy reference. The arrays are the workspace's: the next call
        for the same system overwrites them (copy what must outlive it). Nothing is read back in
        the step; the too-close record and the counters are read every ``check_frequency`` calls
        (after every call without one).
        """
        atype = np.asarray(atype, dtype=np.int64)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        pbc = np.asarray(pbc, dtype=bool).reshape(3)
        if not self.supports(potential):
            return self._reference_atoms(potential, positions, atype, cell, pbc, atomic_virial)
        st = self._entry(potential)
        ws = self._device_nlist(st, positions, atype, cell, pbc)
        if ws is None:
            log.info("cell %s with pbc %s: device cell list not applicable, using ASE's neighbour list",
                     cell.tolist(), pbc.tolist())
            return self._reference_atoms(potential, positions, atype, cell, pbc, atomic_virial)
        out = self._evaluate(st, ws, atomic_virial)
        self._count_call(potential, st)
        return out

    def _evaluate(self, st, ws, atomic_virial: bool) -> DeviceResults:
        """The step after the neighbour list: plain launches, or a CUDA graph (DEEPCOMP_GPU_GRAPH=1).

        A graph is captured on the second call with the same workspace (the first one warms the
        memory pool and cuBLAS, so the capture allocates nothing) and replayed after that. The
        step allocates nothing (energy and virial go to the workspace's buffers), so the replay
        writes the same arrays. Anything CuPy refuses during the capture turns graphs off for
        this backend, with a warning, and the step runs as plain launches.
        """
        if not self.use_graph:
            return self._evaluate_padded(st, ws, atomic_virial)
        key = (ws, atomic_virial)
        graph = st.get("graph")
        if graph is not None and graph[0][0] is ws and graph[0][1] == atomic_virial:
            self._replay(graph[1], graph[2])
            return graph[3]
        if st.get("graph_warm") is not ws:
            st["graph_warm"], st["graph"] = ws, None
            return self._evaluate_padded(st, ws, atomic_virial)
        try:
            st["graph"] = (key, *self._capture(st, ws, atomic_virial))
        except Exception as exc:  # noqa: BLE001 - CuPy/driver refusals vary; plain launches always work
            log.warning("CUDA graph capture failed (%s: %s); running plain launches", type(exc).__name__, exc)
            self.use_graph = False
            self.xp.cuda.Stream.null.synchronize()
            return self._evaluate_padded(st, ws, atomic_virial)
        self._replay(st["graph"][1], st["graph"][2])
        return st["graph"][3]

    def _capture(self, st, ws, atomic_virial: bool):
        """(graph, its stream, the results it writes): the step captured on a non-blocking stream."""
        cupy = self.xp
        stream = cupy.cuda.Stream(non_blocking=True)
        stream.wait_event(cupy.cuda.Stream.null.record())
        with stream:
            stream.begin_capture()
            try:
                out = self._evaluate_padded(st, ws, atomic_virial)
            finally:
                graph = stream.end_capture()
        return graph, stream, out

    def _replay(self, graph, stream) -> None:
        """Launch the graph after the work queued on the null stream (the neighbour list), and
        make the null stream wait for it (what follows reads the results there)."""
        null = self.xp.cuda.Stream.null
        stream.wait_event(null.record())
        graph.launch(stream)
        null.wait_event(stream.record())

    def check_close_pairs(self, potential) -> None:
        """AtomsTooCloseError naming the pair when the neighbour-list kernel met two atoms closer
        than validate.MIN_DISTANCE since the last check; clears the record.

        ``build_nlist`` records the first such pair in the overflow counters, so this reads two
        words of each part's counters and nothing else: no reduction, no temporaries. It runs
        with the counters every ``check_frequency`` calls, and after every call when there is
        no check frequency -- always after the step was queued, never in the middle of it.
        """
        st = self._state.get(potential)
        for part in ([] if st is None else st["model"].parts):
            pair = self.ctx.to_host(part.counters[CLOSE_PAIR:])
            self._raise_close_pair(part, np.asarray(pair).astype(np.uint64))

    def _raise_close_pair(self, part, words) -> None:
        if int(words[0]) == 0:
            return
        part.counters[CLOSE_PAIR:] = 0
        i, j = (int(words[0]) >> 32) - 1, (int(words[0]) & 0xFFFFFFFF) - 1
        r = float(np.sqrt(np.array([words[1]], dtype=np.uint64).view(np.float64)[0]))
        raise too_close_error(i, j, r)

    def neighbor_list(self, potential, positions, atype, cell=None, pbc=(False, False, False), part: int = 0):
        """Device neighbour list of descriptor part ``part`` of a structure: (nlist, rij, nnbr) arrays
        of the workspace, or None."""
        atype = np.asarray(atype, dtype=np.int64)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        ws = self._device_nlist(self._entry(potential), positions, atype, cell, np.asarray(pbc, dtype=bool))
        if ws is None:
            return None
        pws = ws.parts[part]
        return pws.nlist, pws.rij, pws.nnbr

    def device_model(self, potential) -> DeviceModel:
        """The uploaded tables, nets and constants of ``potential`` (uploaded at first use)."""
        return self._entry(potential)["model"]

    def _device_nlist(self, st, positions, atype, cell, pbc):
        """Per descriptor part (own rcut and sel): cell_bin, sort by bin, build_nlist into the
        workspace. None if the cell needs ASE's search."""
        ctx, xp = self.ctx, self.xp
        dm: DeviceModel = st["model"]
        pos = ctx.asarray(positions, np.float64)
        n = len(atype)
        grids = [self._device_grid(st, cell, pbc, part.select_rcut, pos, n) for part in dm.parts]
        if any(g is None for g in grids):
            return None
        ws = self._workspace(st, atype, n)
        for part, pws, (frame_d, inv_d, info_d, nbins) in zip(dm.parts, ws.parts, grids):
            pw, bins, key = pws.cell_buffers(ctx, n)
            ctx.launch("cell_bin", pos, frame_d, inv_d, info_d, pw, bins, n)
            order = xp.argsort(bins, kind="stable") if xp is np else xp.argsort(bins)
            bin_atoms = xp.ascontiguousarray(order.astype(np.int32))
            bin_start = xp.ascontiguousarray(
                xp.searchsorted(bins[order], xp.arange(nbins + 1, dtype=np.int32)).astype(np.int32))
            ctx.launch("build_nlist", pw, frame_d, info_d, bins, bin_start, bin_atoms, ws.atype, part.sec,
                       part.model_exclude, pws.nlist, pws.rij, key, pws.nnbr, part.counters, n, n, part.nnei,
                       part.ntypes, part.nsec, nbins, part.select_rcut ** 2, MIN_DISTANCE * MIN_DISTANCE)
        return ws

    def _device_grid(self, st, cell, pbc, rcut: float, pos, n: int):
        """Cell-list geometry of one part on the device: (frame, inverse, grid_info, bin count).

        A fully periodic cell's geometry depends on the cell, rcut and the atom count only, so it
        is computed and uploaded once per cell (an MD run at constant volume: once); otherwise
        (it spans the atoms) every call."""
        periodic = bool(np.all(pbc))
        key = (cell.tobytes(), rcut, n) if periodic else None
        cache = st.setdefault("grids", {})
        hit = cache.get(key) if periodic else None
        if hit is not None:
            return hit
        g = cell_grid(cell, pbc, rcut, pos, self.xp)
        if g is None:
            return None
        frame, inv, grid_info, nbins = g
        ctx = self.ctx
        out = (ctx.asarray(frame, np.float64), ctx.asarray(inv, np.float64), ctx.asarray(grid_info, np.int32), nbins)
        if periodic:
            if len(cache) >= 8:  # a box that changes every step (NPT): keep a few
                cache.clear()
            cache[key] = out
        return out

    # ------------------------------------------------------------------ the device pipeline
    def _evaluate_padded(self, st, ws: Workspace, atomic_virial: bool) -> DeviceResults:
        ctx, xp = self.ctx, self.xp
        dm: DeviceModel = st["model"]
        hybrid = len(dm.parts) > 1
        for k, (part, pws) in enumerate(zip(dm.parts, ws.parts)):
            self._descriptor_forward(part, pws, ws)
            if hybrid:  # descriptors concatenated in order
                ws.desc[:, dm.col0[k]:dm.col0[k + 1]] = pws.desc
        self._fitting(dm, ws)
        ctx.launch("atom_energy", ws.out_rows, ws.row_of_atom, ws.atype, dm.type_info, ws.atom_energy, ws.nloc)
        ws.force.fill(0.0)
        if atomic_virial:
            if ws.atom_virial is None:
                ws.atom_virial = xp.zeros((ws.nall, 9), dtype=np.float64)
            ws.atom_virial.fill(0.0)
        # energy and virial into the workspace's own buffers: nothing is allocated in the step
        # (a CUDA graph can replay it), and the results, like the forces, live until the next call
        virial, part_virial = ws.sums[1:10], ws.sums[10:19]
        for k, (part, pws) in enumerate(zip(dm.parts, ws.parts)):
            if hybrid:
                pws.g_desc[...] = ws.g_desc[:, dm.col0[k]:dm.col0[k + 1]]
            self._descriptor_backward(part, pws, ws, atomic_virial)
            if k == 0:
                pws.virial_rows.sum(axis=0, out=virial)
            else:
                pws.virial_rows.sum(axis=0, out=part_virial)
                xp.add(virial, part_virial, out=virial)
        energy = ws.sums[0:1].reshape(())
        ws.atom_energy.sum(out=energy)
        return DeviceResults(energy=energy, atom_energy=ws.atom_energy, forces=ws.force, virial=virial.reshape(3, 3),
                             atom_virial=ws.atom_virial if atomic_virial else None)

    def _tabulate_args(self, part, pws, ws):
        """Arguments the tabulate kernels share: tables, nets, per-atom inputs."""
        return (part.table, part.table_info, part.table_offset, part.net_layers, part.net_first, part.net_params,
                pws.em, pws.nnbr, pws.atom_flags, ws.atype, part.sec, part.pair_table, ws.row_of_atom)

    def _scalars(self, part, nloc):
        if part.kernel == "se_e3":
            return (nloc, part.nnei, part.nsec, part.ng, part.ldd, part.maxw)
        if part.kernel == "se_r":
            return (nloc, part.nnei, part.nsec, part.ng, part.ldd, part.maxw, part.scale)
        return (nloc, part.nnei, part.nsec, part.ng, part.m2, part.ldd, part.maxw, part.scale)

    def _type_term(self, part, pws):
        return ((pws.nlist, pws.rij, part.type_term, part.term_row),
                (part.ntypes, part.tf_switch, part.rcut_smth, part.rcut, part.protection))

    def _descriptor_forward(self, part, pws, ws) -> None:
        """Environment matrix (+ counters), then the fused tabulate-contract forward of one part."""
        ctx, nloc = self.ctx, ws.nloc
        if part.kernel == "dpa1":  # environment rows, tables and attention in one kernel
            cuda_dpa1.forward(ctx, part, pws, ws)
            return
        pws.atom_flags.fill(0)
        e3 = part.kernel == "se_e3"
        ctx.launch("env_mat_se_a", pws.nlist, pws.rij, ws.atype, part.sec, part.pair_table, part.davg, part.dstd,
                   part.table_info, pws.em, pws.atom_flags, part.counters, nloc, part.nnei, part.nsec,
                   part.rcut_smth, part.rcut, part.protection, 0 if e3 else 1)
        common, scalars = self._tabulate_args(part, pws, ws), self._scalars(part, nloc)
        if e3:
            ctx.launch("tabulate_fusion_se_e3_fwd", *common, part.e3_table, pws.desc, part.counters, *scalars)
        elif part.kernel == "se_r":
            ctx.launch("tabulate_fusion_se_r_fwd", *common, part.pad_vec, pws.desc, *scalars)
        elif part.kernel == "se_atten":
            term, term_scalars = self._type_term(part, pws)
            ctx.launch("tabulate_fusion_se_atten_fwd", *common, part.pad_vec, *term, pws.t, pws.desc, *scalars,
                       *term_scalars)
        else:
            ctx.launch("tabulate_fusion_se_a_fwd", *common, part.pad_vec, pws.t, pws.desc, *scalars)

    def _descriptor_backward(self, part, pws, ws, atomic_virial: bool) -> None:
        """dE/d em of one part, then forces (accumulated) and this part's per-centre virial rows."""
        ctx, nloc = self.ctx, ws.nloc
        common, scalars = self._tabulate_args(part, pws, ws), self._scalars(part, nloc)
        if part.kernel == "dpa1":
            cuda_dpa1.backward(ctx, part, pws, ws)
        elif part.kernel == "se_e3":
            ctx.launch("tabulate_fusion_se_e3_bwd", *common, part.e3_table, pws.g_desc, pws.g_em, *scalars)
        elif part.kernel == "se_r":
            ctx.launch("tabulate_fusion_se_r_bwd", *common, pws.g_desc, pws.g_em, *scalars)
        elif part.kernel == "se_atten":
            term, term_scalars = self._type_term(part, pws)
            ctx.launch("tabulate_fusion_se_atten_bwd", *common, pws.t, pws.g_desc, *term, pws.g_em, pws.g_r,
                       *scalars, *term_scalars, part.tile)
        else:
            ctx.launch("tabulate_fusion_se_a_bwd", *common, pws.t, pws.g_desc, pws.g_em, *scalars, part.tile)
        ctx.launch("prod_force_virial", pws.nlist, pws.rij, pws.g_em, pws.g_r, pws.nnbr, ws.atype, part.sec,
                   part.pair_table, part.dstd, ws.force, pws.virial_rows, ws.atom_virial if atomic_virial else None,
                   nloc, part.nnei, part.nsec, 4, part.rcut_smth, part.rcut, part.protection)

    def _fitting(self, dm: DeviceModel, ws: Workspace) -> None:
        """Per-type fitting nets on contiguous rows: forward, then the gradient dE/dD."""
        ctx, xp = self.ctx, self.xp
        for t, (r0, r1) in enumerate(ws.type_rows):
            n = r1 - r0
            if n == 0:
                continue
            layers = dm.fit_nets[t]
            if layers is None:
                ws.g_desc[r0:r1] = 0
                ws.out_rows[r0:r1] = 0
                continue
            x = ws.desc[r0:r1]
            ys, ds = [], []
            for k, L in enumerate(layers):
                y = ws.out_rows[r0:r1] if k == len(layers) - 1 else _rows(ws.fit_y[k], r0, r1, L.n_out)
                dact = _rows(ws.fit_d[k], r0, r1, L.n_out)
                xp.matmul(x, L.w, out=y)
                ctx.launch("fitting_activation", y, dact, L.b, L.idt, x, n, L.n_out, L.n_in, L.act, L.shortcut)
                ys.append(y)
                ds.append(dact)
                x = y
            grad = ws.ones[r0:r1]
            for k in range(len(layers) - 1, -1, -1):
                L = layers[k]
                g_pre = _rows(ws.fit_g[k], r0, r1, L.n_out)
                ctx.launch("fitting_grad_pre", g_pre, grad, ds[k], n, L.n_out)
                g_in = ws.g_desc[r0:r1] if k == 0 else _rows(ws.fit_gin[k], r0, r1, L.n_in)
                xp.matmul(g_pre, L.wt, out=g_in)
                if L.shortcut:
                    ctx.launch("fitting_grad_shortcut", g_in, grad, n, L.n_in, L.n_out, L.shortcut)
                grad = g_in

    # ------------------------------------------------------------------ overflow counters
    def _count_call(self, potential, st) -> None:
        st["calls"] += 1
        freq = int(potential.check_frequency)
        if freq > 0:
            if st["calls"] % freq == 0:
                self.flush_overflow(potential)
        else:
            self.check_close_pairs(potential)

    def flush_overflow(self, potential) -> None:
        """Read the device counters (one sync), add them to ``potential.tally`` and zero them;
        AtomsTooCloseError when the neighbour list met two atoms at (almost) one place."""
        st = self._state.get(potential)
        if st is None:
            return
        for part in st["model"].parts:
            c = np.asarray(self.ctx.to_host(part.counters)).astype(np.uint64)
            part.counters[:CLOSE_PAIR] = 0
            merge_counters(potential.tally, c, part.keys, part.table_bounds)
            self._raise_close_pair(part, c[CLOSE_PAIR:])

    def read_counters(self, potential) -> np.ndarray:
        """The raw device counters (uint64[8], summed over descriptor parts) without resetting them."""
        st = self._state.get(potential)
        out = np.zeros(8, dtype=np.uint64)
        for part in ([] if st is None else st["model"].parts):
            c = np.asarray(self.ctx.to_host(part.counters)).astype(np.uint64)
            out[:4] += c[:4]
            out[4:CLOSE_PAIR] = np.maximum(out[4:CLOSE_PAIR], c[4:CLOSE_PAIR])
            if out[CLOSE_PAIR] == 0:
                out[CLOSE_PAIR:] = c[CLOSE_PAIR:]
        return out

    # ------------------------------------------------------------------ fallbacks
    def _reference_atoms(self, potential, positions, atype, cell, pbc, atomic_virial):
        """Host neighbour list (ASE), then :meth:`evaluate` (which delegates unsupported models)."""
        pos = np.asarray(positions if isinstance(positions, np.ndarray) else self.ctx.to_host(positions),
                         dtype=np.float64)
        i, j, vec = self.pairs_from_atoms(pos, cell, pbc, potential.plan.rcut)
        check_pair_vectors(i, j, vec)
        pair_lists = select_parts(self, potential.plan, i, j, vec, atype, len(pos), potential.tally)
        return self.evaluate(potential, pair_lists, atype, atomic_virial)


def padded_from_pairs(pairs, atype_all: np.ndarray, sel, mixed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """DeePMD-kit's padded ``nlist[nloc, nnei]`` and ``rij`` from a sorted :class:`PairList`.

    ``mixed`` (se_atten_v2): one section for every neighbour type.
    """
    sel = np.asarray(sel, dtype=np.int64)
    nt = len(sel)
    sec = np.concatenate([[0], np.cumsum(sel)])
    nnei = int(sec[-1])
    nloc = pairs.nloc
    nlist = np.full((nloc, nnei), -1, dtype=np.int32)
    rij = np.zeros((nloc, nnei, 3))
    if len(pairs.centers):
        tj = np.zeros_like(pairs.neighbors) if mixed else atype_all[pairs.neighbors]
        rank, _ = rank_in_group(pairs.centers * nt + tj, nloc * nt)
        slot = sec[tj] + rank
        nlist[pairs.centers, slot] = pairs.neighbors
        rij[pairs.centers, slot] = pairs.vectors
    return nlist, rij


def decode_worst(word: int):
    """(excess, table index, above) from the packed worst-input counter (0: none)."""
    word = int(word)
    if word == 0:
        return None
    excess = float(np.array([word >> 32], dtype=np.uint32).view(np.float32)[0])
    return excess, (word & 0xFFFFFFFF) >> 1, bool(word & 1)


def merge_counters(tally, c, keys, bounds) -> None:
    """Add device counters (uint64[8], see common.cuh DC_CNT_*) to an OverflowTally."""
    tally.n_inputs += int(c[0])
    tally.n_coarse += int(c[1])
    tally.n_beyond += int(c[2])
    tally.n_sel_dropped += int(c[3])
    worst = decode_worst(c[4])
    if worst is not None:
        excess, tab, above = worst
        if excess > tally.worst_excess and tab < len(keys):
            lower, upper = bounds[tab]
            tally.worst_excess = excess
            tally.worst_x = upper + excess if above else lower - excess
            tally.worst_key = tuple(keys[tab])
            tally.worst_upper = float(upper)


__all__ = ["Backend", "DeviceModel", "DeviceResults", "Workspace", "cell_grid", "decode_worst", "device_for_rank",
           "is_available", "merge_counters", "padded_from_pairs", "select_device", "why_unavailable",
           "choose_device", "launcher_local_rank", "LOCAL_RANK_VARIABLES"]
