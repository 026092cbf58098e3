"""Synchronized batch normalization: the statistics of the batch of *all* ranks.

Batch norm (``minicnn.functional.norm.BatchNorm``) normalizes channel c by the mean μ and
variance σ² of that channel over the batch. Under data parallelism each rank holds only
its B of the P·B samples; plain batch norm then normalizes by per-rank statistics — a
different function, and a noisy one when B is small. ``SyncBatchNorm`` computes the
statistics of the whole global batch, so P ranks with B samples each compute exactly what
one process computes with P·B. It costs one small collective in the forward pass and one
in the backward pass per layer (2·C numbers each); the activations never move.

Forward: combining per-rank statistics
--------------------------------------
Rank r has n_r values per channel, with mean μ_r and (biased) variance v_r, computed by the
same one-pass kernel as plain batch norm. One ``Allgather`` gives every rank all of them,
and (Chan, Golub & LeVeque's pairwise update, for P parts at once)

    N  = Σ_r n_r
    μ  = Σ_r n_r·μ_r / N
    σ² = Σ_r n_r·(v_r + (μ_r − μ)²) / N

Gathering (n, μ, v) moves P·(2C + 1) numbers where an ``Allreduce`` of the per-channel
sums Σx, Σx² and the count would move 2C + 1 — a few kilobytes either way — and avoids
the cancellation of σ² = Σx²/N − μ², which loses every digit when |μ| ≫ σ. The running
statistics are updated with N (unbiased variance σ²·N/(N−1)), so they are the same on
every rank.

Backward
--------
With x̂ = (x − μ)/σ and gy = ∂L/∂y, the gradient of plain batch norm is

    gx = (γ/σ) · (gy − (1/N)·Σ gy − x̂ · (1/N)·Σ gy·x̂)

and both sums run over the *global* batch: every value of x moved μ and σ, which every
rank used. So each rank computes its two per-channel sums Σ gy and Σ gy·(x − μ) over its
own values, one ``Allreduce`` adds them over the ranks, and gx follows locally. The
parameter gradients ∂L/∂γ = Σ gy·x̂ and ∂L/∂β = Σ gy are left as per-rank sums: the
data-parallel gradient averaging adds them (and divides by P, consistent with each rank's
loss being a mean over its own B samples).

Every training-mode forward and backward of a ``SyncBatchNorm`` is a collective: all ranks
must run it together (they do, in data-parallel training). In eval mode it is plain batch
norm, with no communication.
"""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.distributed import comm as _comm
from minicnn.functional.norm import BatchNorm
from minicnn.nn.norm import BatchNorm1d, BatchNorm2d
from minicnn.tensor import Tensor


def combine_statistics(counts, means, variances):
    """(N, μ, σ²) of the union of parts with sizes ``counts`` (P,), per-channel means and
    biased variances ``means``/``variances`` (P, C). See the module doc."""
    xp = get_array_module(means)
    counts = xp.asarray(counts, dtype=xp.float64)
    total = float(counts.sum())
    weights = counts[:, None] / total
    mean = (weights * means).sum(axis=0)
    variance = (weights * (variances + (means - mean) ** 2)).sum(axis=0)
    return total, mean, variance


class AcrossRanks:
    """The batch of every rank of ``communicator`` together, as ``BatchNorm`` asks for it.

    ``BatchNorm`` (``minicnn.functional.norm``) reduces its statistics and its two backward
    sums through a *batch* object; this one makes each reduction a collective, so the
    same Function computes synchronized batch norm (module doc).
    """

    def __init__(self, communicator):
        self.communicator = communicator

    def combine_moments(self, count, mean, variance):
        """(N, μ, σ²) over all ranks: one Allgather of every rank's (n, μ_r, v_r)."""
        xp = get_array_module(mean)
        channels = len(mean)
        mine = xp.concatenate([xp.asarray([count], dtype=xp.float64), mean, variance])
        gathered = self.communicator.allgather(mine, what="SyncBatchNorm statistics")
        return combine_statistics(gathered[:, 0], gathered[:, 1:1 + channels],
                                  gathered[:, 1 + channels:])

    def sum_over_batch(self, *sums):
        """The per-channel sums added over all ranks: one Allreduce for all of them."""
        xp = get_array_module(sums[0])
        both = xp.concatenate(sums)
        self.communicator.allreduce_(both, what="SyncBatchNorm gradient sums")
        return tuple(both[i * len(sums[0]):(i + 1) * len(sums[0])] for i in range(len(sums)))


