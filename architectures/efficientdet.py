"""EfficientDet: Tan, Pang & Le (2020), "EfficientDet: Scalable and Efficient Object
Detection".

A one-stage detector in three parts, all scaled together by one compound coefficient φ:

1. **Backbone**: EfficientNet-B0…B6 (``architectures/efficientnet.py``) without its head;
   its last feature maps at strides 8, 16 and 32 are the pyramid levels P3, P4, P5. Two
   more levels are made on top: P6 = 1×1 conv + BN (to the BiFPN width) then a 3×3/2 max
   pool, P7 = a 3×3/2 max pool of P6 (both pools with TensorFlow's SAME padding).

2. **BiFPN** (§3, Figure 2d), D_bifpn identical layers. Each layer has 8 *fusion nodes*:
   top-down P6ᵗᵈ ← (P6, P7), P5ᵗᵈ ← (P5, P6ᵗᵈ), P4ᵗᵈ ← (P4, P5ᵗᵈ), P3ᵒᵘᵗ ← (P3, P4ᵗᵈ), then
   bottom-up P4ᵒᵘᵗ ← (P4, P4ᵗᵈ, P3ᵒᵘᵗ), P5ᵒᵘᵗ, P6ᵒᵘᵗ likewise, and P7ᵒᵘᵗ ← (P7, P6ᵒᵘᵗ).
   A node brings each input to its own level (1×1 conv + BN where the width differs,
   nearest-neighbour ×2 to go up a resolution, 3×3/2 SAME max pool to go down), fuses them
   by **fast normalised fusion** (equation 2),

       O = Σᵢ wᵢ·Iᵢ / (ε + Σⱼ wⱼ),   wᵢ = ReLU(learned weight i),   ε = 10⁻⁴,

   and ends with swish → depthwise-separable 3×3 conv → BN. D6, D7 and D7x fuse by a
   plain sum instead, as their official configuration does (weight method "sum").

3. **Class and box networks**, shared by every level: D_class repeats of separable 3×3
   conv → BN → swish, then a separable prediction conv with A·K outputs (A = 9 anchors:
   3 octave scales × 3 aspect ratios; K = classes, or 4 box offsets). The convolutions'
   weights are shared across levels; each level has batch norms of its own. The class
   prediction's bias starts at −log((1 − π)/π), π = 0.01, so that every anchor begins by
   predicting "background" with probability 0.99 (focal loss, RetinaNet §4.1).

Compound scaling (§4.2, equations 1–3) and the paper's Table 1
--------------------------------------------------------------
    W_bifpn = 64 · 1.35^φ,   D_bifpn = 3 + φ,   D_box = D_class = 3 + ⌊φ/3⌋,
    R_input = 512 + 128·φ

``compound_scaling(phi)`` evaluates the formulas; ``TABLE_1`` holds the values as released
(the widths rounded as the official configuration rounds them; D7 keeps D6's network at a
larger input, D7x uses B7 and one more level, P8).

What this file builds
---------------------
efficientdet_d0 … efficientdet_d7 and efficientdet_d7x, as the official TensorFlow code
(google/automl) counts them: the backbone without its head convolution; every 1×1
resample convolution with a bias and a BN after it; separable convolutions with a
depthwise kernel (no bias) and a pointwise kernel with a bias, BN after (the official
"redundant" bias is kept so the counts match); fusion weights, one per node input, set to
1; batch norm ε = 10⁻³ and momentum 0.01 (TensorFlow's decay 0.99). Parameters at 90
classes (COCO): D0 3,880,067 — the official count — and D1–D7x as ``PARAMETERS`` (the
paper's Table 2 rounds them to 3.9M, 6.6M, 8.1M, 12M, 20.7M, 33.7M, 51.9M, 51.9M).

Outputs
-------
``model(x)`` returns ``(class_outputs, box_outputs)``, two lists with one entry per level
P3…P7 (finest first): class maps (N, A·K, H_l, W_l) of logits and box maps
(N, A·4, H_l, W_l) of box-coder offsets, where H_l = H / 2^l. The channel index of anchor
a and value k is a·K + k. ``flatten_predictions`` turns them into (N, anchors, K) and
(N, anchors, 4) in the order of ``anchor_order``: **level-major, then y, then x, then
anchor** (the anchors of a location in the official order: octave scale-major, then
aspect ratio).

The input's height and width must be multiples of 2^max_level (128 for P7): every level
then halves exactly and nearest-neighbour ×2 lands on the level above.
"""
import math
from collections import OrderedDict, namedtuple

