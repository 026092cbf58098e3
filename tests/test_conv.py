"""conv2d against reference math, its gradients against finite differences, and its
kernels (cpu) against their plain-NumPy reference versions."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.signal import correlate

from minicnn import Tensor, functional as F, gradcheck, nn
from minicnn.functional import conv as conv_module
from minicnn.functional.geometry import window_settings
from minicnn.kernels import channels_last, depthwise, output_size
from minicnn.kernels.im2col import (SHORT_RUN, ConvGeometry, col2im_numba, col2im_reference,
                                    im2col_numba, im2col_reference)


def conv2d_loops(x, w, b, stride, padding, dilation, groups):
    """The definition, as nested loops: the obvious truth every fast path is held to."""
    N, C, H, W = x.shape
    CO, Cg, KH, KW = w.shape
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    OH = (H + 2 * PH - DH * (KH - 1) - 1) // SH + 1
    OW = (W + 2 * PW - DW * (KW - 1) - 1) // SW + 1
    y = np.zeros((N, CO, OH, OW))
    per_group = CO // groups
    for n in range(N):
        for o in range(CO):
            g = o // per_group
            for oh in range(OH):
                for ow in range(OW):
                    total = 0.0 if b is None else b[o]
                    for c in range(Cg):
                        for i in range(KH):
                            for j in range(KW):
                                ih, iw = oh * SH - PH + i * DH, ow * SW - PW + j * DW
                                if 0 <= ih < H and 0 <= iw < W:
                                    total += x[n, g * Cg + c, ih, iw] * w[o, c, i, j]
                    y[n, o, oh, ow] = total
    return y


@st.composite
def conv_settings(draw, max_side=7):
    """Random but valid convolution problems: every path (dense, grouped, depthwise with
    multiplier, 1×1, dilated, rectangular, strided) is reachable."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise_case = draw(st.booleans())
    in_per_group = 1 if depthwise_case else draw(st.integers(1, 3))
    channels = groups * in_per_group
    if depthwise_case:
        groups = channels = draw(st.integers(1, 4))
    out_channels = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), max_side))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), max_side))
    n = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2 ** 16))
    return dict(shape=(n, channels, h, w), weight=(out_channels, channels // groups, kh, kw),
                stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups,
                bias=draw(st.booleans()), seed=seed)


def _arrays(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(dtype)
    w = rng.standard_normal(case["weight"]).astype(dtype)
    b = rng.standard_normal(case["weight"][0]).astype(dtype) if case["bias"] else None
    return x, w, b


@settings(deadline=None)
@given(conv_settings())
def test_forward_equals_nested_loops(case):
    x, w, b = _arrays(case)
    y = F.conv2d(Tensor(x), Tensor(w), None if b is None else Tensor(b), case["stride"],
                 case["padding"], case["dilation"], case["groups"])
    expected = conv2d_loops(x, w, b, case["stride"], case["padding"], case["dilation"],
                            case["groups"])
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10)


@settings(deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(3, 8),
       st.integers(1, 3), st.integers(0, 2 ** 16))
def test_forward_equals_scipy_correlate(n, channels, out_channels, side, kernel, seed):
    """SciPy's correlate is an independent truth for stride 1, no padding, groups 1."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, channels, side, side))
    w = rng.standard_normal((out_channels, channels, kernel, kernel))
    y = F.conv2d(Tensor(x), Tensor(w)).numpy()
    expected = np.stack([np.stack([correlate(x[i], w[o], mode="valid")[0]
                                   for o in range(out_channels)]) for i in range(n)])
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@settings(deadline=None, max_examples=20)
@given(conv_settings(max_side=5))
def test_backward_passes_gradcheck(case):
    x, w, b = _arrays(case)
    inputs = [Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)]
    if b is not None:
        inputs.append(Tensor(b, requires_grad=True))

    def convolve(*tensors):
        return F.conv2d(*tensors[:2], tensors[2] if len(tensors) == 3 else None,
                        case["stride"], case["padding"], case["dilation"], case["groups"])
    assert gradcheck(convolve, inputs)


def test_float32_stays_float32_and_output_is_channels_last():
    x = Tensor(np.ones((2, 3, 8, 8), np.float32))
    conv = nn.Conv2d(3, 4, 3, padding=1)
    y = conv(x)
    assert y.dtype == np.float32 and y.shape == (2, 4, 8, 8)
    # NCHW shape over (N, H, W, C) memory: the channel stride is the element size
    assert y.data.strides[1] == 4


def test_non_contiguous_input_gives_same_result():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 3))               # NHWC memory
    w = rng.standard_normal((4, 3, 3, 3))
    nchw_view = x.transpose(0, 3, 1, 2)
    contiguous = np.ascontiguousarray(nchw_view)
    a = F.conv2d(Tensor(nchw_view), Tensor(w), padding=1).numpy()
    b = F.conv2d(Tensor(contiguous), Tensor(w), padding=1).numpy()
    np.testing.assert_array_equal(a, b)


def _conv_results(x, w, b, **options):
    tensors = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    y = F.conv2d(*tensors, **options)
    (y * Tensor(np.linspace(-1, 1, y.size).reshape(y.shape))).sum().backward()
    return [y.data] + [t.grad for t in tensors], y.creator.path


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_convolution_in_sample_blocks_equals_whole_batch(monkeypatch, stride, padding, dilation):
    """The CPU's blocked path (im2col + GEMM one sub-batch at a time) gives the numbers of
    the whole-batch path, for y and every gradient, with an uneven last block."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 32, 9, 8))            # K = 3·3·32 = 288 ≥ BLOCKED_MIN_K
    w = rng.standard_normal((5, 32, 3, 3))
    b = rng.standard_normal(5)
    options = dict(stride=stride, padding=padding, dilation=dilation)
    monkeypatch.setattr(conv_module, "BLOCK_BYTES", 3 * 9 * 8 * 288 * 8)   # 3 samples
    blocked, path = _conv_results(x, w, b, **options)
    assert path == "blocked"
    monkeypatch.setattr(conv_module, "BLOCKED_MIN_K", 10 ** 9)
    whole, path = _conv_results(x, w, b, **options)
    assert path == "im2col"
    for got, expected in zip(blocked, whole):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- kernels

@settings(deadline=None)
@given(conv_settings())
def test_im2col_numba_equals_reference(case):
    x, w, _ = _arrays(case, np.float32)
    x_nhwc = channels_last(x)
    g = ConvGeometry(x_nhwc.shape, w.shape[2:], case["stride"], case["padding"],
                     case["dilation"], case["groups"])
    np.testing.assert_array_equal(im2col_numba(x_nhwc, g), im2col_reference(x_nhwc, g))
    cols = np.random.default_rng(case["seed"]).standard_normal((g.G, g.M, g.K))
    np.testing.assert_allclose(col2im_numba(cols, g), col2im_reference(cols, g), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("channels, groups", [(1, 1), (3, 1), (4, 2), (6, 2), (8, 1), (32, 1),
                                               (64, 4), (64, 32)])
@pytest.mark.parametrize("geometry", [((5, 5), (1, 1), (0, 0), (1, 1)),
                                      ((3, 2), (2, 1), (1, 2), (1, 2)),
                                      ((7, 7), (2, 2), (3, 3), (1, 1))])
def test_both_im2col_layouts_equal_reference(channels, groups, geometry):
    """Few channels take the column-major kernel, many the row-major one, however few
    per group (see SHORT_RUN); both must give the reference's numbers."""
    kernel, stride, padding, dilation = geometry
    x = np.random.default_rng(channels).standard_normal((3, 11, 10, channels)).astype(np.float32)
    g = ConvGeometry(x.shape, kernel, stride, padding, dilation, groups)
    cols = im2col_numba(x, g)
    k_major = g.KW * g.C < SHORT_RUN
    assert cols.shape == (g.G, g.M, g.K)
    assert (cols.strides[1] < cols.strides[2]) == k_major       # which kernel ran
    np.testing.assert_array_equal(cols, im2col_reference(x, g))


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> = <x, col2im(c)>: col2im is exactly im2col's transpose."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 6, 4))
    g = ConvGeometry(x.shape, (3, 2), (2, 1), (1, 1), (1, 2), groups=2)
    c = rng.standard_normal((g.G, g.M, g.K))
    assert np.isclose((im2col_numba(x, g) * c).sum(), (x * col2im_numba(c, g)).sum())


@settings(deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.sampled_from([1, 2]), st.integers(1, 3),
       st.integers(1, 2), st.integers(0, 1), st.integers(1, 2), st.integers(0, 2 ** 16))
def test_depthwise_cpu_equals_reference(n, channels, mult, kernel, stride, padding, dilation,
                                        seed):
    rng = np.random.default_rng(seed)
    side = dilation * (kernel - 1) + 1 + rng.integers(0, 5)
    x = rng.standard_normal((n, side, side, channels))
    w = rng.standard_normal((kernel, kernel, channels * mult))
    g = ConvGeometry(x.shape, (kernel, kernel), (stride,) * 2, (padding,) * 2, (dilation,) * 2,
                     groups=channels)
    gy = rng.standard_normal((n, g.OH, g.OW, channels * mult))
    close = dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(depthwise.forward_numba(x, w, g, mult),
                               depthwise.forward_reference(x, w, g, mult), **close)
    np.testing.assert_allclose(depthwise.backward_input_numba(gy, w, g, mult),
                               depthwise.backward_input_reference(gy, w, g, mult), **close)
    np.testing.assert_allclose(depthwise.backward_weight_numba(gy, x, g, mult),
                               depthwise.backward_weight_reference(gy, x, g, mult), **close)


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, ceil, expected", [
    (227, 11, 4, 0, 1, False, 55),     # AlexNet conv1
    (55, 3, 2, 0, 1, False, 27),       # AlexNet overlapping pool
    (110, 3, 2, 0, 1, True, 55),       # ZFNet pool1 in ceil mode
    (5, 2, 2, 1, 1, True, 3),          # ceil-mode window starting in the padding is dropped
    (6, 3, 2, 1, 1, True, 4),          # ... but one starting inside the input is kept
    (7, 3, 1, 2, 2, False, 7),         # dilated "same"
])
def test_output_size(size, kernel, stride, padding, dilation, ceil, expected):
    assert output_size(size, kernel, stride, padding, dilation, ceil) == expected


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("x_shape, w_shape, kwargs, message", [
    ((2, 3, 8), (4, 3, 3, 3), {}, "expected input of rank 4"),
    ((2, 3, 8, 8), (4, 2, 3, 3), {}, "expects 2 input channels"),
    ((2, 3, 8, 8), (4, 1, 3, 3), {"groups": 2}, "divisible by groups"),
    ((2, 3, 4, 4), (4, 3, 7, 7), {}, "larger than the padded input"),
    ((2, 3, 4, 4), (4, 3, 3, 3), {"dilation": 3}, "the 7×7 window"),
])
def test_shape_errors_name_expected_and_actual(x_shape, w_shape, kwargs, message):
    x, w = Tensor(np.zeros(x_shape, np.float32)), Tensor(np.zeros(w_shape, np.float32))
    with pytest.raises(ValueError, match=message):
        F.conv2d(x, w, **kwargs)


