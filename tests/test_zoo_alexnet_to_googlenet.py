"""Zoo I, first half: AlexNet, ZFNet, VGG, Network in Network, GoogLeNet.

* every registered variant counts exactly the published parameters (1000 classes; NiN's
  CIFAR model at its 10), and a batch-1 forward at the published size gives (1, classes);
* the map sizes are the papers' (AlexNet's 55-27-13-6, ZFNet's 110-55-26-13-13-6,
  GoogLeNet's 112-56-28-14-7), and every model runs at its stated minimum input size;
* each block type passes gradcheck in float64 at a tiny width;
* every variant trains on a small batch at reduced size (every parameter gets a gradient,
  the loss falls); the biggest are ``slow``;
* the two-tower AlexNet, run tower by tower with exchanges (the model-parallel lesson),
  gives the grouped model's outputs and gradients;
* eval() really switches dropout, batch norm and GoogLeNet's auxiliary heads.

Drawing ~140M random weights takes seconds, and neither a parameter count nor an output
shape depends on the values, so the count and shape tests build the 1000-class models
with weights left at zero (``zero_weights``). The training tests build with the real
initialization, seeded.
"""
import contextlib
import functools
from unittest import mock

import numpy as np
import pytest

import architectures
from architectures import alexnet, googlenet, nin, vgg
from minicnn import Tensor, gradcheck, nn, no_grad
from minicnn.functional.dropout import manual_seed as seed_dropout
from minicnn.nn import init
from tests.zoo_checks import assert_output_shape, assert_trains

FAMILIES = ("alexnet", "zfnet", "vgg", "nin", "googlenet")

# ----------------------------------------------------------------------------- counts
# name -> (published parameters, constructor options)
PUBLISHED = {
    "alexnet": (60_965_224, {}),
    "alexnet_single_tower": (62_378_344, {}),
    "alexnet_owt": (61_100_840, {}),
    "zfnet": (62_357_608, {}),
    "zfnet_wide": (107_627_624, {}),
    "vgg11": (132_863_336, {}),
    "vgg11_lrn": (132_863_336, {}),
    "vgg13": (133_047_848, {}),
    "vgg16_c": (133_638_952, {}),
    "vgg16": (138_357_544, {}),
    "vgg19": (143_667_240, {}),
    # batch norm adds γ and β per convolution channel: 2 · 2752 (A), 2 · 2944 (B),
    # 2 · 4224 (C, D), 2 · 5504 (E)
    "vgg11_bn": (132_868_840, {}),
    "vgg11_lrn_bn": (132_868_840, {}),
    "vgg13_bn": (133_053_736, {}),
    "vgg16_c_bn": (133_647_400, {}),
    "vgg16_bn": (138_365_992, {}),
    "vgg19_bn": (143_678_248, {}),
    "vgg16_bn_cifar": (14_728_266, {"num_classes": 10}),
    "nin": (7_595_176, {}),
    "nin_cifar": (966_986, {"num_classes": 10}),
    "googlenet": (13_378_280, {}),
}
GOOGLENET_WITHOUT_AUX = 6_998_552
OUTPUT_CLASSES = {name: options.get("num_classes", 1000)
                  for name, (_, options) in PUBLISHED.items()}
# A forward of these at 224×224 costs 8-20 GFLOP: shape-checked in the slow run only.
BIG_FORWARD = {"vgg11_lrn", "vgg13", "vgg16_c", "vgg16", "vgg19", "vgg11_bn", "vgg11_lrn_bn",
               "vgg13_bn", "vgg16_c_bn", "vgg16_bn", "vgg19_bn"}


@contextlib.contextmanager
def zero_weights():
    """Build models without drawing random numbers: every initializer of ``minicnn.nn.init``
    funnels into ``normal_`` or ``uniform_``, which here fill zeros instead."""
    def fill_zeros(tensor, *args, **kwargs):
        tensor.data[...] = 0
        return tensor
    with mock.patch.object(init, "normal_", fill_zeros), \
            mock.patch.object(init, "uniform_", fill_zeros):
        yield


def structure(name, **options):
    with zero_weights():
        return architectures.create(name, **options)


