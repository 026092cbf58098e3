"""The Adam update as one pass over memory.

Written with array operations, one Adam step on a parameter θ with moments m and v is
eight whole-array operations, each reading and writing a full-size temporary:

    m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²,   θ ← θ − a · m / (√v · b + ε)

(a = η / (1 − β₁ᵗ) and b = 1 / √(1 − β₂ᵗ), the bias corrections folded into scalars).
For AlexNet's 38M-weight fc6 that is ≈ 1.2 GB of memory traffic a step, and every large
temporary arrives as fresh pages from the kernel. The fused versions read g, m, v and θ
once and write m, v and θ once:

    reference   the array operations above (NumPy or CuPy): the formula, and what the
                tests hold the others to
    numba       a parallel loop over the elements (contiguous NumPy arrays)
    cuda        one ``cupy.ElementwiseKernel`` whose body is the CUDA function
                ``adam_update`` below: one launch per parameter and step, where the
                reference makes a dozen (its source is registered with the others, so
                the nvcc test compiles it on machines without a GPU)
"""
import numpy as np
from numba import njit, prange

from minicnn.backend import get_array_module
from minicnn.kernels import _gpu
from minicnn.kernels.registry import register_kernel


def adam_step_reference(param, grad, m, v, beta1, beta2, step_size, correction2, eps):
    """In place: m, v, then param (see the module docstring for the formula)."""
    xp = get_array_module(param)
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * (grad * grad)
    param -= step_size * (m / (xp.sqrt(v) * correction2 + eps))


# ============================================================================ cpu (Numba)

@njit(parallel=True, cache=True)
def _adam_step_numba(param, grad, m, v, beta1, beta2, step_size, correction2, eps):
    for i in prange(param.size):
        g = grad[i]
        m_i = beta1 * m[i] + (1.0 - beta1) * g
        v_i = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i], v[i] = m_i, v_i
        param[i] -= step_size * (m_i / (np.sqrt(v_i) * correction2 + eps))


def adam_step_numba(param, grad, m, v, beta1, beta2, step_size, correction2, eps):
    """The fused loop for contiguous state; a gradient in another layout (a transposed
    view) is copied to C order first: one more pass, against the reference's eight."""
    if not all(a.flags.c_contiguous for a in (param, m, v)):
        return adam_step_reference(param, grad, m, v, beta1, beta2, step_size, correction2,
                                   eps)
    dtype = param.dtype.type
    arrays = (param, np.ascontiguousarray(grad), m, v)
    _adam_step_numba(*(a.reshape(-1) for a in arrays), dtype(beta1), dtype(beta2),
                     dtype(step_size), dtype(correction2), dtype(eps))


# ============================================================================ gpu (CuPy)

# One element of the update. A template rather than the kernels' usual ``T``: CuPy's
# ElementwiseKernel defines its type names inside the kernel, after this preamble.
_ADAM_UPDATE_CUDA = _gpu.register("adam_update", r"""
template <typename Real>
__device__ void adam_update(Real& param, const Real grad, Real& m, Real& v,
                            const Real beta1, const Real beta2, const Real step_size,
                            const Real correction2, const Real eps) {
    const Real m_new = beta1 * m + (Real(1) - beta1) * grad;
    const Real v_new = beta2 * v + (Real(1) - beta2) * grad * grad;
    m = m_new;
    v = v_new;
    param -= step_size * (m_new / (sqrt(v_new) * correction2 + eps));
}
""")


def _adam_kernel():
    """The ElementwiseKernel, built on first use (CuPy compiles it per dtype itself)."""
    return _gpu.elementwise(
        "minicnn_adam_step",
        "T grad, T beta1, T beta2, T step_size, T correction2, T eps", "T param, T m, T v",
        "adam_update(param, grad, m, v, beta1, beta2, step_size, correction2, eps)",
        preamble=_ADAM_UPDATE_CUDA)


def adam_step_cuda(param, grad, m, v, beta1, beta2, step_size, correction2, eps):
    """One launch over every element, in place; strided arrays are fine (CuPy indexes
    them). The gradient and the scalars are taken in the parameter's dtype, as the
    reference's in-place updates do."""
    dtype = param.dtype.type
    _adam_kernel()(grad.astype(param.dtype, copy=False), dtype(beta1), dtype(beta2),
                   dtype(step_size), dtype(correction2), dtype(eps), param, m, v)


adam_step = register_kernel("adam_step", reference=adam_step_reference,
                            numba=adam_step_numba, cuda=adam_step_cuda)
