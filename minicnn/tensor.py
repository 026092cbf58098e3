"""The whole autograd: ``Tensor``, ``Function`` and ``backward()``.

Read this file top to bottom; everything else in minicnn is operations built on it.

The idea (define-by-run)
------------------------
Every operation on tensors is a ``Function``. Calling one computes its result on raw
arrays *and* records, in the result, which Function made it and from which inputs::

    a ──┐
        ├── Mul ──> c ──┐
    b ──┘               ├── Add ──> e
                 d ─────┘

The arrows form a directed acyclic graph. ``e.backward()`` walks it from the output back
to the leaves, calling each Function's ``backward`` with the gradient of the loss with
respect to its output (the chain rule, one node at a time), and adds the gradients that
arrive at a tensor from each of its consumers.

Why a topological sort, and not recursion?
------------------------------------------
The obvious recursive version, ``def backward(t): push grad into t.creator, then recurse
into each input``, is wrong and fragile:

* **wrong** when a tensor is used twice. In ``e = a*b + a*c`` (or just ``a + a``, or a
  residual block ``y = x + f(x)``) the gradient of ``x`` is the *sum* of what flows back
  along both paths. Recursing into ``x``'s creator after the first path would push an
  incomplete gradient further down. A node may only run backward once *all* its
  consumers have reported: that is exactly "reverse topological order".
* **fragile** in depth: a 150-layer ResNet is a chain of hundreds of Functions and
  Python's recursion limit (1000 frames) is not far.

So ``backward`` first lists the Functions in topological order with an explicit stack
(no recursion), then runs them in reverse, accumulating gradients in a dictionary.

Memory
------
After a Function has run backward, it drops its inputs and saved arrays, so activations
are freed as the backward pass moves toward the input. Calling ``backward`` through the
same graph again then raises a clear error (pass ``retain_graph=True`` to keep it).
A Function keeps its inputs' places in the graph (an ``Edge``: creator and output
index; leaves as themselves) but not their arrays, and not its outputs (only their
shapes), so the graph is owned by the tensors at its end: drop the loss and the whole
graph is freed. An activation lives until backward only if some Function saved it.
"""
import contextlib
import math

import numpy as np

from minicnn.backend import device_of, get_array_module, sum_rows, to_device