def test_every_registered_variant_has_a_published_count():
    registered = {name for family in FAMILIES for name in architectures.available(family)}
    assert registered == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_is_exact(name):
    expected, options = PUBLISHED[name]
    got = structure(name, **options).num_parameters()
    assert got == expected, f"{name}: {got:,} parameters, published {expected:,}"


def test_googlenet_count_without_auxiliary_heads():
    assert structure("googlenet", aux_logits=False).num_parameters() == GOOGLENET_WITHOUT_AUX


def test_nin_cifar_at_1000_classes_only_widens_the_class_maps():
    # the last 1×1 convolution, 192 → classes, is the only layer that depends on classes
    assert structure("nin_cifar", num_classes=1000).num_parameters() == \
        966_986 + (192 + 1) * (1000 - 10)


def test_nin_class_maps_are_linear_unless_asked():
    linear = structure("nin_cifar", num_classes=10)
    rectified = structure("nin_cifar", num_classes=10, class_map_relu=True)
    assert linear.num_parameters() == rectified.num_parameters()
    relus = [sum(isinstance(m, nn.ReLU) for m in model.modules())
             for model in (linear, rectified)]
    assert relus == [8, 9]      # three mlpconv blocks of three convolutions


def test_registry_input_sizes_are_the_published_ones():
    expected = {"alexnet": 227, "alexnet_single_tower": 227, "alexnet_owt": 224, "zfnet": 224,
                "zfnet_wide": 224, "vgg16": 224, "vgg19_bn": 224, "vgg16_bn_cifar": 32,
                "nin": 224, "nin_cifar": 32, "googlenet": 224}
    for name, size in expected.items():
        assert architectures.entry(name).input_size == size, name


# ----------------------------------------------------------------------------- shapes
def _shape_params():
    return [pytest.param(name, marks=pytest.mark.slow) if name in BIG_FORWARD else name
            for name in sorted(PUBLISHED)]


@pytest.mark.parametrize("name", _shape_params())
def test_output_shape_at_published_size(name):
    _, options = PUBLISHED[name]
    model = structure(name, **options)
    assert_output_shape(model, architectures.entry(name).input_size, OUTPUT_CLASSES[name])


def map_sizes(model, input_size, layer_type, in_channels=3):
    """(layer, side of its output map) for every ``layer_type`` layer, in the order the
    forward pass runs them, at ``input_size``."""
    sizes = []
    for module in model.modules():
        if isinstance(module, layer_type):
            module.register_forward_hook(
                lambda layer, inputs, out: sizes.append((layer, out.shape[-1])))
    model.eval()
    with no_grad():
        model(Tensor(np.zeros((1, in_channels, input_size, input_size), np.float32)))
    return sizes


def sides(pairs):
    return [side for _, side in pairs]


def test_alexnet_maps_are_figure_2s():
    model = structure("alexnet", num_classes=10)
    assert sides(map_sizes(model, 227, nn.Conv2d)) == [55, 27, 13, 13, 13]
    assert sides(map_sizes(model, 227, nn.MaxPool2d)) == [27, 13, 6]


def test_zfnet_maps_are_figure_3s():
    model = structure("zfnet", num_classes=10)
    assert sides(map_sizes(model, 224, nn.Conv2d)) == [110, 26, 13, 13, 13]
    assert sides(map_sizes(model, 224, nn.MaxPool2d)) == [55, 13, 6]


def test_googlenet_maps_are_table_1s():
    model = structure("googlenet", num_classes=10)
    assert sides(map_sizes(model, 224, nn.Conv2d))[0] == 112
    strided = [side for pool, side in map_sizes(model, 224, nn.MaxPool2d)
               if pool.stride == (2, 2)]
    assert strided == [56, 28, 14, 7]
    channels = [block.out_channels for block in model.blocks.values()
                if isinstance(block, googlenet.Inception)]
    assert channels == [256, 480, 512, 512, 512, 528, 832, 832, 1024]   # Table 1


MINIMUM_INPUT = {"alexnet": 67, "alexnet_owt": 63, "zfnet": 63, "vgg11": 32,
                 "vgg16_bn_cifar": 32, "nin": 55, "nin_cifar": 6, "googlenet": 47}


