"""MobileNetV2: Sandler, Howard, Zhu, Zhmoginov & Chen (2018), "MobileNetV2: Inverted
Residuals and Linear Bottlenecks".

The building block is the **inverted residual with linear bottleneck** (Table 1, Figure 3b):
a thin input of k channels is

1. *expanded* by a 1×1 convolution to t·k channels, BN, ReLU6 (skipped when t = 1),
2. filtered by a 3×3 *depthwise* convolution (stride s), BN, ReLU6,
3. *projected* back down by a 1×1 convolution to k' channels, BN, and **no** activation:
   the linear bottleneck (§3.2: ReLU on a low-dimensional manifold destroys information).

When s = 1 and k = k' the block's input is added to its output. The shortcut joins the thin
bottlenecks, the opposite of a ResNet bottleneck, which joins the wide ends: hence
"inverted" residual.

What this file builds
---------------------
Table 2 of the paper (``BOTTLENECKS`` below), 3,504,872 parameters at width multiplier 1.0
and 224×224, as in the reference implementations (TensorFlow slim, Keras, torchvision).
``width_multiplier=α`` scales every layer's width, rounded to a multiple of 8 (the
reference code's ``make_divisible``); the last 1×1 convolution keeps 1280 channels for
α < 1 and grows for α > 1 (§6.1).

Details of the reference build the paper does not spell out: the expansion width is
round(t·k); dropout 0.2 before the classifier; convolutions initialised He normal
(fan-out), the classifier N(0, 0.01²). The 7×7 average pool of Table 2 is a global average
pool, so any input of at least 32×32 works (the benchmark uses 64×64).
"""
from collections import OrderedDict

from minicnn import nn
from architectures import register
from architectures.common import ConvBNAct, make_divisible

# ----------------------------------------------------------------------------- the table
# Table 2. The stem "conv2d 3×3, 32, stride 2" and the head "conv2d 1×1, 1280 → avgpool 7×7
# → conv2d 1×1, k" frame seven bottleneck sequences; each row repeats its block n times,
# the first with stride s, the rest with stride 1.
STEM_CHANNELS = 32
BOTTLENECKS = [
    # t  (expansion), c (output channels), n (repeats), s (stride)     input at 224×224
    (1, 16, 1, 1),                                                     # 112²×32
    (6, 24, 2, 2),                                                     # 112²×16
    (6, 32, 3, 2),                                                     # 56²×24
    (6, 64, 4, 2),                                                     # 28²×32
    (6, 96, 3, 1),                                                     # 14²×64
    (6, 160, 3, 2),                                                    # 14²×96
    (6, 320, 1, 1),                                                    # 7²×160
]
LAST_CHANNELS = 1280                                                   # 7²×320 -> 7²×1280


# ----------------------------------------------------------------------------- modules
class InvertedResidual(nn.Module):
    """expand 1×1 (t > 1) → depthwise 3×3 / s → linear project 1×1, plus x when s = 1 and
    in_channels = out_channels (Table 1 of the paper)."""

    def __init__(self, in_channels, out_channels, stride, expand_ratio):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers = OrderedDict()
        if expand_ratio != 1:
            layers["expand"] = ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6)
        layers["depthwise"] = ConvBNAct(hidden, hidden, 3, stride, groups=hidden,
                                        activation=nn.ReLU6)
        layers["project"] = ConvBNAct(hidden, out_channels, 1, activation=None)
        self.block = nn.Sequential(layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_residual else y

    def extra_repr(self):
        return "residual" if self.use_residual else ""


class MobileNetV2(nn.Module):
    """Table 2: stem, the bottleneck sequences, 1×1 conv to 1280, pool, dropout, FC."""

    def __init__(self, num_classes=1000, in_channels=3, width_multiplier=1.0, dropout=0.2,
                 round_to=8):
        super().__init__()
        if not 0 < width_multiplier:
            raise ValueError(f"MobileNetV2: width_multiplier must be positive, "
                             f"got {width_multiplier}")
        channels = make_divisible(STEM_CHANNELS * width_multiplier, round_to)
        last_channels = make_divisible(LAST_CHANNELS * max(1.0, width_multiplier), round_to)
        layers = OrderedDict(stem=ConvBNAct(in_channels, channels, 3, 2, activation=nn.ReLU6))
        for stage, (t, c, n, s) in enumerate(BOTTLENECKS, start=1):
            out_channels = make_divisible(c * width_multiplier, round_to)
            for repeat in range(n):
                layers[f"bottleneck{stage}_{repeat + 1}"] = InvertedResidual(
                    channels, out_channels, s if repeat == 0 else 1, t)
                channels = out_channels
        layers["head"] = ConvBNAct(channels, last_channels, 1, activation=nn.ReLU6)
        self.features = nn.Sequential(layers)
        self.pool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(last_channels, num_classes)
        self._initialise()

    def _initialise(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(x)))))


# ----------------------------------------------------------------------------- named models
@register("mobilenet_v2", input_size=224)
def mobilenet_v2(num_classes=1000, in_channels=3, **options):
    """MobileNetV2 1.0 (Table 2); ``width_multiplier=`` scales it (0.35 ... 1.4 in §6.1)."""
    return MobileNetV2(num_classes, in_channels, **options)


CLI_DEFAULTS = {"variant": "mobilenet_v2", "input_size": 32, "optimizer": "adam", "lr": 3e-3,
                "batch_size": 64, "epochs": 1}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
