"""fold_batchnorm: a folded network computes what the unfolded one does in eval mode."""
from collections import OrderedDict

import numpy as np
import pytest

import architectures
from minicnn import nn, no_grad, Tensor
from minicnn.fold import find_foldable_pairs, fold_batchnorm, fold_into


def randomize_batchnorm(model, seed=0):
    """Running statistics and γ, β far from the identity, so folding has work to do."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = module.num_features
            dtype = module.running_mean.dtype
            module.running_mean[...] = rng.normal(0, 0.5, c).astype(dtype)
            module.running_var[...] = rng.uniform(0.5, 2.0, c).astype(dtype)
            module.weight.data = rng.uniform(0.5, 1.5, c).astype(dtype)
            module.bias.data = rng.normal(0, 0.2, c).astype(dtype)
    return model


def outputs(model, x):
    model.eval()
    with no_grad():
        return model(Tensor(x)).data


def batchnorms(model):
    return [n for n, m in model.named_modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]


ZOO = ["resnet18", "mobilenet_v2", "vgg16_bn_cifar"]


@pytest.mark.parametrize("name", ZOO)
def test_folded_zoo_network_matches_in_float32_and_float64(name):
    if name not in architectures.available():
        pytest.skip(f"architecture {name!r} is not registered")
    nn.init.manual_seed(0)
    model = randomize_batchnorm(architectures.create(name, num_classes=10, in_channels=3))
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)

    expected = outputs(model, x)
    folded = fold_batchnorm(model, input_size=32)
    assert batchnorms(folded) == []                     # every BN follows a conv here
    assert not folded.training
    got = outputs(folded, x)
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()

    # the structural rule (registration order) finds the same pairs on these networks
    assert sorted(find_foldable_pairs(model)) == sorted(find_foldable_pairs(model, 32))
    assert len(batchnorms(model)) == len(find_foldable_pairs(model, 32))   # original intact

    model.double()
    expected64 = outputs(model, x.astype(np.float64))
    got64 = outputs(fold_batchnorm(model, input_size=32), x.astype(np.float64))
    assert np.abs(got64 - expected64).max() <= 1e-10 * np.abs(expected64).max()


def test_fold_formula_for_grouped_conv_and_linear():
    rng = np.random.default_rng(2)
    nn.init.manual_seed(2)
    conv, bn = nn.Conv2d(4, 6, 3, groups=2, bias=True).double(), nn.BatchNorm2d(6).double()
    randomize_batchnorm(bn, seed=3)
    gamma, beta = bn.weight.data.copy(), bn.bias.data.copy()
    mean, var = bn.running_mean.copy(), bn.running_var.copy()
    w, b = conv.weight.data.copy(), conv.bias.data.copy()
    fold_into(conv, bn)
    scale = gamma / np.sqrt(var + bn.eps)
    np.testing.assert_allclose(conv.weight.data, w * scale[:, None, None, None], rtol=1e-14)
    np.testing.assert_allclose(conv.bias.data, scale * (b - mean) + beta, rtol=1e-14)

    linear, bn1 = nn.Linear(5, 3, bias=False).double(), nn.BatchNorm1d(3).double()
    randomize_batchnorm(bn1, seed=4)
    x = rng.standard_normal((7, 5))
    model = nn.Sequential(linear, bn1)
    expected = outputs(model, x)
    folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.Identity) and folded[0].bias is not None
    np.testing.assert_allclose(outputs(folded, x), expected, rtol=1e-12, atol=1e-12)


class ConvFeedsTwo(nn.Module):
    """The conv output is read by the BN *and* by the residual addition: not foldable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class PreActivation(nn.Module):
    """Registered conv then bn, but the BN runs *before* the conv: structure lies."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(self.bn(x))


class SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(self.conv(x)))


@pytest.mark.parametrize("make", [ConvFeedsTwo, PreActivation, SharedConv])
def test_traced_rule_refuses_unsafe_pairs(make):
    nn.init.manual_seed(0)
    model = randomize_batchnorm(make().double())
    assert find_foldable_pairs(model, input_size=(3, 6, 6)) == []
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 6))
    folded = fold_batchnorm(model, input_size=(3, 6, 6))
    np.testing.assert_allclose(outputs(folded, x), outputs(model, x), rtol=1e-12, atol=1e-12)


def test_structural_rule_is_the_registration_order():
    # without input_size only the registration order is seen: documented limitation
    assert find_foldable_pairs(PreActivation()) == [("conv", "bn")]
    sequential = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 1), bn=nn.BatchNorm2d(4),
                                           relu=nn.ReLU(), bn2=nn.BatchNorm2d(4)))
    assert find_foldable_pairs(sequential) == [("conv", "bn")]
    mismatched = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5))
    assert find_foldable_pairs(mismatched) == []


def test_folding_keeps_the_order_of_a_sequential_and_leaves_the_original_alone():
    nn.init.manual_seed(0)
    model = randomize_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2),
                                              nn.ReLU(), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)))
    model.train()
    folded = fold_batchnorm(model)
    assert [type(m).__name__ for m in folded] == ["Conv2d", "Identity", "ReLU", "Conv2d",
                                                  "Identity"]
    assert model.training and isinstance(model[1], nn.BatchNorm2d) and model[0].bias is None
    assert folded.folded_pairs == [("0", "1"), ("3", "4")]


def test_fold_into_rejects_a_mismatch():
    with pytest.raises(ValueError, match="fold_batchnorm"):
        fold_into(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="fold_batchnorm"):
        fold_into(nn.Linear(2, 3), nn.BatchNorm2d(3))
