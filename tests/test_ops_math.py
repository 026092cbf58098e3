"""Every operation of functional/{math,shape,activation,loss}, two properties each:

* forward: equals obvious reference math (NumPy expressions, SciPy where it is the
  accepted truth), in float32 and float64, over generated shapes and memory layouts;
* backward: equals central finite differences (``gradcheck``, float64).

Then the error messages: bad input must be refused with a message naming the operation.
"""
import numpy as np
import pytest
import scipy.special
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

from minicnn import Tensor, functional as F
from minicnn.gradcheck import gradcheck
from tests.strategies import (arrays, arrays_any_layout, broadcast_pair, floats, grid,
                              layouts, shapes)

DTYPES = st.sampled_from([np.float32, np.float64])
SMALL = dict(max_dims=3, max_side=4)          # shapes for gradient checks (cost ∝ size)


def tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def assert_forward(result, expected, dtype):
    """``result`` is a Tensor of ``dtype`` with the values of the float64 ``expected``."""
    assert isinstance(result, Tensor)
    assert result.dtype == dtype, f"dtype {result.dtype}, expected {np.dtype(dtype)}"
    assert result.shape == np.shape(expected), f"shape {result.shape} vs {np.shape(expected)}"
    np.testing.assert_allclose(result.data, expected, **tolerance(dtype))


def leaf(array):
    return Tensor(array, requires_grad=True)


# ============================================================================ elementwise

# name: (operation, reference, (low, high) of the inputs, kinks to keep away from)
UNARY = {
    "neg": (F.neg, np.negative, (-3, 3), ()),
    "exp": (F.exp, np.exp, (-3, 3), ()),
    "log": (F.log, np.log, (0.05, 5), ()),
    "sqrt": (F.sqrt, np.sqrt, (0.05, 5), ()),
    "clip": (lambda x: F.clip(x, -1.0, 1.5), lambda x: np.clip(x, -1.0, 1.5), (-3, 3),
             (-1.0, 1.5)),
    "relu": (F.relu, lambda x: np.maximum(x, 0), (-3, 3), (0,)),
    "relu6": (F.relu6, lambda x: np.minimum(np.maximum(x, 0), 6), (-8, 8), (0, 6)),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x),
                   (-3, 3), (0,)),
    "sigmoid": (F.sigmoid, scipy.special.expit, (-10, 10), ()),
    "tanh": (F.tanh, np.tanh, (-5, 5), ()),
    "scaled_tanh": (F.scaled_tanh, lambda x: 1.7159 * np.tanh(2 * x / 3), (-5, 5), ()),
    "silu": (F.silu, lambda x: x * scipy.special.expit(x), (-8, 8), ()),
    "swish": (F.swish, lambda x: x / (1 + np.exp(-x)), (-8, 8), ()),
    "hard_sigmoid": (F.hard_sigmoid, lambda x: np.minimum(np.maximum(x + 3, 0), 6) / 6,
                     (-5, 5), (-3, 3)),
    "hard_swish": (F.hard_swish, lambda x: x * np.minimum(np.maximum(x + 3, 0), 6) / 6,
                   (-5, 5), (-3, 3)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_forward(name, data):
    op, reference, (low, high), _ = UNARY[name]
    dtype = data.draw(DTYPES)
    width = 32 if dtype == np.float32 else 64
    x = data.draw(arrays_any_layout(data.draw(shapes()), dtype, floats(low, high, width=width)))
    before = x.copy()
    assert_forward(op(Tensor(x)), reference(x.astype(np.float64)), dtype)
    np.testing.assert_array_equal(x, before)                 # the input is not modified


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_backward(name, data):
    op, _, (low, high), kinks = UNARY[name]
    x = data.draw(arrays_any_layout(data.draw(shapes(**SMALL)),
                                    elements=floats(low, high, avoid=kinks)))
    gradcheck(op, [leaf(x)])


@given(data=st.data(), exponent=st.sampled_from([2, 3, -1, 0.5, 1.5, -2.5]))
def test_pow(data, exponent):
    dtype = data.draw(DTYPES)
    x = data.draw(arrays(data.draw(shapes()), dtype,
                         floats(0.1, 3, width=32 if dtype == np.float32 else 64)))
    assert_forward(F.pow(Tensor(x), exponent), x.astype(np.float64) ** exponent, dtype)
    assert_forward(Tensor(x) ** exponent, x.astype(np.float64) ** exponent, dtype)
    x64 = data.draw(arrays(data.draw(shapes(**SMALL)), elements=floats(0.1, 3)))
    gradcheck(lambda t: t ** exponent, [leaf(x64)])


@given(data=st.data())
def test_cast(data):
    x = data.draw(arrays(data.draw(shapes(**SMALL))))
    t = leaf(x)
    y = F.cast(t, np.float32)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.data, x.astype(np.float32))
    (y * 3).sum().backward()
    assert t.grad.dtype == np.float64                        # the gradient comes back cast
    np.testing.assert_array_equal(t.grad, np.full(x.shape, 3.0))
    gradcheck(lambda t: F.cast(t, np.float64) * t, [leaf(x)])


