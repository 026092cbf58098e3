"""The residual families: ResNet (with pre-activation, Bag-of-Tricks tweaks, CIFAR
variants, stochastic depth), Wide ResNet, ResNeXt and SENet.

* every registered variant counts exactly its published parameters, and (the smaller
  ones, here; the biggest under ``slow``) gives the right output shape at its published
  input size;
* each block type passes gradcheck in float64 at a tiny width, parameters included;
* one model per configuration trains on a small batch at reduced size, every parameter
  receiving a gradient; the others run one forward/backward (``slow`` for the biggest);
* stochastic depth drops whole samples' branches with the linear-decay probabilities in
  training and runs the full network at test time; eval() switches dropout, drop path and
  batch norm to inference.
"""
import numpy as np
import pytest

import architectures
from minicnn import Tensor, gradcheck, nn, no_grad
from minicnn import functional as F
from architectures import resnet, resnext, senet, wide_resnet
from architectures.common import SqueezeExcitation
from tests.zoo_checks import assert_output_shape, assert_trains

# ----------------------------------------------------------------------------- the variants
# name: (num_classes the count is published at, parameters, forward GFLOPs at the published
# size, rounded: decides which shape checks are too slow for the default run)
VARIANTS = {
    # resnet.py: Table 1, option B
    "resnet18": (1000, 11_689_512, 1.8),
    "resnet34": (1000, 21_797_672, 3.6),
    "resnet50": (1000, 25_557_032, 3.9),
    "resnet101": (1000, 44_549_160, 7.6),
    "resnet152": (1000, 60_192_808, 11.3),
    # Bag of Tricks: the deep stem adds 19,232 parameters; B and D add none
    "resnet50_b": (1000, 25_557_032, 4.1),
    "resnet50_c": (1000, 25_576_264, 4.3),
    "resnet50_d": (1000, 25_576_264, 4.3),
    "resnet18_d": (1000, 11_708_744, 2.1),
    "resnet101_d": (1000, 44_568_392, 8.0),
    # pre-activation (He et al. 2016)
    "preact_resnet18": (1000, 11_687_720, 1.8),
    "preact_resnet34": (1000, 21_795_880, 3.6),
    "preact_resnet50": (1000, 25_549_352, 4.1),
    "preact_resnet101": (1000, 44_541_480, 7.8),
    "preact_resnet152": (1000, 60_185_128, 11.5),
    "preact_resnet110": (10, 1_727_962, 0.25),
    "preact_resnet164": (10, 1_703_258, 0.25),
    "preact_resnet1001": (10, 10_327_706, 1.6),
    # CIFAR (§4.2), option A
    "resnet20": (10, 269_722, 0.04),
    "resnet32": (10, 464_154, 0.07),
    "resnet44": (10, 658_586, 0.1),
    "resnet56": (10, 853_018, 0.13),
    "resnet110": (10, 1_727_962, 0.25),
    "resnet1202": (10, 19_421_274, 2.8),
    "resnet110_stochastic_depth": (10, 1_727_962, 0.25),
    "resnet18_cifar": (10, 11_173_962, 0.56),
    "resnet34_cifar": (10, 21_282_122, 1.2),
    "resnet50_cifar": (10, 23_520_842, 1.3),
    # wide_resnet.py
    "wrn_28_10": (10, 36_479_194, 5.2),
    "wrn_28_10_dropout": (10, 36_479_194, 5.2),
    "wrn_40_4": (10, 8_949_210, 1.3),
    "wrn_16_8": (10, 10_961_370, 1.5),
    "wrn_16_4": (10, 2_748_890, 0.4),
    "wide_resnet50_2": (1000, 68_883_240, 11.4),
    "wide_resnet101_2": (1000, 126_886_696, 22.8),
    # resnext.py
    "resnext50_32x4d": (1000, 25_028_904, 4.3),
    "resnext101_32x4d": (1000, 44_177_704, 8.0),
    "resnext101_32x8d": (1000, 88_791_336, 16.5),
    "resnext101_64x4d": (1000, 83_455_272, 15.5),
    "resnext29_8x64d": (10, 34_426_698, 5.4),
    "resnext29_16x64d": (10, 68_155_210, 10.8),
    # senet.py: SE adds 2C²/r + C/r + C per block
    "se_resnet50": (1000, 28_088_024, 3.9),
    "se_resnet101": (1000, 49_326_872, 7.6),
    "se_resnet152": (1000, 66_821_848, 11.3),
    "se_resnext50_32x4d": (1000, 27_559_896, 4.3),
    "se_resnext101_32x4d": (1000, 48_955_416, 8.0),
    "se_resnet20": (10, 272_095, 0.04),
    "se_resnet110": (10, 1_742_200, 0.25),
}
FAMILIES = ("resnet", "wide_resnet", "resnext", "senet")
SHAPE_GFLOPS_LIMIT = 5.0   # bigger forwards run under -m slow


