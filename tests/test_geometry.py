"""Window geometry is refused once, in one place (minicnn/functional/geometry.py), by every
layer and functional op that slides a window: one table of bad values for the layers'
constructors, one for the functional ops at call time. Each case must end in one clear
error that names the operation, the setting and the value that arrived."""
import numpy as np
import pytest

from minicnn import Tensor, functional as F, nn

# (constructor, arguments, error type, message) — the message names owner, setting, value
CONSTRUCTOR_CASES = [
    (nn.Conv2d, (0, 4, 3), ValueError, r"Conv2d: in_channels must be a positive int, got 0"),
    (nn.Conv2d, (-1, 4, 3), ValueError, r"Conv2d: in_channels must be a positive int, got -1"),
    (nn.Conv2d, (3.0, 4, 3), ValueError, r"Conv2d: in_channels must be a positive int, got 3\.0"),
    (nn.Conv2d, (3, 0, 3), ValueError, r"Conv2d: out_channels must be a positive int, got 0"),
    (nn.Conv2d, (4, 4, 3, 1, 0, 1, 0), ValueError, r"Conv2d: groups must be a positive int, got 0"),
    (nn.Conv2d, (4, 4, 3, 1, 0, 1, -2), ValueError, r"Conv2d: groups must be a positive int, got -2"),
    (nn.Conv2d, (3, 4, 3, 1, 0, 1, 2), ValueError,
     r"Conv2d: in_channels \(3\) and out_channels \(4\) must both be divisible by groups \(2\)"),
    (nn.Conv2d, (4, 3, 3, 1, 0, 1, 2), ValueError,
     r"Conv2d: in_channels \(4\) and out_channels \(3\) must both be divisible by groups \(2\)"),
    (nn.Conv2d, (3, 4, 0), ValueError,
     r"Conv2d: kernel_size must be positive \(at least 1\), got 0"),
    (nn.Conv2d, (3, 4, (3, 0)), ValueError,
     r"Conv2d: kernel_size must be positive \(at least 1\), got \(3, 0\)"),
    (nn.Conv2d, (3, 4, -1), ValueError,
     r"Conv2d: kernel_size must be positive \(at least 1\), got -1"),
    (nn.Conv2d, (3, 4, 2.5), TypeError,
     r"Conv2d: kernel_size must be an int or an \(h, w\) pair of ints, got 2\.5"),
    (nn.Conv2d, (3, 4, (1, 2, 3)), TypeError,
     r"Conv2d: kernel_size must be an int or an \(h, w\) pair of ints, got \(1, 2, 3\)"),
    (nn.Conv2d, (3, 4, 3, 0), ValueError, r"Conv2d: stride must be positive \(at least 1\), got 0"),
    (nn.Conv2d, (3, 4, 3, -1), ValueError, r"Conv2d: stride must be positive \(at least 1\), got -1"),
    (nn.Conv2d, (3, 4, 3, (1, 0)), ValueError,
     r"Conv2d: stride must be positive \(at least 1\), got \(1, 0\)"),
    (nn.Conv2d, (3, 4, 3, 1, -1), ValueError,
     r"Conv2d: padding must be non-negative \(at least 0\), got -1"),
    (nn.Conv2d, (3, 4, 3, 1, (0, -2)), ValueError,
     r"Conv2d: padding must be non-negative \(at least 0\), got \(0, -2\)"),
    (nn.Conv2d, (3, 4, 3, 1, 0, 0), ValueError,
     r"Conv2d: dilation must be positive \(at least 1\), got 0"),
    (nn.Conv2d, (3, 4, 3, 1, 0, -1), ValueError,
     r"Conv2d: dilation must be positive \(at least 1\), got -1"),
    (nn.MaxPool2d, (0,), ValueError, r"MaxPool2d: kernel_size must be positive .* got 0"),
    (nn.MaxPool2d, (2, 0), ValueError, r"MaxPool2d: stride must be positive .* got 0"),
    (nn.MaxPool2d, (2, -1), ValueError, r"MaxPool2d: stride must be positive .* got -1"),
    (nn.MaxPool2d, (3, 1, -1), ValueError, r"MaxPool2d: padding must be non-negative .* got -1"),
    (nn.MaxPool2d, (3, 1, 0, 0), ValueError, r"MaxPool2d: dilation must be positive .* got 0"),
    (nn.MaxPool2d, (3, 1, 2), ValueError,
     r"MaxPool2d: padding \(2, 2\) must be at most half the kernel size \(3, 3\)"),
    (nn.MaxPool2d, ("3",), TypeError, r"MaxPool2d: kernel_size must be an int or an \(h, w\) pair"),
    (nn.AvgPool2d, (0,), ValueError, r"AvgPool2d: kernel_size must be positive .* got 0"),
    (nn.AvgPool2d, (2, 0), ValueError, r"AvgPool2d: stride must be positive .* got 0"),
    (nn.AvgPool2d, (2, -2), ValueError, r"AvgPool2d: stride must be positive .* got -2"),
    (nn.AvgPool2d, (3, 1, -1), ValueError, r"AvgPool2d: padding must be non-negative .* got -1"),
    (nn.AvgPool2d, ((2, 2.5),), TypeError, r"AvgPool2d: kernel_size must be an int or an \(h, w\) pair"),
]


