"""minicnn.split_training: a training batch split across threads gives the whole batch's
loss and gradients, in a fixed order; it is refused (with the reason) wherever the split
would change what is computed, and a custom operation that mixes samples is caught."""
import copy
import threading

import numpy as np
import pytest

import architectures
from minicnn import Tensor, functional as F, nn
from minicnn.kernels import threads as kernel_threads
from minicnn.optim import SGD
from minicnn.split_training import MIN_SAMPLES_PER_THREAD, split_backward, split_reason
from minicnn.tensor import observe_functions
from minicnn.train import NonFiniteLoss, train_step

needs_two_threads = pytest.mark.skipif(
    min(kernel_threads.thread_count(), kernel_threads.pool_size() + 1) < 2,
    reason="needs two kernel threads (NUMBA_NUM_THREADS ≥ 2)")

BATCH = 2 * MIN_SAMPLES_PER_THREAD


def batch(n=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    return (Tensor(rng.standard_normal((n, 1, 28, 28)).astype(np.float32)),
            rng.integers(0, 10, n))


def lenet():
    nn.init.manual_seed(0)
    return architectures.create("lenet5", num_classes=10, in_channels=1)


def whole_step(model, images, labels, monkeypatch):
    """``train_step`` with the split refused (every batch under the minimum)."""
    with monkeypatch.context() as patch:
        patch.setattr("minicnn.split_training.MIN_SAMPLES_PER_THREAD", 10 ** 9)
        return train_step(model, SGD(model.parameters(), lr=0.1), images, labels)


@needs_two_threads
def test_a_split_step_gives_the_whole_batchs_loss_accuracy_and_update(monkeypatch):
    images, labels = batch()
    split_model, whole_model = lenet(), lenet()
    calls, forward = [], split_model.forward

    def recording_forward(x):                 # (a forward hook would refuse the split)
        calls.append((x.shape[0], threading.get_ident()))
        return forward(x)
    split_model.forward = recording_forward
    split = train_step(split_model, SGD(split_model.parameters(), lr=0.1), images, labels)
    whole = whole_step(whole_model, images, labels, monkeypatch)
    assert sorted(size for size, _ in calls) == [BATCH // 2, BATCH // 2]
    assert len({thread for _, thread in calls}) == 2
    assert split[0] == pytest.approx(whole[0], rel=1e-5)
    assert split[1] == whole[1]
    for (name, a), (_, b) in zip(split_model.named_parameters(),
                                 whole_model.named_parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6, err_msg=name)


@needs_two_threads
def test_split_gradients_are_summed_in_share_order_and_leave_the_leaves_alone():
    model, (images, labels) = lenet(), batch()

    def loss_of(share, first, last):
        return F.cross_entropy(model(share), labels[first:last]), (first, last)

    first = split_backward(images.data, loss_of, threads=2)
    second = split_backward(images.data, loss_of, threads=2)
    assert first[1] == [(0, BATCH // 2), (BATCH // 2, BATCH)]
    assert all(p.grad is None for p in model.parameters())
    assert [id(leaf) for leaf, _ in first[2]] == [id(leaf) for leaf, _ in second[2]]
    for (_, a), (_, b) in zip(first[2], second[2]):
        assert np.array_equal(a, b)               # bit for bit: a fixed order of sums
    model.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    for leaf, gradient in first[2]:
        np.testing.assert_allclose(gradient, leaf.grad, rtol=1e-4, atol=1e-6)


def test_backward_into_a_dict_keeps_each_leafs_gradient_there():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    kept = {}
    ((w * w).sum() + w.sum()).backward(leaf_grads=kept)
    assert w.grad is None
    assert kept[id(w)][0] is w
    np.testing.assert_array_equal(kept[id(w)][1], [3.0, 5.0])


class HiddenDropout(nn.Module):
    """A custom module that draws random numbers but does not say so."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return F.flatten(F.dropout(self.conv(x), 0.5))


class HiddenBatchNorm(HiddenDropout):
    def forward(self, x):
        return F.flatten(F.batch_norm(self.conv(x), None, None))


@pytest.mark.parametrize("model, reason", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), "BatchNorm2d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(0.5)), "Dropout"),
])
def test_a_model_that_mixes_samples_in_training_runs_whole(model, reason):
    images, _ = batch()
    assert f"({reason}) mixes the samples" in split_reason(model, images.data, threads=2)
    assert split_reason(model.eval(), images.data, threads=2) in (None, "one thread")


def test_dropout_of_zero_and_batch_norm_in_eval_mode_do_not_refuse():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2).eval(), nn.Dropout(0.0))
    assert split_reason(model, batch()[0].data, threads=2) in (None, "one thread")


def test_hooks_traces_small_batches_and_one_thread_each_refuse_with_their_reason():
    model, (images, _) = lenet(), batch()
    assert "under" in split_reason(model, images.data[:BATCH - 1])
    assert split_reason(model, images.data, threads=1) == "one thread"
    remove = model.conv1.register_forward_hook(lambda *args: None)
    assert "conv1 has forward hooks" in split_reason(model, images.data)
    remove()
    with observe_functions(lambda *args: None):
        assert "trace" in split_reason(model, images.data)


@needs_two_threads
@pytest.mark.parametrize("module, operation", [(HiddenDropout, "dropout"),
                                               (HiddenBatchNorm, "batch_norm")])
def test_a_custom_module_that_mixes_samples_unannounced_is_caught(module, operation):
    model, (images, labels) = module(), batch()
    with pytest.raises(RuntimeError, match=f"{operation} in training ran on one share"):
        train_step(model, SGD(model.parameters(), lr=0.1), images, labels % 2)
    model.independent_samples = False        # said: run whole
    train_step(model, SGD(model.parameters(), lr=0.1), images, labels % 2)


@needs_two_threads
def test_a_non_finite_split_loss_stops_before_the_update():
    model, (images, labels) = lenet(), batch()
    before = copy.deepcopy(model.state_dict())
    images.data[3] = np.nan
    with pytest.raises(NonFiniteLoss):
        train_step(model, SGD(model.parameters(), lr=0.1), images, labels)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert all(p.grad is None for p in model.parameters())


@needs_two_threads
def test_an_error_in_one_block_returns_only_when_every_block_has_ended():
    import time
    finished = []

    def block(first, last):
        if first == 0:
            raise ValueError("the first block fails at once")
        time.sleep(0.2)
        finished.append(first)

    with pytest.raises(ValueError, match="fails at once"):
        kernel_threads.over_blocks(block, 2, kernel_threads.MIN_WORK_PER_THREAD, threads=2)
    assert finished == [1]