# ----------------------------------------------------------------------------- config

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside ``with no_grad():`` operations record no graph (inference, updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


# Callbacks that see every Function call: ``callback(function, inputs, outputs)``. Empty
# (the usual case) costs one truth test per operation. Tools that need to see a whole
# forward pass (minicnn.trace, the ONNX exporter) add themselves through observe_functions.
_function_observers = []


@contextlib.contextmanager
def observe_functions(callback):
    """Inside the block, call ``callback(function, inputs, outputs)`` after each Function.

    ``inputs`` are the Tensors (or numbers) the Function was called with, ``outputs`` what
    it returned (a Tensor or a tuple of Tensors). This is how a tracer sees the operations
    *between* layers: a residual addition, an Inception concatenation.
    """
    _function_observers.append(callback)
    try:
        yield
    finally:
        _function_observers.remove(callback)


DEFAULT_DTYPE = np.float32


def _as_array(value, dtype=None):
    """Turn Python numbers and lists into float32 arrays; keep arrays' own dtype."""
    if type(value).__module__.startswith("cupy") or isinstance(value, np.ndarray):
        return value if dtype is None else value.astype(dtype, copy=False)
    if isinstance(value, np.generic):   # NumPy scalars (what full reductions return) keep theirs
        value = np.asarray(value)
        return value if dtype is None else value.astype(dtype, copy=False)
    array = np.asarray(value)
    if dtype is not None:
        return array.astype(dtype, copy=False)
    if array.dtype.kind == "f" and array.dtype != np.float64 or array.dtype.kind in "iub":
        return array
    return array.astype(DEFAULT_DTYPE)  # Python floats and lists become float32


# ----------------------------------------------------------------------------- Tensor

# Tensor's operators (``a + b``, ``x @ w``, ``x.sum()``) are the Functions of
# minicnn.functional, which is built on the classes of this file: that package imports
# this module and then hands itself over here (``F``), so the two never import each other.
F = None

class Tensor:
    """An array plus what autograd needs: ``grad``, ``requires_grad`` and its creator.

    ``data`` is a ``numpy.ndarray`` (CPU) or ``cupy.ndarray`` (GPU). ``grad`` is an array
    of the same shape, or ``None`` until a backward pass reaches this tensor. Gradients
    *accumulate* into ``grad`` (like PyTorch): call ``optimizer.zero_grad()`` (or set
    ``grad = None``) before each new backward pass.
    """

    __array_priority__ = 1000  # so that ``ndarray * tensor`` calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, "
                            f"got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.creator = None      # the Function that produced this tensor (None: a leaf)
        self.output_index = 0    # which of the creator's outputs this tensor is
        self.name = None

    # -- plain properties ------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: device_of(self.data))
    is_leaf = property(lambda self: self.creator is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(self.numpy(), precision=4, separator=", ", threshold=20)
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU when it lives there)."""
        return to_device(self.data, "cpu")

    def item(self):
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def to(self, device):
        """A copy on ``device`` ("cpu" or "gpu"); a leaf stays a leaf."""
        return Tensor(to_device(self.data, device), requires_grad=self.requires_grad)

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def astype(self, dtype):
        return F.cast(self, dtype)

    def requires_grad_(self, flag=True):
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, "
                            f"got dtype {self.data.dtype}")
        self.requires_grad = flag
        return self

    # -- backward ----------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False, leaf_grads=None):
        """Compute d(self)/d(leaf) for every leaf that requires grad; see module doc.

        The gradients are added to each leaf's ``grad``, or, given a dict ``leaf_grads``,
        kept there instead (``leaf_grads[id(leaf)] = [leaf, gradient]``) and the leaves
        left untouched: several threads can then run backward through graphs of their own
        that share the same weights (``minicnn.split_training``)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output, "
                                   f"got shape {self.shape}")
            grad = get_array_module(self.data).ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else grad
        if tuple(getattr(grad, "shape", ())) != tuple(self.shape):
            # a broadcast here would silently scale every gradient below (a (1,) seed
            # for an (N,) output counts each element once, an (N, 1) one N times)
            raise ValueError(f"backward(): the gradient must have the output's shape "
                             f"{tuple(self.shape)}, got {tuple(getattr(grad, 'shape', ()))}")
        if self.creator is None:                     # backward on a leaf itself
            self._accumulate(grad, leaf_grads)
            return

        # grads[id(function)] holds the gradients of that function's outputs, one slot each
        grads = {id(self.creator): self.creator.empty_grads()}
        grads[id(self.creator)][self.output_index] = grad
        for function in reversed(_topological_order(self.creator)):
            output_grads = grads.pop(id(function), None)
            if output_grads is None:
                continue  # none of this function's outputs leads to the loss
            if function.inputs is None:
                raise RuntimeError(
                    f"backward through {type(function).__name__} a second time: its saved "
                    "arrays were freed after the first backward. Recompute the forward pass, "
                    "or call backward(retain_graph=True) the first time.")
            input_grads = function.backward(*function.fill_missing(output_grads))
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for tensor, g in zip(function.inputs, input_grads):
                if g is None or not tensor.requires_grad:
                    continue
                if tensor.creator is None:           # a leaf: keep the gradient
                    tensor._accumulate(g, leaf_grads)
                    continue
                slots = grads.setdefault(id(tensor.creator), tensor.creator.empty_grads())
                i = tensor.output_index
                # several consumers of one tensor: their gradients add up
                slots[i] = g if slots[i] is None else slots[i] + g
            if not retain_graph:
                function.release()

    def _accumulate(self, grad, leaf_grads=None):
        if grad.shape != self.shape:
            raise RuntimeError(f"gradient shape {grad.shape} does not match tensor shape "
                               f"{self.shape}")
        if grad.dtype != self.dtype:
            grad = grad.astype(self.dtype)
        if leaf_grads is not None:
            kept = leaf_grads.setdefault(id(self), [self, None])
            kept[1] = grad.copy(order="K") if kept[1] is None else kept[1] + grad
            return
        # Never alias: a backward may hand the same array to two leaves. order="K" keeps a
        # channels-last gradient channels-last (a C-order copy would transpose it).
        self.grad = grad.copy(order="K") if self.grad is None else self.grad + grad

    # -- operators: each is one Function from minicnn.functional -----------------
    def __add__(self, other): return F.add(self, other)
    def __radd__(self, other): return F.add(other, self)
    def __sub__(self, other): return F.sub(self, other)
    def __rsub__(self, other): return F.sub(other, self)
    def __mul__(self, other): return F.mul(self, other)
    def __rmul__(self, other): return F.mul(other, self)
    def __truediv__(self, other): return F.div(self, other)
    def __rtruediv__(self, other): return F.div(other, self)
    def __neg__(self): return F.neg(self)
    def __pow__(self, exponent): return F.pow(self, exponent)
    def __matmul__(self, other): return F.matmul(self, other)
    def __rmatmul__(self, other): return F.matmul(other, self)
    def __getitem__(self, index): return F.getitem(self, index)

    # comparisons give plain boolean arrays: they have no gradient
    def __lt__(self, other): return self.data < _data(other)
    def __le__(self, other): return self.data <= _data(other)
    def __gt__(self, other): return self.data > _data(other)
    def __ge__(self, other): return self.data >= _data(other)
    __hash__ = object.__hash__  # tensors are used as identities in sets and dicts

    # -- methods mirroring the functional API -------------------------------------
    def sum(self, axis=None, keepdims=False): return F.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return F.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return F.max(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return F.var(self, axis, keepdims, ddof)
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def sqrt(self): return F.sqrt(self)
    def relu(self): return F.relu(self)
    def reshape(self, *shape): return F.reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, *axes): return F.transpose(self, axes[0] if len(axes) == 1 else axes or None)
    def permute(self, *axes): return F.transpose(self, axes[0] if len(axes) == 1 else axes)
    def flatten(self, start_dim=1): return F.flatten(self, start_dim)
    T = property(lambda self: F.transpose(self))


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def as_tensor(x, like=None):
    """A Tensor from a Tensor (itself), an array, or a Python number.

    A number meeting a tensor takes that tensor's dtype and device, so ``0.5 * x`` stays
    float32 and ``x + 1`` stays on the GPU.
    """
    if isinstance(x, Tensor):
        return x
    if like is not None and not hasattr(x, "shape"):
        xp = get_array_module(like.data)
        return Tensor(xp.asarray(x, dtype=like.dtype))
    return Tensor(x)


