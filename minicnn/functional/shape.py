"""Operations that move numbers around without changing them: their gradients move the
gradient back to where each number came from."""
import builtins

import numpy as np

from minicnn.backend import get_array_module
from minicnn.tensor import Function, Tensor


class Reshape(Function):
    """y = x viewed with a new shape;   gx = gy reshaped back."""
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.input_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view {x.shape} ({x.size} elements) as "
                             f"{self.shape}") from None

    def backward(self, gy):
        return gy.reshape(self.input_shape)


class Transpose(Function):
    """y = x with axes permuted;   gx = gy with the inverse permutation."""
    def __init__(self, axes=None):
        self.axes = None if axes is None else tuple(axes)

    def forward(self, x):
        axes = self.axes or tuple(reversed(range(x.ndim)))
        if (not all(-x.ndim <= a < x.ndim for a in axes)
                or sorted(a % x.ndim for a in axes) != list(range(x.ndim))):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the "
                             f"{x.ndim} axes of a tensor of shape {x.shape}")
        self.inverse = tuple(sorted(range(x.ndim), key=lambda i: axes[i] % x.ndim))
        return x.transpose(axes)

    def backward(self, gy):
        return gy.transpose(self.inverse)


class GetItem(Function):
    """y = x[index] (basic or integer-array indexing);   gx = zeros with gy put at index.

    The put *accumulates* (``numpy.add.at``; ``cupyx.scatter_add`` on the GPU, which every
    CuPy version has, where ``cupy.add.at`` exists only from CuPy 12), so an index that picks
    the same element twice gets both gradients.
    """
    def __init__(self, index):
        self.index = index.data if isinstance(index, Tensor) else index

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=self.dtype)
        scatter_add(gx, self.index, gy)
        return gx


def scatter_add(target, index, values):
    """``target[index] += values`` in place, adding every repeat of an index."""
    if get_array_module(target) is np:
        np.add.at(target, index, values)
    else:
        import cupyx                        # ships with every CuPy; cupy.add.at needs v12
        cupyx.scatter_add(target, index, values)


class Pad(Function):
    """y = x with ``value`` added around: ``pad_width`` is ((before, after), ...) per axis.

    gx = gy with the border cut off. Asymmetric padding (TensorFlow's "same" at stride 2:
    ((0,0), (0,0), (0,1), (0,1))) goes through here before a convolution.
    """
    def __init__(self, pad_width, value=0.0):
        self.pad_width, self.value = pad_width, value

    def forward(self, x):
        if len(self.pad_width) != x.ndim:
            raise ValueError(f"pad: pad_width needs one (before, after) pair per axis: "
                             f"{x.ndim} for shape {x.shape}, got {len(self.pad_width)}")
        xp = get_array_module(x)
        return xp.pad(x, self.pad_width, mode="constant", constant_values=self.value)

    def backward(self, gy):
        return gy[tuple(slice(before, gy.shape[i] - after)
                        for i, (before, after) in enumerate(self.pad_width))]


class Concat(Function):
    """y = [x₁, x₂, ...] joined along ``axis``;   gxᵢ = the slice of gy that xᵢ filled."""
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        first = xs[0]
        if not -first.ndim <= self.axis < first.ndim:
            raise ValueError(f"concat: axis {self.axis} is out of range for inputs with "
                             f"{first.ndim} dimensions (shape {first.shape})")
        axis = self.axis % first.ndim
        for i, x in enumerate(xs):
            if x.ndim != first.ndim or any(m != n for d, (m, n) in
                                           enumerate(zip(x.shape, first.shape)) if d != axis):
                raise ValueError(f"concat: all inputs must match except along axis {axis}; "
                                 f"input 0 has shape {first.shape}, input {i} has {x.shape}")
        self.sizes = [x.shape[axis] for x in xs]
        self.axis = axis
        return get_array_module(first).concatenate(xs, axis=axis)

    def backward(self, gy):
        return _split_array(gy, self.sizes, self.axis)


def _split_array(x, sizes, axis):
    pieces, start = [], 0
    for size in sizes:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + size)
        pieces.append(x[tuple(index)])
        start += size
    return tuple(pieces)


class Split(Function):
    """(y₁, y₂, ...) = x cut along ``axis`` into pieces of ``sizes``;   gx = [gy₁, gy₂, ...]."""
    def __init__(self, sizes, axis):
        self.sizes, self.axis = list(sizes), axis

    def forward(self, x):
        self.axis = self.axis % x.ndim
        if builtins.sum(self.sizes) != x.shape[self.axis]:
            raise ValueError(f"split: sizes {self.sizes} add up to {builtins.sum(self.sizes)}, "
                             f"but axis {self.axis} of shape {x.shape} has {x.shape[self.axis]}")
        return _split_array(x, self.sizes, self.axis)

    def backward(self, *gys):
        return get_array_module(gys[0]).concatenate(gys, axis=self.axis)


