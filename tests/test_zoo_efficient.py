"""The efficient families: SqueezeNet, MobileNet v1/v2, Xception, EfficientNet, EfficientNetV2.

* every registered variant counts exactly the published parameters at 1000 classes;
* batch-1 forwards at the published input size give (1, 1000) (the biggest are ``slow``);
* each block type passes gradcheck in float64 at a tiny width, parameters included;
* every family trains on a small batch at reduced size (every parameter gets a gradient);
* eval() really switches dropout, drop path and batch norm to inference.

Building a 1000-class model allocates all its weights (EfficientNetV2-L: 118M), so each
model is built once: those several tests use are cached (``built``), the others are built
by their count test alone and dropped.
"""
import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import architectures
from minicnn import Tensor, gradcheck, nn, no_grad
from minicnn.nn import init
from minicnn.functional.dropout import manual_seed
from architectures import efficientnet, efficientnet_v2, mobilenet_v1, mobilenet_v2
from architectures import squeezenet, xception
from tests.zoo_checks import assert_output_shape, assert_trains

# ----------------------------------------------------------------------------- counts
PUBLISHED = {
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
    "squeezenet1_0_simple_bypass": 1_248_424,   # identity shortcuts add no parameters
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,
    "xception": 22_855_952,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
    "efficientnet_v2_s": 21_458_488,
    "efficientnet_v2_m": 54_139_356,
    "efficientnet_v2_l": 118_515_272,
}
# MobileNet-v1: the width multiplier sets the parameters; the resolution does not.
MOBILENET_V1_WIDTH = {"100": 4_231_976, "075": 2_585_560, "050": 1_331_592, "025": 470_072}
for _width, _count in MOBILENET_V1_WIDTH.items():
    for _resolution in mobilenet_v1.RESOLUTIONS:
        PUBLISHED[f"mobilenet_v1_{_width}_{_resolution}"] = _count

BIGGEST = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_m",
           "efficientnet_v2_l"}
# Forward passes at the published size: cheap ones always, the rest only with -m slow.
FAST_SHAPES = ["squeezenet1_0", "squeezenet1_1", "mobilenet_v1", "mobilenet_v1_025_128",
               "mobilenet_v2", "efficientnet_b0", "efficientnet_b1"]
SLOW_SHAPES = ["xception", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
               "efficientnet_v2_s"]
# Built once and shared: the fast shape checks and the structure tests use these.
REUSED = set(FAST_SHAPES) | {"xception", "efficientnet_v2_s"}
FAMILIES = ("squeezenet", "mobilenet_v1", "mobilenet_v2", "xception", "efficientnet",
            "efficientnet_v2")


@pytest.fixture(autouse=True)
def seeded_dropout():
    """Dropout and drop path draw from a module generator: seed it so runs repeat."""
    manual_seed(0)


@functools.lru_cache(maxsize=None)
def built(name):
    """The 1000-class model ``name``, built once and shared by the tests of this file."""
    return architectures.create(name)


@pytest.fixture(scope="module", autouse=True)
def free_built_models():
    """Drop the shared models when this file's tests are done (they hold ~270 MB)."""
    yield
    built.cache_clear()


def test_every_registered_variant_has_a_published_count():
    registered = {name for family in FAMILIES for name in architectures.available(family)}
    assert registered == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_is_exact(name):
    # Models other tests use again come from the shared cache; the rest are built and
    # dropped at once (holding all of them would take gigabytes).
    model = built(name) if name in REUSED else architectures.create(name)
    got = model.num_parameters()
    assert got == PUBLISHED[name], f"{name}: {got:,} parameters, published {PUBLISHED[name]:,}"


def test_registry_input_sizes_are_the_published_ones():
    expected = {"squeezenet1_0": 224, "mobilenet_v1": 224, "mobilenet_v1_075_192": 192,
                "mobilenet_v1_025_128": 128, "mobilenet_v2": 224, "xception": 299,
                "efficientnet_b0": 224, "efficientnet_b3": 300, "efficientnet_b7": 600,
                "efficientnet_v2_s": 384, "efficientnet_v2_m": 480, "efficientnet_v2_l": 480}
    for name, size in expected.items():
        assert architectures.entry(name).input_size == size, name


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", FAST_SHAPES)
def test_output_shape_at_published_size(name):
    assert_output_shape(built(name), architectures.entry(name).input_size, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_SHAPES + sorted(BIGGEST))
def test_output_shape_at_published_size_large(name):
    model = built(name) if name in REUSED else architectures.create(name)
    assert_output_shape(model, architectures.entry(name).input_size, 1000)


