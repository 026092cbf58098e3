"""Every GPU kernel, run on this CPU-only machine through the host emulation of CUDA, held
to the same references as the CPU kernels — and the emulation itself held to CUDA's rules.

Why an emulation and not Numba's CUDA simulator (``tests/gpu_emulation/__init__.py`` says it
at length): minicnn's GPU kernels are CUDA C strings that CuPy compiles; the emulation
compiles *those strings* for the host with g++ and runs every thread of every launch,
checking each argument against the kernel's parameter list and every array access against
the array's bounds. A simulator would test a
Python port of the kernels, one Python thread per GPU thread. What stays for a real GPU
(``pytest -m gpu``): races between threads and speed.

The problems come from the CPU-kernel tests' own strategies (tests/test_conv.py,
tests/test_kernels_pool.py), so a GPU kernel meets every case a CPU kernel meets.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn.backend import device_of, get_array_module, gpu_available
from minicnn.kernels import _gpu, batchnorm, channels_last, depthwise, im2col as im2col_kernels
from minicnn.kernels import optim as optim_kernels, pool, random as random_kernels
from minicnn.kernels.im2col import ConvGeometry
from minicnn.kernels.registry import KERNELS
from tests.gpu_emulation import GPU_KINDS, emulated_gpu, host_cuda, on_gpu
from tests.test_conv import _arrays, conv_settings
from tests.test_kernels_pool import pool_problems


@pytest.fixture(scope="module", params=GPU_KINDS)
def cupy(request):
    """The emulated GPU; on a machine with a CUDA GPU, that GPU too (marked ``gpu``)."""
    with on_gpu(request.param) as module:
        yield module


@pytest.fixture(scope="module")
def emulated():
    """The emulation alone: for the tests of the emulation's own rules."""
    with emulated_gpu() as module:
        yield module


# ============================================================================ the emulation

def test_inside_the_emulation_minicnn_sees_a_gpu_and_outside_it_does_not():
    real = gpu_available()
    with emulated_gpu() as cupy:
        assert gpu_available()
        x = cupy.asarray(np.arange(6.0))
        assert device_of(x) == "gpu" and get_array_module(x) is cupy
        assert type(x * 2 + 1) is cupy.ndarray and type(x.sum()) is cupy.ndarray
        assert type(x.get()) is np.ndarray
    assert gpu_available() == real


def test_a_host_array_meeting_a_device_array_is_refused_as_cupy_refuses_it(emulated):
    device, host = emulated.ones(3), np.ones(3)
    for mix in (lambda: device + host, lambda: host * device,
                lambda: emulated.maximum(device, host), lambda: np.concatenate([device, host]),
                lambda: emulated.concatenate([device, host]),
                lambda: emulated.ascontiguousarray(host)):
        with pytest.raises(TypeError, match="got a numpy.ndarray where CuPy takes cupy.ndarray"):
            mix()
    with pytest.raises(TypeError, match="can only be copied in whole"):
        device[1:] = host[1:]
    device[...] = host * 2                                       # a whole copy is allowed
    assert float(emulated.asarray(host).sum()) == 3.0           # an explicit transfer too
    assert float(device.sum()) == 6.0


_CHECKED = r"""
extern "C" __global__ void scaled_copy(const T* x, T* y, int n, T factor) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x)
        y[i] = x[i] * factor;
}
"""


def test_a_launch_is_checked_against_the_kernel_parameter_list(emulated):
    kernel = emulated.RawKernel(_gpu.typed_source(_CHECKED, np.float32), "scaled_copy")
    x, y = emulated.arange(10, dtype=emulated.float32), emulated.zeros(10, emulated.float32)
    kernel((3,), (4,), (x, y, np.int32(10), np.float32(2)))  # 12 threads for 10 elements
    np.testing.assert_array_equal(y.get(), np.arange(10) * 2)
    refusals = [
        ((x.astype(emulated.float64), y, np.int32(10), np.float32(2)),
         "expected an array of float32"),
        ((x, y, 10, np.float32(2)), "argument 2 .n, int.: expected numpy.int32, got int"),
        ((x, y, np.int64(10), np.float32(2)), "expected numpy.int32, got numpy.int64"),
        ((x, y, np.int32(10)), "takes 4 arguments, the launch passes 3"),
        ((x.get(), y, np.int32(10), np.float32(2)), "expected a cupy.ndarray, got ndarray"),
        ((emulated.arange(20, dtype=emulated.float32)[::2], y, np.int32(10), np.float32(2)),
         "not C-contiguous"),
    ]
    for arguments, message in refusals:
        with pytest.raises((TypeError, ValueError), match=message):
            kernel((1,), (32,), arguments)
    with pytest.raises(ValueError, match="at most 1024 threads"):
        kernel((1,), (2048,), (x, y, np.int32(10), np.float32(2)))


