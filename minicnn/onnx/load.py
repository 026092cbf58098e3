"""Load an ONNX graph as a minicnn network: ``load(path) -> OnnxModel`` (a Module).

What becomes what
-----------------
* Floating-point **initializers** become ``Parameter``s: an imported network trains like
  any other (fine-tuning, not only inference). Those a layer reads — a ``Conv``'s weight,
  a ``Gemm``'s matrix, a ``BatchNormalization``'s scale — live in that layer, a minicnn
  ``Conv2d``/``Linear``/``BatchNorm2d`` built from the node's attributes; the others
  (a ``PRelu`` slope, an ``Add``'s constant) are parameters of the graph itself.
* Batch-norm **running statistics** become the ``BatchNorm2d``'s buffers.
* Integer initializers and ``Constant`` nodes stay fixed arrays (shapes, axes, pads, and
  what an exporter marked as not trainable).

``forward`` runs the nodes in the file's order, which ONNX requires to be topological.
Values are Tensors where they carry numbers the network computes, plain NumPy arrays
where they are shapes and indices (``Shape → Gather → Concat → Reshape`` chains, which
real exporters write to flatten a feature map, are evaluated as NumPy on the fly).

Every op has one importer in ``IMPORTERS``: it reads the node's attributes once, at load
time, and returns the function that runs the node. An op without one, a file that is not
ONNX, or a graph that reads a value nothing provides is refused at load time with an
error naming the file.
"""
import builtins
import os
import re

import numpy as np

from minicnn import functional as F
from minicnn import nn
from minicnn.onnx.export import onnx_package
from minicnn.tensor import Tensor


class OnnxLoadError(ValueError):
    """A file that cannot be loaded as a minicnn network, with what is wrong."""


# ============================================================================ values

def as_tensor(value):
    """A float value as a Tensor (constants arrive as NumPy arrays)."""
    return value if isinstance(value, Tensor) else Tensor(np.asarray(value))


def as_array(value):
    """A shape/index value as a NumPy array."""
    return value.numpy() if isinstance(value, Tensor) else np.asarray(value)


def is_array(value):
    return not isinstance(value, Tensor)


def _normalized_axes(axes, ndim):
    return [int(a) % ndim for a in axes]


# ============================================================================ the module

class OnnxModel(nn.Module):
    """An ONNX graph as a minicnn Module: layers as children, nodes run in order.

    ``input_names``/``output_names`` are the graph's; ``forward`` takes one array or
    Tensor per input and returns one Tensor per output (a tuple if several).
    """

    def __init__(self, source="<onnx>"):
        super().__init__()
        self.source = source
        self.input_names, self.output_names = [], []
        self.steps = []                  # (node, input names, output names, run)
        self.constants = {}              # name -> NumPy array (fixed values)
        self.graph_parameters = nn.Module()   # float initializers no layer owns
        self.parameter_by_name = {}      # ONNX initializer name -> Parameter

    def forward(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.source}: the graph takes {len(self.input_names)} inputs "
                             f"({', '.join(self.input_names)}), got {len(inputs)}")
        values = dict(self.constants)
        values.update(self.parameter_by_name)
        values.update((name, as_tensor(x)) for name, x in zip(self.input_names, inputs))
        for node, input_names, output_names, run in self.steps:
            arguments = [values[name] if name else None for name in input_names]
            results = run(*arguments)
            results = results if isinstance(results, (tuple, list)) else (results,)
            for name, result in zip(output_names, results):
                if name:
                    values[name] = result
        outputs = tuple(as_tensor(values[name]) for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self):
        return f"{self.source}: {len(self.steps)} nodes"


# ============================================================================ building

