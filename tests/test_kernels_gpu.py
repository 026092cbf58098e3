"""The GPU side of the kernels.

* Every raw CUDA source is compiled with ``nvcc -c`` wherever nvcc is installed — also on
  machines with no GPU — so a syntax or type error cannot hide until someone has a GPU.
* On a machine with CuPy and a GPU, the GPU kernels are held to the CPU ones and whole
  convolutions to the NumPy path; elsewhere those tests skip, saying why.
"""
import importlib
import pkgutil
import shutil
import subprocess

import numpy as np
import pytest

import minicnn.kernels
from minicnn import Tensor, functional as F
from minicnn.backend import cupy_or_none, gpu_available
from minicnn.kernels import _gpu


def _load_every_kernel_module():
    for info in pkgutil.iter_modules(minicnn.kernels.__path__):
        importlib.import_module(f"minicnn.kernels.{info.name}")
    return dict(_gpu.SOURCES)


SOURCES = _load_every_kernel_module()
NVCC = shutil.which("nvcc")


def test_every_kernel_module_registers_cuda_sources():
    assert {"im2col_nhwc", "col2im_nhwc", "depthwise_forward_nhwc",
            "depthwise_backward_input_nhwc", "depthwise_backward_weight_nhwc"} <= set(SOURCES)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float", "double"])
def test_cuda_sources_compile_with_nvcc(dtype, tmp_path):
    """All sources in one translation unit per element type: two nvcc runs, not forty.
    Each source gets its own namespace, as if compiled alone (CuPy compiles them one by
    one, so two may define the same device helper)."""
    body = "\n".join(f"namespace source_{name} {{\n{source}\n}}"
                     for name, source in sorted(SOURCES.items()))
    unit = tmp_path / "kernels.cu"
    unit.write_text(_gpu.typed_source(body, dtype))
    result = subprocess.run([NVCC, "-c", str(unit), "-o", str(tmp_path / "kernels.o")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"nvcc failed:\n{result.stderr}"


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
