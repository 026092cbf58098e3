"""Pooling against nested-loop definitions written here, its gradients against finite
differences, its errors, and its layers."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from minicnn import Tensor, functional as F, gradcheck, nn, no_grad
from minicnn.backend import cupy_or_none, gpu_available
from minicnn.kernels import channels_last


# ----------------------------------------------------------------------------- definitions

def pooled_length(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's output length, written out independently of minicnn.kernels.output_size:
    the number of window starts 0, S, 2S, ... (in padded coordinates) whose window fits in
    the padded input — in ceil_mode also a last partial one, unless it would start past
    the input (inside the right padding)."""
    span = dilation * (kernel - 1) + 1
    count = 0
    while count * stride + span <= size + 2 * padding:
        count += 1
    if ceil_mode and (count - 1) * stride + span < size + 2 * padding:
        if count * stride < size + padding:       # the next start is before the padding
            count += 1
    return count


def max_pool_loops(x, kernel, stride, padding, dilation, ceil_mode):
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = kernel, stride, padding, dilation
    OH = pooled_length(H, KH, SH, PH, DH, ceil_mode)
    OW = pooled_length(W, KW, SW, PW, DW, ceil_mode)
    y = np.full((N, C, OH, OW), -np.inf)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    for a in range(KH):
                        for b in range(KW):
                            h, w = i * SH - PH + a * DH, j * SW - PW + b * DW
                            if 0 <= h < H and 0 <= w < W:
                                y[n, c, i, j] = max(y[n, c, i, j], x[n, c, h, w])
    return y


def avg_pool_loops(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """Sum of the window's input cells over PyTorch's divisor: with count_include_pad the
    cells of the window that lie in the padded input, otherwise those in the input."""
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW) = kernel, stride, padding
    OH = pooled_length(H, KH, SH, PH, 1, ceil_mode)
    OW = pooled_length(W, KW, SW, PW, 1, ceil_mode)
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            total, in_input, in_padded = np.zeros((N, C)), 0, 0
            for h in range(i * SH - PH, i * SH - PH + KH):
                for w in range(j * SW - PW, j * SW - PW + KW):
                    if 0 <= h < H and 0 <= w < W:
                        total += x[:, :, h, w]
                        in_input += 1
                    if -PH <= h < H + PH and -PW <= w < W + PW:
                        in_padded += 1
            y[:, :, i, j] = total / (in_padded if count_include_pad else in_input)
    return y


def adaptive_loops(x, out, reduce):
    N, C, H, W = x.shape
    OH, OW = out
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            top, bottom = int(np.floor(i * H / OH)), int(np.ceil((i + 1) * H / OH))
            left, right = int(np.floor(j * W / OW)), int(np.ceil((j + 1) * W / OW))
            y[:, :, i, j] = reduce(x[:, :, top:bottom, left:right], axis=(2, 3))
    return y