class Builder:
    """What an importer sees at load time: attributes, initializers, the model."""

    def __init__(self, model, graph, opset, onnx):
        self.model, self.opset, self.onnx = model, opset, onnx
        self.arrays = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
        self.claimed = {}                # initializer name -> Parameter (made once)
        self.statistics = set()          # batch-norm running statistics: buffers
        self.layer_count = 0

    # -- initializers -------------------------------------------------------------------
    def is_float_initializer(self, name):
        return name in self.arrays and self.arrays[name].dtype.kind == "f"

    def parameter(self, name, array=None):
        """The Parameter for an initializer (one object however often it is read)."""
        if name not in self.claimed:
            data = self.arrays[name] if array is None else array
            self.claimed[name] = nn.Parameter(np.array(data, copy=True))
        return self.claimed[name]

    def add_layer(self, node, layer):
        """Register ``layer`` as a child named after the node (a valid attribute name)."""
        self.layer_count += 1
        base = re.sub(r"\W", "_", node.name or (node.output[0] if node.output else node.op_type))
        name = f"{node.op_type.lower()}_{base}".strip("_")
        while name in self.model._modules:
            name = f"{name}_{self.layer_count}"
        self.model.add_module(name, layer)
        return layer

    # -- attributes ---------------------------------------------------------------------
    def attributes(self, node):
        helper = self.onnx.helper
        values = {}
        for attribute in node.attribute:
            value = helper.get_attribute_value(attribute)
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, self.onnx.TensorProto):
                value = self.onnx.numpy_helper.to_array(value)
            values[attribute.name] = value
        return values


def load(path):
    """Read the ONNX file at ``path`` and return it as an ``OnnxModel`` (a minicnn Module).

    The model comes back in eval mode. Raises ``OnnxLoadError`` naming the file when it is
    not ONNX (truncated, corrupt, another format), when a node reads a value that no
    initializer, input or earlier node provides, and when a node's op has no importer
    (naming the op, the node and the opset).
    """
    onnx = onnx_package()
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise OnnxLoadError(f"{path}: cannot read the file ({error.strerror})") from None
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as error:                      # protobuf's DecodeError and relatives
        raise OnnxLoadError(f"{path}: not an ONNX model (truncated or corrupt protobuf: "
                            f"{error})") from None
    if not proto.graph.node or not proto.graph.output:
        raise OnnxLoadError(f"{path}: not an ONNX model (expected a graph with nodes and "
                            f"outputs, found {len(proto.graph.node)} nodes and "
                            f"{len(proto.graph.output)} outputs)")
    return from_proto(proto, source=path)


def from_proto(proto, source="<onnx>"):
    """An ``OnnxModel`` from an ``onnx.ModelProto`` already in memory."""
    onnx = onnx_package()
    opset = _default_opset(proto, source)
    graph = proto.graph
    model = OnnxModel(source)
    builder = Builder(model, graph, opset, onnx)
    initializer_names = set(builder.arrays)
    model.input_names = [v.name for v in graph.input if v.name not in initializer_names]
    model.output_names = [v.name for v in graph.output]
    _check_every_value_is_provided(graph, initializer_names, model.input_names, source)

    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise OnnxLoadError(f"{source}: node {node.name!r} uses op {node.op_type!r} of "
                                f"domain {node.domain!r}; minicnn loads the standard domain only")
        importer = IMPORTERS.get(node.op_type)
        if importer is None:
            raise OnnxLoadError(
                f"{source}: node {node.name!r} uses op {node.op_type!r} (opset {opset}), which "
                "minicnn.onnx.load does not support; supported ops: "
                f"{', '.join(sorted(IMPORTERS))}")
        try:
            run = importer(builder, node, builder.attributes(node))
        except OnnxLoadError:
            raise
        except (ValueError, TypeError, KeyError) as error:
            raise OnnxLoadError(f"{source}: node {node.name!r} ({node.op_type}, opset {opset}): "
                                f"{error}") from None
        model.steps.append((node.name, list(node.input), list(node.output), run))

    _place_initializers(model, builder)
    model.eval()
    return model


def _default_opset(proto, source):
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise OnnxLoadError(f"{source}: the model imports no version of the standard ONNX opset")


def _check_every_value_is_provided(graph, initializer_names, input_names, source):
    """Each node may read only initializers, graph inputs and outputs of earlier nodes."""
    known = set(initializer_names) | set(input_names) | {""}
    for node in graph.node:
        for name in node.input:
            if name not in known:
                raise OnnxLoadError(
                    f"{source}: node {node.name!r} ({node.op_type}) reads {name!r}, which no "
                    "initializer, graph input or earlier node provides (a missing initializer, "
                    "or nodes out of topological order)")
        known.update(node.output)
    for output in graph.output:
        if output.name not in known:
            raise OnnxLoadError(f"{source}: graph output {output.name!r} is computed by no node")


