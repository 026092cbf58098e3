"""Batch norm and local response norm against their formulas, their gradients against
finite differences, running statistics, eval mode, errors and layers."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn import Tensor, functional as F, gradcheck, nn
from minicnn.backend import cupy_or_none, gpu_available
from minicnn.kernels import batchnorm as bn_kernels
from minicnn.kernels import channels_last


def channel_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_formula(x, mean, var, gamma, beta, eps):
    """y = γ (x − μ) / √(var + ε) + β, per channel (axis 1)."""
    y = (x - per_channel(mean, x.ndim)) / np.sqrt(per_channel(var, x.ndim) + eps)
    if gamma is not None:
        y = y * per_channel(gamma, x.ndim)
    if beta is not None:
        y = y + per_channel(beta, x.ndim)
    return y


shapes = st.sampled_from([(4, 3, 5, 6), (2, 5, 3, 3), (1, 2, 4, 3), (8, 4), (5, 3, 7)])
small_shapes = st.sampled_from([(3, 2, 3, 4), (2, 3, 2, 2), (1, 2, 3, 3), (6, 3), (3, 2, 5)])


def bn_inputs(shape, seed, layout="nchw"):
    rng = np.random.default_rng(seed)
    channel_offsets = rng.standard_normal((1, shape[1]) + (1,) * (len(shape) - 2))
    x = rng.standard_normal(shape) * 2 + channel_offsets
    if layout == "channels_last" and x.ndim == 4:
        x = channels_last(x).transpose(0, 3, 1, 2)
    C = shape[1]
    return x, rng.standard_normal(C) + 1.5, rng.standard_normal(C)


# ----------------------------------------------------------------------------- batch norm

@settings(deadline=None)
@given(shapes, st.integers(0, 10**6), st.sampled_from(["nchw", "channels_last"]),
       st.booleans(), st.floats(0.01, 0.9))
def test_batch_norm_training_equals_formula_and_updates_running_stats(
        shape, seed, layout, affine, momentum):
    x, gamma, beta = bn_inputs(shape, seed, layout)
    if not affine:
        gamma = beta = None
    running_mean, running_var = np.full(shape[1], 0.5), np.full(shape[1], 2.0)
    y = F.batch_norm(Tensor(x), running_mean, running_var,
                     None if gamma is None else Tensor(gamma),
                     None if beta is None else Tensor(beta), training=True,
                     momentum=momentum, eps=1e-5)
    axes = channel_axes(x)
    mean, var = x.mean(axis=axes), x.var(axis=axes)                    # biased
    np.testing.assert_allclose(y.data, batch_norm_formula(x, mean, var, gamma, beta, 1e-5),
                               rtol=1e-9, atol=1e-9)
    count = x.size // x.shape[1]
    unbiased = x.var(axis=axes, ddof=1)
    assert np.isclose(unbiased, var * count / (count - 1)).all()
    np.testing.assert_allclose(running_mean, (1 - momentum) * 0.5 + momentum * mean, rtol=1e-12)
    np.testing.assert_allclose(running_var, (1 - momentum) * 2.0 + momentum * unbiased,
                               rtol=1e-12)


@settings(deadline=None)
@given(shapes, st.integers(0, 10**6), st.sampled_from(["nchw", "channels_last"]))
def test_batch_norm_eval_uses_running_stats_and_ignores_the_batch(shape, seed, layout):
    x, gamma, beta = bn_inputs(shape, seed, layout)
    rng = np.random.default_rng(seed + 1)
    running_mean = rng.standard_normal(shape[1])
    running_var = rng.random(shape[1]) + 0.5
    before = running_mean.copy(), running_var.copy()
    y = F.batch_norm(Tensor(x), running_mean, running_var, Tensor(gamma), Tensor(beta),
                     training=False, eps=1e-3)
    np.testing.assert_allclose(
        y.data, batch_norm_formula(x, running_mean, running_var, gamma, beta, 1e-3),
        rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(running_mean, before[0])        # untouched in eval
    np.testing.assert_array_equal(running_var, before[1])
    # the first sample's output does not depend on the rest of the batch
    alone = F.batch_norm(Tensor(x[:1]), running_mean, running_var, Tensor(gamma),
                         Tensor(beta), training=False, eps=1e-3)
    np.testing.assert_allclose(alone.data, y.data[:1], rtol=1e-12, atol=1e-12)


@settings(deadline=None, max_examples=15)
@given(small_shapes, st.integers(0, 10**6), st.sampled_from(["nchw", "channels_last"]),
       st.booleans(), st.booleans())
def test_batch_norm_gradcheck(shape, seed, layout, training, affine):
    x, gamma, beta = bn_inputs(shape, seed, layout)
    inputs = [Tensor(x, requires_grad=True)]
    if affine:
        inputs += [Tensor(gamma, requires_grad=True), Tensor(beta, requires_grad=True)]
    rng = np.random.default_rng(seed)
    running = (rng.standard_normal(shape[1]), rng.random(shape[1]) + 0.5)

    def normalize(t, *params):
        # fresh copies: training mode updates running statistics in place at every call
        return F.batch_norm(t, running[0].copy(), running[1].copy(), *params,
                            training=training)
    assert gradcheck(normalize, inputs)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 3, 4), (7, 3), (3, 2, 4)])
def test_batch_norm_numba_path_passes_gradcheck(monkeypatch, training, shape):
    """Small inputs take the NumPy expressions (kernels.batchnorm.SMALL); force the Numba
    kernels so they are held to finite differences too."""
    monkeypatch.setattr(bn_kernels, "SMALL", 0)
    x, gamma, beta = bn_inputs(shape, 3, "channels_last")
    inputs = [Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    running = (np.zeros(shape[1]), np.ones(shape[1]) * 2)
    assert gradcheck(lambda t, g, b: F.batch_norm(t, running[0].copy(), running[1].copy(),
                                                  g, b, training=training), inputs)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("wants", [(False, True, False), (True, False, False),
                                   (False, False, True), (True, True, True)])
def test_batch_norm_gradient_only_for_what_requires_it(training, wants):
    """Frozen γ, β (transfer learning) or a frozen input: each combination, both modes."""
    x, gamma, beta = bn_inputs((3, 2, 4, 4), 0)
    t, g, b = (Tensor(a, requires_grad=w) for a, w in zip((x, gamma, beta), wants))
    F.batch_norm(t, np.zeros(2), np.ones(2), g, b, training=training).sum().backward()
    for tensor, wanted in zip((t, g, b), wants):
        assert (tensor.grad is not None) == wanted


def test_batch_norm_float32_stays_float32_and_channels_last_stays_channels_last():
    x, gamma, beta = bn_inputs((4, 8, 5, 5), 0, "channels_last")
    x = x.astype(np.float32)
    t = Tensor(x, requires_grad=True)
    g = Tensor(gamma.astype(np.float32), requires_grad=True)
    b = Tensor(beta.astype(np.float32), requires_grad=True)
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    y = F.batch_norm(t, rm, rv, g, b)
    assert y.dtype == np.float32 and rm.dtype == np.float32
    assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous
    (y * y).sum().backward()
    assert t.grad.dtype == g.grad.dtype == b.grad.dtype == np.float32
    reference = batch_norm_formula(x.astype(np.float64), x.mean(axis=(0, 2, 3), dtype=np.float64),
                                   x.astype(np.float64).var(axis=(0, 2, 3)), gamma, beta, 1e-5)
    np.testing.assert_allclose(y.data, reference, rtol=1e-4, atol=1e-4)


def test_batch_norm_float32_statistics_are_accurate_for_large_batches():
    """float64 accumulation: the normalized output of a large float32 batch with a large
    offset still has mean 0 and variance 1 per channel to float32 precision."""
    rng = np.random.default_rng(0)
    x = (100 + rng.standard_normal((64, 16, 32, 32))).astype(np.float32)
    y = F.batch_norm(Tensor(channels_last(x).transpose(0, 3, 1, 2)), None, None).data
    y64 = y.astype(np.float64)
    assert np.abs(y64.mean(axis=(0, 2, 3))).max() < 1e-4
    assert np.abs(y64.var(axis=(0, 2, 3)) - 1).max() < 1e-4


def test_batch_norm_layers_train_and_eval():
    layer = nn.BatchNorm2d(3)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    x, _, _ = bn_inputs((6, 3, 4, 4), 1)
    x = x.astype(np.float32)
    layer.train()
    y_train = layer(Tensor(x))
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(layer.running_var,
                               0.9 + 0.1 * x.astype(np.float64).var(axis=(0, 2, 3), ddof=1),
                               rtol=1e-5)
    state = layer.state_dict()
    np.testing.assert_array_equal(state["running_mean"], layer.running_mean)
    layer.eval()
    y_eval = layer(Tensor(x))
    np.testing.assert_allclose(
        y_eval.data, batch_norm_formula(x, layer.running_mean, layer.running_var, None, None,
                                        1e-5), rtol=1e-4, atol=1e-5)
    assert not np.allclose(y_eval.data, y_train.data)
    layer1d = nn.BatchNorm1d(5, affine=False)
    assert layer1d(Tensor(np.random.default_rng(0).standard_normal((7, 5)))).shape == (7, 5)
    assert list(layer1d.parameters()) == []


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.batch_norm(Tensor(np.zeros(4)), None, None), ValueError,
     r"batch_norm: expected an \(N, C, \.\.\.\) input of rank 2 or more, got shape \(4,\)"),
    (lambda: F.batch_norm(Tensor(np.zeros((2, 3, 4, 4))), np.zeros(4), np.ones(4)), ValueError,
     r"batch_norm: running_mean must have shape \(3,\) for an input with 3 channels "
     r"\(shape \(2, 3, 4, 4\)\), got \(4,\)"),
    (lambda: F.batch_norm(Tensor(np.zeros((2, 3))), None, None, Tensor(np.ones(2))),
     ValueError, r"weight must have shape \(3,\)"),
    (lambda: F.batch_norm(Tensor(np.zeros((2, 3))), None, None, training=False), ValueError,
     r"eval mode \(training=False\) needs running_mean and running_var"),
    (lambda: F.batch_norm(Tensor(np.zeros((1, 3, 1, 1))), None, None), ValueError,
     r"more than one value per channel.*\(1, 3, 1, 1\)"),
    (lambda: F.batch_norm(Tensor(np.zeros((2, 3), np.int64)), None, None), TypeError,
     r"floating-point input, got dtype int64"),
    (lambda: nn.BatchNorm2d(3)(Tensor(np.zeros((2, 4, 5, 5), np.float32))), ValueError,
     r"BatchNorm2d\(3\): expected input of rank 4 with 3 channels on axis 1, got shape "
     r"\(2, 4, 5, 5\)"),
])
def test_batch_norm_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ----------------------------------------------------------------------------- LRN

def lrn_formula(a, size, alpha, beta, k, alpha_over_n):
    """b_c = a_c / (k + α' Σ_{j=max(0, c−⌊n/2⌋)}^{min(C−1, c+⌊(n−1)/2⌋)} a_j²)^β."""
    C = a.shape[1]
    alpha = alpha / size if alpha_over_n else alpha
    b = np.empty_like(a)
    for c in range(C):
        low, high = max(0, c - size // 2), min(C - 1, c + (size - 1) // 2)
        total = (a[:, low:high + 1] ** 2).sum(axis=1)
        b[:, c] = a[:, c] / (k + alpha * total) ** beta
    return b


@settings(deadline=None)
@given(st.integers(1, 2), st.integers(1, 9), st.integers(1, 7), st.booleans(),
       st.integers(0, 10**6), st.sampled_from(["nchw", "channels_last"]))
def test_lrn_equals_formula_in_both_conventions(n, channels, size, alpha_over_n, seed, layout):
    a = np.random.default_rng(seed).standard_normal((n, channels, 3, 4)) * 3
    if layout == "channels_last":
        a = channels_last(a).transpose(0, 3, 1, 2)
    y = F.local_response_norm(Tensor(a), size, 0.3, 0.75, 2.0, alpha_over_n)
    np.testing.assert_allclose(y.data, lrn_formula(a, size, 0.3, 0.75, 2.0, alpha_over_n),
                               rtol=1e-10, atol=1e-12)


def test_lrn_conventions_differ_by_alpha_over_n():
    a = np.random.default_rng(0).standard_normal((2, 8, 3, 3))
    paper = F.local_response_norm(Tensor(a), 5, 1e-4 / 5, 0.75, 2.0).data
    pytorch = F.local_response_norm(Tensor(a), 5, 1e-4, 0.75, 2.0, alpha_over_n=True).data
    np.testing.assert_allclose(paper, pytorch, rtol=1e-14)


@settings(deadline=None, max_examples=15)
@given(st.integers(1, 6), st.integers(1, 6), st.booleans(), st.integers(0, 10**6))
def test_lrn_gradcheck(channels, size, alpha_over_n, seed):
    a = Tensor(np.random.default_rng(seed).standard_normal((2, channels, 2, 3)),
               requires_grad=True)
    assert gradcheck(lambda t: F.local_response_norm(t, size, 0.5, 0.75, 1.0, alpha_over_n),
                     [a])


def test_lrn_layer_and_float32():
    layer = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    assert "size=5, alpha=0.0001, beta=0.75, k=2.0" in repr(layer)
    x = np.random.default_rng(0).standard_normal((2, 6, 4, 4)).astype(np.float32)
    y = layer(Tensor(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, lrn_formula(x.astype(np.float64), 5, 1e-4, 0.75, 2.0,
                                                   False), rtol=1e-5)


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.local_response_norm(Tensor(np.zeros((2, 3))), 5), ValueError,
     r"local_response_norm: expected a 4-D \(N, C, H, W\) input, got shape \(2, 3\)"),
    (lambda: F.local_response_norm(Tensor(np.zeros((1, 3, 2, 2))), 0), ValueError,
     r"size must be a positive int, got 0"),
    (lambda: F.local_response_norm(Tensor(np.zeros((1, 3, 2, 2), np.int8)), 3), TypeError,
     r"floating-point input, got dtype int8"),
])
def test_lrn_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.parametrize("device", [pytest.param("gpu", marks=pytest.mark.skipif(
    not gpu_available(), reason="no CUDA GPU with CuPy on this machine"))])
