"""Export a minicnn network to ONNX: run it once, write down what ran.

How
---
``export`` runs one eval-mode forward pass with the engine's two observer hooks switched
on (``minicnn.nn.module.observe_module_calls`` and ``minicnn.tensor.observe_functions``)
and writes an ONNX node for everything it sees, in the order it ran — which is already
a topological order, as ONNX requires.

* **Layers** are written from their Module's public settings: a ``Conv2d`` becomes one
  ``Conv`` node from its ``stride``, ``padding``, ``dilation``, ``groups`` and its
  ``weight``/``bias`` Parameters; a ``BatchNorm2d`` one ``BatchNormalization`` from its
  ``eps`` and buffers. What the layer does inside (im2col, kernels) is not looked at: the
  operations it calls are skipped while a layer with a converter runs.
* **Operations between layers** — the residual addition, the Inception concatenation,
  a flatten written as a reshape, an SE gate's multiplication — are written from the
  ``Function`` that ran (``minicnn.functional.math``, ``shape``, ``activation``).
* A module without a converter is looked into: its children and operations are written
  one by one. An operation with no converter stops the export with an error that names
  the layer it ran in.

Tensors and names. Every Tensor seen gets an ONNX name: the graph input is ``input``, a
Parameter is its dotted name in ``model.named_parameters()`` (an initializer, so a loader
can train it again), a fixed array the forward made up (LeNet-5's RBF codes, a ``2.0``)
is a ``Constant`` node, and everything else is named after the layer that made it.

The batch dimension is dynamic: a reshape whose first target size is the batch size
keeps ONNX's "copy this dimension" 0 there, so the file runs on any batch size.
"""
import numpy as np

from minicnn import nn
from minicnn.backend import to_device
from minicnn.functional import activation as A, math as M, shape as S
from minicnn.nn.module import observe_module_calls
from minicnn.tensor import Tensor, no_grad, observe_functions

TRACE_BATCH = 2          # batch used for the traced pass: 1 would hide batch-size reshapes
LOWEST_OPSET = 14        # HardSwish, and Reshape/Clip/Pad/ReduceSum with their inputs


def onnx_package():
    """The ``onnx`` module, or an ImportError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise ImportError("minicnn.onnx needs the onnx package: pip install minicnn[onnx] "
                          "(or pip install onnx)") from None
    return onnx


class ExportError(ValueError):
    """A model, or a layer in it, that cannot be written as ONNX."""


# ============================================================================ the writer

class GraphWriter:
    """Collects nodes and initializers and keeps the tensor → ONNX-name table."""

    def __init__(self, model, opset):
        self.onnx = onnx_package()
        self.opset = opset
        self.nodes, self.initializers = [], {}
        self.names = {}                 # id(Tensor) -> ONNX name
        self.alive = []                 # every Tensor named, so no id is ever reused
        self.used_names = set()
        self.parameter_names = {id(p): n for n, p in model.named_parameters()}

    # -- names --------------------------------------------------------------------------
    def fresh(self, hint):
        """A name not used yet, built from ``hint`` (a layer name, an op type)."""
        hint = hint or "value"
        name, count = hint, 1
        while name in self.used_names:
            count += 1
            name = f"{hint}_{count}"
        self.used_names.add(name)
        return name

    def bind(self, tensor, name):
        self.names[id(tensor)] = name
        self.alive.append(tensor)

    def name_of(self, value, hint="constant"):
        """The ONNX name of a traced Tensor, a Parameter, or a fixed array or number."""
        if isinstance(value, Tensor) and id(value) in self.names:
            return self.names[id(value)]
        if isinstance(value, nn.Parameter):
            name = self.parameter_names.get(id(value)) or self.fresh("parameter")
            self.initializer(name, value.data)
            self.bind(value, name)
            return name
        array = value.data if isinstance(value, Tensor) else value
        name = self.constant(np.asarray(to_device(array, "cpu")), hint)
        if isinstance(value, Tensor):
            self.bind(value, name)
        return name

    # -- graph pieces -------------------------------------------------------------------
    def initializer(self, name, array):
        """A named array in the file: trainable weights and batch-norm statistics."""
        if name not in self.initializers:
            self.used_names.add(name)
            self.initializers[name] = self.onnx.numpy_helper.from_array(
                np.asarray(to_device(array, "cpu"), order="C"), name)
        return name

    def constant(self, array, hint="constant"):
        """A fixed array as a ``Constant`` node: part of the computation, not a weight."""
        name = self.fresh(hint)
        tensor = self.onnx.numpy_helper.from_array(np.asarray(array, order="C"), name)
        self.nodes.append(self.onnx.helper.make_node("Constant", [], [name], name=name,
                                                     value=tensor))
        return name

    def ints(self, values, hint):
        return self.constant(np.asarray(values, dtype=np.int64), hint)

    def node(self, op_type, inputs, hint, outputs=1, **attributes):
        """Append one node; returns its output name (or names, for several outputs)."""
        names = [self.fresh(hint if outputs == 1 else f"{hint}_{i}") for i in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(
            op_type, list(inputs), names, name=self.fresh(f"{hint}/{op_type}"), **attributes))
        return names[0] if outputs == 1 else names

    def scalar(self, value, like, hint="scalar"):
        """A 0-d constant of the traced tensor's dtype (so float64 nets stay float64)."""
        return self.constant(np.asarray(value, dtype=like.dtype), hint)


