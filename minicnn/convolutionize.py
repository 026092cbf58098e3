"""Convolutionization: a classifier's fully connected layers rewritten as convolutions, so
the network slides over an image of any size and returns a map of class scores
(OverFeat, Sermanet et al. 2014; the same step starts FCN, Long et al. 2015).

The rewrite
-----------
Let the convolutional trunk turn the original input into features of shape (C, H, W),
flattened (in C, H, W order) into C·H·W numbers for the first Linear layer, W₁ of shape
(F₁, C·H·W). Its output unit f computes

    y_f = Σ_{c,h,w} W₁[f, (c·H + h)·W + w] · x[c, h, w] + b_f

exactly a convolution with F₁ filters of size C×H×W over an H×W input, whose weight is
``W₁.reshape(F₁, C, H, W)``. Every later Linear layer (F_out, F_in) acts on a 1×1 "image"
of F_in channels: a 1×1 convolution with weight ``W.reshape(F_out, F_in, 1, 1)``.
The Flatten becomes an Identity; activations and dropout work on maps unchanged.

On a larger input the trunk yields a larger feature map, the H×W convolution slides over
it, and the output is (N, classes, H', W') with H' = (H_trunk − H) + 1: one score vector
per window, the windows ``score_map_stride`` input pixels apart (the trunk's effective
stride) — without recomputing the overlapping trunk work of separate crops.

Which cells equal the original model on a crop
----------------------------------------------
Cell (i, j) looks at the crop of the original input size starting at (i·s, j·s), s the
stride. For a trunk **without padding** (LeNet-5) every trunk feature depends only on
pixels inside its receptive field, so each cell equals the original model applied to its
crop, exactly. With **padding** the correspondence breaks at the crop's border: the
original model run on the crop sees padding zeros just outside the crop, where the larger
image holds real pixels. Only the trunk features whose receptive field lies wholly inside
the crop (the interior features) are the same in both runs; the border features differ,
and since the first converted layer reads every feature of its window, so does the cell.
A padded network's score map is therefore what the trunk computes on the whole image,
classified window by window — the OverFeat semantics — not a stack of crop evaluations.

Supported structures
--------------------
A model that is a chain of modules: (possibly nested) ``Sequential`` containers, or
modules whose ``forward`` is seen — on one traced pass at ``input_size`` — to apply their
children one after another (``self.classifier(self.flatten(self.features(x)))``, the
torchvision style of AlexNet and VGG; input checks that compute nothing are fine). The
chain must contain a ``Flatten`` followed only by Linear layers, element-wise layers
(activations, dropout, Identity) and BatchNorm1d (which becomes a BatchNorm2d with the
same statistics); anything before the Flatten is the trunk and may be any module. A pooling
layer that makes the trunk's output size fixed (``AdaptiveAvgPool2d``, ``GlobalAvgPool2d``,
``AdaptiveMaxPool2d``) right before the Flatten is replaced by the fixed pooling it performs
at ``input_size`` (window = its input size at ``input_size``, stride 1 for a 1×1 output), so
that the map grows with the image. Models whose ``forward`` flattens by itself (a
functional ``flatten`` in Python code) cannot be rewritten by inspecting their modules and
are rejected with an error.
"""
import copy

import numpy as np

from minicnn.nn.container import Sequential
from minicnn.nn.conv import Conv2d
from minicnn.nn.layers import (Dropout, Dropout2d, Flatten, HardSigmoid, HardSwish, Identity,
                               LeakyReLU, Linear, ReLU, ReLU6, ScaledTanh, Sigmoid, SiLU,
                               Softmax, Tanh)
from minicnn.nn.module import Parameter
from minicnn.nn.norm import BatchNorm1d, BatchNorm2d
from minicnn.nn.pool import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d,
                             GlobalAvgPool2d, MaxPool2d)
from minicnn.nn.transfer import replace_module
from minicnn.summary import summary
from minicnn.trace import input_shape, sample_input, trace_forward

ELEMENTWISE = (ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, ScaledTanh, SiLU, HardSigmoid,
               HardSwish, Dropout, Dropout2d, Identity)