_SHIFTED = r"""
extern "C" __global__ void shifted(const T* x, T* y, int n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x)
        y[i] = x[i + 1];
}
"""


def test_an_index_outside_an_array_is_an_error_naming_the_thread(emulated):
    """Where a GPU would read past the end silently, the emulation names who did it (every
    kernel of the library runs under this check in the tests below)."""
    kernel = emulated.RawKernel(_gpu.typed_source(_SHIFTED, np.float32), "shifted")
    x, y = emulated.arange(10, dtype=emulated.float32), emulated.zeros(10, emulated.float32)
    with pytest.raises(IndexError, match=r"shifted: thread \(9, 0, 0\) of block \(0, 0, 0\) "
                                         r"accessed x\[10\], outside its 10 elements"):
        kernel((1,), (16,), (x, y, np.int32(10)))
    kernel((1,), (16,), (x, y, np.int32(9)))
    np.testing.assert_array_equal(y.get(), list(range(1, 10)) + [0])


_BLOCK_SUM = r"""
extern "C" __global__ void block_sum(const T* x, T* out, int n) {
    __shared__ T partial[64];
    T sum = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) sum += x[blockIdx.x * n + i];
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}
"""

_DIVERGENT = r"""
extern "C" __global__ void divergent(T* out) {
    if (threadIdx.x == 0) return;            // thread 0 never reaches the barrier
    __syncthreads();
    out[threadIdx.x] = 1;
}
"""


def test_syncthreads_holds_every_thread_of_a_block_until_all_arrive(emulated):
    """A tree reduction in shared memory is right only if no thread reads a partial sum
    before its owner wrote it: the barrier is kept, for several blocks."""
    x = emulated.asarray(np.random.default_rng(0).standard_normal((5, 300)))
    out = emulated.zeros(5)
    emulated.RawKernel(_gpu.typed_source(_BLOCK_SUM, np.float64), "block_sum")(
        (5,), (64,), (x, out, np.int32(300)))
    np.testing.assert_allclose(out.get(), x.get().sum(axis=1), rtol=1e-12)
    kernel = emulated.RawKernel(_gpu.typed_source(_DIVERGENT, np.float64), "divergent")
    with pytest.raises(RuntimeError, match="disagreed on __syncthreads"):
        kernel((1,), (8,), (emulated.zeros(8),))


def test_elementwise_kernels_bind_types_and_broadcast_as_cupy_does(emulated):
    kernel = emulated.ElementwiseKernel("T x, T scale", "T y", "y = x * scale + i", "affine")
    x = emulated.asarray(np.arange(6.0).reshape(2, 3))
    y = kernel(x, emulated.asarray([1.0, 2.0, 3.0]), emulated.empty((2, 3)))
    np.testing.assert_array_equal(y.get(), np.arange(6.0).reshape(2, 3) * [1, 2, 3]
                                  + np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="type T is bound to float64 and float32"):
        kernel(x, emulated.ones(3, emulated.float32), emulated.empty((2, 3)))


def test_a_kernel_that_g_plus_plus_refuses_says_why(emulated):
    kernel = emulated.RawKernel("typedef float T;\nextern \"C\" __global__ void broken(T* x) "
                            "{ x[0] = undefined_name; }", "broken")
    with pytest.raises(host_cuda.HostCompileError, match="undefined_name"):
        kernel((1,), (1,), (emulated.zeros(1, emulated.float32),))


# ============================================================================ every kernel

#: the registered kernels with a CUDA version, each checked below
CHECKED_HERE = {"im2col", "col2im", "depthwise_forward", "depthwise_backward_input",
                "depthwise_backward_weight", "max_pool_forward", "max_pool_values",
                "max_pool_backward",
                "avg_pool_forward", "avg_pool_backward", "adam_step",
                "batchnorm_channel_stats", "batchnorm_backward_sums", "batchnorm_scale_shift",
                "batchnorm_scale_shift2"}


