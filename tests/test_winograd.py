"""Winograd F(m×m, 3×3): its matrices, its tile transforms (Numba against the NumPy
reference, and each against its adjoint), and the convolution path built on them."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn import Tensor, functional as F, gradcheck
from minicnn.functional import conv as conv_module
from minicnn.kernels import winograd
from tests.test_conv import conv2d_loops


@contextlib.contextmanager
def winograd_everywhere(tile):
    """Every stride-1 3×3 convolution takes the Winograd path with F(tile×tile, 3×3).
    (A context manager, not monkeypatch: hypothesis tests run many examples per call.)"""
    names = ("WINOGRAD_MIN_CHANNELS", "WINOGRAD_TILE", "WINOGRAD_MAX_RATIO")
    saved = [getattr(conv_module, name) for name in names]
    for name, value in zip(names, (1, tile, float("inf"))):
        setattr(conv_module, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved):
            setattr(conv_module, name, value)


@pytest.mark.parametrize("m", sorted(winograd.MATRICES))
def test_matrices_compute_a_three_tap_correlation(m):
    """y = Aᵀ[(G g) ⊙ (Bᵀ d)] is y[i] = Σ_k d[i + k]·g[k]: m outputs from m + 2 inputs."""
    AT, G, BT = (np.asarray(matrix, dtype=np.float64) for matrix in winograd.MATRICES[m])
    assert AT.shape == (m, m + 2) and G.shape == (m + 2, 3) and BT.shape == (m + 2, m + 2)
    rng = np.random.default_rng(m)
    for _ in range(5):
        d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
        expected = [d[i:i + 3] @ g for i in range(m)]
        np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), expected, rtol=1e-12, atol=1e-12)


@st.composite
def tilings(draw):
    m = draw(st.sampled_from(sorted(winograd.MATRICES)))
    padding = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, 3 - 2 * padding[0]), 11))
    w = draw(st.integers(max(1, 3 - 2 * padding[1]), 11))
    shape = (draw(st.integers(1, 3)), h, w, draw(st.integers(1, 5)))
    return winograd.WinogradTiling(shape, padding, m, np.float64), draw(st.integers(0, 2 ** 16))


@settings(deadline=None)
@given(tilings())
def test_cpu_transforms_equal_reference(case):
    t, seed = case
    rng = np.random.default_rng(seed)
    CO = 3
    x = rng.standard_normal((t.N, t.H, t.W, t.C))
    tiles = rng.standard_normal((t.alpha ** 2, t.T, t.C))
    products = rng.standard_normal((t.alpha ** 2, t.T, CO))
    gy = rng.standard_normal((t.N, t.OH, t.OW, CO))
    pairs = [(winograd.input_transform_numba, winograd.input_transform_reference, x),
             (winograd.input_transform_adjoint_numba, winograd.input_transform_adjoint_reference, tiles),
             (winograd.output_transform_numba, winograd.output_transform_reference, products),
             (winograd.output_transform_adjoint_numba, winograd.output_transform_adjoint_reference, gy)]
    for cpu, reference, argument in pairs:
        np.testing.assert_allclose(cpu(argument, t), reference(argument, t), rtol=1e-12, atol=1e-12,
                                   err_msg=cpu.__name__)


@settings(deadline=None)
@given(tilings())
def test_each_transform_is_the_adjoint_of_its_partner(case):
    """⟨T a, b⟩ = ⟨a, T* b⟩: what makes the backward pass the gradient of the forward."""
    t, seed = case
    rng = np.random.default_rng(seed)
    CO = 2
    x, V = rng.standard_normal((t.N, t.H, t.W, t.C)), rng.standard_normal((t.alpha ** 2, t.T, t.C))
    M, gy = rng.standard_normal((t.alpha ** 2, t.T, CO)), rng.standard_normal((t.N, t.OH, t.OW, CO))
    w, U = rng.standard_normal((CO, t.C, 3, 3)), rng.standard_normal((t.alpha ** 2, CO, t.C))
    checks = [(winograd.input_transform_numba(x, t), V, x, winograd.input_transform_adjoint_numba(V, t)),
              (winograd.output_transform_numba(M, t), gy, M, winograd.output_transform_adjoint_numba(gy, t)),
              (winograd.filter_transform(w, t), U, w, winograd.filter_transform_adjoint(U, t))]
    for forward, probe, argument, adjoint in checks:
        assert np.vdot(forward, probe) == pytest.approx(np.vdot(argument, adjoint), rel=1e-10, abs=1e-10)


@st.composite
def winograd_convolutions(draw):
    padding = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, 3 - 2 * padding[0]), 10))
    w = draw(st.integers(max(1, 3 - 2 * padding[1]), 10))
    n, channels, out_channels = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(shape=(n, channels, h, w), weight=(out_channels, channels, 3, 3), padding=padding,
                tile=draw(st.sampled_from(sorted(winograd.MATRICES))), seed=draw(st.integers(0, 2 ** 16)))


@settings(deadline=None)
@given(winograd_convolutions())
def test_winograd_convolution_equals_nested_loops(case):
    rng = np.random.default_rng(case["seed"])
    x, w = rng.standard_normal(case["shape"]), rng.standard_normal(case["weight"])
    b = rng.standard_normal(case["weight"][0])
    with winograd_everywhere(case["tile"]):
        y = F.conv2d(Tensor(x), Tensor(w, requires_grad=True), Tensor(b), padding=case["padding"])
    assert y.creator.path == "winograd"
    expected = conv2d_loops(x, w, b, (1, 1), case["padding"], (1, 1), 1)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10)


@settings(deadline=None, max_examples=15)
@given(winograd_convolutions())
def test_winograd_backward_passes_gradcheck(case):
    rng = np.random.default_rng(case["seed"])
    inputs = [Tensor(rng.standard_normal(shape), requires_grad=True)
              for shape in (case["shape"], case["weight"], case["weight"][:1])]
    with winograd_everywhere(case["tile"]):
        assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=case["padding"]), inputs)


def _results(x, w, b):
    tensors = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    y = F.conv2d(*tensors, padding=1)
    (y * Tensor(np.linspace(-1, 1, y.size, dtype=x.dtype).reshape(y.shape))).sum().backward()
    return [y.data] + [t.grad for t in tensors], y.creator.path


def test_sample_blocks_give_the_whole_batch_numbers(monkeypatch):
    """Several sub-batches, the last one short, give what one whole batch gives."""
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((7, 32, 9, 6)), rng.standard_normal((40, 32, 3, 3)), rng.standard_normal(40)
    whole, path = _results(x, w, b)
    assert path == "winograd"                 # 32 channels in, 40 out: chosen by default
    monkeypatch.setattr(conv_module, "BLOCK_BYTES", 1)      # U's size decides the blocks
    block_sizes = []
    transform = winograd.input_transform

    def recording_transform(x_block, tiling):
        block_sizes.append(x_block.shape[0])
        return transform(x_block, tiling)
    monkeypatch.setattr(winograd, "input_transform", recording_transform)
    blocked, _ = _results(x, w, b)
    # forward, then backward (which rebuilds V): 7 samples as a block of 5 and one of 2
    assert block_sizes == [5, 2, 5, 2]
    for got, expected in zip(blocked, whole):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_float32_winograd_stays_close_to_im2col(monkeypatch):
    """F(4×4, 3×3) multiplies by constants up to 8 and divides by up to 24: in float32 its
    results must stay within 1e-5 (relative to the largest value) of im2col's."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 64, 12, 12)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    fast, path = _results(x, w, b)
    assert path == "winograd" and all(a.dtype == np.float32 for a in fast)
    monkeypatch.setattr(conv_module, "WINOGRAD_MIN_CHANNELS", 10 ** 9)
    plain, path = _results(x, w, b)
    assert path == "blocked"
    for got, expected in zip(fast, plain):
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("channels, options, path", [
    (64, dict(padding=1), "winograd"),
    (64, dict(padding=1, stride=2), "blocked"),          # stride 2: no Winograd
    (64, dict(padding=2, dilation=2), "blocked"),        # dilated: no Winograd
    (64, dict(padding=1, groups=2), "grouped"),          # grouped: no Winograd
    (8, dict(padding=1), "im2col"),                      # few channels: transforms would dominate
])
def test_which_convolutions_take_the_winograd_path(channels, options, path):
    x = Tensor(np.zeros((2, channels, 8, 8), np.float32))
    w = Tensor(np.zeros((channels, channels // options.get("groups", 1), 3, 3), np.float32),
               requires_grad=True)
    assert F.conv2d(x, w, **options).creator.path == path


@pytest.mark.parametrize("side, path", [(2, "blocked"), (1, "blocked"), (3, "winograd"),
                                        (4, "winograd"), (5, "winograd"), (7, "winograd")])
def test_winograd_only_where_it_saves_multiplications(side, path):
    """A 2×2 output still costs a whole 4×4 tile: as many multiplications as im2col."""
    ratio = {1: 4.0, 2: 1.0, 3: 36 / 81, 4: 0.25, 5: 36 * 4 / (9 * 25), 7: 36 * 4 / (9 * 49)}
    x = Tensor(np.zeros((2, 64, side, side), np.float32))
    w = Tensor(np.zeros((64, 64, 3, 3), np.float32), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    assert y.creator.path == path
    assert conv_module.Winograd.multiplications_ratio(y.creator.geometry) == pytest.approx(ratio[side])


@settings(deadline=None, max_examples=20)
@given(tilings())
def test_transforms_write_into_out_whatever_it_held(case):
    """``out`` (a sub-batch's part of the batch's array) is written, not added to: the
    forward and backward pass hand over uninitialised arrays."""
    t, seed = case
    rng = np.random.default_rng(seed)
    tiles, products = rng.standard_normal((t.alpha ** 2, t.T, t.C)), rng.standard_normal((t.alpha ** 2, t.T, 3))
    for transform, argument, shape in [
            (winograd.input_transform_adjoint_numba, tiles, (t.N, t.H, t.W, t.C)),
            (winograd.input_transform_adjoint_reference, tiles, (t.N, t.H, t.W, t.C)),
            (winograd.output_transform_numba, products, (t.N, t.OH, t.OW, 3)),
            (winograd.output_transform_reference, products, (t.N, t.OH, t.OW, 3))]:
        out = np.full(shape, np.nan)
        assert transform(argument, t, out=out) is out
        np.testing.assert_allclose(out, transform(argument, t), rtol=0, atol=0,
                                   err_msg=transform.__name__)