class TestNormOnDevice:
    @pytest.mark.parametrize("training", [True, False])
    def test_batch_norm_matches_cpu(self, device, training):
        cupy = cupy_or_none()
        x, gamma, beta = bn_inputs((4, 3, 5, 5), 0, "channels_last")
        stats_cpu = [np.zeros(3), np.ones(3)]
        stats_gpu = [cupy.zeros(3), cupy.ones(3)]
        cpu = [Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
        gpu = [Tensor(cupy.asarray(a), requires_grad=True) for a in (x, gamma, beta)]
        y_cpu = F.batch_norm(cpu[0], *stats_cpu, *cpu[1:], training=training)
        y_gpu = F.batch_norm(gpu[0], *stats_gpu, *gpu[1:], training=training)
        np.testing.assert_allclose(y_gpu.numpy(), y_cpu.numpy(), rtol=1e-10, atol=1e-10)
        for s_cpu, s_gpu in zip(stats_cpu, stats_gpu):
            np.testing.assert_allclose(cupy.asnumpy(s_gpu), s_cpu, rtol=1e-12)
        gy = np.random.default_rng(1).standard_normal(x.shape)
        y_cpu.backward(gy)
        y_gpu.backward(cupy.asarray(gy))
        for a, b in zip(cpu, gpu):
            np.testing.assert_allclose(cupy.asnumpy(b.grad), a.grad, rtol=1e-9, atol=1e-9)

    def test_lrn_matches_cpu(self, device):
        cupy = cupy_or_none()
        a = np.random.default_rng(0).standard_normal((2, 7, 3, 3))
        cpu, gpu = Tensor(a, requires_grad=True), Tensor(cupy.asarray(a), requires_grad=True)
        y_cpu, y_gpu = F.local_response_norm(cpu, 4), F.local_response_norm(gpu, 4)
        np.testing.assert_allclose(y_gpu.numpy(), y_cpu.numpy(), rtol=1e-12)
        y_cpu.sum().backward()
        y_gpu.sum().backward()
        np.testing.assert_allclose(cupy.asnumpy(gpu.grad), cpu.grad, rtol=1e-10, atol=1e-12)


# ============================================================================ composed reference

@settings(deadline=None, max_examples=15)
@given(shapes, st.integers(0, 10**6), st.sampled_from(["nchw", "channels_last"]),
       st.booleans())
def test_batch_norm_equals_its_composition_of_mean_and_var(shape, seed, layout, affine):
    """The fused Function and the ten-line composition agree, forward and every gradient."""
    x, gamma, beta = bn_inputs(shape, seed, layout)
    upstream = np.random.default_rng(seed + 1).standard_normal(shape)
    results = []
    for f in (lambda x, w, b: F.batch_norm(x, None, None, w, b),
              lambda x, w, b: F.batch_norm_composed(x, w, b)):
        xt = Tensor(x, requires_grad=True)
        wt = Tensor(gamma, requires_grad=True) if affine else None
        bt = Tensor(beta, requires_grad=True) if affine else None
        y = f(xt, wt, bt)
        y.backward(upstream)
        results.append([y.data, xt.grad] + ([wt.grad, bt.grad] if affine else []))
    for fused, composed in zip(*results):
        np.testing.assert_allclose(fused, composed, rtol=1e-9, atol=1e-10)


def test_batch_norm_saves_exactly_what_its_backward_reads():
    """The input rows, μ, 1/σ and γ, all freed by the backward."""
    x, gamma, beta = bn_inputs((4, 3, 2, 2), 0)
    y = F.batch_norm(Tensor(x, requires_grad=True), None, None,
                     Tensor(gamma, requires_grad=True), Tensor(beta, requires_grad=True))
    function = y.creator
    rows, mean, inv_std, weight = function.saved
    assert rows.shape == (16, 3) and mean.shape == inv_std.shape == (3,)
    np.testing.assert_array_equal(weight, gamma)
    y.sum().backward()
    assert function.saved is None and function.inputs is None


def test_batch_norm_runs_its_reference_kernels_in_reference_mode(monkeypatch):
    """kernels.batchnorm is in the kernel registry: ``kernel_mode("reference")`` (and
    MINICNN_KERNELS=reference) runs the NumPy formulas where Numba runs otherwise, with
    the same results."""
    from minicnn.kernels.registry import KERNELS, kernel_mode
    calls = []
    for name in ("channel_stats", "backward_sums", "scale_shift", "scale_shift2"):
        kernel = KERNELS[f"batchnorm_{name}"]
        monkeypatch.setattr(kernel, "numba",
                            lambda *a, _f=kernel.numba, _n=name: calls.append(_n) or _f(*a))
    monkeypatch.setattr(bn_kernels, "SMALL", 0)              # Numba for every size
    x, gamma, beta = bn_inputs((4, 3, 5, 6), 1, "channels_last")

    def run():
        xt, gt, bt = (Tensor(a, requires_grad=True) for a in (x, gamma, beta))
        y = F.batch_norm(xt, None, None, gt, bt)
        y.backward(np.cos(x))
        return [y.data, xt.grad, gt.grad, bt.grad]
    fast = run()
    assert sorted(set(calls)) == ["backward_sums", "channel_stats", "scale_shift",
                                  "scale_shift2"]
    calls.clear()
    with kernel_mode("reference"):
        reference = run()
    assert calls == []
    for a, b in zip(fast, reference):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