def test_every_kernel_with_a_cuda_version_is_checked_here():
    with_cuda = {name for name, kernel in KERNELS.items() if kernel.cuda is not None}
    assert with_cuda == CHECKED_HERE


DTYPES = st.sampled_from([np.float32, np.float64])


def _tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@settings(deadline=None)
@given(conv_settings(), DTYPES)
def test_im2col_and_col2im_cuda_equal_reference(cupy, case, dtype):
    x, w, _ = _arrays(case, dtype)
    x_nhwc = channels_last(x)
    g = ConvGeometry(x_nhwc.shape, w.shape[2:], case["stride"], case["padding"],
                     case["dilation"], case["groups"])
    cols = im2col_kernels.im2col_cuda(cupy.asarray(x_nhwc), g)
    assert type(cols) is cupy.ndarray and cols.dtype == dtype
    np.testing.assert_array_equal(cols.get(), im2col_kernels.im2col_reference(x_nhwc, g))
    c = np.random.default_rng(case["seed"]).standard_normal((g.G, g.M, g.K)).astype(dtype)
    np.testing.assert_allclose(im2col_kernels.col2im_cuda(cupy.asarray(c), g).get(),
                               im2col_kernels.col2im_reference(c, g), **_tolerance(dtype))


@settings(deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.sampled_from([1, 2]), st.integers(1, 3),
       st.integers(1, 2), st.integers(0, 1), st.integers(1, 2), st.integers(0, 2 ** 16), DTYPES)
def test_depthwise_cuda_equals_reference(cupy, n, channels, mult, kernel, stride, padding,
                                         dilation, seed, dtype):
    rng = np.random.default_rng(seed)
    side = dilation * (kernel - 1) + 1 + rng.integers(0, 5)
    x = rng.standard_normal((n, side, side, channels)).astype(dtype)
    w = rng.standard_normal((kernel, kernel, channels * mult)).astype(dtype)
    g = ConvGeometry(x.shape, (kernel, kernel), (stride,) * 2, (padding,) * 2,
                     (dilation,) * 2, groups=channels)
    gy = rng.standard_normal((n, g.OH, g.OW, channels * mult)).astype(dtype)
    X, W, GY = (cupy.asarray(a) for a in (x, w, gy))
    close = _tolerance(dtype)
    np.testing.assert_allclose(depthwise.forward_cuda(X, W, g, mult).get(),
                               depthwise.forward_reference(x, w, g, mult), **close)
    np.testing.assert_allclose(depthwise.backward_input_cuda(GY, W, g, mult).get(),
                               depthwise.backward_input_reference(gy, w, g, mult), **close)
    np.testing.assert_allclose(depthwise.backward_weight_cuda(GY, X, g, mult).get(),
                               depthwise.backward_weight_reference(gy, x, g, mult), **close)


@settings(deadline=None)
@given(pool_problems(), DTYPES)
def test_max_pool_cuda_equals_reference(cupy, p, dtype):
    x = p["x"].astype(dtype)
    args = (p["kernel"], p["stride"], p["padding"], p["dilation"], p["out"])
    y_ref, arg_ref = pool.max_pool_forward_reference(x, *args)
    y, argmax = pool.max_pool_forward_cuda(cupy.asarray(x), *args)
    assert y.dtype == dtype and argmax.dtype == np.int32
    np.testing.assert_array_equal(y.get(), y_ref)
    np.testing.assert_array_equal(argmax.get(), arg_ref)
    np.testing.assert_array_equal(pool.max_pool_values_cuda(cupy.asarray(x), *args).get(), y_ref)
    # the backward adds in the reference's order (no atomics): equal bit for bit
    gy = p["rng"].standard_normal(y_ref.shape).astype(dtype)
    in_size = x.shape[1:3]
    np.testing.assert_array_equal(
        pool.max_pool_backward_cuda(cupy.asarray(gy), argmax, in_size).get(),
        pool.max_pool_backward_reference(gy, arg_ref, in_size))


