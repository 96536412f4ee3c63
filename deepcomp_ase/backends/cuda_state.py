"""Device-side state of the CUDA backend: uploaded model constants and per-size work buffers.

:class:`DeviceModel` holds what is uploaded once per potential and precision (tables with
their relu-split flags, exact embedding nets, statistics, padding fold, type-pair terms and
the fitting nets); :class:`Workspace` the buffers of one system size. Both keep one entry per
descriptor part (hybrid models have several). Arrays come from the backend's array module
(CuPy, or numpy under host emulation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import config
from ..errors import BackendUnavailableError, InputError

#: table layouts (common.cuh dc_coef_at): the code stored in table_info[:, 9]
TABLE_LAYOUTS = {"output-major": 0, "coefficient-major": 1}


def table_layout_code(layout: str | None = None) -> int:
    """The kernels' code of a table layout name (None: $DEEPCOMP_GPU_TABLE_LAYOUT)."""
    name = config.get("DEEPCOMP_GPU_TABLE_LAYOUT") if layout is None else layout
    if name not in TABLE_LAYOUTS:
        raise InputError(f"table layout {name!r} (DEEPCOMP_GPU_TABLE_LAYOUT or table_layout=): expected one of "
                         f"{', '.join(TABLE_LAYOUTS)}")
    return TABLE_LAYOUTS[name]


def part_max_width(part) -> int:
    """Widest layer of a descriptor part's embedding nets (the exact-net scratch of the kernels)."""
    return max([1] + [max(layer.n_in, layer.n_out) for net in part.nets for layer in net.layers])


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


class DevicePart:
    """Tables, nets and constants of one descriptor part (a hybrid model has several)."""

    def __init__(self, ctx, part, layout: int = 0):
        from ..kernels.launch import se_a_tile
        from ..kernels.loader import ACTIVATION_CODES

        fp = ctx.fp
        self.kernel = part.kernel
        nt = part.ntypes
        # mixed types (se_atten_v2): one neighbour section holding every type; the others one per type
        self.mixed = part.mixed_types
        nsec = part.nsec
        self.ntypes, self.nsec, self.ng = nt, nsec, part.ng
        self.m2 = part.m2
        self.ldd = part.dim_out  # descriptor row width seen by the fitting net
        self.nnei = part.nnei
        self.scale = part.scale
        self.sel = part.sel
        self.rcut, self.rcut_smth, self.protection = part.rcut, part.rcut_smth, part.env_protection
        self.keys = list(part.keys)
        pair_table = part.section_index
        e3_table = part.e3_index
        self.e3_table = ctx.asarray(e3_table.reshape(-1), np.int32)
        # tables: one flat buffer (coefficients, then the relu-split flags of tables that have
        # split intervals), info rows (common.cuh DC_INFO_W) and offsets
        self.layout = int(layout)
        info = np.zeros((len(self.keys), 10))
        offsets = np.full((len(self.keys), 2), -1, dtype=np.int64)
        chunks, pos = [], 0
        self.table_bounds = []
        for n, (key, tab) in enumerate(zip(self.keys, part.tables)):
            if tab.ng != part.ng:
                raise BackendUnavailableError(f"table {key} has {tab.ng} outputs, the descriptor {part.ng}")
            info[n, :9] = [tab.lower, tab.upper, tab.xmax, tab.stride0, tab.stride1, tab.nspline, tab.first_stride,
                           tab.xmin, tab.n_low]
            info[n, 9] = self.layout
            offsets[n, 0] = pos
            coeffs = tab.coeffs if self.layout == 0 else tab.coeffs.transpose(0, 2, 1)  # (nspline, 6, ng)
            chunks.append(np.ascontiguousarray(coeffs, dtype=np.float64).reshape(-1))
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
        for n, net in enumerate(part.nets):
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
        # outputs per pass of the se_a backward kernel (all of them unless the shared memory is short)
        self.tile = se_a_tile(part.ng, part.m2, maxw, np.dtype(fp).itemsize) if part.m2 else part.ng
        self.net_layers = ctx.asarray(np.array(layers, dtype=np.int32).reshape(-1, 8), np.int32)
        self.net_first = ctx.asarray(first, np.int32)
        self.net_params = ctx.asarray(np.concatenate(flat) if flat else np.zeros(1), fp)
        self.pair_table = ctx.asarray(pair_table, np.int32)
        # statistics: se_e2_r has only the radial column; padded with (0, 1) so the 4-row kernels apply
        davg = np.zeros((nt, 4))
        dstd = np.ones((nt, 4))
        ncomp = part.davg.shape[1]
        davg[:, :ncomp], dstd[:, :ncomp] = part.davg, part.dstd
        self.davg = ctx.asarray(davg, fp)
        self.dstd = ctx.asarray(dstd, fp)
        sec = np.concatenate([[0], np.cumsum(part.sel)]).astype(np.int32)
        self.sec = ctx.asarray(sec, np.int32)
        self.pad_vec = ctx.asarray(part.pad_fold, fp)
        self.model_exclude = ctx.asarray(part.select_exclude_mask.reshape(-1).astype(np.int32), np.int32)
        # se_atten_v2: strip-net type-pair term, its row per (centre, neighbour) type, the
        # switch variant, and the type embedding appended to the descriptor
        self.type_term = self.term_row = self.tebd = None
        self.tf_switch = 0
        tt = part.type_term
        if tt is not None:
            self.type_term = ctx.asarray(tt.table, fp)
            self.term_row = ctx.asarray(tt.rows.reshape(-1), np.int32)
            self.tf_switch = int(tt.tf_switch)
            if tt.tebd.shape[1]:
                self.tebd = tt.tebd
        # DPA-1 (attention layers, kernels/dpa1.cu): its constants, and the type embedding it appends
        self.dpa1 = None
        if part.kernel == "dpa1":
            from .cuda_dpa1 import Dpa1Device

            self.dpa1 = Dpa1Device(ctx, part, maxw)
            if part.descriptor.concat_output_tebd:
                self.tebd = np.asarray(part.descriptor.type_embedding[:nt], dtype=np.float64)
        # the neighbour search cutoff (a DPA-1 part of a hybrid selects within the hybrid's)
        self.select_rcut = part.select_rcut
        self.counters = ctx.xp.zeros(8, dtype=np.uint64)  # overflow counters (common.cuh DC_CNT_*)


