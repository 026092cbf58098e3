"""EfficientDet: parameter counts D0–D7x against the official implementation, the BiFPN
graph of the paper's Figure 2d, the fusion and head structure, a forward and backward
pass of D0 at 128×128, the flattening order of the predictions, and bad input.

Counting parameters only needs the model built (no forward pass), so every variant's
count is checked here; forward passes run at small inputs only.
"""
import functools
import math
import os
import re

import numpy as np
import pytest

import architectures
from minicnn import Tensor, gradcheck, no_grad
from minicnn.summary import summary
from architectures import efficientdet
from architectures.efficientdet import (TABLE_1, FastNormalizedFusion, SumFusion,
                                        anchor_order, bifpn_nodes, compound_scaling,
                                        flatten_predictions)

# At 90 classes (COCO), as the official TensorFlow code counts them (D0 is its published
# 3,880,067; all nine equal rwightman/efficientdet-pytorch's tf_efficientdet_* models,
# which load the official checkpoints). The paper's Table 2 rounds them to 3.9M, 6.6M,
# 8.1M, 12M, 20.7M, 33.7M, 51.9M, 51.9M.
PUBLISHED = {  # the same numbers as efficientdet.PARAMETERS, written out here
    "efficientdet_d0": 3_880_067,
    "efficientdet_d1": 6_625_898,
    "efficientdet_d2": 8_097_039,
    "efficientdet_d3": 12_032_296,
    "efficientdet_d4": 20_723_675,
    "efficientdet_d5": 33_653_315,
    "efficientdet_d6": 51_871_782,
    "efficientdet_d7": 51_871_782,
    "efficientdet_d7x": 77_147_166,
}
TABLE_2_MILLIONS = {"d0": 3.9, "d1": 6.6, "d2": 8.1, "d3": 12.0, "d4": 20.7, "d5": 33.7,
                    "d6": 51.9, "d7": 51.9}


@functools.lru_cache(maxsize=None)
def small_d0(num_classes=3):
    """D0 at 3 classes, shared by the tests that run it at 128×128. Without stochastic
    depth, so that every block runs and every parameter gets a gradient."""
    return efficientdet.efficientdet_d0(num_classes=num_classes, drop_path_rate=0.0)


@pytest.fixture(scope="module", autouse=True)
def free_models():
    yield
    small_d0.cache_clear()


def images(batch=2, size=128, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(
        (batch, 3, size, size)).astype(np.float32))


# ----------------------------------------------------------------------------- counts

@pytest.mark.parametrize("name, expected", PUBLISHED.items())
def test_parameter_count_equals_the_official_implementation(name, expected):
    model = architectures.create(name, num_classes=90)
    assert model.num_parameters() == expected, (
        f"{name}: {model.num_parameters():,} parameters, official {expected:,}")
    variant = name.split("_")[1]
    if variant in TABLE_2_MILLIONS:
        assert round(expected / 1e6, 1) == TABLE_2_MILLIONS[variant]


def test_registered_with_published_input_sizes_and_coco_classes():
    names = architectures.available("efficientdet")
    assert names == sorted(PUBLISHED)
    for name in names:
        variant = name.split("_")[1]
        assert architectures.entry(name).input_size == TABLE_1[variant].input_size
    # R_input = 512 + 128φ up to D4; D5 and D6 use 1280, D7 1536 (Table 1)
    assert [TABLE_1[v].input_size for v in ("d0", "d1", "d2", "d3", "d4")] == \
        [512 + 128 * phi for phi in range(5)]


def test_table_1_follows_the_compound_scaling_formulas():
    """Widths within 6% of 64·1.35^φ (the release rounds them to sizes hardware likes),
    D_class = 3 + ⌊φ/3⌋, and D_bifpn = 3 + φ up to D4 (Table 1 gives D5 and D6 one layer
    less than the formula: 7 and 8)."""
    for phi, variant in enumerate(("d0", "d1", "d2", "d3", "d4", "d5", "d6")):
        formula, row = compound_scaling(phi), TABLE_1[variant]
        assert abs(row.bifpn_width - formula.bifpn_width) / formula.bifpn_width < 0.06
        assert row.head_depth == formula.head_depth
        assert row.bifpn_depth == formula.bifpn_depth - (phi >= 5)
    assert compound_scaling(1) == (640, 86.4, 4, 3)