def _place_initializers(model, builder):
    """Float initializers no layer took become the graph's own Parameters; the rest of the
    initializers (integer shapes, axes) are fixed arrays."""
    owned = {id(p) for _, p in model.named_parameters()}
    for index, (name, array) in enumerate(builder.arrays.items()):
        if name in builder.claimed:
            parameter = builder.claimed[name]
            model.parameter_by_name[name] = parameter
            if id(parameter) not in owned:
                attribute = re.sub(r"\W", "_", name) or f"initializer_{index}"
                while attribute in model.graph_parameters._parameters:
                    attribute += "_"
                setattr(model.graph_parameters, attribute, parameter)
        elif builder.is_float_initializer(name) and name not in builder.statistics:
            attribute = re.sub(r"\W", "_", name) or f"initializer_{index}"
            while attribute in model.graph_parameters._parameters:
                attribute += "_"
            parameter = nn.Parameter(np.array(array, copy=True))
            setattr(model.graph_parameters, attribute, parameter)
            model.parameter_by_name[name] = parameter
        else:
            model.constants[name] = array


# ============================================================================ importers
# Each importer(builder, node, attributes) -> run(*input_values) -> output value(s).

def _pairs_from_pads(pads, node):
    """ONNX [top, left, bottom, right] -> ((top, bottom), (left, right))."""
    if len(pads) != 4:
        raise OnnxLoadError(f"node {node.name!r} ({node.op_type}): minicnn runs 2-D windows "
                            f"(4 pads), got pads {list(pads)}")
    return (pads[0], pads[2]), (pads[1], pads[3])


def _check_2d(node, kernel):
    if len(kernel) != 2:
        raise ValueError(f"{len(kernel)}-D window {list(kernel)}; minicnn runs 2-D "
                         "(N, C, H, W) convolutions and pools only")


def _auto_pads(auto_pad, size, kernel, stride, dilation):
    """The pads ONNX's SAME_UPPER / SAME_LOWER choose for one axis: (before, after)."""
    out = -(-size // stride)
    total = builtins.max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small, large = total // 2, total - total // 2
    return (small, large) if auto_pad == "SAME_UPPER" else (large, small)


def _window_padding(attributes, kernel, strides, dilations, node):
    """A function x -> ((top, bottom), (left, right)) for this node's padding."""
    auto_pad = attributes.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        def pads(x):
            return tuple(_auto_pads(auto_pad, x.shape[2 + axis], kernel[axis], strides[axis],
                                    dilations[axis]) for axis in range(2))
        return pads
    if auto_pad not in ("NOTSET", "VALID", ""):
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    fixed = ((0, 0), (0, 0)) if auto_pad == "VALID" else \
        _pairs_from_pads(attributes.get("pads", [0, 0, 0, 0]), node)
    return lambda x: fixed


def _explicit_pad(x, pads, value=0.0):
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), value)


def _is_symmetric(pads):
    return pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]


def conv(b, node, attributes):
    weight_name = node.input[1]
    group = int(attributes.get("group", 1))
    kernel = list(attributes.get("kernel_shape", []))
    if b.is_float_initializer(weight_name):
        kernel = kernel or list(b.arrays[weight_name].shape[2:])
    if not kernel:
        raise ValueError("a Conv with a computed weight needs kernel_shape")
    _check_2d(node, kernel)
    strides = list(attributes.get("strides", [1, 1]))
    dilations = list(attributes.get("dilations", [1, 1]))
    padding = _window_padding(attributes, kernel, strides, dilations, node)
    fixed = attributes.get("auto_pad", "NOTSET") in ("NOTSET", "VALID", "")
    has_bias = len(node.input) > 2 and node.input[2] != ""
    weight_is_layer = b.is_float_initializer(weight_name) and (
        not has_bias or b.is_float_initializer(node.input[2]))

    if weight_is_layer:
        out_channels, in_per_group = b.arrays[weight_name].shape[:2]
        pads = padding(None) if fixed else ((0, 0), (0, 0))
        inner = (pads[0][0], pads[1][0]) if fixed and _is_symmetric(pads) else (0, 0)
        layer = nn.Conv2d(in_per_group * group, out_channels, kernel, strides, inner,
                          dilations, group, bias=has_bias)
        layer.weight = b.parameter(weight_name)
        if has_bias:
            layer.bias = b.parameter(node.input[2])
        b.add_layer(node, layer)

        def run(x, weight=None, bias=None):
            if inner == (0, 0):
                x = _explicit_pad(x, padding(x))
            return layer(x)
        return run

    def run_functional(x, weight, bias=None):
        return F.conv2d(_explicit_pad(x, padding(x)), as_tensor(weight),
                        None if bias is None else as_tensor(bias), strides, 0, dilations, group)
    return run_functional


