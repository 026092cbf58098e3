"""Transfer learning: freeze what was learned, replace the head, load what fits.

The recipe every course teaches, one call per step::

    model = architectures.create("resnet18", num_classes=1000)
    report = load_partial(model, "imagenet.npz")       # weights whose names and shapes fit
    replace_head(model, num_classes=5)                  # a fresh classifier for the new task
    freeze(model)                                       # everything ...
    unfreeze(model, head_name(model))                   # ... but the new head
    freeze_batchnorm(model)                             # frozen BN keeps its statistics
    opt = SGD(trainable_parameters(model), lr=0.01)

Freezing is ``requires_grad = False`` on parameters: backward computes no gradient for
them and optimizers skip a parameter whose ``requires_grad`` is False or whose ``grad`` is
None, so even an optimizer built over ``model.parameters()`` leaves them alone.

Batch norm needs one more step. A BN layer in training mode normalizes with the statistics
of the current batch and updates its running statistics — even with γ and β frozen. With a
small fine-tuning set that would overwrite what pretraining measured; ``freeze_batchnorm``
pins the layers in eval mode, so ``model.train()`` no longer switches them.
"""
import fnmatch

import numpy as np

from minicnn.backend import get_array_module
from minicnn.nn.conv import Conv2d
from minicnn.nn.layers import Linear
from minicnn.nn.module import Module
from minicnn.nn.norm import BatchNorm1d, BatchNorm2d, BatchNormNd


# ================================================================= finding and replacing

def _resolve(model, name):
    """(parent module, child key) of the module called ``name`` ('layer1.0.conv1')."""
    if not name:
        raise ValueError("replace_module: the root cannot be replaced; build a new model")
    parent = model
    *path, key = name.split(".")
    for part in path:
        if part not in parent._modules:
            raise ValueError(f"{type(model).__name__} has no module {name!r}")
        parent = parent._modules[part]
    if key not in parent._modules:
        raise ValueError(f"{type(model).__name__} has no module {name!r}")
    return parent, key


def replace_module(model, name, new_module):
    """Put ``new_module`` where the submodule ``name`` is; returns the old module.

    The child keeps its place in its parent's registration order (a Sequential still runs
    its children in the same order; ``state_dict`` keys keep their order), which a plain
    ``setattr`` would not guarantee.
    """
    if not isinstance(new_module, Module):
        raise TypeError(f"replace_module: expected a Module for {name!r}, got "
                        f"{type(new_module).__name__}")
    parent, key = _resolve(model, name)
    old = parent._modules[key]
    parent._modules[key] = new_module          # same slot: registration order unchanged
    object.__setattr__(parent, key, new_module)
    return old


def _match_parameters(model, targets, operation):
    """Names of the parameters that ``targets`` designate.

    A target is a Module (its parameters), a module or parameter name ('features',
    'features.0.weight': a module name covers everything under it), or a shell-style
    pattern over parameter names ('layer4.*', '*.bias').
    """
    named = list(model.named_parameters())
    if targets is None:
        return [n for n, _ in named]
    if isinstance(targets, (str, Module)):
        targets = [targets]
    ids = {id(p): n for n, p in named}
    chosen = []
    for target in targets:
        if isinstance(target, Module):
            names = [ids[id(p)] for p in target.parameters() if id(p) in ids]
            if not names and any(True for _ in target.parameters()):
                raise ValueError(f"{operation}: the given {type(target).__name__} is not "
                                 f"part of this {type(model).__name__}")
        elif isinstance(target, str):
            if any(c in target for c in "*?["):
                names = [n for n, _ in named if fnmatch.fnmatchcase(n, target)]
            else:
                names = [n for n, _ in named if n == target or n.startswith(target + ".")]
            if not names:
                modules = [n for n, _ in model.named_modules() if n]
                hint = ", ".join(modules[:12]) + (" ..." if len(modules) > 12 else "")
                raise ValueError(f"{operation}: {target!r} names no parameter of "
                                 f"{type(model).__name__}; its modules: {hint}")
        else:
            raise TypeError(f"{operation}: expected module names, patterns or Modules, got "
                            f"{type(target).__name__}")
        chosen.extend(n for n in names if n not in chosen)
    return chosen


def freeze(model, names_or_modules=None):
    """Stop training the designated parameters (all of them by default).

    ``names_or_modules``: a module or parameter name, a shell pattern ('layer4.*'), a
    Module, or a list of those. Returns the names of the parameters frozen.
    """
    names = _match_parameters(model, names_or_modules, "freeze")
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad = False
        params[name].grad = None           # a stale gradient must not be applied later
    return names


