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

Hybrid descriptors and uncompressed models are delegated to the numpy reference backend. ``Backend(emulate=True)`` runs the same kernels compiled for the CPU (numpy arrays):
that is how the CPU test suite checks this module without a GPU.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass

import numpy as np

from ..errors import BackendUnavailableError
from ..evaluate import Results

log = logging.getLogger(__name__)

#: descriptor kinds with device kernels; others go to the numpy reference backend
SUPPORTED_KINDS = ("se_e2_a", "se_e2_r", "se_e3", "se_atten_v2")
#: se_e2_r's descriptor scale (descriptors/se_e2_r.py RESCALE)
SE_R_RESCALE = 0.2
MAX_NG = 1024


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
        raise ValueError(f"local rank must be >= 0, got {local_rank}")
    return int(local_rank) % int(device_count)


def select_device(local_rank: int | None = None) -> int:
    """Make GPU ``local_rank mod device count`` current for this process and return its index.

    ``local_rank`` defaults to the launcher's node-local rank (``deepcomp_ase.lammps.mpi``).
    """
    import cupy

    if local_rank is None:
        try:
            from ..lammps.mpi import local_rank as _local_rank

            local_rank = _local_rank()
        except ImportError:
            local_rank = 0
    dev = device_for_rank(local_rank, cupy.cuda.runtime.getDeviceCount())
    cupy.cuda.Device(dev).use()
    return dev


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
class _FitLayer:
    w: object
    wt: object
    b: object
    idt: object
    act: int
    shortcut: int
    n_in: int
    n_out: int