def _pool(kind):
    def importer(b, node, attributes):
        kernel = list(attributes["kernel_shape"])
        _check_2d(node, kernel)
        strides = list(attributes.get("strides", [1, 1]))
        dilations = list(attributes.get("dilations", [1, 1]))
        ceil_mode = bool(attributes.get("ceil_mode", 0))
        include_pad = bool(attributes.get("count_include_pad", 0))
        if len(node.output) > 1 and node.output[1]:
            raise ValueError("MaxPool's Indices output is not supported")
        padding = _window_padding(attributes, kernel, strides, dilations, node)

        def pool_layer(inner_padding, count_include_pad):
            if kind == "max":
                return nn.MaxPool2d(kernel, strides, inner_padding, dilations, ceil_mode)
            return nn.AvgPool2d(kernel, strides, inner_padding, ceil_mode, count_include_pad)

        # Pools are layers (nn.MaxPool2d, nn.AvgPool2d), so a loaded network exports again.
        if attributes.get("auto_pad", "NOTSET") in ("NOTSET", "VALID", ""):
            pads = padding(None)
            if (_is_symmetric(pads) and pads[0][0] <= kernel[0] // 2
                    and pads[1][0] <= kernel[1] // 2):
                return b.add_layer(node, pool_layer((pads[0][0], pads[1][0]), include_pad))
        # Padding that differs between sides, is wider than half a window or depends on the
        # input (auto_pad): pad explicitly, then pool without padding.
        unpadded = b.add_layer(node, pool_layer(0, True))

        def run(x):
            pads = padding(x)
            if kind == "max":
                return unpadded(_explicit_pad(x, pads, -np.inf))
            summed = unpadded(_explicit_pad(x, pads))
            if include_pad:
                return summed
            # mean over the real cells only: divide by the share of the window they fill
            ones = Tensor(np.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype))
            return summed / unpadded(_explicit_pad(ones, pads))
        return run
    return importer


def _global_pool(reduce):
    def importer(b, node, attributes):
        return lambda x: reduce(x, axis=tuple(range(2, x.ndim)), keepdims=True)
    return importer


def batch_normalization(b, node, attributes):
    if len(node.output) > 1 and any(node.output[1:]):
        raise ValueError("BatchNormalization in training mode (with its mean/var outputs) "
                         "is not supported; export the model for inference")
    eps = float(attributes.get("epsilon", 1e-5))
    momentum = 1.0 - float(attributes.get("momentum", 0.9))   # ONNX weights the old value
    scale, shift, mean, var = node.input[1:5]
    if all(b.is_float_initializer(n) for n in (scale, shift, mean, var)):
        channels = b.arrays[scale].shape[0]
        layer = nn.BatchNorm2d(channels, eps=eps, momentum=momentum,
                               dtype=b.arrays[scale].dtype)
        layer.weight, layer.bias = b.parameter(scale), b.parameter(shift)
        b.statistics.update((mean, var))            # buffers of the layer, not parameters
        layer.register_buffer("running_mean", np.array(b.arrays[mean], copy=True))
        layer.register_buffer("running_var", np.array(b.arrays[var], copy=True))
        b.add_layer(node, layer)

        def run(x, *unused):
            if x.ndim == 4:
                return layer(x)
            return F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight,
                                layer.bias, training=layer.training, momentum=momentum,
                                eps=eps)
        return run

    def run_functional(x, weight, bias, running_mean, running_var):
        return F.batch_norm(x, as_array(running_mean), as_array(running_var),
                            as_tensor(weight), as_tensor(bias), training=False,
                            momentum=momentum, eps=eps)
    return run_functional


