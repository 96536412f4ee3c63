// deepcomp_ase CUDA kernels: shared device helpers.
//
// Compiled three ways: by NVRTC through cupy.RawModule (the loader inlines this file), by nvcc in
// the compile test (-DDEEPCOMP_STANDALONE), and by g++ on the host with host_emulation.cuh in
// front (CPU tests of the kernels themselves). No standard headers: NVRTC has none.
//
// Precision: every kernel is a template on FPTYPE (float or double). Tables, env matrix and
// fitting run in FPTYPE; forces and virials are accumulated in double.
#ifndef DEEPCOMP_COMMON_CUH
#define DEEPCOMP_COMMON_CUH

#define DC_HD __host__ __device__ __forceinline__
#define DC_D __device__ __forceinline__

// region codes: equal to deepcomp_ase.compress.tables FINE, COARSE, BELOW, ABOVE (and DC_SPLIT below)
#define DC_FINE 0
#define DC_COARSE 1
#define DC_BELOW 2
#define DC_ABOVE 3

// counters[] slots (uint64 on the device, read every check_frequency steps)
#define DC_CNT_INPUTS 0
#define DC_CNT_COARSE 1
#define DC_CNT_BEYOND 2
#define DC_CNT_SEL_DROPPED 3
#define DC_CNT_WORST 4  // packed: float32 bits of the excess << 32 | table << 1 | above
#define DC_CNT_CELL_OVERFLOW 5
#define DC_CNT_CLOSE_PAIR 6  // first listed pair closer than the minimum distance: (i + 1) << 32 | (j + 1), or 0
#define DC_CNT_CLOSE_R2 7    // its squared distance (bits of a double), written by the thread that set slot 6

// layer descriptor columns of net_layers[nlayer][8]
#define DC_L_NIN 0
#define DC_L_NOUT 1
#define DC_L_W 2
#define DC_L_B 3
#define DC_L_IDT 4
#define DC_L_ACT 5
#define DC_L_SHORTCUT 6

// activation codes (deepcomp_ase.kernels.loader.ACTIVATION_CODES)
#define DC_ACT_NONE 0
#define DC_ACT_TANH 1
#define DC_ACT_GELU 2
#define DC_ACT_RELU 3
#define DC_ACT_RELU6 4
#define DC_ACT_SOFTPLUS 5
#define DC_ACT_SIGMOID 6

#ifndef DC_DYNAMIC_SHARED  // host_emulation.cuh brings its own
#define DC_DYNAMIC_SHARED(T, name)                         \
    extern __shared__ __align__(16) unsigned char dc_smem_[]; \
    T* name = reinterpret_cast<T*>(dc_smem_)
#endif

DC_HD int dc_imin(int a, int b) { return a < b ? a : b; }
DC_HD int dc_imax(int a, int b) { return a > b ? a : b; }