# ============================================================================ binary

BINARY = {"add": (F.add, np.add), "sub": (F.sub, np.subtract), "mul": (F.mul, np.multiply),
          "div": (F.div, np.divide)}


def binary_operands(data, dtype=np.float64, max_side=4):
    shape_a, shape_b = data.draw(broadcast_pair(max_dims=3, max_side=max_side))
    width = 32 if dtype == np.float32 else 64
    a = data.draw(arrays_any_layout(shape_a, dtype, floats(width=width)))
    # keep divisors away from zero (1/b explodes there)
    b = data.draw(arrays_any_layout(shape_b, dtype, floats(avoid=(0,), margin=0.25, width=width)))
    return a, b


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_forward(name, data):
    op, reference = BINARY[name]
    dtype = data.draw(DTYPES)
    a, b = binary_operands(data, dtype)
    assert_forward(op(Tensor(a), Tensor(b)), reference(a.astype(np.float64), b), dtype)


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_backward(name, data):
    op, _ = BINARY[name]
    a, b = binary_operands(data)
    gradcheck(op, [leaf(a), leaf(b)])


@given(data=st.data())
def test_maximum(data):
    shape_a, shape_b = data.draw(broadcast_pair(max_dims=3))
    # two interleaved grids: never a tie, so the derivative exists everywhere
    a = data.draw(grid(shape_a, offset=0.0))
    b = data.draw(grid(shape_b, offset=0.125))
    assert_forward(F.maximum(Tensor(a), Tensor(b)), np.maximum(a, b), np.float64)
    gradcheck(F.maximum, [leaf(a), leaf(b)])


@given(data=st.data())
def test_where(data):
    shape_c, shape_a, shape_b = data.draw(hnp.mutually_broadcastable_shapes(
        num_shapes=3, max_dims=3, max_side=3)).input_shapes
    condition = data.draw(arrays(shape_c, bool, st.booleans()))
    a = data.draw(arrays(shape_a))
    b = data.draw(arrays(shape_b))
    assert_forward(F.where(condition, Tensor(a), Tensor(b)), np.where(condition, a, b),
                   np.float64)
    gradcheck(lambda a, b: F.where(condition, a, b), [leaf(a), leaf(b)])


# ============================================================================ matmul

MATMUL_KINDS = ["matrix", "batched", "vector_at_batch", "batch_at_vector", "vector_at_vector"]