@pytest.mark.parametrize("name", sorted(MINIMUM_INPUT))
def test_runs_at_its_minimum_input_size_and_refuses_smaller(name):
    size = MINIMUM_INPUT[name]
    model = structure(name, num_classes=10, in_channels=1)
    assert_output_shape(model, size, 10, in_channels=1)
    with pytest.raises(ValueError, match=f"at least {size}"):
        model(Tensor(np.zeros((1, 1, size - 1, size - 1), np.float32)))


def test_googlenet_auxiliary_heads_at_the_smallest_input():
    # at 47×47 the 4a/4d maps are 3×3, below the 5×5 window: the head pools adaptively
    model = structure("googlenet", num_classes=10, in_channels=1).train()
    outputs = model(Tensor(np.zeros((2, 1, 47, 47), np.float32)))
    assert [o.shape for o in outputs] == [(2, 10)] * 3


def test_wrong_input_is_refused_with_the_model_name():
    model = structure("zfnet", num_classes=10)
    with pytest.raises(ValueError, match="ZFNet.*expected input"):
        model(Tensor(np.zeros((1, 1, 224, 224), np.float32)))
    with pytest.raises(ValueError, match="towers"):
        alexnet.AlexNet(towers=3)
    with pytest.raises(ValueError, match="configuration"):
        vgg.VGG("F")
    with pytest.raises(ValueError, match="unknown layer"):
        vgg.parse_conv("conv3x3-64")


# ----------------------------------------------------------------------------- gradchecks
def check_block(block, input_shape, seed=0, training=True):
    """gradcheck ``block`` in float64 on a random input, its parameters included."""
    block.to(dtype=np.float64).train(training)
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(input_shape), requires_grad=True)
    parameters = list(block.parameters())
    for p in parameters:   # move weights off their init so no gradient is trivially small
        p.data[...] = p.data + 0.1 * rng.standard_normal(p.shape)
    assert gradcheck(lambda x, *_: block(x), [x, *parameters], atol=1e-6, rtol=1e-4)


def test_gradcheck_tower_local_response_norm():
    check_block(alexnet.TowerLocalResponseNorm(2, **alexnet.LRN), (2, 8, 3, 3))


def test_tower_local_response_norm_never_mixes_the_towers():
    """Each tower's half of the channels is normalized as if the other did not exist."""
    x = Tensor(np.random.default_rng(1).standard_normal((2, 12, 3, 3)))
    together = alexnet.TowerLocalResponseNorm(2, **alexnet.LRN)(x).numpy()
    plain = nn.LocalResponseNorm(**alexnet.LRN)
    apart = np.concatenate([plain(Tensor(x.numpy()[:, :6])).numpy(),
                            plain(Tensor(x.numpy()[:, 6:])).numpy()], axis=1)
    np.testing.assert_allclose(together, apart, rtol=1e-12)
    assert not np.allclose(plain(x).numpy(), apart)   # a plain LRN would mix them


def test_gradcheck_vgg_stage_with_1x1_lrn_and_batch_norm():
    features, channels = vgg.make_features(["conv3-3", "LRN", "conv1-4", "maxpool"], 2,
                                           batch_norm=True)
    assert channels == 4
    check_block(features, (2, 2, 4, 4))


def test_gradcheck_mlpconv_block():
    check_block(nin.MLPConv(3, (4, 5, 3), kernel_size=3, padding=1), (2, 3, 5, 5))


def test_gradcheck_inception_module():
    block = googlenet.Inception(3, 1, 1, 2, 1, 2, 1)
    assert block.out_channels == 6
    check_block(block, (2, 3, 4, 4))


@pytest.mark.parametrize("side", [8, 4])   # 5×5/3 pool then grid; grid alone (small map)
def test_gradcheck_auxiliary_classifier(side):
    head = googlenet.AuxiliaryClassifier(3, 4, conv_channels=2, fc_units=5)
    check_block(head, (2, 3, side, side), training=False)   # eval: dropout off