def gemm(b, node, attributes):
    alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))
    trans_a, trans_b = int(attributes.get("transA", 0)), int(attributes.get("transB", 0))
    matrix = node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if (b.is_float_initializer(matrix) and alpha == 1.0 and beta == 1.0 and not trans_a
            and (bias is None or (b.is_float_initializer(bias)
                                  and b.arrays[bias].size == b.arrays[bias].shape[-1]))):
        weight = b.arrays[matrix] if trans_b else b.arrays[matrix].T
        out_features, in_features = weight.shape
        if bias is not None and b.arrays[bias].size != out_features:
            raise ValueError(f"bias of {b.arrays[bias].size} values for {out_features} outputs")
        layer = nn.Linear(in_features, out_features, bias=bias is not None,
                          dtype=weight.dtype)
        layer.weight = b.parameter(matrix, weight if not trans_b else None)
        if bias is not None:
            layer.bias = b.parameter(bias, b.arrays[bias].reshape(-1))
        b.add_layer(node, layer)
        return lambda x, *unused: layer(as_tensor(x))

    def run(a, matrix, c=None):
        a, matrix = as_tensor(a), as_tensor(matrix)
        y = F.matmul(a.T if trans_a else a, matrix.T if trans_b else matrix)
        y = y if alpha == 1.0 else y * alpha
        return y if c is None else y + (as_tensor(c) if beta == 1.0 else as_tensor(c) * beta)
    return run


def lrn(b, node, attributes):
    size = int(attributes["size"])
    if size % 2 == 0:
        raise ValueError(f"LRN size {size}: an even window is centred differently in ONNX "
                         "than in minicnn's LocalResponseNorm; only odd sizes load")
    layer = b.add_layer(node, nn.LocalResponseNorm(
        size, float(attributes.get("alpha", 1e-4)), float(attributes.get("beta", 0.75)),
        float(attributes.get("bias", 1.0)), alpha_over_n=True))
    return layer


def _elementwise(function):
    def importer(b, node, attributes):
        return lambda x: function(as_tensor(x))
    return importer


def leaky_relu(b, node, attributes):
    slope = float(attributes.get("alpha", 0.01))
    return lambda x: F.leaky_relu(as_tensor(x), slope)


def prelu(b, node, attributes):
    slope_name = node.input[1]
    if b.is_float_initializer(slope_name):
        b.parameter(slope_name)          # a trainable slope

    def run(x, slope):
        x, slope = as_tensor(x), as_tensor(slope)
        if b.opset < 7 and slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1]:
            slope = F.reshape(slope, (-1,) + (1,) * (x.ndim - 2))   # one slope per channel
        return F.where(x.data > 0, x, x * slope)
    return run


def _exponential_linear(default_alpha, default_gamma):
    """ELU (γ = 1) and SELU: y = γ·x for x > 0, γ·α·(eˣ − 1) otherwise."""
    def importer(b, node, attributes):
        alpha = float(attributes.get("alpha", default_alpha))
        gamma = float(attributes.get("gamma", default_gamma))

        def run(x):
            x = as_tensor(x)
            negative = (F.exp(F.clip(x, -np.inf, 0.0)) - 1.0) * alpha   # exp of x ≤ 0 only
            y = F.where(x.data > 0, x, negative)
            return y if gamma == 1.0 else y * gamma
        return run
    return importer


def hard_sigmoid(b, node, attributes):
    alpha, beta = float(attributes.get("alpha", 0.2)), float(attributes.get("beta", 0.5))
    return lambda x: F.clip(as_tensor(x) * alpha + beta, 0.0, 1.0)


def clip(b, node, attributes):
    low_attr = attributes.get("min", -np.inf)
    high_attr = attributes.get("max", np.inf)

    def run(x, low=None, high=None):
        low = low_attr if low is None else float(as_array(low))
        high = high_attr if high is None else float(as_array(high))
        return F.clip(as_tensor(x), low, high)
    return run


