// DPA-1 (dpa1 / se_atten / se_atten_v2 with attention layers) on tabulated embeddings:
// forward (T and the descriptor) and backward (dE/d rhat and dE/d sw per slot), the math of
// deepcomp_ase/descriptors/dpa1.py (see its docstring) without autodiff.
//
// One block per centre atom, grid-stride over the atoms (the grid is at most the number of
// scratch rows, see below). Per atom the real neighbours (nlist >= 0, type pair not excluded)
// are compacted into rows 0..nr-1 (shared memory ints); padding and excluded slots are "dead":
// they enter only the smooth softmax's denominator, and padding slots add their constant rows
// (pad_rows, pad_rhat) to T. Attention is permutation-equivariant over the neighbours and T sums
// over them, so the compaction changes nothing but the order of the sums.
//
// A block keeps the per-atom intermediates (environment rows, table values, every layer's
// input, q/k/v, logits, softmax, layer-norm state, and the gradients) in its own row of the
// global `scratch` buffer (dpa1_scratch_size: O(sel*(sel + ng + h)) per layer): sel=120, ng=100
// rows are 96 kB per array in float64, too much for shared memory. Memory is bounded by the
// number of blocks, not atoms: the backward kernel recomputes the forward pass of its atom
// (tables and layers) rather than reading it from a per-atom store.
//
// Work inside a phase is spread over the block's threads element by element (rows x outputs,
// or rows x rows), phases are separated by __syncthreads; row-wise reductions (softmax, layer
// norm, their gradients) take a thread per row. Table reads: consecutive threads take
// consecutive outputs of one row (contiguous in the coefficient-major layout).
//
// Overflow counters (forward only): inputs, coarse, beyond and the worst input, as env_mat.cu
// counts them; inputs outside the table or in relu-split intervals take the exact net
// (dc_exact_embed_block, block-uniform).
#include "common.cuh"

// flags
#define DC_DPA1_SMOOTH 1
#define DC_DPA1_STRIP 2
#define DC_DPA1_DOTR 4
#define DC_DPA1_NORMALIZE 8
#define DC_DPA1_TF_SWITCH 16  // TensorFlow's smooth weight 1 - (1 - rcut_smth s)^3 (graphs read from .pb)
#define DC_DPA1_FLOOR 32      // norms floored at unit_floor above 1e-12 (TF's l2_normalize): its backward branch
#define DC_DPA1_SELF_MASK 64  // TensorFlow's attn_mask: a slot's weight on itself is zero
// attn_layout columns (one row per attention layer, offsets into attn_params)
#define DC_AL_WIN 0
#define DC_AL_BIN 1
#define DC_AL_WOUT 2
#define DC_AL_BOUT 3
#define DC_AL_LNW 4
#define DC_AL_LNB 5
#define DC_AL_EPS 6
#define DC_AL_H 7
// 128 threads and at most 128 registers (4 blocks per SM partition); kernels/launch.py DPA1_THREADS
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define DC_DPA1_BOUNDS __launch_bounds__(128, 4)
#else
#define DC_DPA1_BOUNDS
#endif
// DeePMD-kit's logit shift of the smooth attention (model/params_dpa1.py ATTNW_SHIFT)
#define DC_ATTNW_SHIFT 20.0

// Offsets of the scratch arrays of one block (FPTYPE units); n = nnei rows, H the widest layer.
// deepcomp_ase/backends/cuda_dpa1.py scratch_stride computes the same total.
struct Dpa1Layout {
    long long rh, sw, dw, ru, rn, tl, G, dG, layer0, per_layer, xout, gx, gy, go, gw, gd, gs, gp, grh, gsw, gr, gT,
        ex, total;
    // inside a layer
    long long xin, q, k, v, nq, nk, nv, lg, a, yh, sig;
};

DC_HD Dpa1Layout dpa1_layout(int n, int ng, int H, int nlayer, int maxw) {
    Dpa1Layout L;
    long long p = 0;
    const long long nn = (long long)n * n, nG = (long long)n * ng, nH = (long long)n * H;
    L.rh = p; p += 4LL * n;
    L.sw = p; p += n;
    L.dw = p; p += n;
    L.ru = p; p += 3LL * n;
    L.rn = p; p += n;
    L.tl = p; p += n;
    L.G = p; p += nG;
    L.dG = p; p += nG;
    // layer-relative offsets
    long long q = 0;
    L.xin = q; q += nG;
    L.q = q; q += nH;
    L.k = q; q += nH;
    L.v = q; q += nH;
    L.nq = q; q += n;
    L.nk = q; q += n;
    L.nv = q; q += n;
    L.lg = q; q += nn;
    L.a = q; q += nn;
    L.yh = q; q += nG;
    L.sig = q; q += n;
    L.per_layer = q;
    L.layer0 = p; p += q * nlayer;
    L.xout = p; p += nG;
    L.gx = p; p += nG;
    L.gy = p; p += nG;
    L.go = p; p += nH;
    L.gw = p; p += nn;
    L.gd = p; p += nn;
    L.gs = p; p += nn;
    L.gp = p; p += 3 * nH;
    L.grh = p; p += 4LL * n;
    L.gsw = p; p += n;
    L.gr = p; p += 3LL * n;
    L.gT = p; p += 4LL * ng;
    L.ex = p; p += 4LL * maxw;
    L.total = p;
    return L;
}

