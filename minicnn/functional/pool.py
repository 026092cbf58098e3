"""Pooling: max, average, adaptive and global average pooling, forward and backward.

Every Function here takes an (N, C, H, W) tensor and returns an (N, C, OH, OW) one. Inside,
the work is done on channels-last (N, H, W, C) memory by the kernels of
``minicnn/kernels/pool.py`` (their docstring has the formulas and the notation); a
convolution output is already stored that way, so ``channels_last(x)`` is free there, and
the result goes back out as an NCHW-shaped view of channels-last memory.

Defaults follow PyTorch so that what a learner knows carries over: the stride defaults to
the kernel size, ``ceil_mode=False``, ``count_include_pad=True``, padding at most half the
kernel, and in ``ceil_mode`` a last window that would start inside the right/bottom padding
is dropped (``minicnn.kernels.output_size``).
"""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.functional.geometry import check_window_fits, is_int, window_settings
from minicnn.kernels import channels_first_view, channels_last, output_size
from minicnn.kernels import pool as kernels
from minicnn.tensor import Function


# ============================================================================ argument checks
# The window's settings are parsed and checked by minicnn/functional/geometry.py, which
# the convolution shares; what is particular to pooling is checked here.

def _check_input(name, x):
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D (N, C, H, W) input, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected a float32 or float64 input, got dtype {x.dtype}")


def pool_window_settings(name, kernel_size, stride, padding, dilation):
    """Parse and check the window's geometry (before any input is seen)."""
    kernel, stride, padding, dilation = window_settings(name, kernel_size, stride, padding,
                                                        dilation)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{name}: padding {padding} must be at most half the kernel size "
                         f"{kernel} (PyTorch's rule: more padding would make windows of "
                         f"padding only)")
    return kernel, stride, padding, dilation


def _output_hw(name, x, kernel, stride, padding, dilation, ceil_mode):
    """(OH, OW), or a ValueError when the window does not fit in the padded input."""
    check_window_fits(name, x.shape, kernel, padding, dilation)
    return tuple(output_size(size, k, s, p, d, ceil_mode)
                 for size, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation))


# ============================================================================ max and average

class MaxPool2d(Function):
    """y[n, c, i, j] = max of x[n, c, h, w] over window (i, j);  gx: gy routed to the argmax.

    The forward keeps, per output element, where its maximum came from (an int32 index into
    the H·W plane), so the backward is one pass that adds each gy to that input cell.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        self.name = (f"MaxPool2d(kernel_size={kernel_size}, stride={stride}, "
                     f"padding={padding}, dilation={dilation}, ceil_mode={ceil_mode})")
        self.kernel, self.stride, self.padding, self.dilation = pool_window_settings(
            self.name, kernel_size, stride, padding, dilation)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        _check_input(self.name, x)
        out_hw = _output_hw(self.name, x, self.kernel, self.stride, self.padding,
                            self.dilation, self.ceil_mode)
        window = (self.kernel, self.stride, self.padding, self.dilation, out_hw)
        if not self.records:              # inference: no backward, so no argmax to keep
            return channels_first_view(kernels.max_pool_values(channels_last(x), *window))
        y, argmax = kernels.max_pool_forward(channels_last(x), *window)
        self.save_for_backward(argmax, x.shape[2:])
        return channels_first_view(y)

    def backward(self, gy):
        argmax, in_hw = self.saved
        return channels_first_view(kernels.max_pool_backward(channels_last(gy), argmax, in_hw))


class AvgPool2d(Function):
    """y[n, c, i, j] = Σ over window (i, j) of x[n, c, h, w] / divisor(i, j);
    gx[n, c, h, w] = Σ over the windows containing (h, w) of gy[n, c, i, j] / divisor(i, j).

    The divisor follows PyTorch: with ``count_include_pad`` it counts the window's cells
    inside the padded input (padding included, the cells ``ceil_mode`` adds beyond it not);
    without, only the cells inside the input.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        self.name = (f"AvgPool2d(kernel_size={kernel_size}, stride={stride}, padding={padding}"
                     f", ceil_mode={ceil_mode}, count_include_pad={count_include_pad})")
        self.kernel, self.stride, self.padding, _ = pool_window_settings(
            self.name, kernel_size, stride, padding, 1)
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)

    def forward(self, x):
        _check_input(self.name, x)
        out_hw = _output_hw(self.name, x, self.kernel, self.stride, self.padding, (1, 1),
                            self.ceil_mode)
        y = kernels.avg_pool_forward(channels_last(x), self.kernel, self.stride, self.padding,
                                     out_hw, self.count_include_pad)
        self.save_for_backward(x.shape[2:])
        return channels_first_view(y)

    def backward(self, gy):
        in_hw, = self.saved
        gx = kernels.avg_pool_backward(channels_last(gy), self.kernel, self.stride,
                                       self.padding, in_hw, self.count_include_pad)
        return channels_first_view(gx)


