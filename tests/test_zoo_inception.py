"""The Inception families: BN-Inception, Inception-v3, Inception-v4, Inception-ResNet.

* every registered variant counts exactly its published (or stated) parameters at 1000
  classes, with and without the auxiliary head, plus the builds options select;
* batch-1 forwards at the published input size give (1, 1000) (all but two are ``slow``);
* the minimum input sizes the docstrings state are exact: that size works, one less fails;
* every family trains on a small batch at its minimum input size;
* each block type (modules, reductions, stems, residual blocks, auxiliary head) passes
  gradcheck in float64 at a tiny width;
* eval() really switches dropout and batch norm, and drops the auxiliary head.

Building a 1000-class model allocates all its weights (Inception-ResNet-v2: 56M), so each
is built once, by the test that counts it.
"""
import functools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import architectures
from minicnn import Tensor, gradcheck, nn, no_grad
from minicnn.functional.dropout import manual_seed
from architectures import bn_inception, inception_resnet, inception_v3, inception_v4
from tests.zoo_checks import assert_output_shape, assert_trains

FAMILIES = ("bn_inception", "inception_v3", "inception_v4", "inception_resnet")

# ----------------------------------------------------------------------------- counts
# name -> {options: count}; () is the registered default build.
PUBLISHED = {
    # the BN paper's appendix table; + conv biases = Cadene's Caffe-port ``bninception``
    "bn_inception": {(): 11_285_224, (("conv_bias", True),): 11_295_240},
    # TF-slim / Keras / torchvision
    "inception_v3": {(): 27_161_264, (("aux_logits", False),): 23_834_568},
    # Table 1 of the paper (our stated count)
    "inception_v3_paper": {(): 29_280_944, (("aux_logits", False),): 25_954_248},
    "inception_v4": {(): 42_679_816},
    "inception_resnet_v1": {(): 22_756_328},                   # the paper's v1 (stated)
    # TF-slim's 10/20/10 build; with the paper's 5/10/5 block counts
    "inception_resnet_v2": {(): 55_843_464, (("blocks", (5, 10, 5)),): 33_782_664},
    "inception_resnet_v2_paper": {(): 32_433_928},             # Figures 15–19 (stated)
}
COUNT_CASES = [(name, options, count) for name, builds in PUBLISHED.items()
               for options, count in builds.items()]
MINIMUM_INPUT = {"bn_inception": 11, "inception_v3": 75, "inception_v3_paper": 75,
                 "inception_v4": 75, "inception_resnet_v1": 75, "inception_resnet_v2": 75,
                 "inception_resnet_v2_paper": 75}


@pytest.fixture(autouse=True)
def seeded_dropout():
    """Dropout draws from a module generator: seed it so runs repeat."""
    manual_seed(0)


@functools.lru_cache(maxsize=2)
def built(name):
    """The 1000-class model ``name`` (the two cheap-to-run ones stay cached)."""
    return architectures.create(name)


@functools.lru_cache(maxsize=4)
def small(name):
    """``name`` with 10 classes and one input channel, shared by the tests that only run it
    (the training tests build their own: they change the weights)."""
    return architectures.create(name, num_classes=10, in_channels=1)


def test_every_registered_variant_has_a_count():
    registered = {name for family in FAMILIES for name in architectures.available(family)}
    assert registered == set(PUBLISHED)


@pytest.mark.parametrize("name, options, expected", COUNT_CASES,
                         ids=[f"{n}{''.join(f'-{k}={v}' for k, v in o)}"
                              for n, o, _ in COUNT_CASES])
def test_parameter_count_is_exact(name, options, expected):
    if name in ("bn_inception", "inception_v3") and not options:
        model = built(name)
    else:
        model = architectures.create(name, **dict(options))
    got = model.num_parameters()
    assert got == expected, f"{name} {dict(options)}: {got:,} parameters, expected {expected:,}"


def test_registry_input_sizes_are_the_published_ones():
    for name in PUBLISHED:
        expected = 224 if name == "bn_inception" else 299
        assert architectures.entry(name).input_size == expected, name