@st.composite
def matmul_operands(draw, kind, dtype=np.float64):
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch_a, batch_b = draw(broadcast_pair(min_dims=1, max_dims=2, max_side=3))
    shape_a, shape_b = {
        "matrix": ((n, k), (k, m)),
        "batched": (batch_a + (n, k), batch_b + (k, m)),
        "vector_at_batch": ((k,), batch_b + (k, m)),
        "batch_at_vector": (batch_a + (n, k), (k,)),
        "vector_at_vector": ((k,), (k,)),
    }[kind]
    elements = floats(width=32 if dtype == np.float32 else 64)
    return (draw(arrays_any_layout(shape_a, dtype, elements)),
            draw(arrays_any_layout(shape_b, dtype, elements)))


@pytest.mark.parametrize("kind", MATMUL_KINDS)
@given(data=st.data())
def test_matmul_forward(kind, data):
    dtype = data.draw(DTYPES)
    a, b = data.draw(matmul_operands(kind, dtype))
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    result = F.matmul(Tensor(a), Tensor(b))
    assert result.dtype == dtype and result.shape == expected.shape
    np.testing.assert_allclose(result.data, expected, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-4 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal((Tensor(a) @ Tensor(b)).data, result.data)


@pytest.mark.parametrize("kind", MATMUL_KINDS)
@given(data=st.data())
def test_matmul_backward(kind, data):
    a, b = data.draw(matmul_operands(kind))
    gradcheck(F.matmul, [leaf(a), leaf(b)])


@given(data=st.data(), batch=st.lists(st.integers(1, 3), max_size=2), with_bias=st.booleans())
def test_linear_forward_and_backward(data, batch, with_bias):
    """linear(x, W, b) = x Wᵀ + b over the last axis, gradients by finite differences."""
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    elements = floats(width=64)
    x = data.draw(arrays_any_layout(tuple(batch) + (n_in,), np.float64, elements))
    w = data.draw(arrays_any_layout((n_out, n_in), np.float64, elements))
    b = data.draw(arrays((n_out,), np.float64, elements)) if with_bias else None
    expected = x @ w.T + (0 if b is None else b)
    operands = [x, w] + ([b] if with_bias else [])
    np.testing.assert_allclose(F.linear(*[Tensor(a) for a in operands]).data, expected,
                               rtol=1e-10, atol=1e-12)
    gradcheck(F.linear, [leaf(a) for a in operands])


def test_linear_weight_gradient_has_the_weight_layout():
    """The weight gradient arrives C-contiguous like the weight, so a fused optimizer step
    streams it in one pass (matmul(x, transpose(W)) would hand back a transposed view)."""
    x = Tensor(np.ones((8, 5), np.float32))
    w = Tensor(np.ones((3, 5), np.float32), requires_grad=True)
    F.linear(x, w).sum().backward()
    assert w.grad.flags.c_contiguous and w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, np.full((3, 5), 8, np.float32))


# ============================================================================ reductions

@st.composite
def shape_and_axis(draw, min_dims=0, max_dims=4, max_side=4):
    """A shape and an ``axis`` argument: None, one axis, or a tuple (negative ones too)."""
    shape = draw(shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side))
    ndim = len(shape)
    if ndim == 0:
        return shape, None
    def signed(a):
        return draw(st.sampled_from([a, a - ndim]))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return shape, None
    if kind == "int":
        return shape, signed(draw(st.integers(0, ndim - 1)))
    axes = draw(st.sets(st.integers(0, ndim - 1), max_size=ndim))
    return shape, tuple(signed(a) for a in sorted(axes))


REDUCTIONS = {"sum": (F.sum, np.sum), "mean": (F.mean, np.mean), "max": (F.max, np.max),
              "var": (F.var, np.var)}


