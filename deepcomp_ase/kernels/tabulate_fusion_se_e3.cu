// Fused tabulate kernels of se_e3 (three-body embedding, descriptors/se_e3.py):
//   D[c] = sum_{t1 <= t2} 1/(sel_t1 sel_t2) sum_{j in t1, k in t2} e_jk G_c^{t1 t2}(e_jk),
//   e_jk = rho_j . rho_k,  rho = em[..][1..3] (the normalised direction part).
// Padding rows have rho = 0 and add exactly nothing, so only real slots are visited. Section t
// of centre type ti is active when pair_table[ti][t] >= 0; e3_table[t1][t2] (symmetric) is the
// table (and exact net) of the section pair.
//
// The table inputs are the e_jk, not em[..][0], so the env_mat kernel runs with
// count_inputs = 0 and the forward kernel counts here: every ordered pair evaluated, inputs in
// a coarse part (se_e3 tables have one below lower too), inputs outside the table (exact net)
// and the worst input, as deepcomp_ase.overflow.OverflowTally.add does. Atoms with an input
// outside the table or in a relu-split interval are flagged for the backward block path.
//
// Forward: one block per centre atom, a thread per embedding output; the location of e_jk is
// block-uniform, so the exact net (block-cooperative) can replace the table in place.
// Backward: dE/de_jk = scale * sum_c gD[c] (G_c + e_jk G'_c) = h_jk, and
//   dE/drho_j = sum_k mult * h_jk rho_k  (mult = 2 when j and k share a section: both orders),
// one warp per slot j with lanes over outputs (no atomics: each warp owns its slot's gradient);
// flagged atoms take a block path, one (j, k) at a time. g_em[..][0] = 0.
#include "common.cuh"

template <typename FPTYPE>
DC_D void dc_e3_rho(const FPTYPE* em, long long q, FPTYPE* r) {
    r[0] = em[4 * q + 1];
    r[1] = em[4 * q + 2];
    r[2] = em[4 * q + 3];
}

