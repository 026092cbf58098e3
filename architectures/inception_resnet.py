"""Inception-ResNet-v1 and -v2: Szegedy, Ioffe, Vanhoucke & Alemi (2016), "Inception-v4,
Inception-ResNet and the Impact of Residual Connections on Learning" (AAAI 2017).

The idea (§3.2): give each Inception module a residual connection. A module computes a
few cheap branches, concatenates them, and a 1×1 convolution *without activation*
("1×1 Conv, Linear" in the figures) brings the result back to the input's width so it
can be added to the input:

    y = ReLU(x + s · (W_up ∗ concat(branches(x)) + b_up))

Two rules of the paper are visible in that line:

* **residual scaling** (§3.3): with more than about 1000 filters the residuals made
  training "die" early; scaling them by s between 0.1 and 0.3 before the addition
  stabilizes it. Here s = 0.17 (A), 0.10 (B), 0.20 (C), TF-slim's values.
* **no batch norm on the summations** (§3.2): batch norm sits on top of the ordinary
  convolutions only, so the 1×1 up-projection keeps its bias and nothing normalizes the
  sum — that saved enough memory to fit more blocks on a GPU.

What this file builds
---------------------
Figure 15 is the schema of both versions: stem, 5 × Inception-ResNet-A, Reduction-A,
10 × Inception-ResNet-B, Reduction-B, 5 × Inception-ResNet-C, average pooling, dropout
(keep 0.8), softmax.

``inception_resnet_v1`` — the paper's v1, 5/10/5 blocks (Figures 14, 10, 7, 11, 12, 13;
Table 1's Reduction-A k, l, m, n = 192, 192, 256, 384): 35²×256 → 17²×896 → 8²×1792.
22,756,328 parameters.

``inception_resnet_v2`` — the reference build of TF-slim (and of the widely used PyTorch
port of its weights): 55,843,464 parameters. It departs from the paper's v2:

* 10/20/10 blocks of types A/B/C instead of Figure 15's 5/10/5;
* its stem is Inception-v3's (to 35²×192) plus one 35×35 Inception-v3 module
  ("Mixed_5b": 96 + 64 + 96 + 64 = 320), not Inception-v4's stem (Figure 3, 384);
* the blocks are 320, 1088 and 2080 wide, and a final 1×1 convolution to 1536 (BN, ReLU)
  precedes the pooling; the last C block has no ReLU (and no scaling: s = 1), since that
  convolution follows.
``blocks=(5, 10, 5)`` builds this reference with the paper's block counts (33,782,664).

``inception_resnet_v2_paper`` — v2 as the paper draws it: Inception-v4's stem (Figure 3),
Inception-ResNet-A/B/C of Figures 16, 17, 19, Reduction-A with k, l, m, n = 256, 256, 384,
384 and Reduction-B of Figure 18, 5/10/5 blocks. The figures' 1×1 up-projections say 1154
(B) and 2048 (C) filters, but a residual must match its input, which the stem and the
reductions make 384 → 1152 → 2144 wide (the figures' arithmetic does not close); the
up-projections here have those widths. 32,433,928 parameters.

Details
-------
* Every ordinary convolution is Conv (no bias) → BatchNorm (ε = 0.001) → ReLU; the
  up-projections are plain convolutions with bias.
* Weights start Glorot (Xavier) uniform with zero biases, TF-slim's defaults here.
* Minimum input **75×75** for all three builds (the stem's three valid stride-2 stages
  and the two reductions: 75 → 37 → 35 → 17 → 15 → 7 → 3 → 1); published size 299×299.
"""
from collections import OrderedDict

from minicnn import functional as F, nn
from architectures import register
from architectures.inception_v3 import (REFERENCE_STEM, InceptionA as MixedA, build_stem, chain,
                                        conv_bn)
from architectures.inception_v4 import STEM as V4_STEM, REDUCTION_A, ReductionA, Stem as V4Stem

