"""Compiled (numba) kernels of se_e2_a, se_atten_v2 and se_e2_r models, one per concept, each with a numpy twin.

==========================  ==========================================================
kernel                      numpy twin
==========================  ==========================================================
neighbor_pairs              neighbors.neighbor_pairs_ase (O(N) cell list, any cell)
shifted_vectors             the vectors of a cached pair list at new positions
pair_vectors                pos[j] - pos[i] of a pair list (the LAMMPS bridge)
select_pairs                neighbors.select_neighbors (sort by type/distance, sel)
env_mat                     envmat.env_rows + envmat.rows_to_vector_gradient
embedding_inputs            s_ij = R_ij[0] normalised, Table.locate's region codes
tabulate_forward            T = (1/N) sum_j G(s_ij) (x) R^_ij + padding fold, D = T T<^T
tabulate_backward           dE/dT -> dE/dR^_ij, dE/ds_ij -> dE/dx_ij (tables re-evaluated)
tabulate_forward_r          se_e2_r: D = (1/5N)(sum_j G(s_ij) + padding)
tabulate_backward_r         se_e2_r: dE/ds_ij -> dE/dx_ij
assemble_forces_virial      forces, virial, per-atom virial from dE/dx_ij (no races)
==========================  ==========================================================

se_atten_v2 (strip mode, no attention layers) uses the same tabulate kernels with a non-empty
type-pair term ``tterm``: each embedding is scaled by ``1 + tterm[row(ti, tj)] * sw(r)``
(descriptors/se_atten_v2.py) and the backward pass adds the gradient through ``sw`` along the
bond. With an empty ``tterm`` (se_e2_a) the original loops run unchanged.

Layouts: table coefficients are packed for all net keys into one ``(rows, 6, ngp)`` array
(power-major, outputs innermost, ``ngp`` = ng rounded up to a multiple of 8 with zero
coefficients), so the loops over the embedding outputs are unit-stride and vectorise. T is kept
as ``(4, ngp)`` per atom for the same reason. Every kernel threads over centre atoms (``prange``)
and writes only rows it owns; scatters to neighbour atoms are serial.

The table kernels run per centre atom in passes: a scalar pass (env row, normalisation, table
location of every pair, stored in small per-atom arrays), then the vector pass over the embedding
outputs (and in the backward kernel a scalar chain-rule pass). Interleaved per pair, the division
chains of the scalar part did not overlap with each other. The forward kernel adds four pairs' G
to T per pass over T (``_accumulate_batch``, in pair order); the backward kernel's dE/dT
(``_grad_t``) runs its short loops over m2 for four rows of dE/dD at a time. Together: forward 24
instead of 31 ms, backward 30 instead of 35.5 (4000 Cu/Au atoms, 1 thread, AMD Zen 5; se_e2_r: 8.0
instead of 12.2 and 9.0 instead of 9.5), with the same operations in the same order (results
bitwise equal to before on the models measured, benchmarks/table_kernels.py).

All kernels use ``fastmath=False`` (IEEE semantics: no NaN/Inf assumptions, no approximate
reciprocals) except ``tabulate_backward``: its inner loops are dot products over the embedding
outputs, which LLVM vectorises only when re-association is allowed, so that kernel (alone) allows
re-association and FMA contraction and nothing else (``_TABLE_FASTMATH``). Strict, it runs 3.1x
slower (98 vs 32 ms per call, 4000 Cu/Au atoms, 1 thread, AMD Zen 5). The rounding changes this
brings are of order 1e-16 relative (tests check 1e-12 against numpy). ``tabulate_forward`` gains
nothing measurable from the same flags (25.9 ms both ways; it has no reductions), so it stays strict.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import numba_cache

numba_cache.configure()  # the cache directory must be known before the kernels below are defined

_PAR = dict(parallel=True, cache=True, fastmath=False)
_SER = dict(cache=True, fastmath=False)
#: flags of tabulate_backward (see the module docstring); no nnan/ninf/arcp/afn
_TABLE_FASTMATH = {"reassoc", "contract"}
_TAB = dict(parallel=True, cache=True, fastmath=_TABLE_FASTMATH)
#: pairs whose G are added to T together (tabulate_forward)
_BATCH = 4

# region codes (as compress.tables) and the flag of inputs in relu-split intervals
FINE, COARSE, BELOW, ABOVE, SPLIT = 0, 1, 2, 3, 4


# ---------------------------------------------------------------------------------- neighbours
@njit(**_SER)
def _bin_atoms(pos, inv, pbc, nbins, fmin, fspan):
    """Bin index (3 ints), wrap count (3 ints) and a counting sort of the atoms by bin."""
    n = pos.shape[0]
    binc = np.empty((n, 3), dtype=np.int64)
    wrap = np.zeros((n, 3), dtype=np.int64)
    for a in range(n):
        for k in range(3):
            f = pos[a, 0] * inv[0, k] + pos[a, 1] * inv[1, k] + pos[a, 2] * inv[2, k]
            if pbc[k]:
                w = math.floor(f)
                wrap[a, k] = np.int64(w)
                b = np.int64(math.floor((f - w) * nbins[k]))
            else:
                b = np.int64(math.floor((f - fmin[k]) / fspan[k] * nbins[k]))
            if b < 0:
                b = 0
            if b >= nbins[k]:
                b = nbins[k] - 1
            binc[a, k] = b
    nb = nbins[0] * nbins[1] * nbins[2]
    start = np.zeros(nb + 1, dtype=np.int64)
    flat = np.empty(n, dtype=np.int64)
    for a in range(n):
        flat[a] = binc[a, 0] + nbins[0] * (binc[a, 1] + nbins[1] * binc[a, 2])
        start[flat[a] + 1] += 1
    for b in range(nb):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for a in range(n):
        order[fill[flat[a]]] = a
        fill[flat[a]] += 1
    return binc, wrap, start, order


@njit(**_SER)
def _scan_atom(i, pos, cell, pbc, rc2, nbins, nsearch, binc, wrap, start, order, out_j, out_s, out_v, base,
               write):
    """Visit the candidate neighbours of atom i; count them, or write them from ``base``."""
    cnt = 0
    for dz in range(-nsearch[2], nsearch[2] + 1):
        bz = binc[i, 2] + dz
        sz = 0
        if pbc[2]:
            sz = bz // nbins[2]
            bz -= sz * nbins[2]
        elif bz < 0 or bz >= nbins[2]:
            continue
        for dy in range(-nsearch[1], nsearch[1] + 1):
            by = binc[i, 1] + dy
            sy = 0
            if pbc[1]:
                sy = by // nbins[1]
                by -= sy * nbins[1]
            elif by < 0 or by >= nbins[1]:
                continue
            for dx in range(-nsearch[0], nsearch[0] + 1):
                bx = binc[i, 0] + dx
                sx = 0
                if pbc[0]:
                    sx = bx // nbins[0]
                    bx -= sx * nbins[0]
                elif bx < 0 or bx >= nbins[0]:
                    continue
                b = bx + nbins[0] * (by + nbins[1] * bz)
                for q in range(start[b], start[b + 1]):
                    j = order[q]
                    s0 = sx + wrap[i, 0] - wrap[j, 0]
                    s1 = sy + wrap[i, 1] - wrap[j, 1]
                    s2 = sz + wrap[i, 2] - wrap[j, 2]
                    if j == i and s0 == 0 and s1 == 0 and s2 == 0:
                        continue
                    # ASE's arithmetic: (r_j - r_i) + S . cell
                    v0 = (pos[j, 0] - pos[i, 0]) + (s0 * cell[0, 0] + s1 * cell[1, 0] + s2 * cell[2, 0])
                    v1 = (pos[j, 1] - pos[i, 1]) + (s0 * cell[0, 1] + s1 * cell[1, 1] + s2 * cell[2, 1])
                    v2 = (pos[j, 2] - pos[i, 2]) + (s0 * cell[0, 2] + s1 * cell[1, 2] + s2 * cell[2, 2])
                    if v0 * v0 + v1 * v1 + v2 * v2 < rc2:
                        if write:
                            k = base + cnt
                            out_j[k] = j
                            out_s[k, 0] = s0
                            out_s[k, 1] = s1
                            out_s[k, 2] = s2
                            out_v[k, 0] = v0
                            out_v[k, 1] = v1
                            out_v[k, 2] = v2
                        cnt += 1
    return cnt


@njit(**_PAR)
def neighbor_pairs(pos, cell, inv, pbc, rcut, nbins, nsearch, fmin, fspan):
    """All pairs (i, j, image shift S, x_ij = r_j - r_i + S.cell) with |x_ij| < rcut, sorted by i.

    ``cell`` must be invertible (``inv`` its inverse); along periodic axes atoms are wrapped into
    the cell for binning, along the others the bins span [fmin, fmin+fspan) in fractional units.
    ``nsearch`` bins are searched each way, so cells shorter than 2*rcut give several images.
    """
    n = pos.shape[0]
    binc, wrap, start, order = _bin_atoms(pos, inv, pbc, nbins, fmin, fspan)
    rc2 = rcut * rcut
    counts = np.zeros(n, dtype=np.int64)
    dj = np.zeros(0, dtype=np.int64)
    ds = np.zeros((0, 3), dtype=np.int32)
    dv = np.zeros((0, 3))
    for i in prange(n):
        counts[i] = _scan_atom(i, pos, cell, pbc, rc2, nbins, nsearch, binc, wrap, start, order, dj, ds, dv, 0,
                               False)
    offsets = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        offsets[i + 1] = offsets[i] + counts[i]
    npair = offsets[n]
    out_i = np.empty(npair, dtype=np.int64)
    out_j = np.empty(npair, dtype=np.int64)
    out_s = np.empty((npair, 3), dtype=np.int32)  # small: kept across MD steps
    out_v = np.empty((npair, 3))
    for i in prange(n):
        for k in range(offsets[i], offsets[i + 1]):
            out_i[k] = i
        _scan_atom(i, pos, cell, pbc, rc2, nbins, nsearch, binc, wrap, start, order, out_j, out_s, out_v,
                   offsets[i], True)
        _sort_segment_by_distance(offsets[i], offsets[i + 1], out_j, out_s, out_v)
    return out_i, out_j, out_s, out_v


@njit(**_SER)
def _sort_segment_by_distance(a0, a1, pj, ps, pv):
    """Order one centre's pairs by distance (stable): a reused list then stays nearly sorted,
    which makes the per-step selection (insertion sort) linear."""
    m = a1 - a0
    if m < 2:
        return
    d = np.empty(m)
    for u in range(m):
        p = a0 + u
        d[u] = pv[p, 0] * pv[p, 0] + pv[p, 1] * pv[p, 1] + pv[p, 2] * pv[p, 2]
    srt = np.argsort(d, kind="mergesort")
    tj = pj[a0:a1].copy()
    ts = ps[a0:a1].copy()
    tv = pv[a0:a1].copy()
    for u in range(m):
        pj[a0 + u] = tj[srt[u]]
        for k in range(3):
            ps[a0 + u, k] = ts[srt[u], k]
            pv[a0 + u, k] = tv[srt[u], k]


@njit(**_PAR)
def shifted_vectors(pos, cell, pi, pj, shifts):
    """x_ij = (r_j - r_i) + S.cell of a cached pair list at new positions (same arithmetic)."""
    n = pi.shape[0]
    out = np.empty((n, 3))
    for p in prange(n):
        i = pi[p]
        j = pj[p]
        s0 = shifts[p, 0]
        s1 = shifts[p, 1]
        s2 = shifts[p, 2]
        for k in range(3):
            out[p, k] = (pos[j, k] - pos[i, k]) + (s0 * cell[0, k] + s1 * cell[1, k] + s2 * cell[2, k])
    return out


@njit(**_PAR)
def pair_vectors(pos, centers, neighbors):
    """pos[neighbors] - pos[centers] in one pass (numpy's fancy indexing makes three temporaries)."""
    n = centers.shape[0]
    out = np.empty((n, 3))
    for p in prange(n):
        i = centers[p]
        j = neighbors[p]
        out[p, 0] = pos[j, 0] - pos[i, 0]
        out[p, 1] = pos[j, 1] - pos[i, 1]
        out[p, 2] = pos[j, 2] - pos[i, 2]
    return out


@njit(**_PAR)
def max_displacement2(pos, ref):
    """Largest squared displacement between two position arrays."""
    n = pos.shape[0]
    d2 = np.zeros(n)
    for a in prange(n):
        x = pos[a, 0] - ref[a, 0]
        y = pos[a, 1] - ref[a, 1]
        z = pos[a, 2] - ref[a, 2]
        d2[a] = x * x + y * y + z * z
    m = 0.0
    for a in range(n):
        if d2[a] > m:
            m = d2[a]
    return m


# ---------------------------------------------------------------------------------- selection
@njit(**_SER)
def _group_by_centre(centers, nloc):
    """Offsets of each centre's run and the order that groups pairs by centre (stable)."""
    n = centers.shape[0]
    counts = np.zeros(nloc + 1, dtype=np.int64)
    ordered = True
    for p in range(n):
        counts[centers[p] + 1] += 1
        if p and centers[p] < centers[p - 1]:
            ordered = False
    for i in range(nloc):
        counts[i + 1] += counts[i]
    order = np.empty(n, dtype=np.int64)
    if ordered:
        for p in range(n):
            order[p] = p
    else:
        fill = counts[:-1].copy()
        for p in range(n):
            c = centers[p]
            order[fill[c]] = p
            fill[c] += 1
    return counts, order


@njit(**_PAR)
def select_pairs(centers, neighbors, vectors, atype_all, nloc, sel, rcut, model_excl, desc_excl):
    """DeePMD-kit's selection: per centre and neighbour type the sel[t] nearest within rcut.

    Returns (centers, neighbors, vectors, slots_used, n_dropped, max_per_type) as
    ``select_neighbors``: pairs sorted by (centre, type, distance) with ties in input order;
    ``model_excl`` pairs become padding, ``desc_excl`` pairs keep their slot but are dropped.
    """
    nt = sel.shape[0]
    n = centers.shape[0]
    rc2 = rcut * rcut
    offs, order = _group_by_centre(centers, nloc)
    r2 = np.empty(n)
    for p in prange(n):
        r2[p] = vectors[p, 0] * vectors[p, 0] + vectors[p, 1] * vectors[p, 1] + vectors[p, 2] * vectors[p, 2]
    picked = np.empty(n, dtype=np.int64)  # per centre, from offs[i]: source pair indices kept
    kept = np.zeros(nloc, dtype=np.int64)
    slots = np.zeros((nloc, nt), dtype=np.int64)
    seen = np.zeros((nloc, nt), dtype=np.int64)
    dropped = np.zeros(nloc, dtype=np.int64)
    for i in prange(nloc):
        a0 = offs[i]
        a1 = offs[i + 1]
        ti = atype_all[i]
        # bucket the centre's pairs inside rcut by neighbour type (input order kept) ...
        cnt = np.zeros(nt + 1, dtype=np.int64)
        for q in range(a0, a1):
            p = order[q]
            if r2[p] < rc2:
                cnt[atype_all[neighbors[p]] + 1] += 1
        for t in range(nt):
            cnt[t + 1] += cnt[t]
        buf = np.empty(cnt[nt], dtype=np.int64)
        fill = cnt[:nt].copy()
        for q in range(a0, a1):
            p = order[q]
            if r2[p] < rc2:
                t = atype_all[neighbors[p]]
                buf[fill[t]] = p
                fill[t] += 1
        nk = 0
        for t in range(nt):
            b0 = cnt[t]
            m = cnt[t + 1] - b0
            seen[i, t] = m
            # ... and sort each bucket by distance: stable insertion sort (buckets are small)
            for u in range(b0 + 1, b0 + m):
                p = buf[u]
                d = r2[p]
                v = u - 1
                while v >= b0 and r2[buf[v]] > d:
                    buf[v + 1] = buf[v]
                    v -= 1
                buf[v + 1] = p
            keep = min(m, sel[t])
            dropped[i] += m - keep
            if model_excl[ti, t]:
                continue
            slots[i, t] = keep
            if desc_excl[ti, t]:
                continue
            for u in range(keep):
                picked[a0 + nk] = buf[b0 + u]
                nk += 1
        kept[i] = nk
    new_off = np.zeros(nloc + 1, dtype=np.int64)
    for i in range(nloc):
        new_off[i + 1] = new_off[i] + kept[i]
    npair = new_off[nloc]
    oc = np.empty(npair, dtype=np.int64)
    on = np.empty(npair, dtype=np.int64)
    ov = np.empty((npair, 3))
    for i in prange(nloc):
        for u in range(kept[i]):
            p = picked[offs[i] + u]
            k = new_off[i] + u
            oc[k] = i
            on[k] = neighbors[p]
            ov[k, 0] = vectors[p, 0]
            ov[k, 1] = vectors[p, 1]
            ov[k, 2] = vectors[p, 2]
    max_per_type = np.zeros(nt, dtype=np.int64)
    n_dropped = 0
    for i in range(nloc):
        n_dropped += dropped[i]
        for t in range(nt):
            if seen[i, t] > max_per_type[t]:
                max_per_type[t] = seen[i, t]
    return oc, on, ov, slots, n_dropped, max_per_type, new_off


# ---------------------------------------------------------------------------------- env matrix
@njit(**_SER)
def _env_pair(v0, v1, v2, rcut_smth, rcut, protection):
    """r, rho, w, dw and the raw row R = w [1/rho, x/rho^2, y/rho^2, z/rho^2] of one pair."""
    r = math.sqrt(v0 * v0 + v1 * v1 + v2 * v2)
    u = (r - rcut_smth) / (rcut - rcut_smth)
    if u < 0.0:
        u = 0.0
    elif u > 1.0:
        u = 1.0
    u2 = u * u
    w = u2 * u * (-6.0 * u2 + 15.0 * u - 10.0) + 1.0
    dw = 0.0
    if r > rcut_smth and r < rcut:
        dw = (-30.0 * u2 * u2 + 60.0 * u2 * u - 30.0 * u2) / (rcut - rcut_smth)
    rho = r + protection
    f = w / (rho * rho)
    return r, rho, w, dw, w / rho, v0 * f, v1 * f, v2 * f


@njit(**_SER)
def _env_chain(g0, g1, g2, g3, v0, v1, v2, r, rho, w, dw):
    """dE/dR (4) -> dE/dx (3): envmat.rows_to_vector_gradient of one pair."""
    rho2 = rho * rho
    radial = g0 * (dw / rho - w / rho2) + (g1 * v0 + g2 * v1 + g3 * v2) * (dw / rho2 - 2.0 * w / (rho2 * rho))
    f = w / rho2
    return (v0 / r * radial + g1 * f, v1 / r * radial + g2 * f, v2 / r * radial + g3 * f)


@njit(**_PAR)
def env_mat(vectors, rcut_smth, rcut, protection):
    """Raw rows R (n, 4) and their derivative dR/dx (n, 4, 3)."""
    n = vectors.shape[0]
    rows = np.empty((n, 4))
    drows = np.empty((n, 4, 3))
    for p in prange(n):
        v0 = vectors[p, 0]
        v1 = vectors[p, 1]
        v2 = vectors[p, 2]
        r, rho, w, dw, a, b, c, d = _env_pair(v0, v1, v2, rcut_smth, rcut, protection)
        rows[p, 0] = a
        rows[p, 1] = b
        rows[p, 2] = c
        rows[p, 3] = d
        for k in range(4):
            g = np.zeros(4)
            g[k] = 1.0
            x, y, z = _env_chain(g[0], g[1], g[2], g[3], v0, v1, v2, r, rho, w, dw)
            drows[p, k, 0] = x
            drows[p, k, 1] = y
            drows[p, k, 2] = z
    return rows, drows


@njit(**_SER)
def _type_switch(rho, w, dw, rcut_smth, tf_switch):
    """se_atten_v2's smoothing of the type term and d/dr (descriptors/se_atten_v2.type_term_switch)."""
    if not tf_switch:
        return w, dw
    uu = 1.0 - rcut_smth * (w / rho)
    v = 1.0 - uu * uu * uu
    if v > 0.0 and v < 1.0:
        return v, 3.0 * uu * uu * rcut_smth * (dw / rho - w / (rho * rho))
    return (0.0 if v <= 0.0 else 1.0), 0.0


# ---------------------------------------------------------------------------------- tables
@njit(cache=True, fastmath=False, inline="always")
def _locate_in(x, lower, upper, xmax, s0, s1, xmin, first_stride, nspline, row0, n_low):
    """Global coefficient row, offset t and region of input x in a table given by its grid (Table.locate).

    Inlined (numba IR) so that kernels which hoist one table's grid out of their pair loops
    (numba_kernels_se_e3) pay no call per input."""
    if x >= lower and x < upper:
        i0 = np.int64((x - lower) / s0)
        idx = n_low + i0
        t = x - (i0 * s0 + lower)
        region = FINE
    elif x >= upper and x < xmax:
        i1 = np.int64((x - upper) / s1)
        idx = n_low + first_stride + i1
        t = x - (i1 * s1 + upper)
        region = COARSE
    elif x >= xmin and x < lower:
        il = np.int64((x - xmin) / s1)
        idx = il
        t = x - (il * s1 + xmin)
        region = COARSE
    else:
        return -1, 0.0, (BELOW if x < xmin else ABOVE)
    if idx > nspline - 1:
        idx = nspline - 1
    return row0 + idx, t, region


@njit(**_SER)
def _locate(x, tabf, tabi, key):
    """:func:`_locate_in` of table ``key`` of the packed metadata (``tabf``/``tabi`` rows)."""
    return _locate_in(x, tabf[key, 0], tabf[key, 1], tabf[key, 2], tabf[key, 3], tabf[key, 4], tabf[key, 5],
                      tabi[key, 0], tabi[key, 1], tabi[key, 2], tabi[key, 3])


@njit(inline="always")
def _powers(t):
    """t^2 .. t^5 of a table offset."""
    t2 = t * t
    t3 = t2 * t
    t4 = t3 * t
    return t2, t3, t4, t4 * t


@njit(inline="always")
def _quintic(cf, m, t, t2, t3, t4, t5):
    """Value of output m of the quintic piece ``cf`` (6, ngp) at offset t (inlined: the caller's
    fastmath flags apply)."""
    return cf[0, m] + cf[1, m] * t + cf[2, m] * t2 + cf[3, m] * t3 + cf[4, m] * t4 + cf[5, m] * t5


@njit(inline="always")
def _quintic_slope(cf, m, t, t2, t3, t4):
    """d/dt of output m of the quintic piece ``cf`` at offset t."""
    return cf[1, m] + 2.0 * cf[2, m] * t + 3.0 * cf[3, m] * t2 + 4.0 * cf[4, m] * t3 + 5.0 * cf[5, m] * t4


@njit(**_PAR)
def embedding_inputs(centers, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut, protection, kidx,
                     tabf, tabi, split, has_tables):
    """Embedding input s_ij = (R_ij[0] - davg)/dstd and its region code per pair.

    Codes: FINE, COARSE (inside the tables), BELOW/ABOVE (outside: exact net needed), plus SPLIT
    (4) added when the interval is split at relu kinks (evaluated by the numpy table code).
    """
    n = centers.shape[0]
    xs = np.empty(n)
    code = np.zeros(n, dtype=np.int8)
    for p in prange(n):
        ti = atype_all[centers[p]]
        key = kidx[ti, atype_all[neighbors[p]]]
        r, rho, w, dw, a, b, c, d = _env_pair(vectors[p, 0], vectors[p, 1], vectors[p, 2], rcut_smth, rcut,
                                              protection)
        x = (a - davg[ti, 0]) / dstd[ti, 0]
        xs[p] = x
        if has_tables and key >= 0:
            row, t, region = _locate(x, tabf, tabi, key)
            if row >= 0 and split[row]:
                region += SPLIT
            code[p] = region
    return xs, code


@njit(**_SER)
def _accumulate(tk, g, h0, h1, h2, h3):
    """T[c, :] += G h_c, one row at a time (one store stream per loop)."""
    n = g.shape[0]
    r = tk[0]
    for m in range(n):
        r[m] += g[m] * h0
    r = tk[1]
    for m in range(n):
        r[m] += g[m] * h1
    r = tk[2]
    for m in range(n):
        r[m] += g[m] * h2
    r = tk[3]
    for m in range(n):
        r[m] += g[m] * h3


@njit(**_SER)
def _accumulate_batch(tk, gb, hb, nb):
    """T[c, :] += sum_u G_u h_uc over the ``nb`` pairs of a batch, in pair order (the same operations
    as ``nb`` calls of :func:`_accumulate`, with a quarter of the loads and stores of T)."""
    if nb < _BATCH:
        for u in range(nb):
            _accumulate(tk, gb[u], hb[u, 0], hb[u, 1], hb[u, 2], hb[u, 3])
        return
    n = gb.shape[1]
    g0 = gb[0]
    g1 = gb[1]
    g2 = gb[2]
    g3 = gb[3]
    for cc in range(4):
        r = tk[cc]
        x0 = hb[0, cc]
        x1 = hb[1, cc]
        x2 = hb[2, cc]
        x3 = hb[3, cc]
        for m in range(n):
            r[m] = r[m] + g0[m] * x0 + g1[m] * x1 + g2[m] * x2 + g3[m] * x3


@njit(inline="always")
def _scalar_pair(p, ti, key, er, vectors, davg, dstd, rcut_smth, rcut, protection, tabf, tabi, nu, prow, pidx, ph):
    """The scalar pass of the se_a table kernels for pair p: env row, normalised h0..h3 and the table row
    (or ``-2 - er`` for an exact value from the side array) into row ``nu`` of prow, pidx and ph[:, :5]
    (t, h0..h3). Returns (stored, r, rho, w, dw); not stored: outside the tables without an exact value."""
    r, rho, w, dw, a, b, c, d = _env_pair(vectors[p, 0], vectors[p, 1], vectors[p, 2], rcut_smth, rcut,
                                          protection)
    h0 = (a - davg[ti, 0]) / dstd[ti, 0]
    t = 0.0
    if er >= 0:
        row = -2 - er
    else:
        row, t, region = _locate(h0, tabf, tabi, key)
        if row < 0:
            return False, r, rho, w, dw
    prow[nu] = row
    pidx[nu] = p
    ph[nu, 0] = t
    ph[nu, 1] = h0
    ph[nu, 2] = (b - davg[ti, 1]) / dstd[ti, 1]
    ph[nu, 3] = (c - davg[ti, 2]) / dstd[ti, 2]
    ph[nu, 4] = (d - davg[ti, 3]) / dstd[ti, 3]
    return True, r, rho, w, dw


@njit(**_PAR)
def tabulate_forward(atoms, offsets, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut, protection,
                     kidx, tabf, tabi, coeffs, ext_row, g_ext, n_pad, padx, inv_n, ng, m2, tterm, term_row,
                     tf_switch, T, desc):
    """Per centre atom: T = (1/N)(sum_j G(s_ij) (x) R^_ij + n_pad G(s_pad) s_pad e_0), D = T T<^T.

    G is never stored: each pair's table interval is located (scalar pass), then the quintic is
    evaluated and added to the (4, ngp) accumulator, ``_BATCH`` pairs at a time (vector pass).
    Pairs with ``ext_row[p] >= 0`` take G from ``g_ext`` instead (exact net outside the tables,
    relu-split intervals, or every pair of an uncompressed model).
    ``T`` (len(atoms), 4, ngp) and the first ng*m2 columns of ``desc`` (float64 or float32) are
    written. A non-empty ``tterm`` scales G by se_atten_v2's type-pair term (module docstring).
    """
    ngp = coeffs.shape[2]
    nt = padx.shape[1]
    have_ext = ext_row.shape[0] > 0
    have_term = tterm.shape[0] > 0
    for k in prange(atoms.shape[0]):
        i = atoms[k]
        ti = atype_all[i]
        tk = T[k]
        tk[:, :] = 0.0
        # scalar pass first (env row, normalisation and table location of every pair: chains of
        # divisions that overlap when not interleaved with the vector loops), then the vector pass
        p0 = offsets[i]
        npr = offsets[i + 1] - p0
        prow = np.empty(npr, dtype=np.int64)  # coefficient row, or -2 - ext_row
        pidx = np.empty(npr, dtype=np.int64)
        ph = np.empty((npr, 6))  # t, h0..h3, type-term switch
        nu = 0
        for p in range(p0, p0 + npr):
            key = kidx[ti, atype_all[neighbors[p]]]
            if key < 0:
                continue
            ok, r, rho, w, dw = _scalar_pair(p, ti, key, ext_row[p] if have_ext else -1, vectors, davg, dstd,
                                             rcut_smth, rcut, protection, tabf, tabi, nu, prow, pidx, ph)
            if not ok:
                continue  # outside the tables without an exact value: never happens via numba_cpu
            if have_term:
                ph[nu, 5] = _type_switch(rho, w, dw, rcut_smth, tf_switch)[0]
            nu += 1
        gb = np.empty((_BATCH, ngp))  # G of the pending pairs, added to T in one pass per batch
        hb = np.empty((_BATCH, 4))
        nb = 0
        for u in range(nu):
            row = prow[u]
            g = gb[nb]
            if row < 0:
                g[:] = g_ext[-2 - row]
            else:
                t = ph[u, 0]
                t2, t3, t4, t5 = _powers(t)
                cf = coeffs[row]
                # G into a small buffer first: loops with one store stream vectorise (no alias checks)
                for m in range(ngp):
                    g[m] = _quintic(cf, m, t, t2, t3, t4, t5)
            if have_term:
                sw = ph[u, 5]
                trow = tterm[term_row[ti, atype_all[neighbors[pidx[u]]]]]
                for m in range(ngp):
                    g[m] *= 1.0 + trow[m] * sw
            hb[nb, 0] = ph[u, 1]
            hb[nb, 1] = ph[u, 2]
            hb[nb, 2] = ph[u, 3]
            hb[nb, 3] = ph[u, 4]
            nb += 1
            if nb == _BATCH:
                _accumulate_batch(tk, gb, hb, nb)
                nb = 0
        _accumulate_batch(tk, gb, hb, nb)
        for tn in range(nt):
            npad = n_pad[i, tn]
            if npad != 0:
                for m in range(ngp):
                    tk[0, m] += npad * padx[ti, tn, m]
        for cc in range(4):
            for m in range(ngp):
                tk[cc, m] *= inv_n
        dk = desc[k]
        for a_ in range(ng):
            x0 = tk[0, a_]
            x1 = tk[1, a_]
            x2 = tk[2, a_]
            x3 = tk[3, a_]
            for b_ in range(m2):
                dk[a_ * m2 + b_] = x0 * tk[0, b_] + x1 * tk[1, b_] + x2 * tk[2, b_] + x3 * tk[3, b_]


@njit(**{**_TAB, "parallel": False})
def _atten_pair_sums(coeffs, row, t, h0, h1, h2, h3, er, g_ext, dg_ext, gt, trow, rho, w, dw, rcut_smth, tf_switch):
    """One se_atten_v2 pair of tabulate_backward (table row and offset t located by the caller, or
    ``er >= 0``: G from the side arrays): sums of G f gT and G' f gT (f = 1 + tt sw), and
    gw = sum_m G_m tt_m (R^ . gT)_m with dsw/dr."""
    ngp = coeffs.shape[2]
    sw, dsw = _type_switch(rho, w, dw, rcut_smth, tf_switch)
    a0 = a1 = a2 = a3 = e0 = e1 = e2 = e3 = gw = 0.0
    t2, t3, t4, t5 = _powers(t)
    for m in range(ngp):
        if er >= 0:
            g = g_ext[er, m]
            dg = dg_ext[er, m]
        else:
            cf = coeffs[row]
            g = _quintic(cf, m, t, t2, t3, t4, t5)
            dg = _quintic_slope(cf, m, t, t2, t3, t4)
        hq = h0 * gt[0, m] + h1 * gt[1, m] + h2 * gt[2, m] + h3 * gt[3, m]
        gw += g * trow[m] * hq
        f = 1.0 + trow[m] * sw
        g *= f
        dg *= f
        a0 += g * gt[0, m]
        a1 += g * gt[1, m]
        a2 += g * gt[2, m]
        a3 += g * gt[3, m]
        e0 += dg * gt[0, m]
        e1 += dg * gt[1, m]
        e2 += dg * gt[2, m]
        e3 += dg * gt[3, m]
    return a0, a1, a2, a3, e0, e1, e2, e3, gw, dsw


@njit(**{**_TAB, "parallel": False})
def _grad_t(tk, gd, ng, m2, inv_n, gt):
    """gT[c, a] = (1/N)(sum_b gD[a, b] T[c, b] (b < m2) + [a < m2] sum_b gD[b, a] T[c, b]).

    The loops over m2 are short: each runs for four rows of gD at once (four sums, or four terms
    added in row order, the operations of four single-row loops), a quarter of the loop set-ups."""
    ng4 = ng - ng % 4
    for cc in range(4):
        tc = tk[cc]
        row = gt[cc]
        for a_ in range(0, ng4, 4):
            o0 = a_ * m2
            o1 = o0 + m2
            o2 = o1 + m2
            o3 = o2 + m2
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for b_ in range(m2):
                x = tc[b_]
                s0 += gd[o0 + b_] * x
                s1 += gd[o1 + b_] * x
                s2 += gd[o2 + b_] * x
                s3 += gd[o3 + b_] * x
            row[a_] = s0
            row[a_ + 1] = s1
            row[a_ + 2] = s2
            row[a_ + 3] = s3
        for a_ in range(ng4, ng):
            s = 0.0
            for b_ in range(m2):
                s += gd[a_ * m2 + b_] * tc[b_]
            row[a_] = s
        for b_ in range(0, ng4, 4):
            o0 = b_ * m2
            o1 = o0 + m2
            o2 = o1 + m2
            o3 = o2 + m2
            x0 = tc[b_]
            x1 = tc[b_ + 1]
            x2 = tc[b_ + 2]
            x3 = tc[b_ + 3]
            for a_ in range(m2):
                row[a_] = row[a_] + gd[o0 + a_] * x0 + gd[o1 + a_] * x1 + gd[o2 + a_] * x2 + gd[o3 + a_] * x3
        for b_ in range(ng4, ng):
            tb = tc[b_]
            for a_ in range(m2):
                row[a_] += gd[b_ * m2 + a_] * tb
        for a_ in range(row.shape[0]):
            row[a_] *= inv_n


@njit(**_TAB)
def tabulate_backward(atoms, offsets, pbase, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut,
                      protection, kidx, tabf, tabi, coeffs, ext_row, g_ext, dg_ext, T, gdesc, inv_n, ng, m2,
                      tterm, term_row, tf_switch, gvec):
    """dE/dD of each centre atom -> dE/dx_ij of each of its pairs (written at pbase[k] + slot).

    dE/dT = (1/N)(gD T< + [gD^T T]_pad); per pair dE/dR^_c = sum_m G_m dE/dT_mc and
    dE/ds = sum_m G'_m (dE/dT R^)_m, with G and G' re-evaluated from the table; then the
    normalisation and the env-matrix chain rule to the pair vector. With a type-pair term
    (se_atten_v2) G and G' are scaled by it and dE/dsw * dsw/dr is added along the bond.
    """
    ngp = coeffs.shape[2]
    have_ext = ext_row.shape[0] > 0
    have_term = tterm.shape[0] > 0
    for k in prange(atoms.shape[0]):
        i = atoms[k]
        ti = atype_all[i]
        tk = T[k]
        gd = gdesc[k]
        gt = np.zeros((4, ngp))
        _grad_t(tk, gd, ng, m2, inv_n, gt)
        # three passes per atom, as in tabulate_forward: scalar (env row, location), vector (the
        # sums over the embedding outputs), scalar (chain rule to the pair vector)
        p0 = offsets[i]
        npr = offsets[i + 1] - p0
        prow = np.empty(npr, dtype=np.int64)  # coefficient row, or -2 - ext_row
        pidx = np.empty(npr, dtype=np.int64)
        ph = np.empty((npr, 9))  # t, h0..h3, r, rho, w, dw
        nu = 0
        for p in range(p0, p0 + npr):
            q = pbase[k] + p - p0
            gvec[q, 0] = 0.0  # pairs without a table value (excluded types) get no force
            gvec[q, 1] = 0.0
            gvec[q, 2] = 0.0
            key = kidx[ti, atype_all[neighbors[p]]]
            if key < 0:
                continue
            ok, r, rho, w, dw = _scalar_pair(p, ti, key, ext_row[p] if have_ext else -1, vectors, davg, dstd,
                                             rcut_smth, rcut, protection, tabf, tabi, nu, prow, pidx, ph)
            if not ok:
                continue  # outside the tables without an exact value: never happens via numba_cpu
            ph[nu, 5] = r
            ph[nu, 6] = rho
            ph[nu, 7] = w
            ph[nu, 8] = dw
            nu += 1
        ps = np.empty((nu, 6))  # dE/dR^ (4), and with a type term dE/dsw and dsw/dr
        for u in range(nu):
            row = prow[u]
            h0 = ph[u, 1]
            h1 = ph[u, 2]
            h2 = ph[u, 3]
            h3 = ph[u, 4]
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            a3 = 0.0
            e0 = 0.0
            e1 = 0.0
            e2 = 0.0
            e3 = 0.0
            er = -2 - row if row < 0 else -1
            gw = 0.0
            dsw = 0.0
            if have_term:
                a0, a1, a2, a3, e0, e1, e2, e3, gw, dsw = _atten_pair_sums(
                    coeffs, row, ph[u, 0], h0, h1, h2, h3, er, g_ext, dg_ext, gt,
                    tterm[term_row[ti, atype_all[neighbors[pidx[u]]]]], ph[u, 6], ph[u, 7], ph[u, 8], rcut_smth,
                    tf_switch)
            elif er >= 0:
                for m in range(ngp):
                    g = g_ext[er, m]
                    dg = dg_ext[er, m]
                    a0 += g * gt[0, m]
                    a1 += g * gt[1, m]
                    a2 += g * gt[2, m]
                    a3 += g * gt[3, m]
                    e0 += dg * gt[0, m]
                    e1 += dg * gt[1, m]
                    e2 += dg * gt[2, m]
                    e3 += dg * gt[3, m]
            else:
                t = ph[u, 0]
                t2, t3, t4, t5 = _powers(t)
                cf = coeffs[row]
                for m in range(ngp):
                    g = _quintic(cf, m, t, t2, t3, t4, t5)
                    dg = _quintic_slope(cf, m, t, t2, t3, t4)
                    a0 += g * gt[0, m]
                    a1 += g * gt[1, m]
                    a2 += g * gt[2, m]
                    a3 += g * gt[3, m]
                    e0 += dg * gt[0, m]
                    e1 += dg * gt[1, m]
                    e2 += dg * gt[2, m]
                    e3 += dg * gt[3, m]
            ps[u, 0] = a0 + (h0 * e0 + h1 * e1 + h2 * e2 + h3 * e3)
            ps[u, 1] = a1
            ps[u, 2] = a2
            ps[u, 3] = a3
            ps[u, 4] = gw
            ps[u, 5] = dsw
        for u in range(nu):
            p = pidx[u]
            q = pbase[k] + p - p0
            v0 = vectors[p, 0]
            v1 = vectors[p, 1]
            v2 = vectors[p, 2]
            r = ph[u, 5]
            x, y, z = _env_chain(ps[u, 0] / dstd[ti, 0], ps[u, 1] / dstd[ti, 1], ps[u, 2] / dstd[ti, 2],
                                 ps[u, 3] / dstd[ti, 3], v0, v1, v2, r, ph[u, 6], ph[u, 7], ph[u, 8])
            if have_term:  # the switch of the type term also moves with the bond length
                f = ps[u, 4] * ps[u, 5] / r
                x += f * v0
                y += f * v1
                z += f * v2
            gvec[q, 0] = x
            gvec[q, 1] = y
            gvec[q, 2] = z


# ---------------------------------------------------------------------------------- se_e2_r
@njit(**_PAR)
def tabulate_forward_r(atoms, offsets, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut, protection,
                       kidx, tabf, tabi, coeffs, ext_row, g_ext, n_pad, padg, scale, ng, desc):
    """se_e2_r per centre atom: D = scale (sum_j G(s_ij) + n_pad G(s_pad)), scale = (1/5)/N.

    Same table location and ``ext_row`` overrides as :func:`tabulate_forward`; ``padg`` holds
    G(s_pad) per (centre type, neighbour type). Writes the first ng columns of ``desc``.
    """
    ngp = coeffs.shape[2]
    nt = padg.shape[1]
    have_ext = ext_row.shape[0] > 0
    for k in prange(atoms.shape[0]):
        i = atoms[k]
        ti = atype_all[i]
        acc = np.zeros(ngp)
        # scalar pass (location of every pair), then the vector pass (as tabulate_forward)
        p0 = offsets[i]
        npr = offsets[i + 1] - p0
        prow = np.empty(npr, dtype=np.int64)  # coefficient row, or -2 - ext_row
        pt = np.empty(npr)
        nu = 0
        for p in range(p0, p0 + npr):
            key = kidx[ti, atype_all[neighbors[p]]]
            if key < 0:
                continue
            r, rho, w, dw, a, b, c, d = _env_pair(vectors[p, 0], vectors[p, 1], vectors[p, 2], rcut_smth,
                                                  rcut, protection)
            h0 = (a - davg[ti, 0]) / dstd[ti, 0]
            er = ext_row[p] if have_ext else -1
            t = 0.0
            if er >= 0:
                row = -2 - er
            else:
                row, t, region = _locate(h0, tabf, tabi, key)
                if row < 0:
                    continue
            prow[nu] = row
            pt[nu] = t
            nu += 1
        for u in range(nu):
            row = prow[u]
            if row < 0:
                ge = g_ext[-2 - row]
                for m in range(ngp):
                    acc[m] += ge[m]
                continue
            t = pt[u]
            t2, t3, t4, t5 = _powers(t)
            cf = coeffs[row]
            for m in range(ngp):
                acc[m] += _quintic(cf, m, t, t2, t3, t4, t5)
        for tn in range(nt):
            npad = n_pad[i, tn]
            if npad != 0:
                for m in range(ngp):
                    acc[m] += npad * padg[ti, tn, m]
        dk = desc[k]
        for m in range(ng):
            dk[m] = acc[m] * scale


@njit(**_TAB)
def tabulate_backward_r(atoms, offsets, pbase, neighbors, vectors, atype_all, davg, dstd, rcut_smth, rcut,
                        protection, kidx, tabf, tabi, coeffs, ext_row, dg_ext, gdesc, scale, ng, gvec):
    """se_e2_r: dE/ds_ij = scale sum_m G'_m(s_ij) dE/dD_m, then the chain rule of the radial entry."""
    have_ext = ext_row.shape[0] > 0
    for k in prange(atoms.shape[0]):
        i = atoms[k]
        ti = atype_all[i]
        gd = gdesc[k]
        # scalar, vector and chain-rule passes (as tabulate_backward)
        p0 = offsets[i]
        npr = offsets[i + 1] - p0
        prow = np.empty(npr, dtype=np.int64)  # coefficient row, or -2 - ext_row
        pidx = np.empty(npr, dtype=np.int64)
        ph = np.empty((npr, 5))  # t, r, rho, w, dw
        nu = 0
        for p in range(p0, p0 + npr):
            q = pbase[k] + p - p0
            gvec[q, 0] = 0.0
            gvec[q, 1] = 0.0
            gvec[q, 2] = 0.0
            key = kidx[ti, atype_all[neighbors[p]]]
            if key < 0:
                continue
            r, rho, w, dw, a, b, c, d = _env_pair(vectors[p, 0], vectors[p, 1], vectors[p, 2], rcut_smth, rcut,
                                                  protection)
            h0 = (a - davg[ti, 0]) / dstd[ti, 0]
            er = ext_row[p] if have_ext else -1
            t = 0.0
            if er >= 0:
                row = -2 - er
            else:
                row, t, region = _locate(h0, tabf, tabi, key)
                if row < 0:
                    continue
            prow[nu] = row
            pidx[nu] = p
            ph[nu, 0] = t
            ph[nu, 1] = r
            ph[nu, 2] = rho
            ph[nu, 3] = w
            ph[nu, 4] = dw
            nu += 1
        pe = np.empty(nu)
        for u in range(nu):
            row = prow[u]
            e = 0.0
            if row < 0:
                er = -2 - row
                for m in range(ng):
                    e += dg_ext[er, m] * gd[m]
            else:
                t = ph[u, 0]
                t2, t3, t4, _ = _powers(t)
                cf = coeffs[row]
                for m in range(ng):
                    e += _quintic_slope(cf, m, t, t2, t3, t4) * gd[m]
            pe[u] = e
        for u in range(nu):
            p = pidx[u]
            q = pbase[k] + p - p0
            v0 = vectors[p, 0]
            v1 = vectors[p, 1]
            v2 = vectors[p, 2]
            x, y, z = _env_chain(pe[u] * scale / dstd[ti, 0], 0.0, 0.0, 0.0, v0, v1, v2, ph[u, 1], ph[u, 2],
                                 ph[u, 3], ph[u, 4])
            gvec[q, 0] = x
            gvec[q, 1] = y
            gvec[q, 2] = z


# ---------------------------------------------------------------------------------- assembly
@njit(**_PAR)
def pair_bases(atoms, offsets):
    """Start of each listed atom's pairs in a chunk-local pair array, and the chunk's pair indices."""
    n = atoms.shape[0]
    base = np.zeros(n + 1, dtype=np.int64)
    for k in range(n):
        base[k + 1] = base[k] + offsets[atoms[k] + 1] - offsets[atoms[k]]
    pidx = np.empty(base[n], dtype=np.int64)
    for k in prange(n):
        i = atoms[k]
        for p in range(offsets[i], offsets[i + 1]):
            pidx[base[k] + p - offsets[i]] = p
    return base, pidx


@njit(**_SER)
def _scatter_neighbors(atoms, offsets, pbase, neighbors, vectors, gvec, forces, atom_virial, want_atomic):
    for k in range(atoms.shape[0]):
        i = atoms[k]
        for p in range(offsets[i], offsets[i + 1]):
            q = pbase[k] + p - offsets[i]
            j = neighbors[p]
            forces[j, 0] -= gvec[q, 0]
            forces[j, 1] -= gvec[q, 1]
            forces[j, 2] -= gvec[q, 2]
            if want_atomic:
                for a in range(3):
                    for b in range(3):
                        atom_virial[j, 3 * a + b] -= gvec[q, a] * vectors[p, b]


@njit(**_PAR)
def assemble_forces_virial(atoms, offsets, pbase, neighbors, vectors, gvec, forces, atom_virial, want_atomic):
    """Add the pairs of ``atoms`` to forces (F_i += g, F_j -= g), return their virial sum (3, 3).

    Centre sums run in parallel (each thread owns its centre atoms), neighbour scatters serially.
    The per-atom virial -g (x) x_ij goes to the neighbour (DeePMD-kit's convention).
    """
    n = atoms.shape[0]
    vir = np.zeros((n, 9))
    for k in prange(n):
        i = atoms[k]
        f0 = 0.0
        f1 = 0.0
        f2 = 0.0
        for p in range(offsets[i], offsets[i + 1]):
            q = pbase[k] + p - offsets[i]
            g0 = gvec[q, 0]
            g1 = gvec[q, 1]
            g2 = gvec[q, 2]
            f0 += g0
            f1 += g1
            f2 += g2
            for b in range(3):
                vb = vectors[p, b]
                vir[k, b] -= g0 * vb
                vir[k, 3 + b] -= g1 * vb
                vir[k, 6 + b] -= g2 * vb
        forces[i, 0] += f0
        forces[i, 1] += f1
        forces[i, 2] += f2
    _scatter_neighbors(atoms, offsets, pbase, neighbors, vectors, gvec, forces, atom_virial, want_atomic)
    out = np.zeros((3, 3))
    for k in range(n):
        for a in range(3):
            for b in range(3):
                out[a, b] += vir[k, 3 * a + b]
    return out