@settings(deadline=None)
@given(pool_problems(dilated=False), DTYPES)
def test_avg_pool_cuda_equals_reference(cupy, p, dtype):
    x = p["x"].astype(dtype)
    args = (p["kernel"], p["stride"], p["padding"], p["out"], p["include_pad"])
    np.testing.assert_allclose(pool.avg_pool_forward_cuda(cupy.asarray(x), *args).get(),
                               pool.avg_pool_forward_reference(x, *args), **_tolerance(dtype))
    gy = p["rng"].standard_normal((x.shape[0],) + p["out"] + (x.shape[3],)).astype(dtype)
    args = (p["kernel"], p["stride"], p["padding"], x.shape[1:3], p["include_pad"])
    np.testing.assert_allclose(pool.avg_pool_backward_cuda(cupy.asarray(gy), *args).get(),
                               pool.avg_pool_backward_reference(gy, *args), **_tolerance(dtype))


def test_max_pool_backward_sums_overlapping_windows_in_a_fixed_order(cupy):
    """3×3 windows at stride 2 over a 9×9 hill whose top (4, 4) lies in four windows: cells
    shared by neighbouring windows receive several gradients. The sums equal the
    reference's bit for bit, run after run (issue 19, defect 8). The emulation runs threads
    one after another, so on it atomics would agree too: that no thread races another for
    a cell is read from the source, and a real GPU runs the repetitions."""
    assert "atomic" not in _gpu.SOURCES["max_pool_backward_nhwc"]
    rows, columns = np.mgrid[0:9, 0:9]
    hill = -((rows - 4.0) ** 2 + (columns - 4.0) ** 2) + 0.01 * rows
    x = np.repeat(hill[None, :, :, None], 3, axis=3).repeat(2, axis=0).astype(np.float32)
    args = ((3, 3), (2, 2), (0, 0), (1, 1), (4, 4))
    _, arg_ref = pool.max_pool_forward_reference(x, *args)
    assert np.sum(arg_ref[0, :, :, 0] == 4 * 9 + 4) == 4         # four windows share the top
    gy = np.random.default_rng(0).standard_normal((2, 4, 4, 3)).astype(np.float32) / 3
    expected = pool.max_pool_backward_reference(gy, arg_ref, (9, 9))
    _, argmax = pool.max_pool_forward_cuda(cupy.asarray(x), *args)
    for _ in range(3):
        gx = pool.max_pool_backward_cuda(cupy.asarray(gy), argmax, (9, 9)).get()
        np.testing.assert_array_equal(gx, expected)


def test_a_window_of_padding_only_gives_minus_infinity_and_no_gradient(cupy):
    x = cupy.asarray(np.arange(8.0).reshape(1, 2, 4, 1))
    y, argmax = pool.max_pool_forward_cuda(x, (1, 2), (1, 1), (0, 1), (1, 5), (2, 1))
    assert np.all(y.get() == -np.inf) and np.all(argmax.get() == -1)
    assert not pool.max_pool_backward_cuda(cupy.ones_like(y), argmax, (2, 4)).get().any()


def test_nan_propagates_through_max_pooling_on_the_gpu_as_on_the_cpu(cupy):
    x = np.arange(2 * 6 * 6 * 3, dtype=np.float64).reshape(2, 6, 6, 3)
    x[0, 1, 1, 0] = x[0, 1, 2, 0] = np.nan
    args = ((3, 3), (2, 2), (1, 1), (1, 1), (3, 3))
    y_ref, arg_ref = pool.max_pool_forward_reference(x, *args)
    y, argmax = pool.max_pool_forward_cuda(cupy.asarray(x), *args)
    np.testing.assert_array_equal(y.get(), y_ref)
    np.testing.assert_array_equal(argmax.get(), arg_ref)


@settings(deadline=None)
@given(st.integers(2, 300), st.integers(1, 140), st.floats(-50, 50), st.integers(0, 2**31 - 1),
       DTYPES)
