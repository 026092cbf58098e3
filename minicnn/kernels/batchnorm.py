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
rows, each block owning its partial sums), ``*_gpu`` (the reference's array expressions run
by CuPy: a few memory-bound launches, no raw CUDA needed). Each kernel is registered once
with its versions (``minicnn.kernels.registry``: ``MINICNN_KERNELS=reference`` runs the
references); the Numba version hands arrays too small to be worth waking threads for to
the reference.
"""
import numba
import numpy as np
from numba import njit, prange

from minicnn.backend import get_array_module
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


channel_stats_gpu = channel_stats_reference
backward_sums_gpu = backward_sums_reference
scale_shift_gpu = scale_shift_reference
scale_shift2_gpu = scale_shift2_reference


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
