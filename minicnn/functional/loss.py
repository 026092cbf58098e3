"""Losses and metrics: cross-entropy (with label smoothing), NLL, MSE, top-k accuracy.

``cross_entropy`` is one fused Function (log-softmax and the negative log-likelihood
together) because its gradient is then the famously simple ``softmax(z) − target``, and
it is both faster and more stable than chaining the two.
"""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.tensor import Function, Tensor
from minicnn.functional.math import _check_float


def _check_labels(name, logits, labels, num_classes):
    if logits.ndim != 2:
        raise ValueError(f"{name}: expected logits of shape (N, classes), got {logits.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got dtype {labels.dtype}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"{name}: expected labels of shape ({logits.shape[0]},) to match "
                         f"logits {logits.shape}, got {labels.shape}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")


class CrossEntropy(Function):
    """Softmax cross-entropy with integer labels.

    With p = softmax(z), label y, smoothing ε over K classes and class weights w
    (all 1 by default), each sample's loss is

        ℓ = (1 − ε)·w_y·(−log p_y) + (ε/K)·Σₖ wₖ·(−log pₖ)

    i.e. cross-entropy against the smoothed target q = (1 − ε)·onehot(y) + ε/K (Szegedy et
    al. 2015, §7). Writing cₖ for the coefficient of −log pₖ, the gradient is

        ∂ℓ/∂zⱼ = pⱼ·Σₖ cₖ − cⱼ      (= pⱼ − onehot(y)ⱼ without smoothing or weights).

    ``reduction="mean"`` divides the sum by Σᵢ w_yᵢ (= N without weights), as PyTorch does.
    """
    def __init__(self, labels, label_smoothing=0.0, weight=None, reduction="mean"):
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', "
                             f"got {reduction!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"cross_entropy: label_smoothing must lie in [0, 1), "
                             f"got {label_smoothing}")
        self.labels, self.smoothing = labels, label_smoothing
        self.weight, self.reduction = weight, reduction

    def forward(self, z):
        _check_float("cross_entropy", z)
        n, k = z.shape if z.ndim == 2 else (None, None)
        _check_labels("cross_entropy", z, self.labels, k)
        xp = get_array_module(z)
        shifted = z - z.max(axis=1, keepdims=True)
        log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        rows = xp.arange(n)
        # c[i, k]: the coefficient of −log p[i, k] in sample i's loss
        weight = xp.ones(k, dtype=z.dtype) if self.weight is None else xp.asarray(self.weight, dtype=z.dtype)
        c = xp.broadcast_to(weight * (self.smoothing / k), (n, k)).copy()
        c[rows, self.labels] += (1.0 - self.smoothing) * weight[self.labels]
        self.save_for_backward(log_p, c)
        losses = -(c * log_p).sum(axis=1)
        self.normalizer = weight[self.labels].sum() if self.reduction == "mean" else 1
        if self.reduction == "none":
            return losses
        return xp.asarray(losses.sum() / self.normalizer, dtype=z.dtype)

    def backward(self, gy):
        xp = get_array_module(gy)
        log_p, c = self.saved
        gz = xp.exp(log_p) * c.sum(axis=1, keepdims=True) - c
        if self.reduction == "none":
            return gz * gy[:, None]
        return gz * (gy / self.normalizer)


class NLLLoss(Function):
    """Negative log-likelihood of log-probabilities: ℓ = −log_p[y];   g = −1 at y, 0 elsewhere."""
    def __init__(self, labels, reduction="mean"):
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"nll_loss: reduction must be 'mean', 'sum' or 'none', "
                             f"got {reduction!r}")
        self.labels, self.reduction = labels, reduction

    def forward(self, log_p):
        _check_float("nll_loss", log_p)
        _check_labels("nll_loss", log_p, self.labels, log_p.shape[1] if log_p.ndim == 2 else 0)
        xp = get_array_module(log_p)
        self.shape, self.dtype = log_p.shape, log_p.dtype
        losses = -log_p[xp.arange(log_p.shape[0]), self.labels]
        if self.reduction == "none":
            return losses
        total = losses.sum()
        return total / log_p.shape[0] if self.reduction == "mean" else total

    def backward(self, gy):
        xp = get_array_module(gy)
        n = self.shape[0]
        g = xp.zeros(self.shape, dtype=self.dtype)
        scale = gy if self.reduction == "none" else (gy / n if self.reduction == "mean" else gy)
        g[xp.arange(n), self.labels] = -scale
        return g


class MSELoss(Function):
    """ℓ = mean((a − b)²);   ga = 2(a − b)/n, gb = −ga  (``sum`` drops the 1/n)."""
    def __init__(self, reduction="mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"mse_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def forward(self, a, b):
        if a.shape != b.shape:
            raise ValueError(f"mse_loss: prediction {a.shape} and target {b.shape} differ")
        diff = a - b
        self.save_for_backward(diff)
        total = (diff * diff).sum()
        return total / a.size if self.reduction == "mean" else total

    def backward(self, gy):
        diff, = self.saved
        scale = 2 / diff.size if self.reduction == "mean" else 2
        g = gy * scale * diff
        return g, -g


def _raw(x):
    """The array inside a Tensor; lists become arrays (labels typed by hand)."""
    if isinstance(x, Tensor):
        return x.data
    return np.asarray(x) if isinstance(x, (list, tuple)) else x


def cross_entropy(logits, labels, label_smoothing=0.0, weight=None, reduction="mean"):
    return CrossEntropy(_raw(labels), label_smoothing, _raw(weight), reduction)(logits)


def nll_loss(log_probabilities, labels, reduction="mean"):
    return NLLLoss(_raw(labels), reduction)(log_probabilities)


def mse_loss(prediction, target, reduction="mean"):
    return MSELoss(reduction)(prediction, target)


def accuracy(logits, labels, topk=1):
    """Fraction of samples whose label is among the ``topk`` highest scores."""
    z, y = _raw(logits), _raw(labels)
    xp = get_array_module(z)
    if topk == 1:
        return float((z.argmax(axis=1) == y).mean())
    top = xp.argpartition(-z, kth=topk - 1, axis=1)[:, :topk]
    return float((top == y[:, None]).any(axis=1).mean())


def topk_correct(logits, labels, ks=(1, 5)):
    """Number of samples whose label is in the top-k, for each k in ``ks``."""
    z, y = _raw(logits), _raw(labels)
    xp = get_array_module(z)
    order = xp.argsort(-z, axis=1)
    hits = order == y[:, None]
    return tuple(int(hits[:, :min(k, z.shape[1])].any(axis=1).sum()) for k in ks)