def published_size(name):
    return architectures.entry(name).input_size


def test_every_registered_variant_is_listed():
    registered = {n for family in FAMILIES for n in architectures.available(family)}
    assert registered == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_and_output_shape(name):
    """Build once: the exact count, then (if cheap) the (1, classes) output at full size."""
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


def test_se_adds_what_the_formula_says():
    """SE-ResNet-50 − ResNet-50 = Σ over blocks of 2C²/16 + C/16 + C (FCs with bias)."""
    widths = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
    extra = sum(n * (2 * c * c // 16 + c // 16 + c) for c, n in widths)
    assert VARIANTS["se_resnet50"][1] - VARIANTS["resnet50"][1] == extra == 2_530_992


def test_shortcut_option_c_projects_everywhere():
    a = resnet.cifar_resnet(20, num_classes=10, shortcut="A").num_parameters()
    b = resnet.cifar_resnet(20, num_classes=10, shortcut="B").num_parameters()
    c = resnet.cifar_resnet(20, num_classes=10, shortcut="C").num_parameters()
    # B adds two projections (16→32, 32→64) with BN; C adds one per remaining block too
    assert a == 269_722
    assert b == a + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert c > b


# ----------------------------------------------------------------------------- structure
def test_bag_of_tricks_tweaks_change_what_they_say():
    plain, tweaked = resnet.resnet50(), resnet.resnet50_d()
    # ResNet-B: the stride moves from the first 1×1 to the 3×3
    assert plain.layer2[0].conv1.stride == (2, 2) and plain.layer2[0].conv2.stride == (1, 1)
    assert tweaked.layer2[0].conv1.stride == (1, 1) and tweaked.layer2[0].conv2.stride == (2, 2)
    # ResNet-C: three 3×3 convolutions in the stem
    kernels = [m.kernel_size for m in tweaked.stem if isinstance(m, nn.Conv2d)]
    assert kernels == [(3, 3)] * 3
    # ResNet-D: average pool then a stride-1 projection, only where the stride is 2
    pool, conv = tweaked.layer2[0].shortcut[0], tweaked.layer2[0].shortcut[1]
    assert isinstance(pool, nn.AvgPool2d) and conv.stride == (1, 1)
    assert not any(isinstance(m, nn.AvgPool2d) for m in tweaked.layer1[0].shortcut)


def test_resnext_is_a_grouped_bottleneck():
    model = resnext.resnext50_32x4d()
    conv = model.layer1[0].conv2               # [1×1, 128; 3×3, 128, C=32; 1×1, 256]
    assert conv.groups == 32 and conv.weight.shape == (128, 4, 3, 3)
    assert model.layer4[0].conv3.weight.shape == (2048, 1024, 1, 1)


def test_zero_init_residual_starts_every_block_as_identity():
    model = resnet.resnet20(num_classes=10, zero_init_residual=True)
    assert all(not np.any(block.bn2.weight.data)
               for stage in model.stages() for block in stage)


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="shortcut"):
        resnet.ResNet("basic", (1, 1), widths=(8, 16), shortcut="E")
    with pytest.raises(ValueError, match="stem"):
        resnet.ResNet("basic", (1, 1), widths=(8, 16), stem="huge")
    with pytest.raises(ValueError, match="6n \\+ 2"):
        resnet.cifar_resnet(21)
    with pytest.raises(ValueError, match="drop_path_rate"):
        resnet.cifar_resnet(20, drop_path_rate=1.5)
    with pytest.raises(ValueError, match="depth"):
        wide_resnet.WideResNet(27, 2)
    with pytest.raises(ValueError, match="ZeroPadShortcut"):
        resnet.ZeroPadShortcut(4, 8, 2)(Tensor(np.zeros((1, 3, 4, 4), np.float32)))
    model = resnet.resnet20(num_classes=10)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(Tensor(np.zeros((3, 8, 8), np.float32)))


# ----------------------------------------------------------------------------- option A shortcut
@pytest.mark.parametrize("size", [6, 7])
def test_zero_pad_shortcut_subsamples_and_pads(size):
    x = np.random.default_rng(0).standard_normal((2, 3, size, size))
    y = resnet.ZeroPadShortcut(3, 5, 2)(Tensor(x)).numpy()
    conv_out = (size + 2 - 3) // 2 + 1                  # a 3×3/2 conv with padding 1
    assert y.shape == (2, 5, conv_out, conv_out)
    np.testing.assert_array_equal(y[:, :3], x[:, :, ::2, ::2])
    assert not np.any(y[:, 3:])


def test_zero_pad_shortcut_gradcheck():
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 5, 5)), requires_grad=True)
    assert gradcheck(lambda t: resnet.ZeroPadShortcut(3, 6, 2)(t), [x])


