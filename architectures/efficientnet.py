"""EfficientNet: Tan & Le (2019), "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks".

Two ideas:

1. **A baseline found by search**, EfficientNet-B0 (Table 1): a stack of **MBConv** blocks,
   MobileNetV2's inverted residual (1×1 expansion by t, k×k depthwise, linear 1×1
   projection, shortcut when shapes match) with a squeeze-and-excitation gate after the
   depthwise convolution and SiLU (swish) activations. "MBConv6, k5×5" is t = 6 with a
   5×5 depthwise kernel.
2. **Compound scaling** (§3.3, equation 3): grow depth d, width w and resolution r together,

       d = α^φ,   w = β^φ,   r = γ^φ,   with α·β²·γ² ≈ 2, α, β, γ ≥ 1,

   so that FLOPs (∝ d·w²·r²) grow by about 2^φ. A grid search at φ = 1 gave α = 1.2,
   β = 1.1, γ = 1.15 (``compound_scaling(phi)`` below computes the rule).

The released B1–B7 do *not* follow the rule exactly: their (width, depth, resolution,
dropout) coefficients were fixed by hand in the reference code, and this file uses those
(``COEFFICIENTS``). At φ = 1 the rule says depth 1.2, width 1.1, 258 px; B1 is 1.1 / 1.0 /
240 px. ``efficientnet_compound(phi)`` builds a model by the rule itself.

What this file builds
---------------------
efficientnet_b0 … efficientnet_b7, as the reference TensorFlow code and torchvision:

* widths scaled by w and rounded to multiples of 8 (``make_divisible``), repeats scaled by d
  and rounded **up**; the head convolution has 4 × (last stage width) channels (1280 in B0);
* the SE squeeze width is a quarter of the *block's input* channels (not of the expanded
  width): max(1, ⌊in_channels / 4⌋); its two 1×1 convolutions have biases, SiLU between,
  sigmoid gate;
* stochastic depth on the residual branches (``nn.DropPath``), its drop probability rising
  linearly over the blocks, 0.2·i/N for block i of N;
* batch norm ε = 10⁻³ and momentum 0.01 (TensorFlow's decay 0.99, in PyTorch's convention);
* dropout before the classifier; He normal (fan-out) convolutions, classifier weights
  U(−1/√classes, 1/√classes), zero biases.

Parameters at 1000 classes: B0 5,288,548, B1 7,794,184, B2 9,109,994, B3 12,233,232,
B4 19,341,616, B5 30,389,784, B6 43,040,704, B7 66,347,960.
"""
import math
from collections import OrderedDict, namedtuple

from minicnn import nn
from architectures import register_variant
from architectures.common import ConvBNAct, SqueezeExcitation, make_divisible

# ----------------------------------------------------------------------------- the tables
# Table 1, "EfficientNet-B0 baseline network". Stage 1 (Conv3x3, 32 channels) is the stem
# and stage 9 (Conv1x1 & Pooling & FC, 1280) the head; the stages between are:
STEM_CHANNELS = 32
B0_STAGES = [
    # t, kernel, stride, in, out, repeats      stage  operator        resolution (input)
    (1, 3, 1, 32, 16, 1),                      # 2    MBConv1, k3×3   112×112
    (6, 3, 2, 16, 24, 2),                      # 3    MBConv6, k3×3   112×112
    (6, 5, 2, 24, 40, 2),                      # 4    MBConv6, k5×5   56×56
    (6, 3, 2, 40, 80, 3),                      # 5    MBConv6, k3×3   28×28
    (6, 5, 1, 80, 112, 3),                     # 6    MBConv6, k5×5   14×14
    (6, 5, 2, 112, 192, 4),                    # 7    MBConv6, k5×5   14×14
    (6, 3, 1, 192, 320, 1),                    # 8    MBConv6, k3×3   7×7
]

# The released models' coefficients: (width, depth, resolution, dropout).
COEFFICIENTS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}

BN_EPS, BN_MOMENTUM = 1e-3, 0.01
DROP_PATH_RATE = 0.2
SE_RATIO = 0.25

Scaling = namedtuple("Scaling", "depth width resolution")

# One row of a network table, widths and repeats already scaled.
Stage = namedtuple("Stage", "block expand_ratio kernel stride in_channels out_channels repeats")