class DeviceModel:
    """Tables, nets and constants of one potential, uploaded once in one precision."""

    def __init__(self, ctx, potential):
        from ..kernels.loader import ACTIVATION_CODES

        xp, fp = ctx.xp, ctx.fp
        params = potential.params
        d = potential.parts[0]
        self.kind = d.kind
        nt = d.ntypes
        # se_atten_v2 has one neighbour section holding every type ("mixed"); the others one per type
        self.mixed = d.kind == "se_atten_v2"
        nsec = 1 if self.mixed else nt
        self.ntypes, self.nsec, self.ng = nt, nsec, d.ng
        self.m2 = int(getattr(d, "axis_neuron", 1))
        self.ldd = int(d.dim_out)  # descriptor row width seen by the fitting net
        self.nnei = d.nnei
        self.sel = np.asarray(d.sel, dtype=np.int64)
        self.rcut, self.rcut_smth, self.protection = float(d.rcut), float(d.rcut_smth), float(d.env_protection)
        tables = potential.embedders[0].tables
        self.keys = sorted(tables)
        index = {k: n for n, k in enumerate(self.keys)}
        pair_table = np.full((nt, nsec), -1, dtype=np.int32)
        e3_table = np.full((nsec, nsec), -1, dtype=np.int32)
        for ti in range(nt):
            for t in range(nsec):
                if d.kind == "se_e3":  # sections only switch on; tables belong to section pairs
                    if d.sel[t] > 0 and not d.excluded(ti, t):
                        pair_table[ti, t] = 0
                    continue
                key = () if self.mixed else d.net_key(ti, t)
                if d.sel[t] > 0 and (self.mixed or not d.excluded(ti, t)) and key in index:
                    pair_table[ti, t] = index[key]
        if d.kind == "se_e3":
            for (t1, t2), n in index.items():
                e3_table[t1, t2] = e3_table[t2, t1] = n
        self.e3_table = ctx.asarray(e3_table.reshape(-1), np.int32)
        # tables: one flat buffer (coefficients, then the relu-split flags of tables that have
        # split intervals), info rows (common.cuh DC_INFO_W) and offsets
        info = np.zeros((len(self.keys), 10))
        offsets = np.full((len(self.keys), 2), -1, dtype=np.int64)
        chunks, pos = [], 0
        self.table_bounds = []
        for n, key in enumerate(self.keys):
            tab = tables[key]
            if tab.ng != d.ng:
                raise BackendUnavailableError(f"table {key} has {tab.ng} outputs, the descriptor {d.ng}")
            info[n, :9] = [tab.lower, tab.upper, tab.xmax, tab.stride0, tab.stride1, tab.nspline, tab.first_stride,
                           tab.xmin, tab.n_low]
            offsets[n, 0] = pos
            chunks.append(np.ascontiguousarray(tab.coeffs, dtype=np.float64).reshape(-1))
            pos += chunks[-1].size
            if len(tab.split_intervals):
                flags = np.zeros(tab.nspline)
                flags[np.asarray(tab.split_intervals, dtype=np.int64)] = 1.0
                offsets[n, 1] = pos
                chunks.append(flags)
                pos += flags.size
            self.table_bounds.append((tab.lower, tab.upper))
        self.table = ctx.asarray(np.concatenate(chunks) if chunks else np.zeros(1), fp)
        self.table_info = ctx.asarray(info, fp)
        self.table_offset = ctx.asarray(offsets, np.int64)
        # exact embedding nets in the same order (outside-table inputs)
        layers, first, flat, fpos = [], np.zeros((len(self.keys), 2), dtype=np.int32), [], 0
        maxw = 1
        for n, key in enumerate(self.keys):
            net = d.embeddings[key]
            first[n] = (len(layers), len(net.layers))
            for layer in net.layers:
                w = np.ascontiguousarray(layer.w, dtype=np.float64).reshape(-1)
                row = [layer.n_in, layer.n_out, fpos, fpos + w.size, -1, ACTIVATION_CODES[layer.activation],
                       layer.shortcut, 0]
                flat += [w, layer.b]
                fpos += w.size + layer.b.size
                if layer.idt is not None:
                    row[4] = fpos
                    flat.append(layer.idt)
                    fpos += layer.idt.size
                layers.append(row)
                maxw = max(maxw, layer.n_in, layer.n_out)
        self.maxw = maxw
        self.net_layers = ctx.asarray(np.array(layers, dtype=np.int32).reshape(-1, 8), np.int32)
        self.net_first = ctx.asarray(first, np.int32)
        self.net_params = ctx.asarray(np.concatenate(flat) if flat else np.zeros(1), fp)
        self.pair_table = ctx.asarray(pair_table, np.int32)
        # statistics: se_e2_r has only the radial column; padded with (0, 1) so the 4-row kernels apply
        davg = np.zeros((nt, 4))
        dstd = np.ones((nt, 4))
        ncomp = d.davg.shape[1]
        davg[:, :ncomp], dstd[:, :ncomp] = d.davg, d.dstd
        self.davg = ctx.asarray(davg, fp)
        self.dstd = ctx.asarray(dstd, fp)
        sec = np.concatenate([[0], np.cumsum(d.sel)]).astype(np.int32)
        self.sec = ctx.asarray(sec, np.int32)
        # padding fold: se_e2_r adds n_pad G(x_pad), the others n_pad G(x_pad) x_pad in column 0
        pad = np.zeros((nt, nsec, d.ng))
        for (ta, tn), (x_pad, g_pad) in getattr(potential.evaluators[0], "pad", {}).items():  # se_e3: none
            pad[ta, tn] = np.asarray(g_pad) * (1.0 if d.kind == "se_e2_r" else x_pad)
        self.pad_vec = ctx.asarray(pad, fp)
        excluded = set(params.pair_exclude_types) | (set(d.exclude_types) if self.mixed else set())
        mex = np.zeros(nt * nt, dtype=np.int32)
        for a, b in excluded:
            mex[a * nt + b] = 1
        self.model_exclude = ctx.asarray(mex, np.int32)
        # se_atten_v2: strip-net type-pair term, its row per (centre, neighbour) type, the
        # switch variant, and the type embedding appended to the descriptor
        self.type_term = self.term_row = self.tebd = None
        self.tf_switch = 0
        if self.mixed:
            self.type_term = ctx.asarray(d.type_pair_table, fp)
            rows = np.array([[d.type_pair_row(a, b) for b in range(nt)] for a in range(nt)], dtype=np.int32)
            self.term_row = ctx.asarray(rows.reshape(-1), np.int32)
            self.tf_switch = int(bool(d.tf_switch))
            if d.concat_output_tebd:
                self.tebd = np.asarray(d.type_embedding[:nt], dtype=np.float64)
        # fitting
        fit = params.fitting
        type_info = np.zeros((nt, 4))
        self.fit_nets: list = []
        self.fit_widths: list[int] = []
        for t in range(nt):
            net = fit.shared if fit.shared is not None else (fit.nets[t] if t < len(fit.nets) else None)
            mask = 0.0 if t in params.atom_exclude_types else 1.0
            use = net is not None and t not in fit.exclude_types
            type_info[t] = (1.0 if use else 0.0, fit.bias_atom_e[t] if use else 0.0, params.out_bias[t], mask)
            if not use or mask == 0.0:
                self.fit_nets.append(None)
                continue
            if net.n_out != 1:
                raise BackendUnavailableError(f"fitting net of type {t} has {net.n_out} outputs, expected 1")
            fl = []
            for k, layer in enumerate(net.layers):
                fl.append(_FitLayer(
                    w=ctx.asarray(layer.w, fp), wt=ctx.asarray(np.ascontiguousarray(layer.w.T), fp),
                    b=ctx.asarray(layer.b, fp), idt=None if layer.idt is None else ctx.asarray(layer.idt, fp),
                    act=ACTIVATION_CODES[layer.activation], shortcut=layer.shortcut, n_in=layer.n_in,
                    n_out=layer.n_out))
                while len(self.fit_widths) <= k:
                    self.fit_widths.append(1)
                self.fit_widths[k] = max(self.fit_widths[k], layer.n_out, layer.n_in)
            self.fit_nets.append(fl)
        self.type_info = ctx.asarray(type_info, np.float64)
        self.counters = ctx.xp.zeros(8, dtype=np.uint64)


