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


# ============================================================================ reproducible on every device

def test_the_generator_state_round_trips():
    """rng_state() / set_rng_state(): what a checkpoint saves and a resume restores."""
    x = Tensor(np.ones((3, 4, 5, 5)))
    dropout_module.manual_seed(7)
    F.dropout(x, 0.5, True)                                 # the run so far
    saved = F.dropout.rng_state()
    after = [f(x, 0.5, True).data for f in FUNCTIONS]
    dropout_module.manual_seed(99)                          # a fresh process, reseeded
    dropout_module.set_rng_state(saved)
    resumed = [f(x, 0.5, True).data for f in FUNCTIONS]
    for a, b in zip(after, resumed):
        np.testing.assert_array_equal(a, b)


class DeviceArrayModule:
    """Stands in for CuPy: a module that is not NumPy, so dropout takes its GPU path."""
    asarray = staticmethod(np.asarray)


def test_gpu_masks_come_from_the_host_generator(monkeypatch):
    """On the GPU each draw is computed from one seed taken from the host generator, so
    restoring the host state restores the GPU masks (CuPy's global generator, used before,
    was neither seeded by a resume nor saved by a checkpoint)."""
    from minicnn.kernels.random import counter_uniform_reference
    seeds = []

    def device_draw(seed, shape, dtype):
        seeds.append(seed)
        return counter_uniform_reference(seed, shape, dtype)
    monkeypatch.setattr(dropout_module, "counter_uniform_cuda", device_draw)
    dropout_module.manual_seed(5)
    saved = dropout_module.rng_state()
    first = dropout_module._uniform(DeviceArrayModule, (4, 3), np.float32, None)
    dropout_module.set_rng_state(saved)
    again = dropout_module._uniform(DeviceArrayModule, (4, 3), np.float32, None)
    np.testing.assert_array_equal(first, again)
    assert len(seeds) == 2 and seeds[0] == seeds[1]
    assert first.dtype == np.float32 and ((0 <= first) & (first < 1)).all()


def test_counter_uniform_is_splitmix64():
    """Element 0 from seed 0 is SplitMix64's first output, 0xE220A8397B1DCDAF."""
    from minicnn.kernels.random import counter_uniform_reference
    first = counter_uniform_reference(0, (1,), np.float64)[0]
    assert first == (0xE220A8397B1DCDAF >> 11) * 2.0 ** -53
    u = counter_uniform_reference(12345, (200_000,), np.float32)
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002


def test_the_cuda_counter_uniform_equals_the_reference_when_run_on_the_host(tmp_path):
    """The registered CUDA source, compiled as host C++ (``__device__`` defined away) and
    run for every index: the numbers the GPU computes, checked without a GPU."""
    import shutil
    import subprocess
    from minicnn.kernels.random import _COUNTER_UNIFORM_CUDA, counter_uniform_reference
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler on this machine")
    program = tmp_path / "uniform.cpp"
    program.write_text("#include <cstdio>\n#include <cstdlib>\n#define __device__\n"
                       + _COUNTER_UNIFORM_CUDA + r"""
int main(int argc, char** argv) {
    unsigned long long seed = strtoull(argv[1], 0, 10);
    for (unsigned long long i = 0; i < 1000; ++i)
        printf("%.9e %.17e\n", (double)counter_uniform<float>(seed, i),
               counter_uniform<double>(seed, i));
}
""")
    binary = tmp_path / "uniform"
    built = subprocess.run([compiler, "-O1", str(program), "-o", str(binary)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    for seed in (0, 1, 2 ** 63 - 1, 987654321):
        out = subprocess.run([str(binary), str(seed)], capture_output=True, text=True,
                             check=True).stdout
        values = np.array([line.split() for line in out.splitlines()], dtype=np.float64)
        np.testing.assert_array_equal(values[:, 0].astype(np.float32),
                                      counter_uniform_reference(seed, (1000,), np.float32))
        np.testing.assert_array_equal(values[:, 1],
                                      counter_uniform_reference(seed, (1000,), np.float64))


def test_the_cuda_counter_uniform_compiles_with_nvcc(tmp_path):
    """As CuPy's ElementwiseKernel instantiates it, for float and double."""
    import shutil
    import subprocess
    from minicnn.kernels.random import _COUNTER_UNIFORM_CUDA
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed on this machine")
    unit = tmp_path / "uniform.cu"
    unit.write_text(_COUNTER_UNIFORM_CUDA + "".join(f"""
__global__ void draw_{T}(unsigned long long seed, long long n, {T}* u) {{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x)
        u[i] = counter_uniform<{T}>(seed, (unsigned long long)i);
}}""" for T in ("float", "double")))
    result = subprocess.run([nvcc, "-c", str(unit), "-o", str(tmp_path / "uniform.o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"nvcc failed:\n{result.stderr}"


@pytest.mark.gpu
def test_gpu_masks_are_the_reference_draws_and_resume_exactly():
    from minicnn.kernels.random import counter_uniform_cuda, counter_uniform_reference
    cupy = cupy_or_none()
    if cupy is None:
        pytest.skip("needs a CUDA GPU and CuPy")
    for dtype in (np.float32, np.float64):
        np.testing.assert_array_equal(counter_uniform_cuda(42, (3, 7), dtype).get(),
                                      counter_uniform_reference(42, (3, 7), dtype))
    x = Tensor(cupy.ones((4, 3, 5, 5), dtype=cupy.float32))
    dropout_module.manual_seed(3)
    saved = dropout_module.rng_state()
    first = F.dropout(x, 0.5, True).numpy()
    dropout_module.set_rng_state(saved)
    np.testing.assert_array_equal(F.dropout(x, 0.5, True).numpy(), first)