template <typename FPTYPE>
struct Dpa1K {
    const FPTYPE *table, *table_info;
    const long long* table_offset;
    const int *net_layers, *net_first;
    const FPTYPE* net_params;
    const int *nlist, *nnbr, *atype, *row_of_atom, *tab_of, *excl, *term_row, *attn_layout;
    const FPTYPE *rij, *davg, *dstd, *pair_term, *attn_params, *pad_rows, *pad_rhat;
    FPTYPE* scratch;
    int nloc, nnei, ntypes, ng, m2, ldd, maxw, nlayer, hidden, flags;
    FPTYPE scaling, inv_nnei, rcut_smth, rcut, protection, unit_floor, switch_rcut_smth;
    long long stride;
};

// shared ints: slot of each compact row, table interval (-1: exact net), table, neighbour type
struct Dpa1Rows {
    int *slot, *idx, *tab, *tj, *nr;
};

template <typename FPTYPE>
DC_D FPTYPE dpa1_gate(const Dpa1K<FPTYPE>& K, int ti, int tj, FPTYPE sw, int c, FPTYPE* tt_out) {
    if (!(K.flags & DC_DPA1_STRIP)) {
        *tt_out = (FPTYPE)0;
        return (FPTYPE)1;
    }
    const FPTYPE tt = K.pair_term[(long long)K.term_row[ti * K.ntypes + tj] * K.ng + c];
    *tt_out = tt;
    return (FPTYPE)1 + tt * ((K.flags & DC_DPA1_SMOOTH) ? sw : (FPTYPE)1);
}

