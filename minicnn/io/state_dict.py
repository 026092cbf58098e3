"""From a weight file to a flat state dict, and minicnn models to and from safetensors.

    state = load_state_dict_file("resnet18-f37072fd.pth")       # torch zip or legacy
    state = load_state_dict_file("checkpoint.pth.tar")          # {"state_dict": {...}, ...}
    state = load_state_dict_file("model.safetensors")
    save_model_safetensors(model, "runs/lenet5.safetensors")
    load_model_safetensors(model, "runs/lenet5.safetensors")

A *state dict* here is flat: ``{"features.0.weight": ndarray, ...}``, the names
``Module.state_dict()`` uses. Checkpoints written by training scripts wrap it: under
``state_dict``, ``model_state_dict``, ``model``, ``net``, ``network`` or ``weights``,
next to the epoch and the optimizer state. Some nest it (``{"backbone": {"conv.weight":
...}}``); nested dicts flatten to dotted names (``backbone.conv.weight``).
"""
import numpy as np

from minicnn.io.errors import FormatError
from minicnn.io.safetensors_format import load_safetensors, save_safetensors
from minicnn.io.torch_format import ZIP_SIGNATURE, load_torch

# Where training scripts put the model's weights inside a checkpoint, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")


def load_state_dict_file(path):
    """The flat ``{name: ndarray}`` state dict in a ``.pth``/``.pt`` or ``.safetensors``
    file, unwrapped from a training checkpoint when it is one. The format is recognised
    from the bytes; ``FormatError`` when it is none of them or holds no state dict."""
    path = str(path)
    if _is_safetensors(path):
        return load_safetensors(path)
    return find_state_dict(load_torch(path), path)


def _is_safetensors(path):
    if path.endswith(".safetensors"):
        return True
    with open(path, "rb") as file:
        head = file.read(9)
    # An 8-byte length then '{'; a torch zip starts "PK\3\4", a legacy pickle 0x80 0x02
    # 0x8a, and neither has '{' at byte 8.
    return len(head) == 9 and head[8:9] == b"{" and head[:4] != ZIP_SIGNATURE


def find_state_dict(obj, path="<object>"):
    """The state dict inside ``obj`` (what ``load_torch`` returned), flattened."""
    if not isinstance(obj, dict):
        raise FormatError(path, f"expected a state dict (a dict of tensors), the file holds "
                          f"a {type(obj).__name__}")
    if _all_arrays(obj):
        return flatten_state_dict(obj, path)
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), dict) and _all_arrays(obj[key]):
            return flatten_state_dict(obj[key], path)
    keys = ", ".join(repr(k) for k in list(obj)[:8]) + (", ..." if len(obj) > 8 else "")
    raise FormatError(path, f"no state dict found: expected a dict of tensors, or a "
                      f"checkpoint holding one under one of {', '.join(WRAPPER_KEYS)}; the "
                      f"top-level keys are {keys or 'none'}")


def _all_arrays(tree):
    """Whether ``tree`` is a non-empty dict whose leaves (through nested dicts) are all
    arrays: a state dict, and not a checkpoint that also holds epochs and settings."""
    if not isinstance(tree, dict) or not tree:
        return False
    return all(isinstance(v, np.ndarray) or _all_arrays(v) for v in tree.values())


def flatten_state_dict(tree, path="<object>", prefix=""):
    """Nested ``{"a": {"b": array}}`` as flat ``{"a.b": array}``, in the saved order."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            leaves = flatten_state_dict(value, path, name + ".").items()
        elif isinstance(value, np.ndarray):
            leaves = [(name, value)]
        else:
            raise FormatError(path, f"state dict entry {name!r} is a "
                              f"{type(value).__name__}, expected a tensor")
        for leaf_name, array in leaves:
            if leaf_name in flat:
                raise FormatError(path, f"two entries flatten to the name {leaf_name!r}")
            flat[leaf_name] = array
    return flat


# -------------------------------------------------------- minicnn models and safetensors

def save_model_safetensors(model, path, metadata=None):
    """Write ``model.state_dict()`` (parameters and buffers) to a ``.safetensors`` file,
    atomically; ``metadata`` maps strings to strings (e.g. the architecture's name)."""
    save_safetensors(model.state_dict(), path, metadata=metadata)


def load_model_safetensors(model, path, strict=True):
    """Load a ``.safetensors`` state dict into ``model`` (see ``Module.load_state_dict``:
    shapes must match; with ``strict`` every name too). Returns ``(missing, unexpected)``.
    The whole file is read and checked before any weight of ``model`` changes."""
    return model.load_state_dict(load_safetensors(path), strict=strict)
