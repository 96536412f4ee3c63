"""DPA-1 on the CUDA backend: the constants the kernels of ``kernels/dpa1.cu`` read, and their launches.

The numpy reference is :mod:`deepcomp_ase.descriptors.dpa1`; the kernels evaluate the same math on
the part's tables (exact net for inputs outside them). What is uploaded once per potential
(:class:`Dpa1Device`): the table of every (centre type, neighbour type), the descriptor's slot
exclusions, the strip-mode type-pair term, the attention layers packed into one flat array with an
offset row per layer, and the constant padding rows (the reference evaluator's ``pad_rows``, so
both paths fold the same numbers); with them a scratch buffer of one row per block for the
intermediates of the atom a block works on (``dpa1.cu``, ``dpa1_layout``), grown with the system.
"""

from __future__ import annotations

import numpy as np

from ..errors import BackendUnavailableError
from ..kernels.launch import DPA1_MAX_BLOCKS

#: kernels/dpa1.cu DC_DPA1_* flags
SMOOTH, STRIP, DOTR, NORMALIZE, TF_SWITCH, FLOOR, SELF_MASK = 1, 2, 4, 8, 16, 32, 64
#: the norm floor of DeePMD-kit 3 (torch's normalize); descriptors/dpa1.py takes another floor's backward branch
TORCH_FLOOR = 1e-12
#: most scratch a DPA-1 part may ask for per block (float64 bytes), beyond which the device path is refused
MAX_SCRATCH_BYTES_PER_BLOCK = 64 << 20


def scratch_stride(nnei: int, ng: int, hidden: int, nlayer: int, maxw: int) -> int:
    """FPTYPE elements of one block's scratch row: the total of ``dpa1_layout`` in kernels/dpa1.cu."""
    n, nn, ng_n, h_n = nnei, nnei * nnei, nnei * ng, nnei * hidden
    fixed = 4 * n + n + n + 3 * n + n + n + 2 * ng_n
    per_layer = ng_n + 3 * h_n + 3 * n + 2 * nn + ng_n + n
    grads = 3 * ng_n + h_n + 3 * nn + 3 * h_n + 4 * n + n + 3 * n + 4 * ng + 4 * maxw
    return fixed + per_layer * nlayer + grads


def unsupported_reason(part, maxw: int) -> str:
    """Empty when the DPA-1 kernels run this part, else why not."""
    d = part.descriptor
    hidden = max([1] + [layer.hidden for layer in d.layers])
    need = scratch_stride(part.nnei, part.ng, hidden, len(d.layers), maxw) * 8
    if need > MAX_SCRATCH_BYTES_PER_BLOCK:
        return (f"DPA-1 with sel {part.nnei}, embedding width {part.ng} and attention width {hidden} needs "
                f"{need >> 20} MiB of scratch per thread block (more than {MAX_SCRATCH_BYTES_PER_BLOCK >> 20})")
    return ""