def _softmax(function):
    def importer(b, node, attributes):
        if b.opset >= 13:
            axis = int(attributes.get("axis", -1))
            return lambda x: function(as_tensor(x), axis)
        axis = int(attributes.get("axis", 1))

        def run(x):                     # before opset 13: over everything from ``axis`` on
            x = as_tensor(x)
            shape = x.shape
            flat = F.reshape(x, (int(np.prod(shape[:axis], dtype=np.int64)), -1))
            return F.reshape(function(flat, -1), shape)
        return run
    return importer


def _binary(function, array_function):
    def importer(b, node, attributes):
        axis = attributes.get("axis")
        legacy_broadcast = attributes.get("broadcast", 0) and axis is not None

        def run(x, y):
            if is_array(x) and is_array(y):
                return array_function(x, y)
            if legacy_broadcast:         # opset < 7: y lines up with x from ``axis`` on
                x_ndim = x.ndim
                y_shape = as_array(y).shape if is_array(y) else y.shape
                start = axis % x_ndim
                new_shape = y_shape + (1,) * (x_ndim - start - len(y_shape))
                y = F.reshape(as_tensor(y), new_shape)
            return function(as_tensor(x), as_tensor(y))
        return run
    return importer


def _variadic(function):
    def importer(b, node, attributes):
        def run(*xs):
            result = as_tensor(xs[0])
            for x in xs[1:]:
                result = function(result, as_tensor(x))
            return result
        return run
    return importer


def matmul(b, node, attributes):
    return lambda a, c: F.matmul(as_tensor(a), as_tensor(c))


def power(b, node, attributes):
    def run(x, exponent):
        exponent = as_array(exponent)
        if exponent.size != 1:
            raise ValueError(f"Pow: minicnn takes a scalar exponent, got shape {exponent.shape}")
        return F.pow(as_tensor(x), float(exponent.reshape(())))
    return run


def _reduction(function, numpy_function):
    def importer(b, node, attributes):
        keepdims = bool(attributes.get("keepdims", 1))
        attribute_axes = attributes.get("axes")

        def run(x, axes=None):
            axes = attribute_axes if axes is None else as_array(axes).tolist()
            axes = tuple(range(x.ndim)) if not axes else tuple(int(a) for a in axes)
            if is_array(x):
                return numpy_function(x, axis=axes, keepdims=keepdims)
            return function(x, axis=axes, keepdims=keepdims)
        return run
    return importer


# -- shape and index plumbing -------------------------------------------------------------

def flatten(b, node, attributes):
    axis = int(attributes.get("axis", 1))

    def run(x):
        axis_here = axis % x.ndim if x.ndim else 0
        rows = int(np.prod(x.shape[:axis_here], dtype=np.int64))
        shape = (rows, -1)
        return x.reshape(shape) if is_array(x) else F.reshape(x, shape)
    return run


def _target_shape(source_shape, shape, allow_zero):
    """ONNX Reshape's rules: 0 copies the input's size there (unless allowzero), -1 fills."""
    target = [int(n) for n in shape]
    if not allow_zero:
        target = [source_shape[i] if n == 0 else n for i, n in enumerate(target)]
    return tuple(target)


def reshape(b, node, attributes):
    allow_zero = bool(attributes.get("allowzero", 0))
    attribute_shape = attributes.get("shape")

    def run(x, shape=None):
        shape = _target_shape(x.shape, attribute_shape if shape is None else as_array(shape),
                              allow_zero)
        return x.reshape(shape) if is_array(x) else F.reshape(x, shape)
    return run


def transpose(b, node, attributes):
    perm = attributes.get("perm")

    def run(x):
        axes = tuple(perm) if perm else tuple(reversed(range(x.ndim)))
        return x.transpose(axes) if is_array(x) else F.transpose(x, axes)
    return run


def concat(b, node, attributes):
    axis = int(attributes["axis"])

    def run(*xs):
        if all(is_array(x) for x in xs):
            return np.concatenate([np.atleast_1d(x) for x in xs], axis=axis)
        return F.concat([as_tensor(x) for x in xs], axis=axis)
    return run


def _axes_from(attributes, given):
    return attributes.get("axes") if given is None else as_array(given).tolist()


def unsqueeze(b, node, attributes):
    def run(x, axes=None):
        axes = _axes_from(attributes, axes)
        rank = x.ndim + len(axes)
        axes = sorted(a % rank for a in axes)
        shape = list(x.shape)
        for a in axes:
            shape.insert(a, 1)
        return np.reshape(x, shape) if is_array(x) else F.reshape(x, tuple(shape))
    return run