# ----------------------------------------------------------------------------- the tables
# Figure 14, the stem of Inception-ResNet-v1: ("conv", out, kernel, stride, padding) or
# ("maxpool", kernel, stride), 299² → 35²×256.
V1_STEM = [
    ("conv", 32, 3, 2, 0),       # 3×3 Conv 32 stride 2 V       → 149²×32
    ("conv", 32, 3, 1, 0),       # 3×3 Conv 32 V                → 147²×32
    ("conv", 64, 3, 1, 1),       # 3×3 Conv 64                  → 147²×64
    ("maxpool", 3, 2),           # 3×3 MaxPool stride 2 V       → 73²×64
    ("conv", 80, 1, 1, 0),       # 1×1 Conv 80                  → 73²×80
    ("conv", 192, 3, 1, 0),      # 3×3 Conv 192 V               → 71²×192
    ("conv", 256, 3, 2, 0),      # 3×3 Conv 256 stride 2 V      → 35²×256
]

# TF-slim's Inception-ResNet-v2 stem ends with one Inception-v3 35×35 module (Mixed_5b).
V2_REFERENCE_MIXED_5B = dict(branch1x1=96, branch5x5=(48, 64), branch3x3dbl=(64, 96, 96),
                             pool_proj=64)

# The blocks after the stem, one row per stage: (name, block, repeats, widths).
#   A   branch1x1, (reduce, 3×3), (reduce, 3×3, 3×3)
#   B   branch1x1, (reduce, 1×7, 7×1)
#   C   branch1x1, (reduce, 1×3, 3×1)
#   Reduction-B   (reduce, 3×3/2), (reduce, 3×3/2), (reduce, 3×3, 3×3/2) + max-pool
SCALES = {"A": 0.17, "B": 0.10, "C": 0.20}

V1_BLOCKS = [
    ("block35", "A", 5, dict(branch1x1=32, branch3x3=(32, 32),                # Figure 10
                             branch3x3dbl=(32, 32, 32))),
    ("reduction_a", "ReductionA",                                              # Figure 7
     1, dict(zip("klmn", REDUCTION_A["inception_resnet_v1"]))),
    ("block17", "B", 10, dict(branch1x1=128, branch7x7=(128, 128, 128))),     # Figure 11
    ("reduction_b", "ReductionB", 1, dict(branch_a=(256, 384), branch_b=(256, 256),
                                          branch_c=(256, 256, 256))),         # Figure 12
    ("block8", "C", 5, dict(branch1x1=192, branch3x3=(192, 192, 192))),       # Figure 13
]

_V2_A = dict(branch1x1=32, branch3x3=(32, 32), branch3x3dbl=(32, 48, 64))       # Figure 16
_V2_B = dict(branch1x1=192, branch7x7=(128, 160, 192))                          # Figure 17
_V2_C = dict(branch1x1=192, branch3x3=(192, 224, 256))                          # Figure 19
_V2_REDUCTION_A = dict(zip("klmn", REDUCTION_A["inception_resnet_v2"]))         # Figure 7
_V2_REDUCTION_B = dict(branch_a=(256, 384), branch_b=(256, 288),                # Figure 18
                       branch_c=(256, 288, 320))


def v2_blocks(a, b, c, reference=True):
    """Inception-ResNet-v2's stages with ``a``/``b``/``c`` blocks of type A/B/C.

    The reference build ends with an unscaled C block without ReLU and a 1×1 convolution
    to 1536 (BN, ReLU); the paper's ends with its last ordinary C block.
    """
    rows = [("block35", "A", a, _V2_A), ("reduction_a", "ReductionA", 1, _V2_REDUCTION_A),
            ("block17", "B", b, _V2_B), ("reduction_b", "ReductionB", 1, _V2_REDUCTION_B)]
    if not reference:
        return rows + [("block8", "C", c, _V2_C)]
    return rows + [("block8", "C", c - 1, _V2_C),
                   ("block8_last", "C", 1, dict(_V2_C, scale=1.0, activation=False)),
                   ("conv_7b", "Conv1x1", 1, dict(out_channels=1536))]


# ----------------------------------------------------------------------------- modules
class ScaledResidual(nn.Module):
    """The merge that ends every residual Inception block (the "+" of Figures 10–13 and
    16, 17, 19):

        y = act(x + s · (W ∗ mixed + b))

    W is the 1×1 "Linear" convolution from the concatenated branches back to the block's
    width: it has a bias and no batch norm, and nothing normalizes the sum.
    """

    def __init__(self, mixed_channels, channels, scale, activation=True):
        super().__init__()
        self.up = nn.Conv2d(mixed_channels, channels, 1, bias=True)
        self.scale = scale
        self.activation = nn.ReLU() if activation else nn.Identity()

    def forward(self, x, mixed):
        return self.activation(x + self.up(mixed) * self.scale)

    def extra_repr(self):
        return f"scale={self.scale}"


