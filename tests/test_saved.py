"""What a Function holds between its forward and backward is what it handed to
``save_for_backward``: after backward, with ``release()`` reduced to dropping ``saved``
and the inputs (no sweep of attributes by type), no array made during the forward pass is
left on any Function of math, shape, activation, loss, norm and dropout. Settings given to
``__init__`` (an index, labels, running statistics) stay, as they belong to the call."""
import numpy as np
import pytest

from minicnn import Tensor, functional as F
from minicnn.tensor import Function, observe_functions


def leaf(shape, seed=0, low=0.5):
    rng = np.random.default_rng(seed)
    return Tensor(rng.uniform(low, 2.0, shape), requires_grad=True)


def image(seed=0):
    return leaf((2, 3, 4, 4), seed, low=-2.0)


def grow_in_buffer(storage, first, second):
    prefix = F.concat_into_buffer(storage, 0, first)
    return F.concat_into_buffer(storage, 3, second, prefix=prefix)


OPERATIONS = {
    "add": lambda: leaf((3, 4)) + leaf((4,), 1),
    "sub": lambda: leaf((3, 4)) - leaf((3, 1), 1),
    "mul": lambda: leaf((3, 4)) * leaf((4,), 1),
    "div": lambda: leaf((3, 4)) / leaf((3, 4), 1),
    "maximum": lambda: F.maximum(leaf((3, 4)), leaf((3, 4), 1)),
    "where": lambda: F.where(np.eye(3, dtype=bool), leaf((3, 3)), leaf((3, 3), 1)),
    "matmul": lambda: leaf((2, 3, 4)) @ leaf((4, 5), 1),
    "linear": lambda: F.linear(leaf((3, 4)), leaf((5, 4), 1), leaf((5,), 2)),
    "pow_exp_log_sqrt": lambda: F.sqrt(F.log(F.exp(leaf((3, 4)) ** 2))),
    "neg_clip_cast": lambda: F.cast(F.clip(-leaf((3, 4)), -1.5, -0.7), np.float32),
    "reductions": lambda: (leaf((3, 4)).sum(axis=0) + leaf((3, 4), 1).mean(axis=0)
                           + leaf((3, 4), 2).max(axis=0) + leaf((3, 4), 3).var(axis=0)),
    "shape": lambda: F.concat(F.split(F.pad(F.transpose(F.reshape(leaf((3, 4)), (4, 3))),
                                            ((1, 0), (0, 2))), [2, 2], axis=0), axis=1),
    "getitem": lambda: leaf((5, 3))[np.array([0, 2, 2])],
    "zero_pad_subsample": lambda: F.zero_pad_subsample(image(), 5, 2),
    "concat_into_buffer": lambda: grow_in_buffer(np.empty((2, 4, 4, 6)), image(), image(1)),
    "activations": lambda: sum(f(image(i)) for i, f in enumerate(
        [F.relu, F.relu6, F.leaky_relu, F.sigmoid, F.tanh, F.scaled_tanh, F.silu,
         F.hard_sigmoid, F.hard_swish, F.softmax, F.log_softmax])),
    "cross_entropy": lambda: F.cross_entropy(leaf((4, 3)), np.array([0, 2, 1, 2]),
                                             label_smoothing=0.1),
    "nll_loss": lambda: F.nll_loss(F.log_softmax(leaf((4, 3))), np.array([0, 2, 1, 2])),
    "mse_loss": lambda: F.mse_loss(leaf((3, 4)), Tensor(np.ones((3, 4)))),
    "batch_norm": lambda: F.batch_norm(image(), np.zeros(3), np.ones(3), leaf((3,), 1),
                                       leaf((3,), 2)),
    "local_response_norm": lambda: F.local_response_norm(image(), size=3),
    "dropouts": lambda: (F.dropout(image(), 0.5) + F.dropout2d(image(1), 0.5)
                         + F.drop_path(image(2), 0.5)),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_backward_leaves_no_forward_array_outside_saved(name, monkeypatch):
    def lean_release(function):
        function.saved = None
        function.inputs = None
    monkeypatch.setattr(Function, "release", lean_release)
    original_call = Function.__call__

    def call_remembering_settings(function, *inputs):
        function.settings = set(vars(function))       # what __init__ gave it
        return original_call(function, *inputs)
    monkeypatch.setattr(Function, "__call__", call_remembering_settings)

    functions = []
    with observe_functions(lambda function, inputs, outputs: functions.append(function)):
        y = OPERATIONS[name]()
    y.sum().backward()
    assert functions
    for function in functions:
        if function.inputs is not None:          # not part of the graph (no input needed grad)
            continue
        left = [attribute for attribute, value in vars(function).items()
                if attribute not in function.settings
                and (isinstance(value, (np.ndarray, Tensor))
                     or any(isinstance(v, np.ndarray) for v in
                            (value if isinstance(value, (list, tuple)) else ())))]
        assert not left, f"{type(function).__name__} keeps {left} outside saved"
