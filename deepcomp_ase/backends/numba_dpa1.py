"""DPA-1 with attention layers on the numba backend: packing and the evaluation driver.

The math is the numpy reference's (descriptors/dpa1.py), evaluated per chunk of consecutive centre
atoms with the chunk's pairs as rows of 2-D arrays (no padding rows):

1. pair inputs: normalised env rows, switch, unit directions (:func:`pair_geometry`); G and dG/ds
   from the packed tables (compressed; inputs outside the tables or in relu-split intervals from
   the exact net, counted into the tally as numba_cpu does for se_e2_a) or from the exact nets
   (uncompressed); strip mode's type-pair factor.
2. per attention layer: q/k/v = X W_in + b_in as one GEMM over all rows (numpy's BLAS), the
   per-centre attention in :func:`attention_forward`, O W_out as one GEMM, the layer norm.
3. T and D per centre with the constant padding rows; the fitting nets of the numba backend
   (numba_cpu._Fitting, per type); the backward pass in reverse with the same split (GEMMs for
   the transposed projections, kernels for the rest); forces and virials by numba_cpu's assembly.
"""

from __future__ import annotations

import numpy as np

from ..neighbors import PairList

#: centre atoms per chunk: bounds the context of the backward pass (about 2.3 kB per pair and attention
#: layer, 5 kB per pair of inputs and gradients: ~100 MB for 256 centres of 42 neighbours, two layers)
CHUNK_ATOMS = 256


def _kernels():
    from . import numba_dpa1_kernels

    return numba_dpa1_kernels


class _Layer:
    def __init__(self, layer):
        self.w_in = np.ascontiguousarray(layer.w_in, dtype=np.float64)
        self.w_in_t = np.ascontiguousarray(self.w_in.T)
        self.b_in = np.asarray(layer.b_in, dtype=np.float64)
        self.w_out = np.ascontiguousarray(layer.w_out, dtype=np.float64)
        self.w_out_t = np.ascontiguousarray(self.w_out.T)
        self.b_out = np.asarray(layer.b_out, dtype=np.float64)
        self.ln_w = np.asarray(layer.ln_w, dtype=np.float64)
        self.ln_b = np.asarray(layer.ln_b, dtype=np.float64)
        self.eps = float(layer.ln_eps)
        self.h = layer.hidden


class PackedDpa1:
    """A single-part DPA-1 plan in the layouts of :mod:`.numba_dpa1_kernels` (built once per plan).

    ``base`` is numba_cpu's packing of the part's tables and nets (shared with the se_e2_a path:
    the table layout, the tally and the exact side rows are the same)."""

    def __init__(self, plan, base):
        part = plan.parts[0]
        d = part.descriptor
        self.plan = plan
        self.base = base
        self.d = d
        self.nt, self.ng, self.m2 = part.ntypes, part.ng, part.m2
        self.inv_n = 1.0 / d.nnei
        self.nnei = int(d.nnei)
        self.env = (part.rcut_smth, part.rcut, part.env_protection)
        self.davg, self.dstd = part.davg, part.dstd
        self.layers = [_Layer(la) for la in d.layers]
        self.smooth, self.normalize, self.dotr = bool(d.smooth), bool(d.normalize), bool(d.attn_dotr)
        self.self_mask = bool(d.attn_mask)
        self.scaling = float(d.scaling)
        self.strip = d.tebd_input_mode == "strip"
        # models read from TensorFlow graphs: TF's smooth weight and norm floor (model/params_dpa1.py)
        self.tf_switch = bool(getattr(d, "tf_switch", False))
        rs = getattr(d, "switch_rcut_smth", None)
        self.switch_rs = float(d.rcut_smth if rs is None else rs)
        self.floor = float(getattr(d, "unit_floor", 1e-12))
        self.floor_branch = self.floor != 1e-12  # descriptors/dpa1._floor
        nt = self.nt
        ti, tj = np.divmod(np.arange(nt * nt), nt)
        if self.strip:  # the strip net's row of every (centre, neighbour) type pair, code ti * nt + tj
            self.tt = np.ascontiguousarray(d.type_pair_table[d.type_pair_row(ti, tj)], dtype=np.float64)
        ev = part.evaluator
        self.pad_rows = np.ascontiguousarray(ev.pad_rows)  # (nt centre, nt first atom, ng)
        self.pad_rhat = np.ascontiguousarray(ev.pad_rhat)  # (nt, 4)
        self.tebd = (np.asarray(d.type_embedding[:nt], dtype=np.float64) if d.concat_output_tebd
                     else np.zeros((nt, 0)))
        self.dim = self.ng * self.m2 + self.tebd.shape[1]
        self.work = _Workspace()
        # concat, compressed: the first layer's input is G itself, so X0 W_in is a quintic in s with the
        # coefficients of G times W_in (exact up to rounding); strip mode's factor depends on the type pair
        # and (smooth) on the switch, so there the projection stays a GEMM
        self.pcoeffs = None
        if base.compressed and not self.strip and self.layers:
            self.pcoeffs = np.ascontiguousarray(np.matmul(base.coeffs[:, :, :self.ng], self.layers[0].w_in))