template <typename FPTYPE>
__global__ void tabulate_fusion_se_e3_fwd(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                                          const int* net_layers, const int* net_first, const FPTYPE* net_params,
                                          const FPTYPE* em, const int* nnbr, int* atom_flags, const int* atype,
                                          const int* sec, const int* pair_table, const int* row_of_atom,
                                          const int* e3_table, FPTYPE* desc, unsigned long long* counters, int nloc,
                                          int nnei, int ntypes, int ng, int ldd, int maxw) {
    DC_DYNAMIC_SHARED(FPTYPE, smem);
    FPTYPE* scratch = smem;  // [4 * maxw]
    const int i = blockIdx.x;
    if (i >= nloc) return;
    const int ti = atype[i];
    bool flag = false;  // block-uniform
    unsigned long long n_in = 0, n_coarse = 0, n_beyond = 0, worst = 0;  // counted by thread 0 (first pass)
    // a thread per output; wider nets than the block take several block-uniform passes
    for (int c0 = 0; c0 < ng; c0 += blockDim.x) {
        const int c = c0 + threadIdx.x;
        const bool active = c < ng;
        FPTYPE acc = (FPTYPE)0;
        for (int t1 = 0; t1 < ntypes; ++t1) {
            if (pair_table[ti * ntypes + t1] < 0) continue;
            const int n1 = nnbr[i * ntypes + t1];
            const long long q1 = (long long)i * nnei + sec[t1];
            for (int t2 = t1; t2 < ntypes; ++t2) {
                const int tab = e3_table[t1 * ntypes + t2];
                if (pair_table[ti * ntypes + t2] < 0 || tab < 0) continue;
                const int n2 = nnbr[i * ntypes + t2];
                const long long q2 = (long long)i * nnei + sec[t2];
                const FPTYPE* info = table_info + DC_INFO_W * tab;
                const int cmaj = dc_table_layout(info);
                const long long* offs = table_offset + 2 * tab;
                const FPTYPE scale = (FPTYPE)1 / ((FPTYPE)(sec[t1 + 1] - sec[t1]) * (FPTYPE)(sec[t2 + 1] - sec[t2]));
                FPTYPE part = (FPTYPE)0;
                for (int j = 0; j < n1; ++j) {
                    FPTYPE rj[3];
                    dc_e3_rho(em, q1 + j, rj);
                    for (int k = 0; k < n2; ++k) {
                        FPTYPE rk[3];
                        dc_e3_rho(em, q2 + k, rk);
                        const FPTYPE x = rj[0] * rk[0] + rj[1] * rk[1] + rj[2] * rk[2];
                        int idx;
                        FPTYPE tt;
                        const int region = dc_locate(x, info, idx, tt);
                        const bool split = region <= DC_COARSE && offs[1] >= 0 && table[offs[1] + idx] != (FPTYPE)0;
                        FPTYPE v = (FPTYPE)0;
                        if (region <= DC_COARSE && !split) {
                            if (active) v = dc_table_value(table + offs[0], cmaj, idx, ng, c, tt);
                        } else {
                            const FPTYPE *g, *dg;
                            dc_exact_embed_block(net_layers, net_first[2 * tab], net_first[2 * tab + 1], net_params, x,
                                                 scratch, maxw, &g, &dg);
                            if (active) v = g[c];
                            flag = true;
                        }
                        part += x * v;
                        if (c == 0) {
                            ++n_in;
                            if (region != DC_FINE) {
                                if (region == DC_COARSE)
                                    ++n_coarse;
                                else
                                    ++n_beyond;
                                const bool above = x >= info[1];
                                const float excess = (float)(above ? x - info[1] : info[0] - x);
                                const unsigned long long word = ((unsigned long long)__float_as_uint(excess) << 32) |
                                                                ((unsigned long long)tab << 1) | (above ? 1ull : 0ull);
                                if (excess >= 0.0f && word > worst) worst = word;
                            }
                        }
                    }
                }
                acc += part * scale;
            }
        }
        if (active) desc[(long long)row_of_atom[i] * ldd + c] = acc;
    }
    if (threadIdx.x == 0) {
        if (flag) atom_flags[i] |= 1;
        if (n_in) atomicAdd(counters + DC_CNT_INPUTS, n_in);
        if (n_coarse) atomicAdd(counters + DC_CNT_COARSE, n_coarse);
        if (n_beyond) atomicAdd(counters + DC_CNT_BEYOND, n_beyond);
        if (worst) atomicMax(counters + DC_CNT_WORST, worst);
    }
}

