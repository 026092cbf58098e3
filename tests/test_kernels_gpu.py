"""The GPU side of the kernels.

* Every raw CUDA source is compiled with ``nvcc -c`` wherever nvcc is installed — also on
  machines with no GPU — so a syntax or type error cannot hide until someone has a GPU —
  for the GPU architectures CuPy compiles for (a toolkit's default target may lack
  double-precision ``atomicAdd``), and (slow) each source alone, as CuPy's NVRTC does.
* The sources' indexing and every launch are checked as text and through a
  stand-in ``cupy`` module that records launches (issue 19's defects 1–3).
* On a machine with CuPy and a GPU, the GPU kernels are held to the CPU ones and whole
  convolutions to the NumPy path; elsewhere those tests skip, saying why. (Everywhere,
  tests/test_gpu_emulated_kernels.py runs every kernel on the host emulation of CUDA.)
"""
import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import minicnn.kernels
from minicnn import Tensor, functional as F
from minicnn.backend import cupy_or_none, gpu_available
from minicnn.kernels import _gpu, depthwise
from minicnn.kernels.im2col import ConvGeometry
from tests.gpu_emulation import host_cuda


def _load_every_kernel_module():
    for info in pkgutil.iter_modules(minicnn.kernels.__path__):
        importlib.import_module(f"minicnn.kernels.{info.name}")
    return dict(_gpu.SOURCES)


SOURCES = _load_every_kernel_module()
NVCC = shutil.which("nvcc")


def test_every_kernel_module_registers_cuda_sources():
    assert {"im2col_nhwc", "col2im_nhwc", "depthwise_forward_nhwc",
            "depthwise_backward_input_nhwc", "depthwise_backward_weight_nhwc"} <= set(SOURCES)


# Turing (T4), Ampere (A100), Hopper (H100): the GPUs a CuPy user meets; CuPy compiles for
# the device it runs on. (sm_70 is gone from CUDA 13's nvcc.)
ARCHITECTURES = ("75", "80", "90")


def nvcc_command(unit, output):
    """nvcc compiling ``unit`` for every architecture in ARCHITECTURES."""
    targets = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHITECTURES]
    return [NVCC or "nvcc", "-c", str(unit), "-o", str(output), *targets]


