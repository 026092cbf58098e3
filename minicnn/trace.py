"""Tracing a forward pass: which layers ran, which operations ran between them.

Several tools need to see a network run once: the cost table (``minicnn.summary``),
batch-norm folding (``minicnn.fold``), turning a classifier into a fully convolutional
network (``minicnn.convolutionize``) and the ONNX exporter. They all use
``trace_forward``, which watches one eval-mode pass through the engine's two observer
hooks — nothing is patched — and returns a ``ForwardTrace``:

    >>> trace = trace_forward(model, x)
    >>> [call.name for call in trace.calls]        # every module call, children first
    >>> [op.kind for op in trace.operations]       # every Function call ("Conv2d", "Add")
    >>> trace.made_by[id(tensor)]                  # the operation that produced a tensor
"""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.nn.conv import Conv2d
from minicnn.nn.module import Parameter, observe_module_calls
from minicnn.tensor import Tensor, no_grad, observe_functions


class LayerCall:
    """One module call seen by a forward hook: the module, its inputs and its output."""

    def __init__(self, name, module, inputs, output):
        self.name, self.module, self.inputs, self.output = name, module, inputs, output
        self.is_leaf = not module._modules


class OperationCall:
    """One ``Function`` call: its type, the identities and shapes of its input tensors, its
    output's shape, and the innermost module that was running when it was called (None
    between modules). Which call produced a tensor is ``ForwardTrace.made_by``."""

    def __init__(self, function, inputs, outputs, module):
        self.kind = type(function).__name__
        self.module = module
        tensors = [x for x in inputs if isinstance(x, Tensor)]
        self.input_ids = [id(x) for x in tensors]
        self.input_shapes = [tuple(x.shape) for x in tensors]
        self.input_is_parameter = [isinstance(x, Parameter) for x in tensors]
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        self.output_shape = tuple(outputs[0].shape)


class ForwardTrace:
    """What one forward pass did: every module call (in the order the hooks fired: a
    container after its children) and every operation, with the tensors they passed on.

    ``made_by[id(tensor)]`` is the OperationCall that produced a tensor, so the pass can be
    walked backwards from any tensor to the layer outputs it was computed from. Every
    tensor seen is kept alive in ``tensors``, so no two of them can share an ``id``.
    """

    def __init__(self):
        self.calls, self.operations, self.made_by, self.tensors = [], [], {}, []
        self.input = self.output = None

    def readers(self, tensor):
        """The operations that read ``tensor``."""
        return [op for op in self.operations if id(tensor) in op.input_ids]


def trace_forward(model, x):
    """Run ``model(x)`` once in eval mode under ``no_grad()`` and record a ForwardTrace.

    Two observers of the engine see the pass (``minicnn.tensor.observe_functions`` and
    ``minicnn.nn.module.observe_module_calls``):

    * every Function call — that is how a tensor made by a functional operation between
      layers (the addition of a residual connection, the concatenation of Inception
      branches) is traced back to the layer outputs it came from;
    * every module call, entered and finished, which keeps a stack of the modules running,
      so each operation knows the layer it belongs to (a Linear's own "+ bias" is not a
      residual addition), and records each layer's inputs and output in call order (a
      container after its children).

    The model's train/eval flags are restored.
    """
    trace = ForwardTrace()
    names = {id(m): name for name, m in model.named_modules()}
    running = []                                   # the stack of modules being called

    def module_started(module, inputs):
        running.append(module)

    def module_finished(module, inputs, output):
        running.pop()
        if output is not None:
            trace.calls.append(LayerCall(names.get(id(module), type(module).__name__),
                                         module, tuple(inputs), output))
            trace.tensors.extend(tensors_in(output))

    def function_called(function, inputs, outputs):
        op = OperationCall(function, inputs, outputs, running[-1] if running else None)
        trace.operations.append(op)
        for y in (outputs if isinstance(outputs, tuple) else (outputs,)):
            trace.made_by[id(y)] = op
            trace.tensors.append(y)
        trace.tensors.extend(t for t in inputs if isinstance(t, Tensor))

    modes = [(m, m.training) for m in model.modules()]
    x = x if isinstance(x, Tensor) else Tensor(x)
    trace.input = x
    trace.tensors.append(x)
    try:
        model.eval()
        with no_grad(), observe_functions(function_called), \
                observe_module_calls(module_started, module_finished):
            trace.output = model(x)
    finally:
        for module, mode in modes:
            object.__setattr__(module, "training", mode)
    return trace


def sample_input(model, shape, seed=0):
    """A random batch-1 input of per-sample ``shape`` for tracing ``model``: on the device
    and in the dtype of its parameters (a GPU model is traced with a CuPy array), float32
    on the CPU for a model without parameters."""
    parameter = next(iter(model.parameters()), None)
    xp = get_array_module(parameter.data) if parameter is not None else np
    dtype = parameter.dtype if parameter is not None else np.float32
    sample = np.random.default_rng(seed).standard_normal((1,) + tuple(shape))
    return Tensor(xp.asarray(sample, dtype=dtype))


def tensors_in(value):
    """The Tensors in a value: a Tensor, or nested tuples and lists of them."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_in(v)]
    return []


def input_shape(model, input_size, in_channels=None, caller="input_shape"):
    """(C, H, W) or (features,) of one sample, from the many ways of saying it.

    ``input_size`` is an int (a square image), (H, W), (C, H, W) or (features,). Without a
    channel count, the first Conv2d of ``model`` gives it. ``caller`` names the tool in
    error messages.
    """
    if isinstance(input_size, (int, np.integer)) and not isinstance(input_size, bool):
        spatial = (int(input_size), int(input_size))
    elif isinstance(input_size, (tuple, list)) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in input_size):
        if len(input_size) in (1, 3):
            if in_channels is not None and len(input_size) == 3 and input_size[0] != in_channels:
                raise ValueError(f"{caller}: input_size {tuple(input_size)} has "
                                 f"{input_size[0]} channels but in_channels={in_channels}")
            shape = tuple(int(v) for v in input_size)
            if min(shape) < 1:
                raise ValueError(f"{caller}: input_size must be positive, got {shape}")
            return shape
        if len(input_size) != 2:
            raise ValueError(f"{caller}: input_size must be an int, (H, W), (C, H, W) or "
                             f"(features,), got {tuple(input_size)}")
        spatial = tuple(int(v) for v in input_size)
    else:
        raise TypeError(f"{caller}: input_size must be an int or a tuple of ints, got "
                        f"{input_size!r}")
    if min(spatial) < 1:
        raise ValueError(f"{caller}: input_size must be positive, got {spatial}")
    if in_channels is None:
        first_conv = next((m for m in model.modules() if isinstance(m, Conv2d)), None)
        if first_conv is None:
            raise ValueError(f"{caller}: input_size gives no channel count and the model has "
                             "no Conv2d to infer it from; pass in_channels= or (C, H, W)")
        in_channels = first_conv.in_channels
    return (int(in_channels),) + spatial
