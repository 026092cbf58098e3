"""Gradient checking: hold every backward to finite differences.

Why finite differences check a gradient
---------------------------------------
A backward pass is hand-written calculus, and calculus written by hand has sign errors,
missing factors and forgotten broadcast sums. Finite differences need no calculus at
all: only the forward pass, which is much easier to get right. Taylor's theorem gives

    f(x + h) = f(x) + h f'(x) + h²/2 f''(x) + h³/6 f'''(x) + ...
    f(x - h) = f(x) - h f'(x) + h²/2 f''(x) - h³/6 f'''(x) + ...

and subtracting, the even terms cancel:

    (f(x + h) - f(x - h)) / 2h = f'(x) + O(h²)          (central difference)

so nudging one input element up and down and watching the output measures that
element's derivative with an error that shrinks like h². Rounding adds an error of about
ε_machine·|f| / h, which grows as h shrinks; the two balance near h = 1e-6 *in float64*
(ε ≈ 1e-16), leaving roughly ten correct digits. In float32 (ε ≈ 1e-7) the same recipe
leaves about one, which is why gradient checks always run in float64.

What exactly is compared
------------------------
``fn`` maps tensors to a tensor ``y``, so its derivative is a Jacobian, not a vector.
Instead of building the whole Jacobian J, we fix a random ``r`` shaped like ``y`` and
check the scalar

    L(x) = Σᵢ rᵢ · yᵢ(x),     whose gradient is   ∂L/∂x = Jᵀ r.

``Jᵀ r`` is precisely what backward computes when the output gradient is ``r``, so one
backward pass gives the analytic side; one pair of forward passes per input element gives
the numerical side. A wrong backward (a wrong row or column of J) changes Jᵀr unless the
error happens to be orthogonal to ``r`` — for a random ``r``, that has probability zero.

Pitfalls: the check needs ``fn`` to be smooth within ±h of the input, so keep inputs away
from kinks (ReLU at 0, ties in max) and make ``fn`` deterministic (seed any dropout).
"""
import numpy as np

from minicnn.backend import get_array_module, to_device
from minicnn.tensor import Tensor, no_grad


def numerical_grad(f, x, eps=1e-6):
    """∂f/∂x by central differences, one element of ``x`` at a time.

    ``f()`` takes no arguments and returns a float computed from the array ``x``; each
    element of ``x`` is nudged in place to x ± eps, and always put back. Works for any
    memory layout because it indexes element by element (this is test code: clarity
    beats speed).
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(*x.shape):
        original = x[index].copy()
        x[index] = original + eps
        f_plus = f()
        x[index] = original - eps
        f_minus = f()
        x[index] = original
        grad[index] = (f_plus - f_minus) / (2 * eps)
    return grad


def _as_outputs(y):
    outputs = y if isinstance(y, (tuple, list)) else (y,)
    for out in outputs:
        if not isinstance(out, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor (or a tuple of Tensors), "
                            f"got {type(out).__name__}")
    return outputs


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check the backward of ``fn`` against central finite differences (see module doc).

    ``fn(*inputs)`` returns a Tensor or a tuple of Tensors. Every input that is a Tensor
    with ``requires_grad`` is checked and must be float64. An element passes when

        |analytic − numeric| ≤ atol + rtol · |numeric|.

    Returns True, or raises AssertionError naming the input, its worst element's index,
    both values and the tolerance — everything needed to reproduce the failure.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input is a Tensor with requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; finite "
                            f"differences are only accurate in float64")

    # the fixed random projection r, one array per output
    outputs = _as_outputs(fn(*inputs))
    rng = np.random.default_rng(seed)
    projections = []
    for out in outputs:
        r = rng.standard_normal(out.shape).astype(out.dtype)
        projections.append(to_device(r, out.device))

    # analytic side: backward with r as the output gradient gives Jᵀr directly (old grads
    # set aside; with several outputs the leaves add up Σₖ Jₖᵀ rₖ, the gradient of L)
    saved_grads = [inputs[i].grad for i in checked]
    for i in checked:
        inputs[i].grad = None
    for out, r in zip(outputs, projections):
        if out.requires_grad:
            out.backward(r, retain_graph=True)
    analytic = []
    for i in checked:
        g = inputs[i].grad
        analytic.append(np.zeros(inputs[i].shape) if g is None else to_device(g, "cpu"))
    for i, g in zip(checked, saved_grads):
        inputs[i].grad = g

    # numerical side: the same L, computed by forward passes only
    def projected_output():
        with no_grad():
            ys = _as_outputs(fn(*inputs))
        return sum(float(get_array_module(y.data).sum(y.data * r))
                   for y, r in zip(ys, projections))

    for position, i in enumerate(checked):
        numeric = numerical_grad(projected_output, inputs[i].data, eps)
        _compare(i, analytic[position], numeric, atol, rtol)
    return True


def _compare(input_index, analytic, numeric, atol, rtol):
    if analytic.shape != numeric.shape:
        raise AssertionError(f"gradcheck: input {input_index}: analytic gradient has shape "
                             f"{analytic.shape}, the input has shape {numeric.shape}")
    tolerance = atol + rtol * np.abs(numeric)
    excess = np.abs(analytic - numeric) - tolerance
    if excess.size == 0 or not (np.isnan(excess).any() or (excess > 0).any()):
        return
    # NaN counts as the worst possible disagreement
    worst = np.unravel_index(int(np.argmax(np.where(np.isnan(excess), np.inf, excess))),
                             excess.shape)
    raise AssertionError(
        f"gradcheck: input {input_index}, element {tuple(int(k) for k in worst)}: "
        f"analytic {analytic[worst]!r} vs numeric {numeric[worst]!r} "
        f"(|difference| {abs(analytic[worst] - numeric[worst]):.3g} > "
        f"tolerance {tolerance[worst]:.3g} = atol {atol} + rtol {rtol} * |numeric|); "
        f"{int((excess > 0).sum())} of {excess.size} elements fail")
