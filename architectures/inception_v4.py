"""Inception-v4: Szegedy, Ioffe, Vanhoucke & Alemi (2016), "Inception-v4, Inception-ResNet
and the Impact of Residual Connections on Learning" (AAAI 2017).

Inception-v4 is Inception-v3 made uniform: one stem (Figure 3), then three kinds of
modules, each repeated — four Inception-A on the 35×35 grid (Figure 4), seven Inception-B
on 17×17 (Figure 5), three Inception-C on 8×8 (Figure 6) — with the dedicated
grid-reduction blocks Reduction-A (Figure 7) and Reduction-B (Figure 8) between them.
Figure 9 is the whole schema; every module keeps its width (384, 1024, 1536), so the
blocks could be "simplified" and repeated freely (§3.1).

What this file builds
---------------------
``inception_v4``, the paper's network as TF-slim's reference code builds it (and the
widely used PyTorch port of those weights): 42,679,816 parameters.

* Stem (Figure 3): Conv 32 3×3/2 V, Conv 32 3×3 V, Conv 64 3×3; then three "mixed"
  steps, each concatenating two branches — MaxPool 3×3/2 V ‖ Conv 96 3×3/2 V (→160);
  [1×1 64 → 3×3 96 V] ‖ [1×1 64 → 1×7 64 → 7×1 64 → 3×3 96 V] (→192);
  Conv 192 3×3/2 V ‖ MaxPool 3×3/2 V (→384). 299² → 35²×384. "V" marks valid (unpadded)
  convolutions and pools; everything else is "same".
* 4 × Inception-A (Figure 4), 384 wide.
* Reduction-A (Figure 7) with Table 1's k, l, m, n = 192, 224, 256, 384: 35² → 17²×1024.
* 7 × Inception-B (Figure 5), 1024 wide.
* Reduction-B (Figure 8): 17² → 8²×1536.
* 3 × Inception-C (Figure 6), 1536 wide.
* Average pooling, dropout (keep 0.8), fully connected 1536 → classes.

The order within each 1×7/7×1 (and 1×3/3×1) pair follows TF-slim's code; swapping a
pair's order does not change the parameter count.

Reduction-A and the stem are shared with Inception-ResNet-v2 as the paper defines it
(``architectures/inception_resnet.py`` imports them; Table 1 gives the k, l, m, n of each
network).

Details
-------
* Every convolution is Conv (no bias) → BatchNorm (ε = 0.001) → ReLU.
* The average pools inside modules are 3×3/1 "same" without counting padding (TF).
* Weights start as TF-slim's Inception arg scope sets them: He's variance for ReLU
  (σ² = 2 / fan_in, TensorFlow's ``variance_scaling_initializer``) drawn from a normal cut
  at ±2σ and rescaled by √1.3 to keep that variance; the classifier Glorot uniform; zero
  biases.
* Minimum input **75×75** (the three valid stride-2 stages of the stem and the two
  reductions: 75 → 37 → 35 → 17 → 15 → 7 → 3 → 1); global pooling takes any larger size.
  Published size 299×299.
"""
import math
from collections import OrderedDict

from minicnn import functional as F, nn
from architectures import register
from architectures.inception_v3 import SplitConv, chain, conv_bn, same_avg_pool, truncated_normal_

# ----------------------------------------------------------------------------- the tables
# Figure 3: the stem's widths.
STEM = dict(
    convs=(32, 32, 64),                        # 3×3/2 V, 3×3 V, 3×3           → 147²×64
    mixed_3a=96,                               # MaxPool 3×3/2 V ‖ Conv 96 3×3/2 V → 73²×160
    mixed_4a=((64, 96), (64, 64, 64, 96)),     # 1×1 → 3×3 V ‖ 1×1 → 1×7 → 7×1 → 3×3 V → 71²×192
    mixed_5a=192,                              # Conv 192 3×3/2 V ‖ MaxPool 3×3/2 V → 35²×384
)