def test_aux_head_count_is_the_reference_one():
    """Conv 1×1 128 (+BN), Conv 5×5 768 (+BN), FC 768 → 1000: 3,326,696 parameters."""
    aux = built("inception_v3").aux_logits
    assert aux.num_parameters() == (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) \
        + (768 * 1000 + 1000) == 3_326_696


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", ["bn_inception", "inception_v3"])
def test_output_shape_at_published_size(name):
    assert_output_shape(built(name), architectures.entry(name).input_size, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_v3_paper", "inception_v4", "inception_resnet_v1",
                                  "inception_resnet_v2", "inception_resnet_v2_paper"])
def test_output_shape_at_published_size_large(name):
    assert_output_shape(architectures.create(name), 299, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("name, size, shape", [
    ("bn_inception", 224, (1024, 7, 7)),             # the table's 7×7×1024
    ("inception_v3", 299, (2048, 8, 8)),             # Table 1's 8×8×2048
    ("inception_v3_paper", 299, (2048, 8, 8)),
    ("inception_v4", 299, (1536, 8, 8)),             # Figure 9's 8×8×1536
    ("inception_resnet_v1", 299, (1792, 8, 8)),      # Figure 15's 8×8×1792
    ("inception_resnet_v2", 299, (1536, 8, 8)),
])
def test_feature_map_at_published_size(name, size, shape):
    model = architectures.create(name, num_classes=10).eval()
    with no_grad():
        features = model.features(Tensor(np.zeros((1, 3, size, size), np.float32)))
    assert features.shape == (1, *shape)


# ----------------------------------------------------------------------------- minimum input
@pytest.mark.parametrize("name", ["bn_inception", "inception_v3", "inception_v4",
                                  "inception_resnet_v1"])
def test_one_pixel_below_the_minimum_input_fails_clearly(name):
    model = small(name).eval()
    size = MINIMUM_INPUT[name] - 1
    with no_grad(), pytest.raises(ValueError, match="larger than"):
        model(Tensor(np.zeros((1, 1, size, size), np.float32)))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MINIMUM_INPUT))
def test_minimum_input_works(name):
    model = architectures.create(name, num_classes=10, in_channels=1).eval()
    size = MINIMUM_INPUT[name]
    with no_grad():
        assert model(Tensor(np.zeros((1, 1, size, size), np.float32))).shape == (1, 10)


# ----------------------------------------------------------------------------- training
# At the minimum input size the last grid is 1×1, so batch norm there sees one value per
# sample: a batch of 4 keeps its statistics meaningful.
TRAIN_CASES = [
    ("bn_inception", {}),
    ("inception_v3", {}),                     # with the auxiliary head (adaptive pooling)
    ("inception_v4", {}),
    ("inception_resnet_v1", {}),
]
# The paper's v2 ends in a residual sum with no batch norm before the classifier, so its
# first logits are large; with a batch of 4 the helper's lr 0.01 (+ momentum 0.9)
# overshoots, 0.001 trains steadily.
SLOW_TRAIN_CASES = [
    ("inception_v3_paper", {}, 0.01),
    ("inception_resnet_v2", {}, 0.01),
    ("inception_resnet_v2_paper", {}, 0.001),
]


