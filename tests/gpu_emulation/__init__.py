"""The GPU, emulated on the host: every GPU code path of minicnn runs in the default suite.

    with emulated_gpu() as cupy:                 # or the ``emulated_gpu`` fixture
        model.to("gpu")                          # parameters become cupy.ndarray
        loss = criterion(model(x), y)            # conv, pool, depthwise: the CUDA C kernels

Inside the block ``import cupy`` gives ``fake_cupy`` (arrays in host memory that the library
treats as GPU arrays, refusing what CuPy refuses) and ``minicnn.backend`` believes a GPU is
present. The CUDA C sources of the kernels are compiled for the host with g++ and every
thread of every launch runs, each access to an array bounds-checked (``host_cuda``,
``prelude.h``).

Why this and not Numba's CUDA simulator: the kernels minicnn ships are CUDA C strings
compiled by CuPy's NVRTC, and the nvcc test already compiles those very strings. Running
the same strings here checks what will run on a GPU; porting the kernels to ``numba.cuda``
to use its simulator would test a rewrite, and would run every thread as a Python thread
(minutes per zoo network, against seconds here). What this cannot see: data races between
threads (they run one after another) and timing; the ``gpu``-marked tests on a real GPU
cover those.
"""
import contextlib
import shutil
import sys

import pytest

from tests.gpu_emulation import fake_cupy


@contextlib.contextmanager
def emulated_gpu():
    """Inside: ``cupy`` is the host emulation and minicnn sees one GPU. Restores both."""
    from minicnn import backend
    from minicnn.kernels import _gpu
    saved_modules = {name: sys.modules.get(name) for name in ("cupy", "cupyx")}
    saved_backend = backend._cupy, backend._cupy_checked
    sys.modules["cupy"], sys.modules["cupyx"] = fake_cupy, fake_cupy.cupyx
    backend._cupy, backend._cupy_checked = fake_cupy, True
    _gpu.forget_compiled()                     # kernels built for another cupy are not ours
    try:
        yield fake_cupy
    finally:
        _gpu.forget_compiled()
        backend._cupy, backend._cupy_checked = saved_backend
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _real_gpu_available():
    from minicnn.backend import gpu_available
    return gpu_available()


#: the GPUs a test of GPU code runs on: the emulation always (it needs g++), a real CUDA
#: GPU where there is one (marked ``gpu``: ``pytest -m gpu`` on a GPU machine runs the
#: same checks against CuPy itself, as benchmarks/gpu_check.py does)
GPU_KINDS = [
    pytest.param("emulated", marks=pytest.mark.skipif(
        shutil.which("g++") is None, reason="the GPU emulation compiles CUDA C with g++, "
                                             "which this machine lacks")),
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not _real_gpu_available(), reason="no CUDA GPU with CuPy on this machine")]),
]


@contextlib.contextmanager
def on_gpu(kind):
    """The ``cupy`` module of ``kind`` ("emulated" or "cuda") for the block."""
    if kind == "emulated":
        with emulated_gpu() as module:
            yield module
        return
    from minicnn.backend import cupy_or_none
    from minicnn.kernels import _gpu
    _gpu.forget_compiled()
    try:
        yield cupy_or_none()
    finally:
        _gpu.forget_compiled()