// Forward pass of atom i into the block's scratch S: compact rows, environment, embedding,
// every attention layer; the last layer's rows end in S + L.xout. count: add to the counters.
template <typename FPTYPE>
__device__ void dpa1_atom_forward(const Dpa1K<FPTYPE>& K, const Dpa1Layout& L, int i, FPTYPE* S, Dpa1Rows R,
                                  unsigned long long* counters) {
    const int tid = threadIdx.x, nth = blockDim.x;
    const int ti = K.atype[i], nt = K.ntypes, n = K.nnei, ng = K.ng;
    __syncthreads();  // the previous atom's rows are no longer read
    // compaction: the slots' neighbour types in parallel (R.idx as a temporary), then one
    // thread's scan over shared memory
    const int cnt = K.nnbr[i];
    for (int s = tid; s < cnt; s += nth) {
        const int j = K.nlist[(long long)i * n + s];
        const int tj = j >= 0 ? K.atype[j] : -1;
        R.idx[s] = (tj >= 0 && !K.excl[ti * nt + tj]) ? tj : -1;
    }
    __syncthreads();
    if (tid == 0) {
        int nr = 0;
        for (int s = 0; s < cnt; ++s) {
            if (R.idx[s] < 0) continue;
            R.slot[nr] = s;
            R.tj[nr] = R.idx[s];
            ++nr;
        }
        R.nr[0] = nr;
    }
    __syncthreads();
    const int nr = R.nr[0];
    FPTYPE *rh = S + L.rh, *sw = S + L.sw, *dw = S + L.dw, *ru = S + L.ru, *rn = S + L.rn, *tl = S + L.tl;
    FPTYPE *G = S + L.G, *dG = S + L.dG;
    // environment rows, unit directions, table location (thread per row)
    unsigned long long n_in = 0, n_coarse = 0, n_beyond = 0;
    for (int r = tid; r < nr; r += nth) {
        const long long q = (long long)i * n + R.slot[r];
        const FPTYPE* v = K.rij + 3 * q;
        const FPTYPE rr = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
        FPTYPE w, dwv;
        dc_switch(rr, K.rcut_smth, K.rcut, w, dwv);
        const FPTYPE rho = rr + K.protection;
        const FPTYPE sc = w / (rho * rho);
        const FPTYPE raw[4] = {w / rho, v[0] * sc, v[1] * sc, v[2] * sc};
        FPTYPE* e = rh + 4 * r;
        for (int m = 0; m < 4; ++m) e[m] = (raw[m] - K.davg[4 * ti + m]) / K.dstd[4 * ti + m];
        if (K.flags & DC_DPA1_TF_SWITCH) {  // descriptors/se_atten_v2.py type_term_switch
            const FPTYPE uu = (FPTYPE)1 - K.switch_rcut_smth * (w / rho);
            const FPTYPE v3 = (FPTYPE)1 - uu * uu * uu;
            const bool inside = v3 > (FPTYPE)0 && v3 < (FPTYPE)1;
            dw[r] = inside ? (FPTYPE)3 * uu * uu * K.switch_rcut_smth * (dwv / rho - w / (rho * rho)) : (FPTYPE)0;
            sw[r] = v3 < (FPTYPE)0 ? (FPTYPE)0 : (v3 > (FPTYPE)1 ? (FPTYPE)1 : v3);
        } else {
            sw[r] = w;
            dw[r] = dwv;
        }
        FPTYPE nrm = sqrt(e[1] * e[1] + e[2] * e[2] + e[3] * e[3]);
        nrm = nrm > K.unit_floor ? nrm : K.unit_floor;  // torch's normalize: zero rows stay zero
        rn[r] = nrm;
        for (int a = 0; a < 3; ++a) ru[3 * r + a] = e[1 + a] / nrm;
        const int tab = K.tab_of[ti * nt + R.tj[r]];
        R.tab[r] = tab;
        const FPTYPE* info = K.table_info + DC_INFO_W * tab;
        int idx;
        FPTYPE t;
        const int region = dc_locate_split(e[0], info, K.table, K.table_offset + 2 * tab, idx, t);
        R.idx[r] = region <= DC_COARSE ? idx : -1;
        tl[r] = t;
        if (counters) {
            ++n_in;
            int idx2;
            FPTYPE t2;
            const int reg = dc_locate(e[0], info, idx2, t2);
            if (reg != DC_FINE) {
                if (reg == DC_COARSE) ++n_coarse;
                else ++n_beyond;
                const bool above = e[0] >= info[1];
                const float excess = (float)(above ? e[0] - info[1] : info[0] - e[0]);
                const unsigned long long word = ((unsigned long long)__float_as_uint(excess) << 32) |
                                                ((unsigned long long)tab << 1) | (above ? 1ull : 0ull);
                atomicMax(counters + DC_CNT_WORST, word);
            }
        }
    }
    if (counters) {
        if (n_in) atomicAdd(counters + DC_CNT_INPUTS, n_in);
        if (n_coarse) atomicAdd(counters + DC_CNT_COARSE, n_coarse);
        if (n_beyond) atomicAdd(counters + DC_CNT_BEYOND, n_beyond);
    }
    __syncthreads();
    // tabulated embedding: consecutive threads, consecutive outputs of a row
    for (long long e = tid; e < (long long)nr * ng; e += nth) {
        const int r = (int)(e / ng), c = (int)(e % ng);
        if (R.idx[r] < 0) continue;
        const int tab = R.tab[r];
        const FPTYPE* info = K.table_info + DC_INFO_W * tab;
        FPTYPE g, dg;
        dc_table_value_d(K.table + K.table_offset[2 * tab], dc_table_layout(info), R.idx[r], ng, c, tl[r], g, dg);
        G[e] = g;
        dG[e] = dg;
    }
    // rows outside the table (or in relu-split intervals): the exact net, block-uniform
    for (int r = 0; r < nr; ++r) {
        if (R.idx[r] >= 0) continue;
        const int tab = R.tab[r];
        const FPTYPE *g, *dg;
        dc_exact_embed_block(K.net_layers, K.net_first[2 * tab], K.net_first[2 * tab + 1], K.net_params, rh[4 * r],
                             S + L.ex, K.maxw, &g, &dg);
        for (int c = tid; c < ng; c += nth) {
            G[(long long)r * ng + c] = g[c];
            dG[(long long)r * ng + c] = dg[c];
        }
    }
    __syncthreads();
    FPTYPE* x0 = K.nlayer > 0 ? S + L.layer0 + L.xin : S + L.xout;
    for (long long e = tid; e < (long long)nr * ng; e += nth) {
        const int r = (int)(e / ng), c = (int)(e % ng);
        FPTYPE tt;
        x0[e] = G[e] * dpa1_gate(K, ti, R.tj[r], sw[r], c, &tt);
    }
    const int dead = n - nr;
    const bool smooth = K.flags & DC_DPA1_SMOOTH, dotr = K.flags & DC_DPA1_DOTR;
    const FPTYPE shift = (FPTYPE)DC_ATTNW_SHIFT;
    for (int l = 0; l < K.nlayer; ++l) {
        const int* AL = K.attn_layout + 8 * l;
        const int h = AL[DC_AL_H], h3 = 3 * AL[DC_AL_H];
        const FPTYPE *w_in = K.attn_params + AL[DC_AL_WIN], *b_in = K.attn_params + AL[DC_AL_BIN];
        const FPTYPE *w_out = K.attn_params + AL[DC_AL_WOUT], *b_out = K.attn_params + AL[DC_AL_BOUT];
        const FPTYPE *ln_w = K.attn_params + AL[DC_AL_LNW], *ln_b = K.attn_params + AL[DC_AL_LNB];
        const FPTYPE eps = K.attn_params[AL[DC_AL_EPS]];
        FPTYPE* Ly = S + L.layer0 + L.per_layer * l;
        const FPTYPE* x = Ly + L.xin;
        FPTYPE *q = Ly + L.q, *k = Ly + L.k, *v = Ly + L.v, *lg = Ly + L.lg, *a = Ly + L.a, *yh = Ly + L.yh;
        FPTYPE* xnext = l + 1 < K.nlayer ? S + L.layer0 + L.per_layer * (l + 1) + L.xin : S + L.xout;
        FPTYPE* o = S + L.go;  // the gradient buffer is free in the forward pass
        __syncthreads();
        // projections q, k, v = x W_in + b_in
        for (long long e = tid; e < (long long)nr * h3; e += nth) {
            const int r = (int)(e / h3), c = (int)(e % h3);
            FPTYPE acc = b_in[c];
            const FPTYPE* xr = x + (long long)r * ng;
            for (int m = 0; m < ng; ++m) acc += xr[m] * w_in[(long long)m * h3 + c];
            const int which = c / h, cc = c % h;
            (which == 0 ? q : (which == 1 ? k : v))[(long long)r * K.hidden + cc] = acc;
        }
        __syncthreads();
        if (K.flags & DC_DPA1_NORMALIZE) {
            for (int e = tid; e < nr * 3; e += nth) {
                const int r = e / 3, which = e % 3;
                FPTYPE* y = (which == 0 ? q : (which == 1 ? k : v)) + (long long)r * K.hidden;
                FPTYPE s2 = (FPTYPE)0;
                for (int c = 0; c < h; ++c) s2 += y[c] * y[c];
                FPTYPE nrm = sqrt(s2);
                nrm = nrm > K.unit_floor ? nrm : K.unit_floor;
                for (int c = 0; c < h; ++c) y[c] /= nrm;
                (Ly + (which == 0 ? L.nq : (which == 1 ? L.nk : L.nv)))[r] = nrm;
            }
            __syncthreads();
        }
        // logits
        for (long long e = tid; e < (long long)nr * nr; e += nth) {
            const int r = (int)(e / nr), t = (int)(e % nr);
            const FPTYPE *qr = q + (long long)r * K.hidden, *kt = k + (long long)t * K.hidden;
            FPTYPE acc = (FPTYPE)0;
            for (int c = 0; c < h; ++c) acc += qr[c] * kt[c];
            lg[(long long)r * n + t] = K.scaling * acc;
        }
        __syncthreads();
        // softmax over the real neighbours (smooth: plus the dead slots at logit -shift)
        for (int r = tid; r < nr; r += nth) {
            FPTYPE* lr = lg + (long long)r * n;
            FPTYPE* ar = a + (long long)r * n;
            FPTYPE top = -(FPTYPE)3.0e38;
            for (int t = 0; t < nr; ++t) {
                const FPTYPE lp = smooth ? (lr[t] + shift) * sw[r] * sw[t] - shift : lr[t];
                ar[t] = lp;
                top = lp > top ? lp : top;
            }
            if (smooth && dead > 0) top = top > -shift ? top : -shift;
            FPTYPE z = (FPTYPE)0;
            for (int t = 0; t < nr; ++t) {
                ar[t] = exp(ar[t] - top);
                z += ar[t];
            }
            if (smooth) z += (FPTYPE)dead * exp(-shift - top);
            for (int t = 0; t < nr; ++t) ar[t] /= z;
        }
        __syncthreads();
        // o = (A (*) S (*) r^.r^) v
        for (long long e = tid; e < (long long)nr * h; e += nth) {
            const int r = (int)(e / h), c = (int)(e % h);
            const FPTYPE* ar = a + (long long)r * n;
            FPTYPE acc = (FPTYPE)0;
            for (int t = 0; t < nr; ++t) {
                // attn_mask: the diagonal weight is zero (the flag tested in place: a bool kept live across
                // the kernel costs registers, and the kernels are at 128)
                FPTYPE wgt = (K.flags & DC_DPA1_SELF_MASK) && t == r ? (FPTYPE)0 : ar[t];
                if (smooth) wgt *= sw[r] * sw[t];
                if (dotr) wgt *= ru[3 * r] * ru[3 * t] + ru[3 * r + 1] * ru[3 * t + 1] + ru[3 * r + 2] * ru[3 * t + 2];
                acc += wgt * v[(long long)t * K.hidden + c];
            }
            o[(long long)r * K.hidden + c] = acc;
        }
        __syncthreads();
        // y = x + o W_out + b_out (into yh)
        for (long long e = tid; e < (long long)nr * ng; e += nth) {
            const int r = (int)(e / ng), c = (int)(e % ng);
            FPTYPE acc = x[e] + b_out[c];
            const FPTYPE* orow = o + (long long)r * K.hidden;
            for (int m = 0; m < h; ++m) acc += orow[m] * w_out[(long long)m * ng + c];
            yh[e] = acc;
        }
        __syncthreads();
        // layer norm (thread per row)
        for (int r = tid; r < nr; r += nth) {
            FPTYPE* y = yh + (long long)r * ng;
            FPTYPE mu = (FPTYPE)0;
            for (int c = 0; c < ng; ++c) mu += y[c];
            mu /= (FPTYPE)ng;
            FPTYPE var = (FPTYPE)0;
            for (int c = 0; c < ng; ++c) var += (y[c] - mu) * (y[c] - mu);
            const FPTYPE sig = sqrt(var / (FPTYPE)ng + eps);
            (Ly + L.sig)[r] = sig;
            FPTYPE* out = xnext + (long long)r * ng;
            for (int c = 0; c < ng; ++c) {
                const FPTYPE yhat = (y[c] - mu) / sig;
                y[c] = yhat;
                out[c] = yhat * ln_w[c] + ln_b[c];
            }
        }
    }
    __syncthreads();
}

