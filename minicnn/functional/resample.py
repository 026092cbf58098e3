"""Resampling between the levels of a feature pyramid: nearest-neighbour upsampling by an
integer factor, and max pooling with TensorFlow's "SAME" padding. EfficientDet's BiFPN
moves every feature map up a level with the first and down a level with the second.

Notation: x is (N, C, H, W), y is (N, C, OH, OW); s_h, s_w the upsampling factors; KH, KW
the pooling window and SH, SW its stride.

Nearest-neighbour upsampling (each input cell becomes an s_h × s_w block)
--------------------------------------------------------------------------
    y[n, c, i, j]  = x[n, c, ⌊i / s_h⌋, ⌊j / s_w⌋],             OH = s_h·H,  OW = s_w·W
    gx[n, c, h, w] = Σ_{a < s_h, b < s_w} gy[n, c, h·s_h + a, w·s_w + b]

The backward is a sum over each block: the reshape (H, s_h, W, s_w) puts a block's cells
on two axes of their own, and summing those axes is the whole gradient.

"SAME" max pooling (TensorFlow's padding rule)
----------------------------------------------
TensorFlow chooses the output size first and pads to fit it, per axis:

    out   = ⌈size / S⌉
    total = max((out − 1)·S + K − size, 0)          cells of padding in all
    before = ⌊total / 2⌋,  after = total − before    the odd cell goes to the bottom/right

so a 3×3/2 pool of an even size pads 0 above and 1 below, unlike PyTorch's symmetric
padding. The padding is −∞ (it never wins a maximum). The window cells are the max-pool
kernel's (``minicnn/kernels/pool.py``) with PH = before: the kernel skips cells outside
the input, so the "after" padding needs no array of its own. Forward and backward are
max pooling's:

    y[n, c, i, j]  = max over window (i, j) of x[n, c, h, w]
    gx[n, c, h, w] = Σ of gy[n, c, i, j] over the windows whose maximum is at (h, w)
"""
import math

import numpy as np

from minicnn.backend import get_array_module
from minicnn.functional.geometry import checked_pair
from minicnn.kernels import channels_first_view, channels_last
from minicnn.kernels import pool as kernels
from minicnn.tensor import Function


def _check_input(name, x):
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D (N, C, H, W) input, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected a float32 or float64 input, got dtype {x.dtype}")


def same_padding(size, kernel, stride):
    """TensorFlow's "SAME" rule along one axis: ``(out, before, after)``.

    >>> same_padding(8, 3, 2)        # even size: the one cell of padding goes after
    (4, 0, 1)
    >>> same_padding(7, 3, 2)
    (4, 1, 1)
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


class UpsampleNearest2d(Function):
    """y[n, c, i, j] = x[n, c, ⌊i/s_h⌋, ⌊j/s_w⌋];   gx = gy summed over each s_h × s_w block.

    Works on channels-last memory, as the pooling Functions do: the output is an NCHW view
    of (N, OH, OW, C) memory, which the next convolution reads without a copy.
    """

    def __init__(self, scale_factor=2):
        self.name = f"UpsampleNearest2d(scale_factor={scale_factor})"
        self.scale = checked_pair(scale_factor, "scale_factor", self.name)

    def forward(self, x):
        _check_input(self.name, x)
        (N, C, H, W), (sh, sw) = x.shape, self.scale
        x = channels_last(x)                                        # (N, H, W, C)
        blocks = get_array_module(x).broadcast_to(x[:, :, None, :, None, :],
                                                  (N, H, sh, W, sw, C))
        return channels_first_view(blocks.reshape(N, H * sh, W * sw, C))

    def backward(self, gy):
        (N, C, OH, OW), (sh, sw) = gy.shape, self.scale
        blocks = channels_last(gy).reshape(N, OH // sh, sh, OW // sw, sw, C)
        return channels_first_view(blocks.sum(axis=(2, 4)))


class MaxPool2dSame(Function):
    """Max pooling with TensorFlow's "SAME" padding (see the module docstring):
    OH = ⌈H / SH⌉, padding ⌊total/2⌋ before and the rest after, −∞ valued.

    y = the window maximum;   gx: each gy routed to its window's argmax (as ``MaxPool2d``).
    """

    def __init__(self, kernel_size=3, stride=2):
        self.name = f"MaxPool2dSame(kernel_size={kernel_size}, stride={stride})"
        self.kernel = checked_pair(kernel_size, "kernel_size", self.name)
        self.stride = checked_pair(stride, "stride", self.name)

    def forward(self, x):
        _check_input(self.name, x)
        (out_h, top, _), (out_w, left, _) = (same_padding(size, k, s) for size, k, s in
                                             zip(x.shape[2:], self.kernel, self.stride))
        y, argmax = kernels.max_pool_forward(channels_last(x), self.kernel, self.stride,
                                             (top, left), (1, 1), (out_h, out_w))
        if any(self.needs_input_grad):
            self.save_for_backward(argmax, tuple(x.shape[2:]))
        return channels_first_view(y)

    def backward(self, gy):
        argmax, in_hw = self.saved
        return channels_first_view(kernels.max_pool_backward(channels_last(gy), argmax, in_hw))


# ============================================================================ public API

def upsample_nearest2d(x, scale_factor=2):
    """Nearest-neighbour upsampling of (N, C, H, W) to (N, C, s_h·H, s_w·W)."""
    return UpsampleNearest2d(scale_factor)(x)


def max_pool2d_same(x, kernel_size=3, stride=2):
    """Max pooling of (N, C, H, W) to (N, C, ⌈H/SH⌉, ⌈W/SW⌉), TensorFlow's SAME padding."""
    return MaxPool2dSame(kernel_size, stride)(x)