def compound_scaling(phi, alpha=1.2, beta=1.1, gamma=1.15, base_resolution=224):
    """The paper's compound scaling rule (equation 3): depth α^φ, width β^φ, resolution
    γ^φ × the base resolution (rounded to a pixel).

    >>> compound_scaling(1)
    Scaling(depth=1.2, width=1.1, resolution=258)

    FLOPs scale as depth · width² · resolution² = (α·β²·γ²)^φ ≈ 2^φ. The released B1–B7
    use hand-set coefficients instead (``COEFFICIENTS``), e.g. B1 = (1.0, 1.1, 240).
    """
    if phi < 0:
        raise ValueError(f"compound_scaling: phi must be >= 0, got {phi}")
    return Scaling(depth=alpha ** phi, width=beta ** phi,
                   resolution=round(base_resolution * gamma ** phi))


def scale_width(channels, width):
    """w·channels rounded to a multiple of 8 (never losing more than 10%)."""
    return make_divisible(channels * width, 8)


def scale_depth(repeats, depth):
    """d·repeats rounded up, so every stage keeps at least its B0 depth."""
    return int(math.ceil(repeats * depth))


# ----------------------------------------------------------------------------- modules
class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (MnasNet's block, used by
    EfficientNet and EfficientNetV2):

        1×1 expand to t·C_in → BN → SiLU        (skipped when t = 1)
        k×k depthwise, stride s → BN → SiLU
        SE: squeeze to max(1, ⌊C_in·se_ratio⌋), SiLU, excite, sigmoid gate
        1×1 project to C_out → BN               (linear)
        + x (after stochastic depth)            when s = 1 and C_in = C_out
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio,
                 se_ratio=SE_RATIO, drop_path=0.0, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MBConv: stride must be 1 or 2, got {stride}")
        hidden = make_divisible(in_channels * expand_ratio, 8) if expand_ratio != 1 else in_channels
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        layers = OrderedDict()
        if hidden != in_channels:
            layers["expand"] = ConvBNAct(in_channels, hidden, 1, activation=nn.SiLU, **bn)
        layers["depthwise"] = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden,
                                        activation=nn.SiLU, **bn)
        if se_ratio:
            layers["se"] = SqueezeExcitation(hidden, max(1, int(in_channels * se_ratio)),
                                             activation=nn.SiLU)
        layers["project"] = ConvBNAct(hidden, out_channels, 1, activation=None, **bn)
        self.block = nn.Sequential(layers)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = nn.DropPath(drop_path) if self.use_residual and drop_path > 0 \
            else nn.Identity()

    def forward(self, x):
        y = self.block(x)
        return x + self.drop_path(y) if self.use_residual else y


