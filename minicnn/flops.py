"""What one forward pass through a layer costs, in FLOPs: one rule per layer type.

``minicnn.summary`` asks ``layer_flops(module, input_shape, output_shape)`` for every layer
it traces; the answer is a dict {category: FLOPs of one sample}, a multiply-add counted as
2. Each rule below sits under the layer types it prices, so the whole cost model reads as
one table::

    conv    A · KH·KW·C_in/groups · 2           Conv2d (the weights only)
    linear  2 · C_in · C_out (per position)     Linear
    pool    A · KH·KW; adaptive pooling:        MaxPool2d, AvgPool2d; AdaptiveAvg/MaxPool2d,
            C · Σ of its actual window areas    GlobalAvgPool2d
    bias    A (one add per output element)      Conv2d and Linear with bias
    norm    2 · A (scale and shift)             BatchNorm1d/2d
            (2·size + 4) · A                    LocalResponseNorm
    act     A (one operation per element)       ReLU, sigmoid, tanh, ...
    add     residual additions between layers (counted by the summary from the trace)
    other   what a custom layer reports itself

(A = the number of output activations of one sample.) A layer of another type prices
itself with a method ``count_flops(input_shape, output_shape)`` returning a number
(category ``other``) or a {category: number} dict — LeNet-5's trainable subsampling does —
or registers a rule here with ``@flop_rule(ItsType)``.
"""
import math

from minicnn.functional.pool import adaptive_bins
from minicnn.nn.conv import Conv2d
from minicnn.nn.layers import (HardSigmoid, HardSwish, LeakyReLU, Linear, ReLU, ReLU6,
                               ScaledTanh, Sigmoid, SiLU, Softmax, Tanh)
from minicnn.nn.norm import BatchNormNd, LocalResponseNorm
from minicnn.nn.pool import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d,
                             GlobalAvgPool2d, MaxPool2d)

CATEGORIES = ("conv", "linear", "pool", "bias", "norm", "act", "add", "other")

FLOP_RULES = {}     # layer type -> rule(module, input_shape, output_shape, activations)


def flop_rule(*layer_types):
    """Register the decorated function as the FLOP rule of ``layer_types`` (and their
    subclasses, unless a subclass has a rule of its own)."""
    def register(rule):
        for layer_type in layer_types:
            FLOP_RULES[layer_type] = rule
        return rule
    return register


def layer_flops(module, input_shape, output_shape):
    """{category: FLOPs} of one sample through ``module`` (every category present).

    ``input_shape``/``output_shape`` include the batch axis of the traced pass (batch 1).
    """
    flops = dict.fromkeys(CATEGORIES, 0)
    activations = math.prod(output_shape[1:])
    rule = next((FLOP_RULES[t] for t in type(module).__mro__ if t in FLOP_RULES), None)
    if rule is not None:
        reported = rule(module, input_shape, output_shape, activations)
    elif hasattr(module, "count_flops"):
        reported = module.count_flops(input_shape, output_shape)
        if not isinstance(reported, dict):
            reported = {"other": reported}
    else:
        return flops                    # reshapes, containers, dropout: nothing to count
    for category, value in reported.items():
        if category not in CATEGORIES:
            raise ValueError(f"summary: {type(module).__name__} reported the FLOP category "
                             f"{category!r}; known: {', '.join(CATEGORIES)}")
        flops[category] += int(value)
    return flops


@flop_rule(Conv2d)
def _convolution(conv, input_shape, output_shape, activations):
    kh, kw = conv.kernel_size
    return {"conv": activations * kh * kw * (conv.in_channels // conv.groups) * 2,
            "bias": activations if conv.bias is not None else 0}


@flop_rule(Linear)
def _linear(linear, input_shape, output_shape, activations):
    positions = math.prod(output_shape[1:-1])       # 1 for (N, features)
    return {"linear": 2 * linear.in_features * linear.out_features * positions,
            "bias": linear.out_features * positions if linear.bias is not None else 0}


@flop_rule(MaxPool2d, AvgPool2d)
def _window_pool(pool, input_shape, output_shape, activations):
    kh, kw = pool.kernel_size
    return {"pool": activations * kh * kw}


def adaptive_window_lengths(size, out):
    """Lengths of adaptive pooling's ``out`` windows over ``size`` cells (PyTorch's bins,
    ``minicnn.functional.pool.adaptive_bins``)."""
    return [end - start for start, end in adaptive_bins(size, out)]


@flop_rule(AdaptiveAvgPool2d, AdaptiveMaxPool2d, GlobalAvgPool2d)
def _adaptive_pool(pool, input_shape, output_shape, activations):
    (h_in, w_in), (h_out, w_out) = input_shape[2:], output_shape[2:]
    areas = sum(adaptive_window_lengths(h_in, h_out)) * sum(adaptive_window_lengths(w_in, w_out))
    return {"pool": output_shape[1] * areas}


@flop_rule(BatchNormNd)
def _batch_norm(norm, input_shape, output_shape, activations):
    return {"norm": 2 * activations}


@flop_rule(LocalResponseNorm)
def _local_response_norm(norm, input_shape, output_shape, activations):
    return {"norm": (2 * norm.size + 4) * activations}


@flop_rule(ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, ScaledTanh, SiLU, HardSigmoid, HardSwish,
           Softmax)
def _activation(activation, input_shape, output_shape, activations):
    return {"act": activations}
