"""The direct convolution (minicnn/kernels/direct.py): its Numba kernels against its NumPy
reference, the reference against the definition, the sample-block threading, and the
chooser's use of it for few-channel layers."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minicnn import Tensor, functional as F
from minicnn.functional import conv as conv_module
from minicnn.kernels import direct, threads as threads_module
from minicnn.kernels.im2col import ConvGeometry

from tests.test_conv import conv2d_loops


@st.composite
def direct_problems(draw):
    """Stride-1 convolutions (what the Numba kernels compute): any padding, dilation and
    rectangular kernel, one to three groups of one to four input channels each."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9))
    n, groups = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    channels, out_channels = groups * draw(st.integers(1, 4)), groups * draw(st.integers(1, 5))
    geometry = ConvGeometry((n, h, w, channels), (kh, kw), (1, 1), (ph, pw), (dh, dw), groups,
                            out_channels)
    return geometry, draw(st.integers(0, 2 ** 16))


def _arrays(geometry, seed, dtype):
    g, rng = geometry, np.random.default_rng(seed)
    x = rng.standard_normal((g.N, g.H, g.W, g.C)).astype(dtype)
    w_taps = rng.standard_normal((g.KH, g.KW, g.C // g.G, g.CO)).astype(dtype)
    gy = rng.standard_normal((g.N, g.OH, g.OW, g.CO)).astype(dtype)
    return x, w_taps, gy


TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-11, atol=1e-11)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(direct_problems())
def test_numba_kernels_equal_reference(dtype, problem):
    geometry, seed = problem
    x, w_taps, gy = _arrays(geometry, seed, dtype)
    pairs = [(direct.forward_numba(x, w_taps, geometry),
              direct.forward_reference(x, w_taps, geometry)),
             (direct.backward_input_numba(gy, w_taps, geometry),
              direct.backward_input_reference(gy, w_taps, geometry)),
             (direct.backward_weight_numba(gy, x, geometry),
              direct.backward_weight_reference(gy, x, geometry))]
    for fast, reference in pairs:
        assert fast.dtype == reference.dtype == dtype
        assert fast.shape == reference.shape
        np.testing.assert_allclose(fast, reference, **TOLERANCE[dtype])


@given(direct_problems())
def test_reference_equals_the_definition(problem):
    g, seed = problem
    x, w_taps, _ = _arrays(g, seed, np.float64)
    weight = w_taps.transpose(3, 2, 0, 1)                      # (CO, C/G, KH, KW)
    expected = conv2d_loops(x.transpose(0, 3, 1, 2), weight, None, (1, 1), (g.PH, g.PW),
                            (g.DH, g.DW), g.G)
    np.testing.assert_allclose(direct.forward_reference(x, w_taps, g).transpose(0, 3, 1, 2),
                               expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2])
def test_gradients_are_the_adjoints_of_forward(groups):
    """<forward(x), gy> = <x, gx(gy)> = <w, gw(gy)>: the two backward kernels are the
    transposes of the forward's linear maps in x and in w."""
    g = ConvGeometry((3, 8, 7, 2 * groups), (3, 4), (1, 1), (1, 2), (2, 1), groups, 5 * groups)
    x, w_taps, gy = _arrays(g, 7, np.float64)
    y_dot_gy = np.vdot(direct.forward_numba(x, w_taps, g), gy)
    assert np.isclose(y_dot_gy, np.vdot(x, direct.backward_input_numba(gy, w_taps, g)))
    assert np.isclose(y_dot_gy, np.vdot(w_taps, direct.backward_weight_numba(gy, x, g)))