def _chain(module, sequential_like, name=""):
    """[(dotted name, module)] of the modules a chain of sequential containers runs."""
    if isinstance(module, Sequential) or id(module) in sequential_like:
        return [item for key, child in module._modules.items()
                for item in _chain(child, sequential_like, f"{name}.{key}" if name else key)]
    return [(name, module)]


def _trace(model, shape):
    """A ForwardTrace of one batch-1 pass at ``shape``."""
    return trace_forward(model, sample_input(model, shape))


def _sequential_like(model, trace):
    """ids of the modules whose ``forward``, as traced, applied their children one after
    another: the first on the module's input, each next one on the previous one's output,
    the module returning the last one's output, every child called once and nothing
    computed in between (``self.c(self.b(self.a(x)))``)."""
    calls = {}
    for call in trace.calls:
        calls.setdefault(id(call.module), []).append(call)
    result = set()
    for module in model.modules():
        children = list(module._modules.values())
        own = calls.get(id(module), [])
        if not children or len(own) != 1 or len(own[0].inputs) != 1:
            continue
        child_calls = [calls.get(id(c), []) for c in children]
        if any(len(c) != 1 or len(c[0].inputs) != 1 for c in child_calls):
            continue
        order = [trace.calls.index(c[0]) for c in child_calls]
        flowing = own[0].inputs[0]
        for (call,) in child_calls:
            if call.inputs[0] is not flowing:
                break
            flowing = call.output
        else:
            if order == sorted(order) and flowing is own[0].output:
                result.add(id(module))
    return result


def convolutionize(model, input_size, in_channels=None):
    """A deep copy of ``model`` whose classifier is convolutional (see the module doc).

    ``input_size`` is the input the model was built for (int side, (H, W) or (C, H, W)).
    The result maps (N, C, H, W) images of that size or larger to (N, classes, H', W')
    score maps; at ``input_size`` the map is 1×1 and equals the original scores. The
    result carries ``score_map_stride``: how many input pixels apart its cells are, and
    ``score_map_window``: the (H, W) input one cell looks at (``input_size``).
    """
    shape = input_shape(model, input_size, in_channels, caller="convolutionize")
    converted = copy.deepcopy(model)
    trace = _trace(converted, shape)
    chain = _chain(converted, _sequential_like(converted, trace))
    index = _flatten_before_head(converted, chain)
    flatten_name, flatten = chain[index]
    trunk_shapes = {}
    for call in trace.calls:
        trunk_shapes.setdefault(id(call.module), tuple(call.inputs[0].shape) if call.inputs else ())
    features = trunk_shapes[id(flatten)]
    if len(features) != 4:
        raise ValueError(f"convolutionize: {flatten_name} receives shape {features}; "
                         f"expected (N, C, H, W) feature maps")
    if index > 0:
        _fix_adaptive_pool(converted, *chain[index - 1], trunk_shapes)
    replace_module(converted, flatten_name, Identity())
    _convert_head(converted, chain[index + 1:], features[1:])
    report = summary(converted, shape, format="dict")
    converted.score_map_stride = report["total"]["jump"]
    converted.score_map_window = tuple(shape[1:])
    return converted


def _flatten_before_head(model, chain):
    """Index in ``chain`` of the Flatten that starts the classifier head, after checking
    that only Linear, BatchNorm1d and element-wise layers follow it, at least one Linear."""
    flatten_at = [i for i, (_, m) in enumerate(chain) if isinstance(m, Flatten)]
    if not flatten_at or chain == [("", model)]:
        raise ValueError(
            f"convolutionize: {type(model).__name__} has no Flatten module in a chain of "
            f"sequentially applied modules; supported are models built from Sequentials (or "
            f"modules whose forward applies their children in order) whose Flatten is "
            f"followed by Linear and element-wise layers (see minicnn.convolutionize)")
    index = flatten_at[-1]
    flatten_name, flatten = chain[index]
    if flatten.start_dim != 1:
        raise ValueError(f"convolutionize: {flatten_name} flattens from dimension "
                         f"{flatten.start_dim}; only Flatten(start_dim=1) maps to convolutions")
    head = chain[index + 1:]
    for name, module in head:
        if not isinstance(module, (Linear, BatchNorm1d, Softmax) + ELEMENTWISE):
            raise ValueError(f"convolutionize: after {flatten_name} expected only Linear, "
                             f"BatchNorm1d and element-wise layers, got {name} "
                             f"({type(module).__name__})")
    if not any(isinstance(m, Linear) for _, m in head):
        raise ValueError(f"convolutionize: no Linear layer follows {flatten_name}")
    return index