class Dpa1Device:
    """The uploaded constants of one DPA-1 part (``ctx``: the backend's KernelContext)."""

    def __init__(self, ctx, part, maxw: int):
        d = part.descriptor
        fp = ctx.fp
        nt = part.ntypes
        self.nlayer = len(d.layers)
        self.hidden = max([1] + [layer.hidden for layer in d.layers])
        self.flags = ((SMOOTH if d.smooth else 0) | (STRIP if d.tebd_input_mode == "strip" else 0)
                      | (DOTR if d.attn_dotr else 0) | (NORMALIZE if d.normalize else 0)
                      | (TF_SWITCH if d.tf_switch else 0) | (FLOOR if d.unit_floor != TORCH_FLOOR else 0)
                      | (SELF_MASK if d.attn_mask else 0))
        # TensorFlow graphs (io/pb_dpa1.py): their smooth weight and norm floor (their padding rows: pad_rows)
        self.unit_floor = float(d.unit_floor)
        self.switch_rcut_smth = float(d.switch_rcut_smth if d.switch_rcut_smth is not None else d.rcut_smth)
        self.scaling = float(d.scaling)
        self.stride = scratch_stride(part.nnei, part.ng, self.hidden, self.nlayer, maxw)
        ti, tj = np.divmod(np.arange(nt * nt), nt)
        if (part.net_index < 0).any():  # DPA-1 has a net (or the shared strip net) for every type pair
            raise BackendUnavailableError(f"DPA-1 part {part.prefix!r}: no embedding net for the type pairs "
                                          f"{np.argwhere(part.net_index < 0).tolist()}; the CUDA kernels need one "
                                          "for every pair")
        self.tab_of = ctx.asarray(part.net_index.reshape(-1), np.int32)
        self.excl = ctx.asarray(part.slot_exclude_mask.reshape(-1).astype(np.int32), np.int32)
        if d.tebd_input_mode == "strip":
            self.pair_term = ctx.asarray(np.asarray(d.type_pair_table, dtype=np.float64), fp)
            self.term_row = ctx.asarray(np.asarray(d.type_pair_row(ti, tj)).reshape(-1), np.int32)
        else:  # concat: the type enters through the per-pair tables
            self.pair_term = ctx.asarray(np.zeros((1, part.ng)), fp)
            self.term_row = ctx.asarray(np.zeros(nt * nt), np.int32)
        flat, layout, pos = [], [], 0

        def put(a) -> int:
            nonlocal pos
            a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
            flat.append(a)
            pos += a.size
            return pos - a.size

        for layer in d.layers:
            h = layer.hidden
            b_in = np.zeros(3 * h) if layer.b_in is None else layer.b_in
            b_out = np.zeros(part.ng) if layer.b_out is None else layer.b_out
            layout.append([put(layer.w_in), put(b_in), put(layer.w_out), put(b_out), put(layer.ln_w),
                           put(layer.ln_b), put([layer.ln_eps]), h])
        self.attn_params = ctx.asarray(np.concatenate(flat) if flat else np.zeros(1), fp)
        self.attn_layout = ctx.asarray(np.array(layout if layout else [[0] * 8], dtype=np.int32), np.int32)
        ev = part.evaluator
        self.pad_rows = ctx.asarray(ev.pad_rows, fp)
        self.pad_rhat = ctx.asarray(ev.pad_rhat, fp)
        self.scratch = None  # (blocks, stride): made at the first step (scratch_of)


def _args(part, pws, ws, scratch):
    dd = part.dpa1
    return (part.table, part.table_info, part.table_offset, part.net_layers, part.net_first, part.net_params,
            pws.nlist, pws.rij, pws.nnbr, ws.atype, ws.row_of_atom, dd.tab_of, dd.excl, part.davg, part.dstd,
            dd.pair_term, dd.term_row, dd.attn_params, dd.attn_layout, dd.pad_rows, dd.pad_rhat, scratch)


def _scalars(part, nloc):
    dd = part.dpa1
    return (nloc, part.nnei, part.ntypes, part.ng, part.m2, part.ldd, part.maxw, dd.nlayer, dd.hidden, dd.flags,
            dd.scaling, part.scale, part.rcut_smth, part.rcut, part.protection, dd.unit_floor, dd.switch_rcut_smth,
            dd.stride)


def scratch_of(ctx, part, nloc: int):
    """The part's scratch rows, one per block (at most DPA1_MAX_BLOCKS). Kept with the uploaded
    model, since forward and backward of one step use it in turn; it grows only when a larger
    system needs more blocks (no allocation in a step otherwise: LAMMPS's workspace views change
    at every re-neighbouring)."""
    dd = part.dpa1
    rows = max(1, min(nloc, DPA1_MAX_BLOCKS))
    if dd.scratch is None or dd.scratch.shape[0] < rows:
        dd.scratch = ctx.xp.zeros((rows, dd.stride), dtype=ctx.fp)
    return dd.scratch


def forward(ctx, part, pws, ws) -> None:
    """T and the descriptor of every local atom, and the table-input counters."""
    scratch = scratch_of(ctx, part, ws.nloc)
    ctx.launch("dpa1_fwd", *_args(part, pws, ws, scratch), part.counters, pws.t, pws.desc, *_scalars(part, ws.nloc))


def backward(ctx, part, pws, ws) -> None:
    """dE/d(normalised rows) into g_em and dE/d(switch) dw/dr into g_r, for prod_force_virial."""
    scratch = scratch_of(ctx, part, ws.nloc)
    ctx.launch("dpa1_bwd", *_args(part, pws, ws, scratch), pws.t, pws.g_desc, pws.g_em, pws.g_r,
               *_scalars(part, ws.nloc))
