// Forces and virials from the gradient with respect to the normalised environment rows.
//
// One warp per centre atom i (grid-stride over centres), lanes over its real slots. For each pair (i, j = nlist[i][s]):
//   g_vec = d E / d x_ij  from  g_em[s] / dstd[ti]  (chain rule of envmat.rows_to_vector_gradient),
//   F_i += g_vec,  F_j -= g_vec,  W += -g_vec (x) x_ij  (per-atom virial of the pair goes to j).
// Accumulation is in double for both precisions. The scatter onto neighbours uses atomicAdd on
// double (native since sm_60): the force sums are therefore not bit-reproducible from run to run
// (differences at the 1e-16 relative level). The centre terms are reduced inside the warp (one
// atomic per atom) and the total virial is a deterministic sum of virial_rows[nloc][9] (one row
// per centre, written without atomics). ncomp = 4 (se_e2_a, se_e2_r padded, se_atten_v2) or 1.
// g_r (optional, se_atten_v2): an extra gradient along the bond per slot, g_vec += g_r x_ij / r.
#include "common.cuh"

template <typename FPTYPE>
__global__ void prod_force_virial(const int* nlist, const FPTYPE* rij, const FPTYPE* g_em, const FPTYPE* g_r,
                                  const int* nnbr,
                                  const int* atype, const int* sec, const int* pair_table, const FPTYPE* dstd,
                                  double* force, double* virial_rows, double* atom_virial, int nloc, int nnei,
                                  int ntypes, int ncomp, FPTYPE rcut_smth, FPTYPE rcut, FPTYPE protection) {
    const int lane = threadIdx.x & 31;
    const long long warps = blockDim.x >> 5;
    // grid-stride over centres: the grid is capped (kernels/launch.py), any nloc is covered
    for (long long i = blockIdx.x * warps + (threadIdx.x >> 5); i < nloc; i += (long long)gridDim.x * warps) {
        const int ti = atype[i];
        double fi[3] = {0.0, 0.0, 0.0};
        double vir[9] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        for (int t = 0; t < ntypes; ++t) {
            if (pair_table[ti * ntypes + t] < 0) continue;
            const int cnt = nnbr[i * ntypes + t];
            for (int s = lane; s < cnt; s += 32) {
                const long long q = i * nnei + sec[t] + s;
                const int j = nlist[q];
                if (j < 0) continue;
                const FPTYPE* v = rij + 3 * q;
                FPTYPE g[4];
#pragma unroll
                for (int m = 0; m < 4; ++m)
                    g[m] = m < ncomp ? g_em[q * ncomp + m] / dstd[ti * ncomp + m] : (FPTYPE)0;
                FPTYPE gv[3];
                dc_rows_to_vec(v, g, ncomp, rcut_smth, rcut, protection, gv);
                if (g_r) {
                    const FPTYPE f = g_r[q] / sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
                    for (int a = 0; a < 3; ++a) gv[a] += f * v[a];
                }
                for (int a = 0; a < 3; ++a) {
                    fi[a] += (double)gv[a];
                    atomicAdd(force + 3LL * j + a, -(double)gv[a]);
                }
                for (int a = 0; a < 3; ++a)
                    for (int b = 0; b < 3; ++b) {
                        const double pv = -(double)gv[a] * (double)v[b];
                        vir[3 * a + b] += pv;
                        if (atom_virial) atomicAdd(atom_virial + 9LL * j + 3 * a + b, pv);
                    }
            }
        }
        for (int a = 0; a < 3; ++a) fi[a] = dc_warp_sum(fi[a]);
        for (int k = 0; k < 9; ++k) vir[k] = dc_warp_sum(vir[k]);
        if (lane == 0) {
            for (int a = 0; a < 3; ++a) atomicAdd(force + 3 * i + a, fi[a]);
            for (int k = 0; k < 9; ++k) virial_rows[9 * i + k] = vir[k];
        }
    }
}

#ifdef DEEPCOMP_STANDALONE
template __global__ void prod_force_virial<float>(const int*, const float*, const float*, const float*, const int*,
                                                  const int*,
                                                  const int*, const int*, const float*, double*, double*, double*,
                                                  int, int, int, int, float, float, float);
template __global__ void prod_force_virial<double>(const int*, const double*, const double*, const double*,
                                                   const int*, const int*,
                                                   const int*, const int*, const double*, double*, double*, double*,
                                                   int, int, int, int, double, double, double);
#endif
