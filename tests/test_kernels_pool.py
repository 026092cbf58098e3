"""The pooling and batch-norm kernels: every ``cpu`` version equals its ``reference``, and
(on a machine with a GPU) every ``gpu`` version equals its ``cpu`` one.

The references themselves are held to nested-loop definitions in tests/test_pool.py and
tests/test_norm.py through the Functions that use the kernels.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn.backend import cupy_or_none, gpu_available
from minicnn.kernels import batchnorm as bn_kernels
from minicnn.kernels import output_size
from minicnn.kernels import pool as kernels


@st.composite
def pool_problems(draw, dilated=True):
    """A random valid pooling problem: sizes, window, stride, padding (≤ kernel/2, the
    rule the Functions enforce), dilation, ceil_mode, count_include_pad, and an input of
    distinct values (no ties, so every version must pick the same argmax)."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilated else (1, 1)
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    smallest = [max(1, s - 2 * pad) for s, pad in zip(span, padding)]
    h, w = (draw(st.integers(low, low + 6)) for low in smallest)
    ceil_mode, include_pad = draw(st.booleans()), draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.permutation(n * h * w * c).reshape(n, h, w, c) * 0.125 - 3.0
    out = tuple(output_size(size, k, s, p, d, ceil_mode)
                for size, k, s, p, d in zip((h, w), kernel, stride, padding, dilation))
    return dict(x=x, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                out=out, include_pad=include_pad, rng=rng)


@settings(deadline=None)
@given(pool_problems(), st.sampled_from([np.float32, np.float64]))
def test_max_pool_forward_numba_equals_reference(p, dtype):
    x = p["x"].astype(dtype)
    args = (p["kernel"], p["stride"], p["padding"], p["dilation"], p["out"])
    y_ref, arg_ref = kernels.max_pool_forward_reference(x, *args)
    y_cpu, arg_cpu = kernels.max_pool_forward_numba(x, *args)
    assert y_cpu.dtype == dtype and arg_cpu.dtype == np.int32
    np.testing.assert_array_equal(y_cpu, y_ref)
    np.testing.assert_array_equal(arg_cpu, arg_ref)


@settings(deadline=None)
@given(pool_problems())
def test_max_pool_backward_numba_equals_reference(p):
    args = (p["kernel"], p["stride"], p["padding"], p["dilation"], p["out"])
    y, argmax = kernels.max_pool_forward_reference(p["x"], *args)
    gy = p["rng"].standard_normal(y.shape)
    in_size = p["x"].shape[1:3]
    np.testing.assert_allclose(kernels.max_pool_backward_numba(gy, argmax, in_size),
                               kernels.max_pool_backward_reference(gy, argmax, in_size),
                               rtol=1e-12, atol=1e-12)


@settings(deadline=None)
@given(pool_problems(dilated=False), st.sampled_from([np.float32, np.float64]))
def test_avg_pool_forward_numba_equals_reference(p, dtype):
    x = p["x"].astype(dtype)
    args = (p["kernel"], p["stride"], p["padding"], p["out"], p["include_pad"])
    y_cpu = kernels.avg_pool_forward_numba(x, *args)
    assert y_cpu.dtype == dtype
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y_cpu, kernels.avg_pool_forward_reference(x, *args),
                               rtol=tolerance, atol=tolerance)


@settings(deadline=None)
@given(pool_problems(dilated=False))
def test_avg_pool_backward_numba_equals_reference(p):
    gy = p["rng"].standard_normal((p["x"].shape[0],) + p["out"] + (p["x"].shape[3],))
    args = (p["kernel"], p["stride"], p["padding"], p["x"].shape[1:3], p["include_pad"])
    np.testing.assert_allclose(kernels.avg_pool_backward_numba(gy, *args),
                               kernels.avg_pool_backward_reference(gy, *args),
                               rtol=1e-12, atol=1e-12)