def sync_batch_norm(x, running_mean, running_var, weight=None, bias=None, momentum=0.1,
                    eps=1e-5, communicator=None):
    """Training-mode batch norm of (N, C, ...) ``x`` with statistics over all ranks of
    ``communicator`` (default: the world); arguments as ``F.batch_norm``."""
    communicator = communicator or _comm.world()
    data = x.data if isinstance(x, Tensor) else x
    if data.ndim < 2:
        raise ValueError(f"sync_batch_norm: expected an (N, C, ...) input of rank 2 or more, "
                         f"got shape {data.shape}")
    if data.dtype.kind != "f":
        raise TypeError(f"sync_batch_norm: expected a floating-point input, got dtype "
                        f"{data.dtype}")
    channels = data.shape[1]
    for label, value in (("running_mean", running_mean), ("running_var", running_var),
                         ("weight", weight), ("bias", bias)):
        if value is not None and tuple(value.shape) != (channels,):
            raise ValueError(f"sync_batch_norm: {label} must have shape ({channels},) for an "
                             f"input with {channels} channels (shape {data.shape}), got "
                             f"{tuple(value.shape)}")
    params = [p for p in (weight, bias) if p is not None]
    function = BatchNorm(running_mean, running_var, weight is not None, bias is not None,
                         training=True, momentum=momentum, eps=eps,
                         batch=AcrossRanks(communicator))
    return function(x, *params)


class _Synchronized:
    """Mixed into a batch-norm module: in training, statistics over all ranks."""
    communicator = None        # None: the world communicator at the time of the call

    def forward(self, x):
        if not self.training:
            # eval: running statistics, nothing to share (and no collective, so ranks may
            # evaluate different numbers of batches). Without running statistics, each
            # rank normalizes by its own batch here.
            return super().forward(x)
        if x.ndim not in self.expected_ndim or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected input of "
                             f"rank {' or '.join(map(str, self.expected_ndim))} with "
                             f"{self.num_features} channels on axis 1, got shape {x.shape}")
        return sync_batch_norm(x, self.running_mean, self.running_var, self.weight,
                               self.bias, self.momentum, self.eps,
                               self.communicator or _comm.world())


class SyncBatchNorm2d(_Synchronized, BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of every rank's batch together.

    Still a ``BatchNorm2d`` for every tool that asks (folding, summaries, weight decay
    groups): the parameters, buffers and eval mode are the same.
    """


class SyncBatchNorm1d(_Synchronized, BatchNorm1d):
    """``BatchNorm1d`` with statistics over every rank's batch (see ``SyncBatchNorm2d``)."""


SyncBatchNorm = SyncBatchNorm2d


def _synchronized_copy(module, communicator):
    """A SyncBatchNorm holding ``module``'s own parameter objects and buffer arrays (so an
    optimizer made before the swap still updates them), its mode and its hooks."""
    kind = SyncBatchNorm2d if isinstance(module, BatchNorm2d) else SyncBatchNorm1d
    dtype = module.weight.dtype if module.weight is not None else (
        module.running_mean.dtype if module.running_mean is not None else np.float32)
    new = kind(module.num_features, module.eps, module.momentum, module.affine,
               module.track_running_stats, dtype=dtype)
    if module.affine:
        new.weight, new.bias = module.weight, module.bias
    if module.track_running_stats:
        new.register_buffer("running_mean", module.running_mean)
        new.register_buffer("running_var", module.running_var)
    new.communicator = communicator
    new.train(module.training)
    for hook in module._forward_hooks:
        new.register_forward_hook(hook)
    return new


def convert_sync_batchnorm(model, communicator=None):
    """Replace every ``BatchNorm2d``/``BatchNorm1d`` of ``model`` by its synchronized
    version, in place (same names, same position, same parameters and buffers); returns
    ``model``. Subclasses with behaviour of their own (e.g. frozen batch norm) are left
    alone. A model that *is* a batch norm is returned converted.
    """
    def convertible(module):
        return type(module) in (BatchNorm2d, BatchNorm1d)

    if convertible(model):
        return _synchronized_copy(model, communicator)
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if convertible(child):
                new = _synchronized_copy(child, communicator)
                # assign in the table directly: it keeps the child's position (a
                # Sequential runs its children in table order) — setattr would move it last
                parent._modules[name] = new
                object.__setattr__(parent, name, new)
    return model