@pytest.mark.slow
def test_xception_feature_map_is_10x10x2048_at_299():
    model = built("xception").eval()
    with no_grad():
        features = model.features(Tensor(np.zeros((1, 3, 299, 299), np.float32)))
    assert features.shape == (1, 2048, 10, 10)


def test_mobilenet_v2_benchmark_configuration():
    """The benchmark: 10 classes, 3×64×64 inputs; forward and backward work, loss falls."""
    model = architectures.create("mobilenet_v2", num_classes=10)
    assert_trains(model, 64, batch=4, in_channels=3)


# ----------------------------------------------------------------------------- training
# Dropout and drop path are switched off for the EfficientNets here: with a batch of 8 and
# four steps their fresh masks make the loss too noisy to show a fall. (The eval-mode test
# below runs them on.) The EfficientNets also take a smaller step: their classifier is drawn
# from U(±1/sqrt(num_classes)), so with 10 classes the first logits are large (loss ≈ 6)
# and at 32×32 the head's batch norm sees one pixel per image; SGD at 0.01 overshoots.
NO_NOISE = {"dropout": 0.0, "drop_path_rate": 0.0}
TRAIN_CASES = [
    ("squeezenet1_0", 32, {}, 0.01),
    ("squeezenet1_1", 32, {}, 0.01),
    ("squeezenet1_0_simple_bypass", 32, {}, 0.01),
    ("mobilenet_v1_025_128", 32, {}, 0.01),
    ("mobilenet_v2", 32, {"width_multiplier": 0.5}, 0.01),
    ("xception", 32, {}, 0.01),
    ("efficientnet_b0", 32, NO_NOISE, 1e-3),
    ("efficientnet_v2_s", 32, NO_NOISE, 1e-3),
]