def test_backbone_is_efficientnet_without_its_head():
    """EfficientNet-B0 is 5,288,548 with its 1280-wide head conv (412,160) and the
    1000-class classifier (1,281,000); the detector keeps the 3,595,388 in between."""
    model = small_d0()
    assert model.backbone.num_parameters() == 5_288_548 - 412_160 - 1_281_000
    assert model.backbone_stages == ["stage3", "stage5", "stage7"]


def test_backbone_feature_pyramid_is_the_last_map_at_each_stride():
    """feature_pyramid gives what running ``features`` stage by stage gives at the end of
    stage3, stage5 and stage7; a stride the network does not have is refused."""
    backbone = small_d0().backbone
    backbone.eval()
    x = images(1, 64)
    with no_grad():
        p3, p4, p5 = backbone.feature_pyramid(x)
        maps, y = {}, x
        for name, part in backbone.features.named_children():
            y = maps[name] = part(y)
    assert (p3.shape, p4.shape, p5.shape) == ((1, 40, 8, 8), (1, 112, 4, 4), (1, 320, 2, 2))
    for got, name in zip((p3, p4, p5), ("stage3", "stage5", "stage7")):
        np.testing.assert_array_equal(got.data, maps[name].data)
    with pytest.raises(ValueError, match=r"no feature map at stride\(s\) \[64\]; its "
                                         r"strides are \[2, 4, 8, 16, 32\]"):
        backbone.pyramid_stages([8, 64])


# ----------------------------------------------------------------------------- structure

def test_bifpn_graph_is_figure_2d():
    nodes = bifpn_nodes(3, 7)
    # maps 0..4 are P3..P7; node k's output is map 5 + k
    assert nodes == [(6, [3, 4]), (5, [2, 5]), (4, [1, 6]), (3, [0, 7]),     # top-down
                     (4, [1, 7, 8]), (5, [2, 6, 9]), (6, [3, 5, 10]), (7, [4, 11])]
    assert len(bifpn_nodes(3, 8)) == 10                                       # D7x: P3–P8


def test_fusion_is_weighted_up_to_d5_and_a_plain_sum_for_d6_and_d7():
    fused = [m for m in small_d0().modules() if isinstance(m, FastNormalizedFusion)]
    assert len(fused) == 3 * 8                              # 3 layers × 8 nodes
    assert sum(m.weight.size for m in fused) == 3 * 19      # 2+2+2+2+3+3+3+2 inputs a layer
    assert all(np.all(m.weight.data == 1) for m in fused)
    d6 = efficientdet.efficientdet_d6(num_classes=1, bifpn_width=8)   # narrow: quick to build
    assert not any(isinstance(m, FastNormalizedFusion) for m in d6.modules())
    assert sum(isinstance(m, SumFusion) for m in d6.modules()) == 8 * 8


def test_fast_normalized_fusion_formula_and_gradient():
    """O = Σ relu(wᵢ)·Iᵢ / (ε + Σ relu(wⱼ)): a negative weight drops its input."""
    fusion = FastNormalizedFusion(3)
    fusion.weight.data[:] = [2.0, -1.0, 0.5]
    inputs = [Tensor(np.full((1, 1, 2, 2), v)) for v in (1.0, 10.0, 4.0)]
    expected = (2.0 * 1.0 + 0.5 * 4.0) / (1e-4 + 2.5)
    np.testing.assert_allclose(fusion(*inputs).data, expected, rtol=1e-6)
    fusion.weight.data = fusion.weight.data.astype(np.float64)
    xs = [Tensor(np.random.default_rng(i).standard_normal((1, 2, 3, 3)), requires_grad=True)
          for i in range(3)]
    assert gradcheck(lambda w, *t: fusion(*t), [fusion.weight] + xs)