def unfreeze(model, names_or_modules=None):
    """Train the designated parameters again (all by default); returns their names."""
    names = _match_parameters(model, names_or_modules, "unfreeze")
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad = True
    return names


def trainable_parameters(model):
    """The parameters that still train: what to hand an optimizer after freezing."""
    return [p for p in model.parameters() if p.requires_grad]


def head_name(model):
    """Name of the classification head: the last Linear registered, or, in a network
    without one (NiN, SqueezeNet), the last 1×1 Conv2d — the layer that maps features to
    class scores."""
    linear = [n for n, m in model.named_modules() if isinstance(m, Linear)]
    if linear:
        return linear[-1]
    conv = [n for n, m in model.named_modules()
            if isinstance(m, Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
    if conv:
        return conv[-1]
    raise ValueError(f"head_name: {type(model).__name__} has no Linear layer and no 1×1 "
                     f"Conv2d to serve as its classification head")


def replace_head(model, num_classes, rng=None):
    """Replace the classification head by a freshly initialised one with ``num_classes``
    outputs (same input size, bias, dtype and device). Returns its name.

    Only the main head is replaced: auxiliary classifiers (GoogLeNet, Inception-v3) are
    separate layers and can be replaced with ``replace_module``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"replace_head: num_classes must be a positive int, got {num_classes!r}")
    name = head_name(model)
    parent, key = _resolve(model, name)
    old = parent._modules[key]
    dtype = old.weight.dtype
    has_bias = old.bias is not None
    if isinstance(old, Linear):
        new = Linear(old.in_features, num_classes, bias=has_bias, dtype=dtype)
    else:
        new = Conv2d(old.in_channels, num_classes, 1, bias=has_bias, dtype=dtype)
    if rng is not None:  # a seeded head: PyTorch's default init drawn from ``rng``
        bound = 1.0 / np.sqrt(new.weight.data[0].size)
        new.weight.data = rng.uniform(-bound, bound, new.weight.shape).astype(dtype)
        if has_bias:
            new.bias.data = rng.uniform(-bound, bound, new.bias.shape).astype(dtype)
    xp = get_array_module(old.weight.data)
    if xp is not np:
        new.to(device="gpu")
    replace_module(model, name, new)
    return name


def freeze_backbone(model, freeze_bn=True):
    """Freeze everything but the classification head (``head_name``): the head alone
    trains on the new task. Returns the frozen names. With ``freeze_bn`` the batch norms
    whose parameters are all frozen are pinned in eval mode (``freeze_batchnorm``): their
    running statistics belong to the old task's data as much as their weights do."""
    unfreeze(model)
    keep = head_name(model)
    frozen = [n for n in freeze(model) if not (n == keep or n.startswith(keep + "."))]
    unfreeze(model, keep)
    return _pin_frozen_batchnorms(model, frozen) if freeze_bn else frozen


def freeze_all_but_last(model, count, freeze_bn=True):
    """Freeze everything before the last ``count`` weight layers (Conv2d or Linear, in
    registration order): those layers, and everything registered after the first of them
    (their batch norms), train. Returns the frozen names; ``freeze_bn`` as in
    ``freeze_backbone``."""
    weight_layers = [n for n, m in model.named_modules() if isinstance(m, (Conv2d, Linear))]
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) \
            or not 1 <= count <= len(weight_layers):
        raise ValueError(f"freeze_all_but_last: the count must lie in [1, {len(weight_layers)}] "
                         f"(the number of Conv2d and Linear layers), got {count!r}")
    unfreeze(model)
    first_kept = weight_layers[-count]
    names = [n for n, _ in model.named_parameters()]
    start = next(i for i, n in enumerate(names) if n.startswith(first_kept + "."))
    frozen = freeze(model, names[:start]) if start else []
    return _pin_frozen_batchnorms(model, frozen) if freeze_bn else frozen


def _pin_frozen_batchnorms(model, frozen):
    frozen_set = set(frozen)
    pinned = [name for name, m in model.named_modules() if isinstance(m, BatchNormNd)
              and all(f"{name}.{p}" in frozen_set for p, v in m._parameters.items()
                      if v is not None)]
    for name in pinned:
        freeze_batchnorm(dict(model.named_modules())[name])
    return frozen


# ========================================================================= batch norm

class _PinnedEval:
    """Mixin: ``training`` always reads False and ignores assignments, so ``train()``
    (which sets the flag on every module) leaves this layer in eval mode."""

    @property
    def training(self):
        return False

    @training.setter
    def training(self, mode):
        pass


class FrozenBatchNorm2d(_PinnedEval, BatchNorm2d):
    """A BatchNorm2d pinned in eval mode: running statistics are used, never updated."""


class FrozenBatchNorm1d(_PinnedEval, BatchNorm1d):
    """A BatchNorm1d pinned in eval mode: running statistics are used, never updated."""


_FROZEN = {BatchNorm2d: FrozenBatchNorm2d, BatchNorm1d: FrozenBatchNorm1d}
_UNFROZEN = {v: k for k, v in _FROZEN.items()}


def freeze_batchnorm(model, freeze_affine=True):
    """Pin every batch-norm layer of ``model`` (or ``model`` itself) in eval mode.

    Each layer's class is changed to its Frozen variant in place: the object, its
    parameters and buffers stay the same (an optimizer's references and ``state_dict``
    keys are untouched). With ``freeze_affine`` γ and β stop training too. Returns the
    names of the layers pinned.
    """
    pinned = []
    for name, module in model.named_modules():
        if type(module) in _FROZEN:
            module.__class__ = _FROZEN[type(module)]
            pinned.append(name)
        if isinstance(module, _PinnedEval) and freeze_affine:
            module.requires_grad_(False)
    return pinned


def unfreeze_batchnorm(model, unfreeze_affine=True):
    """Undo ``freeze_batchnorm``: the layers follow ``train()``/``eval()`` again."""
    released = []
    for name, module in model.named_modules():
        if type(module) in _UNFROZEN:
            module.__class__ = _UNFROZEN[type(module)]
            object.__setattr__(module, "training", True)
            released.append(name)
            if unfreeze_affine:
                module.requires_grad_(True)
    return released


# ======================================================================= partial loads

class LoadReport:
    """What ``load_partial`` did: keys ``loaded``, ``missing`` (in the model, not in the
    checkpoint: they keep their current values), ``unexpected`` (in the checkpoint only)
    and ``mismatched`` ((key, checkpoint shape, model shape): skipped)."""

    def __init__(self, loaded, missing, unexpected, mismatched):
        self.loaded, self.missing = loaded, missing
        self.unexpected, self.mismatched = unexpected, mismatched

    @property
    def skipped(self):
        return self.missing + self.unexpected + [key for key, _, _ in self.mismatched]

    def __str__(self):
        lines = [f"loaded {len(self.loaded)} arrays"]
        if self.mismatched:
            lines.append("skipped, shape differs: " + "; ".join(
                f"{k} (checkpoint {c}, model {m})" for k, c, m in self.mismatched))
        if self.missing:
            lines.append("not in the checkpoint (kept as initialised): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("in the checkpoint but not the model (ignored): "
                         + ", ".join(self.unexpected))
        return "\n".join(lines)

    __repr__ = __str__


def load_partial(model, state):
    """Load the arrays of ``state`` whose names *and* shapes fit ``model``; report the rest.

    ``state`` is a state dict, or the path of a checkpoint written by
    ``minicnn.optim.save_checkpoint`` (its ``model`` section) or of an ``.npz`` of named
    arrays. This is ``load_state_dict(strict=False)`` made safe for a new head: a
    classifier of another size is skipped (and reported) instead of being an error.
    """
    if isinstance(state, (str, bytes)) or hasattr(state, "__fspath__"):
        state = _read_state(state)
    if not hasattr(state, "items"):
        raise TypeError(f"load_partial: expected a state dict or a checkpoint path, got "
                        f"{type(state).__name__}")
    own = model.state_dict()
    mismatched = [(k, tuple(np.shape(v)), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(np.shape(v)) != tuple(own[k].shape)]
    bad = {k for k, _, _ in mismatched}
    fitting = {k: v for k, v in state.items() if k in own and k not in bad}
    model.load_state_dict(fitting, strict=False)
    return LoadReport(loaded=list(fitting), missing=[k for k in own if k not in state],
                      unexpected=[k for k in state if k not in own], mismatched=mismatched)


def _read_state(path):
    """A state dict from a minicnn checkpoint (its 'model' section) or a plain .npz."""
    from minicnn.optim.checkpoint import HEADER, load_checkpoint
    with np.load(path, allow_pickle=False) as archive:
        if HEADER not in archive.files:
            return {k: archive[k] for k in archive.files}
    checkpoint = load_checkpoint(path)
    if "model" not in checkpoint:
        raise ValueError(f"load_partial: checkpoint {path} has no 'model' section (sections: "
                         f"{', '.join(checkpoint)})")
    return checkpoint["model"]
