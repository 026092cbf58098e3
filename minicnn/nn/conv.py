"""Convolution layers: ``Conv2d`` (its weights, and its settings checked once) and ``ZeroPad2d``."""
import numpy as np

from minicnn import functional as F
from minicnn.functional.conv import check_algorithm_name
from minicnn.functional.geometry import check_channels, window_settings
from minicnn.nn import init
from minicnn.nn.module import Module, Parameter


class Conv2d(Module):
    """2-D convolution over NCHW input; weight (out_channels, in_channels/groups, KH, KW).

    Every size argument is an int or an (h, w) pair, so 1×7 and 7×1 kernels work.
    ``groups`` splits channels into independent groups (AlexNet's towers, ResNeXt);
    ``groups == in_channels`` is a depthwise convolution (MobileNet, EfficientNet).
    ``conv_algorithm`` forces one of ``F.conv.ALGORITHMS`` (to compare them); by default the
    convolution chooses per call. Bad settings are refused here, before any input is seen.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, dtype=np.float32, conv_algorithm=None):
        super().__init__()
        check_channels("Conv2d", in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = window_settings(
            "Conv2d", kernel_size, stride, padding, dilation)
        self.conv_algorithm = check_algorithm_name(conv_algorithm, "Conv2d")
        kh, kw = self.kernel_size
        self.weight = Parameter(np.empty((out_channels, in_channels // groups, kh, kw), dtype=dtype))
        self.bias = Parameter(np.empty(out_channels, dtype=dtype)) if bias else None
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups, self.conv_algorithm)

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
        if self.conv_algorithm is not None:
            text += f", conv_algorithm={self.conv_algorithm!r}"
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