def test_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match="floating-point"):
        F.conv2d(Tensor(np.zeros((1, 1, 4, 4), np.int64)), Tensor(np.zeros((1, 1, 3, 3), np.float32)))


def test_mixed_precision_is_a_type_error():
    with pytest.raises(TypeError, match="float64 but weight is float32"):
        F.conv2d(Tensor(np.zeros((1, 1, 4, 4))), Tensor(np.zeros((1, 1, 3, 3), np.float32)))


def test_layer_rejects_groups_that_do_not_divide():
    with pytest.raises(ValueError, match=r"Conv2d: in_channels \(3\).*groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)


def test_layer_repr_shows_settings():
    assert repr(nn.Conv2d(3, 8, (1, 7), padding=(0, 3), groups=1, bias=False)) == \
        "Conv2d(3, 8, kernel_size=(1, 7), stride=(1, 1), padding=(0, 3), bias=False)"


# ----------------------------------------------------------------------------- algorithms

# One set of convolutions for every algorithm: each runs those it can compute, against the
# definition and against finite differences. (x shape, w shape, stride, padding, dilation,
# groups)
ALGORITHM_CASES = {
    "3x3 same":             ((2, 3, 6, 5), (4, 3, 3, 3), 1, 1, 1, 1),
    "3x3 valid, uneven":    ((3, 2, 7, 5), (3, 2, 3, 3), 1, 0, 1, 1),
    "1x1":                  ((2, 4, 5, 5), (3, 4, 1, 1), 1, 0, 1, 1),
    "1x1 stride 2":         ((2, 4, 5, 6), (3, 4, 1, 1), 2, 0, 1, 1),
    "5x5 padded":           ((2, 2, 6, 6), (3, 2, 5, 5), 1, 2, 1, 1),
    "rectangular grouped":  ((2, 4, 7, 6), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    "depthwise x2 stride":  ((2, 3, 7, 7), (6, 1, 3, 3), 2, 1, 1, 3),
    "depthwise dilated":    ((1, 4, 7, 6), (4, 1, 3, 3), 1, 2, 2, 4),
    "one channel":          ((2, 1, 6, 6), (2, 1, 3, 3), 1, 1, 1, 1),
}


def _case_geometry(case):
    x_shape, w_shape, stride, padding, dilation, groups = ALGORITHM_CASES[case]
    _, stride, padding, dilation = window_settings("test", w_shape[2:], stride, padding,
                                                   dilation)
    return ConvGeometry((x_shape[0],) + x_shape[2:] + (x_shape[1],), w_shape[2:], stride,
                        padding, dilation, groups, w_shape[0])


#: (algorithm, case) for every case the algorithm can compute: 23 runs
ALGORITHM_RUNS = [(name, case) for name, algorithm in sorted(conv_module.ALGORITHMS.items())
                  for case in ALGORITHM_CASES
                  if algorithm.applies(_case_geometry(case), "cpu")]


def _algorithm_run(case):
    x_shape, w_shape, stride, padding, dilation, groups = ALGORITHM_CASES[case]
    rng = np.random.default_rng(len(case))
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def test_every_algorithm_has_cases():
    assert {name for name, _ in ALGORITHM_RUNS} == set(conv_module.ALGORITHMS)


@pytest.mark.parametrize("algorithm, case", ALGORITHM_RUNS)
def test_every_algorithm_equals_the_definition(algorithm, case):
    x, w, b, options = _algorithm_run(case)
    y = F.conv2d(Tensor(x), Tensor(w, requires_grad=True), Tensor(b),
                 conv_algorithm=algorithm, **options)
    assert y.creator.path == algorithm
    _, stride, padding, dilation = window_settings("test", w.shape[2:], options["stride"],
                                                   options["padding"], options["dilation"])
    expected = conv2d_loops(x, w, b, stride, padding, dilation, options["groups"])
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("algorithm, case", ALGORITHM_RUNS)
def test_every_algorithm_passes_gradcheck(algorithm, case):
    x, w, b, options = _algorithm_run(case)
    inputs = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, conv_algorithm=algorithm, **options),
                     inputs)


