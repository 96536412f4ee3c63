// Environment matrix of the padded neighbour list, normalised, plus the table-overflow counters.
//
// One thread per neighbour slot. em[i][s][0..3] = (R_s - davg[ti]) / dstd[ti] with DeePMD-kit's
// R = w(r) [1/rho, x/rho^2, y/rho^2, z/rho^2], rho = r + protection (deepcomp_ase.envmat).
// Padding slots and slots of excluded type pairs get the padding row (R = 0); the tabulate
// kernels never read them (they fold the padding analytically and skip excluded blocks).
//
// Every real, non-excluded slot is an embedding input x = em[..][0]: it is counted, located in
// its table, and inputs in the coarse table or outside [lower, xmax) are counted too. Outside
// inputs flag their centre atom (atom_flags |= 1): the tabulate kernels evaluate those atoms on
// the exact-net path. The worst input (furthest beyond the fine table) is kept as one packed
// atomicMax word; nothing here synchronises with the host.
//
// se_e2_r (davg/dstd padded with 0/1) and se_atten_v2 use the same rows. se_e3 forms its table
// inputs e_jk = rho_j . rho_k from em[..][1..3] inside its own kernel, which also counts them:
// it runs this kernel with count_inputs = 0.
#include "common.cuh"

template <typename FPTYPE>
__global__ void env_mat_se_a(const int* nlist, const FPTYPE* rij, const int* atype, const int* sec,
                             const int* pair_table, const FPTYPE* davg, const FPTYPE* dstd,
                             const FPTYPE* table_info, FPTYPE* em, int* atom_flags, unsigned long long* counters,
                             int nloc, int nnei, int ntypes, FPTYPE rcut_smth, FPTYPE rcut, FPTYPE protection,
                             int count_inputs) {
    unsigned long long n_in = 0, n_coarse = 0, n_beyond = 0;
    const long long total = (long long)nloc * nnei;
    for (long long s = blockIdx.x * (long long)blockDim.x + threadIdx.x; s < total;
         s += (long long)gridDim.x * blockDim.x) {
        const int i = (int)(s / nnei), slot = (int)(s % nnei);
        const int ti = atype[i];
        const int t = dc_slot_type(sec, ntypes, slot);
        const int tab = pair_table[ti * ntypes + t];
        const int j = nlist[s];
        FPTYPE R[4] = {(FPTYPE)0, (FPTYPE)0, (FPTYPE)0, (FPTYPE)0};
        const bool real = (j >= 0 && tab >= 0);
        if (real) {
            const FPTYPE* v = rij + 3 * s;
            const FPTYPE r = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
            FPTYPE w, dw;
            dc_switch(r, rcut_smth, rcut, w, dw);
            const FPTYPE rho = r + protection;
            R[0] = w / rho;
            const FPTYPE sc = w / (rho * rho);
            R[1] = v[0] * sc;
            R[2] = v[1] * sc;
            R[3] = v[2] * sc;
        }
        FPTYPE* out = em + 4 * s;
        for (int m = 0; m < 4; ++m) out[m] = (R[m] - davg[4 * ti + m]) / dstd[4 * ti + m];
        if (real && count_inputs) {
            ++n_in;
            const FPTYPE x = out[0];
            const FPTYPE* info = table_info + DC_INFO_W * tab;
            int idx;
            FPTYPE tt;
            const int region = dc_locate(x, info, idx, tt);
            if (region != DC_FINE) {
                if (region == DC_COARSE) {
                    ++n_coarse;
                } else {
                    ++n_beyond;
                    atomicOr(atom_flags + i, 1);
                }
                const bool above = x >= info[1];
                const float excess = (float)(above ? x - info[1] : info[0] - x);
                const unsigned long long word = ((unsigned long long)__float_as_uint(excess) << 32) |
                                                ((unsigned long long)tab << 1) | (above ? 1ull : 0ull);
                atomicMax(counters + DC_CNT_WORST, word);
            }
        }
    }
    n_in = dc_warp_sum(n_in);
    n_coarse = dc_warp_sum(n_coarse);
    n_beyond = dc_warp_sum(n_beyond);
    if ((threadIdx.x & 31) == 0) {
        if (n_in) atomicAdd(counters + DC_CNT_INPUTS, n_in);
        if (n_coarse) atomicAdd(counters + DC_CNT_COARSE, n_coarse);
        if (n_beyond) atomicAdd(counters + DC_CNT_BEYOND, n_beyond);
    }
}

#ifdef DEEPCOMP_STANDALONE
template __global__ void env_mat_se_a<float>(const int*, const float*, const int*, const int*, const int*,
                                             const float*, const float*, const float*, float*, int*,
                                             unsigned long long*, int, int, int, float, float, float, int);
template __global__ void env_mat_se_a<double>(const int*, const double*, const int*, const int*, const int*,
                                              const double*, const double*, const double*, double*, int*,
                                              unsigned long long*, int, int, int, double, double, double, int);
#endif