class InceptionResNetA(nn.Module):
    """The 35×35 residual block (Figure 10 for v1, Figure 16 for v2):

        1×1                                      ┐
        1×1 reduce → 3×3                         ├ concat → 1×1 Linear → ·s → + x → ReLU
        1×1 reduce → 3×3 → 3×3                   ┘
    """

    def __init__(self, channels, branch1x1, branch3x3, branch3x3dbl, scale=SCALES["A"],
                 activation=True):
        super().__init__()
        self.branch1x1 = conv_bn(channels, branch1x1, 1)
        self.branch3x3 = chain(channels, branch3x3, (1, 3))
        self.branch3x3dbl = chain(channels, branch3x3dbl, (1, 3, 3))
        mixed = branch1x1 + branch3x3[-1] + branch3x3dbl[-1]
        self.residual = ScaledResidual(mixed, channels, scale, activation)
        self.out_channels = channels

    def forward(self, x):
        mixed = F.concat([self.branch1x1(x), self.branch3x3(x), self.branch3x3dbl(x)], axis=1)
        return self.residual(x, mixed)


class InceptionResNetB(nn.Module):
    """The 17×17 residual block (Figure 11 for v1, Figure 17 for v2):

        1×1                                      ┐
        1×1 reduce → 1×7 → 7×1                   ┘ concat → 1×1 Linear → ·s → + x → ReLU
    """

    def __init__(self, channels, branch1x1, branch7x7, scale=SCALES["B"], activation=True,
                 n=7):
        super().__init__()
        self.branch1x1 = conv_bn(channels, branch1x1, 1)
        self.branch7x7 = chain(channels, branch7x7, (1, (1, n), (n, 1)))
        self.residual = ScaledResidual(branch1x1 + branch7x7[-1], channels, scale, activation)
        self.out_channels = channels

    def forward(self, x):
        mixed = F.concat([self.branch1x1(x), self.branch7x7(x)], axis=1)
        return self.residual(x, mixed)


class InceptionResNetC(nn.Module):
    """The 8×8 residual block (Figure 13 for v1, Figure 19 for v2):

        1×1                                      ┐
        1×1 reduce → 1×3 → 3×1                   ┘ concat → 1×1 Linear → ·s → + x → ReLU
    """

    def __init__(self, channels, branch1x1, branch3x3, scale=SCALES["C"], activation=True):
        super().__init__()
        self.branch1x1 = conv_bn(channels, branch1x1, 1)
        self.branch3x3 = chain(channels, branch3x3, (1, (1, 3), (3, 1)))
        self.residual = ScaledResidual(branch1x1 + branch3x3[-1], channels, scale, activation)
        self.out_channels = channels

    def forward(self, x):
        mixed = F.concat([self.branch1x1(x), self.branch3x3(x)], axis=1)
        return self.residual(x, mixed)


class ReductionB(nn.Module):
    """17×17 → 8×8 for Inception-ResNet (Figure 12 for v1, Figure 18 for v2):

        1×1 reduce → 3×3/2 V                     → branch_a[1]
        1×1 reduce → 3×3/2 V                     → branch_b[1]
        1×1 reduce → 3×3 → 3×3/2 V               → branch_c[2]
        3×3/2 V max pool (pass-through)          → in_channels

    v1: 384 + 256 + 256 + 896 = 1792;  v2 reference: 384 + 288 + 320 + 1088 = 2080.
    """

    def __init__(self, in_channels, branch_a, branch_b, branch_c):
        super().__init__()
        self.branch_a = chain(in_channels, branch_a, (1, 3), strides=(1, 2))
        self.branch_b = chain(in_channels, branch_b, (1, 3), strides=(1, 2))
        self.branch_c = chain(in_channels, branch_c, (1, 3, 3), strides=(1, 1, 2))
        self.branch_pool = nn.MaxPool2d(3, stride=2)
        self.out_channels = branch_a[-1] + branch_b[-1] + branch_c[-1] + in_channels

    def forward(self, x):
        return F.concat([self.branch_a(x), self.branch_b(x), self.branch_c(x),
                         self.branch_pool(x)], axis=1)


class Conv1x1(nn.Sequential):
    """The reference v2's last 1×1 convolution (BN, ReLU), as a stage of the table."""

    def __init__(self, in_channels, out_channels):
        super().__init__(*conv_bn(in_channels, out_channels, 1))
        self.out_channels = out_channels


