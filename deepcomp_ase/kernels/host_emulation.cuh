// Host emulation of the CUDA constructs the kernels use, so that the very same kernel sources run
// on the CPU in tests (deepcomp_ase.kernels.loader.emulated_context; g++ -std=c++20 -pthread).
//
// Every CUDA thread of a block is a std::thread; blocks run one after the other. __syncthreads is
// a std::barrier over the block, warp shuffles exchange through per-thread slots between two
// per-warp barriers, atomics are std::atomic_ref. A thread that returns drops out of its
// barriers, as an exited CUDA thread does. Slow (a thread per CUDA thread), meant for tests on
// a few hundred atoms. It checks semantics, not performance, register use or shared-memory size.
#ifndef DEEPCOMP_HOST_EMULATION_CUH
#define DEEPCOMP_HOST_EMULATION_CUH

#include <math.h>
#include <string.h>

#include <atomic>
#include <barrier>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n) alignas(n)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace dc_emu {
struct Block {
    std::unique_ptr<std::barrier<>> bar;
    std::vector<std::unique_ptr<std::barrier<>>> warp_bars;
    std::vector<unsigned long long> shared;  // 8-byte aligned
    std::vector<unsigned long long> exch;    // one shuffle slot per thread
};
inline Block* g_block = nullptr;
inline dim3 g_blockDim, g_gridDim;
inline thread_local dim3 t_threadIdx, t_blockIdx;
}  // namespace dc_emu

#define threadIdx dc_emu::t_threadIdx
#define blockIdx dc_emu::t_blockIdx
#define blockDim dc_emu::g_blockDim
#define gridDim dc_emu::g_gridDim
#define DC_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(dc_emu::g_block->shared.data())

inline void __syncthreads() { dc_emu::g_block->bar->arrive_and_wait(); }

template <typename T>
inline T __shfl_down_sync(unsigned, T v, int delta) {
    dc_emu::Block* b = dc_emu::g_block;
    const unsigned tid = threadIdx.x, lane = tid & 31u;
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    memcpy(&b->exch[tid], &v, sizeof(T));
    b->warp_bars[tid >> 5]->arrive_and_wait();
    T out = v;
    if (lane + delta < 32u && tid + delta < b->exch.size()) memcpy(&out, &b->exch[tid + delta], sizeof(T));
    b->warp_bars[tid >> 5]->arrive_and_wait();
    return out;
}

template <typename T>
inline T dc_atomic_add(T* p, T v) {
    return std::atomic_ref<T>(*p).fetch_add(v);
}
inline double atomicAdd(double* p, double v) { return dc_atomic_add(p, v); }
inline float atomicAdd(float* p, float v) { return dc_atomic_add(p, v); }
inline int atomicAdd(int* p, int v) { return dc_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return dc_atomic_add(p, v); }
inline int atomicOr(int* p, int v) { return std::atomic_ref<int>(*p).fetch_or(v); }
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
    std::atomic_ref<unsigned long long> a(*p);
    unsigned long long old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long compare, unsigned long long v) {
    std::atomic_ref<unsigned long long>(*p).compare_exchange_strong(compare, v);
    return compare;  // the old value, as CUDA's atomicCAS
}
inline long long __double_as_longlong(double d) {
    long long u;
    memcpy(&u, &d, 8);
    return u;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}

namespace dc_emu {
template <typename... Args, std::size_t... I>
void call(void (*f)(Args...), void** args, std::index_sequence<I...>) {
    f(*reinterpret_cast<std::remove_cv_t<std::remove_reference_t<Args>>*>(args[I])...);
}

template <typename... Args>
int launch(void (*f)(Args...), const unsigned* grid, const unsigned* block, unsigned long long shmem, void** args) {
    g_gridDim = dim3{grid[0], grid[1], grid[2]};
    g_blockDim = dim3{block[0], block[1], block[2]};
    const unsigned nt = block[0] * block[1] * block[2];
    for (unsigned bz = 0; bz < grid[2]; ++bz)
        for (unsigned by = 0; by < grid[1]; ++by)
            for (unsigned bx = 0; bx < grid[0]; ++bx) {
                Block blk;
                blk.bar = std::make_unique<std::barrier<>>(nt);
                for (unsigned w = 0; w < (nt + 31) / 32; ++w)
                    blk.warp_bars.push_back(std::make_unique<std::barrier<>>(nt - 32 * w < 32 ? nt - 32 * w : 32));
                blk.shared.assign(shmem / 8 + 2, 0ull);
                blk.exch.assign(nt, 0ull);
                g_block = &blk;
                std::vector<std::thread> threads;
                threads.reserve(nt);
                for (unsigned t = 0; t < nt; ++t)
                    threads.emplace_back([&, t]() {
                        t_threadIdx = dim3{t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
                        t_blockIdx = dim3{bx, by, bz};
                        call(f, args, std::index_sequence_for<Args...>{});
                        blk.warp_bars[t >> 5]->arrive_and_drop();
                        blk.bar->arrive_and_drop();
                    });
                for (auto& th : threads) th.join();
                g_block = nullptr;
            }
    return 0;
}
}  // namespace dc_emu

#endif  // DEEPCOMP_HOST_EMULATION_CUH
