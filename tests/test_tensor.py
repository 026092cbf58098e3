"""Autograd mechanics: graph order, accumulation, freeing, no_grad, dtypes, devices."""
import gc
import sys

import numpy as np
import pytest

from minicnn import Tensor, functional as F, is_grad_enabled, no_grad


def leaf(values, dtype=np.float64):
    return Tensor(np.asarray(values, dtype=dtype), requires_grad=True)


# ----------------------------------------------------------------------------- graph order

def test_reused_node_a_plus_a():
    # The case a recursive backward gets wrong: both paths into `a` must be summed.
    a = leaf([1.0, -2.0, 3.0])
    (a + a).sum().backward()
    np.testing.assert_array_equal(a.grad, [2.0, 2.0, 2.0])


def test_reused_node_in_a_product_and_a_sum():
    a = leaf([1.5, -2.0])
    (a * a + a).sum().backward()                       # d/da (a² + a) = 2a + 1
    np.testing.assert_allclose(a.grad, [4.0, -3.0])


def test_diamond_graph():
    #       ┌── c = 3b ──┐
    # a ─ b = 2a         e = c · d
    #       └── d = b+1 ─┘
    a = leaf([0.5, -1.0, 2.0])
    b = a * 2
    c = b * 3
    d = b + 1
    (c * d).sum().backward()
    # e = 3b(b + 1) = 6a(2a + 1) = 12a² + 6a  ->  de/da = 24a + 6
    np.testing.assert_allclose(a.grad, 24 * a.data + 6)


def test_intermediate_used_by_two_later_functions_waits_for_both():
    # y feeds y*y and, further down, y itself again: y's gradient must be complete before
    # the backward of y's creator (exp) runs.
    x = leaf([0.3, -0.2])
    y = F.exp(x)
    z = (y * y) * y + y
    z.sum().backward()                                 # z = e^{3x} + e^x
    np.testing.assert_allclose(x.grad, 3 * np.exp(3 * x.data) + np.exp(x.data))


@pytest.mark.parametrize("depth", [300, 3 * sys.getrecursionlimit()])
def test_deep_chain_has_no_recursion_limit(depth):
    x = leaf([1.0, 2.0])
    y = x
    for _ in range(depth):
        y = y * 1.0 + 0.0 if depth <= 300 else y + 0.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])
    del y
    gc.collect()                                       # tearing down the chain is fine too


# ----------------------------------------------------------------------------- accumulation

def test_gradients_accumulate_across_backward_calls_until_cleared():
    x = leaf([1.0, 2.0])
    (x * 3).sum().backward()
    (x * 3).sum().backward()                           # a second, fresh graph
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])  # added, as PyTorch does
    x.grad = None                                      # the zero_grad rule
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_grad_is_a_raw_array_of_the_leaf_shape_and_dtype():
    x = leaf(np.ones((2, 3)), dtype=np.float32)
    (x * 2).sum().backward()
    assert isinstance(x.grad, np.ndarray) and not isinstance(x.grad, Tensor)
    assert x.grad.shape == (2, 3) and x.grad.dtype == np.float32


def test_leaf_grads_never_alias_each_other():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).sum().backward()                           # Add hands the same gy to both
    a.grad[0] = 100.0
    assert b.grad[0] == 1.0


def test_inputs_without_requires_grad_get_no_gradient():
    x, constant = leaf([1.0, 2.0]), Tensor(np.array([3.0, 4.0]))
    (x * constant).sum().backward()
    assert constant.grad is None
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


# ----------------------------------------------------------------------------- freeing

def test_second_backward_through_a_freed_graph_is_a_clear_error():
    x = leaf([1.0, 2.0])
    loss = (F.exp(x) * 2).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="a second time.*retain_graph=True"):
        loss.backward()


def test_backward_through_a_shared_freed_subgraph_is_an_error():
    x = leaf([1.0, 2.0])
    y = F.exp(x)
    first, second = y.sum(), (y * 2).sum()
    first.backward()
    with pytest.raises(RuntimeError, match="a second time"):
        second.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(x.grad, 2 * (2 * x.data))


def test_backward_frees_saved_arrays():
    x = leaf(np.ones(4))
    y = F.exp(x)
    function = y.creator
    assert function.inputs is not None and len(function.saved) == 1
    np.testing.assert_array_equal(function.saved[0], y.data)
    y.sum().backward()
    assert function.inputs is None and function.saved is None


def test_unused_output_of_a_multi_output_function():
    x = leaf(np.arange(6.0).reshape(2, 3))
    first, rest = F.split(x, [1, 2], axis=1)
    del rest
    gc.collect()                                       # the unused output is gone
    (first * 5).sum().backward()
    np.testing.assert_array_equal(x.grad, [[5, 0, 0], [5, 0, 0]])


def test_backward_needs_a_scalar_or_an_explicit_gradient():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="scalar output"):
        (x * 2).backward()
    (x * 2).backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 20.0])


def test_backward_on_a_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).sum().backward()


# ----------------------------------------------------------------------------- no_grad

