"""minicnn.warm.warm_up: compiles a network's kernels in a background thread and helper
processes, and leaves the caller's state (weights, random streams, modes) exactly as it
was."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import architectures
from minicnn import nn
from minicnn.kernels import channels_first_view, direct, im2col, pool
from minicnn.warm import _memory_order, _zeros_in_order, operation_groups, warm_up


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
    with pytest.raises(ValueError, match="helpers must be a whole number ≥ 0, got -1"):
        warm_up(_lenet(), (1, 28, 28), helpers=-1)


def test_the_groups_follow_what_compiles_one_per_convolution_algorithm():
    groups = operation_groups(_lenet(), (1, 28, 28))
    assert [(family, len(calls)) for family, calls in groups] == [
        ("Conv2d/direct", 1), ("ReLU", 4), ("MaxPool2d", 2), ("Conv2d/im2col", 1),
        ("Reshape", 1), ("Linear", 3)]
    first = groups[0][1][0]
    image, weight, bias = first.inputs                  # the images need no gradient
    assert image[1:] == ((2, 1, 28, 28), np.float32, (0, 1, 2, 3), False)
    assert weight[4] and bias[4]


def test_a_replayed_input_keeps_the_layout_it_had_in_the_network():
    channels_last = channels_first_view(np.zeros((2, 5, 6, 3), np.float32))   # NCHW view
    order = _memory_order(channels_last)
    assert order == (0, 2, 3, 1)
    zeros = _zeros_in_order(channels_last.shape, np.float32, order)
    assert zeros.shape == (2, 3, 5, 6) and zeros.strides == channels_last.strides


def test_a_helper_process_compiles_groups_the_main_process_then_loads_from_the_cache(tmp_path):
    """In a fresh process with an empty kernel cache: the thread and one helper each take
    groups, and the helper's kernels reach the main process from the disk cache."""
    script = textwrap.dedent("""
        import json
        import architectures
        from minicnn.kernels import direct, im2col, pool
        from minicnn.warm import warm_up
        warming = warm_up(lambda: architectures.create("lenet5", in_channels=1),
                          (1, 28, 28), helpers=1)
        warming.join(timeout=600)
        kernels = (direct._forward_block, direct._backward_weight_block,
                   im2col._im2col_rows_numba, im2col._col2im_numba,
                   pool._max_pool_forward_numba, pool._max_pool_backward_numba)
        print(json.dumps(dict(
            error=repr(warming.error), taken_by=warming.taken_by,
            hits=sum(sum(k.stats.cache_hits.values()) for k in kernels),
            compiled=all(k.signatures for k in kernels))))
    """)
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=environment, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["error"] == "None" and report["compiled"]
    assert sorted(set(report["taken_by"])) == [0, 1] and len(report["taken_by"]) == 6
    assert report["hits"] >= 1              # at least one kernel came from the helper
    assert result.stderr == ""              # a helper says nothing


def test_no_helper_is_forked_while_another_thread_runs():
    """A fork copies only the forking thread: a lock another thread holds (Numba compiles
    under one) would stay held in the child forever. With a second thread alive the
    thread compiles alone, even when a helper is asked for."""
    import threading
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        warming = warm_up(_lenet(), (1, 28, 28), helpers=1)
        warming.join(timeout=600)
    finally:
        release.set()
        other.join()
    assert warming.error is None and warming.taken_by == []
