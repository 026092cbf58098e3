"""RMSProp (Tieleman & Hinton, 2012), in PyTorch's form and in TensorFlow's."""
from minicnn.backend import get_array_module
from minicnn.optim.optimizer import Optimizer


class RMSProp(Optimizer):
    """Divide each gradient element by a running root-mean-square of its recent values.

    With decay ρ (``alpha``), ε, learning rate η, momentum μ and L2 weight decay λ,
    the default (PyTorch) form is

        g ← g + λ·θ
        s ← ρ·s + (1 − ρ)·g²                  (s₀ = 0)
        b ← μ·b + g / (√s + ε)                (only with momentum; b₀ = 0)
        θ ← θ − η·b        (θ ← θ − η·g / (√s + ε) without momentum)

    ``tf_style=True`` follows TensorFlow's ``RMSPropOptimizer``, which EfficientNet,
    MobileNet and Inception-v3 were trained with (their published hyperparameters, e.g.
    ρ = 0.9, μ = 0.9, ε = 1e-3, assume it):

        s ← ρ·s + (1 − ρ)·g²                  (s₀ = 1, not 0)
        b ← μ·b + η·g / √(s + ε)              (ε *inside* the root; η inside the buffer)
        θ ← θ − b

    The differences matter: with s₀ = 0 the first steps divide by a tiny √s and are huge
    (≈ η/√(1 − ρ) per element), while s₀ = 1 starts gently; ε = 1e-3 inside the root
    bounds the step by η·|g|/√ε, far looser than outside it.
    """

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0,
                 tf_style=False):
        if lr < 0 or eps < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"RMSProp: lr, eps, momentum and weight_decay must be >= 0, got "
                             f"lr={lr}, eps={eps}, momentum={momentum}, "
                             f"weight_decay={weight_decay}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"RMSProp: alpha (the decay ρ) must lie in [0, 1), got {alpha}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                                      weight_decay=weight_decay, tf_style=tf_style))

    def update(self, param, grad, state, group):
        xp = get_array_module(param.data)
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        momentum, weight_decay = float(group["momentum"]), float(group["weight_decay"])
        tf_style = bool(group["tf_style"])
        if weight_decay:
            grad = grad + weight_decay * param.data
        if "square_avg" not in state:
            state["square_avg"] = (xp.ones_like if tf_style else xp.zeros_like)(param.data)
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1.0 - alpha) * (grad * grad)
        if tf_style:
            step = grad / xp.sqrt(square_avg + eps)
            step *= lr                      # TensorFlow accumulates η·g/√(s+ε) in the buffer
        else:
            step = grad / (xp.sqrt(square_avg) + eps)
        if momentum:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = xp.zeros_like(param.data)
            buffer *= momentum
            buffer += step
            step = buffer
        if tf_style:
            param.data -= step
        else:
            param.data -= lr * step


RMSprop = RMSProp  # PyTorch's spelling