// T of atom i (rows of S + L.xout) to t_out, D to desc
template <typename FPTYPE>
__device__ void dpa1_write_descriptor(const Dpa1K<FPTYPE>& K, const Dpa1Layout& L, int i, const FPTYPE* S,
                                      Dpa1Rows R, FPTYPE* t_out, FPTYPE* desc) {
    const int tid = threadIdx.x, nth = blockDim.x, ng = K.ng, nr = R.nr[0];
    const int ti = K.atype[i], tpad = K.atype[0];
    const FPTYPE npad = (FPTYPE)(K.nnei - K.nnbr[i]);
    const FPTYPE *X = S + L.xout, *rh = S + L.rh;
    const FPTYPE* prow = K.pad_rows + ((long long)ti * K.ntypes + tpad) * ng;
    const FPTYPE* prh = K.pad_rhat + 4 * ti;
    for (int c = tid; c < ng; c += nth) {
        FPTYPE acc[4] = {(FPTYPE)0, (FPTYPE)0, (FPTYPE)0, (FPTYPE)0};
        for (int r = 0; r < nr; ++r) {
            const FPTYPE xv = X[(long long)r * ng + c];
            for (int m = 0; m < 4; ++m) acc[m] += xv * rh[4 * r + m];
        }
        FPTYPE* T = t_out + ((long long)i * ng + c) * 4;
        for (int m = 0; m < 4; ++m) T[m] = (acc[m] + npad * prow[c] * prh[m]) * K.inv_nnei;
    }
    __syncthreads();
    const FPTYPE* Ti = t_out + (long long)i * ng * 4;
    FPTYPE* D = desc + (long long)K.row_of_atom[i] * K.ldd;
    for (int e = tid; e < ng * K.m2; e += nth) {
        const int c = e / K.m2, l = e % K.m2;
        FPTYPE acc = (FPTYPE)0;
        for (int m = 0; m < 4; ++m) acc += Ti[4 * c + m] * Ti[4 * l + m];
        D[e] = acc;
    }
}

