"""The Grouped convolution algorithm against the textbook Im2colGemm: forward, both
gradients, float64 and float32, one sample per block and one block for the batch; and the
chooser's pick for grouped layers. (tests/test_conv.py holds every algorithm, this one
included, to the nested-loop definition and to finite differences.)"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn import Tensor, functional as F
from minicnn.functional import conv as conv_module
from minicnn.kernels.registry import kernel_mode


@st.composite
def grouped_settings(draw):
    """Grouped, not depthwise (Cg ≥ 2 or a channel multiplier), every window setting."""
    groups = draw(st.integers(2, 4))
    in_per_group = draw(st.integers(1, 3))
    out_per_group = draw(st.integers(2 if in_per_group == 1 else 1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 7))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 7))
    return dict(x=(draw(st.integers(1, 3)), groups * in_per_group, h, w),
                w=(groups * out_per_group, in_per_group, kh, kw),
                options=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                seed=draw(st.integers(0, 2 ** 16)))


def forward_and_gradients(case, algorithm, dtype):
    """y, gx, gw, gb of ``sum(y · r)`` for a fixed random r (every output weighted)."""
    rng = np.random.default_rng(case["seed"])
    x = Tensor(rng.standard_normal(case["x"]).astype(dtype), requires_grad=True)
    w = Tensor(rng.standard_normal(case["w"]).astype(dtype), requires_grad=True)
    b = Tensor(rng.standard_normal(case["w"][0]).astype(dtype), requires_grad=True)
    y = F.conv2d(x, w, b, conv_algorithm=algorithm, **case["options"])
    assert y.creator.path == algorithm and y.dtype == dtype
    weights = Tensor(rng.standard_normal(y.shape).astype(dtype))
    (y * weights).sum().backward()
    return y.numpy(), x.grad, w.grad, b.grad


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 2e-5)])
@settings(deadline=None)
@given(case=grouped_settings(), one_sample_per_block=st.booleans())
def test_grouped_equals_im2col_forward_and_backward(case, one_sample_per_block, dtype,
                                                     tolerance):
    expected = forward_and_gradients(case, "im2col", dtype)
    with pytest.MonkeyPatch.context() as patch:
        if one_sample_per_block:
            patch.setattr(conv_module, "BLOCK_BYTES", 1)
        got = forward_and_gradients(case, "grouped", dtype)
    for name, a, e in zip(("y", "gx", "gw", "gb"), got, expected):
        scale = max(1.0, np.abs(e).max())
        assert np.abs(a - e).max() <= tolerance * scale, name


def test_grouped_weight_gradient_alone_for_a_first_layer():
    """Input without requires_grad: backward makes gw only, and the same gw."""
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 8, 6, 6)))
    results = []
    for algorithm in ("grouped", "im2col"):
        w = Tensor(rng.standard_normal((8, 2, 3, 3)) if not results else results[0][0],
                   requires_grad=True)
        F.conv2d(x, w, padding=1, groups=4, conv_algorithm=algorithm).sum().backward()
        results.append((w.data, w.grad))
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12)
    assert x.grad is None


def test_chooser_sends_grouped_layers_to_grouped_and_depthwise_to_depthwise():
    x = Tensor(np.zeros((2, 256, 8, 8), np.float32), requires_grad=True)
    resnext = Tensor(np.zeros((256, 8, 3, 3), np.float32))       # 32 groups of 8
    depthwise = Tensor(np.zeros((256, 1, 3, 3), np.float32))     # (narrower: test_direct.py)
    assert F.conv2d(x, resnext, padding=1, groups=32).creator.path == "grouped"
    assert F.conv2d(x, depthwise, padding=1, groups=256).creator.path == "depthwise"
    with kernel_mode("reference"):
        assert F.conv2d(x, resnext, padding=1, groups=32).creator.path == "im2col"


def test_grouped_cannot_be_forced_on_a_dense_convolution():
    x, w = Tensor(np.zeros((1, 4, 5, 5))), Tensor(np.zeros((4, 4, 3, 3)))
    with pytest.raises(ValueError, match=r"conv_algorithm='grouped' cannot compute .*groups 1"):
        F.conv2d(x, w, conv_algorithm="grouped")