# ----------------------------------------------------------------------------- Function

class Edge:
    """What backward needs of an input that an earlier Function made: that Function and
    which of its outputs the input is. Not the tensor itself: holding it would hold its
    array until backward, whether or not anything saved it for backward (a batch norm's
    output feeding a ReLU, which keeps only a mask: in ResNet-50 at batch 8, 224×224, such
    arrays held ≈ 500 MB). Leaves stay as tensors: their ``grad`` is set."""
    __slots__ = ("creator", "output_index", "requires_grad")

    def __init__(self, tensor):
        self.creator, self.output_index = tensor.creator, tensor.output_index
        self.requires_grad = tensor.requires_grad


class Function:
    """One differentiable operation: ``forward`` and ``backward`` on raw arrays.

    Subclasses implement

    * ``forward(self, *arrays) -> array or tuple of arrays`` — hand whatever backward will
      need (inputs, masks, indices) to ``self.save_for_backward(...)``; settings given to
      ``__init__`` (stride, axis) stay plain attributes; ``self.records`` says whether a
      backward can follow (False under ``no_grad`` or when no input needs a gradient);
    * ``backward(self, *grad_outputs) -> array or tuple of arrays`` — one gradient per
      input of ``forward`` (``None`` where an input needs none, e.g. integer labels).

    Both receive NumPy or CuPy arrays; write them with ``xp = get_array_module(x)`` so one
    body serves both devices. Keyword settings (stride, axis, ...) go to ``__init__``.
    """
    inputs = None
    records = True        # (set by each call; True for a forward called directly)

    def __call__(self, *inputs):
        tensors = [as_tensor(x) for x in inputs]
        self.needs_input_grad = tuple(t.requires_grad for t in tensors)
        # Whether backward can run: forward may skip what only backward needs (max
        # pooling's argmax) when it cannot.
        self.records = record = _grad_enabled and any(self.needs_input_grad)
        outputs = self.forward(*[t.data for t in tensors])
        single = not isinstance(outputs, tuple)
        outputs = (outputs,) if single else outputs
        results = tuple(Tensor(y, requires_grad=record) for y in outputs)
        if record:
            self.inputs = [t if t.creator is None else Edge(t) for t in tensors]
            # Only shapes of the outputs are kept, not the outputs: holding them would keep
            # every activation of the graph alive until the graph itself dies.
            self.output_specs = tuple((y.shape, y.dtype) for y in outputs)
            for index, r in enumerate(results):
                r.creator, r.output_index = self, index
        returned = results[0] if single else results
        for observer in _function_observers:
            observer(self, inputs, returned)
        return returned

    def save_for_backward(self, *values):
        """Keep exactly what ``backward`` needs; it gets them back as ``self.saved``.

        ``release()`` frees these (and the inputs) once backward has run, so what a
        Function holds on to between the passes is written in one place.
        """
        self.saved = values

    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def backward(self, *grad_outputs):
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def empty_grads(self):
        return [None] * len(self.output_specs)

    def fill_missing(self, output_grads):
        """Zeros for outputs no gradient reached (e.g. an unused piece of a split)."""
        xp = get_array_module(*[g for g in output_grads if g is not None])
        return tuple(xp.zeros(shape, dtype) if g is None else g
                     for g, (shape, dtype) in zip(output_grads, self.output_specs))

    def release(self):
        """Drop inputs and saved arrays once backward is done: activations are freed."""
        self.saved = None
        self.inputs = None