// Backward of atom i after dpa1_atom_forward: dE/d rhat to g_em, dE/dsw * dw/dr to g_r
template <typename FPTYPE>
__device__ void dpa1_atom_backward(const Dpa1K<FPTYPE>& K, const Dpa1Layout& L, int i, FPTYPE* S, Dpa1Rows R,
                                   const FPTYPE* t_in, const FPTYPE* g_desc, FPTYPE* g_em, FPTYPE* g_r) {
    const int tid = threadIdx.x, nth = blockDim.x, ng = K.ng, n = K.nnei, m2 = K.m2, nr = R.nr[0];
    const int ti = K.atype[i];
    const bool smooth = K.flags & DC_DPA1_SMOOTH, dotr = K.flags & DC_DPA1_DOTR;
    const FPTYPE shift = (FPTYPE)DC_ATTNW_SHIFT;
    const FPTYPE *rh = S + L.rh, *sw = S + L.sw, *ru = S + L.ru, *X = S + L.xout;
    FPTYPE *gx = S + L.gx, *gy = S + L.gy, *go = S + L.go, *gw = S + L.gw, *gd = S + L.gd, *gs = S + L.gs;
    FPTYPE *gp = S + L.gp, *grh = S + L.grh, *gsw = S + L.gsw, *gr = S + L.gr, *gT = S + L.gT;
    const FPTYPE* gD = g_desc + (long long)K.row_of_atom[i] * K.ldd;
    const FPTYPE* Ti = t_in + (long long)i * ng * 4;
    // slots the compact rows do not cover (excluded pairs) get no gradient
    for (int s = tid; s < K.nnbr[i]; s += nth) {
        const long long q = (long long)i * n + s;
        for (int m = 0; m < 4; ++m) g_em[4 * q + m] = (FPTYPE)0;
        g_r[q] = (FPTYPE)0;
    }
    // dE/dT
    for (int c = tid; c < ng; c += nth) {
        FPTYPE g[4] = {(FPTYPE)0, (FPTYPE)0, (FPTYPE)0, (FPTYPE)0};
        #pragma unroll 1
        for (int l = 0; l < m2; ++l) {
            const FPTYPE d = gD[c * m2 + l];
            for (int m = 0; m < 4; ++m) g[m] += d * Ti[4 * l + m];
        }
        if (c < m2)
            #pragma unroll 1
            for (int k = 0; k < ng; ++k) {
                const FPTYPE d = gD[k * m2 + c];
                for (int m = 0; m < 4; ++m) g[m] += d * Ti[4 * k + m];
            }
        for (int m = 0; m < 4; ++m) gT[4 * c + m] = g[m] * K.inv_nnei;
    }
    __syncthreads();
    for (long long e = tid; e < (long long)nr * ng; e += nth) {
        const int r = (int)(e / ng), c = (int)(e % ng);
        gx[e] = gT[4 * c] * rh[4 * r] + gT[4 * c + 1] * rh[4 * r + 1] + gT[4 * c + 2] * rh[4 * r + 2] +
                gT[4 * c + 3] * rh[4 * r + 3];
    }
    for (int e = tid; e < nr * 4; e += nth) {
        const int r = e / 4, m = e % 4;
        FPTYPE acc = (FPTYPE)0;
        #pragma unroll 1
        for (int c = 0; c < ng; ++c) acc += X[(long long)r * ng + c] * gT[4 * c + m];
        grh[e] = acc;
    }
    for (int r = tid; r < nr; r += nth) {
        gsw[r] = (FPTYPE)0;
        gr[3 * r] = gr[3 * r + 1] = gr[3 * r + 2] = (FPTYPE)0;
    }
    for (int l = K.nlayer - 1; l >= 0; --l) {
        const int* AL = K.attn_layout + 8 * l;
        const int h = AL[DC_AL_H], h3 = 3 * AL[DC_AL_H], H = K.hidden;
        const FPTYPE *w_in = K.attn_params + AL[DC_AL_WIN], *w_out = K.attn_params + AL[DC_AL_WOUT];
        const FPTYPE* ln_w = K.attn_params + AL[DC_AL_LNW];
        const FPTYPE* Ly = S + L.layer0 + L.per_layer * l;
        const FPTYPE *q = Ly + L.q, *k = Ly + L.k, *v = Ly + L.v, *lg = Ly + L.lg, *a = Ly + L.a, *yh = Ly + L.yh;
        const FPTYPE* sig = Ly + L.sig;
        __syncthreads();
        // layer norm
        for (int r = tid; r < nr; r += nth) {
            const FPTYPE *g = gx + (long long)r * ng, *y = yh + (long long)r * ng;
            FPTYPE m1 = (FPTYPE)0, m2s = (FPTYPE)0;
            #pragma unroll 1
            for (int c = 0; c < ng; ++c) {
                const FPTYPE gh = g[c] * ln_w[c];
                m1 += gh;
                m2s += gh * y[c];
            }
            m1 /= (FPTYPE)ng;
            m2s /= (FPTYPE)ng;
            FPTYPE* out = gy + (long long)r * ng;
            #pragma unroll 1
            for (int c = 0; c < ng; ++c) out[c] = (g[c] * ln_w[c] - m1 - y[c] * m2s) / sig[r];
        }
        __syncthreads();
        // g_o = g_y W_out^T
        for (long long e = tid; e < (long long)nr * h; e += nth) {
            const int r = (int)(e / h), c = (int)(e % h);
            const FPTYPE* g = gy + (long long)r * ng;
            const FPTYPE* wr = w_out + (long long)c * ng;
            FPTYPE acc = (FPTYPE)0;
            #pragma unroll 1
            for (int m = 0; m < ng; ++m) acc += g[m] * wr[m];
            go[(long long)r * H + c] = acc;
        }
        __syncthreads();
        // g_w = g_o v^T
        for (long long e = tid; e < (long long)nr * nr; e += nth) {
            const int r = (int)(e / nr), t = (int)(e % nr);
            const FPTYPE *gr_ = go + (long long)r * H, *vt = v + (long long)t * H;
            FPTYPE acc = (FPTYPE)0;
            #pragma unroll 1
            for (int c = 0; c < h; ++c) acc += gr_[c] * vt[c];
            gw[(long long)r * n + t] = (K.flags & DC_DPA1_SELF_MASK) && t == r ? (FPTYPE)0 : acc;  // masked diagonal
        }
        __syncthreads();
        // through the gate, the switch products and the softmax (thread per row); gw becomes
        // dE/dlogit, gd the gradient of r^_r.r^_t, gs that of S_rt
        for (int r = tid; r < nr; r += nth) {
            const FPTYPE* ar = a + (long long)r * n;
            const FPTYPE* lr = lg + (long long)r * n;
            FPTYPE* gwr = gw + (long long)r * n;
            FPTYPE* gdr = gd + (long long)r * n;
            FPTYPE* gsr = gs + (long long)r * n;
            FPTYPE dotsum = (FPTYPE)0;
            #pragma unroll 1
            for (int t = 0; t < nr; ++t) {
                const FPTYPE s_rt = smooth ? sw[r] * sw[t] : (FPTYPE)1;
                const FPTYPE amp = ar[t] * s_rt;
                FPTYPE g_amp = gwr[t];
                if (dotr) {
                    const FPTYPE dr =
                        ru[3 * r] * ru[3 * t] + ru[3 * r + 1] * ru[3 * t + 1] + ru[3 * r + 2] * ru[3 * t + 2];
                    gdr[t] = gwr[t] * amp;
                    g_amp = gwr[t] * dr;
                }
                const FPTYPE g_a = g_amp * s_rt;
                gsr[t] = smooth ? g_amp * ar[t] : (FPTYPE)0;
                gwr[t] = g_a;
                dotsum += g_a * ar[t];
            }
            #pragma unroll 1
            for (int t = 0; t < nr; ++t) {
                const FPTYPE g_lp = ar[t] * (gwr[t] - dotsum);
                if (smooth) {
                    gwr[t] = g_lp * sw[r] * sw[t];
                    gsr[t] += g_lp * (lr[t] + shift);
                } else {
                    gwr[t] = g_lp;
                }
            }
        }
        __syncthreads();
        // g_q, g_k, g_v
        for (long long e = tid; e < (long long)nr * h3; e += nth) {
            const int r = (int)(e / h3), c3 = (int)(e % h3), which = c3 / h, c = c3 % h;
            FPTYPE acc = (FPTYPE)0;
            if (which == 0) {
                const FPTYPE* gwr = gw + (long long)r * n;
                #pragma unroll 1
                for (int t = 0; t < nr; ++t) acc += gwr[t] * k[(long long)t * H + c];
                acc *= K.scaling;
            } else if (which == 1) {
                #pragma unroll 1
                for (int t = 0; t < nr; ++t) acc += gw[(long long)t * n + r] * q[(long long)t * H + c];
                acc *= K.scaling;
            } else {
                #pragma unroll 1
                for (int t = 0; t < nr; ++t) {
                    // weights[t][r] of the forward pass (attn_mask: the diagonal's is zero)
                    FPTYPE wgt = (K.flags & DC_DPA1_SELF_MASK) && t == r ? (FPTYPE)0 : a[(long long)t * n + r];
                    if (smooth) wgt *= sw[t] * sw[r];
                    if (dotr)
                        wgt *= ru[3 * t] * ru[3 * r] + ru[3 * t + 1] * ru[3 * r + 1] + ru[3 * t + 2] * ru[3 * r + 2];
                    acc += wgt * go[(long long)t * H + c];
                }
            }
            gp[(long long)r * 3 * H + c3] = acc;
        }
        // the row and column sums of gd and gs onto the directions and switches
        for (int r = tid; r < nr; r += nth) {
            FPTYPE g3[3] = {(FPTYPE)0, (FPTYPE)0, (FPTYPE)0}, gsum = (FPTYPE)0;
            #pragma unroll 1
            for (int t = 0; t < nr; ++t) {
                if (dotr) {
                    const FPTYPE d = gd[(long long)r * n + t] + gd[(long long)t * n + r];
                    for (int m = 0; m < 3; ++m) g3[m] += d * ru[3 * t + m];
                }
                if (smooth) gsum += (gs[(long long)r * n + t] + gs[(long long)t * n + r]) * sw[t];
            }
            for (int m = 0; m < 3; ++m) gr[3 * r + m] += g3[m];
            gsw[r] += gsum;
        }
        __syncthreads();
        if (K.flags & DC_DPA1_NORMALIZE) {
            for (int e = tid; e < nr * 3; e += nth) {
                const int r = e / 3, which = e % 3;
                const FPTYPE* y = (which == 0 ? q : (which == 1 ? k : v)) + (long long)r * H;
                const FPTYPE nrm = (Ly + (which == 0 ? L.nq : (which == 1 ? L.nk : L.nv)))[r];
                FPTYPE* g = gp + (long long)r * 3 * H + which * h;
                const bool below = (K.flags & DC_DPA1_FLOOR) && nrm <= K.unit_floor;  // y = x / floor
                FPTYPE dot = (FPTYPE)0;
                #pragma unroll 1
                for (int c = 0; c < h; ++c) dot += y[c] * g[c];
                #pragma unroll 1
                for (int c = 0; c < h; ++c) g[c] = below ? g[c] / nrm : (g[c] - y[c] * dot) / nrm;
            }
            __syncthreads();
        }
        // g_x = g_y + g_p W_in^T
        for (long long e = tid; e < (long long)nr * ng; e += nth) {
            const int r = (int)(e / ng), c = (int)(e % ng);
            const FPTYPE* g = gp + (long long)r * 3 * H;
            const FPTYPE* wr = w_in + (long long)c * h3;
            FPTYPE acc = gy[e];
            #pragma unroll 1
            for (int m = 0; m < h3; ++m) acc += g[m] * wr[m];
            gx[e] = acc;
        }
    }
    __syncthreads();
    // embedding input and gate, then the unit directions (thread per row)
    const FPTYPE *G = S + L.G, *dG = S + L.dG, *rn = S + L.rn, *dwv = S + L.dw;
    const bool smooth_strip = smooth && (K.flags & DC_DPA1_STRIP);
    for (int r = tid; r < nr; r += nth) {
        FPTYPE gs0 = (FPTYPE)0, gsw_e = (FPTYPE)0;
        #pragma unroll 1
        for (int c = 0; c < ng; ++c) {
            const long long e = (long long)r * ng + c;
            FPTYPE tt;
            const FPTYPE gate = dpa1_gate(K, ti, R.tj[r], sw[r], c, &tt);
            gs0 += gx[e] * dG[e] * gate;
            if (smooth_strip) gsw_e += gx[e] * G[e] * tt;
        }
        const FPTYPE* u = ru + 3 * r;
        const FPTYPE* g3 = gr + 3 * r;
        const FPTYPE dot = u[0] * g3[0] + u[1] * g3[1] + u[2] * g3[2];
        const long long q = (long long)i * n + R.slot[r];
        FPTYPE* out = g_em + 4 * q;
        out[0] = grh[4 * r] + gs0;
        const bool below = (K.flags & DC_DPA1_FLOOR) && rn[r] <= K.unit_floor;
        for (int m = 0; m < 3; ++m) out[1 + m] = grh[4 * r + 1 + m] + (below ? g3[m] : g3[m] - u[m] * dot) / rn[r];
        g_r[q] = (gsw[r] + gsw_e) * dwv[r];
    }
}