def test_batchnorm_cuda_kernels_equal_cpu_and_reference(cupy, rows_count, channels, offset,
                                                        seed, dtype):
    """The reductions as exact as the Numba ones (float64 sums, the same shift); the affine
    maps as the reference. 140 channels take two blocks across channels."""
    rng = np.random.default_rng(seed)
    rows = (rng.standard_normal((rows_count, channels)) * 3 + offset).astype(dtype)
    gy = rng.standard_normal((rows_count, channels)).astype(dtype)
    R, GY = cupy.asarray(rows), cupy.asarray(gy)
    for got, expected in zip(batchnorm.channel_stats_gpu(R), batchnorm.channel_stats_cpu(rows)):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got.get(), expected, rtol=1e-10, atol=1e-10)
    mean = rows.astype(np.float64).mean(axis=0)
    for got, expected in zip(batchnorm.backward_sums_gpu(GY, R, cupy.asarray(mean)),
                             batchnorm.backward_sums_cpu(gy, rows, mean)):
        np.testing.assert_allclose(got.get(), expected, rtol=1e-10, atol=1e-9)
    scale, shift = (rng.standard_normal(channels).astype(dtype) for _ in range(2))
    y = batchnorm.scale_shift_gpu(R, cupy.asarray(scale), cupy.asarray(shift))
    assert y.dtype == dtype
    np.testing.assert_allclose(y.get(), batchnorm.scale_shift_reference(rows, scale, shift),
                               **_tolerance(dtype))
    y2 = batchnorm.scale_shift2_gpu(GY, cupy.asarray(scale), R, cupy.asarray(shift),
                                    cupy.asarray(scale))
    np.testing.assert_allclose(
        y2.get(), batchnorm.scale_shift2_reference(gy, scale, rows, shift, scale),
        **_tolerance(dtype))


def test_batchnorm_reductions_are_chunked_over_many_rows(cupy):
    """More rows than one chunk holds: the partial sums of many chunks add up, and the
    shifted one-pass variance survives a large offset as on the CPU."""
    rng = np.random.default_rng(0)
    rows = (1000 + 0.01 * rng.standard_normal((50_000, 4))).astype(np.float32)
    grid, _, _ = batchnorm._chunks(*rows.shape)
    assert grid[1] > 100
    mean, var = batchnorm.channel_stats_gpu(cupy.asarray(rows))
    np.testing.assert_allclose(var.get(), rows.astype(np.float64).var(axis=0), rtol=1e-6)
    np.testing.assert_allclose(mean.get(), rows.astype(np.float64).mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_adam_cuda_equals_reference_on_strided_state(cupy, dtype):
    """One elementwise launch; a transposed gradient and parameter are indexed through their
    strides, as CuPy's ElementwiseKernel does."""
    rng = np.random.default_rng(0)
    param, m = rng.standard_normal((2, 5, 3)).astype(dtype), np.zeros((2, 5, 3), dtype)
    v, grad = np.zeros((2, 5, 3), dtype), rng.standard_normal((3, 5, 2))
    expected = [a.copy() for a in (param, m, v)]
    on_gpu = [cupy.asarray(a) for a in (param, m, v)]
    gpu_grad = cupy.asarray(grad).transpose(2, 1, 0)
    for step in range(1, 4):
        arguments = (0.9, 0.999, 0.01 / (1 - 0.9 ** step), 1 / np.sqrt(1 - 0.999 ** step), 1e-8)
        optim_kernels.adam_step_reference(*expected[:1], grad.transpose(2, 1, 0).astype(dtype),
                                          *expected[1:], *arguments)
        optim_kernels.adam_step_cuda(on_gpu[0], gpu_grad, *on_gpu[1:], *arguments)
    for got, want in zip(on_gpu, expected):
        np.testing.assert_allclose(got.get(), want, **_tolerance(dtype))
    strided = cupy.asarray(param).transpose(1, 0, 2)                 # not C-contiguous
    want = strided.get().copy()
    state = [cupy.zeros_like(strided) for _ in range(2)]
    optim_kernels.adam_step_cuda(strided, cupy.ones_like(strided), *state, 0.9, 0.999, 0.1, 1.0,
                                 1e-8)
    optim_kernels.adam_step_reference(want, np.ones_like(want), np.zeros_like(want),
                                      np.zeros_like(want), 0.9, 0.999, 0.1, 1.0, 1e-8)
    np.testing.assert_allclose(strided.get(), want, **_tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counter_uniform_cuda_equals_reference_bit_for_bit(cupy, dtype):
    for seed in (0, 42, 2 ** 63 - 1):
        u = random_kernels.counter_uniform_cuda(seed, (3, 7), dtype)
        assert type(u) is cupy.ndarray and u.dtype == dtype
        np.testing.assert_array_equal(u.get(),
                                      random_kernels.counter_uniform_reference(seed, (3, 7), dtype))