@pytest.mark.parametrize("name, options", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_trains_at_minimum_size(name, options):
    model = architectures.create(name, num_classes=10, in_channels=1, **options)
    assert_trains(model, MINIMUM_INPUT[name], batch=4)


@pytest.mark.slow
@pytest.mark.parametrize("name, options, lr", SLOW_TRAIN_CASES,
                         ids=[c[0] for c in SLOW_TRAIN_CASES])
def test_trains_at_minimum_size_large(name, options, lr):
    model = architectures.create(name, num_classes=10, in_channels=1, **options)
    assert_trains(model, MINIMUM_INPUT[name], batch=4, lr=lr)


@pytest.mark.slow
def test_inception_v3_trains_at_299_with_the_reference_aux_pooling():
    model = architectures.create("inception_v3", num_classes=10, in_channels=1)
    assert_trains(model, 299, batch=3, steps=3)


# ----------------------------------------------------------------------------- eval mode
EVAL_CASES = [("bn_inception", 32), ("inception_v3", 75), ("inception_v4", 75),
              ("inception_resnet_v1", 75)]


@pytest.mark.parametrize("name, size", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_eval_mode_is_deterministic_and_per_sample(name, size):
    model = small(name)
    x = np.random.default_rng(1).standard_normal((3, 1, size, size)).astype(np.float32)
    model.eval()
    with no_grad():
        batch = model(Tensor(x)).numpy()
        again = model(Tensor(x)).numpy()
        alone = model(Tensor(x[:1])).numpy()
        with_others = model(Tensor(np.concatenate([x[:1], x[1:] * 3.0 + 1.0]))).numpy()
    np.testing.assert_array_equal(batch, again)
    np.testing.assert_allclose(alone[0], batch[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(with_others[0], batch[0], rtol=1e-4, atol=1e-5)
    # In training mode the other samples change a sample's output (batch statistics).
    model.train()
    with no_grad():
        trained = model(Tensor(x))
        trained = trained[0] if isinstance(trained, tuple) else trained
        mixed = model(Tensor(np.concatenate([x[:1], x[1:] * 3.0 + 1.0])))
        mixed = mixed[0] if isinstance(mixed, tuple) else mixed
    assert not np.allclose(trained.numpy()[0], mixed.numpy()[0])


# A tiny Inception-v3 from tiny tables: the same classes and forward, widths of 1–3.
TINY_STEM = [("conv", 2, 3, 2, 0), ("conv", 3, 3, 1, 0), ("maxpool", 3, 2)]
TINY_MODULES = [
    ("Mixed_5b", "InceptionA", dict(branch1x1=1, branch5x5=(1, 2), branch3x3dbl=(1, 1, 2),
                                    pool_proj=1)),
    ("Mixed_6a", "ReductionA", dict(branch3x3=2, branch3x3dbl=(1, 1, 2))),
    ("Mixed_6b", "InceptionB", dict(branch1x1=2, branch7x7=(1, 1, 2),
                                    branch7x7dbl=(1, 1, 1, 1, 2), pool_proj=2)),
    ("Mixed_7a", "ReductionB", dict(branch3x3=(1, 2), branch7x7x3=(1, 1, 1, 2))),
    ("Mixed_7b", "InceptionC", dict(branch1x1=1, branch3x3=(1, 1), branch3x3dbl=(1, 1, 1),
                                    pool_proj=1)),
]


def tiny_inception_v3(**options):
    return inception_v3.InceptionV3(TINY_STEM, TINY_MODULES, "Mixed_6b", num_classes=5,
                                    in_channels=1, **options)


def test_inception_v3_returns_aux_logits_only_in_training():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 1, 35, 35)).astype(np.float32))
    model = tiny_inception_v3()
    with no_grad():
        logits, aux = model.train()(x)
        assert logits.shape == aux.shape == (3, 5)
        assert model.eval()(x).shape == (3, 5)
        assert tiny_inception_v3(aux_logits=False).train()(x).shape == (3, 5)
    assert model.aux_loss_weight == inception_v3.AUX_LOSS_WEIGHT == 0.4


def test_inception_v3_table_builds_chain_widths():
    model = tiny_inception_v3()
    widths = [model.features[name].out_channels for name, *_ in TINY_MODULES]
    assert widths == [1 + 2 + 2 + 1, 2 + 2 + 6, 2 + 2 + 2 + 2, 2 + 2 + 8, 1 + 2 + 2 + 1]
    assert model.aux_logits.conv0[0].in_channels == 8 and model.fc.in_features == 6
    # the reference initialisation: truncated normal, σ = 0.1 (0.01, 0.001 in the head)
    assert np.abs(model.fc.weight.data).max() <= 0.2
    assert np.abs(model.aux_logits.fc.weight.data).max() <= 0.002


# ----------------------------------------------------------------------------- gradchecks
def check_block(block, input_shape, parameters=(), input_grad=True, seed=0):
    """gradcheck ``block`` in float64 on a random input.

    Finite differences cost two forwards per checked element, so by default only the
    input is checked — its gradient flows back through every branch and layer of the
    block — plus the ``parameters`` named ("all" for every one; the slow thorough test).
    Weights are nudged off their initial values first, so that no gradient is trivially
    small (batch norm starts at γ = 1, β = 0).
    """
    block.to(dtype=np.float64).train()
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(input_shape), requires_grad=input_grad)
    named = dict(block.named_parameters())
    for p in named.values():
        p.data[...] = p.data + 0.1 * rng.standard_normal(p.shape)
    checked = list(named.values()) if parameters == "all" else [named[n] for n in parameters]
    inputs = ([x] if input_grad else []) + checked

    def forward(*_):
        return block(x)

    assert gradcheck(forward, inputs, atol=1e-6, rtol=1e-4)


