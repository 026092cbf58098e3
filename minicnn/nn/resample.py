"""Resampling layers of a feature pyramid: nearest-neighbour upsampling and max pooling
with TensorFlow's "SAME" padding (``minicnn/functional/resample.py`` has the formulas)."""
from minicnn import functional as F
from minicnn.functional.geometry import checked_pair
from minicnn.nn.module import Module


class UpsamplingNearest2d(Module):
    """(N, C, H, W) -> (N, C, s_h·H, s_w·W): every cell repeated as an s_h × s_w block."""

    def __init__(self, scale_factor=2):
        super().__init__()
        self.scale_factor = checked_pair(scale_factor, "scale_factor", "UpsamplingNearest2d")

    def forward(self, x):
        return F.upsample_nearest2d(x, self.scale_factor)

    def count_flops(self, input_shape, output_shape):
        """A copy: no arithmetic (``minicnn.summary`` asks every custom layer)."""
        return {"other": 0}

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}"


class MaxPool2dSame(Module):
    """Max pooling to ⌈H/S⌉ × ⌈W/S⌉ with TensorFlow's "SAME" padding: any extra padding
    cell goes to the bottom/right (EfficientDet's 3×3/2 pool between pyramid levels)."""

    def __init__(self, kernel_size=3, stride=2):
        super().__init__()
        self.kernel_size = checked_pair(kernel_size, "kernel_size", "MaxPool2dSame")
        self.stride = checked_pair(stride, "stride", "MaxPool2dSame")

    def forward(self, x):
        return F.max_pool2d_same(x, self.kernel_size, self.stride)

    def count_flops(self, input_shape, output_shape):
        """One comparison per window cell, as ``summary`` counts ``MaxPool2d``."""
        kh, kw = self.kernel_size
        activations = output_shape[1] * output_shape[2] * output_shape[3]
        return {"pool": activations * kh * kw}

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"