# ============================================================================ layers

def _pads(padding):
    """minicnn's symmetric (ph, pw) as ONNX's [top, left, bottom, right]."""
    ph, pw = padding
    return [ph, pw, ph, pw]


def conv2d(w, layer, name, x, inputs):
    operands = [x, w.name_of(layer.weight)]
    if layer.bias is not None:
        operands.append(w.name_of(layer.bias))
    return w.node("Conv", operands, name, kernel_shape=list(layer.kernel_size),
                  strides=list(layer.stride), pads=_pads(layer.padding),
                  dilations=list(layer.dilation), group=layer.groups)


def batch_norm(w, layer, name, x, inputs):
    if layer.running_mean is None:
        raise ExportError(f"layer {name!r} ({type(layer).__name__}): batch norm without "
                          "running statistics normalizes with the batch's own statistics "
                          "even in eval mode; ONNX BatchNormalization needs running ones")
    like = inputs[0]
    scale = (w.name_of(layer.weight) if layer.weight is not None
             else w.constant(np.ones(layer.num_features, like.dtype), f"{name}.weight"))
    shift = (w.name_of(layer.bias) if layer.bias is not None
             else w.constant(np.zeros(layer.num_features, like.dtype), f"{name}.bias"))
    mean = w.initializer(f"{name}.running_mean", layer.running_mean)
    var = w.initializer(f"{name}.running_var", layer.running_var)
    return w.node("BatchNormalization", [x, scale, shift, mean, var], name,
                  epsilon=float(layer.eps))


def linear(w, layer, name, x, inputs):
    weight = w.name_of(layer.weight)
    if inputs[0].ndim == 2:                       # Gemm: y = x Wᵀ + b in one node
        operands = [x, weight] + ([w.name_of(layer.bias)] if layer.bias is not None else [])
        return w.node("Gemm", operands, name, transB=1)
    y = w.node("MatMul", [x, w.node("Transpose", [weight], f"{name}.weight_t", perm=[1, 0])],
               name)
    return y if layer.bias is None else w.node("Add", [y, w.name_of(layer.bias)], name)


