"""The settings of a sliding window, checked once for every layer and operation that slides one.

A convolution and a pooling window are described by the same four pairs::

    kernel_size (KH, KW)   the window, in cells             at least 1
    stride      (SH, SW)   the step between windows         at least 1
    padding     (PH, PW)   zeros (or −∞) added on each side at least 0
    dilation    (DH, DW)   the step between a window's cells at least 1

and produce ``floor((H + 2·PH − DH·(KH − 1) − 1) / SH) + 1`` outputs along H (likewise W),
which is at least one exactly when the dilated window, DH·(KH − 1) + 1 cells, fits in the
padded input, H + 2·PH cells.

Every value outside these ranges gives a wrong answer rather than an error if nothing
stops it: negative padding crops, dilation 0 sums the input under one cell KH·KW times,
a kernel of size 0 makes an output larger than its input. So ``Conv2d``, ``F.conv2d``, the
pooling layers and the pooling functions all parse their settings here, at construction
and at call time, and each bad value gets one error that names the operation, the setting,
what it must be, and what arrived.
"""
import numbers

# The lower bound of each setting, and the words that say so (a resampling layer's
# scale factor is parsed by the same rules).
_LOWER_BOUNDS = {"kernel_size": (1, "positive"), "stride": (1, "positive"),
                 "dilation": (1, "positive"), "padding": (0, "non-negative"),
                 "scale_factor": (1, "positive")}


def is_int(value):
    """A true integer: ``3`` and ``numpy.int64(3)``, not ``3.0`` and not ``True``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def pair(value, setting, owner):
    """An int or an (h, w) pair of ints -> an (h, w) tuple of Python ints."""
    if is_int(value):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_int, value)):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{owner}: {setting} must be an int or an (h, w) pair of ints, "
                    f"got {value!r}")


def checked_pair(value, setting, owner):
    """``pair(value)``, refused unless both numbers are in the setting's range."""
    parsed = pair(value, setting, owner)
    lowest, words = _LOWER_BOUNDS[setting]
    if min(parsed) < lowest:
        raise ValueError(f"{owner}: {setting} must be {words} (at least {lowest}), "
                         f"got {value!r}")
    return parsed


def window_settings(owner, kernel_size, stride=1, padding=0, dilation=1):
    """Parse and check a window's four settings -> (kernel, stride, padding, dilation) pairs.

    ``stride=None`` means "the kernel size", pooling's default.
    """
    kernel = checked_pair(kernel_size, "kernel_size", owner)
    stride = kernel if stride is None else checked_pair(stride, "stride", owner)
    return (kernel, stride, checked_pair(padding, "padding", owner),
            checked_pair(dilation, "dilation", owner))


def check_channels(owner, in_channels, out_channels, groups):
    """Channel counts are positive ints, and ``groups`` divides both of them."""
    for setting, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("groups", groups)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{owner}: {setting} must be a positive int, got {value!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{owner}: in_channels ({in_channels}) and out_channels "
                         f"({out_channels}) must both be divisible by groups ({groups})")


def dilated_span(kernel, dilation):
    """Cells a dilated window covers along each axis: D·(K − 1) + 1."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))


def check_window_fits(owner, input_shape, kernel, padding, dilation):
    """The dilated window fits in the padded (N, C, H, W) input: at least one output."""
    H, W = input_shape[2], input_shape[3]
    span = dilated_span(kernel, dilation)
    if span[0] > H + 2 * padding[0] or span[1] > W + 2 * padding[1]:
        raise ValueError(f"{owner}: the {span[0]}×{span[1]} window (kernel {kernel}, "
                         f"dilation {dilation}) is larger than the padded input "
                         f"{H + 2 * padding[0]}×{W + 2 * padding[1]} (input shape "
                         f"{tuple(input_shape)}, padding {padding})")