# Table 1: the filter numbers of Reduction-A (Figure 7) in each network of the paper.
REDUCTION_A = {
    #                          k    l    m    n
    "inception_v4":        (192, 224, 256, 384),
    "inception_resnet_v1": (192, 192, 256, 384),
    "inception_resnet_v2": (256, 256, 384, 384),
}

# Figure 9: the schema after the stem, one row per stage: (name, block, repeats, widths).
SCHEMA = [
    ("inception_a", "InceptionA", 4, dict(branch1x1=96, branch3x3=(64, 96),
                                          branch3x3dbl=(64, 96, 96), pool_proj=96)),
    ("reduction_a", "ReductionA", 1, dict(zip("klmn", REDUCTION_A["inception_v4"]))),
    ("inception_b", "InceptionB", 7, dict(branch1x1=384, branch7x7=(192, 224, 256),
                                          branch7x7dbl=(192, 192, 224, 224, 256),
                                          pool_proj=128)),
    ("reduction_b", "ReductionB", 1, dict(branch3x3=(192, 192),
                                          branch7x7x3=(256, 256, 320, 320))),
    ("inception_c", "InceptionC", 3, dict(branch1x1=256, branch3x3=(384, 256),
                                          branch3x3dbl=(384, 448, 512, 256), pool_proj=256)),
]


# ----------------------------------------------------------------------------- modules
class Stem(nn.Module):
    """Figure 3. Three plain convolutions, then three steps that each concatenate a
    convolution branch with a pooling (or second convolution) branch, so the grid shrinks
    without a representational bottleneck. 299² × 3 → 35² × 384.
    """

    def __init__(self, in_channels=3, convs=(32, 32, 64), mixed_3a=96,
                 mixed_4a=((64, 96), (64, 64, 64, 96)), mixed_5a=192):
        super().__init__()
        c1, c2, c3 = convs
        self.convs = nn.Sequential(OrderedDict(
            conv1=conv_bn(in_channels, c1, 3, stride=2, padding=0),     # 3×3/2 V
            conv2=conv_bn(c1, c2, 3, padding=0),                        # 3×3 V
            conv3=conv_bn(c2, c3, 3),                                   # 3×3
        ))
        self.mixed_3a_pool = nn.MaxPool2d(3, stride=2)                  # 3×3/2 V
        self.mixed_3a_conv = conv_bn(c3, mixed_3a, 3, stride=2, padding=0)
        channels = c3 + mixed_3a
        short, long = mixed_4a
        self.mixed_4a_short = chain(channels, short, (1, 3), padding=(None, 0))
        self.mixed_4a_long = chain(channels, long, (1, (1, 7), (7, 1), 3),
                                   padding=(None, None, None, 0))
        channels = short[-1] + long[-1]
        self.mixed_5a_conv = conv_bn(channels, mixed_5a, 3, stride=2, padding=0)
        self.mixed_5a_pool = nn.MaxPool2d(3, stride=2)
        self.out_channels = mixed_5a + channels

    def forward(self, x):
        x = self.convs(x)
        x = F.concat([self.mixed_3a_pool(x), self.mixed_3a_conv(x)], axis=1)
        x = F.concat([self.mixed_4a_short(x), self.mixed_4a_long(x)], axis=1)
        return F.concat([self.mixed_5a_conv(x), self.mixed_5a_pool(x)], axis=1)


class InceptionA(nn.Module):
    """Figure 4, the 35×35 module:

        1×1                                      → branch1x1
        1×1 reduce → 3×3                         → branch3x3[1]
        1×1 reduce → 3×3 → 3×3                   → branch3x3dbl[2]
        3×3 average pool → 1×1                   → pool_proj
    """

    def __init__(self, in_channels, branch1x1, branch3x3, branch3x3dbl, pool_proj):
        super().__init__()
        self.branch1x1 = conv_bn(in_channels, branch1x1, 1)
        self.branch3x3 = chain(in_channels, branch3x3, (1, 3))
        self.branch3x3dbl = chain(in_channels, branch3x3dbl, (1, 3, 3))
        self.branch_pool = nn.Sequential(same_avg_pool(), conv_bn(in_channels, pool_proj, 1))
        self.out_channels = branch1x1 + branch3x3[-1] + branch3x3dbl[-1] + pool_proj

    def forward(self, x):
        return F.concat([self.branch1x1(x), self.branch3x3(x), self.branch3x3dbl(x),
                         self.branch_pool(x)], axis=1)


