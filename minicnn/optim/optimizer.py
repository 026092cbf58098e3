"""The ``Optimizer`` base class: parameter groups, per-parameter state, and gradient clipping.

An optimizer owns a list of *parameter groups*. Each group is a dict with the key
``"params"`` (a list of tensors) and its own settings (``lr``, ``weight_decay``, ...);
settings a group does not give come from the optimizer's defaults. Groups are how a
network trains its batch-norm scales and biases without weight decay::

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 else decay).append(p)
    opt = SGD([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
              lr=0.1, momentum=0.9, weight_decay=1e-4)

``step()`` walks the groups and calls the subclass's ``update`` once per parameter that
has a gradient. Updates happen in place on ``param.data`` with whole-array operations, so
they run at array speed on NumPy and on CuPy, and a float32 parameter stays float32
(hyperparameters are Python floats, which never promote an array's dtype).
"""
import abc
import math

from minicnn.backend import device_of, get_array_module, to_device
from minicnn.tensor import Tensor


class Optimizer(abc.ABC):
    """Base class. Subclasses pass their ``defaults`` and implement ``update``.

    ``update(param, grad, state, group)`` changes ``param.data`` in place; ``state`` is
    the parameter's own dict of arrays (momentum buffers, moment estimates, step counts),
    kept across steps and saved by ``state_dict()``.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of tensors "
                            f"or of parameter-group dicts, got a single Tensor")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty list of parameters")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = []
        self.state = {}  # parameter -> dict of its state (Tensors hash by identity)
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a group: a dict with ``"params"`` and any settings that differ from defaults."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' key, "
                            f"got {group!r}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: parameters must be Tensors, got {type(p).__name__}")
        known = set(self.defaults) | {"params", "initial_lr"}
        unknown = sorted(set(group) - known)
        if unknown:
            raise ValueError(f"{name}: unknown setting(s) {unknown} in parameter group "
                             f"{len(self.param_groups)}; known settings are "
                             f"{sorted(known - {'params'})}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: a parameter appears in more than one group "
                             f"(or twice in one)")
        full = dict(self.defaults)
        full.update(group)
        full["params"] = params
        self.param_groups.append(full)

    def zero_grad(self):
        """Forget the gradients: backward *adds* into ``grad``, so clear it before each pass."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        """One update of every trainable parameter that received a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or not p.requires_grad:
                    continue  # frozen, or not reached by this backward pass
                if p.grad.shape != p.shape:
                    raise ValueError(f"{type(self).__name__}: gradient of shape "
                                     f"{p.grad.shape} for a parameter of shape {p.shape}")
                state = self.state.setdefault(p, {})
                if state:
                    _follow_parameter(p.data, state)
                self.update(p, p.grad, state, group)

    @abc.abstractmethod
    def update(self, param, grad, state, group):
        """Change ``param.data`` in place, given its gradient, state and group settings."""

    # -- saving and resuming ---------------------------------------------------------
    def _all_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """``{"state": [...], "param_groups": [...]}`` with parameters named by position.

        ``state[i]`` is the state dict of the i-th parameter (counting through the groups
        in order; ``{}`` before its first step), with arrays copied to the CPU.
        ``param_groups[g]`` holds the group's settings and ``"params"``: the positions of
        its parameters.
        """
        params = self._all_params()
        state = []
        for p in params:
            entry = {}
            for key, value in self.state.get(p, {}).items():
                entry[key] = to_device(value, "cpu").copy() if hasattr(value, "shape") else value
            state.append(entry)
        groups, position = [], 0
        for group in self.param_groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            settings["params"] = list(range(position, position + len(group["params"])))
            position += len(group["params"])
            groups.append(settings)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore settings and per-parameter state saved by ``state_dict()``.

        The optimizer must have been built over the same parameters in the same order;
        arrays are copied onto each parameter's device and dtype.
        """
        name = type(self).__name__
        groups, states = state_dict["param_groups"], state_dict["state"]
        sizes = [len(g["params"]) for g in self.param_groups]
        saved_sizes = [len(g["params"]) for g in groups]
        if sizes != saved_sizes:
            raise ValueError(f"{name}.load_state_dict: the saved optimizer has groups of "
                             f"{saved_sizes} parameters, this one has {sizes}")
        params = self._all_params()
        if len(states) != len(params):
            raise ValueError(f"{name}.load_state_dict: state for {len(states)} parameters, "
                             f"this optimizer has {len(params)}")
        for index, (p, saved) in enumerate(zip(params, states)):
            for key, value in saved.items():
                if hasattr(value, "shape") and tuple(value.shape) not in ((), tuple(p.shape)):
                    raise ValueError(f"{name}.load_state_dict: state {key!r} of parameter "
                                     f"{index} has shape {tuple(value.shape)}, the parameter "
                                     f"has {p.shape}")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for p, saved in zip(params, states):
            xp = get_array_module(p.data)
            self.state[p] = {
                key: (xp.asarray(to_device(value, p.device), dtype=p.dtype).copy()
                      if hasattr(value, "shape") and tuple(value.shape) == tuple(p.shape)
                      else _plain(value))
                for key, value in saved.items()}

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            settings = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} tensors, {settings}")
        return "\n".join(lines + [")"])


def _follow_parameter(data, state):
    """Put the parameter's state arrays where the parameter now is, in its dtype.

    ``model.to("gpu")`` or ``model.double()`` between two steps gives a parameter a new
    array; its momentum or moment estimates must follow it (as ``load_state_dict`` and
    the EMA's shadows do), or the next update mixes devices. One type and dtype
    comparison per array when nothing moved.
    """
    for key, value in state.items():
        if hasattr(value, "shape") and (type(value) is not type(data)
                                        or value.dtype != data.dtype):
            moved = to_device(value, device_of(data))
            state[key] = moved if moved.dtype == data.dtype else moved.astype(data.dtype)


def _plain(value):
    """A 0-d array (as checkpoints store numbers) back to a Python number."""
    return value.item() if hasattr(value, "shape") and value.shape == () else value


def clip_grad_norm_(params, max_norm):
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

        total = sqrt(Σ_p ‖grad_p‖²);   if total > max_norm:  grad_p ← grad_p · max_norm / total

    One factor for all parameters keeps the update's direction. Returns ``total`` (the norm
    *before* clipping) as a float, worth logging: spikes show instability early.
    """
    if isinstance(params, Tensor):
        params = [params]
    grads = [p.grad for p in params if p.grad is not None]
    if max_norm <= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be positive, got {max_norm}")
    # squares summed per tensor on its device; only one float per tensor crosses to Python
    total = math.sqrt(sum(float((g * g).sum()) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total
