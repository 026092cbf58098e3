"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019)."""
import math

from minicnn.backend import get_array_module
from minicnn.kernels.optim import adam_step
from minicnn.optim.optimizer import Optimizer


class Adam(Optimizer):
    """Adam: per-element step sizes from running moments of the gradient.

    With β₁, β₂, ε, learning rate η, step t = 1, 2, ... and (L2) weight decay λ:

        g ← g + λ·θ                       (Adam's weight decay is an L2 penalty in g)
        m ← β₁·m + (1 − β₁)·g             (first moment, m₀ = 0)
        v ← β₂·v + (1 − β₂)·g²            (second moment, v₀ = 0)
        m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)     (undo the bias toward the zero start)
        θ ← θ − η · m̂ / (√v̂ + ε)

    Implemented with the bias corrections folded into scalars, so each step costs a few
    whole-array operations: θ ← θ − (η / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε).
    """
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        name = type(self).__name__
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"{name}: lr, eps and weight_decay must be >= 0, got lr={lr}, "
                             f"eps={eps}, weight_decay={weight_decay}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{name}: betas must be two numbers in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def update(self, param, grad, state, group):
        lr, eps = float(group["lr"]), float(group["eps"])
        weight_decay = float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        if weight_decay and self.decoupled:
            param.data *= 1.0 - lr * weight_decay           # AdamW: shrink θ directly
        elif weight_decay:
            grad = grad + weight_decay * param.data         # Adam: L2 penalty in the gradient
        xp = get_array_module(param.data)
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param.data)    # same shape, dtype and device
            state["exp_avg_sq"] = xp.zeros_like(param.data)
        state["step"] += 1
        t = state["step"]
        bias1, bias2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        # one pass over memory (Numba on the CPU, one CUDA kernel on the GPU): kernels/optim.py
        adam_step(param.data, grad, state["exp_avg"], state["exp_avg_sq"], beta1, beta2,
                  step_size=lr / bias1, correction2=1.0 / math.sqrt(bias2), eps=eps)


class AdamW(Adam):
    """AdamW: Adam with *decoupled* weight decay.

    Instead of adding λ·θ to the gradient (where Adam's per-element scaling would weaken
    it for parameters with large gradients), shrink the weights directly before the Adam
    step:  θ ← θ · (1 − η·λ), then the Adam update with the raw gradient.
    """
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

