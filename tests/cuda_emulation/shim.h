// shim.h: just enough of CUDA for kernels/*.cu to compile, unchanged, as host C++ (g++ -std=c++17).
//
// A launch runs the grid's blocks one after another. Each block's threads are cooperative fibers on one
// OS thread: a thread runs until it reaches __syncthreads() or returns, then the next one runs; the
// barrier opens once every thread of the block has arrived, so any shared-memory read that the kernel
// has not fenced with a barrier sees whatever the earlier threads left (or NaN). __shared__ variables
// become function-local statics, which build.py locates in the symbol table and which are filled with
// NaN bytes (0xff) before every block. __ldg checks
// that its address lies inside one of the launch's array arguments. Denormals flush to zero (-ftz=true).
//
// What this is not: warps (no lockstep, no shuffles), memory ordering between blocks, the GPU's expf /
// logf rounding, or anything about speed. See docs/gpu.md.
#pragma once
#include <xmmintrin.h>
#include <pmmintrin.h>

#include <math.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// ---- the language extensions -----------------------------------------------------------------
#ifdef EMU_FIND_KERNELS  // build.py's first pass only: markers that find the kernels and their bounds
#define __global__ EMU_GLOBAL
#define __launch_bounds__(...) EMU_LAUNCH_BOUNDS(__VA_ARGS__)
#else
#define __global__
#define __launch_bounds__(...)
#endif
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static  // build.py finds these statics (and only these: CUDA has no others) by symbol

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(16) int4 { int x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// Written by the scheduler before each thread runs. External linkage, so that the compiler reloads
// them after every call it cannot see into (a barrier switches threads).
extern "C" {
uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
}

// expf, logf, fmaf, fmaxf, fminf: the C library's, from <math.h>.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, sizeof f); return f; }
inline int __float_as_int(float f) { int bits; std::memcpy(&bits, &f, sizeof bits); return bits; }

// ---- errors a launch reports back to Python ---------------------------------------------------
extern "C" { char emu_error[512]; }
static void emu_fail(const char* message) {
    if (!emu_error[0]) std::snprintf(emu_error, sizeof emu_error, "%s", message);
}

// ---- __ldg: a read-only load, checked against the launch's arrays --------------------------------
struct EmuRange { uintptr_t begin, end; };
static EmuRange emu_ranges[16];
static int emu_range_count;

template <class T>
inline T __ldg(const T* address) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(address);
    for (int i = 0; i < emu_range_count; ++i)
        if (a >= emu_ranges[i].begin && a + sizeof(T) <= emu_ranges[i].end) return *address;
    char message[200];
    std::snprintf(message, sizeof message,
                  "__ldg outside every array argument (block %u,%u thread %u): address %p",
                  blockIdx.x, blockIdx.y, threadIdx.x, static_cast<const void*>(address));
    emu_fail(message);
    return T(0);
}