def test_avg_pool_backward_is_the_adjoint_of_the_forward():
    """<avg_pool(x), gy> = <x, avg_pool_backward(gy)> for any x, gy: the defining
    property of a linear map's gradient, with ceil_mode windows and padding."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 8, 3))
    kernel, stride, padding = (3, 2), (2, 3), (1, 1)
    out = (output_size(7, 3, 2, 1, 1, True), output_size(8, 2, 3, 1, 1, True))
    for include_pad in (True, False):
        y = kernels.avg_pool_forward_numba(x, kernel, stride, padding, out, include_pad)
        gy = rng.standard_normal(y.shape)
        gx = kernels.avg_pool_backward_numba(gy, kernel, stride, padding, (7, 8), include_pad)
        assert np.isclose((y * gy).sum(), (x * gx).sum(), rtol=1e-12)


def test_window_of_padding_only_gives_minus_infinity_and_no_gradient():
    """Kernel 2 with dilation 5 and padding 1 on a 4-wide input: the one window reads
    columns −1 and 4, both padding. PyTorch gives −inf there; so do all versions."""
    x = np.arange(8.0).reshape(1, 2, 4, 1)
    args = ((1, 2), (1, 1), (0, 1), (1, 5), (2, 1))
    for forward in (kernels.max_pool_forward_reference, kernels.max_pool_forward_numba):
        y, argmax = forward(x, *args)
        assert np.all(y == -np.inf) and np.all(argmax == -1)
        gx = kernels.max_pool_backward_numba(np.ones_like(y), argmax, (2, 4))
        assert not gx.any()


def test_window_count_follows_pytorch_divisor_rule():
    """ceil_mode windows and PyTorch's divisor, worked by hand."""
    # input 5, kernel 2, stride 2, padding 1: windows would start at −1, 1, 3, 5 in ceil
    # mode, but the one at 5 starts inside the right padding, so it is dropped
    assert output_size(5, 2, 2, 1, 1, True) == 3
    # input 6, kernel 3, stride 2, padding 1, ceil_mode: windows at −1, 1, 3, 5; the last
    # covers 5, 6, 7 — cell 5 is input, 6 is padding, 7 lies beyond the padded input
    assert output_size(6, 3, 2, 1, 1, True) == 4
    index = np.arange(4)
    np.testing.assert_array_equal(
        kernels.window_count_reference(index, 3, 2, 1, 6, True), [3, 3, 3, 2])
    np.testing.assert_array_equal(
        kernels.window_count_reference(index, 3, 2, 1, 6, False), [2, 3, 3, 1])


# ----------------------------------------------------------------------------- batch norm

@settings(deadline=None)
@given(st.integers(2, 300), st.integers(1, 70), st.floats(-50, 50), st.integers(0, 2**31 - 1))
def test_batchnorm_kernels_cpu_equal_reference(rows_count, channels, offset, seed):
    rng = np.random.default_rng(seed)
    rows = (rng.standard_normal((rows_count, channels)) * 3 + offset).astype(np.float32)
    gy = rng.standard_normal((rows_count, channels)).astype(np.float32)
    mean_ref, var_ref = bn_kernels.channel_stats_reference(rows)
    mean_cpu, var_cpu = bn_kernels.channel_stats_cpu(rows)
    exact = rows.astype(np.float64)
    np.testing.assert_allclose(mean_cpu, exact.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(var_cpu, exact.var(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mean_ref, exact.mean(axis=0), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(var_ref, exact.var(axis=0), rtol=1e-4, atol=1e-4)
    for ref, cpu in zip(bn_kernels.backward_sums_reference(gy, rows, mean_cpu),
                        bn_kernels.backward_sums_cpu(gy, rows, mean_cpu)):
        np.testing.assert_allclose(cpu, ref, rtol=1e-4, atol=1e-3)
    scale, shift = rng.standard_normal(channels), rng.standard_normal(channels)
    y = bn_kernels.scale_shift_cpu(rows, scale, shift)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, bn_kernels.scale_shift_reference(rows, scale, shift),
                               rtol=1e-5, atol=1e-4)
    y2 = bn_kernels.scale_shift2_cpu(gy, scale, rows, shift, scale)
    np.testing.assert_allclose(y2, bn_kernels.scale_shift2_reference(gy, scale, rows, shift,
                                                                      scale),
                               rtol=1e-5, atol=1e-4)


def test_batchnorm_statistics_survive_a_large_offset():
    """One-pass variance with a shift: values 1000 ± 0.01 in float32 keep their variance
    (the naive E[x²] − E[x]² in float32 would return noise or a negative number)."""
    rng = np.random.default_rng(0)
    rows = (1000 + 0.01 * rng.standard_normal((50_000, 4))).astype(np.float32)
    _, var = bn_kernels.channel_stats_cpu(rows)
    np.testing.assert_allclose(var, rows.astype(np.float64).var(axis=0), rtol=1e-6)


# ----------------------------------------------------------------------------- GPU

DEVICES = [pytest.param("gpu", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not gpu_available(), reason="no CUDA GPU with CuPy on this machine")])]


