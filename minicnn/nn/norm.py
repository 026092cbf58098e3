"""Normalization layers: batch norm and local response norm."""
import numpy as np

from minicnn import functional as F
from minicnn.nn.module import Module, Parameter


class BatchNormNd(Module):
    """Batch normalization (Ioffe & Szegedy 2015): what ``BatchNorm1d`` and ``BatchNorm2d``
    share (tools that treat both alike, such as folding, test for this class).

    y = γ · (x − μ) / √(σ² + ε) + β, with μ, σ² the batch statistics per channel in
    training (and running = (1 − m)·running + m·batch, unbiased variance) and the running
    statistics in eval mode. γ, β are parameters; the running statistics are buffers.
    """
    expected_ndim = ()
    independent_samples = False           # training normalises with the batch's statistics

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(num_features, dtype=dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype=dtype)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        else:
            self.running_mean = self.running_var = None

    def forward(self, x):
        if x.ndim not in self.expected_ndim or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected input of "
                             f"rank {' or '.join(map(str, self.expected_ndim))} with "
                             f"{self.num_features} channels on axis 1, got shape {x.shape}")
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch_stats, momentum=self.momentum, eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}")


class BatchNorm2d(BatchNormNd):
    """Batch norm over (N, C, H, W): statistics per channel over N, H and W."""
    expected_ndim = (4,)


class BatchNorm1d(BatchNormNd):
    """Batch norm over (N, C) (or (N, C, L)): statistics per feature over the batch."""
    expected_ndim = (2, 3)


class LocalResponseNorm(Module):
    """AlexNet's local response normalization across ``size`` neighbouring channels.

    b = a / (k + α · Σ a²)^β. ``alpha_over_n=True`` divides α by ``size`` as PyTorch
    and Caffe do; the AlexNet paper does not.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_over_n=False):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.alpha_over_n = alpha_over_n

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k,
                                     self.alpha_over_n)

    def extra_repr(self):
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
                + (", alpha_over_n=True" if self.alpha_over_n else ""))
