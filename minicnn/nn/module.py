"""``Module`` and ``Parameter``: how layers own their weights.

A Module is a tree: its attributes that are Parameters are its weights, its attributes
that are Modules are its children. Assigning ``self.conv = Conv2d(...)`` in ``__init__``
registers the child, in that order — so ``named_parameters()`` lists weights in the order
the network defines them, the same order every time (a set would not).
"""
import contextlib
from collections import OrderedDict

import numpy as np

from minicnn.backend import get_array_module, to_device
from minicnn.tensor import Tensor


# Observers of module calls: ``before(module, inputs)`` and ``after(module, inputs, output)``.
# Empty in ordinary runs; minicnn.trace uses them to know which layer an operation is in.
_module_observers = []


@contextlib.contextmanager
def observe_module_calls(before=None, after=None):
    """Inside the block, call ``before(module, inputs)`` as every module's forward starts
    and ``after(module, inputs, output)`` when it returns (also when it raises, with
    output None), innermost last in, first out."""
    observer = (before, after)
    _module_observers.append(observer)
    try:
        yield
    finally:
        _module_observers.remove(observer)


class Parameter(Tensor):
    """A trainable tensor: ``requires_grad=True`` and registered by the Module owning it."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class of every layer and network (PyTorch's vocabulary on purpose).

    Subclasses create parameters, buffers and children in ``__init__`` and compute in
    ``forward``. Buffers are arrays that belong to the state but are not trained
    (batch-norm running statistics).
    """

    # In training mode, is each sample's output a function of that sample alone, with
    # nothing drawn at random? Then a training batch may be cut into shares that run on
    # different threads (minicnn.split_training). Batch norm (the batch's statistics) and
    # dropout (masks drawn for the whole batch) say False.
    independent_samples = True

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_hooks", [])

    # -- registration ------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               "before assigning attributes")
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """A named array saved in ``state_dict()`` but not trained (e.g. running mean).

        Registering a name again replaces the array (how ``to()`` and ``load_state_dict``
        put a moved or loaded buffer in place).
        """
        object.__setattr__(self, name, array)
        self._buffers[name] = array

    def add_module(self, name, module):
        setattr(self, name, module)

    # -- calling -------------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *inputs, **kwargs):
        if _module_observers:
            return self._observed_call(inputs, kwargs)
        output = self.forward(*inputs, **kwargs)
        for hook in self._forward_hooks:
            hook(self, inputs, output)
        return output

    def _observed_call(self, inputs, kwargs):
        observers = tuple(_module_observers)
        for before, _ in observers:
            if before is not None:
                before(self, inputs)
        output = None
        try:
            output = self.forward(*inputs, **kwargs)
            for hook in self._forward_hooks:
                hook(self, inputs, output)
        finally:
            for _, after in reversed(observers):
                if after is not None:
                    after(self, inputs, output)
        return output

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward; returns a remover.

        This is how ``minicnn.summary`` sees each layer's output shape.
        """
        self._forward_hooks.append(hook)
        return lambda: self._forward_hooks.remove(hook)

    # -- walking the tree --------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(name, module) for this module and every descendant, depth first, in order."""
        stack = [(prefix, self)]
        seen = set()
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) in registration order; a shared parameter once."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        for module_name, module in self.named_modules():
            for name, b in module._buffers.items():
                yield (f"{module_name}.{name}" if module_name else name), b

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def num_parameters(self, trainable_only=True):
        """Number of scalars in the parameters (only those that require grad by default)."""
        return int(sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only))

    # -- modes -----------------------------------------------------------------------
    def train(self, mode=True):
        """Training mode: dropout drops, batch norm uses batch statistics."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        """Inference mode: dropout is identity, batch norm uses running statistics."""
        return self.train(False)

    def requires_grad_(self, flag=True):
        """Freeze (False) or unfreeze (True) every parameter of this module."""
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # -- devices and dtypes ------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move parameters and buffers to ``device`` and/or cast floats to ``dtype``."""
        for module in self.modules():
            for p in module._parameters.values():
                data = p.data if device is None else to_device(p.data, device)
                p.data = data if dtype is None else data.astype(dtype)
                p.grad = None
            for name, b in list(module._buffers.items()):
                if b is None:
                    continue
                b = b if device is None else to_device(b, device)
                if dtype is not None and b.dtype.kind == "f":
                    b = b.astype(dtype)
                module.register_buffer(name, b)
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    # -- state -------------------------------------------------------------------------
    def state_dict(self):
        """Ordered {dotted name: array} of parameters then buffers (copies, on the CPU)."""
        state = OrderedDict()
        for name, p in self.named_parameters():
            state[name] = to_device(p.data, "cpu").copy()
        for name, b in self.named_buffers():
            if b is not None:
                state[name] = to_device(b, "cpu").copy()
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into the parameters and buffers of the same names.

        With ``strict`` every key must match; otherwise unmatched keys are skipped and
        reported. Returns ``(missing_keys, unexpected_keys)``. A shape mismatch is always an
        error (it means a different architecture, not a partial load).
        """
        own = OrderedDict(self.named_parameters())
        buffer_owner = {}
        for module_name, module in self.named_modules():
            for name in module._buffers:
                buffer_owner[f"{module_name}.{name}" if module_name else name] = (module, name)
        expected = list(own) + list(buffer_owner)
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in own and k not in buffer_owner]
        mismatched = []
        for key, value in state.items():
            target = own[key].data if key in own else (
                getattr(*buffer_owner[key]) if key in buffer_owner else None)
            if target is not None and tuple(np.shape(value)) != tuple(target.shape):
                mismatched.append(f"{key}: checkpoint {tuple(np.shape(value))}, "
                                  f"model {tuple(target.shape)}")
        problems = []
        if mismatched:
            problems.append("mis-shaped keys: " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + " | ".join(problems))
        for key, value in state.items():
            if key in own:
                p = own[key]
                xp = get_array_module(p.data)
                p.data = xp.asarray(value, dtype=p.dtype).copy()
            elif key in buffer_owner:
                module, name = buffer_owner[key]
                old = getattr(module, name)
                xp = get_array_module(old) if old is not None else np
                module.register_buffer(name, xp.asarray(value, dtype=getattr(old, "dtype", None)).copy())
        return missing, unexpected

    # -- printing ---------------------------------------------------------------------
    def extra_repr(self):
        """The settings shown inside the parentheses, e.g. ``3, 64, kernel_size=(3, 3)``."""
        return ""

    def __repr__(self):
        lines = [f"({name}): " + _indent(repr(child)) for name, child in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _indent(text):
    return text.replace("\n", "\n  ")