class ReductionA(nn.Module):
    """Figure 7, 35×35 → 17×17, with Table 1's filter numbers k, l, m, n:

        3×3/2 V, n filters                        → n
        1×1 k → 3×3 l → 3×3/2 V m                 → m
        3×3/2 V max pool (pass-through)           → in_channels

    out_channels = n + m + in_channels (Inception-v4: 384 + 256 + 384 = 1024).
    """

    def __init__(self, in_channels, k, l, m, n):  # noqa: E741 — the paper's letters
        super().__init__()
        self.branch3x3 = conv_bn(in_channels, n, 3, stride=2, padding=0)
        self.branch3x3dbl = chain(in_channels, (k, l, m), (1, 3, 3), strides=(1, 1, 2))
        self.branch_pool = nn.MaxPool2d(3, stride=2)
        self.out_channels = n + m + in_channels

    def forward(self, x):
        return F.concat([self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)], axis=1)


class InceptionB(nn.Module):
    """Figure 5, the 17×17 module, 7×7 convolutions factorized into 1×7 and 7×1:

        1×1                                      → branch1x1
        1×1 reduce → 1×7 → 7×1                   → branch7x7[2]
        1×1 reduce → 7×1 → 1×7 → 7×1 → 1×7       → branch7x7dbl[4]
        3×3 average pool → 1×1                   → pool_proj
    """

    def __init__(self, in_channels, branch1x1, branch7x7, branch7x7dbl, pool_proj, n=7):
        super().__init__()
        row, column = (1, n), (n, 1)
        self.branch1x1 = conv_bn(in_channels, branch1x1, 1)
        self.branch7x7 = chain(in_channels, branch7x7, (1, row, column))
        self.branch7x7dbl = chain(in_channels, branch7x7dbl, (1, column, row, column, row))
        self.branch_pool = nn.Sequential(same_avg_pool(), conv_bn(in_channels, pool_proj, 1))
        self.out_channels = branch1x1 + branch7x7[-1] + branch7x7dbl[-1] + pool_proj

    def forward(self, x):
        return F.concat([self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x),
                         self.branch_pool(x)], axis=1)


class ReductionB(nn.Module):
    """Figure 8, 17×17 → 8×8:

        1×1 reduce → 3×3/2 V                     → branch3x3[1]
        1×1 reduce → 1×7 → 7×1 → 3×3/2 V         → branch7x7x3[3]
        3×3/2 V max pool (pass-through)          → in_channels

    out_channels = 192 + 320 + 1024 = 1536.
    """

    def __init__(self, in_channels, branch3x3, branch7x7x3, n=7):
        super().__init__()
        self.branch3x3 = chain(in_channels, branch3x3, (1, 3), strides=(1, 2))
        self.branch7x7x3 = chain(in_channels, branch7x7x3, (1, (1, n), (n, 1), 3),
                                 strides=(1, 1, 1, 2))
        self.branch_pool = nn.MaxPool2d(3, stride=2)
        self.out_channels = branch3x3[-1] + branch7x7x3[-1] + in_channels

    def forward(self, x):
        return F.concat([self.branch3x3(x), self.branch7x7x3(x), self.branch_pool(x)], axis=1)