def squeeze(b, node, attributes):
    def run(x, axes=None):
        axes = _axes_from(attributes, axes)
        axes = ([i for i, n in enumerate(x.shape) if n == 1] if not axes
                else _normalized_axes(axes, x.ndim))
        shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
        return np.reshape(x, shape) if is_array(x) else F.reshape(x, shape)
    return run


def shape(b, node, attributes):
    start, end = attributes.get("start", 0), attributes.get("end")

    def run(x):
        return np.array(x.shape[start:end], dtype=np.int64)
    return run


def gather(b, node, attributes):
    axis = int(attributes.get("axis", 0))

    def run(x, indices):
        indices = as_array(indices).astype(np.int64)
        if is_array(x):
            return np.take(x, indices, axis=axis)
        index = (slice(None),) * (axis % x.ndim) + (indices,)
        return F.getitem(x, index)
    return run


def constant(b, node, attributes):
    if "value" in attributes:
        value = np.asarray(attributes["value"])
    elif "value_float" in attributes:
        value = np.asarray(attributes["value_float"], dtype=np.float32)
    elif "value_floats" in attributes:
        value = np.asarray(attributes["value_floats"], dtype=np.float32)
    elif "value_int" in attributes:
        value = np.asarray(attributes["value_int"], dtype=np.int64)
    elif "value_ints" in attributes:
        value = np.asarray(attributes["value_ints"], dtype=np.int64)
    else:
        raise ValueError(f"Constant with attributes {sorted(attributes)}: expected value, "
                         "value_float(s) or value_int(s)")
    return lambda: value


def constant_of_shape(b, node, attributes):
    fill = np.asarray(attributes.get("value", np.zeros(1, np.float32))).reshape(-1)

    def run(shape):
        return np.full(tuple(as_array(shape).astype(np.int64)), fill[0], dtype=fill.dtype)
    return run


