"""Raw array kernels: where the loops live. No autograd here.

Every kernel comes in three versions with one signature:

* ``reference`` — plain NumPy (written with ``xp``, so CuPy arrays run it too) that reads
  like the formula. Slow; it is the documentation, and the truth the tests hold the other
  two to.
* ``numba`` — Numba ``@njit(cache=True)``, ``parallel=True`` where it pays.
* ``cuda`` — a CuPy ``RawKernel`` (CUDA C in the same file, a string next to the others).

Each kernel is registered once with its versions (``registry.register_kernel``); calling
it runs the ``numba`` version on NumPy arrays and the ``cuda`` one on CuPy arrays, or every
``reference`` under ``MINICNN_KERNELS=reference`` / ``with kernel_mode("reference"):``.

Layout: kernels take and return **channels-last** (N, H, W, C) arrays. The public layout
of minicnn is NCHW; Functions hand kernels ``x.transpose(0, 2, 3, 1)``, which costs nothing
when the NCHW tensor already has channels-last memory — and every convolution output does
(see minicnn/functional/conv.py for why and what it buys).
"""
from minicnn.backend import get_array_module


def channels_last(x):
    """(N, C, H, W) -> contiguous (N, H, W, C); free when ``x`` is already stored that way."""
    return get_array_module(x).ascontiguousarray(x.transpose(0, 2, 3, 1))


def channels_first_view(y):
    """(N, H, W, C) -> an (N, C, H, W) *view*: NCHW shape over channels-last memory."""
    return y.transpose(0, 3, 1, 2)


def output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """Output length of a sliding window along one axis.

        out = floor((size + 2·padding − dilation·(kernel − 1) − 1) / stride) + 1

    With ``ceil_mode`` the division rounds up, but (as in PyTorch) a last window that
    would start inside the right padding is dropped.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return span // stride + 1

