"""Normalization: batch norm (Ioffe & Szegedy, 2015) and local response norm (AlexNet).

Notation: x is the input, y the output, gy = ∂L/∂y, gx = ∂L/∂x; per channel c, over the
M values of that channel in the batch (M = N·H·W for (N, C, H, W), N for (N, C),
N·L for (N, C, L)).
"""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.kernels import batchnorm as kernels
from minicnn.kernels import channels_first_view, channels_last
from minicnn.split_training import refuse_in_share
from minicnn.tensor import Function, Tensor


# ============================================================================ batch norm

def _as_rows(x):
    """x as an (M, C) matrix, one row per position (n, h, w), one column per channel.

    Free (a view) when x is stored channels-last — every convolution output is — and one
    copy otherwise. Per-channel statistics are then column reductions of a contiguous
    matrix, which the kernels do in one pass.
    """
    xp = get_array_module(x)
    moved = x.transpose((0,) + tuple(range(2, x.ndim)) + (1,))      # channels last
    return xp.ascontiguousarray(moved).reshape(-1, x.shape[1])


def _from_rows(rows, shape):
    """Undo ``_as_rows``: an array of ``shape`` viewing the (M, C) rows (channels-last)."""
    moved = rows.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],))
    return moved.transpose((0, moved.ndim - 1) + tuple(range(1, moved.ndim - 1)))


class LocalBatch:
    """The batch is what this process holds: its statistics need no combining.

    ``BatchNorm`` asks its *batch* for two reductions over every value of a channel;
    synchronized batch norm (``minicnn.distributed.sync_batchnorm.AcrossRanks``) answers
    the same two questions for the batch of all ranks together, with one collective each.
    """

    def combine_moments(self, count, mean, variance):
        """(values per channel, mean, biased variance) of the whole batch, given this
        process's own."""
        return count, mean, variance

    def sum_over_batch(self, *sums):
        """Per-channel sums over the whole batch, given this process's own."""
        return sums


LOCAL_BATCH = LocalBatch()


