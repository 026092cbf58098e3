"""The engine and the zoo refuse what cannot be right, with a message naming what was
expected and what arrived: a gradient of the wrong shape, a network of zero classes."""
import numpy as np
import pytest

import architectures
from minicnn.tensor import Tensor


@pytest.mark.parametrize("shape", [(2,), (3, 1), (1, 3), ()])
def test_backward_refuses_a_gradient_of_another_shape(shape):
    x = Tensor(np.ones(3), requires_grad=True)
    y = x * 2
    with pytest.raises(ValueError, match=r"output's shape \(3,\), got"):
        y.backward(np.ones(shape))
    assert x.grad is None                      # nothing accumulated before the refusal


def test_backward_takes_a_gradient_of_the_output_shape():
    x = Tensor(np.ones(3), requires_grad=True)
    (x * 2).backward(np.array([1.0, 10.0, 100.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 20.0, 200.0])