# ============================================================================ adaptive pooling

def adaptive_bins(size, out):
    """PyTorch's adaptive windows along one axis: bin i covers [start_i, end_i) with

        start_i = floor(i · size / out),   end_i = ceil((i + 1) · size / out).

    Neighbouring bins overlap by a cell where size/out is not an integer, and every cell
    belongs to some bin. When ``out`` divides ``size`` the bins are plain windows of
    ``size // out`` cells at stride ``size // out``.
    """
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def adaptive_output_size(name, output_size):
    """An int or an (h, w) pair -> an (h, w) tuple whose entries are positive ints, or None
    where that input size is kept."""
    if is_int(output_size):
        output_size = (output_size, output_size)
    if not (isinstance(output_size, (tuple, list)) and len(output_size) == 2
            and all(v is None or (is_int(v) and v >= 1) for v in output_size)):
        raise ValueError(f"{name}: output_size must be a positive int or an (h, w) pair of "
                         f"positive ints (None keeps that input size), got {output_size!r}")
    return tuple(None if o is None else int(o) for o in output_size)


def _adaptive_settings(name, output_size, x):
    _check_input(name, x)
    return tuple(size if o is None else o for o, size in
                 zip(adaptive_output_size(name, output_size), x.shape[2:]))


def _evenly_divides(in_hw, out_hw):
    return in_hw[0] % out_hw[0] == 0 and in_hw[1] % out_hw[1] == 0


