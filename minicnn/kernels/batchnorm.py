"""Batch-norm kernels: per-channel reductions and per-channel affine maps over (M, C) rows.

Batch norm on channels-last memory sees its input as a matrix of M = N·H·W rows and C
columns, one column per channel. Everything it needs is then one of

    channel_stats(rows)                    mean_c = (1/M) Σ_m x[m, c]
                                           var_c  = (1/M) Σ_m (x[m, c] − mean_c)²   (biased)
    backward_sums(gy, rows, mean)          Σ_m gy[m, c]   and   Σ_m gy[m, c] · (x[m, c] − mean_c)
    scale_shift(rows, scale, shift)        y[m, c] = x[m, c] · scale_c + shift_c
    scale_shift2(a, scale_a, b, scale_b, shift)
                                           y[m, c] = a[m, c] · scale_a_c + b[m, c] · scale_b_c
                                                     + shift_c

Why kernels and not NumPy expressions: the NumPy forward makes several full passes and
temporaries (x − mean, its square, x·scale, + shift), the backward more; each Numba
kernel below is a single pass, and the reductions accumulate in float64 (NumPy's float32
sum down a column adds 65,536 numbers in float32). Measured on one core of this machine
(CPU time) with a (64, 64, 32, 32) channels-last float32 input: forward ≈ 1.9 ms against
≈ 14 ms for the NumPy expressions, forward + backward ≈ 4.3 ms against ≈ 27 ms.

The variance is computed in one pass from sums of (x − shift) and (x − shift)², with the
first row as the per-channel shift: E[(x−s)²] − E[x−s]² only cancels badly when the shift is
far from the mean, and any sample of the channel is close enough.

Versions: ``*_reference`` (NumPy, the formulas), ``*_cpu`` (Numba, parallel over blocks of
rows, each block owning its partial sums), ``*_gpu`` (CUDA: each reduction one pass over
the rows into per-chunk float64 partial sums, each affine map one elementwise launch — so
the forward reads the activations twice and the backward twice, where the reference's
expressions make five or six passes and as many temporaries). Each kernel is registered once
with its versions (``minicnn.kernels.registry``: ``MINICNN_KERNELS=reference`` runs the
references); the Numba version hands arrays too small to be worth waking threads for to
the reference.
"""
import numba
import numpy as np
from numba import njit, prange

from minicnn.backend import get_array_module
from minicnn.kernels import _gpu
from minicnn.kernels.registry import register_kernel


# ============================================================================ reference

def channel_stats_reference(rows):
    """(mean, biased variance) per column of (M, C) ``rows``, in float64."""
    xp = get_array_module(rows)
    mean = rows.mean(axis=0, dtype=xp.float64)
    return mean, ((rows - mean.astype(rows.dtype)) ** 2).mean(axis=0, dtype=xp.float64)


def backward_sums_reference(gy, rows, mean):
    """(Σ_m gy, Σ_m gy·(x − mean)) per column, in float64."""
    xp = get_array_module(rows)
    centered = rows - xp.asarray(mean, rows.dtype)
    return gy.sum(axis=0, dtype=xp.float64), (gy * centered).sum(axis=0, dtype=xp.float64)


def scale_shift_reference(rows, scale, shift):
    """rows · scale + shift, per column, in the dtype of ``rows``."""
    return (rows * scale + shift).astype(rows.dtype, copy=False)


def scale_shift2_reference(a, scale_a, b, scale_b, shift):
    """a · scale_a + b · scale_b + shift, per column, in the dtype of ``a``."""
    return (a * scale_a + b * scale_b + shift).astype(a.dtype, copy=False)


# ============================================================================ cpu (Numba)

def _block_count(rows_count):
    """A few blocks of rows per thread; each block owns its partial sums (no races), and
    more blocks than threads even out the work."""
    return max(1, min(rows_count, 4 * numba.get_num_threads()))


@njit(parallel=True, cache=True)
def _channel_sums_numba(rows, count):
    M, C = rows.shape
    step = (M + count - 1) // count
    partial = np.zeros((count, 2, C))                 # float64 accumulators
    for block in prange(count):
        sum1, sum2 = partial[block, 0], partial[block, 1]
        for m in range(block * step, min(M, (block + 1) * step)):
            for c in range(C):
                v = np.float64(rows[m, c]) - rows[0, c]   # shifted by the first row
                sum1[c] += v
                sum2[c] += v * v
    return partial.sum(axis=0)


def channel_stats_cpu(rows):
    """(mean, biased variance) per column, one parallel pass with float64 sums."""
    rows = np.ascontiguousarray(rows)
    M = rows.shape[0]
    sums = _channel_sums_numba(rows, _block_count(M))
    shifted_mean = sums[0] / M
    variance = np.maximum(sums[1] / M - shifted_mean ** 2, 0.0)
    return rows[0].astype(np.float64) + shifted_mean, variance


