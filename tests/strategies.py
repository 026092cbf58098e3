"""hypothesis strategies shared by the tests: shapes, arrays and memory layouts.

Values stay moderate (no huge or tiny magnitudes) because the tests compare with
reference math at fixed tolerances; what they vary is everything else: shapes with
size-1 axes and broadcasting, signs, zeros, and non-contiguous memory.
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def shapes(min_dims=0, max_dims=4, min_side=1, max_side=4):
    """Array shapes, size-1 axes included (hypothesis shrinks toward them)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcast_pair(min_dims=0, max_dims=4, max_side=4):
    """Two shapes that broadcast together (some axes 1, some missing), e.g. (3, 1) & (4, 1, 5)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=min_dims,
                                             max_dims=max_dims, max_side=max_side).map(
        lambda result: result.input_shapes)


def floats(low=-3.0, high=3.0, avoid=(), margin=1e-3, width=64):
    """Finite floats in [low, high], at least ``margin`` away from each point in ``avoid``.

    ``avoid`` lists kinks (ReLU's 0, ReLU6's 0 and 6) where a function has no derivative,
    so finite differences across them would measure nonsense.
    """
    if width == 32:                      # bounds must be representable in float32
        low, high = float(np.float32(low)), float(np.float32(high))
    strategy = st.floats(low, high, allow_nan=False, allow_infinity=False, width=width)
    if avoid:
        strategy = strategy.filter(lambda v: all(abs(v - k) > margin for k in avoid))
    return strategy


def arrays(shape, dtype=np.float64, elements=None, unique=False):
    """Arrays of ``shape`` with float ``elements`` (default: ``floats()``)."""
    width = 32 if np.dtype(dtype) == np.float32 else 64
    if elements is None:
        elements = floats(width=width)
    return hnp.arrays(dtype, shape, elements=elements, unique=unique)


def grid(shape, offset=0.0, step=0.25, count=400):
    """Arrays of *distinct* values on the grid ``offset + step·k``, |k| ≤ count/2.

    For max-style operations: no ties inside an array, and two grids with different
    offsets never tie with each other, while the values are still drawn by hypothesis.
    """
    elements = st.integers(-count // 2, count // 2).map(lambda k: offset + step * k)
    return hnp.arrays(np.float64, shape, elements=elements, unique=True)


@st.composite
def layouts(draw, array):
    """The same values as ``array`` in a different memory layout (often non-contiguous).

    Either the axes are stored in a permuted order (``transpose`` of a contiguous array in
    another order, as channels-last tensors are), or the array is every other element of a
    larger one (a strided view), or it is left as it was.
    """
    kind = draw(st.sampled_from(["permuted", "strided", "as is"]))
    if kind == "permuted" and array.ndim >= 2:
        order = draw(st.permutations(range(array.ndim)))
        inverse = np.argsort(order)
        return np.ascontiguousarray(array.transpose(order)).transpose(inverse)
    if kind == "strided" and array.ndim >= 1:
        bigger = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), dtype=array.dtype)
        bigger[..., ::2] = array
        return bigger[..., ::2]
    return array


@st.composite
def arrays_any_layout(draw, shape, dtype=np.float64, elements=None):
    """``arrays(...)`` followed by ``layouts``: values and memory layout both vary."""
    return draw(layouts(draw(arrays(shape, dtype, elements))))
