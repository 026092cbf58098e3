"""minicnn: a from-scratch convolutional network engine on NumPy (CPU) and CuPy (GPU).

Start reading at ``minicnn/tensor.py``; README.md has the full tour.
"""
from minicnn.tensor import Tensor, Function, no_grad, is_grad_enabled
from minicnn import functional
from minicnn.backend import gpu_available
from minicnn.gradcheck import gradcheck

__version__ = "0.1.0"


_LAZY = {"nn": "minicnn.nn", "optim": "minicnn.optim", "summary": "minicnn.summary"}


def __getattr__(name):
    # Heavier pieces load on first use, so ``import minicnn`` (and every CLI's --help) stays
    # fast. ``minicnn.summary`` is the function of that module.
    import importlib
    if name not in _LAZY:
        raise AttributeError(f"module 'minicnn' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = getattr(module, name, module) if name == "summary" else module
    globals()[name] = value  # later lookups (and the submodule import itself) see the function
    return value
