// Fused tabulate kernels of se_e2_r: the descriptor is the scaled sum of the embeddings,
//   D[c] = scale * ( sum_real G_c(x_s)  +  npad(i,t) * pad_vec[ti,t][c] ),   scale = (1/5) / N,
// (descriptors/se_e2_r.py; DeePMD-kit divides the se_e2_r descriptor by 5), written at row
// row_of_atom[i] of desc (ldd wide). The backward pass gives the gradient to em[s][0] only:
//   g_em[s][0] = scale * sum_c G'_c(x_s) gD[c],   g_em[s][1..3] = 0,
// so prod_force_virial can take the 4-component layout of the other descriptors (the env_mat
// kernel runs with davg/dstd padded by 0/1 in the unused components).
//
// Same layout, table location, exact-net path for inputs outside the table and fast/block paths
// as tabulate_fusion_se_a.cu: one block per centre atom, a thread per embedding output in the
// forward pass, a warp per slot in the backward pass (the block path for flagged atoms).
#include "common.cuh"

template <typename FPTYPE>
__global__ void tabulate_fusion_se_r_fwd(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                                         const int* net_layers, const int* net_first, const FPTYPE* net_params,
                                         const FPTYPE* em, const int* nnbr, int* atom_flags, const int* atype,
                                         const int* sec, const int* pair_table, const int* row_of_atom,
                                         const FPTYPE* pad_vec, FPTYPE* desc, int nloc, int nnei, int ntypes, int ng,
                                         int ldd, int maxw, FPTYPE scale) {
    DC_DYNAMIC_SHARED(FPTYPE, smem);
    FPTYPE* scratch = smem;  // [4 * maxw] exact-net scratch
    const int i = blockIdx.x;
    if (i >= nloc) return;
    const int ti = atype[i];
    bool any_split = false;  // block-uniform
    // a thread per output; wider nets than the block take several block-uniform passes
    for (int c0 = 0; c0 < ng; c0 += blockDim.x) {
        const int c = c0 + threadIdx.x;
        const bool active = c < ng;
        FPTYPE acc = (FPTYPE)0;
        for (int t = 0; t < ntypes; ++t) {
            const int tab = pair_table[ti * ntypes + t];
            if (tab < 0) continue;
            const FPTYPE* info = table_info + DC_INFO_W * tab;
            const int cmaj = dc_table_layout(info);
            const long long* offs = table_offset + 2 * tab;
            const long long off = offs[0];
            const int cnt = nnbr[i * ntypes + t];
            const FPTYPE* e = em + ((long long)i * nnei + sec[t]) * 4;
            for (int s = 0; s < cnt; ++s, e += 4) {
                const FPTYPE x = e[0];
                int idx;
                FPTYPE tt;
                const int region = dc_locate_split(x, info, table, offs, idx, tt);
                any_split |= region == DC_SPLIT;
                if (region <= DC_COARSE) {
                    if (active) acc += dc_table_value(table + off, cmaj, idx, ng, c, tt);
                } else {  // block-uniform branch
                    const FPTYPE *g, *dg;
                    dc_exact_embed_block(net_layers, net_first[2 * tab], net_first[2 * tab + 1], net_params, x, scratch,
                                         maxw, &g, &dg);
                    if (active) acc += g[c];
                }
            }
            const int npad = (sec[t + 1] - sec[t]) - cnt;
            if (active && npad > 0) acc += (FPTYPE)npad * pad_vec[(ti * ntypes + t) * ng + c];
        }
        if (active) desc[(long long)row_of_atom[i] * ldd + c] = acc * scale;
    }
    if (any_split && threadIdx.x == 0) atom_flags[i] |= 1;  // the backward pass takes the block path
}

template <typename FPTYPE>
__global__ void tabulate_fusion_se_r_bwd(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                                         const int* net_layers, const int* net_first, const FPTYPE* net_params,
                                         const FPTYPE* em, const int* nnbr, const int* atom_flags, const int* atype,
                                         const int* sec, const int* pair_table, const int* row_of_atom,
                                         const FPTYPE* g_desc, FPTYPE* g_em, int nloc, int nnei, int ntypes, int ng,
                                         int ldd, int maxw, FPTYPE scale) {
    DC_DYNAMIC_SHARED(FPTYPE, smem);
    FPTYPE* scratch = smem;            // [4 * maxw]
    FPTYPE* red = smem + 4 * maxw;     // [8 * warps]
    const int i = blockIdx.x;
    if (i >= nloc) return;
    const int ti = atype[i];
    const FPTYPE* gD = g_desc + (long long)row_of_atom[i] * ldd;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const bool flagged = atom_flags[i] != 0;
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
            for (int s = warp; s < cnt; s += nwarps) {
                int idx;
                FPTYPE tt;
                dc_locate(em[(s0 + s) * 4], info, idx, tt);
                FPTYPE b = (FPTYPE)0;
                for (int c = lane; c < ng; c += 32) {
                    FPTYPE v, dv;
                    dc_table_value_d(coef, cmaj, idx, ng, c, tt, v, dv);
                    b += dv * gD[c];
                }
                b = dc_warp_sum(b);
                if (lane == 0) {
                    FPTYPE* out = g_em + (s0 + s) * 4;
                    out[0] = b * scale;
                    out[1] = out[2] = out[3] = (FPTYPE)0;
                }
            }
        } else {
            for (int s = 0; s < cnt; ++s) {
                const FPTYPE x = em[(s0 + s) * 4];
                int idx;
                FPTYPE tt;
                const int region = dc_locate_split(x, info, table, offs, idx, tt);
                const FPTYPE *gx = 0, *dgx = 0;
                if (region > DC_COARSE)
                    dc_exact_embed_block(net_layers, net_first[2 * tab], net_first[2 * tab + 1], net_params, x,
                                         scratch, maxw, &gx, &dgx);
                FPTYPE acc[1] = {(FPTYPE)0};
                for (int c = threadIdx.x; c < ng; c += blockDim.x) {
                    FPTYPE v, dv;
                    if (region <= DC_COARSE) {
                        dc_table_value_d(coef, cmaj, idx, ng, c, tt, v, dv);
                    } else {
                        dv = dgx[c];
                    }
                    acc[0] += dv * gD[c];
                }
                dc_block_sum<FPTYPE, 1>(acc, red);
                if (threadIdx.x == 0) {
                    FPTYPE* out = g_em + (s0 + s) * 4;
                    out[0] = acc[0] * scale;
                    out[1] = out[2] = out[3] = (FPTYPE)0;
                }
            }
        }
    }
}

#ifdef DEEPCOMP_STANDALONE
#define DC_SE_R_INST(T)                                                                                              \
    template __global__ void tabulate_fusion_se_r_fwd<T>(const T*, const T*, const long long*, const int*, const int*, \
                                                         const T*, const T*, const int*, int*, const int*,           \
                                                         const int*, const int*, const int*, const T*, T*, int, int,  \
                                                         int, int, int, int, T);                                      \
    template __global__ void tabulate_fusion_se_r_bwd<T>(const T*, const T*, const long long*, const int*, const int*, \
                                                         const T*, const T*, const int*, const int*, const int*,     \
                                                         const int*, const int*, const int*, const T*, T*, int, int,  \
                                                         int, int, int, int, T);
DC_SE_R_INST(float)
DC_SE_R_INST(double)
#endif