class BatchNorm(Function):
    """Batch normalization, per channel c:

        x̂ = (x − μ_c) / σ_c,   σ_c = √(var_c + ε),   y = γ_c · x̂ + β_c

    Training: μ, var are the batch's mean and biased variance, and the running statistics
    are updated in place, ``running = (1 − m)·running + m·batch`` — with the *unbiased*
    variance var·M/(M − 1), as PyTorch does. Eval: μ, var are the running statistics.

    Backward (training), the compact form:

        gx = (γ/σ) · (gy − mean(gy) − x̂ · mean(gy · x̂)),   gγ = Σ gy · x̂,   gβ = Σ gy

    (the last two terms of gx are the gradient flowing through μ and σ). Both means are
    per channel over the M values. Expanded with x̂ = (x − μ)/σ, gx is one per-channel
    affine map of gy and x,

        gx = A·gy + B·x + D,   A = γ/σ,   B = −A/σ · mean(gy·x̂),   D = −A·mean(gy) − B·μ

    which the kernels evaluate in a single pass after one pass for the two sums
    Σ gy and Σ gy·(x − μ). In eval mode the statistics are constants: gx = gy · γ/σ.

    ``batch`` says what "the batch" is (``LocalBatch``: this process's values;
    synchronized batch norm passes one spanning every rank): the statistics and the two
    sums of the backward are reduced through it, everything else is the same lines.

    Nothing activation-sized is saved beyond the input (which the graph keeps anyway; a
    channels-last copy of it if it arrived in NCHW memory): x̂ is recomputed from x inside
    the backward's passes.
    """

    def __init__(self, running_mean, running_var, has_weight, has_bias, training, momentum,
                 eps, batch=LOCAL_BATCH):
        self.running_mean, self.running_var = running_mean, running_var
        self.has_weight, self.has_bias = has_weight, has_bias
        self.training, self.momentum, self.eps = training, momentum, eps
        self.batch = batch

    def forward(self, x, *params):
        xp = get_array_module(x)
        weight = params[0] if self.has_weight else None
        bias = params[-1] if self.has_bias else None
        rows = _as_rows(x)
        if self.training:
            mean, var = self._batch_statistics(rows)
            self._update_running_stats(mean, var)
        else:
            mean = self.running_mean.astype(xp.float64)
            var = self.running_var.astype(xp.float64)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        scale = inv_std if weight is None else weight * inv_std
        shift = -mean * scale if bias is None else bias - mean * scale
        y_rows = kernels.scale_shift(rows, scale, shift) if len(rows) else rows.copy()
        self.shape, self.param_dtypes = x.shape, [p.dtype for p in params]
        self.save_for_backward(rows, mean, inv_std, weight)
        return _from_rows(y_rows, x.shape)

    def _batch_statistics(self, rows):
        """(μ, var) per channel over the batch; sets ``self.count``, the values per channel."""
        xp = get_array_module(rows)
        if len(rows):
            mean, var = kernels.channel_stats(rows)
        else:                                  # a rank with an empty share adds nothing
            mean = var = xp.zeros(rows.shape[1], dtype=xp.float64)
        self.count, mean, var = self.batch.combine_moments(len(rows), mean, var)
        if self.count < 2:
            raise ValueError(f"batch_norm: training needs more than one value per channel "
                             f"to estimate a variance, got {int(self.count)}")
        return mean, var

    def _update_running_stats(self, mean, var):
        if self.running_mean is None:
            return
        m, count = self.momentum, self.count
        unbiased = var * (count / (count - 1))
        self.running_mean[...] = (1 - m) * self.running_mean + m * mean
        self.running_var[...] = (1 - m) * self.running_var + m * unbiased

    def backward(self, gy):
        xp = get_array_module(gy)
        rows, mean, inv_std, weight = self.saved
        need_x, *need_params = self.needs_input_grad
        gy_rows = _as_rows(gy)
        gamma = 1.0 if weight is None else weight.astype(xp.float64)
        a = gamma * inv_std                                        # A = γ/σ
        if any(need_params) or (need_x and self.training):
            sum_gy, sum_gy_centered = self._local_sums(gy_rows, rows, mean)

        gx = None
        if need_x and self.training:
            total_gy, total_gy_centered = self.batch.sum_over_batch(sum_gy, sum_gy_centered)
            mean_gy = total_gy / self.count
            mean_gy_xhat = total_gy_centered * inv_std / self.count
            b = -a * inv_std * mean_gy_xhat                        # B = −A/σ · mean(gy·x̂)
            d = -a * mean_gy - b * mean                            # D = −A·mean(gy) − B·μ
            gx = _from_rows(kernels.scale_shift2(gy_rows, a, rows, b, d)
                            if len(rows) else gy_rows.copy(), self.shape)
        elif need_x:                               # eval: constant statistics, gx = gy · γ/σ
            gx = _from_rows(kernels.scale_shift(gy_rows, a, xp.zeros_like(a)), self.shape)

        grads = [gx]
        if self.has_weight:                                        # gγ = Σ gy · x̂
            grads.append((sum_gy_centered * inv_std).astype(self.param_dtypes[0])
                         if need_params[0] else None)
        if self.has_bias:                                          # gβ = Σ gy
            grads.append(sum_gy.astype(self.param_dtypes[-1]) if need_params[-1] else None)
        return tuple(grads)

    @staticmethod
    def _local_sums(gy_rows, rows, mean):
        """(Σ gy, Σ gy·(x − μ)) per channel over this process's values."""
        if len(rows):
            return kernels.backward_sums(gy_rows, rows, mean)
        xp = get_array_module(rows)
        zeros = xp.zeros(rows.shape[1], dtype=xp.float64)
        return zeros, zeros


def batch_norm_composed(x, weight=None, bias=None, eps=1e-5):
    """Training-mode batch norm written with ``mean`` and ``var``: the formula, to read.

    It computes what ``batch_norm(x, None, None, weight, bias)`` computes, and autograd
    derives the same gradients through mean and var that ``BatchNorm.backward`` writes
    out by hand; the tests hold one to the other. Slower, and no running statistics.
    """
    axes = (0,) + tuple(range(2, x.ndim))              # every axis but the channels
    per_channel = (1, -1) + (1,) * (x.ndim - 2)       # (C,) broadcast against x
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / (var + eps) ** 0.5
    if weight is not None:
        y = y * weight.reshape(per_channel)
    return y if bias is None else y + bias.reshape(per_channel)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=True,
               momentum=0.1, eps=1e-5):
    """Batch-normalize (N, C, ...) ``x`` per channel; see ``BatchNorm``.

    ``running_mean``/``running_var`` are raw arrays of shape (C,) (a module's buffers),
    updated in place when ``training``; either may be None only when ``training`` (no
    running statistics kept). ``weight`` (γ) and ``bias`` (β) are optional (C,) tensors.
    """
    data = x.data if isinstance(x, Tensor) else x
    if data.ndim < 2:
        raise ValueError(f"batch_norm: expected an (N, C, ...) input of rank 2 or more, got "
                         f"shape {data.shape}")
    if data.dtype.kind != "f":
        raise TypeError(f"batch_norm: expected a floating-point input, got dtype {data.dtype}")
    channels = data.shape[1]
    for label, value in (("running_mean", running_mean), ("running_var", running_var),
                         ("weight", weight), ("bias", bias)):
        if value is not None and tuple(value.shape) != (channels,):
            raise ValueError(f"batch_norm: {label} must have shape ({channels},) for an "
                             f"input with {channels} channels (shape {data.shape}), got "
                             f"{tuple(value.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: eval mode (training=False) needs running_mean and "
                         "running_var")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if training and data.size // channels < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel to "
                         f"estimate a variance, got input shape {data.shape}")
    for label, value in (("running_mean", running_mean), ("running_var", running_var)):
        if value is not None and get_array_module(value) is not get_array_module(data):
            raise ValueError(f"batch_norm: {label} and the input live on different devices; "
                             f"move the module with .to(device)")
    if training:
        refuse_in_share("batch_norm")
    params = [p for p in (weight, bias) if p is not None]
    function = BatchNorm(running_mean, running_var, weight is not None, bias is not None,
                         training, momentum, eps)
    return function(x, *params)


