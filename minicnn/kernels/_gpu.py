"""Compiling the CUDA sources of the kernels with CuPy, once per (source, dtype).

Each GPU kernel is plain CUDA C written for an element type ``T``; we prepend
``typedef float T;`` or ``typedef double T;`` so one source serves float32 and float64.
Tests compile every source with ``nvcc`` too (see tests/test_kernels_gpu.py), so a typo
cannot hide on a machine without a GPU, and run every kernel on a host emulation of CUDA
(tests/gpu_emulation: the same source compiled by g++, every thread of every launch run,
each launch's arguments checked against the kernel's parameter list), held to the kernel's
reference (tests/test_gpu_emulated_kernels.py).
"""
import numpy as np

from minicnn.backend import cupy_or_none

_TYPE_NAMES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_cache = {}

#: every CUDA source registered by a kernel module: name -> source (for the nvcc test)
SOURCES = {}


def register(name, source):
    """Record a kernel's CUDA source under the name of its ``__global__`` function."""
    SOURCES[name] = source
    return source


def typed_source(source, dtype):
    return f"typedef {_TYPE_NAMES[np.dtype(dtype)]} T;\n{source}"


def kernel(name, dtype):
    """The compiled ``cupy.RawKernel`` called ``name`` for element type ``dtype``."""
    key = (name, np.dtype(dtype))
    if key not in _cache:
        cupy = cupy_or_none()
        if np.dtype(dtype) not in _TYPE_NAMES:
            raise TypeError(f"GPU kernel {name}: expected float32 or float64, got {dtype}")
        _cache[key] = cupy.RawKernel(typed_source(SOURCES[name], dtype), name)
    return _cache[key]


def elementwise(name, in_params, out_params, operation, preamble=""):
    """The ``cupy.ElementwiseKernel`` called ``name``, built on first use (CuPy compiles
    it per dtype itself); kept with the raw kernels so that one cache holds them all."""
    key = (name, "elementwise")
    if key not in _cache:
        _cache[key] = cupy_or_none().ElementwiseKernel(in_params, out_params, operation,
                                                       name, preamble=preamble)
    return _cache[key]


def forget_compiled():
    """Drop every compiled kernel: the next launch builds it again with the ``cupy`` of
    that moment (the tests swap a host emulation of CuPy in and out)."""
    _cache.clear()


def launch(name, dtype, total, *args, block=256):
    """Run kernel ``name`` with one thread per output element (``total`` of them).

    Every such kernel also loops with a grid stride, so it stays right for any grid."""
    if total == 0:
        return
    grid = (total + block - 1) // block
    kernel(name, dtype)((grid,), (block,), args)


def launch_blocks(name, dtype, blocks, threads, *args):
    """Run kernel ``name`` with one block of ``threads`` threads per output element
    (``blocks`` of them): for reductions, where a block's threads share one sum."""
    if blocks == 0:
        return
    kernel(name, dtype)((blocks,), (threads,), args)
