"""Weight initializers. Each fills a Parameter in place and returns it.

The variance rules (n = fan_in or fan_out; for a convolution fan_in = C_in/groups·KH·KW):

* LeCun (1998):          Var(w) = 1 / fan_in
* Xavier/Glorot (2010):  Var(w) = 2 / (fan_in + fan_out)
* He/Kaiming (2015):     Var(w) = gain² / n, gain = √2 for ReLU

A uniform distribution on [−a, a] has variance a²/3, so the uniform versions use
a = √(3·Var). Every initializer takes ``rng`` (a NumPy Generator) for reproducibility.
"""
import math

import numpy as np

from minicnn.backend import get_array_module
from minicnn.random import register_generator

_default_rng = np.random.default_rng(0)
# a function, not the generator: manual_seed replaces it
register_generator("module:minicnn.nn.init._default_rng", lambda: _default_rng)


def manual_seed(seed):
    """Reset the generator used when no ``rng`` is passed (reproducible model builds)."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)


def _rng(rng):
    return _default_rng if rng is None else rng


def fan_in_and_fan_out(shape):
    """(fan_in, fan_out) of a weight: Linear (out, in); Conv (out, in/groups, kh, kw)."""
    if len(shape) < 2:
        raise ValueError(f"fan in/out needs a weight with at least 2 dimensions, got {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _gain(nonlinearity, slope=0.01):
    return {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3, "relu": math.sqrt(2.0),
            "leaky_relu": math.sqrt(2.0 / (1 + slope ** 2)), "selu": 0.75}[nonlinearity]


def _fill(tensor, values):
    xp = get_array_module(tensor.data)
    tensor.data[...] = xp.asarray(values, dtype=tensor.dtype)
    return tensor


def _draw_dtype(tensor):
    # Draw float32 parameters in float32: half the memory traffic of drawing float64 and
    # casting (building EfficientNet-B7's 66M parameters takes ~2× less time).
    return np.float32 if tensor.dtype == np.float32 else np.float64


def normal_(tensor, mean=0.0, std=1.0, rng=None):
    values = _rng(rng).standard_normal(tensor.shape, dtype=_draw_dtype(tensor))
    return _fill(tensor, values * values.dtype.type(std) + values.dtype.type(mean))


def uniform_(tensor, low=-1.0, high=1.0, rng=None):
    values = _rng(rng).random(tensor.shape, dtype=_draw_dtype(tensor))
    return _fill(tensor, values * values.dtype.type(high - low) + values.dtype.type(low))


def constant_(tensor, value):
    tensor.data[...] = value
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def _std(tensor, mode, gain):
    fan_in, fan_out = fan_in_and_fan_out(tensor.shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def lecun_normal_(tensor, rng=None):
    return normal_(tensor, 0.0, _std(tensor, "fan_in", 1.0), rng)


def lecun_uniform_(tensor, rng=None):
    a = math.sqrt(3.0) * _std(tensor, "fan_in", 1.0)
    return uniform_(tensor, -a, a, rng)


def xavier_normal_(tensor, gain=1.0, rng=None):
    fan_in, fan_out = fan_in_and_fan_out(tensor.shape)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


def xavier_uniform_(tensor, gain=1.0, rng=None):
    fan_in, fan_out = fan_in_and_fan_out(tensor.shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a, rng)


def kaiming_normal_(tensor, mode="fan_in", nonlinearity="relu", slope=0.01, rng=None):
    return normal_(tensor, 0.0, _std(tensor, mode, _gain(nonlinearity, slope)), rng)


def kaiming_uniform_(tensor, mode="fan_in", nonlinearity="relu", slope=0.01, rng=None):
    a = math.sqrt(3.0) * _std(tensor, mode, _gain(nonlinearity, slope))
    return uniform_(tensor, -a, a, rng)


def default_layer_init_(weight, bias=None, rng=None):
    """PyTorch's default for Linear and Conv2d: U(−1/√fan_in, 1/√fan_in) for both.

    (That is kaiming_uniform with a = √5, written out plainly.)
    """
    fan_in, _ = fan_in_and_fan_out(weight.shape)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    uniform_(weight, -bound, bound, rng)
    if bias is not None:
        uniform_(bias, -bound, bound, rng)