# ----------------------------------------------------------------------------- gradchecks
def _gradcheck_module(module, shape, seed=0):
    """gradcheck in float64, in training mode (batch-norm statistics from the batch), with
    respect to the input and the small parameters (BN γ and β, SE biases). Convolution
    weight gradients are the conv op's own tests; one pair of forwards per checked
    element keeps this to the elements that say something about the block's wiring."""
    module.to(dtype=np.float64).train()
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    small = [p for p in module.parameters() if p.size <= 16]
    assert gradcheck(lambda t, *p: module(t), [x, *small])


BLOCKS = {
    "basic_block_projection": lambda: resnet.BasicBlock(
        3, 4, 2, resnet.projection_shortcut(3, 4, 2)),
    "basic_block_zero_pad": lambda: resnet.BasicBlock(3, 4, 2, resnet.ZeroPadShortcut(3, 4, 2)),
    "bottleneck": lambda: resnet.Bottleneck(4, 2, 2, resnet.projection_shortcut(4, 8, 2)),
    "bottleneck_resnet_b_d": lambda: resnet.Bottleneck(
        4, 2, 2, resnet.projection_shortcut(4, 8, 2, avg_down=True), stride_on_3x3=True),
    "grouped_bottleneck": lambda: resnet.Bottleneck(
        8, 2, 1, None, groups=2, width_per_group=64),
    "preact_basic": lambda: resnet.PreActBasicBlock(
        3, 4, 2, resnet.projection_shortcut(3, 4, 2, batch_norm=False),
        shortcut_input="activated"),
    "preact_bottleneck": lambda: resnet.PreActBottleneck(
        4, 2, 2, resnet.projection_shortcut(4, 8, 2, batch_norm=False),
        shortcut_input="activated"),
    "wide_basic": lambda: wide_resnet.WideBasicBlock(3, 4, 2),
    "squeeze_excitation": lambda: SqueezeExcitation(4, 2),
    "se_basic": lambda: senet.SEBasicBlock(4, 4, 1, reduction=2),
    "se_bottleneck": lambda: senet.SEBottleneck(
        4, 2, 2, resnet.projection_shortcut(4, 8, 2), reduction=4, groups=2),
    "se_inception": lambda: senet.SEInceptionModule(3, 2, 2, 2, 1, 2, 2, reduction=4),
}
INPUT_CHANNELS = {"bottleneck": 4, "bottleneck_resnet_b_d": 4, "grouped_bottleneck": 8,
                  "preact_bottleneck": 4, "squeeze_excitation": 4, "se_basic": 4,
                  "se_bottleneck": 4}


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_block_gradcheck(kind):
    _gradcheck_module(BLOCKS[kind](), (2, INPUT_CHANNELS.get(kind, 3), 4, 4))


