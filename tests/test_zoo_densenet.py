"""DenseNet (Huang et al. 2017): ImageNet DenseNet-121/169/201/264/161 and the CIFAR
DenseNet(-BC) models.

* exact parameter counts for every variant, output shapes at the published size (the
  biggest forwards under ``slow``);
* dense layer, transition, dense block and the buffer concatenation pass gradcheck;
* the preallocated-buffer dense block computes exactly what the literal concatenation
  computes, forward and backward, and really works in one buffer;
* small-batch training at reduced size (every parameter gets a gradient), eval() mode.
"""
import numpy as np
import pytest

import architectures
from minicnn import Tensor, gradcheck, nn, no_grad
from minicnn import functional as F
from architectures import densenet
from tests.zoo_checks import assert_output_shape, assert_trains

# name: (num_classes of the published count, parameters, forward GFLOPs at published size)
VARIANTS = {
    "densenet121": (1000, 7_978_856, 2.9),
    "densenet169": (1000, 14_149_480, 3.4),
    "densenet201": (1000, 20_013_928, 4.3),
    "densenet264": (1000, 33_337_704, 5.8),
    "densenet161": (1000, 28_681_000, 7.8),
    "densenet_bc_100_12": (10, 769_162, 0.29),
    "densenet_bc_250_24": (10, 15_324_406, 5.4),
    "densenet_bc_190_40": (10, 25_624_430, 9.3),
    "densenet40_12": (10, 1_019_722, 0.53),
}
SHAPE_GFLOPS_LIMIT = 5.0


def published_size(name):
    return architectures.entry(name).input_size


def test_every_registered_variant_is_listed():
    assert set(architectures.available("densenet")) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_and_output_shape(name):
    num_classes, expected, gflops = VARIANTS[name]
    model = architectures.create(name, num_classes=num_classes)
    assert model.num_parameters() == expected, (
        f"{name}: {model.num_parameters():,} parameters, expected {expected:,}")
    if gflops <= SHAPE_GFLOPS_LIMIT:
        assert_output_shape(model, published_size(name), num_classes)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, v in VARIANTS.items()
                                        if v[2] > SHAPE_GFLOPS_LIMIT))
def test_output_shape_of_the_biggest(name):
    num_classes = VARIANTS[name][0]
    assert_output_shape(architectures.create(name, num_classes=num_classes),
                        published_size(name), num_classes)


def test_channel_bookkeeping_of_densenet121():
    """Table 1 with k = 32, θ = 0.5: 64 + 6·32 = 256 → 128; 128 + 12·32 = 512 → 256;
    256 + 24·32 = 1024 → 512; 512 + 16·32 = 1024 features into the classifier."""
    features = densenet.densenet121().features
    assert [features[f"denseblock{i}"].out_channels for i in range(1, 5)] == [256, 512, 1024, 1024]
    assert [features[f"transition{i}"].conv.out_channels for i in range(1, 4)] == [128, 256, 512]


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        densenet.densenet_cifar(101, 12)
    with pytest.raises(ValueError, match="compression"):
        densenet.DenseNet(12, (2, 2), 24, compression=0.0)
    with pytest.raises(ValueError, match="stem"):
        densenet.DenseNet(12, (2, 2), 24, stem="tiny")
    block = densenet.DenseBlock(2, 4, 3)
    with pytest.raises(ValueError, match="DenseBlock"):
        block(Tensor(np.zeros((1, 5, 4, 4), np.float32)))


# ----------------------------------------------------------------------------- concatenation
def test_concat_into_buffer_gradcheck():
    rng = np.random.default_rng(0)
    first = Tensor(rng.standard_normal((2, 3, 3, 3)), requires_grad=True)
    new = Tensor(rng.standard_normal((2, 2, 3, 3)), requires_grad=True)

    def grow(a, b):
        storage = np.empty((2, 3, 3, 5))
        prefix = F.concat_into_buffer(storage, 0, a)
        return F.concat_into_buffer(storage, 3, b, prefix=prefix) * 1.0
    assert gradcheck(grow, [first, new])
    np.testing.assert_array_equal(grow(first, new).numpy(),
                                  np.concatenate([first.numpy(), new.numpy()], axis=1))


