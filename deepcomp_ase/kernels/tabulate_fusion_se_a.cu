// Fused tabulate-contract kernels of se_e2_a: forward (T and the descriptor) and backward
// (gradient to the normalised environment matrix, including the table-input path).
//
// Layout (deepcomp_ase.backends.cupy_gpu): one thread block per centre atom i; em[i][s][4] is the
// normalised environment row of slot s; the slots of neighbour type t are sec[t] .. sec[t+1],
// the first nnbr[i][t] of them real. pair_table[ti*ntypes+t] is the table (and exact net) of the
// type pair, -1 when the pair is excluded. Tables: coefficient rows of table k start at
// table_offset[k], row idx, output c at (idx*ng + c)*6 (DeePMD-kit layout), table_info[k][8].
//
// Forward, thread c = embedding output c, all in registers:
//   T[c][m] = (1/N) ( sum_real G_c(x_s) em[s][m]  +  npad(i,t) * [m == 0] * pad_vec[ti,t][c] )
// where pad_vec = G(x_pad) x_pad is the analytic fold of the padding rows (x_pad = -davg/dstd).
// Then D[c][l] = sum_m T[c][m] T[l][m] (l < m2) is written at row row_of_atom[i] (atoms grouped
// by type, so the per-type fitting nets are plain GEMMs on contiguous rows).
//
// Backward, given g_desc = dE/dD: gT[c][m] = (1/N)(sum_l gD[c][l] T[l][m] + [c<m2] sum_k gD[k][c] T[k][m]);
// then per real slot g_em[s][m] = sum_c G_c gT[c][m] + [m == 0] sum_c G'_c (em[s] . gT[c]).
// Fast path: one warp per slot, lanes over outputs, warp reductions. Atoms flagged by the
// env_mat kernel (an input outside the table) take the block path: one slot at a time, the
// block evaluates the exact embedding net for outside inputs (dc_exact_embed_block).
//
// se_atten_v2 (strip mode, no attention layers) is the same computation with the embedding of
// slot s scaled by (1 + tt[ti,tj][c] * sw(r_s)): the type-pair term tt of the centre type and the
// neighbour's type, smoothed by sw (dc_type_switch). Its backward pass also returns g_r[s], the
// gradient along the bond through sw: sum_c G_c tt_c (em[s] . gT[c]) * dsw/dr. Both descriptors
// share one implementation (template flag ATTEN); the padding fold is identical because sw = 0
// on padding rows. desc rows are ldd wide (se_atten_v2 may append the type embedding after the
// ng*m2 entries; the kernels leave those columns alone).
#include "common.cuh"

// se_atten_v2's type-pair factor; ignored (ATTEN = false) by se_e2_a
template <typename FPTYPE>
struct DcTypeTerm {
    const int* nlist;     // [nloc][nnei] neighbour index of each slot
    const FPTYPE* rij;    // [nloc][nnei][3]
    const FPTYPE* term;   // [rows][ng] strip-net output per type pair
    const int* term_row;  // [ntypes_all * ntypes_all] row of (centre type, neighbour type)
    int ntypes_all, tf_switch;
    FPTYPE rcut_smth, rcut, protection;
};

// Row of the type term for slot q of centre type ti, the smooth factor sw and dsw/dr.
template <typename FPTYPE>
DC_D const FPTYPE* dc_type_term_row(const DcTypeTerm<FPTYPE>& tt, const int* atype, int ti, long long q, int ng,
                                    FPTYPE& sw, FPTYPE& dsw) {
    const int tj = atype[tt.nlist[q]];
    const FPTYPE* v = tt.rij + 3 * q;
    const FPTYPE r = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    dc_type_switch(r, tt.rcut_smth, tt.rcut, tt.protection, tt.tf_switch, sw, dsw);
    return tt.term + (long long)tt.term_row[ti * tt.ntypes_all + tj] * ng;
}