def test_an_algorithm_that_cannot_compute_the_convolution_is_refused():
    x, w = Tensor(np.zeros((1, 4, 6, 6))), Tensor(np.zeros((4, 4, 1, 1)))
    with pytest.raises(ValueError, match=r"conv_algorithm='winograd' cannot compute .*1×1"):
        F.conv2d(x, w, conv_algorithm="winograd")
    with pytest.raises(ValueError, match=r"conv_algorithm must be one of blocked, depthwise, "
                                         r"direct, grouped, im2col, pointwise, winograd or "
                                         r"None, got 'fft'"):
        nn.Conv2d(4, 4, 1, conv_algorithm="fft")


def test_a_forced_algorithm_runs_where_it_applies_and_the_chooser_elsewhere():
    x = Tensor(np.zeros((2, 64, 8, 8), np.float32), requires_grad=True)
    three, one = (Tensor(np.zeros((64, 64, k, k), np.float32)) for k in (3, 1))
    assert F.conv2d(x, three, padding=1).creator.path == "winograd"
    with conv_module.force_conv_algorithm("im2col"):
        assert F.conv2d(x, three, padding=1).creator.path == "im2col"
    with conv_module.force_conv_algorithm("winograd"):
        assert F.conv2d(x, one).creator.path == "pointwise"           # cannot: chooser's
    layer = nn.Conv2d(64, 64, 3, padding=1, conv_algorithm="blocked")
    assert layer(x).creator.path == "blocked"
    assert "conv_algorithm='blocked'" in repr(layer)


def test_reference_kernel_mode_computes_with_the_textbook_algorithm():
    from minicnn.kernels.registry import kernel_mode
    x = Tensor(np.random.default_rng(0).standard_normal((2, 64, 8, 8)), requires_grad=True)
    w = Tensor(np.random.default_rng(1).standard_normal((64, 64, 3, 3)))
    fast = F.conv2d(x, w, padding=1)
    with kernel_mode("reference"):
        reference = F.conv2d(x, w, padding=1)
    assert (fast.creator.path, reference.creator.path) == ("winograd", "im2col")
    np.testing.assert_allclose(reference.numpy(), fast.numpy(), rtol=1e-10, atol=1e-10)


def test_environment_variable_forces_an_algorithm_for_the_whole_run():
    import subprocess
    import sys
    program = ("import numpy as np; from minicnn import Tensor, functional as F; "
               "x = Tensor(np.zeros((1, 64, 8, 8)), requires_grad=True); w = Tensor(np.zeros((64, 64, 3, 3))); "
               "print(F.conv2d(x, w, padding=1).creator.path)")
    env = dict(__import__("os").environ, MINICNN_CONV_ALGORITHM="im2col")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.stdout.strip() == "im2col", result.stderr
