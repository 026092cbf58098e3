"""Convolution layers."""
import numpy as np

from minicnn import functional as F
from minicnn.nn import init
from minicnn.nn.module import Module, Parameter


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


class Conv2d(Module):
    """2-D convolution over NCHW input; weight (out_channels, in_channels/groups, KH, KW).

    Every size argument is an int or an (h, w) pair, so 1×7 and 7×1 kernels work.
    ``groups`` splits channels into independent groups (AlexNet's towers, ResNeXt);
    ``groups == in_channels`` is a depthwise convolution (MobileNet, EfficientNet).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, dtype=np.float32):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must both be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation, self.groups = _pair(padding), _pair(dilation), groups
        kh, kw = self.kernel_size
        self.weight = Parameter(np.empty((out_channels, in_channels // groups, kh, kw), dtype=dtype))
        self.bias = Parameter(np.empty(out_channels, dtype=dtype)) if bias else None
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class ZeroPad2d(Module):
    """Pad H and W with zeros by (left, right, top, bottom); an int pads all four sides.

    The way to get padding that differs between sides, e.g. TensorFlow's "same" padding
    at stride 2 is ZeroPad2d((0, 1, 0, 1)) before a padding-0 convolution.
    """

    def __init__(self, padding):
        super().__init__()
        self.padding = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
        if len(self.padding) != 4:
            raise ValueError(f"ZeroPad2d: expected an int or (left, right, top, bottom), "
                             f"got {padding!r}")

    def forward(self, x):
        left, right, top, bottom = self.padding
        return F.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))

    def extra_repr(self):
        return f"padding={self.padding}"