@pytest.mark.parametrize("device", DEVICES)
class TestGpuKernelsEqualCpu:
    """On a GPU machine: each CUDA kernel against its Numba twin, both dtypes, a problem
    with padding, stride, dilation and ceil_mode windows."""

    problems = [((2, 9, 7, 5), (3, 3), (2, 2), (1, 1), (1, 1), True, True),
                ((3, 8, 8, 64), (2, 3), (1, 2), (1, 0), (2, 1), False, False),
                ((1, 5, 6, 3), (3, 2), (3, 1), (0, 1), (1, 3), True, False)]

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("problem", problems)
    def test_pool_kernels(self, device, dtype, problem):
        cupy = cupy_or_none()
        shape, kernel, stride, padding, dilation, ceil_mode, include_pad = problem
        rng = np.random.default_rng(0)
        x = (rng.permutation(np.prod(shape)).reshape(shape) * 0.01).astype(dtype)
        out = tuple(output_size(s, k, st_, p, d, ceil_mode) for s, k, st_, p, d
                    in zip(shape[1:3], kernel, stride, padding, dilation))
        y_cpu, arg_cpu = kernels.max_pool_forward_numba(x, kernel, stride, padding, dilation,
                                                      out)
        y_gpu, arg_gpu = kernels.max_pool_forward_cuda(cupy.asarray(x), kernel, stride,
                                                      padding, dilation, out)
        np.testing.assert_array_equal(cupy.asnumpy(y_gpu), y_cpu)
        np.testing.assert_array_equal(cupy.asnumpy(arg_gpu), arg_cpu)
        gy = rng.standard_normal(y_cpu.shape).astype(dtype)
        tolerance = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(
            cupy.asnumpy(kernels.max_pool_backward_cuda(cupy.asarray(gy), arg_gpu,
                                                       shape[1:3])),
            kernels.max_pool_backward_numba(gy, arg_cpu, shape[1:3]), rtol=tolerance,
            atol=tolerance)

        out = tuple(output_size(s, k, st_, p, 1, ceil_mode) for s, k, st_, p
                    in zip(shape[1:3], kernel, stride, padding))
        y_cpu = kernels.avg_pool_forward_numba(x, kernel, stride, padding, out, include_pad)
        y_gpu = kernels.avg_pool_forward_cuda(cupy.asarray(x), kernel, stride, padding, out,
                                             include_pad)
        np.testing.assert_allclose(cupy.asnumpy(y_gpu), y_cpu, rtol=tolerance,
                                   atol=tolerance)
        gy = rng.standard_normal(y_cpu.shape).astype(dtype)
        gx_cpu = kernels.avg_pool_backward_numba(gy, kernel, stride, padding, shape[1:3],
                                               include_pad)
        gx_gpu = kernels.avg_pool_backward_cuda(cupy.asarray(gy), kernel, stride, padding,
                                               shape[1:3], include_pad)
        np.testing.assert_allclose(cupy.asnumpy(gx_gpu), gx_cpu, rtol=tolerance,
                                   atol=tolerance)

    def test_batchnorm_kernels(self, device):
        cupy = cupy_or_none()
        rng = np.random.default_rng(1)
        rows = rng.standard_normal((500, 7)) + 3
        gy = rng.standard_normal((500, 7))
        for cpu, gpu in zip(bn_kernels.channel_stats_cpu(rows),
                            bn_kernels.channel_stats_gpu(cupy.asarray(rows))):
            np.testing.assert_allclose(cupy.asnumpy(gpu), cpu, rtol=1e-10)
        mean = rows.mean(axis=0)
        for cpu, gpu in zip(bn_kernels.backward_sums_cpu(gy, rows, mean),
                            bn_kernels.backward_sums_gpu(cupy.asarray(gy),
                                                         cupy.asarray(rows),
                                                         cupy.asarray(mean))):
            np.testing.assert_allclose(cupy.asnumpy(gpu), cpu, rtol=1e-10, atol=1e-10)


def test_nan_propagates_through_max_pooling_like_pytorch():
    x = np.arange(2 * 6 * 6 * 3, dtype=np.float64).reshape(2, 6, 6, 3)
    x[0, 1, 1, 0] = x[0, 1, 2, 0] = np.nan          # two NaNs in one window
    args = ((3, 3), (2, 2), (1, 1), (1, 1), (3, 3))
    y_ref, arg_ref = kernels.max_pool_forward_reference(x, *args)
    y_cpu, arg_cpu = kernels.max_pool_forward_numba(x, *args)
    np.testing.assert_array_equal(y_cpu, y_ref)      # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(arg_cpu, arg_ref)
    assert np.isnan(y_cpu[0, 0, 0, 0]) and arg_cpu[0, 0, 0, 0] == 1 * 6 + 1
    assert np.isnan(y_cpu).sum() == 4                # each window holding a NaN