template <typename FPTYPE>
DC_D Dpa1K<FPTYPE> dpa1_args(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                             const int* net_layers, const int* net_first, const FPTYPE* net_params, const int* nlist,
                             const FPTYPE* rij, const int* nnbr, const int* atype, const int* row_of_atom,
                             const int* tab_of, const int* excl, const FPTYPE* davg, const FPTYPE* dstd,
                             const FPTYPE* pair_term, const int* term_row, const FPTYPE* attn_params,
                             const int* attn_layout, const FPTYPE* pad_rows, const FPTYPE* pad_rhat, FPTYPE* scratch,
                             int nloc, int nnei, int ntypes, int ng, int m2, int ldd, int maxw, int nlayer,
                             int hidden, int flags, FPTYPE scaling, FPTYPE inv_nnei, FPTYPE rcut_smth, FPTYPE rcut,
                             FPTYPE protection, FPTYPE unit_floor, FPTYPE switch_rcut_smth, long long stride) {
    Dpa1K<FPTYPE> K;
    K.table = table;
    K.table_info = table_info;
    K.table_offset = table_offset;
    K.net_layers = net_layers;
    K.net_first = net_first;
    K.net_params = net_params;
    K.nlist = nlist;
    K.rij = rij;
    K.nnbr = nnbr;
    K.atype = atype;
    K.row_of_atom = row_of_atom;
    K.tab_of = tab_of;
    K.excl = excl;
    K.davg = davg;
    K.dstd = dstd;
    K.pair_term = pair_term;
    K.term_row = term_row;
    K.attn_params = attn_params;
    K.attn_layout = attn_layout;
    K.pad_rows = pad_rows;
    K.pad_rhat = pad_rhat;
    K.scratch = scratch;
    K.nloc = nloc;
    K.nnei = nnei;
    K.ntypes = ntypes;
    K.ng = ng;
    K.m2 = m2;
    K.ldd = ldd;
    K.maxw = maxw;
    K.nlayer = nlayer;
    K.hidden = hidden;
    K.flags = flags;
    K.scaling = scaling;
    K.inv_nnei = inv_nnei;
    K.rcut_smth = rcut_smth;
    K.rcut = rcut;
    K.protection = protection;
    K.unit_floor = unit_floor;
    K.switch_rcut_smth = switch_rcut_smth;
    K.stride = stride;
    return K;
}