template <typename FPTYPE, bool ATTEN>
__device__ void se_a_forward(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                             const int* net_layers, const int* net_first, const FPTYPE* net_params, const FPTYPE* em,
                             const int* nnbr, int* atom_flags, const int* atype, const int* sec,
                             const int* pair_table, const int* row_of_atom, const FPTYPE* pad_vec, FPTYPE* t_out,
                             FPTYPE* desc,
                             const DcTypeTerm<FPTYPE>& tterm, int nloc, int nnei, int ntypes, int ng, int m2, int ldd,
                             int maxw, FPTYPE inv_nnei) {
    DC_DYNAMIC_SHARED(FPTYPE, smem);
    FPTYPE* sT = smem;                 // [m2][4] rows of T that every output's D row needs
    FPTYPE* scratch = smem + 4 * m2;   // [4 * maxw] exact-net scratch
    const int i = blockIdx.x;
    if (i >= nloc) return;
    const int ti = atype[i];
    bool any_split = false;  // block-uniform
    // a thread per output; wider nets than the block take several block-uniform passes
    for (int c0 = 0; c0 < ng; c0 += blockDim.x) {
        const int c = c0 + threadIdx.x;
        const bool active = c < ng;
        FPTYPE acc0 = (FPTYPE)0, acc1 = (FPTYPE)0, acc2 = (FPTYPE)0, acc3 = (FPTYPE)0;
        for (int t = 0; t < ntypes; ++t) {
            const int tab = pair_table[ti * ntypes + t];
            if (tab < 0) continue;
            const FPTYPE* info = table_info + DC_INFO_W * tab;
            const int cmaj = dc_table_layout(info);
            const long long* offs = table_offset + 2 * tab;
            const long long off = offs[0];
            const int cnt = nnbr[i * ntypes + t];
            const long long q0 = (long long)i * nnei + sec[t];
            const FPTYPE* e = em + q0 * 4;
            for (int s = 0; s < cnt; ++s, e += 4) {
                const FPTYPE x = e[0];
                int idx;
                FPTYPE tt;
                const int region = dc_locate_split(x, info, table, offs, idx, tt);
                any_split |= region == DC_SPLIT;
                FPTYPE v = (FPTYPE)0;
                if (region <= DC_COARSE) {
                    if (active) v = dc_table_value(table + off, cmaj, idx, ng, c, tt);
                } else {  // block-uniform branch: x is the same for every thread
                    const FPTYPE *g, *dg;
                    dc_exact_embed_block(net_layers, net_first[2 * tab], net_first[2 * tab + 1], net_params, x,
                                         scratch, maxw, &g, &dg);
                    if (active) v = g[c];
                }
                if (ATTEN && active) {
                    FPTYPE sw, dsw;
                    const FPTYPE* row = dc_type_term_row(tterm, atype, ti, q0 + s, ng, sw, dsw);
                    v *= (FPTYPE)1 + row[c] * sw;
                }
                acc0 += v * e[0];
                acc1 += v * e[1];
                acc2 += v * e[2];
                acc3 += v * e[3];
            }
            const int npad = (sec[t + 1] - sec[t]) - cnt;
            if (active && npad > 0) acc0 += (FPTYPE)npad * pad_vec[(ti * ntypes + t) * ng + c];
        }
        if (active) {
            FPTYPE* T = t_out + ((long long)i * ng + c) * 4;
            T[0] = acc0 * inv_nnei;
            T[1] = acc1 * inv_nnei;
            T[2] = acc2 * inv_nnei;
            T[3] = acc3 * inv_nnei;
            if (c < m2)
                for (int m = 0; m < 4; ++m) sT[4 * c + m] = T[m];
        }
    }
    if (any_split && threadIdx.x == 0) atom_flags[i] |= 1;  // the backward pass takes the block path
    __syncthreads();
    // each thread reads back the T rows it wrote itself
    for (int c = threadIdx.x; c < ng; c += blockDim.x) {
        const FPTYPE* T = t_out + ((long long)i * ng + c) * 4;
        const FPTYPE t0 = T[0], t1 = T[1], t2 = T[2], t3 = T[3];
        FPTYPE* D = desc + (long long)row_of_atom[i] * ldd + (long long)c * m2;
        for (int l = 0; l < m2; ++l)
            D[l] = t0 * sT[4 * l] + t1 * sT[4 * l + 1] + t2 * sT[4 * l + 2] + t3 * sT[4 * l + 3];
    }
}