class InceptionC(nn.Module):
    """Figure 6, the 8×8 module, ending its 3×3 branches in parallel 1×3 ‖ 3×1 pairs:

        1×1                                      → branch1x1
        1×1 reduce → (1×3 ‖ 3×1)                 → 2·branch3x3[1]
        1×1 reduce → 3×1 → 1×3 → (1×3 ‖ 3×1)     → 2·branch3x3dbl[3]
        3×3 average pool → 1×1                   → pool_proj

    out_channels = 256 + 2·256 + 2·256 + 256 = 1536.
    """

    def __init__(self, in_channels, branch1x1, branch3x3, branch3x3dbl, pool_proj):
        super().__init__()
        reduce, width = branch3x3
        self.branch1x1 = conv_bn(in_channels, branch1x1, 1)
        self.branch3x3 = nn.Sequential(conv_bn(in_channels, reduce, 1), SplitConv(reduce, width))
        reduce_dbl, column, row, width_dbl = branch3x3dbl
        self.branch3x3dbl = nn.Sequential(conv_bn(in_channels, reduce_dbl, 1),
                                          conv_bn(reduce_dbl, column, (3, 1)),
                                          conv_bn(column, row, (1, 3)),
                                          SplitConv(row, width_dbl))
        self.branch_pool = nn.Sequential(same_avg_pool(), conv_bn(in_channels, pool_proj, 1))
        self.out_channels = branch1x1 + 2 * width + 2 * width_dbl + pool_proj

    def forward(self, x):
        return F.concat([self.branch1x1(x), self.branch3x3(x), self.branch3x3dbl(x),
                         self.branch_pool(x)], axis=1)


BLOCKS = {"InceptionA": InceptionA, "ReductionA": ReductionA, "InceptionB": InceptionB,
          "ReductionB": ReductionB, "InceptionC": InceptionC}


def he_truncated_normal_(weight):
    """TensorFlow's ``variance_scaling_initializer()``: N(0, 1.3 · 2 / fan_in) cut at ±2σ.

    Cutting the tails at 2σ leaves a variance of about σ²/1.3, so the 1.3 restores He's
    2 / fan_in.
    """
    fan_in, _ = nn.init.fan_in_and_fan_out(weight.shape)
    return truncated_normal_(weight, math.sqrt(1.3 * 2.0 / fan_in))


# ----------------------------------------------------------------------------- the network
class InceptionV4(nn.Module):
    """Figure 9: stem → 4 × A → Reduction-A → 7 × B → Reduction-B → 3 × C → average
    pool → dropout (keep 0.8) → FC."""

    def __init__(self, num_classes=1000, in_channels=3, dropout=0.2, schema=SCHEMA):
        super().__init__()
        layers = OrderedDict(stem=Stem(in_channels, **STEM))
        channels = layers["stem"].out_channels
        for name, block, repeats, widths in schema:
            stage = []
            for _ in range(repeats):
                stage.append(BLOCKS[block](channels, **widths))
                channels = stage[-1].out_channels
            layers[name] = stage[0] if repeats == 1 else nn.Sequential(*stage)
        self.features = nn.Sequential(layers)
        self.pool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)
        self._initialise()

    def _initialise(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                he_truncated_normal_(module.weight)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))


# ----------------------------------------------------------------------------- named models
@register("inception_v4", input_size=299)
def inception_v4(num_classes=1000, in_channels=3, **options):
    """Inception-v4 (Figure 9): stem, 4/7/3 Inception-A/B/C, two reductions; 42,679,816."""
    return InceptionV4(num_classes, in_channels, **options)


# The paper's recipe (§4) is the default: RMSProp in TensorFlow's form (decay 0.9, ε = 1.0,
# momentum 0.9), learning rate 0.045 decayed ×0.94 every two epochs, label smoothing 0.1
# as Inception-v3, on the smallest input the network takes (75). That learning rate was
# tuned for many replicas; short MNIST runs on one CPU use Adam.
CLI_DEFAULTS = {
    "variant": "inception_v4", "input_size": 75, "epochs": 10, "batch_size": 32,
    "optimizer": "rmsprop", "lr": 0.045, "momentum": 0.9, "schedule": "decay:2:0.94",
    "optimizer_options": {"rmsprop": {"alpha": 0.9, "eps": 1.0, "tf_style": True}},
    "label_smoothing": 0.1,
    # MNIST at 75 px: Adam at 3e-3 reached only 78% on 20k images; at 1e-3 one epoch of
    # 60k reaches 97.62%.
    "datasets": {"mnist": {"optimizer": "adam", "lr": 0.001, "schedule": "cosine",
                           "epochs": 1}},
}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