# ============================================================================ local response norm

def _window_sums(v, before, after):
    """s[..., c] = Σ v[..., c'] over c − before ≤ c' ≤ c + after (clipped to [0, C)).

    One cumulative sum over the (last, contiguous) channel axis and a difference of two of
    its entries per channel: O(C) whatever the window size. (The difference of two prefix
    sums rounds like the prefix sums, i.e. relative to Σ over ≤ C channels; LRN adds the
    window sum to k ≥ 1 after scaling by α ≈ 1e-4, so float32 rounding there is invisible.)
    """
    xp = get_array_module(v)
    C = v.shape[-1]
    prefix = xp.concatenate([xp.zeros(v.shape[:-1] + (1,), v.dtype), xp.cumsum(v, axis=-1)],
                            axis=-1)                      # prefix[..., c] = Σ_{c' < c} v
    channel = np.arange(C)
    upper = xp.asarray(np.minimum(channel + after, C - 1) + 1)
    lower = xp.asarray(np.maximum(channel - before, 0))
    return xp.take(prefix, upper, axis=-1) - xp.take(prefix, lower, axis=-1)


class LocalResponseNorm(Function):
    """Local response normalization across channels (Krizhevsky et al., 2012, §3.3):

        b_c = a_c / s_c^β,   s_c = k + α' Σ_{j ∈ W(c)} a_j²,   W(c) = [c − ⌊n/2⌋, c + ⌊(n−1)/2⌋]

    clipped to the existing channels, n = ``size``. α' = α as the paper writes it, or α/n
    with ``alpha_over_n`` (PyTorch's and Caffe's convention: same formula, α divided by the
    window size, so their α = 1e-4 is 5× weaker than the paper's with n = 5).

    Backward. ∂b_c/∂a_i = δ_ci s_c^(−β) − 2α'β a_c a_i s_c^(−β−1) [i ∈ W(c)], so

        ga_i = g_i s_i^(−β) − 2α'β a_i Σ_{c : i ∈ W(c)} g_c a_c s_c^(−β−1)

    and i ∈ W(c) ⇔ c ∈ [i − ⌊(n−1)/2⌋, i + ⌊n/2⌋]: the same window sum, mirrored (it differs
    from W(i) only for even n). The forward saves s and s^(−β).
    """

    def __init__(self, size, alpha, beta, k, alpha_over_n):
        self.size, self.beta, self.k = size, beta, k
        self.alpha = alpha / size if alpha_over_n else alpha

    def forward(self, x):
        a = channels_last(x)
        before, after = self.size // 2, (self.size - 1) // 2
        scale = self.k + self.alpha * _window_sums(a * a, before, after)
        scale_pow = scale ** -self.beta
        self.save_for_backward(a, scale, scale_pow)
        return channels_first_view(a * scale_pow)

    def backward(self, gy):
        g = channels_last(gy)
        a, scale, scale_pow = self.saved
        before, after = (self.size - 1) // 2, self.size // 2      # the mirrored window
        through_scale = _window_sums(g * a * scale_pow / scale, before, after)
        ga = g * scale_pow - (2 * self.alpha * self.beta) * a * through_scale
        return channels_first_view(ga.astype(a.dtype, copy=False))


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_over_n=False):
    """AlexNet's local response normalization of (N, C, H, W) ``x`` across channels.

    Defaults are the paper's (n = 5, α = 1e-4, β = 0.75, k = 2, α not divided by n); see
    ``LocalResponseNorm`` for the formula and the PyTorch/Caffe convention.
    """
    data = x.data if isinstance(x, Tensor) else x
    if data.ndim != 4:
        raise ValueError(f"local_response_norm: expected a 4-D (N, C, H, W) input, got shape "
                         f"{data.shape}")
    if data.dtype.kind != "f":
        raise TypeError(f"local_response_norm: expected a floating-point input, got dtype "
                        f"{data.dtype}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"local_response_norm: size must be a positive int, got {size!r}")
    return LocalResponseNorm(size, alpha, beta, k, alpha_over_n)(x)