class DeviceModel:
    """Tables, nets and constants of one potential, uploaded once in one precision.

    ``table_layout``: 'output-major' or 'coefficient-major' (None: $DEEPCOMP_GPU_TABLE_LAYOUT).
    ``parts``: one :class:`DevicePart` per descriptor part, their descriptors concatenated in
    order.
    """

    def __init__(self, ctx, plan, table_layout: str | None = None):
        from ..kernels.loader import ACTIVATION_CODES

        fp = ctx.fp
        params = plan.params
        self.table_layout = layout = table_layout_code(table_layout)
        self.parts = [DevicePart(ctx, part, layout) for part in plan.parts]
        nt = self.parts[0].ntypes
        self.ntypes = nt
        self.ldd = sum(p.ldd for p in self.parts)
        self.col0 = np.concatenate([[0], np.cumsum([p.ldd for p in self.parts])]).astype(int)
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


class PartWorkspace:
    """Neighbour list, environment matrix and descriptor buffers of one descriptor part."""

    def __init__(self, ctx, part: DevicePart, nloc: int, nall: int, local_types_sorted: np.ndarray,
                 desc=None, g_desc=None):
        xp, fp = ctx.xp, ctx.fp
        nnei = part.nnei
        self.nlist = xp.full((nloc, nnei), -1, dtype=np.int32)
        self.rij = xp.zeros((nloc, nnei, 3), dtype=fp)
        self.key = None
        self.nnbr = xp.zeros((nloc, part.nsec), dtype=np.int32)
        self.em = xp.empty((nloc, nnei, 4), dtype=fp)
        self.g_em = xp.zeros((nloc, nnei, 4), dtype=fp)
        self.g_r = xp.zeros((nloc, nnei), dtype=fp) if part.mixed else None
        self.atom_flags = xp.zeros(nloc, dtype=np.int32)
        # T (ng x 4 per atom) exists for the angular two-body kernels only
        self.t = None if part.kernel in ("se_r", "se_e3") else xp.empty((nloc, part.ng, 4), dtype=fp)
        # a single part writes straight into the model's descriptor; hybrid parts into their own
        self.desc = desc if desc is not None else xp.empty((nloc, part.ldd), dtype=fp)
        self.g_desc = g_desc if g_desc is not None else xp.zeros((nloc, part.ldd), dtype=fp)
        if part.tebd is not None:  # constant columns: the type embedding of each row's type
            self.desc[:, part.ldd - part.tebd.shape[1]:] = ctx.asarray(part.tebd[local_types_sorted], fp)
        self.virial_rows = xp.zeros((nloc, 9), dtype=np.float64)
        self.pos_wrapped = None
        self.bin_of_atom = None

    def cell_buffers(self, ctx, nall: int):
        if self.pos_wrapped is None:
            self.pos_wrapped = ctx.xp.empty((nall, 3), dtype=np.float64)
            self.bin_of_atom = ctx.xp.empty(nall, dtype=np.int32)
            self.key = ctx.xp.empty(self.nlist.shape, dtype=np.float64)
        return self.pos_wrapped, self.bin_of_atom, self.key