class AdaptiveAvgPool2d(Function):
    """Average over PyTorch's adaptive bins (see ``adaptive_bins``): any input size to
    (N, C, OH, OW). When OH divides H and OW divides W this is ``AvgPool2d`` with kernel
    and stride H/OH × W/OW and runs on its kernel; otherwise a loop over the OH·OW bins, each
    a whole-array mean over (N, C) (OH·OW is small: 6×6 in AlexNet)."""

    def __init__(self, output_size):
        self.output_size = output_size

    def forward(self, x):
        name = f"AdaptiveAvgPool2d(output_size={self.output_size})"
        out_hw = _adaptive_settings(name, self.output_size, x)
        in_hw = tuple(x.shape[2:])
        # evenly dividing sizes: plain windows, the average-pool kernel's (None otherwise)
        window = (tuple(s // o for s, o in zip(in_hw, out_hw))
                  if _evenly_divides(in_hw, out_hw) else None)
        self.save_for_backward(in_hw, out_hw, window)
        x = channels_last(x)
        if window is not None:
            y = kernels.avg_pool_forward(x, window, window, (0, 0), out_hw, True)
            return channels_first_view(y)
        xp = get_array_module(x)
        N, C = x.shape[0], x.shape[3]
        y = xp.empty((N,) + out_hw + (C,), x.dtype)
        for i, (top, bottom) in enumerate(adaptive_bins(in_hw[0], out_hw[0])):
            for j, (left, right) in enumerate(adaptive_bins(in_hw[1], out_hw[1])):
                y[:, i, j, :] = x[:, top:bottom, left:right, :].mean(axis=(1, 2))
        return channels_first_view(y)

    def backward(self, gy):
        in_hw, out_hw, window = self.saved
        gy = channels_last(gy)
        if window is not None:
            gx = kernels.avg_pool_backward(gy, window, window, (0, 0), in_hw, True)
            return channels_first_view(gx)
        xp = get_array_module(gy)
        N, C = gy.shape[0], gy.shape[3]
        gx = xp.zeros((N,) + in_hw + (C,), gy.dtype)
        for i, (top, bottom) in enumerate(adaptive_bins(in_hw[0], out_hw[0])):
            for j, (left, right) in enumerate(adaptive_bins(in_hw[1], out_hw[1])):
                count = (bottom - top) * (right - left)
                gx[:, top:bottom, left:right, :] += gy[:, i, j, None, None, :] / count
        return channels_first_view(gx)


class AdaptiveMaxPool2d(Function):
    """Max over PyTorch's adaptive bins (see ``adaptive_bins``). Evenly dividing sizes run
    on the max-pool kernel; otherwise a loop over the OH·OW bins finds each bin's maximum
    and its index h·W + w. The backward is the max-pool kernel's in both cases: it needs
    only those indices."""

    def __init__(self, output_size):
        self.output_size = output_size

    def forward(self, x):
        name = f"AdaptiveMaxPool2d(output_size={self.output_size})"
        out_hw = _adaptive_settings(name, self.output_size, x)
        in_hw = H, W = tuple(x.shape[2:])
        x = channels_last(x)
        if _evenly_divides(in_hw, out_hw):
            window = (H // out_hw[0], W // out_hw[1])
            y, argmax = kernels.max_pool_forward(x, window, window, (0, 0), (1, 1), out_hw)
            self.save_for_backward(argmax, in_hw)
            return channels_first_view(y)
        xp = get_array_module(x)
        N, C = x.shape[0], x.shape[3]
        y = xp.empty((N,) + out_hw + (C,), x.dtype)
        argmax = xp.empty((N,) + out_hw + (C,), xp.int32)
        for i, (top, bottom) in enumerate(adaptive_bins(H, out_hw[0])):
            for j, (left, right) in enumerate(adaptive_bins(W, out_hw[1])):
                width = right - left
                window = x[:, top:bottom, left:right, :].reshape(N, -1, C)
                best = window.argmax(axis=1)                       # (N, C), index in bin
                y[:, i, j, :] = xp.take_along_axis(window, best[:, None, :], axis=1)[:, 0]
                argmax[:, i, j, :] = (top + best // width) * W + left + best % width
        self.save_for_backward(argmax, in_hw)
        return channels_first_view(y)

    def backward(self, gy):
        argmax, in_hw = self.saved
        return channels_first_view(kernels.max_pool_backward(channels_last(gy), argmax, in_hw))


class GlobalAvgPool2d(Function):
    """y[n, c] = (1 / (H·W)) Σ_{h,w} x[n, c, h, w], shaped (N, C, 1, 1);
    gx[n, c, h, w] = gy[n, c] / (H·W)."""

    def forward(self, x):
        _check_input("global_avg_pool2d", x)
        self.save_for_backward(x.shape, x.dtype)
        # NumPy reduces over H and W in memory order, so this is one pass whatever the layout
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, gy):
        xp = get_array_module(gy)
        (N, C, H, W), dtype = self.saved
        gx = xp.empty((N, H, W, C), dtype)          # channels-last, like the kernels
        gx[...] = gy.reshape(N, 1, 1, C) * (1.0 / (H * W))
        return channels_first_view(gx)


# ============================================================================ public API

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling of an (N, C, H, W) tensor; ``stride`` defaults to ``kernel_size``."""
    return MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """Average pooling of an (N, C, H, W) tensor; ``stride`` defaults to ``kernel_size``."""
    return AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad)(x)


def adaptive_avg_pool2d(x, output_size):
    """Average-pool (N, C, H, W) to (N, C, *output_size) with PyTorch's adaptive bins."""
    return AdaptiveAvgPool2d(output_size)(x)


def adaptive_max_pool2d(x, output_size):
    """Max-pool (N, C, H, W) to (N, C, *output_size) with PyTorch's adaptive bins."""
    return AdaptiveMaxPool2d(output_size)(x)


def global_avg_pool2d(x):
    """The mean of each feature map: (N, C, H, W) -> (N, C, 1, 1)."""
    return GlobalAvgPool2d()(x)