// Dynamic shared memory: the scratch layout and the kernel arguments (written once per block, read
// from shared memory where used rather than held in registers), then the compact-row ints.
#define DC_DPA1_HEADER_BYTES 320
static_assert(sizeof(Dpa1Layout) <= DC_DPA1_HEADER_BYTES, "kernels/launch.py _dpa1_shared reserves 2 x 320 bytes");
static_assert(sizeof(Dpa1K<double>) <= DC_DPA1_HEADER_BYTES, "kernels/launch.py _dpa1_shared reserves 2 x 320 bytes");

template <typename FPTYPE>
DC_D void dpa1_shared(const Dpa1K<FPTYPE>& args, const Dpa1K<FPTYPE>*& K, const Dpa1Layout*& L, Dpa1Rows& R) {
    DC_DYNAMIC_SHARED(long long, lsh);
    Dpa1Layout* Ls = reinterpret_cast<Dpa1Layout*>(lsh);
    Dpa1K<FPTYPE>* Ks = reinterpret_cast<Dpa1K<FPTYPE>*>(lsh + DC_DPA1_HEADER_BYTES / 8);
    if (threadIdx.x == 0) {
        *Ls = dpa1_layout(args.nnei, args.ng, args.hidden, args.nlayer, args.maxw);
        *Ks = args;
    }
    int* ish = reinterpret_cast<int*>(lsh + 2 * DC_DPA1_HEADER_BYTES / 8);
    const int nnei = args.nnei;
    R.slot = ish;
    R.idx = ish + nnei;
    R.tab = ish + 2 * nnei;
    R.tj = ish + 3 * nnei;
    R.nr = ish + 4 * nnei;
    __syncthreads();
    K = Ks;
    L = Ls;
}