def reduction_input(data, name, dtype, shape):
    if name == "max":                                    # no ties: max has a derivative
        return data.draw(layouts(data.draw(grid(shape)).astype(dtype)))
    return data.draw(arrays_any_layout(shape, dtype,
                                       floats(width=32 if dtype == np.float32 else 64)))


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data(), keepdims=st.booleans())
def test_reduction_forward(name, data, keepdims):
    op, reference = REDUCTIONS[name]
    dtype = data.draw(DTYPES)
    shape, axis = data.draw(shape_and_axis())
    x = reduction_input(data, name, dtype, shape)
    expected = reference(x.astype(np.float64), axis=axis, keepdims=keepdims)
    assert_forward(op(Tensor(x), axis=axis, keepdims=keepdims), expected, dtype)
    method = getattr(Tensor(x), name)(axis=axis, keepdims=keepdims)
    np.testing.assert_array_equal(method.data, op(Tensor(x), axis, keepdims).data)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data(), keepdims=st.booleans())
def test_reduction_backward(name, data, keepdims):
    op, _ = REDUCTIONS[name]
    shape, axis = data.draw(shape_and_axis(max_dims=3))
    x = reduction_input(data, name, np.float64, shape)
    gradcheck(lambda t: op(t, axis=axis, keepdims=keepdims), [leaf(x)])


@given(data=st.data())
def test_var_with_ddof(data):
    shape, axis = data.draw(shape_and_axis(min_dims=1, max_dims=3))
    x = data.draw(arrays(shape))
    count = x.size if axis is None else int(np.prod(
        [shape[a] for a in ((axis,) if isinstance(axis, int) else axis)]))
    assume(count >= 2)
    assert_forward(F.var(Tensor(x), axis=axis, ddof=1), np.var(x, axis=axis, ddof=1),
                   np.float64)
    gradcheck(lambda t: F.var(t, axis=axis, ddof=1), [leaf(x)])


def test_max_splits_the_gradient_between_ties():
    x = leaf(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]]))
    F.max(x, axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])


def test_max_gradient_keeps_float32():
    x = Tensor(np.array([[1.0, 3.0], [2.0, 2.0]], np.float32), requires_grad=True)
    y = F.max(x, axis=1)
    gx = y.creator.backward(np.ones(2, np.float32))
    assert gx.dtype == np.float32


# ============================================================================ shape

@given(data=st.data())
def test_reshape(data):
    shape = data.draw(shapes())
    x = data.draw(arrays_any_layout(shape))
    size = x.size
    target = data.draw(st.sampled_from([(-1,), (size,), (1, size), tuple(reversed(shape)),
                                        shape + (1,), (size, -1)]))
    assert_forward(F.reshape(Tensor(x), target), x.reshape(target), np.float64)
    gradcheck(lambda t: F.reshape(t, target) * 1.0, [leaf(x)])


@given(data=st.data())
def test_transpose(data):
    shape = data.draw(shapes(**SMALL))
    x = data.draw(arrays_any_layout(shape))
    axes = data.draw(st.one_of(st.none(), st.permutations(range(len(shape))).map(tuple)))
    assert_forward(F.transpose(Tensor(x), axes), x.transpose(axes), np.float64)
    gradcheck(lambda t: F.transpose(t, axes), [leaf(x)])


@given(data=st.data())
def test_flatten(data):
    shape = data.draw(shapes(min_dims=1, **SMALL))
    start_dim = data.draw(st.integers(0, len(shape) - 1))
    x = data.draw(arrays_any_layout(shape))
    expected = x.reshape(shape[:start_dim] + (-1,))
    assert_forward(F.flatten(Tensor(x), start_dim), expected, np.float64)
    gradcheck(lambda t: F.flatten(t, start_dim), [leaf(x)])


@given(data=st.data())
def test_getitem_basic_indexing(data):
    shape = data.draw(shapes(min_dims=1, **SMALL))
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    x = data.draw(arrays_any_layout(shape))
    assert_forward(F.getitem(Tensor(x), index), x[index], np.float64)
    assert_forward(Tensor(x)[index], x[index], np.float64)
    gradcheck(lambda t: t[index], [leaf(x)])