def test_concat_into_buffer_rejects_a_foreign_prefix():
    storage = np.empty((1, 2, 2, 6), np.float32)
    foreign = Tensor(np.zeros((1, 3, 2, 2), np.float32))
    new = Tensor(np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="prefix"):
        F.concat_into_buffer(storage, 3, new, prefix=foreign)
    with pytest.raises(ValueError, match="cannot write"):
        F.concat_into_buffer(storage, 0, Tensor(np.zeros((1, 7, 2, 2), np.float32)))


def test_every_layer_reads_a_view_of_one_buffer():
    """The block's output owns the memory; every layer's input is a prefix view of it."""
    block = densenet.DenseBlock(4, 3, 2)
    inputs = []
    for layer in block._modules.values():
        layer.register_forward_hook(lambda module, args, output: inputs.append(args[0].data))
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32))
    with no_grad():
        y = block(x).numpy()
    assert y.shape == (2, 3 + 4 * 2, 4, 4)
    assert [a.shape[1] for a in inputs] == [3, 5, 7, 9]
    assert all(np.shares_memory(a, y) for a in inputs)
    np.testing.assert_array_equal(y[:, :3], x.numpy())


def _tiny_densenet(efficient_concat):
    nn.init.manual_seed(7)
    model = densenet.DenseNet(3, (2, 3), 4, num_classes=5, in_channels=2, stem="cifar",
                              efficient_concat=efficient_concat)
    return model.to(dtype=np.float64).train()


def test_buffer_concat_equals_literal_concat_forward_and_backward():
    x = np.random.default_rng(3).standard_normal((3, 2, 6, 6))
    results = []
    for efficient in (True, False):
        model = _tiny_densenet(efficient)
        inp = Tensor(x.copy(), requires_grad=True)
        out = model(inp)
        (out * Tensor(np.arange(15.0).reshape(3, 5))).sum().backward()
        results.append((out.numpy(), inp.grad, [p.grad for p in model.parameters()]))
    (y1, gx1, gp1), (y2, gx2, gp2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx1, gx2, rtol=1e-10, atol=1e-12)
    for a, b in zip(gp1, gp2):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- gradchecks
def _gradcheck_module(module, shape, seed=0):
    """Input gradient (and the small parameters: BN γ, β) in float64, training mode."""
    module.to(dtype=np.float64).train()
    x = Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)
    small = [p for p in module.parameters() if p.size <= 16]
    assert gradcheck(lambda t, *p: module(t), [x, *small])


@pytest.mark.parametrize("kind,make,shape", [
    ("dense_layer_bottleneck", lambda: densenet.DenseLayer(3, 2), (2, 3, 4, 4)),
    ("dense_layer_plain", lambda: densenet.DenseLayer(3, 2, bottleneck=False), (2, 3, 4, 4)),
    ("transition", lambda: densenet.Transition(4, 2), (2, 4, 4, 4)),
    ("dense_block", lambda: densenet.DenseBlock(3, 2, 2), (2, 2, 3, 3)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_block_gradcheck(kind, make, shape):
    _gradcheck_module(make(), shape)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("name,size,options", [
    ("densenet_bc_100_12", 8, {}),
    ("densenet40_12", 8, {"dropout": 0.2}),
    ("densenet121", 32, {}),
], ids=["bc_100_12", "plain_40_12", "densenet121"])
def test_trains(name, size, options):
    nn.init.manual_seed(0)               # fixed weights and dropout masks: no luck involved
    F.dropout.manual_seed(0)
    model = architectures.create(name, num_classes=10, in_channels=1, **options)
    assert_trains(model, size, lr=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet169", "densenet201", "densenet264", "densenet161",
                                  "densenet_bc_250_24", "densenet_bc_190_40"])
def test_forward_backward_of_the_others(name):
    model = architectures.create(name, num_classes=10, in_channels=1)
    size = 8 if published_size(name) == 32 else 32
    x = Tensor(np.random.default_rng(0).standard_normal((2, 1, size, size)).astype(np.float32))
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_eval_switches_dropout_and_batch_norm():
    model = densenet.densenet40_12(num_classes=10, in_channels=1, dropout=0.2)
    x = Tensor(np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32))
    model.train()
    with no_grad():
        model(x)
    model.eval()
    with no_grad():
        batch, again, alone = model(x).numpy(), model(x).numpy(), model(x[:1]).numpy()
    np.testing.assert_array_equal(batch, again)
    np.testing.assert_allclose(alone[0], batch[0], rtol=1e-4, atol=1e-5)