def _pool(w, op_type, layer, name, x, inputs, **attributes):
    """A MaxPool/AveragePool node with the layer's window, then, in ceil_mode, a Slice
    where ONNX would keep a window that ours drops.

    ceil_mode rounds the number of windows up; ours (and PyTorch's) then drops a last window
    that would start inside the right/bottom padding, while ONNX's shape inference keeps it
    (onnxruntime drops it, warning that the shape differs from the model's). The windows
    before it are the same either way, so the Slice gives our shape under both readings.
    """
    y = w.node(op_type, [x], name, kernel_shape=list(layer.kernel_size),
               strides=list(layer.stride), pads=_pads(layer.padding),
               ceil_mode=int(layer.ceil_mode), **attributes)
    if not layer.ceil_mode:
        return y
    dilation = getattr(layer, "dilation", (1, 1))
    ours, theirs = [], []
    for axis in range(2):
        size, kernel = inputs[0].shape[2 + axis], layer.kernel_size[axis]
        stride, padding = layer.stride[axis], layer.padding[axis]
        windows = -(-(size + 2 * padding - dilation[axis] * (kernel - 1) - 1) // stride) + 1
        theirs.append(windows)
        ours.append(windows - 1 if (windows - 1) * stride >= size + padding else windows)
    if ours == theirs:
        return y
    pooled = w.fresh(f"{name}.ceil")
    w.nodes[-1].output[0] = pooled               # the pool writes here; the Slice gives y
    w.nodes.append(w.onnx.helper.make_node(
        "Slice", [pooled, w.ints([0, 0], f"{name}.starts"), w.ints(ours, f"{name}.ends"),
                  w.ints([2, 3], f"{name}.axes")], [y], name=w.fresh(f"{name}/Slice")))
    return y


def max_pool(w, layer, name, x, inputs):
    return _pool(w, "MaxPool", layer, name, x, inputs, dilations=list(layer.dilation))


def avg_pool(w, layer, name, x, inputs):
    return _pool(w, "AveragePool", layer, name, x, inputs,
                 count_include_pad=int(layer.count_include_pad))


def _adaptive_pool(op_type, global_op_type):
    """Adaptive pooling is a fixed pooling once the input size is known (ONNX has none):

    * a 1×1 output is the global pool;
    * an input that divides into the output: windows of in/out cells, stride in/out;
    * an output that is a multiple of the input: every window is one cell, so the
      pooling repeats each cell (a nearest-neighbour Resize; AlexNet's 6×6 pool on a
      small input's 1×1 map).
    """
    def convert(w, layer, name, x, inputs):
        height, width = inputs[0].shape[2:]
        out_h, out_w = layer.output_size
        if (out_h, out_w) == (1, 1):
            return w.node(global_op_type, [x], name)
        if height % out_h == 0 and width % out_w == 0:
            kernel = [height // out_h, width // out_w]
            return w.node(op_type, [x], name, kernel_shape=kernel, strides=kernel)
        if out_h % height == 0 and out_w % width == 0:
            scales = np.array([1, 1, out_h // height, out_w // width], dtype=np.float32)
            return w.node("Resize", [x, "", w.constant(scales, f"{name}.scales")], name,
                          mode="nearest", coordinate_transformation_mode="asymmetric",
                          nearest_mode="floor")
        raise ExportError(
            f"layer {name!r} ({type(layer).__name__}{layer.output_size}): a {height}×{width} "
            f"input gives windows of unequal sizes, and ONNX has no adaptive pooling; "
            "export at an input size that divides into the output size or is a divisor of it")
    return convert


def global_avg_pool(w, layer, name, x, inputs):
    return w.node("GlobalAveragePool", [x], name)


def local_response_norm(w, layer, name, x, inputs):
    return _lrn_node(w, layer, name, x)


def _lrn_node(w, layer, name, x):
    if layer.size % 2 == 0:
        # ours sums channels [c - n/2, c + n/2 - 1] (PyTorch's); ONNX [c - n/2 + 1, c + n/2]
        raise ExportError(f"layer {name!r} (LocalResponseNorm size={layer.size}): an even "
                          "window is centred differently in ONNX's LRN; only odd sizes export")
    alpha = layer.alpha if layer.alpha_over_n else layer.alpha * layer.size   # ONNX: α/n
    return w.node("LRN", [x], name, size=layer.size, alpha=float(alpha),
                  beta=float(layer.beta), bias=float(layer.k))


def flatten(w, layer, name, x, inputs):
    if layer.start_dim == 1:
        return w.node("Flatten", [x], name, axis=1)
    kept = [0] * layer.start_dim                  # ONNX Reshape: 0 copies the input's size
    return w.node("Reshape", [x, w.ints(kept + [-1], f"{name}.shape")], name)


def zero_pad(w, layer, name, x, inputs):
    left, right, top, bottom = layer.padding
    return w.node("Pad", [x, w.ints([0, 0, top, left, 0, 0, bottom, right], f"{name}.pads")],
                  name)


def passthrough(w, layer, name, x, inputs):
    """Identity, and dropout of every kind: the identity in inference."""
    return x


def _unary(op_type, **attributes):
    def convert(w, layer, name, x, inputs):
        return w.node(op_type, [x], name, **attributes)
    return convert


def relu6(w, layer, name, x, inputs):
    return _clip(w, x, inputs[0], 0.0, 6.0, name)


def _clip(w, x, like, low, high, name):
    return w.node("Clip", [x, w.scalar(low, like, f"{name}.min"),
                           w.scalar(high, like, f"{name}.max")], name)


def leaky_relu(w, layer, name, x, inputs):
    return w.node("LeakyRelu", [x], name, alpha=float(layer.negative_slope))


def scaled_tanh(w, layer, name, x, inputs):
    return _scaled_tanh(w, x, inputs[0], name)


def _scaled_tanh(w, x, like, name):
    """LeCun's A·tanh(S·x)."""
    inner = w.node("Mul", [x, w.scalar(A.ScaledTanh.S, like, f"{name}.S")], f"{name}.scaled")
    return w.node("Mul", [w.node("Tanh", [inner], f"{name}.tanh"),
                          w.scalar(A.ScaledTanh.A, like, f"{name}.A")], name)


def silu(w, layer, name, x, inputs):
    return _silu(w, x, name)


def _silu(w, x, name):
    # ONNX 17 has no SiLU/Swish: x · σ(x), the definition itself
    return w.node("Mul", [x, w.node("Sigmoid", [x], f"{name}.gate")], name)


def softmax(w, layer, name, x, inputs):
    return w.node("Softmax", [x], name, axis=int(layer.axis))


# -- layers of the architecture files ---------------------------------------------------

def lenet_subsampling(w, layer, name, x, inputs):
    """LeNet-5's S-layer: coefficient · (2×2 window sum) + bias, per map."""
    like = inputs[0]
    window_mean = w.node("AveragePool", [x], f"{name}.pool", kernel_shape=[2, 2],
                         strides=[2, 2])
    window_sum = w.node("Mul", [window_mean, w.scalar(4.0, like, f"{name}.four")],
                        f"{name}.sum")
    coefficient = w.node("Reshape", [w.name_of(layer.weight),
                                     w.ints([1, -1, 1, 1], f"{name}.shape")],
                         f"{name}.coefficient")
    bias = w.node("Reshape", [w.name_of(layer.bias), w.ints([1, -1, 1, 1], f"{name}.shape")],
                  f"{name}.bias_map")
    return w.node("Add", [w.node("Mul", [window_sum, coefficient], f"{name}.scaled"), bias],
                  name)


def lenet_partial_conv(w, layer, name, x, inputs):
    """LeNet-5's C3: the dense weight is assembled in the graph from the connected kernels
    (``selection @ kernels``), so the file keeps the paper's 1,516 parameters."""
    k = layer.kernel_size
    fixed = to_device(layer.selection, "cpu").astype(layer.kernels.dtype)   # not a weight
    selection = w.constant(fixed, f"{name}.selection")
    dense = w.node("MatMul", [selection, w.name_of(layer.kernels)], f"{name}.dense")
    weight = w.node("Reshape", [dense, w.ints([layer.out_channels, layer.in_channels, k, k],
                                             f"{name}.weight_shape")], f"{name}.weight")
    return w.node("Conv", [x, weight, w.name_of(layer.bias)], name, kernel_shape=[k, k])


def alexnet_tower_lrn(w, layer, name, x, inputs):
    """LRN inside each tower: (N, C, H, W) seen as (N·towers, C/towers, H, W)."""
    if layer.towers == 1:
        return _lrn_node(w, layer, name, x)
    _, channels, height, width = inputs[0].shape
    per_tower = w.node("Reshape", [x, w.ints([-1, channels // layer.towers, height, width],
                                             f"{name}.tower_shape")], f"{name}.towers")
    normalized = _lrn_node(w, layer, f"{name}.lrn", per_tower)
    return w.node("Reshape", [normalized, w.ints([-1, channels, height, width],
                                                 f"{name}.shape")], name)


# Layer → converter(writer, layer, layer_name, input_name, input_tensors) -> output name.
# A subclass uses its base's converter only if it keeps the base's forward.
LAYER_CONVERTERS = {
    nn.Conv2d: conv2d,
    nn.BatchNorm2d: batch_norm,
    nn.BatchNorm1d: batch_norm,
    nn.Linear: linear,
    nn.MaxPool2d: max_pool,
    nn.AvgPool2d: avg_pool,
    nn.AdaptiveAvgPool2d: _adaptive_pool("AveragePool", "GlobalAveragePool"),
    nn.AdaptiveMaxPool2d: _adaptive_pool("MaxPool", "GlobalMaxPool"),
    nn.GlobalAvgPool2d: global_avg_pool,
    nn.LocalResponseNorm: local_response_norm,
    nn.Flatten: flatten,
    nn.ZeroPad2d: zero_pad,
    nn.Identity: passthrough,
    nn.Dropout: passthrough,
    nn.Dropout2d: passthrough,
    nn.DropPath: passthrough,
    nn.ReLU: _unary("Relu"),
    nn.ReLU6: relu6,
    nn.LeakyReLU: leaky_relu,
    nn.Sigmoid: _unary("Sigmoid"),
    nn.Tanh: _unary("Tanh"),
    nn.ScaledTanh: scaled_tanh,
    nn.SiLU: silu,
    nn.HardSigmoid: _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    nn.HardSwish: _unary("HardSwish"),
    nn.Softmax: softmax,
}

# Layers defined in the architecture files, by "module.Class" (minicnn does not import the
# zoo): each does its own arithmetic (a dense weight assembled from kernels, a zero-padded
# shortcut), so it gets its own converter.
ARCHITECTURE_LAYER_CONVERTERS = {
    "architectures.lenet5.Subsampling": lenet_subsampling,
    "architectures.lenet5.PartialConv2d": lenet_partial_conv,
    "architectures.alexnet.TowerLocalResponseNorm": alexnet_tower_lrn,
}


def layer_converter(module):
    """The converter for ``module``, or None: then the export looks inside it."""
    cls = type(module)
    by_name = ARCHITECTURE_LAYER_CONVERTERS.get(f"{cls.__module__}.{cls.__qualname__}")
    if by_name is not None:
        return by_name
    for base in cls.__mro__:
        if base in LAYER_CONVERTERS and cls.forward is base.forward:
            return LAYER_CONVERTERS[base]
    return None


# ============================================================================ operations

def _binary(op_type):
    def convert(w, function, names, inputs, hint):
        return w.node(op_type, names, hint)
    return convert


def _elementwise(op_type, **attributes):
    def convert(w, function, names, inputs, hint):
        return w.node(op_type, names[:1], hint, **attributes)
    return convert


def power(w, function, names, inputs, hint):
    return w.node("Pow", [names[0], w.scalar(function.exponent, inputs[0], f"{hint}.exponent")],
                  hint)


def clip(w, function, names, inputs, hint):
    return _clip(w, names[0], inputs[0], function.low, function.high, hint)


def relu6_op(w, function, names, inputs, hint):
    return _clip(w, names[0], inputs[0], 0.0, 6.0, hint)


def scaled_tanh_op(w, function, names, inputs, hint):
    return _scaled_tanh(w, names[0], inputs[0], hint)


def silu_op(w, function, names, inputs, hint):
    return _silu(w, names[0], hint)


def linear_op(w, function, names, inputs, hint):
    if inputs[0].ndim == 2:
        return w.node("Gemm", names, hint, transB=1)
    y = w.node("MatMul", [names[0], w.node("Transpose", [names[1]], f"{hint}.weight_t",
                                           perm=[1, 0])], hint)
    return y if len(names) == 2 else w.node("Add", [y, names[2]], hint)


def _reduction(op_type):
    """Sum/Mean/Max over axes. ReduceSum takes its axes as an input since opset 13; the
    others since opset 18 (an attribute before)."""
    def convert(w, function, names, inputs, hint):
        axes = list(function.axes)
        keepdims = int(function.keepdims)
        if op_type == "ReduceSum" or w.opset >= 18:
            return w.node(op_type, [names[0], w.ints(axes, f"{hint}.axes")], hint,
                          keepdims=keepdims)
        return w.node(op_type, [names[0]], hint, axes=axes, keepdims=keepdims)
    return convert


def reshape(w, function, names, inputs, hint):
    source = inputs[0]
    target = [int(n) for n in function.shape]
    if source.ndim and target and target[0] == source.shape[0]:
        target[0] = 0                    # the batch dimension: copied, so it stays dynamic
    return w.node("Reshape", [names[0], w.ints(target, f"{hint}.shape")], hint)


def transpose(w, function, names, inputs, hint):
    axes = function.axes or tuple(reversed(range(inputs[0].ndim)))
    return w.node("Transpose", names, hint, perm=[a % inputs[0].ndim for a in axes])


def concat(w, function, names, inputs, hint):
    return w.node("Concat", names, hint, axis=int(function.axis))


def split(w, function, names, inputs, hint):
    return w.node("Split", [names[0], w.ints(function.sizes, f"{hint}.split")], hint,
                  outputs=len(function.sizes), axis=int(function.axis))


def pad(w, function, names, inputs, hint):
    befores = [int(b) for b, _ in function.pad_width]
    afters = [int(a) for _, a in function.pad_width]
    value = w.scalar(function.value, inputs[0], f"{hint}.value")
    return w.node("Pad", [names[0], w.ints(befores + afters, f"{hint}.pads"), value], hint)


def getitem(w, function, names, inputs, hint):
    """Basic slicing (``x[:, :c]``, ``x[..., ::2]``) as Slice, integer picks as a Squeeze."""
    index = function.index if isinstance(function.index, tuple) else (function.index,)
    ndim = inputs[0].ndim
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1:]
    starts, ends, axes, steps, squeezed = [], [], [], [], []
    for axis, item in enumerate(index):
        if isinstance(item, (int, np.integer)):        # x[:, 3]: a one-wide slice, squeezed
            squeezed.append(axis)
            item = slice(int(item), int(item) + 1 if int(item) != -1 else None)
        if not isinstance(item, slice):
            raise ExportError(f"{hint}: only basic indexing (ints and slices) exports, "
                              f"got index {function.index!r}")
        if item == slice(None):
            continue
        start, stop, step = item.indices(inputs[0].shape[axis])
        starts.append(start)
        ends.append(stop if stop >= 0 else np.iinfo(np.int64).min)   # stepping down to -1
        axes.append(axis)
        steps.append(step)
    y = names[0]
    if axes:
        y = w.node("Slice", [y, w.ints(starts, f"{hint}.starts"), w.ints(ends, f"{hint}.ends"),
                             w.ints(axes, f"{hint}.axes"), w.ints(steps, f"{hint}.steps")],
                   hint)
    if squeezed:
        y = w.node("Squeeze", [y, w.ints(squeezed, f"{hint}.axes")], hint)
    return y if y != names[0] else w.node("Identity", [y], hint)


def cast(w, function, names, inputs, hint):
    element_type = w.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(function.dtype))
    return w.node("Cast", names, hint, to=element_type)


def concat_into_buffer(w, function, names, inputs, hint):
    """DenseNet's in-place concatenation: [prefix, new] along channels (or the block input
    itself, when it is called with one array)."""
    if len(names) == 1:
        return w.node("Identity", names, hint)
    return w.node("Concat", names, hint, axis=1)


def zero_pad_subsample(w, function, names, inputs, hint):
    """ResNet's option-A shortcut: subsample by the stride, then zero channels appended."""
    s, extra = function.stride, function.out_channels - inputs[0].shape[1]
    subsampled = w.node("Slice", [names[0], w.ints([0, 0], f"{hint}.starts"),
                                  w.ints([np.iinfo(np.int64).max] * 2, f"{hint}.ends"),
                                  w.ints([2, 3], f"{hint}.axes"), w.ints([s, s], f"{hint}.steps")],
                        f"{hint}.subsampled")
    return w.node("Pad", [subsampled, w.ints([0, 0, 0, 0, 0, extra, 0, 0], f"{hint}.pads")],
                  hint)


def _with_attribute(op_type, attribute, onnx_name, cast_to=float):
    def convert(w, function, names, inputs, hint):
        value = cast_to(getattr(function, attribute))
        return w.node(op_type, names[:1], hint, **{onnx_name: value})
    return convert


# Function type → converter(writer, function, input_names, input_tensors, hint) -> name(s)
OPERATION_CONVERTERS = {
    M.Add: _binary("Add"), M.Sub: _binary("Sub"), M.Mul: _binary("Mul"),
    M.Div: _binary("Div"), M.Maximum: _binary("Max"), M.MatMul: _binary("MatMul"),
    M.Linear: linear_op,
    M.Neg: _elementwise("Neg"), M.Exp: _elementwise("Exp"), M.Log: _elementwise("Log"),
    M.Sqrt: _elementwise("Sqrt"), M.Pow: power, M.Clip: clip, M.Cast: cast,
    M.Sum: _reduction("ReduceSum"), M.Mean: _reduction("ReduceMean"),
    M.Max: _reduction("ReduceMax"),
    S.Reshape: reshape, S.Transpose: transpose, S.Concat: concat, S.Split: split,
    S.Pad: pad, S.GetItem: getitem,
    S.ConcatIntoBuffer: concat_into_buffer, S.ZeroPadSubsample: zero_pad_subsample,
    A.ReLU: _elementwise("Relu"), A.ReLU6: relu6_op, A.Sigmoid: _elementwise("Sigmoid"),
    A.Tanh: _elementwise("Tanh"), A.ScaledTanh: scaled_tanh_op, A.SiLU: silu_op,
    A.HardSigmoid: _elementwise("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    A.HardSwish: _elementwise("HardSwish"),
    A.LeakyReLU: _with_attribute("LeakyRelu", "slope", "alpha"),
    A.Softmax: _with_attribute("Softmax", "axis", "axis", int),
    A.LogSoftmax: _with_attribute("LogSoftmax", "axis", "axis", int),
}


def operation_converter(function):
    return OPERATION_CONVERTERS.get(type(function))


# ============================================================================ export

def _check_input_shape(input_shape):
    if not (isinstance(input_shape, (tuple, list)) and len(input_shape) >= 1
            and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                    for n in input_shape)):
        raise ValueError(f"minicnn.onnx.export: input_shape must be the shape of one sample "
                         f"without the batch, e.g. (C, H, W) = (3, 224, 224), got "
                         f"{input_shape!r}")
    return tuple(int(n) for n in input_shape)


def _check_opset(opset):
    onnx = onnx_package()
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not LOWEST_OPSET <= opset <= newest:
        raise ValueError(f"minicnn.onnx.export: opset must be an int from {LOWEST_OPSET} to "
                         f"{newest} (the onnx package's newest), got {opset!r}")


def _parameter_dtype(model):
    first = next(iter(model.parameters()), None)
    return np.float32 if first is None else first.dtype


def to_onnx(model, input_shape, opset=17):
    """The ONNX ``ModelProto`` of ``model`` (see ``export``), checked, not written."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"minicnn.onnx.export: expected a minicnn.nn.Module, got "
                        f"{type(model).__name__}")
    input_shape = _check_input_shape(input_shape)
    _check_opset(opset)
    onnx = onnx_package()
    writer = GraphWriter(model, opset)
    dtype = _parameter_dtype(model)
    sample = np.random.default_rng(0).standard_normal((TRACE_BATCH,) + input_shape)
    x = Tensor(sample.astype(dtype))
    writer.bind(x, "input")
    writer.used_names.add("input")
    output = _trace(model, x, writer)
    if isinstance(output, (tuple, list)):
        raise ExportError("minicnn.onnx.export: the model returned several outputs in eval "
                          "mode; export a model with one output")
    output_name = writer.name_of(output)
    if output_name == "input" or output_name in writer.initializers:
        output_name = writer.node("Identity", [output_name], "output")
    element_type = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = onnx.helper.make_graph(
        writer.nodes, type(model).__name__,
        [onnx.helper.make_tensor_value_info("input", element_type, ["batch", *input_shape])],
        [onnx.helper.make_tensor_value_info(output_name, element_type,
                                            ["batch", *output.shape[1:]])],
        initializer=list(writer.initializers.values()))
    proto = onnx.helper.make_model(graph, producer_name="minicnn",
                                   opset_imports=[onnx.helper.make_opsetid("", opset)])
    proto.ir_version = min(proto.ir_version, 10)    # what current onnxruntime releases read
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, input_shape, opset=17):
    """Write ``model`` as an ONNX file at ``path``; returns the ``onnx.ModelProto``.

    ``input_shape`` is one sample's shape without the batch, (C, H, W) for an image
    network; the batch dimension of the file is dynamic. The model is traced in eval mode
    (dropout and drop-path are the identity, batch norm uses its running statistics);
    its train/eval flags are left as they were. Raises ``ExportError`` naming the layer
    when something in the model has no ONNX form.
    """
    proto = to_onnx(model, input_shape, opset)
    onnx_package().save(proto, str(path))
    return proto


def _trace(model, x, writer):
    """Run ``model(x)`` once, writing nodes as layers finish and operations run."""
    module_names = {id(m): name for name, m in model.named_modules()}
    running = []                      # modules being called, innermost last
    inside = []                       # converted layers being called: their insides hidden

    def started(module, inputs):
        running.append(module)
        if not inside and layer_converter(module) is not None:
            inside.append(module)

    def finished(module, inputs, output):
        running.pop()
        if not inside or inside[-1] is not module or output is None:
            return
        inside.pop()
        name = module_names.get(id(module), type(module).__name__)
        tensors = [t for t in inputs if isinstance(t, Tensor)]
        if len(tensors) != 1:
            raise ExportError(f"layer {name!r} ({type(module).__name__}) was called with "
                              f"{len(tensors)} tensors; its converter takes one")
        result = layer_converter(module)(writer, module, name or type(module).__name__,
                                         writer.name_of(tensors[0]), tensors)
        if output is not tensors[0]:
            writer.bind(output, result)

    def function_called(function, inputs, outputs):
        if inside:
            return
        converter = operation_converter(function)
        layer = running[-1] if running else model
        layer_name = module_names.get(id(layer), "") or type(layer).__name__
        if converter is None:
            raise ExportError(
                f"cannot export layer {layer_name!r} ({type(layer).__name__}): it computes "
                f"{type(function).__module__}.{type(function).__name__}, which has no ONNX "
                "converter (minicnn.onnx.export.OPERATION_CONVERTERS, or a layer converter "
                "in LAYER_CONVERTERS)")
        tensors = [t if isinstance(t, Tensor) else Tensor(np.asarray(t)) for t in inputs]
        names = [writer.name_of(t, f"{layer_name}.constant") for t in tensors]
        results = converter(writer, function, names, tensors,
                            f"{layer_name}.{type(function).__name__.lower()}")
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        results = results if isinstance(results, list) else [results]
        for tensor, name in zip(outputs, results):
            writer.bind(tensor, name)

    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with no_grad(), observe_functions(function_called), \
                observe_module_calls(started, finished):
            return model(x)
    finally:
        for module, mode in modes:
            object.__setattr__(module, "training", mode)