class Workspace:
    """Work buffers of one system size (reallocated only when nloc, nall or the types change).

    Per-part buffers are in ``parts``.
    """

    def __init__(self, ctx, dm: DeviceModel, atype: np.ndarray, nloc: int):
        xp, fp = ctx.xp, ctx.fp
        nall = len(atype)
        self.nloc, self.nall = nloc, nall
        self.atype_host = np.array(atype, dtype=np.int64, copy=True)
        nt = dm.ntypes
        self.atype = ctx.asarray(atype, np.int32)
        local = self.atype_host[:nloc]
        order = np.argsort(local, kind="stable")
        row_of_atom = np.empty(nloc, dtype=np.int32)
        row_of_atom[order] = np.arange(nloc, dtype=np.int32)
        self.row_of_atom = ctx.asarray(row_of_atom, np.int32)
        counts = np.bincount(local, minlength=nt) if nloc else np.zeros(nt, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)])
        self.type_rows = [(int(starts[t]), int(starts[t + 1])) for t in range(nt)]
        self.desc = xp.empty((nloc, dm.ldd), dtype=fp)
        self.g_desc = xp.zeros((nloc, dm.ldd), dtype=fp)
        single = len(dm.parts) == 1
        self.parts = [PartWorkspace(ctx, p, nloc, nall, np.sort(local), self.desc if single else None,
                                    self.g_desc if single else None) for p in dm.parts]
        self.out_rows = xp.zeros((nloc, 1), dtype=fp)
        self.ones = xp.ones((nloc, 1), dtype=fp)
        self.atom_energy = xp.empty(nloc, dtype=np.float64)
        self.force = xp.zeros((nall, 3), dtype=np.float64)
        self.sums = xp.zeros(19, dtype=np.float64)  # the step's energy, virial, one part's virial
        self.atom_virial = None
        # fitting: flat buffers per layer (rows of a type are a contiguous [r0*m, r1*m) range)
        self.fit_y = [xp.empty(nloc * w + 1, dtype=fp) for w in dm.fit_widths]
        self.fit_d = [xp.empty(nloc * w + 1, dtype=fp) for w in dm.fit_widths]
        self.fit_g = [xp.empty(nloc * w + 1, dtype=fp) for w in dm.fit_widths]
        self.fit_gin = [xp.empty(nloc * w + 1, dtype=fp) for w in dm.fit_widths]

    def matches(self, atype: np.ndarray, nloc: int) -> bool:
        return nloc == self.nloc and len(atype) == self.nall and np.array_equal(atype, self.atype_host)


def _rows(flat, r0: int, r1: int, m: int):
    return flat[r0 * m:r1 * m].reshape(r1 - r0, m)
