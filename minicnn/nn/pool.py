"""Pooling layers: max, average, adaptive and global average pooling as modules."""
from minicnn import functional as F
from minicnn.functional.pool import adaptive_output_size, pool_window_settings
from minicnn.nn.module import Module


class MaxPool2d(Module):
    """Max over each KH×KW window (stride defaults to the kernel size, as in PyTorch)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = pool_window_settings(
            "MaxPool2d", kernel_size, stride, padding, dilation)
        self.ceil_mode = ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")
                + (", ceil_mode=True" if self.ceil_mode else ""))


class AvgPool2d(Module):
    """Mean over each KH×KW window; ``count_include_pad`` counts padding zeros (default)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__()
        self.kernel_size, self.stride, self.padding, _ = pool_window_settings(
            "AvgPool2d", kernel_size, stride, padding, 1)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + (", ceil_mode=True" if self.ceil_mode else "")
                + ("" if self.count_include_pad else ", count_include_pad=False"))


class AdaptiveAvgPool2d(Module):
    """Average-pool to a fixed output size, whatever the input size."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = adaptive_output_size("AdaptiveAvgPool2d", output_size)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Max-pool to a fixed output size, whatever the input size."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = adaptive_output_size("AdaptiveMaxPool2d", output_size)

    def forward(self, x):
        return F.adaptive_max_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C, 1, 1): the mean of each feature map (NiN, GoogLeNet, ResNet)."""

    def forward(self, x):
        return F.global_avg_pool2d(x)
