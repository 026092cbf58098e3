"""minicnn: a from-scratch convolutional network engine on NumPy (CPU) and CuPy (GPU).

Start reading at ``minicnn/tensor.py``; README.md has the full tour.
"""
from minicnn import runtime

runtime.configure()          # thread waiting and memory reuse: see minicnn/runtime.py

from minicnn.tensor import Tensor, Function, no_grad, is_grad_enabled
from minicnn import functional
from minicnn.backend import gpu_available
from minicnn.gradcheck import gradcheck
from minicnn import nn, optim
# Bound after the submodule loads, so ``minicnn.summary`` is the function even once
# ``import minicnn.summary`` has run elsewhere.
from minicnn.summary import summary

__version__ = "0.1.0"