@njit(parallel=True, cache=True)
def _backward_sums_numba(gy, rows, mean, count):
    M, C = rows.shape
    step = (M + count - 1) // count
    partial = np.zeros((count, 2, C))
    for block in prange(count):
        sum_gy, sum_gy_centered = partial[block, 0], partial[block, 1]
        for m in range(block * step, min(M, (block + 1) * step)):
            for c in range(C):
                g = np.float64(gy[m, c])
                sum_gy[c] += g
                sum_gy_centered[c] += g * (rows[m, c] - mean[c])
    return partial.sum(axis=0)


def backward_sums_cpu(gy, rows, mean):
    """(Σ_m gy, Σ_m gy·(x − mean)) per column, one parallel pass with float64 sums."""
    sums = _backward_sums_numba(np.ascontiguousarray(gy), np.ascontiguousarray(rows),
                                np.asarray(mean, np.float64), _block_count(rows.shape[0]))
    return sums[0], sums[1]


@njit(parallel=True, cache=True)
def _scale_shift_numba(rows, scale, shift, y):
    M, C = rows.shape
    for m in prange(M):
        for c in range(C):
            y[m, c] = rows[m, c] * scale[c] + shift[c]


def scale_shift_cpu(rows, scale, shift):
    """rows · scale + shift per column in one parallel pass (scale, shift cast to rows'
    dtype so float32 stays float32)."""
    dtype = rows.dtype
    # allocated by NumPy, which asks for huge pages: first-touching a fresh array that
    # Numba allocated costs ≈7× more in page faults on this machine
    y = np.empty(rows.shape, dtype)
    _scale_shift_numba(np.ascontiguousarray(rows), np.asarray(scale, dtype),
                       np.asarray(shift, dtype), y)
    return y


@njit(parallel=True, cache=True)
def _scale_shift2_numba(a, scale_a, b, scale_b, shift, y):
    M, C = a.shape
    for m in prange(M):
        for c in range(C):
            y[m, c] = a[m, c] * scale_a[c] + b[m, c] * scale_b[c] + shift[c]


def scale_shift2_cpu(a, scale_a, b, scale_b, shift):
    """a · scale_a + b · scale_b + shift per column in one parallel pass."""
    dtype = a.dtype
    y = np.empty(a.shape, dtype)                          # NumPy-allocated, as above
    _scale_shift2_numba(np.ascontiguousarray(a), np.asarray(scale_a, dtype),
                        np.ascontiguousarray(b, dtype), np.asarray(scale_b, dtype),
                        np.asarray(shift, dtype), y)
    return y


# ============================================================================ gpu (CUDA)

# Reductions over the rows of an (M, C) matrix. Thread (x) owns one channel c of one chunk
# (y) of rows and sums down it in float64; threads next to each other read channels next to
# each other, so each row is one coalesced read. Every chunk writes its own partial sums
# (no atomics: the result does not depend on the order blocks run in), and the host adds
# the few chunks' partials: a (chunks, 2, C) array, tiny next to the rows.
_gpu.register("batchnorm_channel_sums", r"""
extern "C" __global__ void batchnorm_channel_sums(
        const T* rows, double* partial, long long M, int C, long long chunk_rows) {
    long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (c >= C) return;
    long long first = blockIdx.y * chunk_rows, last = min(M, first + chunk_rows);
    double shift = rows[c];                  // the first row: see the module docstring
    double sum = 0, sum_squares = 0;
    for (long long m = first; m < last; ++m) {
        double v = (double)rows[m * C + c] - shift;
        sum += v;
        sum_squares += v * v;
    }
    partial[(blockIdx.y * 2LL) * C + c] = sum;
    partial[(blockIdx.y * 2LL + 1) * C + c] = sum_squares;
}
""")

_gpu.register("batchnorm_backward_sums", r"""
extern "C" __global__ void batchnorm_backward_sums(
        const T* gy, const T* rows, const double* mean, double* partial, long long M, int C,
        long long chunk_rows) {
    long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (c >= C) return;
    long long first = blockIdx.y * chunk_rows, last = min(M, first + chunk_rows);
    double sum_gy = 0, sum_gy_centered = 0;
    for (long long m = first; m < last; ++m) {
        double g = gy[m * C + c];
        sum_gy += g;
        sum_gy_centered += g * ((double)rows[m * C + c] - mean[c]);
    }
    partial[(blockIdx.y * 2LL) * C + c] = sum_gy;
    partial[(blockIdx.y * 2LL + 1) * C + c] = sum_gy_centered;
}
""")

#: threads per block across channels, and the most chunks of rows (blocks along y)
CHANNEL_THREADS, MAX_CHUNKS = 128, 1024
#: fewer rows than this per chunk would make the partial sums outweigh the work
MIN_CHUNK_ROWS = 64


