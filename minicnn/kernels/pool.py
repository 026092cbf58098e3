"""Pooling kernels: max pooling with argmax, average pooling; forward and backward.

Every kernel here works on **channels-last** contiguous arrays: x is (N, H, W, C), y is
(N, OH, OW, C). The channel is the innermost loop, so the CPU versions run over C
contiguous numbers at a time (SIMD) and the GPU versions' neighbouring threads read
neighbouring addresses.

Notation
--------
    N, C      batch size, channels
    H, W      input height and width
    KH, KW    window (kernel) size
    SH, SW    stride
    PH, PW    implicit padding (−∞ for max, 0 for average) on each side
    DH, DW    dilation (max pooling only): gaps between the window's cells
    OH, OW    output size, from ``minicnn.kernels.output_size`` (PyTorch's ceil_mode rule)

Output cell (i, j) looks at the input cells

    h = i·SH − PH + a·DH   (a = 0 … KH−1)
    w = j·SW − PW + b·DW   (b = 0 … KW−1)

and of those only the ones with 0 ≤ h < H and 0 ≤ w < W hold numbers; the rest is padding.

Max pooling
-----------
    y[n, i, j, c]      = max over the window of x[n, h, w, c]
    argmax[n, i, j, c] = h·W + w where that maximum sits: an int32 index into the input's
                         H·W plane (the first in window order on ties; −1 for a window
                         made of padding only, which large dilations can produce)
    gx[n, h, w, c]     = Σ of gy[n, i, j, c] over the (i, j) whose argmax is h·W + w

A NaN in a window is its maximum (the first NaN, if several), as in PyTorch: a NaN
activation should surface, not be hidden by the pooling.

The backward needs argmax and the input size only, not the window geometry, so adaptive
max pooling (uneven windows) reuses it.

Average pooling (PyTorch's divisor rule)
----------------------------------------
    y[n, i, j, c]  = Σ over the window's cells inside the input of x[n, h, w, c] / divisor(i, j)
    gx[n, h, w, c] = Σ over the windows (i, j) containing (h, w) of gy[n, i, j, c] / divisor(i, j)

The divisor is separable, divisor(i, j) = count(i; H, KH, SH, PH) · count(j; W, KW, SW, PW),
where along one axis a window starting at s = i·S − P covers [s, s + K) and

    count_include_pad=True:   the cells of [s, s + K) inside the *padded* input [−P, size + P)
                              (padding counts; the extra cells past it that ceil_mode can
                              add do not)
    count_include_pad=False:  the cells of [s, s + K) inside the input [0, size)

Versions
--------
``*_reference``  NumPy, one Python iteration per output cell; reads like the formulas
                 (written with ``xp``, so they run on CuPy arrays too).
``*_numba``      Numba. Forwards: parallel over output rows (n, i), each thread writing
                 only its rows. Max backward: scatter through argmax, parallel over
                 samples (a thread owns a sample's whole gx, so no two threads add to one
                 cell). Average backward: gather, parallel over input rows.
``*_cuda``       CUDA. Forwards and the average backward: one thread per element written,
                 a gather. Max backward: scatter through argmax, one thread per (sample,
                 channel) column, walking the windows in order — no atomics, so the sums
                 are the reference's, bit for bit, and a GPU run repeats exactly.
Each kernel is registered once with its three versions (``minicnn/kernels/registry.py``),
which picks by the array's device and the kernel mode.

The max-pool Numba kernels are serial loops over a block of output rows (forward) or
samples (backward), run one block per thread by ``kernels/threads.py``: they compile in a
third of the time of ``prange`` kernels, which LeNet-5's first training step waits for.
The average-pool ones use ``prange``.

Speed (this machine, one core, float32, 3×3 stride 2 padding 1 on (64, 64, 56, 56)): max
forward ≈ 7.4 ms, max backward ≈ 6.8 ms, average forward ≈ 7.0 ms, average backward
≈ 8.3 ms — each about the time of one plain copy of the input (≈ 6 ms). What it took: the
outputs are allocated by NumPy, not inside Numba (see ``max_pool_forward_numba``).
"""
import numpy as np
from numba import njit, prange

