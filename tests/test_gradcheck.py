"""gradcheck itself: it must pass correct gradients and catch (and locate) wrong ones."""
import re

import numpy as np
import pytest

from minicnn import Function, Tensor, functional as F
from minicnn.gradcheck import gradcheck, numerical_grad


class SquareWithWrongElement(Function):
    """y = x², with a backward that is right everywhere except at one flat position."""
    def __init__(self, wrong_at):
        self.wrong_at = wrong_at

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        gx = 2 * self.x * gy
        gx.reshape(-1)[self.wrong_at] += 1.0   # the deliberate bug
        return gx


class ForgetsBroadcastSum(Function):
    """y = a + b with b broadcast, but backward returns gy for b without summing it."""
    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy[:1]


def test_numerical_grad_of_a_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    grad = numerical_grad(lambda: float((x ** 3).sum()), x)
    np.testing.assert_allclose(grad, 3 * x ** 2, rtol=1e-7)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # restored afterwards


def test_numerical_grad_on_a_noncontiguous_view():
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    x = base.T                                           # a view, not contiguous
    grad = numerical_grad(lambda: float((x * x).sum()), x)
    np.testing.assert_allclose(grad, 2 * x, rtol=1e-7)


def test_passes_a_correct_gradient():
    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = Tensor(rng.standard_normal((4, 2)), requires_grad=True)
    assert gradcheck(lambda a, b: F.tanh(a @ b), [a, b]) is True


def test_catches_a_wrong_backward_and_reports_the_index():
    x = Tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True)
    with pytest.raises(AssertionError) as failure:
        gradcheck(lambda x: SquareWithWrongElement(wrong_at=6)(x), [x])
    message = str(failure.value)
    assert "input 0" in message
    assert "element (1, 2)" in message                    # flat 6 in a (3, 4) array
    assert re.search(r"analytic .* vs numeric .*tolerance", message)
    assert "1 of 12 elements fail" in message


def test_names_the_failing_input():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones((1, 3)), requires_grad=True)
    with pytest.raises(AssertionError, match="input 1"):
        gradcheck(lambda a, b: ForgetsBroadcastSum()(a, b), [a, b])


def test_leaves_existing_gradients_alone():
    x = Tensor(np.ones(3), requires_grad=True)
    x.grad = np.full(3, 7.0)
    gradcheck(lambda x: x * x, [x])
    np.testing.assert_array_equal(x.grad, [7.0, 7.0, 7.0])


def test_refuses_float32_and_inputs_without_grad():
    with pytest.raises(TypeError, match="input 0 has dtype float32"):
        gradcheck(lambda x: x * x, [Tensor(np.ones(2, np.float32), requires_grad=True)])
    with pytest.raises(ValueError, match="no input"):
        gradcheck(lambda x: x * x, [Tensor(np.ones(2))])


def test_checks_functions_with_several_outputs():
    x = Tensor(np.linspace(0.1, 1.0, 6).reshape(2, 3), requires_grad=True)
    assert gradcheck(lambda x: F.split(x * x, [1, 2], axis=1), [x])