def test_getitem_with_repeated_integer_indices_accumulates():
    x = leaf(np.array([1.0, 2.0, 3.0]))
    picked = x[np.array([0, 2, 0, 0])]
    np.testing.assert_array_equal(picked.data, [1.0, 3.0, 1.0, 1.0])
    picked.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0])
    gradcheck(lambda t: t[np.array([[1, 1], [0, 2]])] ** 2, [leaf(np.array([0.5, -1.0, 2.0]))])


@given(data=st.data(), value=st.sampled_from([0.0, -1.5]))
def test_pad(data, value):
    shape = data.draw(shapes(min_dims=1, **SMALL))
    widths = tuple(data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2))) for _ in shape)
    x = data.draw(arrays_any_layout(shape))
    expected = np.pad(x, widths, mode="constant", constant_values=value)
    assert_forward(F.pad(Tensor(x), widths, value), expected, np.float64)
    gradcheck(lambda t: F.pad(t, widths, value), [leaf(x)])


@given(data=st.data())
def test_concat(data):
    shape = data.draw(shapes(min_dims=1, **SMALL))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    lengths = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    pieces = []
    for length in lengths:
        piece_shape = list(shape)
        piece_shape[axis] = length
        pieces.append(data.draw(arrays_any_layout(tuple(piece_shape))))
    assert_forward(F.concat([Tensor(p) for p in pieces], axis=axis),
                   np.concatenate(pieces, axis=axis), np.float64)
    gradcheck(lambda *ts: F.concat(list(ts), axis=axis), [leaf(p) for p in pieces])


@given(data=st.data())
def test_split(data):
    shape = list(data.draw(shapes(min_dims=1, **SMALL)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    if data.draw(st.booleans()):
        sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
        shape[axis] = sum(sizes)
        how = sizes
    else:
        sections = data.draw(st.integers(1, 3))
        shape[axis] = sections * data.draw(st.integers(1, 2))
        sizes, how = [shape[axis] // sections] * sections, sections
    x = data.draw(arrays_any_layout(tuple(shape)))
    pieces = F.split(Tensor(x), how, axis=axis)
    expected = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    assert len(pieces) == len(expected)
    for piece, reference in zip(pieces, expected):
        assert_forward(piece, reference, np.float64)
    gradcheck(lambda t: F.split(t, how, axis=axis), [leaf(x)])


# ============================================================================ softmax family

@pytest.mark.parametrize("name, reference", [("softmax", scipy.special.softmax),
                                             ("log_softmax", scipy.special.log_softmax)])
@given(data=st.data())
def test_softmax_family(name, reference, data):
    op = getattr(F, name)
    dtype = data.draw(DTYPES)
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    width = 32 if dtype == np.float32 else 64
    x = data.draw(arrays_any_layout(shape, dtype, floats(-10, 10, width=width)))
    assert_forward(op(Tensor(x), axis=axis), reference(x.astype(np.float64), axis=axis), dtype)
    x64 = data.draw(arrays_any_layout(data.draw(shapes(min_dims=1, **SMALL)),
                                      elements=floats(-5, 5)))
    axis64 = data.draw(st.integers(-x64.ndim, x64.ndim - 1))
    gradcheck(lambda t: op(t, axis=axis64), [leaf(x64)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_is_stable_for_huge_logits(dtype):
    x = Tensor(np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]], dtype=dtype))
    assert np.isfinite(F.softmax(x).data).all() and np.isfinite(F.log_softmax(x).data).all()
    np.testing.assert_allclose(F.softmax(x).data, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)
    np.testing.assert_allclose(F.log_softmax(x).data[0, :2], [0.0, -1000.0], rtol=1e-6)


# ============================================================================ losses

@st.composite
def classification(draw, dtype=np.float64, unique_scores=False):
    n, k = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    if unique_scores:
        logits = draw(grid((n, k))).astype(dtype)
    else:
        logits = draw(arrays((n, k), dtype, floats(-5, 5, width=32 if dtype == np.float32
                                                   else 64)))
    labels = draw(arrays((n,), np.int64, st.integers(0, k - 1)))
    return logits, labels


def reference_cross_entropy(z, y, smoothing, weight, reduction):
    """PyTorch's definition, written out per sample:

    ℓᵢ = (1 − ε) · w_yᵢ · (−log p_iyᵢ) + (ε / K) · Σₖ wₖ · (−log p_ik); mean divides by Σ w_yᵢ.
    """
    n, k = z.shape
    w = np.ones(k) if weight is None else weight
    log_p = scipy.special.log_softmax(z.astype(np.float64), axis=1)
    losses = np.array([(1 - smoothing) * w[y[i]] * -log_p[i, y[i]]
                       + smoothing / k * np.sum(w * -log_p[i]) for i in range(n)])
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / w[y].sum()


def class_weights(data, num_classes):
    return data.draw(st.one_of(st.none(), arrays((num_classes,), np.float64, floats(0.1, 2.0))))


@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]),
       smoothing=st.sampled_from([0.0, 0.1, 0.45]))