from minicnn.backend import get_array_module
from minicnn.kernels import _gpu
from minicnn.kernels.registry import register_kernel
from minicnn.kernels.threads import over_blocks


# ============================================================================ helpers

def window_count_reference(index, kernel, stride, padding, size, count_include_pad):
    """Cells along one axis that average-pooling window ``index`` divides by (see above).

    ``index`` may be an integer array: returns the count of every window at once.
    """
    start = index * stride - padding
    end = start + kernel
    if count_include_pad:
        return np.minimum(end, size + padding) - start
    return np.minimum(end, size) - np.maximum(start, 0)


# ============================================================================ max pooling

def max_pool_forward_reference(x, kernel_size, stride, padding, dilation, out_size):
    """y, argmax of max pooling; plain NumPy, one Python iteration per output cell."""
    N, H, W, C = x.shape
    (KH, KW), (SH, SW), (PH, PW), (DH, DW), (OH, OW) = (kernel_size, stride, padding,
                                                         dilation, out_size)
    xp = get_array_module(x)
    y = xp.empty((N, OH, OW, C), x.dtype)
    argmax = xp.empty((N, OH, OW, C), np.int32)
    for i in range(OH):
        for j in range(OW):
            rows = i * SH - PH + DH * np.arange(KH)
            cols = j * SW - PW + DW * np.arange(KW)
            rows, cols = rows[(rows >= 0) & (rows < H)], cols[(cols >= 0) & (cols < W)]
            if rows.size == 0 or cols.size == 0:          # a window of padding only
                y[:, i, j, :], argmax[:, i, j, :] = -np.inf, -1
                continue
            window = x[:, rows][:, :, cols].reshape(N, rows.size * cols.size, C)
            best = window.argmax(axis=1)                  # (N, C), first maximum on ties
            y[:, i, j, :] = xp.take_along_axis(window, best[:, None, :], axis=1)[:, 0]
            argmax[:, i, j, :] = (xp.asarray(rows)[best // cols.size] * W
                                  + xp.asarray(cols)[best % cols.size])
    return y, argmax


@njit(nogil=True, cache=True)
def _max_pool_forward_numba(x, y, argmax, first, last, KH, KW, SH, SW, PH, PW, DH, DW):
    """Output rows (n, i) = first … last − 1 (a thread's block, see kernels/threads.py)."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    for row in range(first, last):             # each thread owns whole output rows
        n, i = row // OH, row % OH
        for j in range(OW):
            best, where = y[n, i, j], argmax[n, i, j]
            best[:] = -np.inf
            where[:] = -1
            for a in range(KH):
                h = i * SH - PH + a * DH
                if h < 0 or h >= H:
                    continue
                for b in range(KW):
                    w = j * SW - PW + b * DW
                    if w < 0 or w >= W:
                        continue
                    flat = h * W + w
                    cell = x[n, h, w]
                    for c in range(C):             # C contiguous numbers
                        v, old = cell[c], best[c]
                        # v != v: a NaN wins (once), so NaNs propagate as in PyTorch.
                        # Selects, not an if: with few channels (LeNet's 6) the loop runs
                        # scalar, and a data-dependent branch mispredicts half the time
                        # (2.2 ms → 1.1 ms for (128, 6, 28, 28); ≈6% slower at C = 64).
                        take = (v > old) | ((v != v) & (old == old))
                        best[c] = v if take else old
                        where[c] = flat if take else where[c]


def max_pool_forward_numba(x, kernel_size, stride, padding, dilation, out_size):
    """y, argmax of max pooling; Numba, parallel over output rows."""
    x = np.ascontiguousarray(x)
    N, _, _, C = x.shape
    # Outputs are allocated by NumPy, not inside Numba: NumPy asks the kernel for huge
    # pages, so first touching a fresh 50 MB array costs ≈2 ms instead of ≈20 ms of 4 kB
    # page faults (measured on this machine).
    y = np.empty((N,) + tuple(out_size) + (C,), x.dtype)
    argmax = np.empty(y.shape, np.int32)
    window = _ints(kernel_size, stride, padding, dilation)
    KH, KW = window[:2]
    over_blocks(lambda first, last: _max_pool_forward_numba(x, y, argmax, first, last, *window),
                N * y.shape[1], y.shape[2] * KH * KW * C)
    return y, argmax


def max_pool_values_reference(x, kernel_size, stride, padding, dilation, out_size):
    """y of max pooling alone, for a forward no backward follows (inference)."""
    return max_pool_forward_reference(x, kernel_size, stride, padding, dilation, out_size)[0]


@njit(nogil=True, cache=True)
def _max_pool_values_numba(x, y, first, last, KH, KW, SH, SW, PH, PW, DH, DW):
    """``_max_pool_forward_numba`` without the argmax: one select per value (a NaN wins
    and then stays, since nothing is greater than NaN)."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    for row in range(first, last):
        n, i = row // OH, row % OH
        for j in range(OW):
            best = y[n, i, j]
            best[:] = -np.inf
            for a in range(KH):
                h = i * SH - PH + a * DH
                if h < 0 or h >= H:
                    continue
                for b in range(KW):
                    w = j * SW - PW + b * DW
                    if w < 0 or w >= W:
                        continue
                    cell = x[n, h, w]
                    for c in range(C):
                        v = cell[c]
                        best[c] = v if (v > best[c]) | (v != v) else best[c]


def max_pool_values_numba(x, kernel_size, stride, padding, dilation, out_size):
    """y of max pooling alone; Numba. LeNet-5's two poolings at batch 64, one core:
    ≈ 0.52 ms with the argmax, ≈ 0.2 ms without."""
    x = np.ascontiguousarray(x)
    N, _, _, C = x.shape
    y = np.empty((N,) + tuple(out_size) + (C,), x.dtype)
    window = _ints(kernel_size, stride, padding, dilation)
    KH, KW = window[:2]
    over_blocks(lambda first, last: _max_pool_values_numba(x, y, first, last, *window),
                N * y.shape[1], y.shape[2] * KH * KW * C)
    return y


def max_pool_backward_reference(gy, argmax, in_size):
    """gx of max pooling: each gy goes to the input cell its argmax names."""
    N, OH, OW, C = gy.shape
    H, W = in_size
    xp = get_array_module(gy)
    gx = xp.zeros((N, H * W, C), gy.dtype)
    n, c = xp.arange(N)[:, None], xp.arange(C)[None, :]
    for i in range(OH):
        for j in range(OW):
            index = argmax[:, i, j, :]                    # (N, C): distinct (n, c) pairs
            valid = index >= 0
            gx[n, xp.where(valid, index, 0), c] += xp.where(valid, gy[:, i, j, :], 0)
    return gx.reshape(N, H, W, C)


@njit(nogil=True, cache=True)
def _max_pool_backward_numba(gy, argmax, gx, first, last):
    N, OH, OW, C = gy.shape
    # Scatter, but per sample: a thread owns sample n's whole gx plane, so the += of two
    # windows that share a maximum never race.
    for n in range(first, last):
        plane = gx[n]                              # (H·W, C)
        plane[:] = 0
        for i in range(OH):
            for j in range(OW):
                g, where = gy[n, i, j], argmax[n, i, j]
                for c in range(C):
                    if where[c] >= 0:
                        plane[where[c], c] += g[c]


def max_pool_backward_numba(gy, argmax, in_size):
    """gx of max pooling; Numba, one sample per thread."""
    gy = np.ascontiguousarray(gy)
    N, C = gy.shape[0], gy.shape[3]
    H, W = _ints(in_size)
    gx = np.empty((N, H * W, C), gy.dtype)             # NumPy-allocated: see max forward
    argmax = np.ascontiguousarray(argmax)
    over_blocks(lambda first, last: _max_pool_backward_numba(gy, argmax, gx, first, last),
                N, gy.shape[1] * gy.shape[2] * C)
    return gx.reshape(N, H, W, C)


# ============================================================================ average pooling

def avg_pool_forward_reference(x, kernel_size, stride, padding, out_size, count_include_pad):
    """y of average pooling; plain NumPy, one Python iteration per output cell."""
    N, H, W, C = x.shape
    (KH, KW), (SH, SW), (PH, PW), (OH, OW) = kernel_size, stride, padding, out_size
    y = get_array_module(x).empty((N, OH, OW, C), x.dtype)
    for i in range(OH):
        for j in range(OW):
            top, left = i * SH - PH, j * SW - PW
            window = x[:, max(top, 0):min(top + KH, H), max(left, 0):min(left + KW, W), :]
            divisor = (window_count_reference(i, KH, SH, PH, H, count_include_pad)
                       * window_count_reference(j, KW, SW, PW, W, count_include_pad))
            y[:, i, j, :] = window.sum(axis=(1, 2)) / divisor
    return y


@njit(parallel=True, cache=True)
def _avg_pool_forward_numba(x, y, KH, KW, SH, SW, PH, PW, inv_count_h, inv_count_w):
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    for row in prange(N * OH):
        n, i = row // OH, row % OH
        top = i * SH - PH
        for j in range(OW):
            left = j * SW - PW
            total = y[n, i, j]
            total[:] = 0
            for h in range(max(top, 0), min(top + KH, H)):
                for w in range(max(left, 0), min(left + KW, W)):
                    cell = x[n, h, w]
                    for c in range(C):
                        total[c] += cell[c]
            scale = inv_count_h[i] * inv_count_w[j]      # 1 / divisor(i, j)
            for c in range(C):
                total[c] *= scale


def _inverse_counts(out_len, kernel, stride, padding, size, count_include_pad, dtype):
    """1 / count along one axis for every window (the divisor is count_h · count_w), in
    the data's dtype so the kernels' inner loops stay in float32 for float32 data."""
    counts = window_count_reference(np.arange(out_len), kernel, stride, padding, size,
                                    count_include_pad)
    return (1.0 / counts).astype(dtype)


def avg_pool_forward_numba(x, kernel_size, stride, padding, out_size, count_include_pad):
    """y of average pooling; Numba, parallel over output rows."""
    x = np.ascontiguousarray(x)
    N, H, W, C = x.shape
    (KH, KW), (SH, SW), (PH, PW), (OH, OW) = _pairs(kernel_size, stride, padding, out_size)
    y = np.empty((N, OH, OW, C), x.dtype)               # NumPy-allocated: see max forward
    _avg_pool_forward_numba(
        x, y, KH, KW, SH, SW, PH, PW,
        _inverse_counts(OH, KH, SH, PH, H, count_include_pad, x.dtype),
        _inverse_counts(OW, KW, SW, PW, W, count_include_pad, x.dtype))
    return y


def avg_pool_backward_reference(gy, kernel_size, stride, padding, in_size, count_include_pad):
    """gx of average pooling: each window spreads gy / divisor over its input cells."""
    N, OH, OW, C = gy.shape
    (KH, KW), (SH, SW), (PH, PW), (H, W) = kernel_size, stride, padding, in_size
    gx = get_array_module(gy).zeros((N, H, W, C), gy.dtype)
    for i in range(OH):
        for j in range(OW):
            top, left = i * SH - PH, j * SW - PW
            divisor = (window_count_reference(i, KH, SH, PH, H, count_include_pad)
                       * window_count_reference(j, KW, SW, PW, W, count_include_pad))
            gx[:, max(top, 0):min(top + KH, H), max(left, 0):min(left + KW, W), :] += (
                gy[:, i, j, None, None, :] / divisor)
    return gx


@njit(cache=True)
def _windows_containing(position, kernel, stride, padding, out_len):
    """The range [first, last] of windows along an axis whose cells include ``position``:
    window o covers o·S − P ≤ position ≤ o·S − P + K − 1."""
    first = -((kernel - 1 - position - padding) // stride)   # ceil((pos + P − K + 1) / S)
    last = (position + padding) // stride
    return max(first, 0), min(last, out_len - 1)


@njit(parallel=True, cache=True)
def _avg_pool_backward_numba(gy, gx, KH, KW, SH, SW, PH, PW, inv_count_h, inv_count_w):
    N, OH, OW, C = gy.shape
    H, W = gx.shape[1], gx.shape[2]
    # Gather: a thread owns input rows and sums what each window sends to them.
    for row in prange(N * H):
        n, h = row // H, row % H
        i_first, i_last = _windows_containing(h, KH, SH, PH, OH)
        for w in range(W):
            j_first, j_last = _windows_containing(w, KW, SW, PW, OW)
            total = gx[n, h, w]
            total[:] = 0
            for i in range(i_first, i_last + 1):
                for j in range(j_first, j_last + 1):
                    scale = inv_count_h[i] * inv_count_w[j]
                    g = gy[n, i, j]
                    for c in range(C):
                        total[c] += g[c] * scale


def avg_pool_backward_numba(gy, kernel_size, stride, padding, in_size, count_include_pad):
    """gx of average pooling; Numba, each thread gathers into the input rows it owns."""
    gy = np.ascontiguousarray(gy)
    N, OH, OW, C = gy.shape
    (KH, KW), (SH, SW), (PH, PW), (H, W) = _pairs(kernel_size, stride, padding, in_size)
    gx = np.empty((N, H, W, C), gy.dtype)               # NumPy-allocated: see max forward
    _avg_pool_backward_numba(
        gy, gx, KH, KW, SH, SW, PH, PW,
        _inverse_counts(OH, KH, SH, PH, H, count_include_pad, gy.dtype),
        _inverse_counts(OW, KW, SW, PW, W, count_include_pad, gy.dtype))
    return gx


# ============================================================================ GPU (CUDA C)

# One thread per element it writes, with 64-bit indices and a grid-stride loop (as the
# im2col and depthwise kernels): one tensor may hold 2³¹ elements or more (VGG-16's first
# pooling input at batch 669), and a 32-bit index would wrap there. Index decomposition
# for channels-last (N, A, B, C):
#   c = t % C,  b = (t / C) % B,  a = (t / (C·B)) % A,  n = t / (C·B·A).
_NEGATIVE_INFINITY = r"""
__device__ inline float negative_infinity(float)   { return __int_as_float(0xff800000); }
__device__ inline double negative_infinity(double) {
    return __longlong_as_double(0xfff0000000000000ULL);
}
"""

_gpu.register("max_pool_forward_nhwc", _NEGATIVE_INFINITY + r"""
extern "C" __global__ void max_pool_forward_nhwc(
        const T* x, T* y, int* argmax, int N, int H, int W, int C, int OH, int OW,
        int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW) {
    long long total = (long long)N * OH * OW * C;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        int c = t % C, j = (t / C) % OW, i = (t / ((long long)C * OW)) % OH;
        long long n = t / ((long long)C * OW * OH);
        T best = negative_infinity((T)0);
        int best_index = -1;                   // stays -1 for a window of padding only
        for (int a = 0; a < KH; ++a) {
            int h = i * SH - PH + a * DH;
            if (h < 0 || h >= H) continue;
            for (int b = 0; b < KW; ++b) {
                int w = j * SW - PW + b * DW;
                if (w < 0 || w >= W) continue;
                T v = x[((n * H + h) * W + w) * C + c];
                if (v > best || (v != v && best == best)) { best = v; best_index = h * W + w; }
            }
        }
        y[t] = best;
        argmax[t] = best_index;                // an index into one H·W plane: fits an int
    }
}
""")

# Scatter without atomics: windows that overlap (3×3 stride 2) can share a maximum, so two
# windows may add to one gx cell. atomicAdd would make the order of those additions — and
# so the float sum's last bits — vary from run to run, and a resumed GPU run would drift
# from an uninterrupted one. Instead thread (n, c) owns the column gx[n, :, :, c] and walks
# the windows (i, j) in order, as the reference does: deterministic, equal to the CPU bit
# for bit. Threads next to each other take channels next to each other, so each window's
# read of gy and argmax, and each write to gx, is one coalesced access per warp.
_gpu.register("max_pool_backward_nhwc", r"""
extern "C" __global__ void max_pool_backward_nhwc(
        const T* gy, const int* argmax, T* gx, int N, int OH, int OW, int C, int H, int W) {
    long long total = (long long)N * C;                 // gx is zeroed by the caller
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        long long n = t / C;
        int c = t % C;
        for (long long window = n * OH * OW; window < (n + 1) * OH * OW; ++window) {
            int flat = argmax[window * C + c];
            if (flat >= 0) gx[(n * H * W + flat) * C + c] += gy[window * C + c];
        }
    }
}
""")

_WINDOW_COUNT = r"""
__device__ inline int window_count(int index, int K, int S, int P, int size, int include_pad) {
    int start = index * S - P, end = start + K;
    if (include_pad) return min(end, size + P) - start;
    return min(end, size) - max(start, 0);
}
"""

_gpu.register("avg_pool_forward_nhwc", _WINDOW_COUNT + r"""
extern "C" __global__ void avg_pool_forward_nhwc(
        const T* x, T* y, int N, int H, int W, int C, int OH, int OW,
        int KH, int KW, int SH, int SW, int PH, int PW, int include_pad) {
    long long total = (long long)N * OH * OW * C;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        int c = t % C, j = (t / C) % OW, i = (t / ((long long)C * OW)) % OH;
        long long n = t / ((long long)C * OW * OH);
        int top = i * SH - PH, left = j * SW - PW;
        T sum = 0;
        for (int h = max(top, 0); h < min(top + KH, H); ++h)
            for (int w = max(left, 0); w < min(left + KW, W); ++w)
                sum += x[((n * H + h) * W + w) * C + c];
        int divisor = window_count(i, KH, SH, PH, H, include_pad)
                    * window_count(j, KW, SW, PW, W, include_pad);
        y[t] = sum / (T)divisor;
    }
}
""")

# Gather: one thread per input element sums over the windows that contain it (no atomics).
_gpu.register("avg_pool_backward_nhwc", _WINDOW_COUNT + r"""
extern "C" __global__ void avg_pool_backward_nhwc(
        const T* gy, T* gx, int N, int H, int W, int C, int OH, int OW,
        int KH, int KW, int SH, int SW, int PH, int PW, int include_pad) {
    long long total = (long long)N * H * W * C;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        int c = t % C, w = (t / C) % W, h = (t / ((long long)C * W)) % H;
        long long n = t / ((long long)C * W * H);
        // windows i with i·SH − PH ≤ h ≤ i·SH − PH + KH − 1: from ceil((h + PH − KH + 1) / SH)
        // (at least 0) to floor((h + PH) / SH) (at most OH − 1); C's / is a floor here
        // because both numerators are positive where it is used.
        int from_h = h + PH - KH + 1, from_w = w + PW - KW + 1;
        int i_first = from_h > 0 ? (from_h + SH - 1) / SH : 0, i_last = min((h + PH) / SH, OH - 1);
        int j_first = from_w > 0 ? (from_w + SW - 1) / SW : 0, j_last = min((w + PW) / SW, OW - 1);
        T sum = 0;
        for (int i = i_first; i <= i_last; ++i)
            for (int j = j_first; j <= j_last; ++j) {
                int divisor = window_count(i, KH, SH, PH, H, include_pad)
                            * window_count(j, KW, SW, PW, W, include_pad);
                sum += gy[((n * OH + i) * OW + j) * C + c] / (T)divisor;
            }
        gx[t] = sum;
    }
}
""")


def max_pool_forward_cuda(x, kernel_size, stride, padding, dilation, out_size):
    """y, argmax of max pooling; CUDA, one thread per output element."""
    cupy = get_array_module(x)
    x = cupy.ascontiguousarray(x)
    N, H, W, C = x.shape
    OH, OW = out_size
    y = cupy.empty((N, OH, OW, C), x.dtype)
    argmax = cupy.empty((N, OH, OW, C), cupy.int32)
    _gpu.launch("max_pool_forward_nhwc", x.dtype, y.size, x, y, argmax,
                *_int32(N, H, W, C, OH, OW, *kernel_size, *stride, *padding, *dilation))
    return y, argmax


def max_pool_values_cuda(x, kernel_size, stride, padding, dilation, out_size):
    """y of max pooling alone; CUDA: the forward kernel (its argmax costs little there)."""
    return max_pool_forward_cuda(x, kernel_size, stride, padding, dilation, out_size)[0]


def max_pool_backward_cuda(gy, argmax, in_size):
    """gx of max pooling; CUDA, one thread per (sample, channel) column of gx."""
    cupy = get_array_module(gy)
    gy, argmax = cupy.ascontiguousarray(gy), cupy.ascontiguousarray(argmax)
    N, OH, OW, C = gy.shape
    H, W = in_size
    gx = cupy.zeros((N, H, W, C), gy.dtype)
    _gpu.launch("max_pool_backward_nhwc", gy.dtype, N * C, gy, argmax, gx,
                *_int32(N, OH, OW, C, H, W))
    return gx


def avg_pool_forward_cuda(x, kernel_size, stride, padding, out_size, count_include_pad):
    """y of average pooling; CUDA, one thread per output element."""
    cupy = get_array_module(x)
    x = cupy.ascontiguousarray(x)
    N, H, W, C = x.shape
    OH, OW = out_size
    y = cupy.empty((N, OH, OW, C), x.dtype)
    _gpu.launch("avg_pool_forward_nhwc", x.dtype, y.size, x, y,
                *_int32(N, H, W, C, OH, OW, *kernel_size, *stride, *padding,
                        int(bool(count_include_pad))))
    return y


def avg_pool_backward_cuda(gy, kernel_size, stride, padding, in_size, count_include_pad):
    """gx of average pooling; CUDA, one thread per input element (gather)."""
    cupy = get_array_module(gy)
    gy = cupy.ascontiguousarray(gy)
    N, OH, OW, C = gy.shape
    H, W = in_size
    gx = cupy.empty((N, H, W, C), gy.dtype)
    _gpu.launch("avg_pool_backward_nhwc", gy.dtype, gx.size, gy, gx,
                *_int32(N, H, W, C, OH, OW, *kernel_size, *stride, *padding,
                        int(bool(count_include_pad))))
    return gx


# ============================================================================ registry

#: (y, argmax) of max pooling over channels-last ``x``; see the module docstring
max_pool_forward = register_kernel("max_pool_forward", max_pool_forward_reference,
                                   numba=max_pool_forward_numba, cuda=max_pool_forward_cuda)
#: gx (N, H, W, C) of max pooling from gy and the forward's argmax
max_pool_values = register_kernel("max_pool_values", max_pool_values_reference,
                                  numba=max_pool_values_numba, cuda=max_pool_values_cuda)
max_pool_backward = register_kernel("max_pool_backward", max_pool_backward_reference,
                                    numba=max_pool_backward_numba, cuda=max_pool_backward_cuda)
#: y of average pooling over channels-last ``x``
avg_pool_forward = register_kernel("avg_pool_forward", avg_pool_forward_reference,
                                   numba=avg_pool_forward_numba, cuda=avg_pool_forward_cuda)
#: gx (N, H, W, C) of average pooling
avg_pool_backward = register_kernel("avg_pool_backward", avg_pool_backward_reference,
                                    numba=avg_pool_backward_numba, cuda=avg_pool_backward_cuda)


def _ints(*pairs):
    """Flatten (h, w) pairs into plain Python ints (one Numba signature for all callers)."""
    return tuple(int(v) for pair in pairs for v in pair)


def _pairs(*pairs):
    """(h, w) pairs as pairs of plain Python ints."""
    return tuple((int(a), int(b)) for a, b in pairs)


def _int32(*values):
    return tuple(np.int32(v) for v in values)