# ----------------------------------------------------------------------------- training
# name -> (reduced input size, SGD learning rate). On a fixed 4-image batch, batch norm
# followed by the 25088 → 4096 FC layer diverges at 0.01 (the BN VGGs take 1e-3), while the
# plain VGGs, whose signal starts small (He fan_out, N(0, 0.01) FC), barely move at 1e-3.
# NiN and GoogLeNet (no batch norm, many layers) also take 1e-3.
TRAINING = {
    "alexnet": (67, 0.01), "alexnet_single_tower": (67, 0.01), "alexnet_owt": (63, 0.01),
    "zfnet": (63, 0.01), "zfnet_wide": (63, 0.01),
    "vgg11": (32, 0.01), "vgg11_lrn": (32, 0.01), "vgg13": (32, 0.01), "vgg16_c": (32, 0.01),
    "vgg16": (32, 0.01), "vgg19": (32, 0.01), "vgg11_bn": (32, 1e-3),
    "vgg11_lrn_bn": (32, 1e-3), "vgg13_bn": (32, 1e-3), "vgg16_c_bn": (32, 1e-3),
    "vgg16_bn": (32, 1e-3), "vgg19_bn": (32, 1e-3), "vgg16_bn_cifar": (32, 0.01),
    "nin": (55, 1e-3), "nin_cifar": (28, 1e-3), "googlenet": (64, 1e-3),
}
FAST_TRAINING = {"alexnet", "zfnet", "vgg16_bn_cifar", "nin", "nin_cifar", "googlenet"}


def build_small(name, **options):
    """A 10-class, 1-channel model with its real (seeded) initialization."""
    init.manual_seed(0)
    return architectures.create(name, num_classes=10, in_channels=1, **options)


small_model = functools.lru_cache(maxsize=None)(build_small)   # the same one, kept


def test_every_variant_has_a_training_check():
    assert set(TRAINING) == set(PUBLISHED)


@pytest.mark.parametrize("name", [
    name if name in FAST_TRAINING else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(TRAINING)])
def test_trains_on_a_small_batch(name):
    size, lr = TRAINING[name]
    seed_dropout(0)
    model = small_model(name) if name in FAST_TRAINING else build_small(name)
    assert_trains(model, size, lr=lr)


def test_googlenet_without_auxiliary_heads_trains():
    seed_dropout(0)
    model = small_model("googlenet", aux_logits=False)
    assert isinstance(model.train()(Tensor(np.zeros((2, 1, 64, 64), np.float32))), Tensor)
    assert_trains(model, 64, lr=1e-3)


@pytest.mark.parametrize("initialize, conv_std, linear_std", [
    (alexnet.he_initialize, np.sqrt(2 / (64 * 25)), 0.01),    # fan_out = 64 · 5 · 5
    (vgg.initialize, np.sqrt(2 / (64 * 25)), 0.01),
    (googlenet.initialize, np.sqrt(2 / (32 * 25)), 0.01),     # fan_in = 32 · 5 · 5
])
def test_initialization_follows_the_documented_rules(initialize, conv_std, linear_std):
    init.manual_seed(0)
    layers = nn.Sequential(nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.Linear(300, 400))
    for p in layers.parameters():
        p.data[...] = 7.0
    initialize(layers)
    conv, bn, linear = layers
    assert abs(conv.weight.numpy().std() / conv_std - 1) < 0.05
    assert abs(linear.weight.numpy().std() / linear_std - 1) < 0.05
    assert not np.any(conv.bias.numpy()) and not np.any(linear.bias.numpy())
    if initialize is vgg.initialize:
        assert np.all(bn.weight.numpy() == 1) and not np.any(bn.bias.numpy())


# ----------------------------------------------------------------------------- towers
def test_tower_rows_split_evenly():
    assert [alexnet.tower_rows(96, t) for t in (0, 1)] == [slice(0, 48), slice(48, 96)]
    assert [alexnet.tower_rows(5, t) for t in (0, 1)] == [slice(0, 3), slice(3, 5)]