def test_cross_entropy(data, reduction, smoothing):
    dtype = data.draw(DTYPES)
    z, y = data.draw(classification(dtype))
    weight = class_weights(data, z.shape[1])
    expected = reference_cross_entropy(z, y, smoothing, weight, reduction)
    result = F.cross_entropy(Tensor(z), y, label_smoothing=smoothing, weight=weight,
                             reduction=reduction)
    assert result.dtype == dtype and result.shape == np.shape(expected)
    np.testing.assert_allclose(result.data, expected, **(dict(rtol=1e-5, atol=1e-5)
                                                         if dtype == np.float32 else {}))
    z64, y64 = data.draw(classification())
    weight64 = class_weights(data, z64.shape[1])
    gradcheck(lambda t: F.cross_entropy(t, y64, label_smoothing=smoothing, weight=weight64,
                                        reduction=reduction), [leaf(z64)])


def test_cross_entropy_accepts_class_weights_as_a_tensor():
    z, y, w = np.array([[1.0, 2.0], [0.5, 0.0]]), np.array([0, 1]), np.array([2.0, 0.5])
    np.testing.assert_array_equal(F.cross_entropy(Tensor(z), y, weight=Tensor(w)).data,
                                  F.cross_entropy(Tensor(z), y, weight=w).data)


