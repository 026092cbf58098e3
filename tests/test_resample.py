"""Nearest-neighbour upsampling and SAME-padded max pooling: against nested-loop
definitions written here, against onnxruntime (ONNX's Resize and MaxPool with
auto_pad=SAME_UPPER, TensorFlow's rule), gradients against finite differences, errors,
layers."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn import Tensor, functional as F, gradcheck, nn
from minicnn.functional.resample import same_padding
from minicnn.kernels import channels_last
from minicnn.kernels.registry import kernel_mode
from minicnn.summary import summary


# ----------------------------------------------------------------------------- definitions

def upsample_loops(x, sh, sw):
    N, C, H, W = x.shape
    y = np.empty((N, C, H * sh, W * sw), x.dtype)
    for i in range(H * sh):
        for j in range(W * sw):
            y[:, :, i, j] = x[:, :, i // sh, j // sw]
    return y


def same_max_pool_loops(x, kernel, stride):
    """TensorFlow's SAME max pooling written from its definition: choose the output size
    ⌈size/S⌉ first, pad the input with −∞ to fit it (the odd cell at the bottom/right),
    then take the maximum of each window of the padded array."""
    N, C, H, W = x.shape
    (KH, KW), (SH, SW) = kernel, stride
    OH, OW = -(-H // SH), -(-W // SW)
    pad_h, pad_w = max((OH - 1) * SH + KH - H, 0), max((OW - 1) * SW + KW - W, 0)
    padded = np.pad(x, ((0, 0), (0, 0), (pad_h // 2, pad_h - pad_h // 2),
                        (pad_w // 2, pad_w - pad_w // 2)), constant_values=-np.inf)
    y = np.empty((N, C, OH, OW), x.dtype)
    for i in range(OH):
        for j in range(OW):
            y[:, :, i, j] = padded[:, :, i * SH:i * SH + KH, j * SW:j * SW + KW].max(axis=(2, 3))
    return y


def distinct_values(shape, seed):
    """Tie-free input: a permutation of a grid with step 0.25 (no finite-difference nudge
    changes which element is a window's maximum)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.25 - 5.0


@st.composite
def upsample_cases(draw):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 5)),
             draw(st.integers(1, 5)))
    scale = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return shape, scale, draw(st.integers(0, 10**6))


@st.composite
def same_pool_cases(draw):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)),
             draw(st.integers(1, 9)))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return shape, kernel, stride, draw(st.integers(0, 10**6))


# ----------------------------------------------------------------------------- forward

@given(upsample_cases())
def test_upsample_equals_nested_loops(case):
    shape, (sh, sw), seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    y = F.upsample_nearest2d(Tensor(x), (sh, sw))
    np.testing.assert_array_equal(y.data, upsample_loops(x, sh, sw))


@given(same_pool_cases())
def test_same_max_pool_equals_padded_loops(case):
    shape, kernel, stride, seed = case
    x = distinct_values(shape, seed)
    y = F.max_pool2d_same(Tensor(x), kernel, stride)
    np.testing.assert_array_equal(y.data, same_max_pool_loops(x, kernel, stride))