def test_deep_stem_gradcheck():
    stem = resnet.ResNet._make_stem("deep", 2, 4, 3, preactivation=False)
    _gradcheck_module(stem, (2, 2, 6, 6))


# ----------------------------------------------------------------------------- training
# One model per configuration trains for a few SGD steps at reduced size (1 channel, 10
# classes): (name, input size, options, batch, learning rate). The ImageNet-stem models
# end on 1×1 maps at 32×32, where batch norm over 4 samples is noisy: they get lr 0.003.
TRAINS = [
    ("resnet18_cifar", 16, {}, 4, 0.01),
    ("resnet20", 16, {}, 4, 0.01),
    ("resnet50", 32, {}, 4, 0.003),
    ("resnet50_d", 32, {}, 4, 0.003),
    ("preact_resnet18", 32, {}, 4, 0.01),
    ("preact_resnet164", 8, {}, 4, 0.01),
    # stochastic depth: with p_L = 0.5 a batch of 4 could drop a whole block's branch for
    # every sample (then that block rightly gets no gradient); 16 samples make it ~1e-5
    ("resnet110_stochastic_depth", 8, {}, 16, 0.003),
    ("wrn_16_4", 16, {"dropout": 0.3, "drop_path_rate": 0.1}, 8, 0.01),
    ("resnext29_8x64d", 8, {}, 4, 0.01),
    ("resnext50_32x4d", 32, {}, 4, 0.003),
    # r = 16 leaves one hidden unit at 16 channels; at initialisation it may be off for
    # every sample, which would starve W₁ of gradient: r = 4 here
    ("se_resnet20", 16, {"reduction": 4}, 4, 0.01),
    ("se_resnext50_32x4d", 32, {}, 4, 0.003),
]


def _seed_everything(seed=0):
    """Initial weights and dropout/drop-path masks from fixed generators: the training
    checks must not pass or fail by luck."""
    nn.init.manual_seed(seed)
    F.dropout.manual_seed(seed)


@pytest.mark.parametrize("name,size,options,batch,lr", TRAINS, ids=[t[0] for t in TRAINS])
def test_trains(name, size, options, batch, lr):
    _seed_everything()
    model = architectures.create(name, num_classes=10, in_channels=1, **options)
    assert_trains(model, size, batch=batch, lr=lr)


_TRAINED = {t[0] for t in TRAINS}
_BIG = {n for n, v in VARIANTS.items() if v[1] > 40_000_000 or v[2] > 5.0}


def _one_step(name, size):
    model = architectures.create(name, num_classes=10, in_channels=1)
    model.train()
    x = Tensor(np.random.default_rng(0).standard_normal((2, 1, size, size)).astype(np.float32))
    logits = model(x)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits.numpy()))
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"


def _reduced_size(name):
    return 8 if published_size(name) == 32 else 32


@pytest.mark.parametrize("name", sorted(set(VARIANTS) - _TRAINED - _BIG))
def test_forward_backward(name):
    _one_step(name, _reduced_size(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_BIG - _TRAINED))
def test_forward_backward_of_the_biggest(name):
    _one_step(name, _reduced_size(name))


# ----------------------------------------------------------------------------- stochastic depth
def test_linear_decay_rule():
    """Huang et al. Eq. 4: p_l = 1 − (l/L)(1 − p_L); ResNet-110 has L = 54 blocks."""
    model = resnet.resnet110_stochastic_depth(num_classes=10)
    rates = [block.drop_path.p for stage in model.stages() for block in stage]
    assert len(rates) == 54
    np.testing.assert_allclose(rates, [0.5 * l / 54 for l in range(1, 55)])
    assert rates[-1] == pytest.approx(0.5)   # p_L = 0.5


def test_drop_path_option_reaches_every_residual_family():
    for name in ("resnet18", "preact_resnet18", "wrn_16_4", "resnext50_32x4d", "se_resnet20"):
        model = architectures.create(name, num_classes=10, drop_path_rate=0.2)
        rates = [m.p for m in model.modules() if isinstance(m, nn.DropPath)]
        assert rates and max(rates) == pytest.approx(0.2), name