def test_cross_entropy_gradient_is_softmax_minus_onehot():
    z = leaf(np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]]))
    F.cross_entropy(z, np.array([0, 2]), reduction="sum").backward()
    onehot = np.array([[1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(z.grad, scipy.special.softmax(z.data, axis=1) - onehot)


@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_nll_loss(data, reduction):
    dtype = data.draw(DTYPES)
    log_p, y = data.draw(classification(dtype))
    picked = -log_p.astype(np.float64)[np.arange(len(y)), y]
    expected = {"none": picked, "sum": picked.sum(), "mean": picked.mean()}[reduction]
    assert_forward(F.nll_loss(Tensor(log_p), y, reduction=reduction), expected, dtype)
    log_p64, y64 = data.draw(classification())
    gradcheck(lambda t: F.nll_loss(t, y64, reduction=reduction), [leaf(log_p64)])


def test_nll_of_log_softmax_equals_cross_entropy():
    z = np.random.default_rng(0).standard_normal((4, 5))
    y = np.array([0, 4, 2, 2])
    np.testing.assert_allclose(F.nll_loss(F.log_softmax(Tensor(z)), y).data,
                               F.cross_entropy(Tensor(z), y).data, rtol=1e-12)


@given(data=st.data(), reduction=st.sampled_from(["mean", "sum"]))
def test_mse_loss(data, reduction):
    dtype = data.draw(DTYPES)
    shape = data.draw(shapes())
    elements = floats(width=32 if dtype == np.float32 else 64)
    a = data.draw(arrays_any_layout(shape, dtype, elements))
    b = data.draw(arrays_any_layout(shape, dtype, elements))
    squared = (a.astype(np.float64) - b) ** 2
    expected = squared.mean() if reduction == "mean" else squared.sum()
    assert_forward(F.mse_loss(Tensor(a), Tensor(b), reduction=reduction), expected, dtype)
    shape64 = data.draw(shapes(**SMALL))
    a64, b64 = data.draw(arrays(shape64)), data.draw(arrays(shape64))
    gradcheck(lambda p, t: F.mse_loss(p, t, reduction=reduction), [leaf(a64), leaf(b64)])


@given(data=st.data())
def test_accuracy_and_topk_correct(data):
    z, y = data.draw(classification(unique_scores=True))
    # rank of the true label: how many classes score strictly higher
    rank = (z > z[np.arange(len(y)), y][:, None]).sum(axis=1)
    for k in range(1, z.shape[1] + 1):
        assert F.accuracy(Tensor(z), y, topk=k) == pytest.approx((rank < k).mean())
    ks = (1, 2, 5)
    assert F.topk_correct(Tensor(z), Tensor(y), ks) == tuple(int((rank < k).sum()) for k in ks)


# ============================================================================ errors

def int_tensor():
    return Tensor(np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("name, call", [
    ("exp", lambda x: F.exp(x)), ("log", lambda x: F.log(x)), ("sqrt", lambda x: F.sqrt(x)),
    ("mean", lambda x: F.mean(x)), ("var", lambda x: F.var(x)), ("relu", lambda x: F.relu(x)),
    ("sigmoid", lambda x: F.sigmoid(x)), ("tanh", lambda x: F.tanh(x)),
    ("softmax", lambda x: F.softmax(x)), ("log_softmax", lambda x: F.log_softmax(x)),
    ("hard_swish", lambda x: F.hard_swish(x)),
    ("cross_entropy", lambda x: F.cross_entropy(x, np.array([0, 1]))),
])
def test_integer_input_where_floats_are_needed(name, call):
    with pytest.raises(TypeError, match=f"{name}: expected floating-point input, got dtype int64"):
        call(int_tensor())


def test_matmul_errors():
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: \(2, 3\) @ \(4, 5\)"):
        F.matmul(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5))))
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: \(3,\) @ \(2,\)"):
        F.matmul(Tensor(np.ones(3)), Tensor(np.ones(2)))
    with pytest.raises(ValueError, match="matmul: operands must have at least 1 dimension"):
        F.matmul(Tensor(np.ones(())), Tensor(np.ones(3)))
    with pytest.raises(ValueError, match=r"matmul: batch shapes \(2,\) and \(3,\) cannot be "
                                         r"broadcast"):
        F.matmul(Tensor(np.ones((2, 4, 5))), Tensor(np.ones((3, 5, 6))))


def test_concat_errors():
    with pytest.raises(ValueError, match=r"concat: all inputs must match except along axis 1; "
                                         r"input 0 has shape \(2, 3\), input 1 has \(3, 3\)"):
        F.concat([Tensor(np.ones((2, 3))), Tensor(np.ones((3, 3)))], axis=1)
    with pytest.raises(ValueError, match=r"input 1 has \(2, 3, 1\)"):
        F.concat([Tensor(np.ones((2, 3))), Tensor(np.ones((2, 3, 1)))], axis=0)
    with pytest.raises(ValueError, match="concat: needs at least one tensor"):
        F.concat([])


def test_broadcast_errors_name_the_operation():
    for name in ["add", "sub", "mul", "div", "maximum"]:
        with pytest.raises(ValueError, match=rf"{name}: shapes \(2, 3\) and \(4,\) cannot be "
                                             r"broadcast"):
            getattr(F, name)(Tensor(np.ones((2, 3))), Tensor(np.ones(4)))


def test_shape_errors():
    x = Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"reshape: cannot view \(2, 3\) \(6 elements\) as \(4,\)"):
        F.reshape(x, (4,))
    with pytest.raises(ValueError, match=r"transpose: axes \(0, 0\) are not a permutation"):
        F.transpose(x, (0, 0))
    with pytest.raises(ValueError, match="pad: pad_width needs one .* per axis: 2 .* got 1"):
        F.pad(x, [(1, 1)])
    with pytest.raises(ValueError, match=r"split: sizes \[1, 1\] add up to 2, but axis 1 .* has 3"):
        F.split(x, [1, 1], axis=1)
    with pytest.raises(ValueError, match="split: axis 1 of length 3 does not divide into 2"):
        F.split(x, 2, axis=1)
    with pytest.raises(ValueError, match=r"transpose: axes \(0, 5\) are not a permutation"):
        F.transpose(x, (0, 5))
    with pytest.raises(ValueError, match="concat: axis 2 is out of range for inputs with 2 dim"):
        F.concat([x, x], axis=2)
    with pytest.raises(ValueError, match="split: axis -3 is out of range for a tensor with 2"):
        F.split(x, 1, axis=-3)
    with pytest.raises(ValueError, match="sum: axis 2 is out of range for a tensor with 2 dim"):
        F.sum(x, axis=2)
    with pytest.raises(ValueError, match="max: axis -3 is out of range"):
        F.max(x, axis=-3)