def first_weight(block):
    """The name of the block's first convolution weight: checking its gradient checks the
    backward of every layer after it (used for stems, whose inputs are large)."""
    return next(name for name, _ in block.named_parameters() if name.endswith("weight"))


# BN-Inception
@pytest.mark.parametrize("widths", [
    (2, 2, 3, 2, 3, "avg", 2, 1),            # like 3a: average pool + projection
    (2, 2, 3, 2, 3, "max", 2, 1),            # like 5b: max pool + projection
    (0, 2, 3, 2, 3, "max", 0, 2),            # like 3c: stride 2, pass-through
], ids=["avg", "max", "stride2"])
def test_gradcheck_bn_inception_module(widths):
    check_block(bn_inception.BNInceptionModule(2, *widths), (2, 2, 4, 4))


def test_gradcheck_bn_inception_conv_bias_build():
    block = bn_inception.BNInceptionModule(2, 1, 1, 2, 1, 2, "avg", 1, conv_bias=True)
    assert all(m.bias is not None for m in block.modules() if isinstance(m, nn.Conv2d))
    check_block(block, (2, 2, 3, 3), parameters=["branch1x1.0.bias"])


# Inception-v3
@pytest.mark.parametrize("middle_kernel", [5, 3])
def test_gradcheck_inception_v3_module_a(middle_kernel):
    block = inception_v3.InceptionA(2, 2, (2, 3), (2, 2, 3), 2, middle_kernel=middle_kernel)
    assert block.out_channels == 2 + 3 + 3 + 2
    check_block(block, (2, 2, 4, 4))


def test_gradcheck_inception_v3_module_b_factorized():
    block = inception_v3.InceptionB(2, 2, (2, 2, 3), (2, 2, 2, 2, 3), 2, n=3)
    check_block(block, (2, 2, 4, 4))


