"""Transfer learning: freezing, heads, partial loads, frozen batch norm, and the demo."""
import os
from collections import OrderedDict

import numpy as np
import pytest

import architectures
from minicnn import functional as F, nn, optim, Tensor, no_grad
from minicnn.nn.transfer import (FrozenBatchNorm2d, freeze, freeze_all_but_last, freeze_backbone,
                                 freeze_batchnorm,
                                 head_name, load_partial, replace_head, replace_module,
                                 trainable_parameters, unfreeze, unfreeze_batchnorm)


def lenet(classes=10, seed=0):
    nn.init.manual_seed(seed)
    return architectures.create("lenet5", num_classes=classes, in_channels=1)


def small_bn_net(seed=0):
    nn.init.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 4, 3), bn=nn.BatchNorm2d(4), relu=nn.ReLU(),
        pool=nn.GlobalAvgPool2d(), flatten=nn.Flatten(), fc=nn.Linear(4, 3)))


def step(model, optimizer, seed=0):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((8, 1, 28, 28)).astype(np.float32))
    loss = F.cross_entropy(model(x), rng.integers(0, 3, 8))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# ------------------------------------------------------------------------- freezing

def test_freeze_and_unfreeze_by_name_pattern_and_module():
    model = lenet()
    assert freeze(model, "conv1") == ["conv1.weight", "conv1.bias"]
    assert freeze(model, ["fc1.weight", model.conv2]) == ["fc1.weight", "conv2.weight",
                                                          "conv2.bias"]
    assert freeze(model, "*.bias") == [n for n, _ in model.named_parameters() if n.endswith("bias")]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                      "fc1.weight", "fc1.bias", "fc2.bias", "fc3.bias"}
    assert unfreeze(model, "fc*") == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                      "fc3.weight", "fc3.bias"]
    assert len(freeze(model)) == 10 and trainable_parameters(model) == []
    unfreeze(model)
    assert len(trainable_parameters(model)) == 10


def test_freeze_names_what_it_cannot_find():
    model = lenet()
    with pytest.raises(ValueError, match="'conv3' names no parameter of LeNet5Modern"):
        freeze(model, "conv3")
    with pytest.raises(ValueError, match="not part of this"):
        freeze(model, nn.Linear(2, 2))
    with pytest.raises(TypeError, match="freeze"):
        freeze(model, [3])


def test_frozen_parameters_get_no_gradient_and_the_optimizer_skips_them():
    model = lenet(classes=3)
    freeze(model, ["conv1", "fc1"])
    frozen = {n: p.data.copy() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.data.copy() for n, p in model.named_parameters() if p.requires_grad}
    # built over *all* parameters, with momentum and weight decay: frozen ones stay put
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for seed in range(2):
        step(model, optimizer, seed)
    params = dict(model.named_parameters())
    for name, before in frozen.items():
        assert params[name].grad is None
        np.testing.assert_array_equal(params[name].data, before)
    for name, before in trained.items():
        assert not np.array_equal(params[name].data, before), name


# ------------------------------------------------------------------------------ heads

def test_replace_head_swaps_the_last_linear():
    model = lenet(classes=10)
    old = model.fc3
    assert head_name(model) == "fc3"
    assert replace_head(model, 4, rng=np.random.default_rng(0)) == "fc3"
    assert model.fc3 is not old and model.fc3.out_features == 4 and model.fc3.in_features == 84
    assert list(model._modules)[-1] == "fc3"                  # same place in the chain
    assert list(model.state_dict())[-2:] == ["fc3.weight", "fc3.bias"]
    with no_grad():
        out = model(Tensor(np.zeros((2, 1, 28, 28), dtype=np.float32)))
    assert out.shape == (2, 4) and out.dtype == np.float32


def test_replace_head_finds_a_1x1_conv_classifier():
    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 10, 1),
                          nn.GlobalAvgPool2d(), nn.Flatten())
    assert head_name(model) == "2"
    replace_head(model, 5)
    assert isinstance(model[2], nn.Conv2d) and model[2].out_channels == 5
    with pytest.raises(ValueError, match="no Linear layer and no 1×1"):
        head_name(nn.Sequential(nn.Conv2d(1, 1, 3)))
    with pytest.raises(ValueError, match="num_classes"):
        replace_head(model, 0)


def test_replace_module_keeps_registration_order():
    model = small_bn_net()
    replace_module(model, "bn", nn.Identity())
    assert list(model._modules) == ["conv", "bn", "relu", "pool", "flatten", "fc"]
    assert isinstance(model.bn, nn.Identity)
    with pytest.raises(ValueError, match="no module 'nope'"):
        replace_module(model, "nope", nn.Identity())