def test_heads_share_convolutions_and_keep_batch_norms_per_level():
    """Five levels or three: the same shared convolutions, one BN per level per repeat."""
    full, three_levels = small_d0(), efficientdet.efficientdet_d0(num_classes=3, max_level=5)
    for net in ("class_net", "box_net"):
        a, b = getattr(full, net), getattr(three_levels, net)
        shared = sum(p.size for name, p in a.named_parameters() if "norms" not in name)
        assert shared == sum(p.size for name, p in b.named_parameters() if "norms" not in name)
        assert [len(norms) for norms in a.norms] == [5] * 3
        assert [len(norms) for norms in b.norms] == [3] * 3


def test_class_bias_starts_at_the_prior():
    bias = small_d0().class_net.predict.pointwise.bias.data
    np.testing.assert_allclose(bias, -math.log(0.99 / 0.01), rtol=1e-6)
    assert 1 / (1 + np.exp(-bias[0])) == pytest.approx(0.01)
    assert not np.any(small_d0().box_net.predict.pointwise.bias.data)


# ----------------------------------------------------------------------------- forward / backward

def test_d0_forward_and_backward_at_128():
    """Per-level maps of (N, A·K, H/2^l, W/2^l); every parameter gets a gradient."""
    model = small_d0()
    model.train()
    classes, boxes = model(images())
    assert [c.shape for c in classes] == [(2, 27, 128 >> l, 128 >> l) for l in range(3, 8)]
    assert [b.shape for b in boxes] == [(2, 36, 128 >> l, 128 >> l) for l in range(3, 8)]
    class_logits, box_offsets = flatten_predictions(classes, boxes, 3)
    assert class_logits.shape == (2, 9 * (256 + 64 + 16 + 4 + 1), 3)
    assert box_offsets.shape == (2, 3069, 4)
    loss = (class_logits * class_logits).mean() + (box_offsets * box_offsets).mean()
    model.zero_grad()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not np.any(p.grad)]
    assert not missing, f"parameters without gradient: {missing[:10]}"


def test_flattened_rows_follow_anchor_order():
    """Row r of the flattened outputs is (level, y, x, anchor) = anchor_order(...)[r],
    and its K values are channels a·K … a·K + K − 1 of that level's map."""
    rng = np.random.default_rng(0)
    shapes = [(2, 9 * 3, 8 >> i, 8 >> i) for i in range(3)]
    classes = [Tensor(rng.standard_normal(s)) for s in shapes]
    boxes = [Tensor(rng.standard_normal((s[0], 36) + s[2:])) for s in shapes]
    flat_classes, flat_boxes = flatten_predictions(classes, boxes, 3)
    order = anchor_order([3, 4, 5], 64)
    assert len(order) == flat_classes.shape[1] == 9 * (64 + 16 + 4)
    for row in (0, 5, 100, 600, len(order) - 1):
        level, y, x, a = order[row]
        np.testing.assert_array_equal(flat_classes.data[:, row],
                                      classes[level - 3].data[:, 3 * a:3 * a + 3, y, x])
        np.testing.assert_array_equal(flat_boxes.data[:, row],
                                      boxes[level - 3].data[:, 4 * a:4 * a + 4, y, x])
    assert len(anchor_order(range(3, 8), 512)) == 49_104          # D0's anchors at 512


def test_smaller_pyramid_takes_smaller_images():
    """max_level=5 needs multiples of 32 only; eval mode gives the same shapes."""
    model = efficientdet.efficientdet_d0(num_classes=2, max_level=5, bifpn_width=16)
    model.eval()
    with no_grad():
        classes, boxes = model(images(1, 64))
    assert [c.shape for c in classes] == [(1, 18, 8, 8), (1, 18, 4, 4), (1, 18, 2, 2)]
    assert [b.shape for b in boxes] == [(1, 36, 8, 8), (1, 36, 4, 4), (1, 36, 2, 2)]


# ----------------------------------------------------------------------------- summary