def test_inception_v3_module_b_is_factorized_1x7_7x1():
    block = inception_v3.InceptionB(768, **inception_v3._b17(128))
    kernels = [m.kernel_size for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert kernels.count((1, 7)) == 3 and kernels.count((7, 1)) == 3
    assert (7, 7) not in kernels
    paddings = {m.kernel_size: m.padding for m in block.modules() if isinstance(m, nn.Conv2d)}
    assert paddings[(1, 7)] == (0, 3) and paddings[(7, 1)] == (3, 0)


def test_gradcheck_inception_v3_module_c_expanded():
    check_block(inception_v3.InceptionC(2, 2, (2, 2), (2, 3, 2), 2), (2, 2, 3, 3))


def test_gradcheck_inception_v3_reduction_a():
    check_block(inception_v3.ReductionA(2, 2, (2, 3, 3)), (2, 2, 5, 5))


def test_gradcheck_inception_v3_reduction_b():
    check_block(inception_v3.ReductionB(2, (2, 3), (2, 2, 2, 3), n=3), (2, 2, 5, 5))


def test_gradcheck_inception_v3_stem():
    tiny = [("conv", 2, 3, 2, 0), ("conv", 2, 3, 1, 0), ("conv", 2, 3, 1, 1), ("maxpool", 3, 2),
            ("conv", 2, 1, 1, 0), ("conv", 3, 3, 1, 0), ("maxpool", 3, 2)]
    stem, channels = inception_v3.build_stem(tiny, 1)
    assert channels == 3
    check_block(stem, (2, 1, 27, 27), parameters=[first_weight(stem)], input_grad=False)


def test_gradcheck_inception_v3_paper_stem():
    tiny = [("conv", 2, 3, 2, 0), ("conv", 2, 3, 1, 0), ("conv", 2, 3, 1, 1), ("maxpool", 3, 2),
            ("conv", 2, 3, 1, 0), ("conv", 3, 3, 2, 0), ("conv", 3, 3, 1, 1)]
    stem, _ = inception_v3.build_stem(tiny, 1)
    check_block(stem, (2, 1, 27, 27), parameters=[first_weight(stem)], input_grad=False)


@pytest.mark.parametrize("grid", [17, 5], ids=["reference-pool", "adaptive-pool"])
def test_gradcheck_inception_v3_aux_head(grid):
    head = inception_v3.AuxiliaryClassifier(2, 3, conv_channels=2, hidden_channels=3)
    # 1×1 maps after the 5×5 convolution: batch norm needs more than 2 samples there.
    check_block(head, (3, 2, grid, grid), parameters=["conv0.0.weight"], input_grad=grid < 17)


def test_aux_head_uses_the_reference_pooling_from_a_17x17_grid():
    head = inception_v3.AuxiliaryClassifier(2, 3, conv_channels=2, hidden_channels=3).eval()
    pooled = []
    head.pool.register_forward_hook(lambda m, i, o: pooled.append("5x5/3"))
    head.adaptive_pool.register_forward_hook(lambda m, i, o: pooled.append("adaptive"))
    with no_grad():
        for grid in (17, 18, 16, 3):
            head(Tensor(np.ones((1, 2, grid, grid), np.float32)))
    assert pooled == ["5x5/3", "5x5/3", "adaptive", "adaptive"]


# Inception-v4
def test_gradcheck_inception_v4_stem():
    stem = inception_v4.Stem(1, convs=(2, 2, 2), mixed_3a=2, mixed_4a=((2, 2), (2, 2, 2, 2)),
                             mixed_5a=2)
    assert stem.out_channels == 2 + 2 + 2
    check_block(stem, (2, 1, 27, 27), parameters=[first_weight(stem)], input_grad=False)


def test_gradcheck_inception_v4_module_a():
    check_block(inception_v4.InceptionA(2, 2, (2, 3), (2, 2, 3), 2), (2, 2, 3, 3))


def test_gradcheck_inception_v4_reduction_a():
    block = inception_v4.ReductionA(2, k=2, l=2, m=3, n=2)
    assert block.out_channels == 2 + 3 + 2
    check_block(block, (2, 2, 5, 5))


def test_gradcheck_inception_v4_module_b():
    check_block(inception_v4.InceptionB(2, 2, (2, 2, 3), (2, 2, 2, 2, 3), 2, n=3), (2, 2, 3, 3))


def test_gradcheck_inception_v4_reduction_b():
    check_block(inception_v4.ReductionB(2, (2, 2), (2, 2, 2, 3), n=3), (2, 2, 5, 5))


def test_gradcheck_inception_v4_module_c():
    check_block(inception_v4.InceptionC(2, 2, (2, 2), (2, 2, 2, 2), 2), (2, 2, 3, 3))


def test_inception_v4_follows_figure_9():
    model = small("inception_v4")
    stages = model.features
    assert [len(stages[s]) for s in ("inception_a", "inception_b", "inception_c")] == [4, 7, 3]
    assert (stages["stem"].out_channels, stages["reduction_a"].out_channels,
            stages["reduction_b"].out_channels) == (384, 1024, 1536)
    assert all(m.bias is None for m in model.features.modules() if isinstance(m, nn.Conv2d))


# Inception-ResNet
@pytest.mark.parametrize("activation", [True, False])
def test_gradcheck_inception_resnet_a(activation):
    block = inception_resnet.InceptionResNetA(2, 2, (2, 2), (2, 2, 3), scale=0.17,
                                              activation=activation)
    check_block(block, (2, 2, 3, 3), parameters=["residual.up.weight"])


def test_gradcheck_inception_resnet_b():
    check_block(inception_resnet.InceptionResNetB(2, 2, (2, 2, 3), scale=0.1, n=3), (2, 2, 3, 3))


def test_gradcheck_inception_resnet_c():
    check_block(inception_resnet.InceptionResNetC(2, 2, (2, 2, 3), scale=0.2), (2, 2, 3, 3))


def test_gradcheck_inception_resnet_reduction_b():
    block = inception_resnet.ReductionB(2, (2, 3), (2, 2), (2, 2, 2))
    assert block.out_channels == 3 + 2 + 2 + 2
    check_block(block, (2, 2, 5, 5))


def test_gradcheck_inception_resnet_v1_stem():
    tiny = [("conv", 2, 3, 2, 0), ("conv", 2, 3, 1, 0), ("conv", 2, 3, 1, 1), ("maxpool", 3, 2),
            ("conv", 2, 1, 1, 0), ("conv", 2, 3, 1, 0), ("conv", 3, 3, 2, 0)]
    stem, _ = inception_v3.build_stem(tiny, 1)
    check_block(stem, (2, 1, 27, 27), parameters=[first_weight(stem)], input_grad=False)


@pytest.mark.slow
@pytest.mark.parametrize("make, shape", [
    (lambda: bn_inception.BNInceptionModule(2, 1, 1, 2, 1, 2, "avg", 1), (2, 2, 3, 3)),
    (lambda: bn_inception.BNInceptionModule(2, 0, 1, 2, 1, 2, "max", 0, stride=2), (2, 2, 3, 3)),
    (lambda: inception_v3.InceptionA(2, 1, (1, 2), (1, 1, 2), 1), (2, 2, 3, 3)),
    (lambda: inception_v3.ReductionA(2, 1, (1, 1, 2)), (2, 2, 5, 5)),
    (lambda: inception_v3.InceptionB(2, 1, (1, 1, 2), (1, 1, 1, 1, 2), 1, n=3), (2, 2, 3, 3)),
    (lambda: inception_v3.ReductionB(2, (1, 2), (1, 1, 1, 2), n=3), (2, 2, 5, 5)),
    (lambda: inception_v3.InceptionC(2, 1, (1, 1), (1, 1, 1), 1), (2, 2, 3, 3)),
    (lambda: inception_v3.AuxiliaryClassifier(2, 2, 1, 2), (3, 2, 5, 5)),
    (lambda: inception_v4.InceptionA(2, 1, (1, 2), (1, 1, 2), 1), (2, 2, 3, 3)),
    (lambda: inception_v4.ReductionA(2, 1, 1, 2, 1), (2, 2, 5, 5)),
    (lambda: inception_v4.InceptionB(2, 1, (1, 1, 2), (1, 1, 1, 1, 2), 1, n=3), (2, 2, 3, 3)),
    (lambda: inception_v4.ReductionB(2, (1, 2), (1, 1, 1, 2), n=3), (2, 2, 5, 5)),
    (lambda: inception_v4.InceptionC(2, 1, (1, 1), (1, 1, 1, 1), 1), (2, 2, 3, 3)),
    (lambda: inception_resnet.InceptionResNetA(2, 1, (1, 1), (1, 1, 2)), (2, 2, 3, 3)),
    (lambda: inception_resnet.InceptionResNetB(2, 1, (1, 1, 2), n=3), (2, 2, 3, 3)),
    (lambda: inception_resnet.InceptionResNetC(2, 1, (1, 1, 2)), (2, 2, 3, 3)),
    (lambda: inception_resnet.ReductionB(2, (1, 2), (1, 1), (1, 1, 1)), (2, 2, 5, 5)),
])
def test_gradcheck_every_parameter_thorough(make, shape):
    check_block(make(), shape, parameters="all")


def test_residual_merge_is_x_plus_scaled_linear_up_projection():
    """y = ReLU(x + s·(W∗mixed + b)) with no batch norm anywhere in the merge."""
    merge = inception_resnet.ScaledResidual(4, 3, scale=0.2).to(dtype=np.float64)
    rng = np.random.default_rng(0)
    x, mixed = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 4, 4, 4))
    w, b = merge.up.weight.data[:, :, 0, 0], merge.up.bias.data
    expected = np.maximum(x + 0.2 * (np.einsum("oc,nchw->nohw", w, mixed)
                                     + b[None, :, None, None]), 0)
    np.testing.assert_allclose(merge(Tensor(x), Tensor(mixed)).numpy(), expected, atol=1e-12)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in merge.modules())
    linear = inception_resnet.ScaledResidual(4, 3, scale=1.0, activation=False)
    assert isinstance(linear.activation, nn.Identity)