def test_freeze_backbone_and_all_but_last():
    model = lenet()
    assert len(trainable_parameters(model)) == 10
    frozen = freeze_backbone(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc3.weight", "fc3.bias"]
    assert len(frozen) == 8
    freeze_all_but_last(model, 2)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    for bad in (0, 6, "2", 2.0):
        with pytest.raises(ValueError, match=r"count must lie in \[1, 5\]"):
            freeze_all_but_last(model, bad)


def test_freezing_pins_the_frozen_batch_norms():
    model = small_bn_net()
    freeze_backbone(model)
    assert isinstance(model.bn, FrozenBatchNorm2d)
    model.train()
    assert not model.bn.training and model.fc.training


# ---------------------------------------------------------------------- batch norm

def test_frozen_batchnorm_stays_in_eval_mode_under_train():
    model = small_bn_net()
    bn = model.bn
    bn.running_mean[...] = [0.1, -0.2, 0.3, 0.0]
    keys = list(model.state_dict())
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    x = np.random.default_rng(0).standard_normal((4, 1, 6, 6)).astype(np.float32)
    model.eval()
    with no_grad():
        expected = model(Tensor(x)).data
    assert freeze_batchnorm(model) == ["bn"]
    assert type(bn) is FrozenBatchNorm2d and model.bn is bn        # the same object
    model.train()
    assert not bn.training and model.conv.training
    mean_before = bn.running_mean.copy()
    with no_grad():
        got = model(Tensor(x)).data
    np.testing.assert_allclose(got, expected, rtol=1e-6)          # running statistics used
    np.testing.assert_array_equal(bn.running_mean, mean_before)   # and not updated
    assert not bn.weight.requires_grad and not bn.bias.requires_grad
    assert list(model.state_dict()) == keys
    step_input = np.random.default_rng(1)
    loss = F.cross_entropy(model(Tensor(x)), step_input.integers(0, 3, 4))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()                                              # optimizer still valid
    assert unfreeze_batchnorm(model) == ["bn"]
    assert type(bn) is nn.BatchNorm2d and bn.training and bn.weight.requires_grad
    model.eval()
    assert not bn.training


# -------------------------------------------------------------------- partial loads

def test_load_partial_skips_a_different_head_and_reports(tmp_path):
    source = lenet(classes=10, seed=1)
    target = lenet(classes=5, seed=2)
    state = source.state_dict()
    state["extra.weight"] = np.zeros(3, dtype=np.float32)
    fc3_before = target.fc3.weight.data.copy()
    report = load_partial(target, state)
    assert [k for k, _, _ in report.mismatched] == ["fc3.weight", "fc3.bias"]
    assert report.mismatched[0][1:] == ((10, 84), (5, 84))
    assert report.unexpected == ["extra.weight"] and report.missing == []
    assert len(report.loaded) == 8
    np.testing.assert_array_equal(target.conv1.weight.data, source.conv1.weight.data)
    np.testing.assert_array_equal(target.fc3.weight.data, fc3_before)
    text = str(report)
    assert "fc3.weight (checkpoint (10, 84), model (5, 84))" in text and "extra.weight" in text
    assert set(report.skipped) == {"fc3.weight", "fc3.bias", "extra.weight"}


def test_load_partial_from_checkpoint_and_npz_files(tmp_path):
    source = small_bn_net(seed=3)
    source.bn.running_var[...] = 2.0
    path = str(tmp_path / "run.npz")
    optim.save_checkpoint(path, model=source.state_dict(), extra={"epoch": 3})
    target = small_bn_net(seed=4)
    del target.fc                                    # a model without the head
    target.fc = nn.Linear(4, 7)
    report = load_partial(target, path)
    np.testing.assert_array_equal(target.bn.running_var, 2.0)
    assert {k for k, _, _ in report.mismatched} == {"fc.weight", "fc.bias"}
    plain = str(tmp_path / "plain.npz")
    np.savez(plain, **{k: v for k, v in source.state_dict().items() if not k.startswith("fc")})
    fresh = small_bn_net(seed=5)
    report = load_partial(fresh, plain)
    assert report.missing == ["fc.weight", "fc.bias"]
    np.testing.assert_array_equal(fresh.conv.weight.data, source.conv.weight.data)
    with pytest.raises(TypeError, match="load_partial"):
        load_partial(fresh, 42)


# ---------------------------------------------------------------------------- demo

def _demo_data():
    """Real MNIST when it is already cached (never downloaded here), else synthetic."""
    from minicnn.data.dataset import default_data_dir
    from minicnn.demos.transfer_mnist import load_data
    if os.path.isfile(os.path.join(default_data_dir(), "mnist", "mnist.npz")):
        return "mnist", load_data("mnist")
    return "synthetic", load_data("synthetic")


@pytest.mark.slow   # ~1.5–3 min; run with -m slow (the demo itself: python -m minicnn.demos.transfer_mnist)
def test_transfer_demo_beats_training_from_scratch():
    from minicnn.demos.transfer_mnist import run
    source, data = _demo_data()
    # 6,000 pretraining images seen twice; then 25 labelled images, 40 steps of 5 each way
    results = run(data=data, pretrain_per_class=600, pretrain_epochs=2, per_class=5,
                  finetune_epochs=8, batch_size=5, lr=0.02, test_limit=200, seed=0,
                  verbose=False)
    assert results["pretrain"] > 0.9, (source, results)
    assert results["frozen"] > results["scratch"], (source, results)
    assert results["finetune"] > results["scratch"], (source, results)


def test_synthetic_digits_are_digit_like():
    from minicnn.demos.transfer_mnist import synthetic_digits
    images, labels = synthetic_digits(200, seed=0)
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8
    assert set(labels) == set(range(10))
    ones, eights = images[labels == 1].mean(), images[labels == 8].mean()
    assert eights > 1.5 * ones                      # an 8 has 7 strokes, a 1 has 2
    again, _ = synthetic_digits(200, seed=0)
    np.testing.assert_array_equal(images, again)