def test_summary_counts_every_layer_of_the_detector():
    """Every parameter is in a row; SAME pools count as pooling, fusions as additions."""
    model = small_d0()
    report = summary(model, (3, 128, 128), format="dict")
    assert report["total"]["params"] == model.num_parameters() and not report["unused_params"]
    types = {row["type"] for row in report["rows"]}
    assert {"MaxPool2dSame", "UpsamplingNearest2d", "FastNormalizedFusion"} <= types
    pools = [row for row in report["rows"] if row["type"] == "MaxPool2dSame"]
    assert sum(row["flops_by_category"]["pool"] for row in pools) > 0
    assert report["total"]["flops_by_category"]["add"] > 0


@pytest.mark.slow
def test_d0_multiply_adds_at_512_are_the_papers_2_5_billion():
    """Table 2: D0 at 512×512 costs 2.5B FLOPs, counted as multiply-adds (summary counts
    a multiply-add as 2)."""
    report = summary(architectures.create("efficientdet_d0", num_classes=90), (3, 512, 512),
                     format="dict")
    assert report["total"]["flops"] / 2 / 1e9 == pytest.approx(2.5, abs=0.05)


# ----------------------------------------------------------------------------- the reference

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "efficientdet_bifpn.npz")


def our_name(name):
    """The minicnn name of an effdet (rwightman/efficientdet-pytorch) state-dict entry."""
    rules = [
        (r"^fpn\.resample\.(\d+)\.conv\.conv\.", lambda m: f"extra_levels.{int(m[1]) - 3}.conv."),
        (r"^fpn\.resample\.(\d+)\.conv\.bn\.", lambda m: f"extra_levels.{int(m[1]) - 3}.bn."),
        (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.edge_weights$",
         lambda m: f"bifpn.{m[1]}.nodes.{m[2]}.fuse.weight"),
        # a node's resample is keyed by the input's index in the feature list; ours by
        # the input's position among the node's inputs
        (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.resample\.(\d+)\.conv\.(conv|bn)\.",
         lambda m: f"bifpn.{m[1]}.nodes.{m[2]}.resample."
                   f"{bifpn_nodes(3, 6)[int(m[2])][1].index(int(m[3]))}.{m[4]}."),
        (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.conv_dw\.",
         lambda m: f"bifpn.{m[1]}.nodes.{m[2]}.conv.depthwise."),
        (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.conv_pw\.",
         lambda m: f"bifpn.{m[1]}.nodes.{m[2]}.conv.pointwise."),
        (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.bn\.",
         lambda m: f"bifpn.{m[1]}.nodes.{m[2]}.bn."),
        (r"^(class|box)_net\.(conv_rep\.(\d+)|predict)\.conv_dw\.",
         lambda m: f"{m[1]}_net.{'predict' if m[2] == 'predict' else 'convs.' + m[3]}.depthwise."),
        (r"^(class|box)_net\.(conv_rep\.(\d+)|predict)\.conv_pw\.",
         lambda m: f"{m[1]}_net.{'predict' if m[2] == 'predict' else 'convs.' + m[3]}.pointwise."),
        (r"^(class|box)_net\.bn_rep\.(\d+)\.(\d+)\.bn\.",
         lambda m: f"{m[1]}_net.norms.{m[2]}.{m[3]}."),
    ]
    for pattern, replace in rules:
        renamed, count = re.subn(pattern, replace, name)
        if count:
            return renamed
    raise KeyError(f"no rule for effdet name {name!r}")


