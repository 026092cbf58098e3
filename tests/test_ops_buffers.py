"""The two shape operations the zoo needs for speed, held to their literal compositions:

* ``zero_pad_subsample`` (ResNet's shortcut option A) equals getitem then pad;
* ``concat_into_buffer`` (DenseNet's growing block output) equals ``concat``;

forward in float32 and float64 over generated shapes, backward by central finite
differences (``gradcheck``, float64), and bad input refused with a clear message.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn import Tensor, functional as F
from minicnn.gradcheck import gradcheck

DTYPES = st.sampled_from([np.float32, np.float64])


def images(draw, max_side=5, max_channels=4):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, max_channels)),
             draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).standard_normal(shape)


@st.composite
def zero_pad_cases(draw):
    x = images(draw)
    extra = draw(st.integers(0, 3))
    stride = draw(st.integers(1, 3))
    return x, x.shape[1] + extra, stride


@settings(deadline=None)
@given(zero_pad_cases(), DTYPES)
def test_zero_pad_subsample_equals_getitem_then_pad(case, dtype):
    x, out_channels, stride = case
    y = F.zero_pad_subsample(Tensor(x.astype(dtype)), out_channels, stride)
    subsampled = x[:, :, ::stride, ::stride]
    expected = np.pad(subsampled, ((0, 0), (0, out_channels - x.shape[1]), (0, 0), (0, 0)))
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_array_equal(y.numpy(), expected.astype(dtype))


@settings(deadline=None, max_examples=15)
@given(zero_pad_cases())
def test_zero_pad_subsample_gradcheck(case):
    x, out_channels, stride = case
    assert gradcheck(lambda t: F.zero_pad_subsample(t, out_channels, stride),
                     [Tensor(x, requires_grad=True)])


def test_zero_pad_subsample_refuses_fewer_channels_and_other_ranks():
    with pytest.raises(ValueError, match="cannot pad 4 channels down to 3"):
        F.zero_pad_subsample(Tensor(np.zeros((1, 4, 2, 2))), 3, 2)
    with pytest.raises(ValueError, match=r"expected an \(N, C, H, W\) input"):
        F.zero_pad_subsample(Tensor(np.zeros((4, 2, 2))), 4, 2)


@st.composite
def growing_blocks(draw):
    """A block input and the new pieces appended to it, all (N, ·, H, W)."""
    first = images(draw, max_side=3)
    n, _, h, w = first.shape
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    widths = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    return first, [rng.standard_normal((n, k, h, w)) for k in widths]


def grow(storage, first, pieces):
    """What a dense block does: place its input, then append each piece."""
    features = F.concat_into_buffer(storage, 0, first)
    for piece in pieces:
        features = F.concat_into_buffer(storage, features.shape[1], piece, prefix=features)
    return features


def buffer_for(first, pieces, dtype):
    n, _, h, w = first.shape
    total = first.shape[1] + sum(p.shape[1] for p in pieces)
    return np.empty((n, h, w, total), dtype=dtype)


@settings(deadline=None)
@given(growing_blocks(), DTYPES)
def test_concat_into_buffer_equals_concat(case, dtype):
    first, pieces = case
    tensors = [Tensor(a.astype(dtype)) for a in [first] + pieces]
    y = grow(buffer_for(first, pieces, dtype), tensors[0], tensors[1:])
    expected = np.concatenate([t.numpy() for t in tensors], axis=1)
    np.testing.assert_array_equal(y.numpy(), expected)


@settings(deadline=None, max_examples=15)
@given(growing_blocks())
def test_concat_into_buffer_gradcheck(case):
    first, pieces = case
    inputs = [Tensor(a, requires_grad=True) for a in [first] + pieces]
    # a fresh buffer per evaluation, as each forward pass of a block allocates its own
    assert gradcheck(lambda *ts: grow(buffer_for(first, pieces, np.float64), ts[0], ts[1:]),
                     inputs)