def test_loss_errors():
    logits = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"cross_entropy: expected logits of shape \(N, classes\), "
                                         r"got \(3,\)"):
        F.cross_entropy(Tensor(np.zeros(3)), np.array([0]))
    with pytest.raises(ValueError, match=r"nll_loss: expected logits of shape .* got \(2, 3, 1\)"):
        F.nll_loss(Tensor(np.zeros((2, 3, 1))), np.array([0, 1]))
    with pytest.raises(TypeError, match="cross_entropy: expected integer class labels, got "
                                        "dtype float64"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"expected labels of shape \(2,\) .* got \(3,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values in \[0, 3\]"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        F.cross_entropy(logits, np.array([0, 1]), label_smoothing=1.0)
    with pytest.raises(ValueError, match="reduction must be"):
        F.cross_entropy(logits, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="nll_loss: reduction must be"):
        F.nll_loss(logits, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="mse_loss: reduction must be 'mean' or 'sum'"):
        F.mse_loss(logits, logits, reduction="none")
    with pytest.raises(ValueError, match=r"mse_loss: prediction \(2, 3\) and target \(3, 2\)"):
        F.mse_loss(logits, Tensor(np.zeros((3, 2))))


def test_pow_refuses_a_tensor_exponent():
    with pytest.raises(TypeError, match="pow: the exponent must be a Python number"):
        F.pow(Tensor(np.ones(2)), Tensor(np.ones(2)))


def test_getitem_backward_scatters_with_cupyx_on_the_gpu(monkeypatch):
    """CuPy has ``cupy.add.at`` only from version 12 and the ``gpu`` extra does not pin
    it, so on the GPU the gradient is scattered with ``cupyx.scatter_add`` (every CuPy
    has it). Here a stand-in for CuPy without ``add.at`` and a stand-in cupyx."""
    import sys
    import types
    import minicnn.functional.shape as shape_module
    scattered = []
    fake_cupyx = types.ModuleType("cupyx")

    def scatter_add(target, index, values):
        scattered.append(index)
        np.add.at(target, index, values)
    fake_cupyx.scatter_add = scatter_add
    cupy_before_12 = types.SimpleNamespace(zeros=np.zeros)       # no add.at
    monkeypatch.setitem(sys.modules, "cupyx", fake_cupyx)
    monkeypatch.setattr(shape_module, "get_array_module", lambda *arrays: cupy_before_12)
    x = Tensor(np.arange(5.0), requires_grad=True)
    index = np.array([0, 2, 2, 4, 2])
    (x[index] * Tensor(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 10.0, 0.0, 4.0])
    assert len(scattered) == 1
