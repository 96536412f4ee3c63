// Element-wise parts of the fitting net; the GEMMs themselves are cuBLAS (cupy.matmul into
// preallocated buffers). Rows are atoms grouped by type (row_of_atom), one net per type.
//
//   forward  y = phi(x W + b) * idt + shortcut(x_in),  dact = phi'(x W + b) * idt
//   backward g_pre = grad * dact  (grad = 1 for the scalar output),  g_in = g_pre W^T + shortcut'(grad)
// shortcut: 0 none, 1 identity (same width), 2 input repeated twice (width doubles).
#include "common.cuh"

template <typename FPTYPE>
__global__ void fitting_activation(FPTYPE* y, FPTYPE* dact, const FPTYPE* bias, const FPTYPE* idt,
                                   const FPTYPE* x_in, int n, int m, int m_in, int act, int shortcut) {
    const long long total = (long long)n * m;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const int r = (int)(k / m), o = (int)(k % m);
        FPTYPE f, f1;
        dc_activation(act, y[k] + bias[o], f, f1);
        if (idt) {
            f *= idt[o];
            f1 *= idt[o];
        }
        if (shortcut == 1) f += x_in[(long long)r * m_in + o];
        else if (shortcut == 2) f += x_in[(long long)r * m_in + (o % m_in)];
        y[k] = f;
        dact[k] = f1;
    }
}

template <typename FPTYPE>
__global__ void fitting_grad_pre(FPTYPE* g_pre, const FPTYPE* grad, const FPTYPE* dact, int n, int m) {
    const long long total = (long long)n * m;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x)
        g_pre[k] = grad ? grad[k] * dact[k] : dact[k];
}

template <typename FPTYPE>
__global__ void fitting_grad_shortcut(FPTYPE* g_in, const FPTYPE* grad, int n, int m_in, int m, int shortcut) {
    const long long total = (long long)n * m_in;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long r = k / m_in;
        const int o = (int)(k % m_in);
        if (shortcut == 1) g_in[k] += grad[r * m + o];
        else if (shortcut == 2) g_in[k] += grad[r * m + o] + grad[r * m + o + m_in];
    }
}

// atom_energy[i] = mask * (has_net ? out[row] + bias_atom_e : 0) + ... ; type_info[t] =
// (has_net, bias_atom_e, out_bias, mask) as in evaluate._fitting_energy_and_grad
template <typename FPTYPE>
__global__ void atom_energy(const FPTYPE* out_rows, const int* row_of_atom, const int* atype, const double* type_info,
                            double* atom_energy, int nloc) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nloc) return;
    const double* ti = type_info + 4 * atype[i];
    double e = ti[0] != 0.0 ? (double)out_rows[row_of_atom[i]] + ti[1] : 0.0;
    e += ti[2];
    atom_energy[i] = e * ti[3];
}

#ifdef DEEPCOMP_STANDALONE
#define DC_FIT_INST(T)                                                                                       \
    template __global__ void fitting_activation<T>(T*, T*, const T*, const T*, const T*, int, int, int, int, int); \
    template __global__ void fitting_grad_pre<T>(T*, const T*, const T*, int, int);                          \
    template __global__ void fitting_grad_shortcut<T>(T*, const T*, int, int, int, int);                     \
    template __global__ void atom_energy<T>(const T*, const int*, const int*, const double*, double*, int);
DC_FIT_INST(float)
DC_FIT_INST(double)
#endif