#define DC_DPA1_ARGS                                                                                               \
    table, table_info, table_offset, net_layers, net_first, net_params, nlist, rij, nnbr, atype, row_of_atom,      \
        tab_of, excl, davg, dstd, pair_term, term_row, attn_params, attn_layout, pad_rows, pad_rhat, scratch, nloc, \
        nnei, ntypes, ng, m2, ldd, maxw, nlayer, hidden, flags, scaling, inv_nnei, rcut_smth, rcut, protection, unit_floor, switch_rcut_smth, stride

template <typename FPTYPE>
__global__ void DC_DPA1_BOUNDS dpa1_fwd(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                         const int* net_layers, const int* net_first, const FPTYPE* net_params, const int* nlist,
                         const FPTYPE* rij, const int* nnbr, const int* atype, const int* row_of_atom,
                         const int* tab_of, const int* excl, const FPTYPE* davg, const FPTYPE* dstd,
                         const FPTYPE* pair_term, const int* term_row, const FPTYPE* attn_params,
                         const int* attn_layout, const FPTYPE* pad_rows, const FPTYPE* pad_rhat, FPTYPE* scratch,
                         unsigned long long* counters, FPTYPE* t_out, FPTYPE* desc,
                         int nloc, int nnei, int ntypes, int ng, int m2, int ldd, int maxw, int nlayer, int hidden,
                         int flags, FPTYPE scaling, FPTYPE inv_nnei, FPTYPE rcut_smth, FPTYPE rcut,
                         FPTYPE protection, FPTYPE unit_floor, FPTYPE switch_rcut_smth, long long stride) {
    const Dpa1K<FPTYPE>* Kp;
    const Dpa1Layout* Lp;
    Dpa1Rows R;
    dpa1_shared(dpa1_args<FPTYPE>(DC_DPA1_ARGS), Kp, Lp, R);
    const Dpa1K<FPTYPE>& K = *Kp;
    const Dpa1Layout& L = *Lp;
    FPTYPE* S = scratch + (long long)blockIdx.x * stride;
    for (int i = blockIdx.x; i < nloc; i += gridDim.x) {
        dpa1_atom_forward(K, L, i, S, R, counters);
        dpa1_write_descriptor(K, L, i, S, R, t_out, desc);
    }
}

template <typename FPTYPE>
__global__ void DC_DPA1_BOUNDS dpa1_bwd(const FPTYPE* table, const FPTYPE* table_info, const long long* table_offset,
                         const int* net_layers, const int* net_first, const FPTYPE* net_params, const int* nlist,
                         const FPTYPE* rij, const int* nnbr, const int* atype, const int* row_of_atom,
                         const int* tab_of, const int* excl, const FPTYPE* davg, const FPTYPE* dstd,
                         const FPTYPE* pair_term, const int* term_row, const FPTYPE* attn_params,
                         const int* attn_layout, const FPTYPE* pad_rows, const FPTYPE* pad_rhat, FPTYPE* scratch,
                         const FPTYPE* t_in, const FPTYPE* g_desc, FPTYPE* g_em, FPTYPE* g_r,
                         int nloc, int nnei, int ntypes, int ng, int m2, int ldd, int maxw, int nlayer, int hidden,
                         int flags, FPTYPE scaling, FPTYPE inv_nnei, FPTYPE rcut_smth, FPTYPE rcut,
                         FPTYPE protection, FPTYPE unit_floor, FPTYPE switch_rcut_smth, long long stride) {
    const Dpa1K<FPTYPE>* Kp;
    const Dpa1Layout* Lp;
    Dpa1Rows R;
    dpa1_shared(dpa1_args<FPTYPE>(DC_DPA1_ARGS), Kp, Lp, R);
    const Dpa1K<FPTYPE>& K = *Kp;
    const Dpa1Layout& L = *Lp;
    FPTYPE* S = scratch + (long long)blockIdx.x * stride;
    for (int i = blockIdx.x; i < nloc; i += gridDim.x) {
        dpa1_atom_forward(K, L, i, S, R, (unsigned long long*)0);
        dpa1_atom_backward(K, L, i, S, R, t_in, g_desc, g_em, g_r);
    }
}

#ifdef DEEPCOMP_STANDALONE
#define DC_DPA1_INST_P(T)                                                                                         \
    const T *, const T *, const long long *, const int *, const int *, const T *, const int *, const T *,         \
        const int *, const int *, const int *, const int *, const int *, const T *, const T *, const T *,           \
        const int *, const T *, const int *, const T *, const T *, T *
#define DC_DPA1_INST_S(T) int, int, int, int, int, int, int, int, int, int, T, T, T, T, T, T, T, long long
#define DC_DPA1_INST(T)                                                                                              \
    template __global__ void dpa1_fwd<T>(DC_DPA1_INST_P(T), unsigned long long*, T*, T*, DC_DPA1_INST_S(T));     \
    template __global__ void dpa1_bwd<T>(DC_DPA1_INST_P(T), const T*, const T*, T*, T*, DC_DPA1_INST_S(T));
DC_DPA1_INST(float)
DC_DPA1_INST(double)
#endif