// Backward in tiles of `tile` outputs (tile >= ng: one pass): gT of the tile goes to shared
// memory, then every slot's gradient gets the tile's share (written by the first tile, added
// by the next ones). The host picks the largest tile the shared memory holds (kernels/launch.py).
template <typename FPTYPE, bool ATTEN>
__device__ void se_a_backward(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                              const int* net_layers, const int* net_first, const FPTYPE* net_params, const FPTYPE* em,
                              const int* nnbr, const int* atom_flags, const int* atype, const int* sec,
                              const int* pair_table, const int* row_of_atom, const FPTYPE* t_in, const FPTYPE* g_desc,
                              FPTYPE* g_em, FPTYPE* g_r, const DcTypeTerm<FPTYPE>& tterm, int nloc, int nnei,
                              int ntypes, int ng, int m2, int ldd, int maxw, FPTYPE inv_nnei, int tile) {
    DC_DYNAMIC_SHARED(FPTYPE, smem);
    FPTYPE* sT = smem;                                // [m2][4]
    FPTYPE* sG = smem + 4 * m2;                       // [tile][4]  gT of the tile
    FPTYPE* scratch = smem + 4 * m2 + 4 * tile;       // [4 * maxw]
    FPTYPE* red = smem + 4 * m2 + 4 * tile + 4 * maxw;  // [8 * warps]
    const int i = blockIdx.x;
    if (i >= nloc) return;
    const int ti = atype[i];
    const FPTYPE* gD = g_desc + (long long)row_of_atom[i] * ldd;
    const FPTYPE* Ti = t_in + (long long)i * ng * 4;
    for (int c = threadIdx.x; c < m2; c += blockDim.x)
        for (int m = 0; m < 4; ++m) sT[4 * c + m] = Ti[4 * c + m];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const bool flagged = atom_flags[i] != 0;
    for (int c0 = 0; c0 < ng; c0 += tile) {
        const int c1 = dc_imin(ng, c0 + tile);
        const bool first = c0 == 0;
        __syncthreads();  // sT written, or the previous tile's sG no longer read
        for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
            FPTYPE g[4] = {(FPTYPE)0, (FPTYPE)0, (FPTYPE)0, (FPTYPE)0};
            for (int l = 0; l < m2; ++l) {
                const FPTYPE a = gD[c * m2 + l];
                for (int m = 0; m < 4; ++m) g[m] += a * sT[4 * l + m];
            }
            if (c < m2) {
                for (int k = 0; k < ng; ++k) {
                    const FPTYPE a = gD[k * m2 + c];
                    for (int m = 0; m < 4; ++m) g[m] += a * Ti[4 * k + m];
                }
            }
            for (int m = 0; m < 4; ++m) sG[4 * (c - c0) + m] = g[m] * inv_nnei;
        }
        __syncthreads();
        for (int t = 0; t < ntypes; ++t) {
            const int tab = pair_table[ti * ntypes + t];
            if (tab < 0) continue;
            const FPTYPE* info = table_info + DC_INFO_W * tab;
            const int cmaj = dc_table_layout(info);
            const long long* offs = table_offset + 2 * tab;
            const FPTYPE* coef = table + offs[0];
            const int cnt = nnbr[i * ntypes + t];
            const long long s0 = (long long)i * nnei + sec[t];
            if (!flagged) {
                // fast path: warp per slot, lanes over outputs
                for (int s = warp; s < cnt; s += nwarps) {
                    const FPTYPE* e = em + (s0 + s) * 4;
                    int idx;
                    FPTYPE tt;
                    dc_locate(e[0], info, idx, tt);
                    FPTYPE sw = (FPTYPE)0, dsw = (FPTYPE)0;
                    const FPTYPE* row = 0;
                    if (ATTEN) row = dc_type_term_row(tterm, atype, ti, s0 + s, ng, sw, dsw);
                    FPTYPE a0 = (FPTYPE)0, a1 = (FPTYPE)0, a2 = (FPTYPE)0, a3 = (FPTYPE)0, b = (FPTYPE)0,
                           gw = (FPTYPE)0;
                    for (int c = c0 + lane; c < c1; c += 32) {
                        FPTYPE v, dv;
                        dc_table_value_d(coef, cmaj, idx, ng, c, tt, v, dv);
                        const FPTYPE* q = sG + 4 * (c - c0);
                        const FPTYPE eq = e[0] * q[0] + e[1] * q[1] + e[2] * q[2] + e[3] * q[3];
                        if (ATTEN) {
                            gw += v * row[c] * eq;
                            const FPTYPE f = (FPTYPE)1 + row[c] * sw;
                            v *= f;
                            dv *= f;
                        }
                        a0 += v * q[0];
                        a1 += v * q[1];
                        a2 += v * q[2];
                        a3 += v * q[3];
                        b += dv * eq;
                    }
                    a0 = dc_warp_sum(a0);
                    a1 = dc_warp_sum(a1);
                    a2 = dc_warp_sum(a2);
                    a3 = dc_warp_sum(a3);
                    b = dc_warp_sum(b);
                    if (ATTEN) gw = dc_warp_sum(gw);
                    if (lane == 0) {
                        FPTYPE* out = g_em + (s0 + s) * 4;
                        if (first) {
                            out[0] = a0 + b;
                            out[1] = a1;
                            out[2] = a2;
                            out[3] = a3;
                            if (ATTEN) g_r[s0 + s] = gw * dsw;
                        } else {
                            out[0] += a0 + b;
                            out[1] += a1;
                            out[2] += a2;
                            out[3] += a3;
                            if (ATTEN) g_r[s0 + s] += gw * dsw;
                        }
                    }
                }
            } else {
                // block path: one slot at a time, exact net for inputs outside the table
                for (int s = 0; s < cnt; ++s) {
                    const FPTYPE* e = em + (s0 + s) * 4;
                    int idx;
                    FPTYPE tt;
                    const int region = dc_locate_split(e[0], info, table, offs, idx, tt);
                    const FPTYPE *gx = 0, *dgx = 0;
                    if (region > DC_COARSE)
                        dc_exact_embed_block(net_layers, net_first[2 * tab], net_first[2 * tab + 1], net_params, e[0],
                                             scratch, maxw, &gx, &dgx);
                    FPTYPE sw = (FPTYPE)0, dsw = (FPTYPE)0;
                    const FPTYPE* row = 0;
                    if (ATTEN) row = dc_type_term_row(tterm, atype, ti, s0 + s, ng, sw, dsw);
                    FPTYPE acc[6] = {(FPTYPE)0, (FPTYPE)0, (FPTYPE)0, (FPTYPE)0, (FPTYPE)0, (FPTYPE)0};
                    for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
                        FPTYPE v, dv;
                        if (region <= DC_COARSE) {
                            dc_table_value_d(coef, cmaj, idx, ng, c, tt, v, dv);
                        } else {
                            v = gx[c];
                            dv = dgx[c];
                        }
                        const FPTYPE* q = sG + 4 * (c - c0);
                        const FPTYPE eq = e[0] * q[0] + e[1] * q[1] + e[2] * q[2] + e[3] * q[3];
                        if (ATTEN) {
                            acc[5] += v * row[c] * eq;
                            const FPTYPE f = (FPTYPE)1 + row[c] * sw;
                            v *= f;
                            dv *= f;
                        }
                        acc[0] += v * q[0];
                        acc[1] += v * q[1];
                        acc[2] += v * q[2];
                        acc[3] += v * q[3];
                        acc[4] += dv * eq;
                    }
                    dc_block_sum<FPTYPE, 6>(acc, red);
                    if (threadIdx.x == 0) {
                        FPTYPE* out = g_em + (s0 + s) * 4;
                        if (first) {
                            out[0] = acc[0] + acc[4];
                            out[1] = acc[1];
                            out[2] = acc[2];
                            out[3] = acc[3];
                            if (ATTEN) g_r[s0 + s] = acc[5] * dsw;
                        } else {
                            out[0] += acc[0] + acc[4];
                            out[1] += acc[1];
                            out[2] += acc[2];
                            out[3] += acc[3];
                            if (ATTEN) g_r[s0 + s] += acc[5] * dsw;
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------- se_e2_a
template <typename FPTYPE>
__global__ void tabulate_fusion_se_a_fwd(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                                         const int* net_layers, const int* net_first, const FPTYPE* net_params,
                                         const FPTYPE* em, const int* nnbr, int* atom_flags, const int* atype,
                                         const int* sec, const int* pair_table, const int* row_of_atom,
                                         const FPTYPE* pad_vec, FPTYPE* t_out, FPTYPE* desc, int nloc, int nnei,
                                         int ntypes, int ng, int m2, int ldd, int maxw, FPTYPE inv_nnei) {
    const DcTypeTerm<FPTYPE> none = {};
    se_a_forward<FPTYPE, false>(table, table_info, table_offset, net_layers, net_first, net_params, em, nnbr,
                                atom_flags, atype, sec, pair_table, row_of_atom, pad_vec, t_out, desc, none, nloc, nnei,
                                ntypes, ng, m2,
                                ldd, maxw, inv_nnei);
}

template <typename FPTYPE>
__global__ void tabulate_fusion_se_a_bwd(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                                         const int* net_layers, const int* net_first, const FPTYPE* net_params,
                                         const FPTYPE* em, const int* nnbr, const int* atom_flags, const int* atype,
                                         const int* sec, const int* pair_table, const int* row_of_atom,
                                         const FPTYPE* t_in, const FPTYPE* g_desc, FPTYPE* g_em, int nloc, int nnei,
                                         int ntypes, int ng, int m2, int ldd, int maxw, FPTYPE inv_nnei,
                                         int tile) {
    const DcTypeTerm<FPTYPE> none = {};
    se_a_backward<FPTYPE, false>(table, table_info, table_offset, net_layers, net_first, net_params, em, nnbr,
                                 atom_flags, atype, sec, pair_table, row_of_atom, t_in, g_desc, g_em, (FPTYPE*)0, none,
                                 nloc, nnei, ntypes, ng, m2, ldd, maxw, inv_nnei, tile);
}

// ---------------------------------------------------------------------------- se_atten_v2
template <typename FPTYPE>
__global__ void tabulate_fusion_se_atten_fwd(const FPTYPE* table, const FPTYPE* table_info,
                                             const long long* table_offset, const int* net_layers,
                                             const int* net_first, const FPTYPE* net_params, const FPTYPE* em,
                                             const int* nnbr, int* atom_flags, const int* atype, const int* sec,
                                             const int* pair_table, const int* row_of_atom, const FPTYPE* pad_vec,
                                             const int* nlist, const FPTYPE* rij, const FPTYPE* type_term,
                                             const int* term_row, FPTYPE* t_out, FPTYPE* desc, int nloc, int nnei,
                                             int ntypes, int ng, int m2, int ldd, int maxw, FPTYPE inv_nnei,
                                             int ntypes_all, int tf_switch, FPTYPE rcut_smth, FPTYPE rcut,
                                             FPTYPE protection) {
    const DcTypeTerm<FPTYPE> tt = {nlist, rij, type_term, term_row, ntypes_all, tf_switch, rcut_smth, rcut,
                                   protection};
    se_a_forward<FPTYPE, true>(table, table_info, table_offset, net_layers, net_first, net_params, em, nnbr,
                               atom_flags, atype, sec, pair_table, row_of_atom, pad_vec, t_out, desc, tt, nloc, nnei,
                               ntypes, ng, m2, ldd,
                               maxw, inv_nnei);
}

template <typename FPTYPE>
__global__ void tabulate_fusion_se_atten_bwd(const FPTYPE* table, const FPTYPE* table_info,
                                             const long long* table_offset, const int* net_layers,
                                             const int* net_first, const FPTYPE* net_params, const FPTYPE* em,
                                             const int* nnbr, const int* atom_flags, const int* atype, const int* sec,
                                             const int* pair_table, const int* row_of_atom, const FPTYPE* t_in,
                                             const FPTYPE* g_desc, const int* nlist, const FPTYPE* rij,
                                             const FPTYPE* type_term, const int* term_row, FPTYPE* g_em, FPTYPE* g_r,
                                             int nloc, int nnei, int ntypes, int ng, int m2, int ldd, int maxw,
                                             FPTYPE inv_nnei, int ntypes_all, int tf_switch, FPTYPE rcut_smth,
                                             FPTYPE rcut, FPTYPE protection, int tile) {
    const DcTypeTerm<FPTYPE> tt = {nlist, rij, type_term, term_row, ntypes_all, tf_switch, rcut_smth, rcut,
                                   protection};
    se_a_backward<FPTYPE, true>(table, table_info, table_offset, net_layers, net_first, net_params, em, nnbr,
                                atom_flags, atype, sec, pair_table, row_of_atom, t_in, g_desc, g_em, g_r, tt, nloc,
                                nnei, ntypes, ng, m2, ldd, maxw, inv_nnei, tile);
}

#ifdef DEEPCOMP_STANDALONE
#define DC_INST(T)                                                                                                   \
    template __global__ void tabulate_fusion_se_a_fwd<T>(const T*, const T*, const long long*, const int*, const int*, \
                                                         const T*, const T*, const int*, int*, const int*,           \
                                                         const int*, const int*, const int*, const T*, T*, T*, int,   \
                                                         int, int, int, int, int, int, T);                            \
    template __global__ void tabulate_fusion_se_a_bwd<T>(const T*, const T*, const long long*, const int*, const int*, \
                                                         const T*, const T*, const int*, const int*, const int*,     \
                                                         const int*, const int*, const int*, const T*, const T*, T*,  \
                                                         int, int, int, int, int, int, int, T, int);                  \
    template __global__ void tabulate_fusion_se_atten_fwd<T>(                                                        \
        const T*, const T*, const long long*, const int*, const int*, const T*, const T*, const int*, int*,           \
        const int*, const int*, const int*, const int*, const T*, const int*, const T*, const T*, const int*, T*, T*, \
        int, int, int, int, int, int, int, T, int, int, T, T, T);                                                     \
    template __global__ void tabulate_fusion_se_atten_bwd<T>(                                                        \
        const T*, const T*, const long long*, const int*, const int*, const T*, const T*, const int*, const int*,     \
        const int*, const int*, const int*, const int*, const T*, const T*, const int*, const T*, const T*,           \
        const int*, T*, T*, int, int, int, int, int, int, int, T, int, int, T, T, T, int);
DC_INST(float)
DC_INST(double)
#endif