def test_towers_one_by_one_compute_the_grouped_alexnet():
    """Model parallelism as a lesson: the towers, run stage by stage with an exchange at
    each of Figure 2's crossings, give the grouped model's outputs and gradients."""
    init.manual_seed(1)
    model = architectures.create("alexnet", num_classes=5, in_channels=1, fc_widths=(64, 32))
    model.double().eval()
    towers = alexnet.TowersInOneProcess(model).eval()
    assert [len(t.stages) for t in towers.towers] == [5, 5]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 67, 67))
    direction = rng.standard_normal((2, 5))

    outputs = []
    for network in (model, towers):
        y = network(Tensor(x))
        (y * Tensor(direction)).sum().backward()
        outputs.append(y.numpy())
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-10, atol=1e-12)

    full = dict(model.named_parameters())
    for t, tower in enumerate(towers.towers):
        parts = [p for p in tower.parameters()]
        assert len(parts) == len(full)
        for (name, p), part in zip(full.items(), parts):
            rows = alexnet.tower_rows(p.shape[0], t)
            np.testing.assert_allclose(part.grad, p.grad[rows], rtol=1e-9, atol=1e-12,
                                       err_msg=f"tower {t}: {name}")


def test_a_tower_alone_refuses_to_run():
    model = structure("alexnet", num_classes=4, fc_widths=(8, 8))
    with pytest.raises(TypeError, match="other towers"):
        alexnet.AlexNetTower(model, 0)(Tensor(np.zeros((1, 3, 67, 67), np.float32)))
    with pytest.raises(ValueError, match="two-tower"):
        alexnet.AlexNetTower(structure("alexnet_single_tower", fc_widths=(8, 8)), 0)


# ----------------------------------------------------------------------------- eval mode
@pytest.mark.parametrize("name, size", [("alexnet", 67), ("vgg16_bn_cifar", 32),
                                        ("nin_cifar", 28), ("googlenet", 64)])
def test_eval_output_depends_on_the_sample_alone(name, size):
    model = small_model(name).eval()
    rng = np.random.default_rng(3)
    batch = rng.standard_normal((3, 1, size, size)).astype(np.float32)
    with no_grad():
        together = model(Tensor(batch)).numpy()
        again = model(Tensor(batch)).numpy()
        alone = model(Tensor(batch[:1])).numpy()
    assert together.shape == (3, 10)        # GoogLeNet: logits only, no auxiliary outputs
    np.testing.assert_array_equal(together, again)
    np.testing.assert_allclose(alone[0], together[0], rtol=1e-4, atol=1e-5)


def test_googlenet_returns_auxiliary_logits_in_training_only():
    model = small_model("googlenet")
    x = Tensor(np.zeros((2, 1, 64, 64), np.float32))
    outputs = model.train()(x)
    assert isinstance(outputs, tuple) and [o.shape for o in outputs] == [(2, 10)] * 3
    with no_grad():
        assert model.eval()(x).shape == (2, 10)


def test_lenet5_lecun98_selection_follows_the_weights_dtype_and_stays_out_of_the_state():
    """C3's 0/1 selection is a constant of the architecture: not in state_dict (checkpoints
    keep their keys), and brought to the weights' dtype (and device) by forward."""
    import numpy as np
    from minicnn import Tensor
    model = architectures.create("lenet5_lecun98", num_classes=10, in_channels=1).double()
    assert not any("selection" in name for name in model.state_dict())
    y = model(Tensor(np.zeros((2, 1, 32, 32))))
    c3 = next(m for m in model.modules() if type(m).__name__ == "PartialConv2d")
    assert y.dtype == np.float64 and c3.selection.dtype == np.float64


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("minicnn.backend").backend.gpu_available(),
                    reason="needs a CUDA GPU and CuPy")
def test_lenet5_lecun98_runs_on_the_gpu():
    """Defect 4 of the GPU issue: the selection matrix stayed a NumPy array after .to('gpu')."""
    import numpy as np
    from minicnn import Tensor
    from minicnn.backend import to_device
    model = architectures.create("lenet5_lecun98", num_classes=10, in_channels=1).to("gpu")
    y = model(Tensor(to_device(np.zeros((2, 1, 32, 32), np.float32), "gpu")))
    assert y.device == "gpu" and y.shape == (2, 10)