def resize(b, node, attributes):
    """Nearest-neighbour upsampling by whole factors (what the exporter writes for an
    adaptive pool whose output is a multiple of its input)."""
    mode = attributes.get("mode", "nearest")
    transform = attributes.get("coordinate_transformation_mode", "half_pixel")
    if mode != "nearest" or transform != "asymmetric" or \
            attributes.get("nearest_mode", "round_prefer_floor") != "floor":
        raise ValueError(f"Resize mode={mode!r}, coordinate_transformation_mode="
                         f"{transform!r}: only nearest/asymmetric/floor upsampling loads")

    def run(x, roi=None, scales=None, sizes=None):
        if sizes is not None and as_array(sizes).size:
            factors = [n // m for n, m in zip(as_array(sizes).tolist(), x.shape)]
        else:
            factors = as_array(scales).tolist()
        if any(f < 1 or f != int(f) for f in factors) or factors[:2] != [1, 1]:
            raise ValueError(f"Resize by {factors}: only whole spatial upsampling factors load")
        fh, fw = int(factors[2]), int(factors[3])
        n, c, h, w = x.shape
        x = F.reshape(as_tensor(x), (n, c, h, 1, w, 1))
        repeated = x * Tensor(np.ones((1, 1, 1, fh, 1, fw), dtype=x.dtype))
        return F.reshape(repeated, (n, c, h * fh, w * fw))
    return run


def identity(b, node, attributes):
    return lambda x, *unused: x


def pad(b, node, attributes):
    mode = attributes.get("mode", "constant")
    if mode != "constant":
        raise ValueError(f"Pad mode {mode!r}: minicnn pads with a constant only")

    def run(x, pads=None, value=None, axes=None):
        pads = as_array(pads).tolist() if pads is not None else list(attributes["pads"])
        fill = float(as_array(value)) if value is not None else float(attributes.get("value", 0.0))
        axes = (list(range(x.ndim)) if axes is None
                else _normalized_axes(as_array(axes).tolist(), x.ndim))
        width = [(0, 0)] * x.ndim
        for i, axis in enumerate(axes):
            width[axis] = (int(pads[i]), int(pads[i + len(axes)]))
        if any(before < 0 or after < 0 for before, after in width):
            raise ValueError(f"Pad with negative pads {pads} (cropping) is not supported")
        return F.pad(as_tensor(x), width, fill)
    return run


def slice_(b, node, attributes):
    def run(x, starts=None, ends=None, axes=None, steps=None):
        if starts is None:                                  # opset < 10: attributes
            starts, ends = attributes["starts"], attributes["ends"]
            axes = attributes.get("axes")
        starts, ends = as_array(starts).tolist(), as_array(ends).tolist()
        axes = list(range(len(starts))) if axes is None else as_array(axes).tolist()
        steps = [1] * len(starts) if steps is None else as_array(steps).tolist()
        index = [slice(None)] * x.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            size = x.shape[axis]
            end = None if (step < 0 and end < -size) else builtins.min(end, size)
            index[axis % x.ndim] = slice(builtins.max(start, -size), end, step)
        return x[tuple(index)] if is_array(x) else F.getitem(x, tuple(index))
    return run


def split(b, node, attributes):
    axis = int(attributes.get("axis", 0))

    def run(x, sizes=None):
        sizes = (as_array(sizes).tolist() if sizes is not None
                 else attributes.get("split") or len(node.output))
        pieces = F.split(as_tensor(x), sizes, axis)
        return pieces if isinstance(pieces, tuple) else (pieces,)
    return run


def cast(b, node, attributes):
    dtype = b.onnx.helper.tensor_dtype_to_np_dtype(attributes["to"])

    def run(x):
        if is_array(x):
            return as_array(x).astype(dtype)
        return F.cast(x, dtype) if dtype.kind == "f" else x.numpy().astype(dtype)
    return run


def dropout(b, node, attributes):
    if len(node.output) > 1 and node.output[1]:
        def run_with_mask(x, *unused):
            return x, np.ones(x.shape, dtype=bool)
        return run_with_mask
    return lambda x, *unused: x


# op type → importer. Inference only: Dropout is the identity, BatchNormalization uses
# the running statistics.
IMPORTERS = {
    # layers with weights
    "Conv": conv, "Gemm": gemm, "BatchNormalization": batch_normalization, "LRN": lrn,
    "MaxPool": _pool("max"), "AveragePool": _pool("average"),
    "GlobalAveragePool": _global_pool(F.mean), "GlobalMaxPool": _global_pool(F.max),
    # activations
    "Relu": _elementwise(F.relu), "Sigmoid": _elementwise(F.sigmoid),
    "Tanh": _elementwise(F.tanh), "HardSwish": _elementwise(F.hard_swish),
    "HardSigmoid": hard_sigmoid, "LeakyRelu": leaky_relu, "PRelu": prelu, "Clip": clip,
    "Softmax": _softmax(F.softmax), "LogSoftmax": _softmax(F.log_softmax),
    "Exp": _elementwise(F.exp), "Log": _elementwise(F.log), "Sqrt": _elementwise(F.sqrt),
    "Neg": _elementwise(F.neg), "Elu": _exponential_linear(1.0, 1.0),
    "Selu": _exponential_linear(1.6732632423543772, 1.0507009873554805),
    # arithmetic
    "Add": _binary(F.add, np.add), "Sub": _binary(F.sub, np.subtract),
    "Mul": _binary(F.mul, np.multiply), "Div": _binary(F.div, np.divide),
    "Pow": power, "MatMul": matmul,
    "Sum": _variadic(F.add), "Max": _variadic(F.maximum),
    "Min": _variadic(lambda a, b: F.neg(F.maximum(F.neg(a), F.neg(b)))),
    "ReduceSum": _reduction(F.sum, np.sum), "ReduceMean": _reduction(F.mean, np.mean),
    "ReduceMax": _reduction(F.max, np.max),
    # shapes and plumbing
    "Flatten": flatten, "Reshape": reshape, "Transpose": transpose, "Concat": concat,
    "Unsqueeze": unsqueeze, "Squeeze": squeeze, "Shape": shape, "Gather": gather,
    "Constant": constant, "ConstantOfShape": constant_of_shape, "Identity": identity,
    "Pad": pad, "Slice": slice_, "Resize": resize, "Split": split, "Cast": cast, "Dropout": dropout,
}
