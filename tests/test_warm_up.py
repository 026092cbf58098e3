"""minicnn.warm.warm_up: compiles a network's kernels in a background thread and leaves
the caller's state (weights, random streams, modes) exactly as it was."""
import numpy as np
import pytest

import architectures
from minicnn import nn
from minicnn.kernels import direct, im2col, pool
from minicnn.warm import warm_up


def _lenet():
    return architectures.create("lenet5", num_classes=10, in_channels=1)


def test_builder_runs_without_consuming_the_initializers_random_numbers():
    nn.init.manual_seed(5)
    expected = [p.data.copy() for p in _lenet().parameters()]
    nn.init.manual_seed(5)
    warming = warm_up(_lenet, (1, 28, 28))
    built_meanwhile = [p.data for p in _lenet().parameters()]
    warming.join(timeout=600)
    assert not warming.is_alive() and warming.error is None
    for got, want in zip(built_meanwhile, expected):
        np.testing.assert_array_equal(got, want)


def test_a_given_module_is_copied_not_run():
    model = _lenet()
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    warming = warm_up(model, (1, 28, 28))
    warming.join(timeout=600)
    assert warming.error is None
    assert model.training                                  # its mode is its own
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])
        assert p.grad is None


def test_the_chosen_paths_kernels_are_compiled_for_float32():
    warm_up(_lenet(), (1, 28, 28)).join(timeout=600)
    for kernel in (direct._forward_block, direct._backward_weight_block,
                   im2col._im2col_rows_numba, im2col._col2im_numba,
                   pool._max_pool_forward_numba, pool._max_pool_backward_numba):
        assert any(str(signature[0]).startswith("array(float32")
                   for signature in kernel.signatures), kernel


def test_an_error_inside_the_network_is_kept_on_the_thread():
    warming = warm_up(_lenet(), (3, 28, 28))              # LeNet-5 here takes one channel
    warming.join(timeout=600)
    assert isinstance(warming.error, ValueError)
    assert "input channels" in str(warming.error)


def test_bad_arguments_are_refused_at_the_call():
    with pytest.raises(ValueError, match=r"expected input_shape \(channels, height, width\), "
                                         r"got \(28, 28\)"):
        warm_up(_lenet(), (28, 28))
    with pytest.raises(TypeError, match="expected a Module or a function that builds one, "
                                        "got str"):
        warm_up("lenet5", (1, 28, 28))
    with pytest.raises(TypeError, match="the builder returned int, not a Module"):
        warm_up(lambda: 3, (1, 28, 28))