def _topological_order(root):
    """Functions reachable from ``root``, each listed after all Functions it consumes.

    Iterative depth-first search with an explicit stack: a Function is appended after
    everything below it (post-order). It is marked when it is *expanded*, not when it is
    pushed: in ``y + 3·y`` the creator of ``y`` is first pushed as an input of the Add,
    and must still be listed after — below — the Mul that also consumes it. Reversed,
    the list runs every Function after all of its consumers — what the chain rule needs.
    """
    order, expanded = [], set()
    stack = [(root, False)]
    while stack:
        function, children_done = stack.pop()
        if children_done:
            order.append(function)
            continue
        if id(function) in expanded:      # reached again through another consumer
            continue
        expanded.add(id(function))
        stack.append((function, True))
        for tensor in function.inputs or ():
            creator = tensor.creator
            if creator is not None and tensor.requires_grad and id(creator) not in expanded:
                stack.append((creator, False))
    return order


def sum_to(grad, shape):
    """Sum ``grad`` down to ``shape``: the gradient of NumPy broadcasting.

    Broadcasting copies an operand along new leading axes and along axes of size 1, so
    its gradient is the sum over those axes.
    """
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and grad.shape[lead + i] != 1)
    if axes == tuple(range(lead)) and grad.flags.c_contiguous:   # a bias: leading axes only
        return sum_rows(grad.reshape(-1, math.prod(shape))).reshape(shape)
    grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)