def test_gradcheck_scaled_residual_merge():
    merge = inception_resnet.ScaledResidual(4, 3, scale=0.17).to(dtype=np.float64)
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3, 3, 3)), requires_grad=True)
    mixed = Tensor(rng.standard_normal((2, 4, 3, 3)), requires_grad=True)
    assert gradcheck(lambda a, m, *_: merge(a, m), [x, mixed, *merge.parameters()],
                     atol=1e-6, rtol=1e-4)


def test_inception_resnet_v2_reference_structure():
    model = inception_resnet.inception_resnet_v2(num_classes=10)
    stages = model.features
    assert [len(stages[s]) for s in ("block35", "block17", "block8")] == [10, 20, 9]
    residual_blocks = (inception_resnet.InceptionResNetA, inception_resnet.InceptionResNetB,
                       inception_resnet.InceptionResNetC)
    blocks = [m for m in model.modules() if isinstance(m, residual_blocks)]
    assert len(blocks) == 40
    assert [b.residual.scale for b in blocks[:1] + blocks[10:11] + blocks[30:31]] == \
        [0.17, 0.10, 0.20]
    last = stages["block8_last"]
    assert last.residual.scale == 1.0 and isinstance(last.residual.activation, nn.Identity)
    assert (stages["stem"].mixed_5b.out_channels, stages["reduction_a"].out_channels,
            stages["reduction_b"].out_channels) == (320, 1088, 2080)
    assert model.fc.in_features == 1536
    # The up-projections are the only convolutions with bias, and never followed by BN.
    biased = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert len(biased) == 40 and all(m.kernel_size == (1, 1) for m in biased)