template <typename FPTYPE>
__global__ void tabulate_fusion_se_e3_bwd(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                                          const int* net_layers, const int* net_first, const FPTYPE* net_params,
                                          const FPTYPE* em, const int* nnbr, const int* atom_flags, const int* atype,
                                          const int* sec, const int* pair_table, const int* row_of_atom,
                                          const int* e3_table, const FPTYPE* g_desc, FPTYPE* g_em, int nloc, int nnei,
                                          int ntypes, int ng, int ldd, int maxw) {
    DC_DYNAMIC_SHARED(FPTYPE, smem);
    FPTYPE* sgd = smem;                     // [ng]
    FPTYPE* scratch = smem + ng;            // [4 * maxw]
    FPTYPE* red = smem + ng + 4 * maxw;     // [8 * warps]
    const int i = blockIdx.x;
    if (i >= nloc) return;
    const int ti = atype[i];
    for (int c = threadIdx.x; c < ng; c += blockDim.x) sgd[c] = g_desc[(long long)row_of_atom[i] * ldd + c];
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const bool flagged = atom_flags[i] != 0;
    for (int ta = 0; ta < ntypes; ++ta) {
        if (pair_table[ti * ntypes + ta] < 0) continue;
        const int na = nnbr[i * ntypes + ta];
        const long long qa = (long long)i * nnei + sec[ta];
        // fast path: warp per slot j; block path: the whole block on one slot at a time
        for (int j = flagged ? 0 : warp; j < na; j += flagged ? 1 : nwarps) {
            FPTYPE rj[3];
            dc_e3_rho(em, qa + j, rj);
            FPTYPE g0 = (FPTYPE)0, g1 = (FPTYPE)0, g2 = (FPTYPE)0;
            for (int tb = 0; tb < ntypes; ++tb) {
                const int tab = e3_table[ta * ntypes + tb];
                if (pair_table[ti * ntypes + tb] < 0 || tab < 0) continue;
                const int nb = nnbr[i * ntypes + tb];
                const long long qb = (long long)i * nnei + sec[tb];
                const FPTYPE* info = table_info + DC_INFO_W * tab;
                const int cmaj = dc_table_layout(info);
                const long long* offs = table_offset + 2 * tab;
                const FPTYPE scale = (ta == tb ? (FPTYPE)2 : (FPTYPE)1) /
                                     ((FPTYPE)(sec[ta + 1] - sec[ta]) * (FPTYPE)(sec[tb + 1] - sec[tb]));
                for (int k = 0; k < nb; ++k) {
                    FPTYPE rk[3];
                    dc_e3_rho(em, qb + k, rk);
                    const FPTYPE x = rj[0] * rk[0] + rj[1] * rk[1] + rj[2] * rk[2];
                    int idx;
                    FPTYPE tt;
                    FPTYPE h;
                    if (!flagged) {
                        dc_locate(x, info, idx, tt);
                        FPTYPE p = (FPTYPE)0;
                        for (int c = lane; c < ng; c += 32) {
                            FPTYPE v, dv;
                            dc_table_value_d(table + offs[0], cmaj, idx, ng, c, tt, v, dv);
                            p += sgd[c] * (v + x * dv);
                        }
                        h = dc_warp_sum(p);
                    } else {
                        const int region = dc_locate_split(x, info, table, offs, idx, tt);
                        const FPTYPE *gx = 0, *dgx = 0;
                        if (region > DC_COARSE)
                            dc_exact_embed_block(net_layers, net_first[2 * tab], net_first[2 * tab + 1], net_params,
                                                 x, scratch, maxw, &gx, &dgx);
                        FPTYPE p[1] = {(FPTYPE)0};
                        for (int c = threadIdx.x; c < ng; c += blockDim.x) {
                            FPTYPE v, dv;
                            if (region <= DC_COARSE) {
                                dc_table_value_d(table + offs[0], cmaj, idx, ng, c, tt, v, dv);
                            } else {
                                v = gx[c];
                                dv = dgx[c];
                            }
                            p[0] += sgd[c] * (v + x * dv);
                        }
                        dc_block_sum<FPTYPE, 1>(p, red);
                        h = p[0];  // valid in thread 0
                    }
                    h *= scale;
                    g0 += h * rk[0];
                    g1 += h * rk[1];
                    g2 += h * rk[2];
                }
            }
            if ((flagged && threadIdx.x == 0) || (!flagged && lane == 0)) {
                FPTYPE* out = g_em + (qa + j) * 4;
                out[0] = (FPTYPE)0;
                out[1] = g0;
                out[2] = g1;
                out[3] = g2;
            }
        }
    }
}

#ifdef DEEPCOMP_STANDALONE
#define DC_SE_E3_INST(T)                                                                                              \
    template __global__ void tabulate_fusion_se_e3_fwd<T>(const T*, const T*, const long long*, const int*, const int*, \
                                                          const T*, const T*, const int*, int*, const int*,           \
                                                          const int*, const int*, const int*, const int*, T*,         \
                                                          unsigned long long*, int, int, int, int, int, int);         \
    template __global__ void tabulate_fusion_se_e3_bwd<T>(const T*, const T*, const long long*, const int*, const int*, \
                                                          const T*, const T*, const int*, const int*, const int*,     \
                                                          const int*, const int*, const int*, const int*, const T*,   \
                                                          T*, int, int, int, int, int, int);
DC_SE_E3_INST(float)
DC_SE_E3_INST(double)
#endif
