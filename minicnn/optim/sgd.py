"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""
from minicnn.optim.optimizer import Optimizer


class SGD(Optimizer):
    """SGD as PyTorch defines it (Sutskever et al. 2013 momentum, L2 weight decay).

    With gradient g, parameter θ, learning rate η, momentum μ, dampening τ, weight decay λ:

        g ← g + λ·θ                                  (L2 penalty λ/2·‖θ‖², folded into g)
        b ← g                  on the first step,
        b ← μ·b + (1 − τ)·g    afterwards             (the momentum buffer)
        d ← g + μ·b  (Nesterov)   or   d ← b  (plain)
        θ ← θ − η·d

    Note the learning rate multiplies the *buffer*, not the gradient entering it, so
    changing η (a schedule) takes effect at once.
    """

    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got "
                             f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0 and dampening = 0, "
                             f"got momentum={momentum}, dampening={dampening}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def update(self, param, grad, state, group):
        lr, momentum = float(group["lr"]), float(group["momentum"])
        weight_decay = float(group["weight_decay"])
        if weight_decay:
            grad = grad + weight_decay * param.data          # a new array: p.grad is untouched
        if momentum:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = grad.copy()
            else:
                buffer *= momentum
                buffer += (1.0 - float(group["dampening"])) * grad
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        param.data -= lr * grad
