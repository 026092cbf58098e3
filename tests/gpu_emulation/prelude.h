// CUDA C on the host: what a kernel source needs from the CUDA compiler and runtime,
// written in standard C++20 so that g++ compiles the very sources nvcc compiles.
//
// Threads.  A launch runs every (block, thread) of its grid one after another on one host
// thread; blockIdx/threadIdx name the one running now.  A kernel that calls
// __syncthreads() is compiled as a C++20 coroutine instead (the harness rewrites its
// `void` into `host_block_thread`): the launcher starts one coroutine per thread of a block
// and resumes them in turn, each up to its next __syncthreads(), so no thread passes a
// barrier before every thread of its block has reached it — the guarantee CUDA gives.
//
// Memory.  __shared__ becomes `static`: blocks run one at a time, so one copy serves the
// block that runs.  atomicAdd is a plain read-add-write: nothing runs concurrently.
#pragma once
#include <cmath>
#include <coroutine>
#include <cstdint>
#include <cstring>
#include <exception>
#include <type_traits>
#include <vector>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

static dim3 gridDim, blockDim, blockIdx, threadIdx;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

// ------------------------------------------------------------------ __syncthreads()

// Coroutine frames come from a free list: a launch starts one per thread of every block,
// all of one size, and malloc would dominate the emulation's time.
struct host_frame_pool {
    std::vector<void*> free_frames;
    std::size_t frame_size = 0;
    void* take(std::size_t size) {
        if (size == frame_size && !free_frames.empty()) {
            void* frame = free_frames.back();
            free_frames.pop_back();
            return frame;
        }
        return ::operator new(size);
    }
    void give(void* frame, std::size_t size) {
        if (frame_size == 0) frame_size = size;
        if (size == frame_size) free_frames.push_back(frame);
        else ::operator delete(frame);
    }
};
static host_frame_pool host_frames;

struct host_block_thread {
    struct promise_type {
        static void* operator new(std::size_t size) { return host_frames.take(size); }
        static void operator delete(void* frame, std::size_t size) {
            host_frames.give(frame, size);
        }
        host_block_thread get_return_object() {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() noexcept { return {}; }
        std::suspend_always final_suspend() noexcept { return {}; }
        void return_void() {}
        void unhandled_exception() { std::terminate(); }
    };
    std::coroutine_handle<promise_type> handle;
};

#define __syncthreads() co_await std::suspend_always{}

// ------------------------------------------------------------------ bounds

// Every pointer parameter of a kernel arrives as a host_array: the pointer, the number of
// elements its array holds, and an index check on each access. The first access outside
// an array is recorded (which parameter, which index, which thread) and served from a
// scratch cell so that the launch can finish; the launcher then reports it.
struct host_violation {
    int parameter = -1;
    long long index = 0, extent = 0;
    dim3 block, thread;
};
static host_violation host_first_violation;

template <typename T> struct host_array {
    T* data;
    long long extent;
    int parameter;
    T& operator[](long long i) const {
        if (i >= 0 && i < extent) return data[i];
        if (host_first_violation.parameter < 0)
            host_first_violation = {parameter, i, extent, blockIdx, threadIdx};
        static std::remove_const_t<T> scratch;
        return scratch;
    }
};

// ------------------------------------------------------------------ atomics

template <typename T> inline T atomicAdd(T* address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}

// ------------------------------------------------------------------ intrinsics

inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, 4); return f; }
inline int __float_as_int(float f) { int bits; std::memcpy(&bits, &f, 4); return bits; }
inline double __longlong_as_double(long long bits) {
    double d; std::memcpy(&d, &bits, 8); return d;
}
inline long long __double_as_longlong(double d) {
    long long bits; std::memcpy(&bits, &d, 8); return bits;
}
template <typename T> inline T __ldg(const T* address) { return *address; }

// CUDA's min and max are overloaded per type; the host's come from <algorithm> as
// templates of one type. These take what CUDA's do: two numbers of one type.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

using std::abs; using std::ceil; using std::cos; using std::exp; using std::fabs;
using std::floor; using std::fmax; using std::fmin; using std::log; using std::pow;
using std::sin; using std::sqrt; using std::tanh; using std::isnan; using std::isinf;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }

// ------------------------------------------------------------------ launching

// Run a grid whose threads need no barrier: every (block, thread), one after another.
template <typename Body> void host_run_grid(dim3 grid, dim3 block, Body body) {
    gridDim = grid;
    blockDim = block;
    for (blockIdx.z = 0; blockIdx.z < grid.z; ++blockIdx.z)
    for (blockIdx.y = 0; blockIdx.y < grid.y; ++blockIdx.y)
    for (blockIdx.x = 0; blockIdx.x < grid.x; ++blockIdx.x)
        for (threadIdx.z = 0; threadIdx.z < block.z; ++threadIdx.z)
        for (threadIdx.y = 0; threadIdx.y < block.y; ++threadIdx.y)
        for (threadIdx.x = 0; threadIdx.x < block.x; ++threadIdx.x)
            body();
}

// Run a grid of coroutine threads: per block, start every thread, then resume each in
// turn until all have finished. Returns 0, or 1 when some threads of a block finished
// while others still waited at a __syncthreads() (undefined behaviour in CUDA).
template <typename Start> int host_run_grid_with_barriers(dim3 grid, dim3 block, Start start) {
    gridDim = grid;
    blockDim = block;
    const unsigned int threads = block.x * block.y * block.z;
    std::vector<std::coroutine_handle<host_block_thread::promise_type>> handles(threads);
    std::vector<dim3> index(threads);
    int divergent = 0;
    for (blockIdx.z = 0; blockIdx.z < grid.z; ++blockIdx.z)
    for (blockIdx.y = 0; blockIdx.y < grid.y; ++blockIdx.y)
    for (blockIdx.x = 0; blockIdx.x < grid.x; ++blockIdx.x) {
        unsigned int t = 0;
        for (unsigned int z = 0; z < block.z; ++z)
        for (unsigned int y = 0; y < block.y; ++y)
        for (unsigned int x = 0; x < block.x; ++x, ++t) {
            index[t] = dim3{x, y, z};
            threadIdx = index[t];
            handles[t] = start().handle;
        }
        for (unsigned int running = threads; running > 0;) {
            unsigned int finished = 0;
            for (t = 0; t < threads; ++t) {
                if (handles[t].done()) { ++finished; continue; }
                threadIdx = index[t];
                handles[t].resume();            // up to the next __syncthreads() or the end
                if (handles[t].done()) ++finished;
            }
            if (finished > 0 && finished < threads) divergent = 1;
            running = threads - finished;
        }
        for (auto& handle : handles) handle.destroy();
    }
    return divergent;
}