import numpy as np

from minicnn import functional as F, nn
from architectures import register_variant
from architectures.efficientnet import COEFFICIENTS, build_efficientnet
from minicnn.detection.losses import flatten_level_outputs

# ----------------------------------------------------------------------------- the tables
Config = namedtuple("Config", "input_size backbone bifpn_width bifpn_depth head_depth "
                              "fusion min_level max_level anchor_scale")

# The paper's Table 1 as released (the official hparams_config.py). fusion: "fast" is fast
# normalised fusion, "sum" the plain sum of D6/D7. The pyramid spans P_min…P_max. The
# anchor scale (anchor side = scale × stride at octave 0) is for the anchor generator:
# D7 alone uses 5.
TABLE_1 = {
    #            input  backbone  W_bifpn  D_bifpn  D_class  fusion  min  max  anchor scale
    "d0":  Config(512,  "b0",      64,     3,       3,       "fast", 3,   7,   4.0),
    "d1":  Config(640,  "b1",      88,     4,       3,       "fast", 3,   7,   4.0),
    "d2":  Config(768,  "b2",     112,     5,       3,       "fast", 3,   7,   4.0),
    "d3":  Config(896,  "b3",     160,     6,       4,       "fast", 3,   7,   4.0),
    "d4":  Config(1024, "b4",     224,     7,       4,       "fast", 3,   7,   4.0),
    "d5":  Config(1280, "b5",     288,     7,       4,       "fast", 3,   7,   4.0),
    "d6":  Config(1280, "b6",     384,     8,       5,       "sum",  3,   7,   4.0),
    "d7":  Config(1536, "b6",     384,     8,       5,       "sum",  3,   7,   5.0),
    "d7x": Config(1536, "b7",     384,     8,       5,       "sum",  3,   8,   4.0),
}

# Parameters at 90 classes, as the official implementation counts them (D0 is the
# published 3,880,067; every count equals rwightman/efficientdet-pytorch's
# tf_efficientdet_* models, which load the official checkpoints; Table 2 rounds them).
PARAMETERS = {
    "d0": 3_880_067, "d1": 6_625_898, "d2": 8_097_039, "d3": 12_032_296,
    "d4": 20_723_675, "d5": 33_653_315, "d6": 51_871_782, "d7": 51_871_782,
    "d7x": 77_147_166,
}

NUM_SCALES, ASPECT_RATIOS = 3, ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
NUM_ANCHORS = NUM_SCALES * len(ASPECT_RATIOS)
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
FUSION_EPS = 1e-4
PRIOR_PROBABILITY = 0.01
BACKBONE_STRIDES = {level: 2 ** level for level in range(1, 6)}   # P1…P5 of EfficientNet

Scaling = namedtuple("Scaling", "input_size bifpn_width bifpn_depth head_depth")