@pytest.mark.parametrize("name, size, options, lr", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_trains_at_reduced_size(name, size, options, lr):
    init.manual_seed(0)          # the same weights every run: the check is deterministic
    model = architectures.create(name, num_classes=10, in_channels=1, **options)
    assert_trains(model, size, batch=8, lr=lr)


# ----------------------------------------------------------------------------- eval mode
EVAL_CASES = [
    ("squeezenet1_1", {}),                                  # dropout before conv10
    ("mobilenet_v1_025_128", {"dropout": 0.5}),
    ("mobilenet_v2", {"width_multiplier": 0.5}),            # dropout 0.2, BN
    ("xception", {}),                                       # dropout 0.5
    ("efficientnet_b0", {"drop_path_rate": 0.5}),           # dropout, drop path, BN
    ("efficientnet_v2_s", {"drop_path_rate": 0.5}),
]


@pytest.mark.parametrize("name, options", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_eval_mode_is_deterministic_and_per_sample(name, options):
    model = architectures.create(name, num_classes=10, in_channels=1, **options)
    x = np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32)
    model.train()
    with no_grad():
        first, second = model(Tensor(x)).numpy(), model(Tensor(x)).numpy()
    # In training mode dropout / drop path draw new masks: two passes differ.
    assert not np.allclose(first, second)
    model.eval()
    with no_grad():
        batch = model(Tensor(x)).numpy()
        again = model(Tensor(x)).numpy()
        alone = model(Tensor(x[:1])).numpy()
        with_others = model(Tensor(np.concatenate([x[:1], x[:1] * 3.0 + 1.0]))).numpy()
    np.testing.assert_array_equal(batch, again)
    np.testing.assert_allclose(alone[0], batch[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(with_others[0], batch[0], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- gradchecks
def check_block(block, input_shape, seed=0):
    """gradcheck ``block`` in float64 on a random input, its parameters included."""
    block.to(dtype=np.float64).train()
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(input_shape), requires_grad=True)
    parameters = list(block.parameters())
    for p in parameters:   # move weights off their init so no gradient is trivially small
        p.data[...] = p.data + 0.1 * rng.standard_normal(p.shape)
    assert gradcheck(lambda x, *_: block(x), [x, *parameters], atol=1e-6, rtol=1e-4)


def test_gradcheck_fire_module():
    check_block(squeezenet.Fire(4, 2, 3, 3), (2, 4, 5, 5))


def test_gradcheck_fire_module_with_bypass():
    check_block(squeezenet.Fire(4, 2, 2, 2, bypass=True), (2, 4, 5, 5))


def test_gradcheck_depthwise_separable_block():
    check_block(mobilenet_v1.DepthwiseSeparableConv(3, 5, stride=2), (2, 3, 6, 6))


@pytest.mark.parametrize("stride, out_channels, expand", [(1, 4, 2), (2, 6, 2), (1, 4, 1)])
def test_gradcheck_inverted_residual(stride, out_channels, expand):
    check_block(mobilenet_v2.InvertedResidual(4, out_channels, stride, expand), (2, 4, 6, 6))


def test_gradcheck_xception_separable_convolution():
    check_block(xception.SeparableConv2d(3, 4), (2, 3, 5, 5))


@pytest.mark.parametrize("widths, downsample", [((6, 6), True), ((4, 4, 4), False)])
def test_gradcheck_xception_block(widths, downsample):
    check_block(xception.XceptionBlock(4, widths, downsample), (2, 4, 6, 6))


@pytest.mark.parametrize("kernel, stride, out_channels, expand",
                         [(3, 1, 4, 2), (5, 2, 6, 2), (3, 1, 4, 1)])
def test_gradcheck_mbconv(kernel, stride, out_channels, expand):
    check_block(efficientnet.MBConv(4, out_channels, kernel, stride, expand), (2, 4, 6, 6))


@pytest.mark.parametrize("stride, out_channels, expand", [(1, 4, 2), (2, 6, 2), (1, 4, 1)])
def test_gradcheck_fused_mbconv(stride, out_channels, expand):
    check_block(efficientnet_v2.FusedMBConv(4, out_channels, 3, stride, expand), (2, 4, 6, 6))


# ----------------------------------------------------------------------------- block shapes
@settings(deadline=None, max_examples=10)
@given(in_channels=st.integers(1, 6), out_channels=st.integers(1, 6),
       stride=st.sampled_from([1, 2]), expand=st.sampled_from([1, 3, 6]),
       size=st.integers(3, 9), fused=st.booleans())
def test_efficient_blocks_output_shape_and_residual(in_channels, out_channels, stride, expand,
                                                    size, fused):
    block_class = efficientnet_v2.FusedMBConv if fused else efficientnet.MBConv
    block = block_class(in_channels, out_channels, 3, stride, expand)
    x = Tensor(np.random.default_rng(0).standard_normal((2, in_channels, size, size))
               .astype(np.float32))
    y = block(x)
    side = (size - 1) // stride + 1
    assert y.shape == (2, out_channels, side, side)
    assert block.use_residual == (stride == 1 and in_channels == out_channels)


# ----------------------------------------------------------------------------- structure
def blocks_of(model, block_class):
    return [m for m in model.modules() if isinstance(m, block_class)]


def test_mobilenet_v2_follows_table_2():
    model = built("mobilenet_v2")
    blocks = blocks_of(model, mobilenet_v2.InvertedResidual)
    assert len(blocks) == sum(n for _, _, n, _ in mobilenet_v2.BOTTLENECKS) == 17
    # A shortcut on every repeat after the first of a sequence (and none on the first).
    assert sum(b.use_residual for b in blocks) == 17 - len(mobilenet_v2.BOTTLENECKS)
    # The projection is linear: its ConvBNAct ends with batch norm, no activation.
    for block in blocks:
        assert isinstance(list(block.block.project)[-1], nn.BatchNorm2d)
    # Expansion t = 6 of the block input: 16 -> 96 in the second sequence.
    assert blocks[1].block.expand[0].out_channels == 6 * 16


def test_mobilenet_v1_multiply_adds_match_tables_6_and_7():
    # (width, resolution) -> the paper's millions of multiply-adds
    published = {(1.0, 224): 569, (0.75, 224): 325, (0.5, 224): 149, (0.25, 224): 41,
                 (1.0, 192): 418, (1.0, 160): 290, (1.0, 128): 186}
    for (width, resolution), millions in published.items():
        ours = mobilenet_v1.multiply_adds(width, resolution) / 1e6
        assert abs(ours - millions) < 1.0, (width, resolution, ours)


def test_mobilenet_v1_uses_depthwise_convolutions():
    model = built("mobilenet_v1")
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 13
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_efficientnet_b0_follows_table_1():
    model = built("efficientnet_b0")
    stages = [model.features[f"stage{i}"] for i in range(1, 8)]
    assert [len(s) for s in stages] == [1, 2, 2, 3, 3, 4, 1]
    kernels = [s[0].block.depthwise[0].kernel_size[0] for s in stages]
    assert kernels == [3, 3, 5, 3, 5, 5, 3]
    assert model.features.head[0].out_channels == 1280


def test_efficientnet_squeeze_width_is_a_quarter_of_the_block_input():
    model = built("efficientnet_b0")
    for block in blocks_of(model, efficientnet.MBConv):
        in_channels = list(block.block)[0][0].in_channels
        assert block.block.se.reduce.out_channels == max(1, in_channels // 4)


def test_efficientnet_drop_path_rises_linearly_to_0_2():
    blocks = blocks_of(built("efficientnet_b0"), efficientnet.MBConv)
    rates = [b.drop_path.p if isinstance(b.drop_path, nn.DropPath) else 0.0 for b in blocks]
    expected = [0.2 * i / len(blocks) if b.use_residual else 0.0 for i, b in enumerate(blocks)]
    np.testing.assert_allclose(rates, expected)
    assert max(rates) < 0.2


def test_efficientnet_batch_norm_is_tensorflow_style():
    for bn in (m for m in built("efficientnet_b0").modules() if isinstance(m, nn.BatchNorm2d)):
        assert (bn.eps, bn.momentum) == (1e-3, 0.01)


def test_efficientnet_scaling_rounds_widths_to_8_and_repeats_up():
    stages = efficientnet.efficientnet_stages(width=2.0, depth=3.1)        # B7
    assert [s.repeats for s in stages] == [4, 7, 7, 10, 10, 13, 4]
    assert all(s.out_channels % 8 == 0 for s in stages)
    assert [s.out_channels for s in stages] == [32, 48, 80, 160, 224, 384, 640]


def test_compound_scaling_rule():
    assert efficientnet.compound_scaling(0) == (1.0, 1.0, 224)
    depth, width, resolution = efficientnet.compound_scaling(1)
    assert (depth, width, resolution) == pytest.approx((1.2, 1.1, 258))
    # FLOPs ∝ d·w²·r² grow by about 2 per unit of φ (the constraint α·β²·γ² ≈ 2).
    d, w, r = efficientnet.compound_scaling(3)
    assert d * w ** 2 * (r / 224) ** 2 == pytest.approx(2 ** 3, rel=0.15)
    # The released B1 is not the rule at φ = 1.
    assert efficientnet.COEFFICIENTS["b1"][:3] == (1.0, 1.1, 240)


def test_efficientnet_compound_builds_the_rule():
    model, resolution = efficientnet.efficientnet_compound(1, num_classes=10)
    repeats = [len(model.features[f"stage{i}"]) for i in range(1, 8)]
    assert repeats == [math.ceil(n * 1.2) for *_, n in efficientnet.B0_STAGES]
    assert resolution == 258


@settings(deadline=None)
@given(repeats=st.integers(1, 20), depth=st.floats(1.0, 4.0))
def test_scale_depth_rounds_up(repeats, depth):
    scaled = efficientnet.scale_depth(repeats, depth)
    assert repeats * depth <= scaled < repeats * depth + 1


def test_efficientnet_v2_s_follows_table_4():
    model = built("efficientnet_v2_s")
    kinds = [type(model.features[f"stage{i}"][0]).__name__ for i in range(1, 7)]
    assert kinds == ["FusedMBConv"] * 3 + ["MBConv"] * 3
    assert [len(model.features[f"stage{i}"]) for i in range(1, 7)] == [2, 4, 4, 6, 9, 15]
    assert not any(isinstance(m, efficientnet.SqueezeExcitation)
                   for i in range(1, 4) for m in model.features[f"stage{i}"].modules())


def test_xception_has_14_modules_and_36_convolutions():
    model = built("xception")
    assert len(blocks_of(model, xception.XceptionBlock)) == 12      # + stem and exit convs
    separable = blocks_of(model, xception.SeparableConv2d)
    plain = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)
             and m.kernel_size == (3, 3) and m.groups == 1]
    assert len(separable) + len(plain) == 36
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


# ----------------------------------------------------------------------------- errors
def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="Fire"):
        squeezenet.Fire(8, 2, 2, 2, bypass=True)
    with pytest.raises(ValueError, match="InvertedResidual.*stride"):
        mobilenet_v2.InvertedResidual(4, 4, 3, 6)
    with pytest.raises(ValueError, match="MBConv.*stride"):
        efficientnet.MBConv(4, 4, 3, 3, 6)
    with pytest.raises(ValueError, match="FusedMBConv.*stride"):
        efficientnet_v2.FusedMBConv(4, 4, 3, 3, 4)
    with pytest.raises(ValueError, match="MobileNetV1.*width_multiplier"):
        mobilenet_v1.MobileNetV1(width_multiplier=0)
    with pytest.raises(ValueError, match="MobileNetV2.*width_multiplier"):
        mobilenet_v2.MobileNetV2(width_multiplier=-1)
    with pytest.raises(ValueError, match="compound_scaling"):
        efficientnet.compound_scaling(-1)
