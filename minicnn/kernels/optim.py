"""The Adam update as one pass over memory.

Written with array operations, one Adam step on a parameter θ with moments m and v is
eight whole-array operations, each reading and writing a full-size temporary:

    m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²,   θ ← θ − a · m / (√v · b + ε)

(a = η / (1 − β₁ᵗ) and b = 1 / √(1 − β₂ᵗ), the bias corrections folded into scalars).
For AlexNet's 38M-weight fc6 that is ≈ 1.2 GB of memory traffic a step, and every large
temporary arrives as fresh pages from the kernel. The Numba kernel reads g, m, v and θ
once and writes m, v and θ once, in parallel. ``adam_step_reference`` is the same update
in array operations: it is the CuPy path (one fused elementwise op per line on the GPU
costs little) and what the tests compare the kernel against.
"""
import numpy as np
from numba import njit, prange

from minicnn.backend import get_array_module


def adam_step_reference(param, grad, m, v, beta1, beta2, step_size, correction2, eps):
    """In place: m, v, then param (see the module docstring for the formula)."""
    xp = get_array_module(param)
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * (grad * grad)
    param -= step_size * (m / (xp.sqrt(v) * correction2 + eps))


@njit(parallel=True, cache=True)
def _adam_step_numba(param, grad, m, v, beta1, beta2, step_size, correction2, eps):
    for i in prange(param.size):
        g = grad[i]
        m_i = beta1 * m[i] + (1.0 - beta1) * g
        v_i = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i], v[i] = m_i, v_i
        param[i] -= step_size * (m_i / (np.sqrt(v_i) * correction2 + eps))


def adam_step(param, grad, m, v, beta1, beta2, step_size, correction2, eps):
    """One Adam step in place; the fused kernel for contiguous NumPy arrays. A gradient in
    another layout (a transposed view) is copied to C order first: one more pass, against
    the reference's eight."""
    state = (param, m, v)
    if get_array_module(param) is not np or not all(a.flags.c_contiguous for a in state):
        return adam_step_reference(param, grad, m, v, beta1, beta2, step_size, correction2, eps)
    arrays = (param, np.ascontiguousarray(grad), m, v)
    dtype = param.dtype.type
    _adam_step_numba(*(a.reshape(-1) for a in arrays), dtype(beta1), dtype(beta2),
                     dtype(step_size), dtype(correction2), dtype(eps))