def distinct_values(shape, seed):
    """Tie-free input: a permutation of a grid with step 0.25 (far wider than the 1e-6
    finite-difference step, so no nudge changes which element is the maximum)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.25 - 5.0


@st.composite
def pool_cases(draw, dilated=True):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilated else (1, 1)
    smallest = [max(1, d * (k - 1) + 1 - 2 * p) for k, d, p in zip(kernel, dilation, padding)]
    h, w = (draw(st.integers(low, low + 5)) for low in smallest)
    return dict(shape=(n, c, h, w), kernel=kernel, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=draw(st.booleans()),
                count_include_pad=draw(st.booleans()), seed=draw(st.integers(0, 10**6)))


# ----------------------------------------------------------------------------- forward

@settings(deadline=None)
@given(pool_cases())
def test_max_pool_equals_nested_loops(case):
    x = distinct_values(case["shape"], case["seed"])
    args = (case["kernel"], case["stride"], case["padding"], case["dilation"],
            case["ceil_mode"])
    expected = max_pool_loops(x, *args)
    y = F.max_pool2d(Tensor(x), *args)                   # no gradient: values only
    np.testing.assert_array_equal(y.data, expected)
    y = F.max_pool2d(Tensor(x, requires_grad=True), *args)   # with the argmax for backward
    np.testing.assert_array_equal(y.data, expected)
    assert y.creator.saved[0].shape == y.shape[:1] + y.shape[2:] + y.shape[1:2]


def test_inference_max_pool_keeps_no_argmax_and_propagates_nan():
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 2, 2] = np.nan
    with no_grad():
        y = F.max_pool2d(Tensor(x, requires_grad=True), 2)
    assert y.creator is None
    expected = np.array([[[[np.nan, 7], [13, 15]], [[21, 23], [29, np.nan]]]], np.float32)
    np.testing.assert_array_equal(y.data, expected)
    np.testing.assert_array_equal(F.max_pool2d(Tensor(x, requires_grad=True), 2).data, expected)


@settings(deadline=None)
@given(pool_cases(dilated=False))
def test_avg_pool_equals_nested_loops(case):
    x = np.random.default_rng(case["seed"]).standard_normal(case["shape"])
    args = (case["kernel"], case["stride"], case["padding"], case["ceil_mode"],
            case["count_include_pad"])
    y = F.avg_pool2d(Tensor(x), *args)
    np.testing.assert_allclose(y.data, avg_pool_loops(x, *args), rtol=1e-12, atol=1e-12)


@settings(deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9),
       st.integers(1, 5), st.integers(1, 5), st.integers(0, 10**6))
def test_adaptive_pools_equal_nested_loops(n, c, h, w, oh, ow, seed):
    """Even (h % oh == 0: the fixed-kernel path) and uneven (overlapping bins) alike, and
    output larger than input (bins repeat cells)."""
    x = distinct_values((n, c, h, w), seed)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(Tensor(x), (oh, ow)).data,
                               adaptive_loops(x, (oh, ow), np.mean), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(F.adaptive_max_pool2d(Tensor(x), (oh, ow)).data,
                                  adaptive_loops(x, (oh, ow), np.max))


def test_adaptive_output_size_int_and_none():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 7, 5)))
    assert F.adaptive_avg_pool2d(x, 3).shape == (2, 3, 3, 3)
    assert F.adaptive_max_pool2d(x, (None, 2)).shape == (2, 3, 7, 2)


def test_global_avg_pool_is_the_mean_over_each_map():
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 6))
    y = F.global_avg_pool2d(Tensor(x))
    assert y.shape == (3, 4, 1, 1)
    np.testing.assert_allclose(y.data[:, :, 0, 0], x.mean(axis=(2, 3)), rtol=1e-12)


def test_pytorch_defaults_stride_is_kernel_and_3x3_stride_2_overlaps():
    x = Tensor(distinct_values((1, 1, 6, 6), 0))
    assert F.max_pool2d(x, 2).shape == (1, 1, 3, 3)                 # stride defaults to 2
    assert F.max_pool2d(x, np.int64(2)).shape == (1, 1, 3, 3)       # NumPy ints are ints
    assert F.max_pool2d(x, 3, 2).shape == (1, 1, 2, 2)              # AlexNet's overlap
    assert F.max_pool2d(x, 3, 2, ceil_mode=True).shape == (1, 1, 3, 3)   # GoogLeNet's
    # all padding counts in the divisor by default: a corner window of a padded 2×2
    # average over ones holds 1 input cell out of 4 -> 0.25
    ones = Tensor(np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(F.avg_pool2d(ones, 2, 2, 1).data, 0.25)
    np.testing.assert_allclose(F.avg_pool2d(ones, 2, 2, 1, count_include_pad=False).data, 1.0)


@pytest.mark.parametrize("pool", [
    lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: F.avg_pool2d(t, (3, 2), (2, 1), (1, 0)),
    lambda t: F.adaptive_avg_pool2d(t, (3, 4)), lambda t: F.adaptive_max_pool2d(t, (3, 4)),
    lambda t: F.global_avg_pool2d(t)])
def test_layouts_and_dtype(pool):
    """NCHW and channels-last memory give the same numbers; float32 stays float32; the
    output of a pool is channels-last memory (what the next conv wants)."""
    x = distinct_values((2, 3, 7, 8), 1).astype(np.float32)
    nchw = pool(Tensor(x))
    nhwc = pool(Tensor(channels_last(x).transpose(0, 3, 1, 2)))
    assert nchw.dtype == np.float32 and nhwc.dtype == np.float32
    np.testing.assert_array_equal(nchw.data, nhwc.data)
    assert nchw.data.transpose(0, 2, 3, 1).flags.c_contiguous or nchw.shape[2:] == (1, 1)


# ----------------------------------------------------------------------------- backward

@settings(deadline=None, max_examples=15)
@given(pool_cases())
def test_max_pool_gradcheck(case):
    x = Tensor(distinct_values(case["shape"], case["seed"]), requires_grad=True)
    args = (case["kernel"], case["stride"], case["padding"], case["dilation"],
            case["ceil_mode"])
    # A dilated window can fall wholly into the padding (kernel 2, dilation 2, padding 1 on
    # one row): its output is −inf, as in PyTorch, and finite differences of −inf are NaN.
    assume(np.isfinite(F.max_pool2d(x.detach(), *args).data).all())
    assert gradcheck(lambda t: F.max_pool2d(t, *args), [x])


@settings(deadline=None, max_examples=15)
@given(pool_cases(dilated=False))
def test_avg_pool_gradcheck(case):
    x = Tensor(np.random.default_rng(case["seed"]).standard_normal(case["shape"]),
               requires_grad=True)
    args = (case["kernel"], case["stride"], case["padding"], case["ceil_mode"],
            case["count_include_pad"])
    assert gradcheck(lambda t: F.avg_pool2d(t, *args), [x])


@settings(deadline=None, max_examples=15)
@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 4), st.integers(1, 4),
       st.integers(0, 10**6))
def test_adaptive_and_global_gradcheck(h, w, oh, ow, seed):
    x = Tensor(distinct_values((2, 2, h, w), seed), requires_grad=True)
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, (oh, ow)), [x])
    assert gradcheck(lambda t: F.adaptive_max_pool2d(t, (oh, ow)), [x])
    assert gradcheck(F.global_avg_pool2d, [x])


def test_max_pool_gradient_goes_to_the_maximum_once_per_window():
    """Overlapping 3×3/2 windows sharing one maximum: it receives every window's gradient."""
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0                                 # in all four windows
    t = Tensor(x, requires_grad=True)
    F.max_pool2d(t, 3, 2).sum().backward()
    expected = np.zeros_like(x)
    expected[0, 0, 2, 2] = 4.0
    np.testing.assert_array_equal(t.grad, expected)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call, error, message", [
    (lambda: F.max_pool2d(Tensor(np.zeros((3, 4, 4))), 2), ValueError,
     r"MaxPool2d\(kernel_size=2.*expected a 4-D \(N, C, H, W\) input, got shape \(3, 4, 4\)"),
    (lambda: F.avg_pool2d(Tensor(np.zeros((1, 1, 2, 2))), 3), ValueError,
     r"AvgPool2d.*3×3 window .* larger than the padded input 2×2 .*\(1, 1, 2, 2\)"),
    (lambda: F.max_pool2d(Tensor(np.zeros((1, 1, 4, 4))), 2, dilation=4), ValueError,
     r"5×5 window \(kernel \(2, 2\), dilation \(4, 4\)\) is larger than the padded input"),
    (lambda: F.max_pool2d(Tensor(np.zeros((1, 1, 8, 8))), 3, padding=2), ValueError,
     r"MaxPool2d.*padding \(2, 2\) must be at most half the kernel size \(3, 3\)"),
    (lambda: F.avg_pool2d(Tensor(np.zeros((1, 1, 8, 8))), (2, 2.5)), TypeError,
     r"kernel_size must be an int or an \(h, w\) pair of ints, got \(2, 2.5\)"),
    (lambda: F.max_pool2d(Tensor(np.zeros((1, 1, 8, 8))), 2, stride=0), ValueError,
     r"must be positive"),
    (lambda: F.max_pool2d(Tensor(np.zeros((1, 1, 8, 8), np.int32)), 2), TypeError,
     r"float32 or float64 input, got dtype int32"),
    (lambda: F.adaptive_avg_pool2d(Tensor(np.zeros((1, 1, 8, 8))), 0), ValueError,
     r"AdaptiveAvgPool2d.*output_size must be a positive int"),
    (lambda: nn.AdaptiveAvgPool2d("6"), ValueError,
     r"AdaptiveAvgPool2d: output_size must be a positive int .* got '6'"),
    (lambda: nn.AdaptiveMaxPool2d((6, 0)), ValueError,
     r"AdaptiveMaxPool2d: output_size must be a positive int .* got \(6, 0\)"),
    (lambda: F.adaptive_max_pool2d(Tensor(np.zeros((1, 8, 8))), 2), ValueError,
     r"AdaptiveMaxPool2d.*expected a 4-D .* got shape \(1, 8, 8\)"),
    (lambda: F.global_avg_pool2d(Tensor(np.zeros((2, 8)))), ValueError,
     r"global_avg_pool2d: expected a 4-D .* got shape \(2, 8\)"),
])
def test_errors_name_the_operation_and_the_shapes(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ----------------------------------------------------------------------------- layers

def test_layers_match_functions_and_show_their_settings():
    x = Tensor(distinct_values((2, 3, 9, 9), 5))
    layer = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    np.testing.assert_array_equal(layer(x).data, F.max_pool2d(x, 3, 2, 1, ceil_mode=True).data)
    assert "kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True" in repr(layer)
    layer = nn.AvgPool2d(2, count_include_pad=False)
    np.testing.assert_array_equal(layer(x).data, F.avg_pool2d(x, 2, count_include_pad=False).data)
    assert "count_include_pad=False" in repr(layer)
    assert nn.AdaptiveAvgPool2d((6, 6))(x).shape == (2, 3, 6, 6)
    assert nn.AdaptiveMaxPool2d(1)(x).shape == (2, 3, 1, 1)
    assert nn.GlobalAvgPool2d()(x).shape == (2, 3, 1, 1)


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.parametrize("device", [pytest.param("gpu", marks=pytest.mark.skipif(
    not gpu_available(), reason="no CUDA GPU with CuPy on this machine"))])
class TestPoolOnDevice:
    """The same Functions on the GPU give the CPU's numbers, forward and backward."""

    pools = [lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True),
             lambda t: F.max_pool2d(t, 2, 1, 0, dilation=2),
             lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
             lambda t: F.adaptive_avg_pool2d(t, (3, 5)), lambda t: F.adaptive_max_pool2d(t, 3),
             lambda t: F.adaptive_avg_pool2d(t, 1), F.global_avg_pool2d]

    @pytest.mark.parametrize("pool", pools)
    def test_forward_and_backward_match_cpu(self, device, pool):
        cupy = cupy_or_none()
        x = distinct_values((2, 3, 9, 10), 7)
        cpu, gpu = Tensor(x, requires_grad=True), Tensor(cupy.asarray(x), requires_grad=True)
        y_cpu, y_gpu = pool(cpu), pool(gpu)
        np.testing.assert_allclose(y_gpu.numpy(), y_cpu.numpy(), rtol=1e-12, atol=1e-12)
        gy = np.random.default_rng(0).standard_normal(y_cpu.shape)
        y_cpu.backward(gy)
        y_gpu.backward(cupy.asarray(gy))
        np.testing.assert_allclose(cupy.asnumpy(gpu.grad), cpu.grad, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- composition

def test_pieces_compose_in_a_small_network():
    """conv → batch norm → ReLU → max pool → conv → avg pool → LRN → adaptive pool →
    linear, all in float64, held to finite differences end to end (channels-last memory
    flows from the convolutions through every piece)."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((1, 1, 8, 8)), requires_grad=True)
    w1 = Tensor(rng.standard_normal((2, 1, 3, 3)) * 0.5, requires_grad=True)
    w2 = Tensor(rng.standard_normal((3, 2, 3, 3)) * 0.5, requires_grad=True)
    gamma = Tensor(rng.random(2) + 0.5, requires_grad=True)
    fc = Tensor(rng.standard_normal((3 * 2 * 2, 2)), requires_grad=True)

    def network(x, w1, w2, gamma, fc):
        h = F.conv2d(x, w1, padding=1)
        h = F.relu(F.batch_norm(h, None, None, gamma) + 0.3)
        h = F.max_pool2d(h, 3, 2, 1)                                          # 8 -> 4
        h = F.conv2d(h, w2, padding=1)
        h = F.avg_pool2d(h, 2, 1, ceil_mode=True, count_include_pad=False)    # 4 -> 3
        h = F.local_response_norm(h, 3, 0.1, 0.75, 1.0)
        h = F.adaptive_avg_pool2d(h, 2)                                       # 3 -> 2
        return F.matmul(F.flatten(h), fc)
    assert gradcheck(network, [x, w1, w2, gamma, fc], atol=1e-5, rtol=1e-4)