@pytest.mark.parametrize("size, kernel, stride, expected", [
    (8, 3, 2, (4, 0, 1)),     # even: TensorFlow puts the single padding cell after
    (7, 3, 2, (4, 1, 1)),
    (64, 3, 2, (32, 0, 1)),   # EfficientDet's P6 -> P7 at a 512 input ... and P3 -> P4
    (5, 1, 3, (2, 0, 0)),     # stride beyond the kernel: no padding at all
    (2, 5, 1, (2, 2, 2)),
])
def test_same_padding_rule(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected
    out, before, after = expected
    assert out == math.ceil(size / stride)
    assert (out - 1) * stride + kernel <= size + before + after     # the last window fits


def test_same_pool_differs_from_symmetric_padding_on_even_sizes():
    """3×3/2 on a 4×4 input: SAME's windows start at rows 0 and 2 (padding below), a
    padding-1 PyTorch pool's at rows −1 and 1 — the outputs differ."""
    x = Tensor(distinct_values((1, 1, 4, 4), 3))
    same, symmetric = F.max_pool2d_same(x, 3, 2), F.max_pool2d(x, 3, 2, 1)
    assert same.shape == symmetric.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(same.data[0, 0, 0, 0], x.data[0, 0, :3, :3].max())
    assert not np.array_equal(same.data, symmetric.data)


def onnxruntime_output(node, x, out_shape, initializers=()):
    """Run one ONNX node on ``x`` in onnxruntime (opset 13)."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [node], "referee",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 4)])
def test_same_max_pool_matches_onnxruntime_same_upper(size):
    """onnxruntime is an independent referee: ONNX MaxPool with auto_pad=SAME_UPPER is
    TensorFlow's SAME (output ⌈size/S⌉, the extra padding at the end)."""
    helper = pytest.importorskip("onnx").helper
    x = distinct_values((2, 3) + size, 7).astype(np.float32)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                            auto_pad="SAME_UPPER")
    expected = onnxruntime_output(node, x, (2, 3, -(-size[0] // 2), -(-size[1] // 2)))
    np.testing.assert_array_equal(F.max_pool2d_same(Tensor(x), 3, 2).data, expected)


def test_upsample_matches_onnxruntime_resize_nearest():
    """ONNX Resize, nearest with floor rounding of asymmetric coordinates: source index
    ⌊i / s⌋, the definition above."""
    onnx = pytest.importorskip("onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    scales = onnx.helper.make_tensor("scales", onnx.TensorProto.FLOAT, [4], [1, 1, 2, 3])
    node = onnx.helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest",
                                 coordinate_transformation_mode="asymmetric",
                                 nearest_mode="floor")
    expected = onnxruntime_output(node, x, (2, 3, 8, 15), [scales])
    np.testing.assert_array_equal(F.upsample_nearest2d(Tensor(x), (2, 3)).data, expected)


@pytest.mark.parametrize("op", [lambda t: F.upsample_nearest2d(t, 2),
                                lambda t: F.max_pool2d_same(t, 3, 2)])
def test_layouts_and_dtype(op):
    """NCHW and channels-last memory give the same numbers; float32 stays float32; the
    output is channels-last memory, as every pooling output is."""
    x = distinct_values((2, 3, 6, 7), 1).astype(np.float32)
    nchw = op(Tensor(x))
    nhwc = op(Tensor(channels_last(x).transpose(0, 3, 1, 2)))
    assert nchw.dtype == nhwc.dtype == np.float32
    np.testing.assert_array_equal(nchw.data, nhwc.data)
    assert nchw.data.transpose(0, 2, 3, 1).flags.c_contiguous


def test_reference_kernels_give_the_same_pool_and_gradient():
    """MINICNN_KERNELS=reference runs the SAME pool on the plain NumPy kernel: same numbers."""
    x = distinct_values((2, 3, 7, 6), 4)
    results = []
    for mode in ("fast", "reference"):
        with kernel_mode(mode):
            t = Tensor(x, requires_grad=True)
            y = F.max_pool2d_same(t, 3, 2)
            (y * y).sum().backward()
            results.append((y.data, t.grad))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


# ----------------------------------------------------------------------------- backward

@settings(max_examples=15)
@given(upsample_cases())
def test_upsample_gradcheck(case):
    shape, scale, seed = case
    x = Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)
    assert gradcheck(lambda t: F.upsample_nearest2d(t, scale), [x])


@settings(max_examples=15)
@given(same_pool_cases())
def test_same_max_pool_gradcheck(case):
    shape, kernel, stride, seed = case
    x = Tensor(distinct_values(shape, seed), requires_grad=True)
    assert gradcheck(lambda t: F.max_pool2d_same(t, kernel, stride), [x])


def test_upsample_gradient_is_the_block_sum():
    x = Tensor(np.zeros((1, 1, 2, 2)), requires_grad=True)
    gy = np.arange(16.0).reshape(1, 1, 4, 4)
    (F.upsample_nearest2d(x, 2) * Tensor(gy)).sum().backward()
    np.testing.assert_array_equal(x.grad[0, 0], [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7],
                                                 [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]])


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call, error, message", [
    (lambda: F.upsample_nearest2d(Tensor(np.zeros((3, 4, 4))), 2), ValueError,
     r"UpsampleNearest2d\(scale_factor=2\): expected a 4-D \(N, C, H, W\) input, got shape "
     r"\(3, 4, 4\)"),
    (lambda: F.upsample_nearest2d(Tensor(np.zeros((1, 1, 4, 4))), 1.5), TypeError,
     r"scale_factor must be an int or an \(h, w\) pair of ints, got 1.5"),
    (lambda: F.upsample_nearest2d(Tensor(np.zeros((1, 1, 4, 4))), (2, 0)), ValueError,
     r"scale_factor must be positive \(at least 1\), got \(2, 0\)"),
    (lambda: F.max_pool2d_same(Tensor(np.zeros((1, 1, 4, 4), np.int64))), TypeError,
     r"MaxPool2dSame.*float32 or float64 input, got dtype int64"),
    (lambda: F.max_pool2d_same(Tensor(np.zeros((1, 1, 4, 4))), 3, 0), ValueError,
     r"MaxPool2dSame\(kernel_size=3, stride=0\): stride must be positive"),
    (lambda: nn.UpsamplingNearest2d(0), ValueError,
     r"UpsamplingNearest2d: scale_factor must be positive \(at least 1\), got 0"),
    (lambda: nn.MaxPool2dSame("3"), TypeError,
     r"MaxPool2dSame: kernel_size must be an int or an \(h, w\) pair of ints, got '3'"),
])
def test_errors_name_the_operation_and_what_arrived(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ----------------------------------------------------------------------------- layers

def test_layers_match_functions_and_show_their_settings():
    x = Tensor(distinct_values((2, 3, 9, 8), 5))
    up, down = nn.UpsamplingNearest2d(2), nn.MaxPool2dSame(3, 2)
    np.testing.assert_array_equal(up(x).data, F.upsample_nearest2d(x, 2).data)
    np.testing.assert_array_equal(down(x).data, F.max_pool2d_same(x, 3, 2).data)
    assert "scale_factor=(2, 2)" in repr(up)
    assert "kernel_size=(3, 3), stride=(2, 2), padding=SAME" in repr(down)


def test_summary_counts_the_layers():
    """A pool counts one comparison per window cell (as MaxPool2d does); an upsampling is a
    copy and costs nothing."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2dSame(3, 2), nn.UpsamplingNearest2d(2))
    report = summary(model, (1, 8, 8), format="dict")
    pool, up = report["rows"][2], report["rows"][3]
    assert pool["output_shape"] == (2, 4, 4) and up["output_shape"] == (2, 8, 8)
    assert pool["flops_by_category"]["pool"] == 2 * 4 * 4 * 9
    assert sum(up["flops_by_category"].values()) == 0