def test_inception_resnet_paper_widths():
    v1 = small("inception_resnet_v1").features
    assert [len(v1[s]) for s in ("block35", "block17", "block8")] == [5, 10, 5]
    assert (v1["reduction_a"].out_channels, v1["reduction_b"].out_channels) == (896, 1792)
    v2 = inception_resnet.inception_resnet_v2_paper(num_classes=10).features
    assert (v2["stem"].out_channels, v2["reduction_a"].out_channels,
            v2["reduction_b"].out_channels) == (384, 1152, 2144)


def test_inception_resnet_v2_rejects_bad_block_counts():
    with pytest.raises(ValueError, match="inception_resnet_v2.*blocks"):
        inception_resnet.inception_resnet_v2(blocks=(5, 0, 5))


# ----------------------------------------------------------------------------- structure
def test_bn_inception_follows_the_table():
    model = built("bn_inception")
    modules = [m for m in model.modules() if isinstance(m, bn_inception.BNInceptionModule)]
    # The widths the table's filter counts give (4c, 4d, 4e exceed its size column).
    assert [m.out_channels for m in modules] == [256, 320, 576, 576, 576, 608, 608, 1056,
                                                 1024, 1024]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is None for m in convs)
    assert max(max(m.kernel_size) for m in convs[3:]) == 3       # no 5×5 after the stem
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    # every convolution is followed by batch norm
    assert len([m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]) == len(convs)