// ---- threads as fibers --------------------------------------------------------------------------
// emu_switch(save, next): push the callee-saved registers, store the stack pointer in *save, load
// `next` as the stack pointer, pop and return into whatever that stack was doing.
extern "C" void emu_switch(void** save, void* next);
asm(R"(
.text
.globl emu_switch
.type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");

enum EmuState { EMU_READY, EMU_AT_BARRIER, EMU_DONE };
static const size_t EMU_STACK_BYTES = 256 * 1024;
static char* emu_stacks;
static size_t emu_stack_count;
static void* emu_scheduler_sp;
static void* emu_thread_sp[1024];
static EmuState emu_state[1024];
static int emu_current;
static void (*emu_body)(void**);
static void** emu_args;

inline void __syncthreads() {
    emu_state[emu_current] = EMU_AT_BARRIER;
    emu_switch(&emu_thread_sp[emu_current], emu_scheduler_sp);
}

static void emu_thread_entry() {
    emu_body(emu_args);
    emu_state[emu_current] = EMU_DONE;
    emu_switch(&emu_thread_sp[emu_current], emu_scheduler_sp);
    std::abort();  // a finished thread is never resumed
}

static void emu_start_thread(int t) {
    // A fresh stack that emu_switch "returns" into emu_thread_entry from, 16-byte aligned as after a call.
    char* top = emu_stacks + (size_t)(t + 1) * EMU_STACK_BYTES;
    void** sp = reinterpret_cast<void**>(top) - 2;
    sp[1] = nullptr;                                           // emu_thread_entry's (unused) return address
    sp[0] = reinterpret_cast<void*>(&emu_thread_entry);        // where emu_switch's ret lands
    sp -= 6;                                                   // six callee-saved registers, all zero
    for (int i = 0; i < 6; ++i) sp[i] = nullptr;
    emu_thread_sp[t] = sp;
    emu_state[t] = EMU_READY;
}

// The kernels' __shared__ variables (address, bytes), set once by build.py after loading.
static EmuRange emu_shared[64];
static int emu_shared_count;
extern "C" void emu_set_shared(const uintptr_t* ranges, int count) {
    emu_shared_count = count < 64 ? count : 64;
    for (int i = 0; i < emu_shared_count; ++i) emu_shared[i] = EmuRange{ranges[2 * i], ranges[2 * i + 1]};
}

// Runs every thread of the current block until all have returned; 0 on success.
static int emu_run_block(int threads) {
    for (int i = 0; i < emu_shared_count; ++i)  // NaN everywhere
        std::memset(reinterpret_cast<void*>(emu_shared[i].begin), 0xff, emu_shared[i].end - emu_shared[i].begin);
    for (int t = 0; t < threads; ++t) emu_start_thread(t);
    for (;;) {
        int waiting = 0, done = 0;
        for (int t = 0; t < threads; ++t) {
            if (emu_state[t] != EMU_READY) continue;
            emu_current = t;
            threadIdx = uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
            emu_switch(&emu_scheduler_sp, emu_thread_sp[t]);
        }
        for (int t = 0; t < threads; ++t) {
            waiting += emu_state[t] == EMU_AT_BARRIER;
            done += emu_state[t] == EMU_DONE;
        }
        if (done == threads) return 0;
        if (done > 0) {
            char message[160];
            std::snprintf(message, sizeof message, "__syncthreads reached by %d threads of block %u,%u while %d "
                          "had returned: a barrier inside divergent code", waiting, blockIdx.x, blockIdx.y, done);
            emu_fail(message);
            return 1;
        }
        for (int t = 0; t < threads; ++t) emu_state[t] = EMU_READY;  // everyone arrived: the barrier opens
    }
}

// One launch: grid and block are 3 unsigned ints each, ranges the array arguments' extents.
static int emu_launch(const unsigned* grid, const unsigned* block, void (*body)(void**), void** args,
                      const uintptr_t* ranges, int range_count) {
    emu_error[0] = 0;
    const int threads = (int)(block[0] * block[1] * block[2]);
    if (threads < 1 || threads > 1024 || range_count > 16) {
        emu_fail("invalid launch: a block holds 1 to 1024 threads");
        return 1;
    }
    if ((size_t)threads > emu_stack_count) {
        std::free(emu_stacks);
        emu_stacks = static_cast<char*>(std::aligned_alloc(64, (size_t)threads * EMU_STACK_BYTES));
        emu_stack_count = threads;
    }
    emu_range_count = range_count;
    for (int i = 0; i < range_count; ++i) emu_ranges[i] = EmuRange{ranges[2 * i], ranges[2 * i + 1]};
    emu_body = body;
    emu_args = args;
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);  // flush-to-zero and denormals-are-zero, like -ftz=true
    int status = 0;
    for (unsigned z = 0; z < grid[2] && !status; ++z)
        for (unsigned y = 0; y < grid[1] && !status; ++y)
            for (unsigned x = 0; x < grid[0] && !status; ++x) {
                blockIdx = uint3{x, y, z};
                status = emu_run_block(threads) || emu_error[0] != 0;
            }
    _mm_setcsr(csr);
    return status;
}
