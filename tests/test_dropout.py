"""Dropout, spatial dropout and drop-path: scaling, statistics, masks, seeding, errors."""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn import Tensor, functional as F, gradcheck, nn
from minicnn.backend import cupy_or_none, gpu_available
from minicnn.kernels import channels_last

# the module, not the function F.dropout that shadows its name in minicnn.functional
dropout_module = importlib.import_module("minicnn.functional.dropout")

FUNCTIONS = [F.dropout, F.dropout2d, F.drop_path]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_identity_outside_training_and_for_p_zero(function):
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 4)), requires_grad=True)
    assert function(x, 0.5, training=False) is x
    assert function(x, 0.0, training=True) is x


@settings(deadline=None, max_examples=10)
@given(st.floats(0.05, 0.9), st.integers(0, 10**6))
def test_dropout_zeroes_a_fraction_p_and_scales_survivors(p, seed):
    x = np.random.default_rng(seed).random((40, 50, 10, 10)) + 1.0        # no zeros in x
    y = F.dropout(Tensor(x), p, True, rng=np.random.default_rng(seed)).data
    dropped = y == 0
    # 200,000 Bernoulli draws: the fraction is within 5 standard deviations of p
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / dropped.size)
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - p), rtol=1e-12)


def test_dropout2d_drops_whole_channels():
    x = np.random.default_rng(0).random((30, 40, 5, 5)) + 1.0
    y = F.dropout2d(Tensor(x), 0.3, True, rng=np.random.default_rng(1)).data
    maps_zero = (y == 0).all(axis=(2, 3))
    maps_kept = (y != 0).all(axis=(2, 3))
    assert (maps_zero | maps_kept).all()                 # each map all kept or all dropped
    assert abs(maps_zero.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / maps_zero.size)
    np.testing.assert_allclose(y[maps_kept], (x / 0.7)[maps_kept], rtol=1e-12)


def test_drop_path_drops_whole_samples():
    x = np.random.default_rng(0).random((400, 3, 4, 4)) + 1.0
    y = F.drop_path(Tensor(x), 0.25, True, rng=np.random.default_rng(2)).data
    samples_zero = (y == 0).all(axis=(1, 2, 3))
    samples_kept = (y != 0).all(axis=(1, 2, 3))
    assert (samples_zero | samples_kept).all()
    assert abs(samples_zero.mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / 400)
    np.testing.assert_allclose(y[samples_kept], x[samples_kept] / 0.75, rtol=1e-12)


def test_expectation_is_preserved():
    """Inverted dropout: E[y] = x, so evaluation needs no rescaling."""
    x = np.full((200, 100, 10, 10), 3.0)
    for function in FUNCTIONS:
        y = function(Tensor(x), 0.4, True, rng=np.random.default_rng(5)).data
        assert abs(y.mean() - 3.0) < 0.1, function.__name__


@pytest.mark.parametrize("function", FUNCTIONS)
def test_backward_is_the_same_mask(function):
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4, 3, 3)), requires_grad=True)
    y = function(x, 0.5, True, rng=np.random.default_rng(3))
    y.backward(np.ones(y.shape))
    mask = y.data / x.data
    np.testing.assert_allclose(x.grad, mask, rtol=1e-12)
    assert gradcheck(lambda t: function(t, 0.5, True, rng=np.random.default_rng(3)), [x])


@pytest.mark.parametrize("function", FUNCTIONS)
def test_float32_stays_float32_and_layout_is_kept(function):
    x = np.random.default_rng(0).standard_normal((2, 8, 5, 5)).astype(np.float32)
    x_cl = channels_last(x).transpose(0, 3, 1, 2)
    t = Tensor(x_cl, requires_grad=True)
    y = function(t, 0.5, True)
    assert y.dtype == np.float32
    assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous     # still channels-last
    y.sum().backward()
    assert t.grad.dtype == np.float32


def test_manual_seed_makes_the_default_generator_reproducible():
    x = Tensor(np.ones((4, 5, 6, 6)))
    dropout_module.manual_seed(123)
    first = [f(x, 0.5, True).data for f in FUNCTIONS]
    F.dropout.manual_seed(123)                 # the same function, reached from F.dropout
    second = [f(x, 0.5, True).data for f in FUNCTIONS]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(F.dropout(x, 0.5, True).data, first[0])   # stream moves on


def test_layers_follow_train_and_eval():
    layer = nn.Dropout(0.5)
    x = Tensor(np.ones((10, 10)))
    assert not np.array_equal(layer(x).data, x.data)
    layer.eval()
    assert layer(x) is x
    assert repr(nn.DropPath(0.2)) .startswith("DropPath(p=0.2")
    assert nn.Dropout2d(0.1)(Tensor(np.ones((2, 3, 4, 4)))).shape == (2, 3, 4, 4)


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.dropout(Tensor(np.ones(3)), 1.0), ValueError,
     r"dropout: p must be a probability in \[0, 1\), got 1.0"),
    (lambda: F.drop_path(Tensor(np.ones((2, 3))), -0.1), ValueError,
     r"drop_path: p must be a probability in \[0, 1\), got -0.1"),
    (lambda: F.dropout2d(Tensor(np.ones((2, 3))), 0.5), ValueError,
     r"dropout2d: expected a 4-D \(N, C, H, W\) input, got shape \(2, 3\)"),
    (lambda: F.dropout(Tensor(np.ones(3, np.int64)), 0.5), TypeError,
     r"dropout: expected a floating-point input, got dtype int64"),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.gpu
@pytest.mark.parametrize("device", [pytest.param("gpu", marks=pytest.mark.skipif(
    not gpu_available(), reason="no CUDA GPU with CuPy on this machine"))])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_on_gpu(device, function):
    cupy = cupy_or_none()
    x = Tensor(cupy.ones((6, 4, 5, 5), dtype=cupy.float32), requires_grad=True)
    y = function(x, 0.5, True)
    assert y.device == "gpu" and y.dtype == np.float32
    values = set(np.unique(y.numpy()).tolist())
    assert values <= {0.0, 2.0}
    y.sum().backward()
    np.testing.assert_array_equal(cupy.asnumpy(x.grad), y.numpy())
    # with a host generator the mask is the CPU's
    y_host = function(x, 0.5, True, rng=np.random.default_rng(0)).numpy()
    y_cpu = function(Tensor(np.ones((6, 4, 5, 5), np.float32)), 0.5, True,
                     rng=np.random.default_rng(0)).numpy()
    np.testing.assert_array_equal(y_host, y_cpu)
