// Cell-list neighbour search on the device, straight into DeePMD-kit's padded layout.
//
// frame[12]: three frame vectors (rows: a, b, c) then the origin; inv_frame[9]: inverse of the
// 3x3 frame (fractional s = (r - origin) @ inv_frame). grid_info[8]: nb0, nb1, nb2 (bins per
// direction), m0, m1, m2 (bins searched on each side), pbc bit mask, unused. The host
// (backends/cupy_gpu.py: cell_grid) chooses them so that every pair closer than rcut is found:
// bins are at least rcut/m thick perpendicular to the other two frame vectors. In periodic
// directions a bin index outside [0, nb) wraps and adds a lattice shift, so small cells get all
// the periodic images ASE's primitive_neighbor_list finds; non-periodic directions are clipped.
//
// nlist[nloc][nnei] is split into per-type sections sec[t] .. sec[t+1] (width sel[t]); each
// section holds the sel[t] nearest neighbours of that type sorted by distance (insertion sort,
// ties keep visiting order), -1 after the last. Pairs of model-level excluded type pairs are
// dropped (they become padding, as in neighbors.select_neighbors).
//
// Two atoms at (almost) one place: the first pair found closer than sqrt(min_r2) (not excluded)
// is recorded in counters[DC_CNT_CLOSE_PAIR] (atomicCAS from 0: (i + 1) << 32 | (j + 1)) and its
// squared distance in counters[DC_CNT_CLOSE_R2]; the host reads them with the overflow counters,
// so the step needs no read-back of its own (backends/cupy_gpu.py, Backend.check_close_pairs).
//
// nsec == 1 with several types is se_atten_v2's "mixed" list: one section holding the sel
// nearest neighbours of any type. Truncation comes first there too: excluded pairs take part in
// the selection, then are removed and the section compacted (they become padding).
#include "common.cuh"

template <typename FPTYPE>
__global__ void cell_bin(const double* pos, const double* frame, const double* inv_frame, const int* grid_info,
                         double* pos_wrapped, int* bin_of_atom, int n) {
    const int a = blockIdx.x * blockDim.x + threadIdx.x;
    if (a >= n) return;
    const int pbc = grid_info[6];
    double r[3], s[3];
    for (int d = 0; d < 3; ++d) r[d] = pos[3 * a + d];
    for (int d = 0; d < 3; ++d)
        s[d] = (r[0] - frame[9]) * inv_frame[d] + (r[1] - frame[10]) * inv_frame[3 + d] +
               (r[2] - frame[11]) * inv_frame[6 + d];
    int c[3];
    for (int d = 0; d < 3; ++d) {
        const int nb = grid_info[d];
        if ((pbc >> d) & 1) {
            const double k = floor(s[d]);
            s[d] -= k;
            for (int e = 0; e < 3; ++e) r[e] -= k * frame[3 * d + e];
        }
        int cd = (int)floor(s[d] * nb);
        c[d] = dc_imin(dc_imax(cd, 0), nb - 1);
    }
    for (int d = 0; d < 3; ++d) pos_wrapped[3 * a + d] = r[d];
    bin_of_atom[a] = (c[0] * grid_info[1] + c[1]) * grid_info[2] + c[2];
}