def test_bn_inception_rejects_an_inconsistent_row():
    with pytest.raises(ValueError, match="BNInceptionModule.*stride-2"):
        bn_inception.BNInceptionModule(8, 4, 2, 2, 2, 2, "max", 0, stride=2)
    with pytest.raises(ValueError, match="BNInceptionModule.*pool"):
        bn_inception.BNInceptionModule(8, 4, 2, 2, 2, 2, "median", 2)


def test_inception_v3_variants_follow_their_tables():
    reference, paper = built("inception_v3"), inception_v3.inception_v3_paper(num_classes=10)
    count = {}
    for name, model in (("reference", reference), ("paper", paper)):
        count[name] = [sum(isinstance(m, cls) for m in model.modules())
                       for cls in (inception_v3.InceptionA, inception_v3.InceptionB,
                                   inception_v3.InceptionC)]
    assert count == {"reference": [3, 4, 2], "paper": [3, 5, 2]}
    kernels = lambda model: {m.kernel_size for m in model.features.modules()
                             if isinstance(m, nn.Conv2d)}
    assert (5, 5) in kernels(reference) and (5, 5) not in kernels(paper)
    assert {(1, 3), (3, 1), (1, 7), (7, 1)} <= kernels(reference)
    assert paper.features.stem.conv6[0].out_channels == 288 == \
        paper.features["Mixed_5b"].branch1x1[0].in_channels
    bns = [m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {m.eps for m in bns} == {1e-3}


def test_chain_rejects_mismatched_widths_and_kernels():
    with pytest.raises(ValueError, match="chain.*kernel"):
        inception_v3.chain(4, (2, 3), (1,))


@settings(deadline=None, max_examples=15)
@given(size=st.integers(3, 12), channels=st.integers(1, 4))
def test_reductions_halve_any_grid_and_add_widths(size, channels):
    """Valid stride-2 branches and the max-pool agree for odd and even sizes alike."""
    x = Tensor(np.random.default_rng(size).standard_normal((2, channels, size, size))
               .astype(np.float32))
    side = (size - 3) // 2 + 1
    for block, width in ((inception_v3.ReductionA(channels, 2, (1, 2, 3)), 2 + 3),
                         (inception_v4.ReductionA(channels, 1, 2, 3, 2), 3 + 2),
                         (inception_resnet.ReductionB(channels, (1, 2), (1, 2), (1, 1, 2)),
                          2 + 2 + 2)):
        assert block(x).shape == (2, width + channels, side, side)


@settings(deadline=None, max_examples=15)
@given(size=st.integers(1, 12), stride=st.sampled_from([1, 2]))
def test_bn_inception_module_output_size_for_any_grid(size, stride):
    widths = (0, 1, 2, 1, 2, "max", 0) if stride == 2 else (1, 1, 2, 1, 2, "avg", 1)
    block = bn_inception.BNInceptionModule(3, *widths, stride=stride)
    x = Tensor(np.random.default_rng(size).standard_normal((2, 3, size, size))
               .astype(np.float32))
    side = (size - 1) // stride + 1
    assert block(x).shape == (2, block.out_channels, side, side)


def test_truncated_normal_has_no_outliers_and_the_right_spread():
    weight = nn.Parameter(np.empty((200, 300), np.float32))
    inception_v3.truncated_normal_(weight, 0.1, rng=np.random.default_rng(0))
    assert np.abs(weight.data).max() <= 0.2
    # A normal cut at ±2σ keeps a standard deviation of 0.88σ.
    assert abs(weight.data.std() - 0.088) < 0.002