def _convert_head(model, head, features):
    """Rewrite the head's layers in ``model`` for (C, H, W) = ``features`` maps: the first
    Linear as a C×H×W-window convolution, later ones as 1×1 convolutions, BatchNorm1d as
    BatchNorm2d, a softmax over the classes over axis 1 of the map."""
    channels, height, width = features
    first = True
    for name, module in head:
        if isinstance(module, Linear):
            kernel = (height, width) if first else (1, 1)
            in_channels_now = channels if first else module.in_features
            if module.in_features != in_channels_now * kernel[0] * kernel[1]:
                raise ValueError(f"convolutionize: {name} expects {module.in_features} "
                                 f"inputs but receives {in_channels_now}×{kernel[0]}×{kernel[1]}")
            replace_module(model, name, _linear_as_conv(module, in_channels_now, kernel))
            first = False
        elif isinstance(module, BatchNorm1d):
            replace_module(model, name, _bn1d_as_bn2d(module))
        elif isinstance(module, Softmax) and module.axis in (-1, 1):
            replace_module(model, name, Softmax(axis=1))  # classes are axis 1 of a map


def _fix_adaptive_pool(model, name, module, shapes):
    """Replace an adaptive pooling before the Flatten by the fixed pooling it does at the
    original input size (so its output grows with the input)."""
    if not isinstance(module, (AdaptiveAvgPool2d, AdaptiveMaxPool2d, GlobalAvgPool2d)):
        return
    size_in = shapes[id(module)][2:]
    size_out = (1, 1) if isinstance(module, GlobalAvgPool2d) else module.output_size
    if size_in == tuple(size_out):
        replace_module(model, name, Identity())
        return
    if any(i % o for i, o in zip(size_in, size_out)):
        raise ValueError(f"convolutionize: {name} pools {size_in} to {tuple(size_out)}, "
                         f"windows of unequal size; use an input size divisible by the output")
    kernel = tuple(i // o for i, o in zip(size_in, size_out))
    stride = (1, 1) if tuple(size_out) == (1, 1) else kernel
    pool = MaxPool2d if isinstance(module, AdaptiveMaxPool2d) else AvgPool2d
    replace_module(model, name, pool(kernel, stride))


def _linear_as_conv(linear, in_channels, kernel):
    """Conv2d computing ``linear`` on a (in_channels, *kernel) window, weights reshaped."""
    out = linear.out_features
    # Built as a 1×1×1 shell, then given its real size and the Linear's weights:
    # initialising a 4096 × 9216 filter bank only to overwrite it costs seconds.
    conv = Conv2d(1, 1, 1, bias=linear.bias is not None, dtype=linear.weight.dtype)
    conv.in_channels, conv.out_channels, conv.kernel_size = in_channels, out, tuple(kernel)
    # (out, C·H·W) → (out, C, H, W): the order Flatten wrote the features in
    conv.weight = Parameter(linear.weight.data.reshape(out, in_channels, *kernel).copy(),
                            requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        conv.bias = Parameter(linear.bias.data.copy(), requires_grad=linear.bias.requires_grad)
    return conv


def _bn1d_as_bn2d(bn):
    new = BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                      track_running_stats=bn.track_running_stats, dtype=bn.weight.dtype
                      if bn.weight is not None else np.float32)
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias
    if bn.track_running_stats:
        new.register_buffer("running_mean", bn.running_mean)
        new.register_buffer("running_var", bn.running_var)
    object.__setattr__(new, "training", bn.training)
    return new


def score_map_size(model_input_size, image_size, stride):
    """Cells of the score map along one axis: (image − original) // stride + 1."""
    return (image_size - model_input_size) // stride + 1
