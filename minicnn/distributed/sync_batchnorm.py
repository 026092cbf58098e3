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
from minicnn.functional.norm import _as_rows, _from_rows
from minicnn.kernels import batchnorm as kernels
from minicnn.nn.norm import BatchNorm1d, BatchNorm2d
from minicnn.tensor import Function, Tensor


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


class SyncBatchNormFunction(Function):
    """Batch norm in training mode with statistics over every rank's batch (module doc).

    Inputs: x (N, C, ...) and optionally γ and β (C,). Saves the input rows, the global
    mean and 1/σ; the running statistics are updated in place, as in ``BatchNorm``.
    """

    def __init__(self, communicator, running_mean, running_var, has_weight, has_bias,
                 momentum, eps):
        self.communicator = communicator
        self.running_mean, self.running_var = running_mean, running_var
        self.has_weight, self.has_bias = has_weight, has_bias
        self.momentum, self.eps = momentum, eps

    def forward(self, x, *params):
        xp = get_array_module(x)
        weight = params[0] if self.has_weight else None
        bias = params[-1] if self.has_bias else None
        rows = _as_rows(x)
        channels, count = rows.shape[1], rows.shape[0]
        if count:
            local_mean, local_var = kernels.channel_stats(rows)
        else:                                  # a rank with an empty batch adds nothing
            local_mean = local_var = xp.zeros(channels, dtype=xp.float64)
        mine = xp.concatenate([xp.asarray([count], dtype=xp.float64), local_mean, local_var])
        gathered = self.communicator.allgather(mine, what="SyncBatchNorm statistics")
        total, mean, var = combine_statistics(gathered[:, 0], gathered[:, 1:1 + channels],
                                              gathered[:, 1 + channels:])
        if total < 2:
            raise ValueError(f"SyncBatchNorm: training needs more than one value per channel "
                             f"over all ranks to estimate a variance, got {int(total)}")
        self._update_running_stats(mean, var, total)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        scale = inv_std if weight is None else weight * inv_std
        shift = -mean * scale if bias is None else bias - mean * scale
        y_rows = kernels.scale_shift(rows, scale, shift) if count else rows.copy()
        self.shape, self.rows, self.mean, self.inv_std = x.shape, rows, mean, inv_std
        self.total, self.weight = total, weight
        self.param_dtypes = [p.dtype for p in params]
        return _from_rows(y_rows, x.shape)

    def _update_running_stats(self, mean, var, total):
        if self.running_mean is None:
            return
        m = self.momentum
        self.running_mean[...] = (1 - m) * self.running_mean + m * mean
        self.running_var[...] = (1 - m) * self.running_var + m * var * (total / (total - 1))

    def backward(self, gy):
        xp = get_array_module(gy)
        rows, mean, inv_std, total = self.rows, self.mean, self.inv_std, self.total
        channels = rows.shape[1]
        gamma = 1.0 if self.weight is None else self.weight.astype(xp.float64)
        need_x, *need_params = self.needs_input_grad
        gy_rows = _as_rows(gy)
        if rows.shape[0]:
            sum_gy, sum_gy_centered = kernels.backward_sums(gy_rows, rows, mean)
        else:
            sum_gy = sum_gy_centered = xp.zeros(channels, dtype=xp.float64)

        gx = None
        if need_x:
            both = xp.concatenate([sum_gy, sum_gy_centered])
            self.communicator.allreduce_(both, what="SyncBatchNorm gradient sums")
            global_gy, global_gy_centered = both[:channels], both[channels:]
            a = gamma * inv_std
            b = -a * inv_std ** 2 * (global_gy_centered / total)
            d = -a * (global_gy / total) - b * mean
            gx_rows = kernels.scale_shift2(gy_rows, a, rows, b, d) if rows.shape[0] \
                else gy_rows.copy()
            gx = _from_rows(gx_rows, self.shape)
        param_grads = []
        if self.has_weight:
            param_grads.append(sum_gy_centered * inv_std)          # local Σ gy · x̂
        if self.has_bias:
            param_grads.append(sum_gy)                             # local Σ gy
        return (gx,) + tuple(None if not needed else g.astype(dtype) for g, needed, dtype
                             in zip(param_grads, need_params, self.param_dtypes))


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
    function = SyncBatchNormFunction(communicator, running_mean, running_var,
                                     weight is not None, bias is not None, momentum, eps)
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