class ZeroPadSubsample(Function):
    """A strided identity that also widens: y = [x[:, :, ::s, ::s], 0, ..., 0] along channels.

        forward   y[:, :C] = x subsampled by s in H and W;   y[:, C:] = 0
        backward  gx = 0 except gx[:, :, ::s, ::s] = gy[:, :C]

    ResNet's shortcut option A (He et al. 2015, §4.1), written as one Function rather than
    getitem + pad to cost one strided copy each way. The output is allocated channels-last,
    like the convolution outputs it is added to.
    """
    def __init__(self, out_channels, stride):
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"zero_pad_subsample: expected an (N, C, H, W) input, got shape "
                             f"{x.shape}")
        n, c, h, w = x.shape
        if self.out_channels < c:
            raise ValueError(f"zero_pad_subsample: cannot pad {c} channels down to "
                             f"{self.out_channels}")
        s = self.stride
        self.input_shape, self.dtype = x.shape, x.dtype
        y = get_array_module(x).zeros((n, -(-h // s), -(-w // s), self.out_channels),
                                      dtype=x.dtype).transpose(0, 3, 1, 2)
        y[:, :c] = x[:, :, ::s, ::s]
        return y

    def backward(self, gy):
        n, c, h, w = self.input_shape
        s = self.stride
        gx = get_array_module(gy).zeros((n, h, w, c), dtype=self.dtype).transpose(0, 3, 1, 2)
        gx[:, :, ::s, ::s] = gy[:, :c]
        return gx


class ConcatIntoBuffer(Function):
    """[prefix, new] along channels, where ``prefix`` already lives in ``storage``.

    ``storage`` is preallocated (N, H, W, C_total) channels-last memory (the layout of every
    convolution output, so the copies in and the convolutions reading it stay cheap). With
    ``start`` = prefix channels and k = new channels:

        forward   storage[..., start:start+k] = new;   y = storage[..., :start+k]  (a view)
        backward  g_prefix = gy[:, :start],   g_new = gy[:, start:]                (views)

    Called with only ``new`` (and start = 0) it places the first piece. A DenseNet block
    grows its output this way, each layer appending k channels, instead of concatenating
    ever longer copies (Huang et al. 2017, Eq. 2): linear, not quadratic, copying.
    """
    def __init__(self, storage, start):
        self.storage, self.start = storage, start

    def forward(self, *arrays):
        *prefix, new = arrays
        xp = get_array_module(new)
        view = self.storage.transpose(0, 3, 1, 2)          # NCHW view of NHWC memory
        stop = self.start + new.shape[1]
        if prefix and (prefix[0].shape[1] != self.start
                       or not xp.may_share_memory(prefix[0], self.storage)):
            raise ValueError(f"concat_into_buffer: the prefix must be the buffer's first "
                             f"{self.start} channels, got an array of shape {prefix[0].shape} "
                             "that is not a view of the buffer")
        if new.ndim != 4 or new.shape[0] != view.shape[0] or new.shape[2:] != view.shape[2:] \
                or stop > view.shape[1]:
            raise ValueError(f"concat_into_buffer: cannot write {new.shape} at channel "
                             f"{self.start} of a buffer of shape {view.shape}")
        self.has_prefix = bool(prefix)
        view[:, self.start:stop] = new
        return view[:, :stop]

    def backward(self, gy):
        if self.has_prefix:
            return gy[:, :self.start], gy[:, self.start:]
        return gy


# ----------------------------------------------------------------------------- public API

def reshape(x, shape):
    return Reshape(shape)(x)


def transpose(x, axes=None):
    return Transpose(axes)(x)


def flatten(x, start_dim=1):
    """Keep the first ``start_dim`` axes, merge the rest: (N, C, H, W) -> (N, C·H·W)."""
    return Reshape(tuple(x.shape[:start_dim]) + (-1,))(x)


def getitem(x, index):
    return GetItem(index)(x)


def pad(x, pad_width, value=0.0):
    return Pad(tuple(tuple(p) for p in pad_width), value)(x)


def concat(tensors, axis=1):
    if len(tensors) == 0:
        raise ValueError("concat: needs at least one tensor")
    return Concat(axis)(*tensors)


def split(x, sizes_or_sections, axis=1):
    """Split into pieces of the given ``sizes`` (a list) or into ``n`` equal sections."""
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"split: axis {axis} is out of range for a tensor with {x.ndim} "
                         f"dimensions (shape {x.shape})")
    length = x.shape[axis]
    if isinstance(sizes_or_sections, int):
        if length % sizes_or_sections:
            raise ValueError(f"split: axis {axis} of length {length} does not divide into "
                             f"{sizes_or_sections} equal sections")
        sizes = [length // sizes_or_sections] * sizes_or_sections
    else:
        sizes = list(sizes_or_sections)
    return Split(sizes, axis)(x)


def zero_pad_subsample(x, out_channels, stride):
    """(N, C, H, W) → (N, out_channels, ⌈H/s⌉, ⌈W/s⌉): every s-th pixel, new channels zero."""
    return ZeroPadSubsample(out_channels, stride)(x)


def concat_into_buffer(storage, start, new, prefix=None):
    """``concat([prefix, new], axis=1)`` written into ``storage`` (see ``ConcatIntoBuffer``);
    ``prefix`` must be the view the previous call returned (None for the first piece)."""
    function = ConcatIntoBuffer(storage, start)
    return function(new) if prefix is None else function(prefix, new)