def compound_scaling(phi):
    """Equations 1–3 at coefficient φ, before the release's rounding.

    >>> compound_scaling(1)
    Scaling(input_size=640, bifpn_width=86.4, bifpn_depth=4, head_depth=3)

    (Table 1 uses 88 for that width: the official widths are rounded up to hardware-friendly
    sizes, see ``TABLE_1``.)
    """
    if phi < 0:
        raise ValueError(f"compound_scaling: phi must be >= 0, got {phi}")
    return Scaling(input_size=512 + 128 * phi, bifpn_width=round(64 * 1.35 ** phi, 1),
                   bifpn_depth=3 + phi, head_depth=3 + phi // 3)


def bifpn_nodes(min_level=3, max_level=7):
    """The fusion nodes of one BiFPN layer: a list of ``(level, inputs)``, where inputs are
    indices into the growing list of feature maps (0 … L−1 are the layer's inputs, P3…P7
    for levels 3…7; node k's output gets index L + k).

    Top-down, from the level below the top to the bottom: each node fuses the level's
    input with the (new) level above. Bottom-up, from the second level to the top: each
    node fuses *every* map of its level so far (the input and the top-down node: the
    paper's extra skip edge) with the new level below. For levels 3…7 that is Figure 2d's
    8 nodes:

    >>> [(level, inputs) for level, inputs in bifpn_nodes()]       # doctest: +NORMALIZE_WHITESPACE
    [(6, [3, 4]), (5, [2, 5]), (4, [1, 6]), (3, [0, 7]),
     (4, [1, 7, 8]), (5, [2, 6, 9]), (6, [3, 5, 10]), (7, [4, 11])]
    """
    maps_of = {level: [index] for index, level in enumerate(range(min_level, max_level + 1))}
    count = max_level - min_level + 1
    nodes = []
    for level in range(max_level - 1, min_level - 1, -1):           # top-down
        nodes.append((level, [maps_of[level][-1], maps_of[level + 1][-1]]))
        maps_of[level].append(count)
        count += 1
    for level in range(min_level + 1, max_level + 1):               # bottom-up
        nodes.append((level, maps_of[level] + [maps_of[level - 1][-1]]))
        maps_of[level].append(count)
        count += 1
    return nodes


# ----------------------------------------------------------------------------- modules
def batch_norm(channels, bn):
    """BatchNorm2d with the detector's ε and momentum (``bn`` holds bn_eps, bn_momentum)."""
    return nn.BatchNorm2d(channels, eps=bn["bn_eps"], momentum=bn["bn_momentum"])


class SeparableConv2d(nn.Module):
    """Depthwise k×k (groups = channels, no bias) then pointwise 1×1 with a bias: the
    official code's ``SeparableConv2D`` (k·k·C_in + C_in·C_out + C_out parameters)."""

    def __init__(self, in_channels, out_channels, kernel_size=3):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size,
                                   padding=kernel_size // 2, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class Resample(nn.Sequential):
    """Bring a feature map to another pyramid level and width:

        1×1 conv (bias) + BN        when the widths differ
        3×3/2 SAME max pool         per level down (kernel 2^d + 1, stride 2^d for d levels)
        nearest-neighbour ×2        per level up (×2^d for d levels)

    The official order: the width changes first, then the resolution.
    """

    def __init__(self, in_channels, out_channels, from_level, to_level, bn):
        layers = OrderedDict()
        if in_channels != out_channels:
            layers["conv"] = nn.Conv2d(in_channels, out_channels, 1)
            layers["bn"] = batch_norm(out_channels, bn)
        steps = to_level - from_level
        if steps > 0:
            layers["down"] = nn.MaxPool2dSame(2 ** steps + 1, 2 ** steps)
        elif steps < 0:
            layers["up"] = nn.UpsamplingNearest2d(2 ** -steps)
        super().__init__(layers)


def resampler(in_channels, out_channels, from_level, to_level, bn):
    """``Resample``, or ``Identity`` for a map already at the node's level and width (it
    then stores nothing new, which ``summary``'s memory column knows of Identity)."""
    if in_channels == out_channels and from_level == to_level:
        return nn.Identity()
    return Resample(in_channels, out_channels, from_level, to_level, bn)


class FastNormalizedFusion(nn.Module):
    """O = Σᵢ wᵢ·Iᵢ / (ε + Σⱼ wⱼ), wᵢ = ReLU(weightᵢ) (equation 2, ε = 10⁻⁴).

    The ReLU keeps every weight ≥ 0, so each normalised weight lies in [0, 1] like a
    softmax's, without the softmax's exponentials (the paper measures 30% faster on GPU).
    The weights start at 1: a plain average.
    """

    def __init__(self, num_inputs, eps=FUSION_EPS):
        super().__init__()
        self.weight = nn.Parameter(np.ones(num_inputs, np.float32))
        self.eps = eps

    def forward(self, *inputs):
        if len(inputs) != self.weight.shape[0]:
            raise ValueError(f"FastNormalizedFusion: built for {self.weight.shape[0]} inputs, "
                             f"got {len(inputs)}")
        weights = F.relu(self.weight)
        weights = weights / (weights.sum() + self.eps)
        fused = inputs[0] * weights[0]
        for i in range(1, len(inputs)):
            fused = fused + inputs[i] * weights[i]
        return fused

    def count_flops(self, input_shape, output_shape):
        """Per output element: one multiply per input and one add per extra input."""
        elements = int(np.prod(output_shape[1:]))
        count = self.weight.shape[0]
        return {"other": count * elements, "add": (count - 1) * elements}

    def extra_repr(self):
        return f"inputs={self.weight.shape[0]}, eps={self.eps}"


class SumFusion(nn.Module):
    """O = Σᵢ Iᵢ: the unweighted fusion of D6, D7 and D7x."""

    def __init__(self, num_inputs):
        super().__init__()
        self.num_inputs = num_inputs

    def forward(self, *inputs):
        fused = inputs[0]
        for x in inputs[1:]:
            fused = fused + x
        return fused

    def count_flops(self, input_shape, output_shape):
        return {"add": (self.num_inputs - 1) * int(np.prod(output_shape[1:]))}

    def extra_repr(self):
        return f"inputs={self.num_inputs}"


class FusionNode(nn.Module):
    """One node of a BiFPN layer: resample each input to this node's level and width,
    fuse, then swish → separable 3×3 conv → BN."""

    def __init__(self, level, input_levels, input_channels, width, fusion, bn):
        super().__init__()
        self.level = level
        self.resample = nn.ModuleList([resampler(channels, width, source, level, bn)
                                       for source, channels in zip(input_levels,
                                                                   input_channels)])
        self.fuse = (FastNormalizedFusion if fusion == "fast" else SumFusion)(
            len(input_levels))
        self.act = nn.SiLU()
        self.conv = SeparableConv2d(width, width)
        self.bn = batch_norm(width, bn)

    def forward(self, *inputs):
        fused = self.fuse(*[resample(x) for resample, x in zip(self.resample, inputs)])
        return self.bn(self.conv(self.act(fused)))


class BiFPNLayer(nn.Module):
    """One bidirectional layer: the nodes of ``bifpn_nodes`` run in order, each appending
    its output to the list of maps; the layer's output at each level is the last map made
    at that level (P3's top-down node, the bottom-up nodes for P4…P7)."""

    def __init__(self, in_channels, width, min_level, max_level, fusion, bn):
        super().__init__()
        levels = list(range(min_level, max_level + 1))
        level_of, channels_of = list(levels), list(in_channels)
        self.graph = bifpn_nodes(min_level, max_level)
        nodes = []
        for level, inputs in self.graph:
            nodes.append(FusionNode(level, [level_of[i] for i in inputs],
                                    [channels_of[i] for i in inputs], width, fusion, bn))
            level_of.append(level)
            channels_of.append(width)
        self.nodes = nn.ModuleList(nodes)
        self.outputs = [max(i for i, lv in enumerate(level_of) if lv == level)
                        for level in levels]

    def forward(self, features):
        maps = list(features)
        for node, (_, inputs) in zip(self.nodes, self.graph):
            maps.append(node(*[maps[i] for i in inputs]))
        return [maps[i] for i in self.outputs]


class HeadNet(nn.Module):
    """The class or box network: ``depth`` × (separable conv → BN → swish), then a
    separable prediction conv to A·outputs channels. The convolutions are shared by every
    level; the batch norms are per level (``norms[repeat][level]``): the levels' statistics
    differ, their filters need not."""

    def __init__(self, width, outputs_per_anchor, depth, num_levels, bn,
                 num_anchors=NUM_ANCHORS):
        super().__init__()
        self.convs = nn.ModuleList([SeparableConv2d(width, width) for _ in range(depth)])
        self.norms = nn.ModuleList([nn.ModuleList([batch_norm(width, bn)
                                                   for _ in range(num_levels)])
                                    for _ in range(depth)])
        self.act = nn.SiLU()
        self.predict = SeparableConv2d(width, num_anchors * outputs_per_anchor)

    def forward(self, features):
        outputs = []
        for level, x in enumerate(features):
            for conv, norms in zip(self.convs, self.norms):
                x = self.act(norms[level](conv(x)))
            outputs.append(self.predict(x))
        return outputs


class EfficientDet(nn.Module):
    """Backbone → extra levels (P6, P7) → D_bifpn BiFPN layers → class and box networks.

    ``config`` is a ``Config`` row of ``TABLE_1``; ``forward`` returns
    ``(class_outputs, box_outputs)`` (see the module docstring for the layout).
    """

    def __init__(self, config, num_classes=90, in_channels=3, num_anchors=NUM_ANCHORS,
                 bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM, drop_path_rate=0.2):
        super().__init__()
        if not 1 <= config.min_level <= 5 or config.max_level < config.min_level:
            raise ValueError(f"EfficientDet: levels must satisfy 1 <= min_level <= 5 and "
                             f"max_level >= min_level, got min_level={config.min_level}, "
                             f"max_level={config.max_level}")
        if config.fusion not in ("fast", "sum"):
            raise ValueError(f"EfficientDet: fusion must be 'fast' (fast normalised fusion) "
                             f"or 'sum', got {config.fusion!r}")
        if num_classes < 1:
            raise ValueError(f"EfficientDet: num_classes must be >= 1, got {num_classes}")
        self.config, self.num_classes, self.num_anchors = config, num_classes, num_anchors
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        width_coefficient, depth_coefficient, _, _ = COEFFICIENTS[config.backbone]
        self.backbone = build_efficientnet(width_coefficient, depth_coefficient, 0.0,
                                           in_channels=in_channels, include_top=False,
                                           drop_path_rate=drop_path_rate, **bn)
        self.levels = list(range(config.min_level, config.max_level + 1))
        backbone_levels = [lv for lv in self.levels if lv <= 5]
        self.backbone_stages = self.backbone.pyramid_stages(
            [BACKBONE_STRIDES[lv] for lv in backbone_levels])
        channels = [self.backbone.stage_channels[name] for name in self.backbone_stages]

        # Levels above the backbone's: the first resamples the top backbone map (1×1 conv
        # + BN to the BiFPN width, then pool), each further one pools the one below.
        extra = []
        for level in self.levels[len(backbone_levels):]:
            extra.append(Resample(channels[-1], config.bifpn_width, level - 1, level, bn))
            channels.append(config.bifpn_width)
        self.extra_levels = nn.ModuleList(extra)

        layers = []
        for _ in range(config.bifpn_depth):
            layers.append(BiFPNLayer(channels, config.bifpn_width, config.min_level,
                                     config.max_level, config.fusion, bn))
            channels = [config.bifpn_width] * len(self.levels)
        self.bifpn = nn.ModuleList(layers)

        self.class_net = HeadNet(config.bifpn_width, num_classes, config.head_depth,
                                 len(self.levels), bn, num_anchors)
        self.box_net = HeadNet(config.bifpn_width, 4, config.head_depth, len(self.levels),
                               bn, num_anchors)
        self._initialise()

    @property
    def stride(self):
        """The coarsest level's stride, 2^max_level: the input side must be a multiple."""
        return 2 ** self.config.max_level

    def _initialise(self):
        """The backbone keeps EfficientNet's initialisation. BiFPN convolutions: Glorot
        uniform (TensorFlow's default); class/box networks: LeCun normal (TensorFlow's
        variance_scaling()); biases 0, except the class prediction's −log((1 − π)/π)."""
        for network, init in ((self.extra_levels, nn.init.xavier_uniform_),
                              (self.bifpn, nn.init.xavier_uniform_),
                              (self.class_net, nn.init.lecun_normal_),
                              (self.box_net, nn.init.lecun_normal_)):
            for module in network.modules():
                if isinstance(module, nn.Conv2d):
                    init(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
        prior = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        nn.init.constant_(self.class_net.predict.pointwise.bias, prior)

    def check_input(self, x):
        """A clear error for an image the pyramid cannot take (see the module docstring)."""
        if x.ndim != 4:
            raise ValueError(f"EfficientDet: expected a 4-D (N, C, H, W) input, got shape "
                             f"{x.shape}")
        height, width = x.shape[2], x.shape[3]
        if height < self.stride or width < self.stride or height % self.stride \
                or width % self.stride:
            raise ValueError(
                f"EfficientDet: the input's height and width must be multiples of "
                f"{self.stride} (the stride of its coarsest level P{self.config.max_level}), "
                f"so the minimum is {self.stride}×{self.stride}; got {height}×{width}")

    def backbone_features(self, x):
        """The backbone's maps at the pyramid's levels up to P5 (finest first)."""
        self.check_input(x)
        return self.backbone.feature_pyramid(
            x, [BACKBONE_STRIDES[lv] for lv in self.levels if lv <= 5])

    def add_levels(self, features):
        """P6, P7 (… up to max_level) on top of the backbone's maps."""
        features = list(features)
        for resample in self.extra_levels:
            features.append(resample(features[-1]))
        return features

    def fuse(self, features):
        """The D_bifpn BiFPN layers, one after another."""
        for layer in self.bifpn:
            features = layer(features)
        return features

    def forward(self, x):
        features = self.fuse(self.add_levels(self.backbone_features(x)))
        return self.class_net(features), self.box_net(features)


# ----------------------------------------------------------------------------- outputs
def flatten_predictions(class_outputs, box_outputs, num_classes):
    """``model(x)`` -> (class logits (N, anchors, K), box offsets (N, anchors, 4)), anchors
    level-major, then y, x, then anchor (octave scale-major, then aspect ratio)."""
    return (flatten_level_outputs(class_outputs, num_classes),
            flatten_level_outputs(box_outputs, 4))


def anchor_order(levels, image_size, num_anchors=NUM_ANCHORS):
    """(level, y, x, anchor) of every row of ``flatten_predictions``' outputs, as an
    (anchors, 4) int array: the order the anchor generator must follow."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    rows = []
    for level in levels:
        ys, xs, anchors = np.meshgrid(np.arange(height >> level), np.arange(width >> level),
                                      np.arange(num_anchors), indexing="ij")
        rows.append(np.stack([np.full(ys.size, level), ys.ravel(), xs.ravel(),
                              anchors.ravel()], axis=1))
    return np.concatenate(rows)


# ----------------------------------------------------------------------------- named models
def build_efficientdet(phi, num_classes=90, in_channels=3, **options):
    """EfficientDet-``phi`` (a key of ``TABLE_1``: "d0" … "d7x"). ``options`` may replace any ``Config``
    field (``max_level=5`` for small images, ``bifpn_width=16`` for a tiny test model) or
    set ``num_anchors``, ``bn_eps``, ``bn_momentum``, ``drop_path_rate``."""
    fields = {key: options.pop(key) for key in list(options) if key in Config._fields}
    config = TABLE_1[phi]._replace(**fields)
    return EfficientDet(config, num_classes, in_channels, **options)


def _variant(name):
    config = TABLE_1[name]
    return register_variant(
        f"efficientdet_{name}", build_efficientdet, config.input_size, 3, 90,
        f"EfficientDet-{name.upper()}: EfficientNet-{config.backbone.upper()} backbone, "
        f"BiFPN {config.bifpn_depth} × {config.bifpn_width} channels, class/box depth "
        f"{config.head_depth}, {config.input_size}×{config.input_size} input.",
        phi=name)


efficientdet_d0 = _variant("d0")
efficientdet_d1 = _variant("d1")
efficientdet_d2 = _variant("d2")
efficientdet_d3 = _variant("d3")
efficientdet_d4 = _variant("d4")
efficientdet_d5 = _variant("d5")
efficientdet_d6 = _variant("d6")
efficientdet_d7 = _variant("d7")
efficientdet_d7x = _variant("d7x")


CLI_DEFAULTS = {"variant": "efficientdet_d0"}

if __name__ == "__main__":   # a detector: the detection command, not the classifiers'
    from minicnn.detection.train import family_main
    family_main("efficientdet")