class _Workspace:
    """Named float64 buffers kept between chunks and calls: fresh arrays of this size come from new pages
    (10.8k page faults and 42 ms of system time per call at 500 atoms before)."""

    def __init__(self):
        self.bufs = {}

    def get(self, name: str, shape, zero: bool = False) -> np.ndarray:
        n = int(np.prod(shape))
        buf = self.bufs.get(name)
        if buf is None or buf.size < n:
            buf = self.bufs[name] = np.empty(n + n // 8 + 1)
        out = buf[:n].reshape(shape)
        if zero:
            out[...] = 0.0
        return out


def _exact_rows(pk: PackedDpa1, keys, xs):
    """G and dG/ds of every pair with the exact nets (uncompressed model), grouped by net."""
    g = np.empty((len(xs), pk.ng))
    dg = np.empty((len(xs), pk.ng))
    for kk in np.unique(keys):
        rows = np.flatnonzero(keys == kk)
        g[rows], dg[rows] = pk.base.nets[kk].value_and_first_derivative(xs[rows])
    return g, dg


def evaluate_dpa1(pk: PackedDpa1, inp, atype_all, tally, atomic_virial: bool, chunk_atoms=None, extra=None):
    """Energy, forces and virials of a DPA-1 model (``inp``: numba_cpu._PartInputs of its pair list,
    which has counted the table inputs into the tally); ``extra`` as in numba_cpu.evaluate_parts."""
    from .base import Results
    from .numba_cpu import _kernels as base_kernels

    K = _kernels()
    KB = base_kernels()
    pairs: PairList = inp.pairs
    nloc, nall = pairs.nloc, pairs.nall
    atype = atype_all[:nloc]
    base = pk.base
    fitting = base.fitting
    chunk = max(1, min(chunk_atoms or CHUNK_ATOMS, max(nloc, 1)))
    offsets = inp.offsets
    pad_type = int(atype_all[0]) if len(atype_all) else 0
    n_pad_all = inp.n_pad[:, 0].astype(np.float64)
    dead_all = (pk.nnei - np.diff(offsets)).astype(np.int64)
    key_all = base.kidx[atype_all[inp.centers], atype_all[inp.neighbors]]
    # rows of the exact side arrays (numba_cpu leaves ext_row empty when no pair needs one)
    ext_all = inp.ext_row if len(inp.ext_row) == len(inp.xs) else np.full(len(inp.xs), -1, dtype=np.int64)
    atom_energy = np.zeros(nloc)
    forces = np.zeros((nall, 3))
    atom_virial = np.zeros((nall, 9)) if atomic_virial else np.zeros((0, 9))
    virial = np.zeros((3, 3))
    g_extra = None if extra is None else np.zeros(extra.shape)
    ng, m2 = pk.ng, pk.m2
    empty2 = np.zeros((0, 1))
    W = pk.work
    for a0 in range(0, nloc, chunk):
        a1 = min(nloc, a0 + chunk)
        nb = a1 - a0
        p0, p1 = int(offsets[a0]), int(offsets[a1])
        m = p1 - p0
        offs = np.ascontiguousarray(offsets[a0:a1 + 1] - p0)
        cnt = np.diff(offs)
        o2 = np.concatenate([[0], np.cumsum(cnt * cnt)]).astype(np.int64)
        vec = inp.vectors[p0:p1]
        ti = np.ascontiguousarray(atype_all[inp.centers[p0:p1]])
        tj = atype_all[inp.neighbors[p0:p1]]
        rhat, sw = W.get("rhat", (m, 4)), W.get("sw", m)
        runit, rnorm = W.get("runit", (m, 3)), W.get("rnorm", m)
        K.pair_geometry(vec, ti, pk.davg, pk.dstd, *pk.env, pk.tf_switch, pk.switch_rs, pk.floor, rhat, sw, runit,
                        rnorm)
        keys = key_all[p0:p1]
        xs = inp.xs[p0:p1]
        proj = dproj = None
        if pk.pcoeffs is not None:
            g, dg = W.get("g", (m, ng)), W.get("dg", (m, ng))
            w3 = pk.pcoeffs.shape[2]
            proj, dproj = W.get("proj", (m, w3)), W.get("dproj", (m, w3))
            ext = ext_all[p0:p1]
            K.table_embedding_projection(xs, keys, ext, base.tabf, base.tabi, base.coeffs, pk.pcoeffs, g, dg, proj,
                                         dproj)
            rows = np.flatnonzero(ext >= 0)
            if len(rows):  # exact side rows: projected by a (small) GEMM
                g[rows], dg[rows] = inp.g_ext[ext[rows], :ng], inp.dg_ext[ext[rows], :ng]
                proj[rows] = g[rows] @ pk.layers[0].w_in
                dproj[rows] = dg[rows] @ pk.layers[0].w_in
        elif base.compressed:
            g, dg = W.get("g", (m, ng)), W.get("dg", (m, ng))
            K.table_embedding(xs, keys, ext_all[p0:p1], inp.g_ext, inp.dg_ext, base.tabf, base.tabi,
                              base.coeffs, g, dg)
        else:
            g, dg = _exact_rows(pk, keys, xs)
        dx0w = empty2
        if pk.strip:
            x, dx0 = W.get("x", (m, ng)), W.get("dx0", (m, ng))
            if pk.smooth:
                dx0w = W.get("dx0w", (m, ng))
            K.strip_input(g, dg, pk.tt, np.ascontiguousarray(ti * pk.nt + tj), sw, pk.smooth, x, dx0, dx0w)
        else:
            x, dx0 = g, dg
        dead = np.ascontiguousarray(dead_all[a0:a1])
        ctxs = []
        for n_layer, la in enumerate(pk.layers):
            if n_layer == 0 and proj is not None:
                qkv = proj
            else:
                qkv = np.matmul(x, la.w_in, out=W.get(f"qkv{n_layer}", (m, 3 * la.h)))  # + b_in in the kernel
            nrm = W.get(f"nrm{n_layer}", (m, 3)) if pk.normalize else empty2
            a_st, l_st = W.get(f"a{n_layer}", int(o2[-1])), W.get(f"l{n_layer}", int(o2[-1]))
            o = W.get("o", (m, la.h))
            K.attention_forward(offs, o2, dead, qkv, la.b_in, nrm, pk.normalize, pk.floor, pk.scaling, pk.smooth,
                                pk.dotr, sw, runit, a_st, l_st, o, pk.self_mask)
            y = np.matmul(o, la.w_out, out=W.get(f"y{n_layer}", (m, ng)))
            x_new, sig = W.get(f"x{n_layer}", (m, ng)), W.get(f"sig{n_layer}", m)
            K.layer_norm(y, x, la.b_out, la.ln_w, la.ln_b, la.eps, x_new, sig)  # + b_out + x; y becomes y^
            x = x_new
            ctxs.append((qkv, nrm, a_st, l_st, y, sig))
        atoms = np.arange(a0, a1)
        types = atype[a0:a1]
        prow = np.ascontiguousarray(pk.pad_rows[types, pad_type])
        prhat = np.ascontiguousarray(pk.pad_rhat[types])
        t_mat, desc = W.get("t", (nb, ng, 4)), W.get("desc", (nb, pk.dim))
        K.descriptor_forward(offs, x, rhat, np.ascontiguousarray(n_pad_all[a0:a1]), prow, prhat, pk.inv_n, m2,
                             t_mat, desc)
        if pk.tebd.shape[1]:
            desc[:, ng * m2:] = pk.tebd[types]
        # fitting nets per type; dE/dD replaces the rows
        g_desc = W.get("g_desc", (nb, pk.dim))
        for t in np.unique(types):
            rows = np.flatnonzero(types == t)
            xd = np.ascontiguousarray(desc[rows], dtype=fitting.dtype)
            atom_energy[a0 + rows], gx = fitting.energy_and_grad_with(int(t), xd,
                                                                      None if extra is None else extra[a0 + rows])
            g_desc[rows] = xd
            if gx is not None:
                g_extra[a0 + rows] = gx
        # backward
        g_x, g_rhat = W.get("g_x", (m, ng)), W.get("g_rhat", (m, 4))
        K.descriptor_backward(offs, x, rhat, t_mat, g_desc, pk.inv_n, m2, g_x, g_rhat)
        g_sw, g_ru = W.get("g_sw", m, zero=True), W.get("g_ru", (m, 3), zero=True)
        g_proj = empty2
        for n_layer in range(len(pk.layers) - 1, -1, -1):
            la = pk.layers[n_layer]
            qkv, nrm, a_st, l_st, yh, sig = ctxs[n_layer]
            K.layer_norm_backward(g_x, yh, sig, la.ln_w)  # g_x becomes dE/dY
            g_o = np.matmul(g_x, la.w_out_t, out=W.get("g_o", (m, la.h)))
            g_qkv = W.get("g_qkv0" if n_layer == 0 else "g_qkv", (m, 3 * la.h))
            K.attention_backward(offs, o2, qkv, nrm, pk.normalize, pk.floor, pk.floor_branch, pk.scaling, pk.smooth,
                                 pk.dotr, sw, runit, a_st, l_st, g_o, g_qkv, g_sw, g_ru, pk.self_mask)
            if n_layer == 0 and proj is not None:
                g_proj = g_qkv  # dE/ds gets g_qkv . d(X0 W_in)/ds in input_backward
            else:
                g_x += np.matmul(g_qkv, la.w_in_t, out=W.get("g_x_in", (m, ng)))
        gvec = W.get("gvec", (m, 3))
        K.input_backward(vec, ti, pk.dstd, *pk.env, pk.tf_switch, pk.switch_rs, pk.floor, pk.floor_branch, g_x, dx0,
                         dx0w, g_proj, empty2 if dproj is None else dproj, g_rhat, g_sw, g_ru, runit, rnorm, gvec)
        pbase, _ = KB.pair_bases(atoms, offsets)
        virial += KB.assemble_forces_virial(atoms, offsets, pbase, inp.neighbors, inp.vectors, gvec, forces,
                                            atom_virial, atomic_virial)
    return Results(energy=float(atom_energy.sum()), atom_energy=atom_energy, forces=forces, virial=virial,
                   atom_virial=atom_virial if atomic_virial else None, dedfparam=g_extra)