def _chunks(rows_count, channels):
    """(grid, block, rows per chunk) for a reduction over (rows_count, channels)."""
    threads = min(CHANNEL_THREADS, channels)
    chunk_rows = max(MIN_CHUNK_ROWS, -(-rows_count // MAX_CHUNKS))
    grid = (-(-channels // threads), -(-rows_count // chunk_rows))
    return grid, (threads,), chunk_rows


def _reduce_rows(name, rows, *arrays):
    """Launch reduction ``name`` over ``rows`` (M, C): the (2, C) float64 sums."""
    cupy = get_array_module(rows)
    M, C = rows.shape
    grid, block, chunk_rows = _chunks(M, C)
    partial = cupy.empty((grid[1], 2, C), dtype=cupy.float64)
    _gpu.kernel(name, rows.dtype)(grid, block, (*arrays, partial, np.int64(M), np.int32(C),
                                               np.int64(chunk_rows)))
    return partial.sum(axis=0)


def channel_stats_gpu(rows):
    """(mean, biased variance) per column: one pass over the rows, float64 sums."""
    cupy = get_array_module(rows)
    rows = cupy.ascontiguousarray(rows)
    sums = _reduce_rows("batchnorm_channel_sums", rows, rows)
    shifted_mean = sums[0] / len(rows)
    variance = cupy.maximum(sums[1] / len(rows) - shifted_mean ** 2, 0.0)
    return rows[0].astype(cupy.float64) + shifted_mean, variance


def backward_sums_gpu(gy, rows, mean):
    """(Σ_m gy, Σ_m gy·(x − mean)) per column: one pass over gy and the rows."""
    cupy = get_array_module(rows)
    rows = cupy.ascontiguousarray(rows)
    gy = cupy.ascontiguousarray(gy, dtype=rows.dtype)
    sums = _reduce_rows("batchnorm_backward_sums", rows, gy, rows,
                        cupy.ascontiguousarray(mean, dtype=cupy.float64))
    return sums[0], sums[1]


def scale_shift_gpu(rows, scale, shift):
    """rows · scale + shift per column: one elementwise launch (scale, shift broadcast)."""
    kernel = _gpu.elementwise("minicnn_scale_shift", "T x, T scale, T shift", "T y",
                              "y = x * scale + shift")
    return kernel(rows, scale.astype(rows.dtype, copy=False),
                  shift.astype(rows.dtype, copy=False),
                  get_array_module(rows).empty(rows.shape, rows.dtype))


def scale_shift2_gpu(a, scale_a, b, scale_b, shift):
    """a · scale_a + b · scale_b + shift per column: one elementwise launch."""
    kernel = _gpu.elementwise("minicnn_scale_shift2",
                              "T a, T scale_a, T b, T scale_b, T shift", "T y",
                              "y = a * scale_a + b * scale_b + shift")
    dtype = a.dtype
    return kernel(a, scale_a.astype(dtype, copy=False), b.astype(dtype, copy=False),
                  scale_b.astype(dtype, copy=False), shift.astype(dtype, copy=False),
                  get_array_module(a).empty(a.shape, dtype))


# ============================================================================ dispatch

#: Below this many elements the NumPy expressions win: waking Numba's threads costs tens of
#: microseconds (hundreds on a busy machine), more than the whole job (a (8, 16, 8, 8)
#: batch norm is ≈ 50 µs in NumPy).
SMALL = 1 << 15


def _numba_unless_small(numba_version, reference):
    """The Numba version for arrays worth waking its threads for, the reference below."""
    def run(rows, *args):
        return (reference if rows.size < SMALL else numba_version)(rows, *args)
    run.__name__ = numba_version.__name__
    return run


_channel_stats = register_kernel(
    "batchnorm_channel_stats", channel_stats_reference,
    numba=_numba_unless_small(channel_stats_cpu, channel_stats_reference), cuda=channel_stats_gpu)
_backward_sums = register_kernel(
    "batchnorm_backward_sums", backward_sums_reference,
    numba=_numba_unless_small(backward_sums_cpu, backward_sums_reference), cuda=backward_sums_gpu)
_scale_shift = register_kernel(
    "batchnorm_scale_shift", scale_shift_reference,
    numba=_numba_unless_small(scale_shift_cpu, scale_shift_reference), cuda=scale_shift_gpu)
_scale_shift2 = register_kernel(
    "batchnorm_scale_shift2", scale_shift2_reference,
    numba=_numba_unless_small(scale_shift2_cpu, scale_shift2_reference), cuda=scale_shift2_gpu)


def channel_stats(rows):
    return _channel_stats(rows)


def backward_sums(gy, rows, mean):
    return _backward_sums(gy, rows, mean)


def scale_shift(rows, scale, shift):
    xp = get_array_module(rows)
    return _scale_shift(rows, xp.asarray(scale, rows.dtype), xp.asarray(shift, rows.dtype))


def scale_shift2(a, scale_a, b, scale_b, shift):
    xp = get_array_module(a)
    scale_a, scale_b, shift = (xp.asarray(v, a.dtype) for v in (scale_a, scale_b, shift))
    return _scale_shift2(a, scale_a, b, scale_b, shift)