class Workspace:
    """Work buffers of one system size (reallocated only when nloc, nall or the types change)."""

    def __init__(self, ctx, dm: DeviceModel, atype: np.ndarray, nloc: int):
        xp, fp = ctx.xp, ctx.fp
        nall = len(atype)
        self.nloc, self.nall = nloc, nall
        self.atype_host = np.array(atype, dtype=np.int64, copy=True)
        nnei, nt, ng = dm.nnei, dm.ntypes, dm.ng
        self.atype = ctx.asarray(atype, np.int32)
        local = self.atype_host[:nloc]
        order = np.argsort(local, kind="stable")
        row_of_atom = np.empty(nloc, dtype=np.int32)
        row_of_atom[order] = np.arange(nloc, dtype=np.int32)
        self.row_of_atom = ctx.asarray(row_of_atom, np.int32)
        counts = np.bincount(local, minlength=nt) if nloc else np.zeros(nt, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)])
        self.type_rows = [(int(starts[t]), int(starts[t + 1])) for t in range(nt)]
        self.nlist = xp.full((nloc, nnei), -1, dtype=np.int32)
        self.rij = xp.zeros((nloc, nnei, 3), dtype=fp)
        self.key = None
        self.nnbr = xp.zeros((nloc, dm.nsec), dtype=np.int32)
        self.em = xp.empty((nloc, nnei, 4), dtype=fp)
        self.g_em = xp.zeros((nloc, nnei, 4), dtype=fp)
        self.g_r = xp.zeros((nloc, nnei), dtype=fp) if dm.mixed else None
        self.atom_flags = xp.zeros(nloc, dtype=np.int32)
        self.t = None if dm.kind in ("se_e2_r", "se_e3") else xp.empty((nloc, ng, 4), dtype=fp)
        self.desc = xp.empty((nloc, dm.ldd), dtype=fp)
        self.g_desc = xp.zeros((nloc, dm.ldd), dtype=fp)
        if dm.tebd is not None:  # constant columns: the type embedding of each row's type
            self.desc[:, dm.ldd - dm.tebd.shape[1]:] = ctx.asarray(dm.tebd[np.sort(local)], fp)
        self.out_rows = xp.zeros((nloc, 1), dtype=fp)
        self.ones = xp.ones((nloc, 1), dtype=fp)
        self.atom_energy = xp.empty(nloc, dtype=np.float64)
        self.force = xp.zeros((nall, 3), dtype=np.float64)
        self.virial_rows = xp.zeros((nloc, 9), dtype=np.float64)
        self.atom_virial = None
        # fitting: flat buffers per layer (rows of a type are a contiguous [r0*m, r1*m) range)
        self.fit_y = [xp.empty(nloc * w + 1, dtype=fp) for w in dm.fit_widths]
        self.fit_d = [xp.empty(nloc * w + 1, dtype=fp) for w in dm.fit_widths]
        self.fit_g = [xp.empty(nloc * w + 1, dtype=fp) for w in dm.fit_widths]
        self.fit_gin = [xp.empty(nloc * w + 1, dtype=fp) for w in dm.fit_widths]
        # device cell list
        self.pos_wrapped = None
        self.bin_of_atom = None

    def matches(self, atype: np.ndarray, nloc: int) -> bool:
        return nloc == self.nloc and len(atype) == self.nall and np.array_equal(atype, self.atype_host)

    def cell_buffers(self, ctx):
        if self.pos_wrapped is None:
            self.pos_wrapped = ctx.xp.empty((self.nall, 3), dtype=np.float64)
            self.bin_of_atom = ctx.xp.empty(self.nall, dtype=np.int32)
            self.key = ctx.xp.empty(self.nlist.shape, dtype=np.float64)
        return self.pos_wrapped, self.bin_of_atom, self.key