class EfficientNet(nn.Module):
    """Stem, stages of blocks, 1×1 head convolution, global pool, dropout, FC.

    ``stages`` is a list of ``Stage`` rows (block class, t, kernel, stride, in, out, repeats)
    with widths and repeats already scaled; the first row's ``in`` is the stem width. The drop-path
    probability of block i (counting over all stages, from 0) is ``drop_path_rate·i/N``.
    EfficientNetV2 reuses this class with its own table (Fused-MBConv blocks early).

    ``include_top=False`` builds the stem and stages only (no head convolution, pooling or
    classifier): a backbone whose ``feature_pyramid(x)`` gives the feature maps a detector
    reads (EfficientDet), with the parameters its reference implementation counts.
    """

    def __init__(self, stages, head_channels, dropout, num_classes=1000, in_channels=3,
                 drop_path_rate=DROP_PATH_RATE, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM,
                 include_top=True):
        super().__init__()
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        layers = OrderedDict(stem=ConvBNAct(in_channels, stages[0].in_channels, 3, 2,
                                            activation=nn.SiLU, **bn))
        # Where each part of ``features`` leaves the image: its output stride and width.
        self.stage_strides, self.stage_channels = {"stem": 2}, {"stem": stages[0].in_channels}
        total_blocks = sum(row.repeats for row in stages)
        block_index = 0
        for number, row in enumerate(stages, start=1):
            blocks = []
            for repeat in range(row.repeats):
                # Only the first block of a stage changes width and resolution.
                first = repeat == 0
                rate = drop_path_rate * block_index / total_blocks
                blocks.append(row.block(row.in_channels if first else row.out_channels,
                                        row.out_channels, row.kernel, row.stride if first else 1,
                                        row.expand_ratio, drop_path=rate, **bn))
                block_index += 1
            layers[f"stage{number}"] = nn.Sequential(*blocks)
            previous = next(reversed(self.stage_strides.values()))
            self.stage_strides[f"stage{number}"] = previous * row.stride
            self.stage_channels[f"stage{number}"] = row.out_channels
        self.include_top = include_top
        if include_top:
            layers["head"] = ConvBNAct(stages[-1].out_channels, head_channels, 1,
                                       activation=nn.SiLU, **bn)
        self.features = nn.Sequential(layers)
        if include_top:
            self.pool = nn.GlobalAvgPool2d()
            self.flatten = nn.Flatten()
            self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.classifier = nn.Linear(head_channels, num_classes)
        self._initialise()

    def pyramid_stages(self, strides=(8, 16, 32)):
        """For each output stride, the name of the *last* part of ``features`` at it: the
        deepest map of that resolution (B0: stage3, stage5, stage7 at 8, 16, 32)."""
        last = {}
        for name, stride in self.stage_strides.items():
            last[stride] = name
        missing = [s for s in strides if s not in last]
        if missing:
            raise ValueError(f"EfficientNet has no feature map at stride(s) {missing}; its "
                             f"strides are {sorted(last)}")
        return [last[s] for s in strides]

    def feature_pyramid(self, x, strides=(8, 16, 32)):
        """The last feature map at each of ``strides`` (P3, P4, P5 of a detector for the
        default 8, 16, 32), running the stem and stages only as far as needed."""
        wanted = self.pyramid_stages(strides)
        found = {}
        for name, part in self.features.named_children():
            if name not in self.stage_strides:
                break                                   # the head is not a pyramid level
            x = part(x)
            if name in wanted:
                found[name] = x
                if len(found) == len(set(wanted)):
                    break
        return [found[name] for name in wanted]

    def _initialise(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        if not self.include_top:
            return self.features(x)
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(x)))))


def efficientnet_stages(width, depth):
    """Table 1 scaled by (width, depth): rows ready for ``EfficientNet``."""
    return [Stage(MBConv, t, kernel, stride, scale_width(c_in, width),
                  scale_width(c_out, width), scale_depth(repeats, depth))
            for t, kernel, stride, c_in, c_out, repeats in B0_STAGES]


def build_efficientnet(width, depth, dropout, num_classes=1000, in_channels=3, **options):
    """EfficientNet-B0 scaled by any (width, depth); head = 4 × the last stage's width."""
    stages = efficientnet_stages(width, depth)
    return EfficientNet(stages, 4 * stages[-1].out_channels, dropout, num_classes, in_channels,
                        **options)


def efficientnet_compound(phi, num_classes=1000, in_channels=3, dropout=0.2, **options):
    """B0 grown by the paper's compound rule at coefficient φ (not a released model).

    Returns ``(model, resolution)``: the rule also fixes the input size.
    """
    scaling = compound_scaling(phi)
    model = build_efficientnet(scaling.width, scaling.depth, dropout, num_classes,
                               in_channels, **options)
    return model, scaling.resolution


# ----------------------------------------------------------------------------- named models
def _variant(name):
    width, depth, resolution, dropout = COEFFICIENTS[name]
    return register_variant(
        f"efficientnet_{name}", build_efficientnet, resolution, 3, 1000,
        f"EfficientNet-{name.upper()}: width {width}, depth {depth}, "
        f"{resolution}×{resolution} input, dropout {dropout}.",
        width=width, depth=depth, dropout=dropout)


efficientnet_b0 = _variant("b0")
efficientnet_b1 = _variant("b1")
efficientnet_b2 = _variant("b2")
efficientnet_b3 = _variant("b3")
efficientnet_b4 = _variant("b4")
efficientnet_b5 = _variant("b5")
efficientnet_b6 = _variant("b6")
efficientnet_b7 = _variant("b7")


CLI_DEFAULTS = {"variant": "efficientnet_b0", "input_size": 32, "optimizer": "adam",
                "lr": 3e-3, "batch_size": 64, "epochs": 1}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
