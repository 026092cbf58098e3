"""minicnn.inference: a batch split across threads gives the model's own outputs, runs
only where it may (eval mode, no graph), and leaves the thread settings as it found them."""
import threading

import numba
import numpy as np
import pytest

import architectures
from minicnn import Tensor, nn, no_grad
from minicnn.inference import BatchParallel, concatenate, deploy, pool_before_activation
from minicnn.kernels import threads as kernel_threads


def images(n, channels=3, side=32, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(
        (n, channels, side, side)).astype(np.float32))


class Recorder(nn.Module):
    """Records the batch size and thread of every call; returns several kinds of output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.calls = []

    def forward(self, x):
        self.calls.append((x.shape[0], threading.get_ident(), numba.get_num_threads()))
        y = self.conv(x)
        return y, [y * 2.0, y.sum(axis=(2, 3))], {"scores": y.mean(axis=(1, 2, 3))}


def test_the_batch_is_split_across_threads_each_running_alone():
    model = Recorder().eval()
    x = images(8)
    with no_grad():
        whole = model(x)
        model.calls.clear()
        split = BatchParallel(model, threads=2)(x)
    assert sorted(size for size, _, _ in model.calls) == [4, 4]
    assert len({thread for _, thread, _ in model.calls}) == 2
    assert all(kernel_count == 1 for _, _, kernel_count in model.calls)
    np.testing.assert_allclose(split[0].data, whole[0].data, rtol=1e-6, atol=1e-6)
    for a, b in zip(split[1], whole[1]):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split[2]["scores"].data, whole[2]["scores"].data, rtol=1e-5,
                               atol=1e-6)


def test_the_thread_settings_are_restored():
    blas = [c.get_num_threads() for c in kernel_threads._blas_controllers()]
    kernels = numba.get_num_threads()
    with no_grad():
        BatchParallel(Recorder().eval(), threads=2)(images(8))   # split in two
    assert [c.get_num_threads() for c in kernel_threads._blas_controllers()] == blas
    assert numba.get_num_threads() == kernels


def test_a_share_holds_at_least_four_samples():
    model = Recorder().eval()
    with no_grad():
        BatchParallel(model, threads=2)(images(7))
    assert [size for size, _, _ in model.calls] == [7]


@pytest.mark.parametrize("why", ["gradient", "training", "tiny batch"])
def test_it_is_the_model_itself_where_a_split_would_change_anything(why):
    model = Recorder()
    if why != "training":
        model.eval()
    x = images(1 if why == "tiny batch" else 8)
    parallel = BatchParallel(model, threads=2)
    if why == "gradient":
        y = parallel(x)[0]
        assert y.creator is not None                       # the graph is recorded
    else:
        with no_grad():
            parallel(x)
    assert [size for size, _, _ in model.calls] == [x.shape[0]]


def test_deploy_folds_batch_norm_and_matches_the_eval_model():
    model = architectures.create("resnet18_cifar", num_classes=10).eval()
    for module in model.modules():                 # statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean[:] = np.random.default_rng(1).normal(0, 0.1, module.num_features)
            module.running_var[:] = np.random.default_rng(2).uniform(0.5, 1.5, module.num_features)
    deployed = deploy(model, input_size=32, in_channels=3, threads=2)
    assert len(deployed.folded_pairs) == 20
    assert list(deployed.state_dict()) == [k for k in deployed.model.state_dict()]
    x = images(6)
    with no_grad():
        np.testing.assert_allclose(deployed(x).data, model(x).data, rtol=1e-4, atol=1e-4)


class Custom(nn.Sequential):
    def forward(self, x):                          # not in order: must be left alone
        return self[1](self[0](x))


def test_max_pooling_moves_before_a_never_decreasing_activation_exactly():
    def net():
        return nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
            nn.LeakyReLU(0.1), nn.MaxPool2d(2), nn.ReLU6(), nn.MaxPool2d(2),
            nn.SiLU(), nn.MaxPool2d(1),            # SiLU dips below zero: it stays
            nn.LeakyReLU(-0.5), nn.MaxPool2d(1),   # decreasing on one side: it stays
            Custom(nn.ReLU(), nn.MaxPool2d(1)))
    original, moved = net().eval(), net().eval()
    moved.load_state_dict(original.state_dict())
    assert pool_before_activation(moved) == 3
    kinds = [type(m).__name__ for m in moved._modules.values()]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "MaxPool2d", "LeakyReLU", "MaxPool2d",
                     "ReLU6", "SiLU", "MaxPool2d", "LeakyReLU", "MaxPool2d", "Custom"]
    assert [type(m).__name__ for m in moved[-1]._modules.values()] == ["ReLU", "MaxPool2d"]
    x = images(5, side=21) * 3.0
    with no_grad():
        np.testing.assert_array_equal(moved(x).data, original(x).data)


def test_deploy_moves_lenets_pools_and_answers_as_the_model():
    model = architectures.create("lenet5", num_classes=10, in_channels=1).eval()
    deployed = deploy(model, input_size=28, in_channels=1, threads=1)
    assert deployed.pools_moved == 2
    x = images(8, channels=1, side=28)
    with no_grad():
        np.testing.assert_array_equal(deployed(x).data, model(x).data)


def test_concatenate_joins_arrays_along_the_batch():
    parts = [np.zeros((2, 3)), np.ones((1, 3))]
    assert concatenate(parts).shape == (3, 3)
    assert concatenate([(p,) for p in parts])[0].shape == (3, 3)