def _rows(flat, r0: int, r1: int, m: int):
    return flat[r0 * m:r1 * m].reshape(r1 - r0, m)


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
    compiled for the CPU on numpy arrays (tests).
    """

    name = "cuda"

    def __init__(self, precision: str | None = None, device: int | None = None, *, emulate: bool = False):
        from ..kernels import loader

        precision = precision or os.environ.get("DEEPCOMP_GPU_PRECISION", "float64")
        self.precision = loader.precision_name(precision)
        if emulate:
            self.ctx = loader.emulated_context(self.precision)
        else:
            reason = why_unavailable()
            if reason:
                raise BackendUnavailableError(f"backend 'cuda' cannot run here: {reason}")
            self.ctx = loader.cupy_context(self.precision, device)
        self.xp = self.ctx.xp
        self._state: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._numpy = None

    # ------------------------------------------------------------------ model support
    @property
    def reference(self):
        if self._numpy is None:
            from .numpy_ref import Backend as NumpyBackend

            self._numpy = NumpyBackend()
        return self._numpy

    @staticmethod
    def unsupported_reason(potential) -> str:
        if len(potential.parts) != 1:
            return f"{potential.params.descriptor.kind} descriptor with {len(potential.parts)} parts"
        d = potential.parts[0]
        if d.kind not in SUPPORTED_KINDS:
            return f"descriptor {d.kind} has no device kernels yet"
        if not potential.compressed:
            return "uncompressed model (the device kernels evaluate tables)"
        if d.ng > MAX_NG:
            return f"embedding width {d.ng} > {MAX_NG}"
        return ""

    def supports(self, potential) -> bool:
        return self.unsupported_reason(potential) == ""

    def _entry(self, potential) -> dict:
        st = self._state.get(potential)
        if st is None:
            st = {"model": DeviceModel(self.ctx, potential), "ws": None, "calls": 0}
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

    def select(self, centers, neighbors, vectors, atype_all, nloc, descriptor, model_exclude):
        """Host selection (the reference's), used with :meth:`evaluate` on host pair lists."""
        return self.reference.select(centers, neighbors, vectors, atype_all, nloc, descriptor, model_exclude)

    def evaluate(self, potential, pair_lists, atype_all, atomic_virial: bool):
        """Evaluate host pair lists (one per descriptor part, from :meth:`select`) on the device."""
        if not self.supports(potential):
            return self.reference.evaluate(potential, pair_lists, atype_all, atomic_virial)
        pairs = pair_lists[0]
        st = self._entry(potential)
        dm = st["model"]
        atype_all = np.asarray(atype_all, dtype=np.int64)
        ws = self._workspace(st, atype_all, pairs.nloc)
        nlist, rij = padded_from_pairs(pairs, atype_all, dm.sel, mixed=dm.mixed)
        xp = self.xp
        ws.nlist[...] = xp.asarray(nlist)
        ws.rij[...] = xp.asarray(rij.astype(self.ctx.fp))
        ws.nnbr[...] = xp.asarray(pairs.slots_used.astype(np.int32))
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
        :class:`Results` from the numpy reference.
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
        out = self._evaluate_padded(st, ws, atomic_virial)
        self._count_call(potential, st)
        return out

    def neighbor_list(self, potential, positions, atype, cell=None, pbc=(False, False, False)):
        """Device neighbour list of a structure: (nlist, rij, nnbr) arrays of the workspace, or None."""
        atype = np.asarray(atype, dtype=np.int64)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        ws = self._device_nlist(self._entry(potential), positions, atype, cell, np.asarray(pbc, dtype=bool))
        return None if ws is None else (ws.nlist, ws.rij, ws.nnbr)

    def device_model(self, potential) -> DeviceModel:
        """The uploaded tables, nets and constants of ``potential`` (uploaded at first use)."""
        return self._entry(potential)["model"]

    def _device_nlist(self, st, positions, atype, cell, pbc):
        """cell_bin, sort by bin, build_nlist into the workspace; None if the cell needs ASE."""
        ctx, xp = self.ctx, self.xp
        dm: DeviceModel = st["model"]
        pos = ctx.asarray(positions, np.float64)
        grid = cell_grid(cell, pbc, dm.rcut, pos, xp)
        if grid is None:
            return None
        frame, inv, grid_info, nbins = grid
        n = len(atype)
        ws = self._workspace(st, atype, n)
        pw, bins, key = ws.cell_buffers(ctx)
        frame_d, inv_d = ctx.asarray(frame, np.float64), ctx.asarray(inv, np.float64)
        info_d = ctx.asarray(grid_info, np.int32)
        ctx.launch("cell_bin", pos, frame_d, inv_d, info_d, pw, bins, n)
        order = xp.argsort(bins, kind="stable") if xp is np else xp.argsort(bins)
        bin_atoms = xp.ascontiguousarray(order.astype(np.int32))
        bin_start = xp.ascontiguousarray(
            xp.searchsorted(bins[order], xp.arange(nbins + 1, dtype=np.int32)).astype(np.int32))
        ctx.launch("build_nlist", pw, frame_d, info_d, bins, bin_start, bin_atoms, ws.atype, dm.sec,
                   dm.model_exclude, ws.nlist, ws.rij, key, ws.nnbr, dm.counters, n, n, dm.nnei, dm.ntypes, dm.nsec,
                   nbins, dm.rcut * dm.rcut)
        return ws

    # ------------------------------------------------------------------ the device pipeline
    def _evaluate_padded(self, st, ws: Workspace, atomic_virial: bool) -> DeviceResults:
        ctx, xp = self.ctx, self.xp
        dm: DeviceModel = st["model"]
        nloc, nnei, nsec, ng = ws.nloc, dm.nnei, dm.nsec, dm.ng
        ws.atom_flags.fill(0)
        e3 = dm.kind == "se_e3"
        ctx.launch("env_mat_se_a", ws.nlist, ws.rij, ws.atype, dm.sec, dm.pair_table, dm.davg, dm.dstd,
                   dm.table_info, ws.em, ws.atom_flags, dm.counters, nloc, nnei, nsec, dm.rcut_smth, dm.rcut,
                   dm.protection, 0 if e3 else 1)
        common = (dm.table, dm.table_info, dm.table_offset, dm.net_layers, dm.net_first, dm.net_params, ws.em,
                  ws.nnbr, ws.atom_flags, ws.atype, dm.sec, dm.pair_table, ws.row_of_atom)
        if e3:
            scalars = (nloc, nnei, nsec, ng, dm.ldd, dm.maxw)
            ctx.launch("tabulate_fusion_se_e3_fwd", *common, dm.e3_table, ws.desc, dm.counters, *scalars)
        elif dm.kind == "se_e2_r":
            scalars = (nloc, nnei, nsec, ng, dm.ldd, dm.maxw, SE_R_RESCALE / nnei)
            ctx.launch("tabulate_fusion_se_r_fwd", *common, dm.pad_vec, ws.desc, *scalars)
        else:
            scalars = (nloc, nnei, nsec, ng, dm.m2, dm.ldd, dm.maxw, 1.0 / nnei)
            if dm.mixed:
                term = (ws.nlist, ws.rij, dm.type_term, dm.term_row)
                term_scalars = (dm.ntypes, dm.tf_switch, dm.rcut_smth, dm.rcut, dm.protection)
                ctx.launch("tabulate_fusion_se_atten_fwd", *common, dm.pad_vec, *term, ws.t, ws.desc, *scalars,
                           *term_scalars)
            else:
                ctx.launch("tabulate_fusion_se_a_fwd", *common, dm.pad_vec, ws.t, ws.desc, *scalars)
        self._fitting(dm, ws)
        ctx.launch("atom_energy", ws.out_rows, ws.row_of_atom, ws.atype, dm.type_info, ws.atom_energy, nloc)
        if e3:
            ctx.launch("tabulate_fusion_se_e3_bwd", *common, dm.e3_table, ws.g_desc, ws.g_em, *scalars)
        elif dm.kind == "se_e2_r":
            ctx.launch("tabulate_fusion_se_r_bwd", *common, ws.g_desc, ws.g_em, *scalars)
        elif dm.mixed:
            ctx.launch("tabulate_fusion_se_atten_bwd", *common, ws.t, ws.g_desc, *term, ws.g_em, ws.g_r, *scalars,
                       *term_scalars)
        else:
            ctx.launch("tabulate_fusion_se_a_bwd", *common, ws.t, ws.g_desc, ws.g_em, *scalars)
        ws.force.fill(0.0)
        if atomic_virial:
            if ws.atom_virial is None:
                ws.atom_virial = xp.zeros((ws.nall, 9), dtype=np.float64)
            ws.atom_virial.fill(0.0)
        ctx.launch("prod_force_virial", ws.nlist, ws.rij, ws.g_em, ws.g_r, ws.nnbr, ws.atype, dm.sec, dm.pair_table,
                   dm.dstd, ws.force, ws.virial_rows, ws.atom_virial if atomic_virial else None, nloc, nnei, nsec, 4,
                   dm.rcut_smth, dm.rcut, dm.protection)
        energy = ws.atom_energy.sum()
        virial = ws.virial_rows.sum(axis=0).reshape(3, 3)
        return DeviceResults(energy=energy, atom_energy=ws.atom_energy, forces=ws.force, virial=virial,
                             atom_virial=ws.atom_virial if atomic_virial else None)

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
        freq = int(getattr(potential, "check_frequency", -1))
        if freq > 0 and st["calls"] % freq == 0:
            self.flush_overflow(potential)

    def flush_overflow(self, potential) -> None:
        """Read the device counters (one sync), add them to ``potential.tally`` and zero them."""
        st = self._state.get(potential)
        if st is None:
            return
        dm: DeviceModel = st["model"]
        c = np.asarray(self.ctx.to_host(dm.counters)).astype(np.uint64)
        dm.counters.fill(0)
        merge_counters(potential.tally, c, dm.keys, dm.table_bounds)

    def read_counters(self, potential) -> np.ndarray:
        """The raw device counters (uint64[8]) without resetting them."""
        st = self._state.get(potential)
        return np.zeros(8, dtype=np.uint64) if st is None else np.asarray(self.ctx.to_host(st["model"].counters))

    # ------------------------------------------------------------------ fallbacks
    def _reference_atoms(self, potential, positions, atype, cell, pbc, atomic_virial):
        """Host neighbour list (ASE), then :meth:`evaluate` (which delegates unsupported models)."""
        pos = np.asarray(positions if isinstance(positions, np.ndarray) else self.ctx.to_host(positions),
                         dtype=np.float64)
        i, j, vec = self.pairs_from_atoms(pos, cell, pbc, potential.rcut)
        pair_lists = []
        for part in potential.parts:
            pairs = self.select(i, j, vec, atype, len(pos), part, potential.params.pair_exclude_types)
            potential.tally.n_sel_dropped += pairs.n_dropped
            pair_lists.append(pairs)
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
        group = pairs.centers * nt + tj
        counts = np.bincount(group, minlength=nloc * nt)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(group)) - starts[group]
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
           "is_available", "merge_counters", "padded_from_pairs", "select_device", "why_unavailable"]