def test_bifpn_and_heads_match_the_reference_implementation():
    """The fixture (tests/fixtures/make_efficientdet_bifpn.py) ran effdet's BiFPN and
    class/box networks — the PyTorch port that loads the official checkpoints — with
    random weights on random P3–P5 maps. Loading the same weights, minicnn's extra level,
    BiFPN and heads give the same outputs, with running statistics and with batch ones."""
    stored = np.load(FIXTURE)
    model = efficientdet.efficientdet_d0(num_classes=3, bifpn_width=16, bifpn_depth=2,
                                         head_depth=2, max_level=6)
    state = model.state_dict()
    loaded = {our_name(key[len("param/"):]): stored[key] for key in stored.files
              if key.startswith("param/")}
    assert set(loaded) == {name for name in state if not name.startswith("backbone.")}
    state.update(loaded)
    model.load_state_dict(state)

    features = [Tensor(stored[f"p{level}"]) for level in (3, 4, 5)]
    for mode in ("eval", "train"):
        model.train(mode == "train")
        with no_grad():
            pyramid = model.fuse(model.add_levels(features))
            classes, boxes = model.class_net(pyramid), model.box_net(pyramid)
        for level, (c, b) in enumerate(zip(classes, boxes), start=3):
            np.testing.assert_allclose(c.data, stored[f"{mode}/class/{level}"], rtol=1e-4,
                                       atol=1e-4, err_msg=f"{mode} class P{level}")
            np.testing.assert_allclose(b.data, stored[f"{mode}/box/{level}"], rtol=1e-4,
                                       atol=1e-4, err_msg=f"{mode} box P{level}")


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("size, message", [
    ((64, 64), r"multiples of 128 .*P7.*minimum is 128×128; got 64×64"),
    ((128, 200), r"multiples of 128 .*minimum is 128×128; got 128×200"),
])
def test_canvas_too_small_or_not_a_multiple_of_the_stride(size, message):
    x = Tensor(np.zeros((1, 3) + size, np.float32))
    with pytest.raises(ValueError, match=message):
        small_d0()(x)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"num_classes must be >= 1, got 0"):
        efficientdet.efficientdet_d0(num_classes=0)
    with pytest.raises(ValueError, match=r"min_level <= 5 .* got min_level=6"):
        efficientdet.efficientdet_d0(min_level=6)
    with pytest.raises(ValueError, match=r"fusion must be 'fast' .* or 'sum', got 'softmax'"):
        efficientdet.efficientdet_d0(fusion="softmax")
    with pytest.raises(TypeError):
        efficientdet.efficientdet_d0(bifpn_widht=16)
    with pytest.raises(ValueError, match=r"expected a 4-D"):
        small_d0()(Tensor(np.zeros((3, 128, 128), np.float32)))


@pytest.mark.slow
def test_d0_learns_a_handful_of_mnist_detection_canvases():
    """Is the whole path learning at all? D0 with the mnist-detection recipe's anchors and
    no stochastic depth fits 8 canvases of real MNIST digits in 90 steps: every piece
    (anchor coding vs matching, focal-loss normalisation, class prior, batch norm between
    train and eval, pooling and upsampling gradients, post-processing, the COCO mAP) has
    to be right for the mAP on those canvases to approach 1 (measured: mAP 0.92,
    mAP50 0.98)."""
    from minicnn.detection.anchors import generate_anchors
    from minicnn.detection.losses import detection_loss
    from minicnn.detection.train import (MNIST_DETECTION_RECIPE, DetectionBatches,
                                         evaluate_detector, load_dataset, model_outputs,
                                         recalibrate_batch_norm)
    from minicnn.nn.init import manual_seed
    from minicnn.optim import clip_grad_norm_
    from minicnn.train import make_optimizer
    from minicnn.data import DatasetError
    try:
        canvases = load_dataset("mnist-detection", "train", 128, count=8)
    except DatasetError as error:       # MNIST not on this machine and no network
        pytest.skip(f"MNIST unavailable: {error}")
    manual_seed(0)
    model = architectures.create("efficientdet_d0", num_classes=10, in_channels=1,
                                 drop_path_rate=0.0)
    anchors = generate_anchors(128, anchor_scale=MNIST_DETECTION_RECIPE["anchor_scale"])
    batches = DetectionBatches(canvases, np.arange(8), 128, 8, anchors)
    optimizer = make_optimizer("adamw", model.parameters(), 2e-3, 0.9, 1e-4)
    for step in range(90):
        images, classes, box_targets = next(batches.batches(step))
        class_logits, box_deltas = model_outputs(model, Tensor(images))
        loss, _, _ = detection_loss(class_logits, box_deltas, classes, box_targets)
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm_(list(model.parameters()), 10.0)
        optimizer.step()
    recalibrate_batch_norm(model, batches, 0, 1)
    figures = evaluate_detector(model, batches, np.arange(8), 0.05, "cpu")
    assert figures["mAP50"] >= 0.9 and figures["mAP"] >= 0.75, figures