// Rounded arithmetic that the compiler may not contract into FMA: the table location must
// reproduce the float64 numpy arithmetic (compress/tables.py Table.locate) bit for bit.
DC_HD double dc_mul(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}
DC_HD double dc_add(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}
DC_HD float dc_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
DC_HD float dc_add(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

// ---------------------------------------------------------------------------- tables
// table_info row (DC_INFO_W wide): lower, upper, xmax, stride0, stride1, nspline, first_stride,
// xmin, n_low, layout (0: output-major, 1: coefficient-major; see dc_coef_step). Intervals: [xmin, lower) by stride1 (n_low of them, se_e3 only), then
// [lower, upper) by stride0 (first_stride), then [upper, xmax) by stride1.
// table_offset[tab][2]: start of the coefficients in the table buffer, and start of the
// table's split flags (one value per interval, nonzero where relu kinks split it) or -1.
#define DC_INFO_W 10
#define DC_SPLIT 4  // region of an input in a relu-split interval: evaluated by the exact net

// Returns the region; idx/t are valid for DC_FINE and DC_COARSE (compress/tables.py Table.locate).
template <typename FPTYPE>
DC_HD int dc_locate(FPTYPE x, const FPTYPE* info, int& idx, FPTYPE& t) {
    const FPTYPE lower = info[0], upper = info[1], xmax = info[2], s0 = info[3], s1 = info[4], xmin = info[7];
    const int nspline = (int)info[5], first = (int)info[6], n_low = (int)info[8];
    int region;
    if (x >= lower && x < upper) {
        const int i0 = (int)((x - lower) / s0);
        t = x - dc_add(dc_mul((FPTYPE)i0, s0), lower);
        idx = n_low + i0;
        region = DC_FINE;
    } else if (x >= upper && x < xmax) {
        const int i1 = (int)((x - upper) / s1);
        idx = n_low + first + i1;
        t = x - dc_add(dc_mul((FPTYPE)i1, s1), upper);
        region = DC_COARSE;
    } else if (x >= xmin && x < lower) {
        idx = (int)((x - xmin) / s1);
        t = x - dc_add(dc_mul((FPTYPE)idx, s1), xmin);
        region = DC_COARSE;
    } else {
        idx = 0;
        t = (FPTYPE)0;
        return x < xmin ? DC_BELOW : DC_ABOVE;
    }
    idx = dc_imin(idx, nspline - 1);
    return region;
}

// dc_locate, with inputs in relu-split intervals reported as DC_SPLIT (a quintic cannot follow
// a kink; the exact net is exact there). offs = table_offset + 2 * tab.
template <typename FPTYPE>
DC_HD int dc_locate_split(FPTYPE x, const FPTYPE* info, const FPTYPE* table, const long long* offs, int& idx,
                          FPTYPE& t) {
    const int region = dc_locate(x, info, idx, t);
    if (region <= DC_COARSE && offs[1] >= 0 && table[offs[1] + idx] != (FPTYPE)0) return DC_SPLIT;
    return region;
}

// Table layouts. Output-major (DeePMD-kit's, layout 0): coefficient k of output c in interval idx
// at (idx*ng + c)*6 + k, so one thread's six loads are contiguous and neighbouring threads are
// 48 B apart. Coefficient-major (layout 1): at idx*6*ng + k*ng + c, so a warp's k-th loads are
// one contiguous run. The arithmetic is the same in both: results are equal bit for bit.
// dc_coef_at returns the address of coefficient 0 and sets the step between coefficients.
template <typename FPTYPE>
DC_HD const FPTYPE* dc_coef_at(const FPTYPE* coef, int cmajor, int idx, int ng, int c, int& step) {
    step = cmajor ? ng : 1;
    return cmajor ? coef + (long long)idx * 6 * ng + c : coef + ((long long)idx * ng + c) * 6;
}

// the layout code of a table_info row
template <typename FPTYPE>
DC_HD int dc_table_layout(const FPTYPE* info) {
    return (int)info[9];
}

// value of one quintic piece: c[k*step] are the coefficients of t^0..t^5
template <typename FPTYPE>
DC_HD FPTYPE dc_horner(const FPTYPE* c, int step, FPTYPE t) {
    const FPTYPE c0 = c[0], c1 = c[step], c2 = c[2 * step], c3 = c[3 * step], c4 = c[4 * step], c5 = c[5 * step];
    return c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * c5))));
}

template <typename FPTYPE>
DC_HD void dc_horner_d(const FPTYPE* c, int step, FPTYPE t, FPTYPE& v, FPTYPE& dv) {
    const FPTYPE c0 = c[0], c1 = c[step], c2 = c[2 * step], c3 = c[3 * step], c4 = c[4 * step], c5 = c[5 * step];
    v = c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * c5))));
    dv = c1 + t * ((FPTYPE)2 * c2 + t * ((FPTYPE)3 * c3 + t * ((FPTYPE)4 * c4 + t * (FPTYPE)5 * c5)));
}

// value (and derivative) of output c of table coefficients coef (layout cmajor) at interval idx
template <typename FPTYPE>
DC_HD FPTYPE dc_table_value(const FPTYPE* coef, int cmajor, int idx, int ng, int c, FPTYPE t) {
    int step;
    const FPTYPE* p = dc_coef_at(coef, cmajor, idx, ng, c, step);
    return dc_horner(p, step, t);
}

template <typename FPTYPE>
DC_HD void dc_table_value_d(const FPTYPE* coef, int cmajor, int idx, int ng, int c, FPTYPE t, FPTYPE& v,
                            FPTYPE& dv) {
    int step;
    const FPTYPE* p = dc_coef_at(coef, cmajor, idx, ng, c, step);
    dc_horner_d(p, step, t, v, dv);
}

// ---------------------------------------------------------------------------- environment
// DeePMD-kit's smooth switch w(r) and dw/dr (deepcomp_ase.envmat.switch), evaluated in double for
// both precisions: near rc the polynomial cancels, and in float it gives a w of either sign (a
// negative w turns DPA-1's direction r^, the attn_dotr gate, around). Every kernel computes w of
// a pair from the same r the same way, so forward and backward passes agree.
template <typename FPTYPE>
DC_HD void dc_switch(FPTYPE r, FPTYPE rs, FPTYPE rc, FPTYPE& w, FPTYPE& dw) {
    const double rd = (double)r, rsd = (double)rs, rcd = (double)rc;
    double u = (rd - rsd) / (rcd - rsd);
    u = u < 0.0 ? 0.0 : (u > 1.0 ? 1.0 : u);
    const double u2 = u * u;
    w = (FPTYPE)(u2 * u * (-6.0 * u2 + 15.0 * u - 10.0) + 1.0);
    dw = (FPTYPE)((rd > rsd && rd < rcd) ? (-30.0 * u2 * u2 + 60.0 * u2 * u - 30.0 * u2) / (rcd - rsd) : 0.0);
}