def test_sample_blocks_on_several_threads_give_the_one_thread_numbers(monkeypatch):
    """With the threshold at zero, every sample block goes to its own thread (uneven last
    block included); the numbers are those of one block on one thread."""
    g = ConvGeometry((7, 12, 12, 1), (5, 5), (1, 1), (2, 2), (1, 1), 1, 6)
    x, w_taps, gy = _arrays(g, 3, np.float32)
    results = []
    for threads, min_work in ((1, 1 << 40), (3, 0)):
        monkeypatch.setattr(threads_module, "thread_count", lambda threads=threads: threads)
        monkeypatch.setattr(threads_module, "MIN_WORK_PER_THREAD", max(1, min_work))
        results.append([direct.forward_numba(x, w_taps, g),
                        direct.backward_input_numba(gy, w_taps, g),
                        direct.backward_weight_numba(gy, x, g)])
    for one, several in zip(*results):
        np.testing.assert_allclose(several, one, rtol=1e-6, atol=1e-5)


def test_blocks_cover_every_sample_once():
    seen = []
    threads_module.over_blocks(lambda first, last: seen.extend(range(first, last)), 10,
                               threads_module.MIN_WORK_PER_THREAD)
    assert sorted(seen) == list(range(10))


def test_chooser_takes_direct_for_a_one_channel_layer_and_im2col_for_many_channels():
    x1 = Tensor(np.zeros((2, 1, 28, 28), np.float32))
    w1 = Tensor(np.zeros((6, 1, 5, 5), np.float32), requires_grad=True)
    assert F.conv2d(x1, w1).creator.path == "direct"
    x6 = Tensor(np.zeros((2, 6, 12, 12), np.float32))
    w6 = Tensor(np.zeros((16, 6, 5, 5), np.float32), requires_grad=True)
    assert F.conv2d(x6, w6).creator.path == "im2col"
    strided = F.conv2d(x1, w1, stride=2)                       # direct is stride 1 only
    assert strided.creator.path == "im2col"
    with pytest.raises(ValueError, match="conv_algorithm='direct' cannot compute"):
        F.conv2d(x1, w1, stride=2, conv_algorithm="direct")


@pytest.mark.parametrize("channels, side, stride, path", [
    (128, 16, 1, "direct"),     # 4 channels per group, runs of 286: im2col's runs are short
    (96, 8, 1, "direct"),
    (128, 4, 1, "grouped"),     # runs of 22
    (256, 16, 1, "grouped"),    # 8 per group: im2col's runs pay
    (128, 16, 2, "grouped"),    # direct is stride 1 only
])
def test_chooser_takes_direct_for_narrow_groups_on_large_planes(channels, side, stride, path):
    x = Tensor(np.zeros((2, channels, side, side), np.float32))
    w = Tensor(np.zeros((channels, channels // 32, 3, 3), np.float32), requires_grad=True)
    assert F.conv2d(x, w, stride=stride, padding=1, groups=32).creator.path == path


def test_lenet_first_layer_float32_matches_im2col_forward_and_backward():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    results = {}
    for algorithm in ("direct", "im2col"):
        tensors = [Tensor(a, requires_grad=True) for a in (x, w, b)]
        y = F.conv2d(*tensors, conv_algorithm=algorithm)
        (y * y).sum().backward()
        results[algorithm] = [y.numpy()] + [t.grad for t in tensors]
        assert y.dtype == np.float32 and all(t.grad.dtype == np.float32 for t in tensors)
    for fast, textbook in zip(results["direct"], results["im2col"]):
        np.testing.assert_allclose(fast, textbook, rtol=1e-4, atol=2e-3)


def test_direct_is_listed_among_the_algorithms():
    assert conv_module.ALGORITHMS["direct"] is conv_module.Direct


def test_a_forked_child_runs_blocks_on_threads_of_its_own(monkeypatch):
    """The parent's pool threads do not survive a fork; the child must not wait on them."""
    import multiprocessing
    monkeypatch.setattr(threads_module, "thread_count", lambda: 2)
    monkeypatch.setattr(threads_module, "MIN_WORK_PER_THREAD", 1)
    threads_module.over_blocks(lambda first, last: None, 4, 1)      # the parent's pool exists
    context = multiprocessing.get_context("fork")
    child = context.Process(target=threads_module.over_blocks,
                            args=(lambda first, last: None, 4, 1))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