BLOCKS = {"A": InceptionResNetA, "B": InceptionResNetB, "C": InceptionResNetC,
          "ReductionA": ReductionA, "ReductionB": ReductionB, "Conv1x1": Conv1x1}


# ----------------------------------------------------------------------------- stems
def v1_stem(in_channels):
    """Figure 14: (stem, 256)."""
    return build_stem(V1_STEM, in_channels)


def v2_reference_stem(in_channels):
    """TF-slim: Inception-v3's stem to 35²×192, then Inception-v3's 35×35 module → 320."""
    stem, channels = build_stem(REFERENCE_STEM, in_channels)
    stem.add_module("mixed_5b", MixedA(channels, **V2_REFERENCE_MIXED_5B))
    return stem, stem.mixed_5b.out_channels


def v2_paper_stem(in_channels):
    """Figure 3 (shared with Inception-v4): (stem, 384)."""
    stem = V4Stem(in_channels, **V4_STEM)
    return stem, stem.out_channels


# ----------------------------------------------------------------------------- the network
class InceptionResNet(nn.Module):
    """Figure 15: stem → A blocks → Reduction-A → B blocks → Reduction-B → C blocks →
    average pool → dropout (keep 0.8) → FC."""

    def __init__(self, stem, stages, num_classes=1000, in_channels=3, dropout=0.2):
        super().__init__()
        stem_module, channels = stem(in_channels)
        layers = OrderedDict(stem=stem_module)
        for name, block, repeats, widths in stages:
            stage = []
            for _ in range(repeats):
                stage.append(BLOCKS[block](channels, **widths))
                channels = stage[-1].out_channels
            if repeats:
                layers[name] = stage[0] if repeats == 1 else nn.Sequential(*stage)
        self.features = nn.Sequential(layers)
        self.pool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)
        self._initialise()

    def _initialise(self):
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))


# ----------------------------------------------------------------------------- named models
@register("inception_resnet_v1", input_size=299)
def inception_resnet_v1(num_classes=1000, in_channels=3, **options):
    """Inception-ResNet-v1 as the paper (Figures 14, 10–13, 15): 22,756,328 parameters."""
    return InceptionResNet(v1_stem, V1_BLOCKS, num_classes, in_channels, **options)


@register("inception_resnet_v2", input_size=299)
def inception_resnet_v2(num_classes=1000, in_channels=3, blocks=(10, 20, 10), **options):
    """Inception-ResNet-v2, TF-slim's reference build (10/20/10 blocks): 55,843,464.

    ``blocks=(5, 10, 5)`` gives the paper's block counts on the reference's layers.
    """
    a, b, c = blocks
    if min(blocks) < 1:
        raise ValueError(f"inception_resnet_v2: blocks must be three counts ≥ 1 (A, B, C), "
                         f"got {blocks!r}")
    return InceptionResNet(v2_reference_stem, v2_blocks(a, b, c), num_classes, in_channels,
                           **options)


@register("inception_resnet_v2_paper", input_size=299)
def inception_resnet_v2_paper(num_classes=1000, in_channels=3, **options):
    """Inception-ResNet-v2 as the paper draws it (v4 stem, Figures 16–19, 5/10/5): 32,433,928."""
    return InceptionResNet(v2_paper_stem, v2_blocks(5, 10, 5, reference=False), num_classes,
                           in_channels, **options)


# The paper's recipe (§4) is the default: RMSProp in TensorFlow's form (decay 0.9, ε = 1.0,
# momentum 0.9), learning rate 0.045 decayed ×0.94 every two epochs, label smoothing 0.1
# as Inception-v3, on the smallest input the network takes (75). That learning rate was
# tuned for many replicas; short MNIST runs on one CPU use Adam.
CLI_DEFAULTS = {
    "variant": "inception_resnet_v1", "input_size": 75, "epochs": 10, "batch_size": 32,
    "optimizer": "rmsprop", "lr": 0.045, "momentum": 0.9, "schedule": "decay:2:0.94",
    "optimizer_options": {"rmsprop": {"alpha": 0.9, "eps": 1.0, "tf_style": True}},
    "label_smoothing": 0.1,
    "datasets": {"mnist": {"optimizer": "adam", "lr": 0.001, "schedule": "cosine",
                           "epochs": 1}},
}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