// Smooth factor of se_atten_v2's type-pair term and its d/dr (descriptors/se_atten_v2.py,
// type_term_switch): the environment switch w(r), or for models read from TensorFlow graphs
// 1 - (1 - rcut_smth * s)^3 clipped to [0, 1], with s = w / rho the raw radial entry.
template <typename FPTYPE>
DC_HD void dc_type_switch(FPTYPE r, FPTYPE rs, FPTYPE rc, FPTYPE prot, int tf, FPTYPE& sw, FPTYPE& dsw) {
    FPTYPE w, dw;
    dc_switch(r, rs, rc, w, dw);
    if (!tf) {
        sw = w;
        dsw = dw;
        return;
    }
    const FPTYPE rho = r + prot;
    const FPTYPE uu = (FPTYPE)1 - rs * (w / rho);
    const FPTYPE v = (FPTYPE)1 - uu * uu * uu;
    const bool inside = v > (FPTYPE)0 && v < (FPTYPE)1;
    dsw = inside ? (FPTYPE)3 * uu * uu * rs * (dw / rho - w / (rho * rho)) : (FPTYPE)0;
    sw = v < (FPTYPE)0 ? (FPTYPE)0 : (v > (FPTYPE)1 ? (FPTYPE)1 : v);
}

// Chain dE/dR (raw rows, ncomp 4 or 1) to dE/dx_ij (deepcomp_ase.envmat.rows_to_vector_gradient)
template <typename FPTYPE>
DC_HD void dc_rows_to_vec(const FPTYPE* v, const FPTYPE* g, int ncomp, FPTYPE rs, FPTYPE rc, FPTYPE prot,
                          FPTYPE* out) {
    const FPTYPE r = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    FPTYPE w, dw;
    dc_switch(r, rs, rc, w, dw);
    const FPTYPE rho = r + prot, rho2 = rho * rho;
    FPTYPE radial = g[0] * (dw / rho - w / rho2);
    FPTYPE gv[3] = {(FPTYPE)0, (FPTYPE)0, (FPTYPE)0};
    if (ncomp == 4) {
        gv[0] = g[1];
        gv[1] = g[2];
        gv[2] = g[3];
        radial += (gv[0] * v[0] + gv[1] * v[1] + gv[2] * v[2]) * (dw / rho2 - (FPTYPE)2 * w / (rho2 * rho));
    }
    const FPTYPE scale = w / rho2;
    for (int a = 0; a < 3; ++a) out[a] = v[a] / r * radial + gv[a] * scale;
}

// ---------------------------------------------------------------------------- activations
template <typename FPTYPE>
DC_HD void dc_activation(int code, FPTYPE x, FPTYPE& f, FPTYPE& f1) {
    switch (code) {
        case DC_ACT_TANH: {
            f = tanh(x);
            f1 = (FPTYPE)1 - f * f;
            break;
        }
        case DC_ACT_GELU: {
            const FPTYPE c = (FPTYPE)0.7978845608028654, a = (FPTYPE)0.044715;
            const FPTYPE u = c * (x + a * x * x * x);
            const FPTYPE th = tanh(u);
            const FPTYPE du = c * ((FPTYPE)1 + (FPTYPE)3 * a * x * x);
            f = (FPTYPE)0.5 * x * ((FPTYPE)1 + th);
            f1 = (FPTYPE)0.5 * x * ((FPTYPE)1 - th * th) * du + (FPTYPE)0.5 * th + (FPTYPE)0.5;
            break;
        }
        case DC_ACT_RELU: {
            f = x > (FPTYPE)0 ? x : (FPTYPE)0;
            f1 = x > (FPTYPE)0 ? (FPTYPE)1 : (FPTYPE)0;
            break;
        }
        case DC_ACT_RELU6: {
            f = x > (FPTYPE)0 ? (x < (FPTYPE)6 ? x : (FPTYPE)6) : (FPTYPE)0;
            f1 = (x > (FPTYPE)0 && x < (FPTYPE)6) ? (FPTYPE)1 : (FPTYPE)0;
            break;
        }
        case DC_ACT_SOFTPLUS: {
            // logaddexp(0, x) and its derivative sigmoid(x), overflow-free
            const FPTYPE e = exp(-(x > (FPTYPE)0 ? x : -x));
            f = (x > (FPTYPE)0 ? x : (FPTYPE)0) + log1p(e);
            f1 = x >= (FPTYPE)0 ? (FPTYPE)1 / ((FPTYPE)1 + e) : e / ((FPTYPE)1 + e);
            break;
        }
        case DC_ACT_SIGMOID: {
            const FPTYPE e = exp(-(x > (FPTYPE)0 ? x : -x));
            f = x >= (FPTYPE)0 ? (FPTYPE)1 / ((FPTYPE)1 + e) : e / ((FPTYPE)1 + e);
            f1 = f * ((FPTYPE)1 - f);
            break;
        }
        default: {
            f = x;
            f1 = (FPTYPE)1;
        }
    }
}