def _compile(source, dtype, folder, stem):
    unit = folder / f"{stem}.cu"
    unit.write_text(_gpu.typed_source(source, dtype))
    result = subprocess.run(nvcc_command(unit, folder / f"{stem}.o"), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"nvcc failed on {stem}:\n{result.stderr}"


def test_nvcc_compiles_for_the_architectures_cupy_uses(tmp_path):
    command = nvcc_command(tmp_path / "k.cu", tmp_path / "k.o")
    for architecture in ARCHITECTURES:
        assert f"-gencode=arch=compute_{architecture},code=sm_{architecture}" in command


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float", "double"])
def test_cuda_sources_compile_with_nvcc(dtype, tmp_path):
    """All sources in one translation unit per element type: two nvcc runs, not forty.
    Each source gets its own namespace, as if compiled alone (CuPy compiles them one by
    one, so two may define the same device helper)."""
    body = "\n".join(f"namespace source_{name} {{\n{source}\n}}"
                     for name, source in sorted(SOURCES.items()))
    _compile(body, dtype, tmp_path, "kernels")


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float", "double"])
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_each_cuda_source_compiles_alone(name, dtype, tmp_path):
    """As NVRTC sees it: one source, its typedef, nothing else."""
    _compile(SOURCES[name], dtype, tmp_path, name)


# ----------------------------------------------------------------------------- indexing

# one block per output element, or one thread per channel of a chunk of rows
REDUCTIONS = {"depthwise_backward_weight_nhwc", "batchnorm_channel_sums",
              "batchnorm_backward_sums"}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_kernel_indexes_in_64_bits(name):
    """No thread index in a 32-bit int: a tensor of 2³¹ elements (VGG-16's first pooling
    input at batch 669) would wrap it to a negative address. ``__device__`` bodies of
    CuPy elementwise kernels (Adam, the counter-based random numbers) are indexed by CuPy
    itself, which uses a 64-bit ``i`` for arrays that large."""
    source = SOURCES[name]
    if "__global__" not in source:
        assert re.search(r"__device__", source), name
        return
    assert not re.search(r"\bint\s+\w+\s*=\s*blockIdx", source), name
    assert not re.search(r"\bint\s+\w+\s*=\s*\w+\s*\*\s*\w+\s*\*", source), name
    if name not in REDUCTIONS:
        assert re.search(r"for \(long long (\w+) = blockIdx\.x \* \(long long\)blockDim\.x "
                         r"\+ threadIdx\.x; \1 < total;\s*\1 \+= \(long long\)blockDim\.x "
                         r"\* gridDim\.x\)", source), f"{name}: no 64-bit grid-stride loop"


# ----------------------------------------------------------------------------- launches

class _Launch:
    def __init__(self, name, dtype, log):
        self.name, self.dtype, self.log = name, dtype, log

    def __call__(self, grid, block, args):
        self.log.append((self.name, grid, block, args))


@pytest.fixture
def launches(monkeypatch):
    """A stand-in ``cupy`` (NumPy arrays) and a record of every kernel launch."""
    fake = types.ModuleType("cupy")
    fake.empty, fake.zeros, fake.ascontiguousarray = np.empty, np.zeros, np.ascontiguousarray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    log = []
    monkeypatch.setattr(_gpu, "kernel", lambda name, dtype: _Launch(name, dtype, log))
    return log


def test_depthwise_weight_gradient_reduces_in_blocks(launches):
    """One block of REDUCTION_THREADS threads per weight, which split the N·OH·OW products
    and add them in shared memory — not one thread summing 1.6 M products alone."""
    g = ConvGeometry((128, 112, 112, 32), (3, 3), (1, 1), (1, 1), (1, 1), groups=32)
    gy, x = np.empty((1, 1, 1, 32), np.float32), np.empty((1, 1, 1, 32), np.float32)
    depthwise.backward_weight_cuda(gy, x, g, 1)
    (name, grid, block, _), = launches
    assert name == "depthwise_backward_weight_nhwc"
    assert grid == (3 * 3 * 32,) and block == (depthwise.REDUCTION_THREADS,)
    source = SOURCES[name]
    assert "__shared__" in source and "__syncthreads()" in source
    assert f"#define REDUCTION_THREADS {depthwise.REDUCTION_THREADS}" in source


@pytest.mark.parametrize("kernel, arguments", [
    (depthwise.forward_cuda, ("x", "w")),
    (depthwise.backward_input_cuda, ("gy", "w")),
    (depthwise.backward_weight_cuda, ("gy", "x")),
])
def test_depthwise_cuda_kernels_refuse_mixed_dtypes(launches, kernel, arguments):
    """The kernels read every array as one type T: a float64 gradient for a float32 model
    would be read as the wrong bytes. Refused before any launch."""
    g = ConvGeometry((1, 4, 4, 2), (3, 3), (1, 1), (1, 1), (1, 1), groups=2)
    first, second = np.zeros((1, 4, 4, 2), np.float64), np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(TypeError, match="one float dtype, got float64, float32"):
        kernel(first, second, g, 1)
    assert launches == []


def test_convolution_casts_an_upstream_gradient_of_another_dtype():
    """What the dense path does, every algorithm does: a float32 convolution handed a
    float64 gradient computes its backward in float32 (depthwise included)."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32), requires_grad=True)
    for weight_shape, groups in (((3, 1, 3, 3), 3), ((4, 3, 3, 3), 1)):
        w = Tensor(rng.standard_normal(weight_shape).astype(np.float32), requires_grad=True)
        y = F.conv2d(x, w, padding=1, groups=groups)
        gy = rng.standard_normal(y.shape)
        grads = y.creator.backward(gy)
        expected = y.creator.backward(gy.astype(np.float32))
        for got, want in zip(grads, expected):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)


needs_gpu = pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU with CuPy here")


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("groups, out_channels, kernel, stride, padding, dilation", [
    (1, 8, 3, 1, 1, 1), (2, 6, (3, 1), (2, 1), (1, 0), 1), (4, 4, 3, 1, 1, 1),
    (4, 8, 3, 2, 1, 2), (1, 5, 1, 1, 0, 1), (1, 5, 1, 2, 0, 1),
])
def test_conv2d_on_gpu_matches_cpu(groups, out_channels, kernel, stride, padding, dilation):
    cupy = cupy_or_none()
    rng = np.random.default_rng(0)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((out_channels, 4 // groups) + k)
    b = rng.standard_normal(out_channels)
    cpu = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    gpu = [Tensor(cupy.asarray(a), requires_grad=True) for a in (x, w, b)]
    y_cpu = F.conv2d(*cpu, stride, padding, dilation, groups)
    y_gpu = F.conv2d(*gpu, stride, padding, dilation, groups)
    np.testing.assert_allclose(y_gpu.numpy(), y_cpu.numpy(), rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal(y_cpu.shape)
    y_cpu.backward(gy)
    y_gpu.backward(cupy.asarray(gy))
    for a, b_ in zip(cpu, gpu):
        np.testing.assert_allclose(cupy.asnumpy(b_.grad), a.grad, rtol=1e-10, atol=1e-10)


def _parameters(source, name, dtype):
    """The parameters of ``__global__ void name(...)``, read as the host emulation reads
    them (tests/gpu_emulation/host_cuda.py), with T standing for ``dtype``."""
    match = re.search(rf'__global__ void {name}\((.*?)\)\s*{{', source, re.S)
    typedefs = {"T": host_cuda.TYPE_NAMES[np.dtype(dtype)]}
    return [host_cuda.Parameter(text, typedefs) for text in match.group(1).split(",")]


def _matches(parameter, argument):
    """An array of the pointed-to dtype for a pointer, a NumPy scalar of the exact type
    for a value (a Python int or an int64 for an ``int`` would be read as the wrong bytes)."""
    if parameter.pointer:
        return isinstance(argument, np.ndarray) and argument.dtype == parameter.dtype
    return isinstance(argument, np.generic) and argument.dtype == parameter.dtype


def _cuda_calls(dtype):
    """One call of every CUDA version with small arrays (their launches are recorded)."""
    def a(*shape):
        return np.zeros(shape, dtype)
    from minicnn.kernels import batchnorm, im2col as im2col_kernels, pool
    g = ConvGeometry((2, 5, 6, 4), (3, 3), (2, 1), (1, 1), (1, 2), groups=2, out_channels=4)
    d = ConvGeometry((2, 5, 6, 4), (3, 3), (1, 1), (1, 1), (1, 1), groups=4)
    argmax = np.zeros((2, 3, 3, 4), np.int32)
    return [
        lambda: im2col_kernels.im2col_cuda(a(2, 5, 6, 4), g),
        lambda: im2col_kernels.col2im_cuda(a(g.G, g.M, g.K), g),
        lambda: depthwise.forward_cuda(a(2, 5, 6, 4), a(3, 3, 4), d, 1),
        lambda: depthwise.backward_input_cuda(a(2, 5, 6, 4), a(3, 3, 4), d, 1),
        lambda: depthwise.backward_weight_cuda(a(2, 5, 6, 4), a(2, 5, 6, 4), d, 1),
        lambda: pool.max_pool_forward_cuda(a(2, 5, 6, 4), (3, 3), (2, 2), (1, 1), (1, 1), (3, 3)),
        lambda: pool.max_pool_backward_cuda(a(2, 3, 3, 4), argmax, (5, 6)),
        lambda: pool.avg_pool_forward_cuda(a(2, 5, 6, 4), (3, 3), (2, 2), (1, 1), (3, 3), True),
        lambda: pool.avg_pool_backward_cuda(a(2, 3, 3, 4), (3, 3), (2, 2), (1, 1), (5, 6), False),
        lambda: batchnorm.channel_stats_gpu(a(70, 5)),
        lambda: batchnorm.backward_sums_gpu(a(70, 5), a(70, 5), np.zeros(5)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float", "double"])
def test_every_launch_passes_what_its_kernel_declares(launches, dtype):
    """Each CUDA version's launch, argument by argument, against the parameter list of the
    ``__global__`` function it launches: arrays of the element type T where it reads T*,
    float64 arrays for double*, np.int32 for int, np.int64 for long long (a Python int or
    an int64 for an int would be read as the wrong bytes)."""
    for call in _cuda_calls(np.dtype(dtype)):
        call()
    raw_kernels = {name for name, source in SOURCES.items() if "__global__" in source}
    assert {name for name, *_ in launches} == raw_kernels       # elementwise bodies: CuPy launches them
    for name, grid, block, arguments in launches:
        parameters = _parameters(SOURCES[name], name, dtype)
        assert len(arguments) == len(parameters), name
        for index, (parameter, argument) in enumerate(zip(parameters, arguments)):
            assert _matches(parameter, argument), \
                f"{name}: argument {index} is not {parameter.c_type}"
        assert grid[0] >= 1 and block[0] >= 1
