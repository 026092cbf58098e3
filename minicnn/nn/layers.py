"""Basic layers: Linear, shape helpers, activations and dropout as modules."""
import numpy as np

from minicnn import functional as F
from minicnn.nn import init
from minicnn.nn.module import Module, Parameter


class Identity(Module):
    """y = x (a placeholder where an architecture option removes a layer)."""

    def forward(self, x):
        return x


class Flatten(Module):
    """(N, C, H, W) -> (N, C·H·W): keeps the first ``start_dim`` axes."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}"


class Linear(Module):
    """y = x Wᵀ + b, W of shape (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        self.bias = Parameter(np.empty(out_features, dtype=dtype)) if bias else None
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, x):
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): expected input "
                             f"with last dimension {self.in_features}, got shape {x.shape}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


def _activation(name, function, doc):
    def forward(self, x):
        return function(x)
    return type(name, (Module,), {"forward": forward, "__doc__": doc})


ReLU = _activation("ReLU", F.relu, "y = max(x, 0)")
ReLU6 = _activation("ReLU6", F.relu6, "y = min(max(x, 0), 6)")
Sigmoid = _activation("Sigmoid", F.sigmoid, "y = 1 / (1 + exp(-x))")
Tanh = _activation("Tanh", F.tanh, "y = tanh(x)")
ScaledTanh = _activation("ScaledTanh", F.scaled_tanh, "LeCun's y = 1.7159 tanh(2x/3)")
SiLU = _activation("SiLU", F.silu, "y = x sigmoid(x) (swish)")
Swish = SiLU
HardSigmoid = _activation("HardSigmoid", F.hard_sigmoid, "y = relu6(x + 3) / 6")
HardSwish = _activation("HardSwish", F.hard_swish, "y = x relu6(x + 3) / 6")


class LeakyReLU(Module):
    """y = x if x > 0 else slope·x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Softmax(Module):
    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        return F.softmax(x, self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


class _DropoutBase(Module):
    function = None

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{type(self).__name__}: p must lie in [0, 1), got {p}")
        self.p, self.rng = p, rng

    def forward(self, x):
        return type(self).function(x, self.p, self.training, self.rng)

    @property
    def independent_samples(self):
        return self.p == 0                  # masks are drawn for the whole batch, in order

    def extra_repr(self):
        return f"p={self.p}"


class Dropout(_DropoutBase):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1−p)."""
    function = staticmethod(F.dropout)


class Dropout2d(_DropoutBase):
    """Spatial dropout: zero whole channels (N, C) with probability p, scale by 1/(1−p)."""
    function = staticmethod(F.dropout2d)


class DropPath(_DropoutBase):
    """Stochastic depth: drop a residual branch for whole samples with probability p."""
    function = staticmethod(F.drop_path)
