"""Dropout (Srivastava et al., 2014), spatial dropout and stochastic depth's drop-path.

All three are *inverted* dropout: in training, y = x · mask with

    mask = keep / (1 − p),   keep ~ Bernoulli(1 − p)

so that E[y] = x and evaluation needs no rescaling: outside training (or with p = 0) they
are the identity and return their input unchanged. The backward is gx = gy · mask. They
differ only in what one random draw covers:

    dropout      every element                     mask shape = x.shape
    dropout2d    whole feature maps (Tompson et    mask shape (N, C, 1, 1)
                 al., 2015): neighbouring pixels
                 are correlated, so dropping single
                 pixels barely regularizes a conv
    drop_path    a whole sample's residual branch  mask shape (N, 1, 1, ...)
                 (Huang et al., 2016; the per-
                 sample form used by EfficientNet)

Masks are made in the input's dtype (a float32 network stays float32) and, for an
element-wise mask, in the input's memory order (a channels-last activation stays
channels-last).

Randomness: pass ``rng`` (a ``numpy.random.Generator``), or use the module's generator,
seeded with ``manual_seed(seed)``, whose state ``rng_state()``/``set_rng_state()`` read and
restore (checkpoints save it). Every draw comes from that host generator, on either device:
on the GPU each call takes one 64-bit seed from it and the device computes the mask from
that seed alone (``minicnn.kernels.random``: counter-based, no state on the device), so a
run resumed from a checkpoint draws the same masks on the GPU too. With an ``rng`` on the
GPU the numbers themselves are drawn on the host and copied over (the same masks as on
the CPU, but slower).
"""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.kernels.random import counter_uniform_cuda
from minicnn.random import register_generator
from minicnn.split_training import refuse_in_share
from minicnn.tensor import Function, Tensor

_generator = np.random.default_rng()
# a function, not the generator: manual_seed replaces it
register_generator("module:minicnn.functional.dropout._generator", lambda: _generator)


def manual_seed(seed):
    """Seed the generator dropout uses when no ``rng`` is given, on every device."""
    global _generator
    _generator = np.random.default_rng(seed)


def rng_state():
    """The state of dropout's generator (a dict of plain values, as NumPy gives it)."""
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a state from ``rng_state()``: the next masks are those that followed it."""
    _generator.bit_generator.state = state


def _uniform(xp, shape, dtype, rng):
    """Uniform [0, 1) numbers of ``dtype`` (float32 or float64) on ``xp``'s device."""
    if xp is np:
        return (_generator if rng is None else rng).random(shape, dtype=dtype)
    if rng is None:                        # one seed from the host, the mask on the device
        return counter_uniform_cuda(int(_generator.integers(2 ** 63)), shape, dtype)
    return xp.asarray(rng.random(shape, dtype=dtype))             # host draw, copied over


def _uniform_like(x, rng):
    """Uniform numbers shaped like ``x`` and laid out in memory like ``x``.

    Draw them in x's memory order (axes sorted by decreasing stride) and view them in x's
    axis order: for a channels-last (N, C, H, W) view that is an (N, H, W, C) draw seen as
    (N, C, H, W), so x · mask keeps x's layout and reads both arrays in one sweep.
    """
    xp = get_array_module(x)
    order = sorted(range(x.ndim), key=lambda axis: -x.strides[axis])
    draw = _uniform(xp, tuple(x.shape[axis] for axis in order), _float_dtype(x), rng)
    return draw.transpose(tuple(int(axis) for axis in np.argsort(order)))


def _float_dtype(x):
    return x.dtype if x.dtype in (np.float32, np.float64) else np.float32


def _keep_mask(uniform, p, dtype):
    """keep / (1 − p) with keep = (u ≥ p), which is 1 with probability 1 − p."""
    mask = (uniform >= p).astype(dtype)
    mask *= dtype.type(1.0 / (1.0 - p))
    return mask


class MaskMultiply(Function):
    """y = x · mask (``mask`` broadcasts to x);   gx = gy · mask  (the mask gets none)."""

    def forward(self, x, mask):
        self.save_for_backward(mask)
        return x * mask

    def backward(self, gy):
        mask, = self.saved
        return gy * mask, None


def _check(name, x, p):
    data = x.data if isinstance(x, Tensor) else x
    if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
        raise ValueError(f"{name}: p must be a probability in [0, 1), got {p!r}")
    if data.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point input, got dtype {data.dtype}")
    return data


def dropout(x, p=0.5, training=True, rng=None):
    """Zero each element with probability p and scale the survivors by 1/(1 − p)."""
    data = _check("dropout", x, p)
    if not training or p == 0:
        return x
    refuse_in_share("dropout")
    return MaskMultiply()(x, _keep_mask(_uniform_like(data, rng), p, data.dtype))


def dropout2d(x, p=0.5, training=True, rng=None):
    """Zero whole channels of (N, C, H, W) with probability p; scale the rest by 1/(1 − p)."""
    data = _check("dropout2d", x, p)
    if data.ndim != 4:
        raise ValueError(f"dropout2d: expected a 4-D (N, C, H, W) input, got shape "
                         f"{data.shape}")
    if not training or p == 0:
        return x
    refuse_in_share("dropout2d")
    xp = get_array_module(data)
    uniform = _uniform(xp, data.shape[:2] + (1, 1), _float_dtype(data), rng)
    return MaskMultiply()(x, _keep_mask(uniform, p, data.dtype))


def drop_path(x, p=0.0, training=True, rng=None):
    """Stochastic depth: zero whole samples of a residual branch with probability p, scale
    the kept ones by 1/(1 − p). The mask has shape (N, 1, 1, ...)."""
    data = _check("drop_path", x, p)
    if data.ndim < 1:
        raise ValueError("drop_path: expected an input with a batch axis, got a scalar")
    if not training or p == 0:
        return x
    refuse_in_share("drop_path")
    xp = get_array_module(data)
    uniform = _uniform(xp, (data.shape[0],) + (1,) * (data.ndim - 1), _float_dtype(data),
                       rng)
    return MaskMultiply()(x, _keep_mask(uniform, p, data.dtype))


# ``minicnn.functional.dropout`` names the *function* once the package has imported it, so
# the seeding and state calls are reachable from it too: F.dropout.manual_seed(0) is this
# module's manual_seed.
dropout.manual_seed = manual_seed
dropout.rng_state, dropout.set_rng_state = rng_state, set_rng_state