// ---------------------------------------------------------------------------- reductions
template <typename T>
DC_D T dc_warp_sum(T v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

// ---------------------------------------------------------------------------- exact embedding net
// G(x) and dG/dx of one scalar-input embedding net, evaluated by the whole block (every thread
// must call it: it synchronises). Used for the rare inputs outside [lower, xmax) of the table.
// sh holds 4*maxw FPTYPE; on return *g and *dg point into sh (n_out of the last layer values).
template <typename FPTYPE>
__device__ void dc_exact_embed_block(const int* layers, int first, int nl, const FPTYPE* params, FPTYPE x,
                                     FPTYPE* sh, int maxw, const FPTYPE** g, const FPTYPE** dg) {
    FPTYPE* y = sh;
    FPTYPE* dy = sh + maxw;
    FPTYPE* ny = sh + 2 * maxw;
    FPTYPE* ndy = sh + 3 * maxw;
    __syncthreads();  // the scratch may still be read by a previous use
    if (threadIdx.x == 0) {
        y[0] = x;
        dy[0] = (FPTYPE)1;
    }
    __syncthreads();
    for (int l = first; l < first + nl; ++l) {
        const int* L = layers + 8 * l;
        const int n_in = L[DC_L_NIN], n_out = L[DC_L_NOUT], act = L[DC_L_ACT], sc = L[DC_L_SHORTCUT];
        const FPTYPE* W = params + L[DC_L_W];
        const FPTYPE* b = params + L[DC_L_B];
        const FPTYPE* idt = L[DC_L_IDT] >= 0 ? params + L[DC_L_IDT] : (const FPTYPE*)0;
        for (int o = threadIdx.x; o < n_out; o += blockDim.x) {
            FPTYPE pre = (FPTYPE)0, a1 = (FPTYPE)0;
            for (int i = 0; i < n_in; ++i) {
                const FPTYPE wv = W[i * n_out + o];
                pre += y[i] * wv;
                a1 += dy[i] * wv;
            }
            pre += b[o];
            FPTYPE f, f1;
            dc_activation(act, pre, f, f1);
            FPTYPE z = f, dz = f1 * a1;
            if (idt) {
                z *= idt[o];
                dz *= idt[o];
            }
            if (sc == 1) {
                z += y[o];
                dz += dy[o];
            } else if (sc == 2) {
                z += y[o % n_in];
                dz += dy[o % n_in];
            }
            ny[o] = z;
            ndy[o] = dz;
        }
        __syncthreads();
        FPTYPE* t0 = y;
        FPTYPE* t1 = dy;
        y = ny;
        dy = ndy;
        ny = t0;
        ndy = t1;
    }
    *g = y;
    *dg = dy;
}

// Block-wide sum of NV values per thread; the result is valid in thread 0. red holds 8 * warps.
template <typename FPTYPE, int NV>
__device__ void dc_block_sum(FPTYPE* v, FPTYPE* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int q = 0; q < NV; ++q) v[q] = dc_warp_sum(v[q]);
    __syncthreads();
    if (lane == 0)
        for (int q = 0; q < NV; ++q) red[8 * warp + q] = v[q];
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int q = 0; q < NV; ++q) {
            FPTYPE s = (FPTYPE)0;
            for (int w = 0; w < nwarps; ++w) s += red[8 * w + q];
            v[q] = s;
        }
    }
}

// type block of a neighbour slot (sec[t] <= slot < sec[t+1])
DC_HD int dc_slot_type(const int* sec, int ntypes, int slot) {
    int t = 0;
    while (t + 1 < ntypes && slot >= sec[t + 1]) ++t;
    return t;
}

#endif  // DEEPCOMP_COMMON_CUH
