"""Activation functions: y = f(x) elementwise, gx = gy · f'(x).

Each backward uses whatever is cheapest to keep: the output where f' is a function of
y (sigmoid, tanh), a boolean mask where f' is piecewise constant (ReLU family) — and
only when a backward can run (``self.records``): inference computes no mask.
"""
from minicnn.backend import get_array_module
from minicnn.tensor import Function
from minicnn.functional.math import _check_float


class ReLU(Function):
    """y = max(x, 0);   gx = gy · [x > 0]."""
    def forward(self, x):
        _check_float("relu", x)
        if self.records:                  # inference keeps no mask: one pass less
            self.save_for_backward(x > 0)
        return get_array_module(x).maximum(x, 0, dtype=x.dtype)

    def backward(self, gy):
        positive, = self.saved
        return gy * positive


class ReLU6(Function):
    """y = min(max(x, 0), 6);   gx = gy · [0 < x < 6]  (MobileNet's bounded ReLU)."""
    def forward(self, x):
        _check_float("relu6", x)
        if self.records:
            self.save_for_backward((x > 0) & (x < 6))
        return get_array_module(x).clip(x, 0, 6)

    def backward(self, gy):
        inside, = self.saved
        return gy * inside


class LeakyReLU(Function):
    """y = x if x > 0 else αx;   gx = gy if x > 0 else α·gy."""
    def __init__(self, slope=0.01):
        self.slope = slope

    def forward(self, x):
        _check_float("leaky_relu", x)
        xp = get_array_module(x)
        positive = x > 0
        self.save_for_backward(positive)
        return xp.where(positive, x, x * x.dtype.type(self.slope))

    def backward(self, gy):
        xp = get_array_module(gy)
        positive, = self.saved
        return xp.where(positive, gy, gy * gy.dtype.type(self.slope))


class Sigmoid(Function):
    """y = 1 / (1 + e⁻ˣ);   gx = gy · y (1 − y)."""
    def forward(self, x):
        _check_float("sigmoid", x)
        xp = get_array_module(x)
        # tanh form: never overflows, unlike 1/(1+exp(-x)) for very negative x
        y = 0.5 * (xp.tanh(0.5 * x) + 1)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        y, = self.saved
        return gy * y * (1 - y)


class Tanh(Function):
    """y = tanh x;   gx = gy · (1 − y²)."""
    def forward(self, x):
        _check_float("tanh", x)
        y = get_array_module(x).tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        y, = self.saved
        return gy * (1 - y * y)


class ScaledTanh(Function):
    """LeCun's squashing function (1998, Appendix A): y = A tanh(S x), A = 1.7159, S = 2/3.

    Chosen so that f(±1) = ±1 and the gain is near 1 around the origin.
    gx = gy · A·S · (1 − tanh²(S x)).
    """
    A, S = 1.7159, 2.0 / 3.0

    def forward(self, x):
        _check_float("scaled_tanh", x)
        t = get_array_module(x).tanh(x * x.dtype.type(self.S))
        self.save_for_backward(t)
        return t * x.dtype.type(self.A)

    def backward(self, gy):
        t, = self.saved
        return gy * gy.dtype.type(self.A * self.S) * (1 - t * t)


class SiLU(Function):
    """SiLU / swish: y = x · σ(x);   gx = gy · σ(x) (1 + x (1 − σ(x)))."""
    def forward(self, x):
        _check_float("silu", x)
        xp = get_array_module(x)
        s = 0.5 * (xp.tanh(0.5 * x) + 1)
        self.save_for_backward(x, s)
        return x * s

    def backward(self, gy):
        x, s = self.saved
        return gy * s * (1 + x * (1 - s))


class HardSigmoid(Function):
    """y = relu6(x + 3) / 6;   gx = gy / 6 on −3 < x < 3, else 0  (MobileNetV3)."""
    def forward(self, x):
        _check_float("hard_sigmoid", x)
        if self.records:
            self.save_for_backward((x > -3) & (x < 3))
        return get_array_module(x).clip(x + 3, 0, 6) / 6

    def backward(self, gy):
        inside, = self.saved
        return gy * inside / 6


class HardSwish(Function):
    """y = x · relu6(x + 3) / 6;   gx = gy · (2x + 3)/6 on −3 < x < 3, gy for x ≥ 3."""
    def forward(self, x):
        _check_float("hard_swish", x)
        self.save_for_backward(x)
        return x * get_array_module(x).clip(x + 3, 0, 6) / 6

    def backward(self, gy):
        xp = get_array_module(gy)
        x, = self.saved
        slope = xp.where(x >= 3, 1, xp.where(x > -3, (2 * x + 3) / 6, 0)).astype(gy.dtype)
        return gy * slope


class Softmax(Function):
    """yᵢ = e^(xᵢ − m) / Σⱼ e^(xⱼ − m), m = max x (subtracted for stability; y unchanged).

    gx = y · (gy − Σⱼ gyⱼ yⱼ).
    """
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        _check_float("softmax", x)
        xp = get_array_module(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        y = e / e.sum(axis=self.axis, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        y, = self.saved
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """yᵢ = xᵢ − m − log Σⱼ e^(xⱼ − m)  (the log-sum-exp trick: no overflow, no log 0).

    gx = gy − softmax(x) · Σⱼ gyⱼ.
    """
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        _check_float("log_softmax", x)
        xp = get_array_module(x)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        y, = self.saved
        return gy - xp.exp(y) * gy.sum(axis=self.axis, keepdims=True)


def relu(x): return ReLU()(x)
def relu6(x): return ReLU6()(x)
def leaky_relu(x, slope=0.01): return LeakyReLU(slope)(x)
def sigmoid(x): return Sigmoid()(x)
def tanh(x): return Tanh()(x)
def scaled_tanh(x): return ScaledTanh()(x)
def silu(x): return SiLU()(x)
swish = silu
def hard_sigmoid(x): return HardSigmoid()(x)
def hard_swish(x): return HardSwish()(x)
def softmax(x, axis=-1): return Softmax(axis)(x)
def log_softmax(x, axis=-1): return LogSoftmax(axis)(x)