@pytest.mark.parametrize("constructor, arguments, error, message", CONSTRUCTOR_CASES,
                         ids=[f"{c.__name__}{a}" for c, a, _, _ in CONSTRUCTOR_CASES])
def test_layer_constructors_refuse_bad_geometry(constructor, arguments, error, message):
    with pytest.raises(error, match=message):
        constructor(*arguments)


def _x(shape=(1, 3, 6, 6)):
    return Tensor(np.zeros(shape, np.float32))


def _w(shape=(4, 3, 3, 3)):
    return Tensor(np.zeros(shape, np.float32))


# (call, error type, message): the same rules at call time, for the functional ops
CALL_CASES = [
    ("conv2d padding -1", lambda: F.conv2d(_x(), _w(), padding=-1), ValueError,
     r"conv2d: padding must be non-negative \(at least 0\), got -1"),
    ("conv2d dilation 0", lambda: F.conv2d(_x(), _w(), dilation=0), ValueError,
     r"conv2d: dilation must be positive \(at least 1\), got 0"),
    ("conv2d stride 0", lambda: F.conv2d(_x(), _w(), stride=0), ValueError,
     r"conv2d: stride must be positive \(at least 1\), got 0"),
    ("conv2d stride -1", lambda: F.conv2d(_x(), _w(), stride=-1), ValueError,
     r"conv2d: stride must be positive \(at least 1\), got -1"),
    ("conv2d groups 0", lambda: F.conv2d(_x(), _w(), groups=0), ValueError,
     r"conv2d: groups must be a positive int, got 0"),
    ("conv2d zero channels", lambda: F.conv2d(_x((1, 0, 6, 6)), _w((4, 0, 3, 3))), ValueError,
     r"conv2d: in_channels must be a positive int, got 0"),
    ("conv2d zero filters", lambda: F.conv2d(_x(), _w((0, 3, 3, 3))), ValueError,
     r"conv2d: out_channels must be a positive int, got 0"),
    ("conv2d kernel 0", lambda: F.conv2d(_x(), _w((4, 3, 0, 3))), ValueError,
     r"conv2d: kernel_size must be positive \(at least 1\), got \(0, 3\)"),
    ("conv2d kernel too large", lambda: F.conv2d(_x((1, 3, 4, 4)), _w((4, 3, 5, 5)), padding=0),
     ValueError, r"conv2d: the 5×5 window .* larger than the padded input 4×4"),
    ("conv2d groups not dividing", lambda: F.conv2d(_x(), _w((4, 1, 3, 3)), groups=2),
     ValueError, r"conv2d: in_channels \(3\) and out_channels \(4\) must both be divisible"),
    ("max_pool2d stride 0", lambda: F.max_pool2d(_x(), 2, stride=0), ValueError,
     r"MaxPool2d.*: stride must be positive .* got 0"),
    ("max_pool2d padding -1", lambda: F.max_pool2d(_x(), 3, padding=-1), ValueError,
     r"MaxPool2d.*: padding must be non-negative .* got -1"),
    ("max_pool2d dilation 0", lambda: F.max_pool2d(_x(), 3, dilation=0), ValueError,
     r"MaxPool2d.*: dilation must be positive .* got 0"),
    ("max_pool2d window too large", lambda: F.max_pool2d(_x((1, 1, 2, 2)), 3), ValueError,
     r"MaxPool2d.*: the 3×3 window .* larger than the padded input 2×2"),
    ("avg_pool2d kernel 0", lambda: F.avg_pool2d(_x(), 0), ValueError,
     r"AvgPool2d.*: kernel_size must be positive .* got 0"),
    ("avg_pool2d stride -1", lambda: F.avg_pool2d(_x(), 2, stride=-1), ValueError,
     r"AvgPool2d.*: stride must be positive .* got -1"),
]


@pytest.mark.parametrize("name, call, error, message", CALL_CASES,
                         ids=[case[0] for case in CALL_CASES])
def test_functional_ops_refuse_bad_geometry_at_call_time(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_tables_count():
    """The closing note quotes these counts: keep it honest when a case is added."""
    assert (len(CONSTRUCTOR_CASES), len(CALL_CASES)) == (32, 16)