def test_a_variants_registered_settings_are_defaults_a_call_overrides():
    """register_variant: resnet110_stochastic_depth is cifar_resnet(depth=110,
    drop_path_rate=0.5); a keyword of the call wins over the registered setting."""
    def drop_paths(model):
        return sum(isinstance(m, nn.DropPath) for m in model.modules())
    assert drop_paths(architectures.create("resnet110_stochastic_depth")) == 54
    assert drop_paths(architectures.create("resnet110_stochastic_depth",
                                           drop_path_rate=0.0)) == 0
    # built on ResNet's builder, registered by its own family's
    assert architectures.entry("wide_resnet50_2").family == "wide_resnet"
    assert architectures.entry("se_resnet20").family == "senet"


def test_stochastic_depth_drops_whole_samples_in_training_only():
    """Training: each sample gets either relu(shortcut) (branch dropped) or
    relu(F/p + shortcut) (kept, inverted scaling). Test time: relu(F + shortcut)."""
    block = resnet.BasicBlock(4, 4, drop_path=0.5)
    x = Tensor(np.random.default_rng(0).standard_normal((64, 4, 5, 5)).astype(np.float32))
    block.train()
    with no_grad():
        y = block(x).numpy()
        branch = block.residual(x).numpy()   # BN in training mode: same batch statistics
    dropped = np.maximum(x.numpy(), 0)
    kept = np.maximum(branch / 0.5 + x.numpy(), 0)
    is_dropped = [np.allclose(y[i], dropped[i], atol=1e-5) for i in range(64)]
    is_kept = [np.allclose(y[i], kept[i], atol=1e-5) for i in range(64)]
    assert all(d or k for d, k in zip(is_dropped, is_kept))
    assert any(is_dropped) and any(is_kept)
    block.eval()
    with no_grad():
        full = np.maximum(block.residual(x).numpy() + x.numpy(), 0)
        np.testing.assert_allclose(block(x).numpy(), full, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- eval mode
@pytest.mark.parametrize("name,options", [
    ("resnet110_stochastic_depth", {}),
    ("wrn_16_4", {"dropout": 0.3, "drop_path_rate": 0.2}),
    ("se_resnet20", {"drop_path_rate": 0.2}),
    ("preact_resnet110", {"drop_path_rate": 0.3}),
], ids=["resnet110_sd", "wrn_dropout", "se_resnet20", "preact_110"])
def test_eval_switches_dropout_drop_path_and_batch_norm(name, options):
    model = architectures.create(name, num_classes=10, in_channels=1, **options)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((6, 1, 8, 8)).astype(np.float32))
    model.train()
    with no_grad():                      # move the running statistics off their defaults
        model(x)
    model.eval()
    with no_grad():
        batch = model(x).numpy()
        again = model(x).numpy()
        alone = model(x[:1]).numpy()
        other_company = model(Tensor(np.concatenate([x.numpy()[:1], -x.numpy()[1:]]))).numpy()
    np.testing.assert_array_equal(batch, again)
    np.testing.assert_allclose(alone[0], batch[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(other_company[0], batch[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["preact_resnet18", "preact_resnet50", "preact_resnet110",
                                  "preact_resnet164"])
def test_preactivation_units_state_their_shortcut_wiring(name):
    """A projection reads relu(BN(x)), the identity and zero-padding shortcuts read x: as
    the authors' code wires them (and as the weights-or-not rule this replaced did)."""
    model = architectures.create(name, num_classes=10)
    units = [m for m in model.modules() if isinstance(m, resnet._PreActivationUnit)]
    assert units
    for unit in units:
        projects = isinstance(unit.shortcut, nn.Sequential)
        assert unit.shortcut_reads_activation == projects
        assert projects == (unit.shortcut.num_parameters() > 0)


def test_preactivation_identity_cannot_read_the_activation():
    with pytest.raises(ValueError, match="identity shortcut"):
        resnet.PreActBasicBlock(4, 4, 1, None, shortcut_input="activated")
    with pytest.raises(ValueError, match="shortcut_input must be one of"):
        resnet.PreActBasicBlock(4, 4, 1, None, shortcut_input="x")