def test_no_grad_records_nothing_and_restores_the_mode():
    x = leaf([1.0, 2.0])
    assert is_grad_enabled()
    with no_grad():
        assert not is_grad_enabled()
        y = x * 2
        with no_grad():
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()
    assert not y.requires_grad and y.creator is None


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


# ----------------------------------------------------------------------------- broadcasting

@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_broadcast_gradients_are_summed_to_operand_shapes(op):
    a = leaf(np.arange(1.0, 4.0).reshape(3, 1))        # (3, 1)
    b = leaf(np.arange(1.0, 5.0))                      # (4,)   -> result (3, 4)
    getattr(F, op)(a, b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    A, B = a.data, b.data
    expected = {"add": (np.full((3, 1), 4.0), np.full(4, 3.0)),
                "sub": (np.full((3, 1), 4.0), np.full(4, -3.0)),
                "mul": (np.full((3, 1), B.sum()), np.full(4, A.sum())),
                "div": ((1 / B).sum() * np.ones((3, 1)), -(A.sum()) / B ** 2)}[op]
    np.testing.assert_allclose(a.grad, expected[0])
    np.testing.assert_allclose(b.grad, expected[1])


def test_broadcast_against_a_scalar_tensor():
    a, s = leaf(np.ones((2, 3))), leaf(2.0)
    (a * s).sum().backward()
    assert s.grad.shape == () and s.grad == 6.0


# ----------------------------------------------------------------------------- dtypes

def test_float32_stays_float32_with_python_scalars():
    x = leaf(np.ones((2, 2)), dtype=np.float32)
    results = [x * 2.0, 2.0 * x, x + 1, 1 - x, x / 3, 3 / x, x ** 2, -x, x - 0.5,
               F.maximum(x, 0.0), F.where(x.data > 0, x, 0.0), F.clip(x, 0.0, 0.5),
               x.mean(), x.sum(), x.var(), x.max()]
    for y in results:
        assert y.dtype == np.float32, y
    sum(y.sum() for y in results).backward()
    assert x.grad.dtype == np.float32


def test_float64_stays_float64_through_reductions():
    x = leaf(np.ones((2, 3)))
    for y in [x.sum(), x.mean(), x.max(), x.var(), x.sum(axis=1), F.mse_loss(x, x * 2),
              F.nll_loss(x, np.array([0, 2]))]:
        assert y.dtype == np.float64, y


def test_python_numbers_default_to_float32():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64     # arrays keep their dtype


def test_requires_grad_on_integers_is_a_type_error():
    with pytest.raises(TypeError, match="floating-point.*int64"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.arange(3)).requires_grad_()


# ----------------------------------------------------------------------------- small API

def test_to_cpu_detach_item_numpy():
    x = leaf([[1.0, 2.0]])
    moved = x.to("cpu")
    assert moved.device == "cpu" and moved.requires_grad and moved.is_leaf
    np.testing.assert_array_equal(moved.numpy(), x.numpy())
    with pytest.raises(ValueError, match="'cpu' or 'gpu'"):
        x.to("tpu")

    d = (x * 2).detach()
    assert not d.requires_grad and d.creator is None and d.is_leaf
    np.testing.assert_array_equal(d.data, [[2.0, 4.0]])

    assert x.sum().item() == 3.0 and isinstance(x.sum().item(), float)
    with pytest.raises(ValueError, match="one element"):
        x.item()


def test_detach_shares_memory_but_not_the_graph():
    x = leaf([1.0, 2.0])
    y = x.detach()
    y.data[0] = 5.0
    assert x.data[0] == 5.0
    (x * y).sum().backward()
    assert y.grad is None


def test_comparisons_give_boolean_arrays_and_tensors_hash_by_identity():
    x = Tensor(np.array([1.0, 3.0]))
    np.testing.assert_array_equal(x > 2, [False, True])
    np.testing.assert_array_equal(x <= 1, [True, False])
    assert len({x, Tensor(np.array([1.0, 3.0]))}) == 2


def test_method_forms_match_functions():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    np.testing.assert_array_equal(x.reshape(4, 6).data, x.data.reshape(4, 6))
    np.testing.assert_array_equal(x.transpose(2, 0, 1).data, x.data.transpose(2, 0, 1))
    np.testing.assert_array_equal(x.permute(1, 0, 2).data, x.data.transpose(1, 0, 2))
    np.testing.assert_array_equal(x.T.data, x.data.T)
    np.testing.assert_array_equal(x.flatten().data, x.data.reshape(2, 12))
    np.testing.assert_array_equal(x[1, :, ::2].data, x.data[1, :, ::2])
    np.testing.assert_array_equal((x @ x.transpose(0, 2, 1)).data,
                                  x.data @ x.data.transpose(0, 2, 1))


def test_shared_intermediate_gets_gradient_from_every_consumer():
    """y feeds both the Add and the Mul: y's creator must wait for both (residual blocks).
    A search that marks nodes when pushed rather than when expanded runs it too early and
    silently loses the Mul's share."""
    for build in (lambda y: y + y * 3.0, lambda y: y * 3.0 + y):
        x = Tensor(np.ones(2), requires_grad=True)
        build(x * 2.0).sum().backward()
        np.testing.assert_array_equal(x.grad, [8.0, 8.0])
