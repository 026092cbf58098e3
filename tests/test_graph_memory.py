"""The graph holds an activation until backward only where a Function saved it: an input
is remembered by its place in the graph (``Edge``), not by its array."""
import gc
import weakref

import numpy as np

from minicnn import Tensor, functional as F
from minicnn.tensor import Edge


def test_an_unsaved_intermediate_array_is_freed_before_backward():
    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((4, 5)), requires_grad=True)
    shifted = a + 0.25                     # Add saves nothing; ReLU keeps only a mask
    array = weakref.ref(shifted.data)
    loss = F.relu(shifted).sum()
    del shifted
    gc.collect()
    assert array() is None                 # nothing holds it: not the ReLU, not the Add
    loss.backward()
    np.testing.assert_array_equal(a.grad, (a.data + 0.25 > 0).astype(a.dtype))


def test_leaves_are_kept_as_tensors_and_made_tensors_as_edges():
    a = Tensor(np.ones(3), requires_grad=True)
    b = a * 2.0
    c = b + a
    left, right = c.creator.inputs
    assert isinstance(left, Edge) and left.creator is b.creator and left.output_index == 0
    assert right is a
    c.sum().backward()                     # a reached along two paths: 2 + 1
    np.testing.assert_array_equal(a.grad, np.full(3, 3.0))