template <typename FPTYPE>
__global__ void build_nlist(const double* pos_wrapped, const double* frame, const int* grid_info,
                            const int* bin_of_atom, const int* bin_start, const int* bin_atoms, const int* atype,
                            const int* sec, const int* model_exclude, int* nlist, FPTYPE* rij, double* key,
                            int* nnbr, unsigned long long* counters, int n, int nloc, int nnei, int ntypes,
                            int nsec, int nbins, double rcut2, double min_r2) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nloc) return;
    const int nb0 = grid_info[0], nb1 = grid_info[1], nb2 = grid_info[2], pbc = grid_info[6];
    int* row = nlist + (long long)i * nnei;
    double* keys = key + (long long)i * nnei;
    FPTYPE* vec = rij + 3LL * i * nnei;
    const bool mixed = nsec != ntypes;
    int* cnt = nnbr + i * nsec;
    for (int t = 0; t < nsec; ++t) cnt[t] = 0;
    for (int s = 0; s < nnei; ++s) {
        row[s] = -1;
        keys[s] = 0.0;
        vec[3 * s] = vec[3 * s + 1] = vec[3 * s + 2] = (FPTYPE)0;
    }
    const int ti = atype[i];
    const int b = bin_of_atom[i];
    const int c0 = b / (nb1 * nb2), c1 = (b / nb2) % nb1, c2 = b % nb2;
    const double xi = pos_wrapped[3 * i], yi = pos_wrapped[3 * i + 1], zi = pos_wrapped[3 * i + 2];
    unsigned long long dropped = 0;
    for (int o0 = -grid_info[3]; o0 <= grid_info[3]; ++o0) {
        int w0 = c0 + o0, s0 = 0;
        if (pbc & 1) {
            s0 = (w0 >= 0) ? w0 / nb0 : -((-w0 + nb0 - 1) / nb0);
            w0 -= s0 * nb0;
        } else if (w0 < 0 || w0 >= nb0) {
            continue;
        }
        for (int o1 = -grid_info[4]; o1 <= grid_info[4]; ++o1) {
            int w1 = c1 + o1, s1 = 0;
            if (pbc & 2) {
                s1 = (w1 >= 0) ? w1 / nb1 : -((-w1 + nb1 - 1) / nb1);
                w1 -= s1 * nb1;
            } else if (w1 < 0 || w1 >= nb1) {
                continue;
            }
            for (int o2 = -grid_info[5]; o2 <= grid_info[5]; ++o2) {
                int w2 = c2 + o2, s2 = 0;
                if (pbc & 4) {
                    s2 = (w2 >= 0) ? w2 / nb2 : -((-w2 + nb2 - 1) / nb2);
                    w2 -= s2 * nb2;
                } else if (w2 < 0 || w2 >= nb2) {
                    continue;
                }
                const double sx = s0 * frame[0] + s1 * frame[3] + s2 * frame[6];
                const double sy = s0 * frame[1] + s1 * frame[4] + s2 * frame[7];
                const double sz = s0 * frame[2] + s1 * frame[5] + s2 * frame[8];
                const int bin = (w0 * nb1 + w1) * nb2 + w2;
                const bool zero_shift = (s0 == 0 && s1 == 0 && s2 == 0);
                for (int p = bin_start[bin]; p < bin_start[bin + 1]; ++p) {
                    const int j = bin_atoms[p];
                    if (j == i && zero_shift) continue;
                    const double dx = pos_wrapped[3 * j] + sx - xi;
                    const double dy = pos_wrapped[3 * j + 1] + sy - yi;
                    const double dz = pos_wrapped[3 * j + 2] + sz - zi;
                    const double r2 = dx * dx + dy * dy + dz * dz;
                    if (!(r2 < rcut2)) continue;
                    if (r2 < min_r2 && !model_exclude[ti * ntypes + atype[j]]) {
                        const unsigned long long word =
                            ((unsigned long long)(i + 1) << 32) | (unsigned long long)(j + 1);
                        if (atomicCAS(counters + DC_CNT_CLOSE_PAIR, 0ull, word) == 0ull)
                            counters[DC_CNT_CLOSE_R2] = (unsigned long long)__double_as_longlong(r2);
                    }
                    const int tj = mixed ? 0 : atype[j];
                    const int base = sec[tj], cap = sec[tj + 1] - sec[tj];
                    const int have = cnt[tj];
                    if (!mixed && model_exclude[ti * ntypes + tj]) {
                        cnt[tj] = have + 1;  // only counted: sel truncation happens before the exclusion
                        continue;
                    }
                    int p_ins;
                    if (have >= cap) {
                        ++dropped;
                        if (cap == 0 || !(r2 < keys[base + cap - 1])) continue;
                        p_ins = cap - 1;
                    } else {
                        p_ins = have;
                        cnt[tj] = have + 1;
                    }
                    while (p_ins > 0 && keys[base + p_ins - 1] > r2) {
                        const int q = base + p_ins;
                        keys[q] = keys[q - 1];
                        row[q] = row[q - 1];
                        vec[3 * q] = vec[3 * q - 3];
                        vec[3 * q + 1] = vec[3 * q - 2];
                        vec[3 * q + 2] = vec[3 * q - 1];
                        --p_ins;
                    }
                    const int q = base + p_ins;
                    keys[q] = r2;
                    row[q] = j;
                    vec[3 * q] = (FPTYPE)dx;
                    vec[3 * q + 1] = (FPTYPE)dy;
                    vec[3 * q + 2] = (FPTYPE)dz;
                }
            }
        }
    }
    if (mixed) {  // drop the excluded pairs of the selection, keeping distance order
        int k = 0;
        for (int s = 0; s < cnt[0]; ++s) {
            if (model_exclude[ti * ntypes + atype[row[s]]]) continue;
            if (k != s) {
                keys[k] = keys[s];
                row[k] = row[s];
                vec[3 * k] = vec[3 * s];
                vec[3 * k + 1] = vec[3 * s + 1];
                vec[3 * k + 2] = vec[3 * s + 2];
            }
            ++k;
        }
        for (int s = k; s < cnt[0]; ++s) {
            row[s] = -1;
            keys[s] = 0.0;
            vec[3 * s] = vec[3 * s + 1] = vec[3 * s + 2] = (FPTYPE)0;
        }
        cnt[0] = k;
    }
    for (int t = 0; t < ntypes && !mixed; ++t) {
        if (model_exclude[ti * ntypes + t]) {
            const int cap = sec[t + 1] - sec[t];
            if (cnt[t] > cap) dropped += (unsigned long long)(cnt[t] - cap);
            cnt[t] = 0;
        }
    }
    if (dropped) atomicAdd(counters + DC_CNT_SEL_DROPPED, dropped);
}

#ifdef DEEPCOMP_STANDALONE
// explicit instantiations for the nvcc compile check (NVRTC uses name_expressions instead)
template __global__ void cell_bin<float>(const double*, const double*, const double*, const int*, double*, int*, int);
template __global__ void cell_bin<double>(const double*, const double*, const double*, const int*, double*, int*, int);
template __global__ void build_nlist<float>(const double*, const double*, const int*, const int*, const int*,
                                            const int*, const int*, const int*, const int*, int*, float*, double*,
                                            int*, unsigned long long*, int, int, int, int, int, int, double, double);
template __global__ void build_nlist<double>(const double*, const double*, const int*, const int*, const int*,
                                             const int*, const int*, const int*, const int*, int*, double*, double*,
                                             int*, unsigned long long*, int, int, int, int, int, int, double, double);
#endif
