"""MobileNet (v1): Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto & Adam (2017),
"MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications".

The building block is the **depthwise separable convolution** (§3.1, Figure 3): a standard
K×K convolution from M to N channels is split into

* a *depthwise* K×K convolution, one filter per input channel (``groups = M``), and
* a *pointwise* 1×1 convolution that mixes the M channels into N,

each followed by batch norm and ReLU. On a D_F×D_F map the cost drops from
D_K²·M·N·D_F² to D_K²·M·D_F² + M·N·D_F² multiply-adds, a factor 1/N + 1/D_K² (8–9×
fewer for 3×3 kernels).

What this file builds
---------------------
Table 1 of the paper (``BODY`` below): a full 3×3 convolution, thirteen depthwise separable
blocks, global average pooling and one fully connected layer. 4,231,976 parameters and
569 million multiply-adds at 224×224 (``multiply_adds()`` recounts them from the table).

Two hyper-parameters shrink it (§3.3, §3.4):

* the **width multiplier** α thins every layer: M, N -> αM, αN (``int(α·channels)``, as in the
  reference code): α = 1.0, 0.75, 0.5, 0.25 give 4,231,976 / 2,585,560 / 1,331,592 / 470,072
  parameters (Table 6 rounds these to 4.2M / 2.6M / 1.3M / 0.5M);
* the **resolution multiplier** ρ shrinks the input: 224, 192, 160 or 128 pixels (Table 7).
  Resolution changes the cost, not the parameters.

Every combination is registered as ``mobilenet_v1_<α·100>_<resolution>``, the released
checkpoints' naming (``mobilenet_v1_075_192`` is α = 0.75 at 192×192); ``mobilenet_v1`` is
1.0 at 224.

Departures and details
----------------------
* Table 1 prints the second-to-last depthwise layer as "Conv dw / s2" although its input and
  output are both 7×7; it has stride 1 (as in the released model).
* The classifier is the paper's average pool + FC. The released TensorFlow model puts a
  dropout of 0.001 before it (``dropout=`` option; 0 by default here).
* The paper does not state an initialisation; convolutions use He normal (fan-out) and the FC
  layer N(0, 0.01²), as in torchvision's MobileNetV2.
* Global average pooling makes any input of at least 32×32 work.
"""
from collections import OrderedDict

from minicnn import nn
from architectures import register, register_variant
from architectures.common import ConvBNAct

# ----------------------------------------------------------------------------- the table
# Table 1, "MobileNet Body Architecture". Each depthwise separable row stands for the
# table's pair of lines "Conv dw / s" (3×3 depthwise) and "Conv / s1" (1×1 pointwise).
#   (kind, stride, output channels)                              output at 224×224 input
BODY = [
    ("conv",      2, 32),     # Conv / s2, 3×3×3×32                          112×112×32
    ("separable", 1, 64),     # Conv dw / s1 ; Conv / s1 1×1×32×64           112×112×64
    ("separable", 2, 128),    # Conv dw / s2 ; Conv / s1 1×1×64×128           56×56×128
    ("separable", 1, 128),    # Conv dw / s1 ; Conv / s1 1×1×128×128          56×56×128
    ("separable", 2, 256),    # Conv dw / s2 ; Conv / s1 1×1×128×256          28×28×256
    ("separable", 1, 256),    # Conv dw / s1 ; Conv / s1 1×1×256×256          28×28×256
    ("separable", 2, 512),    # Conv dw / s2 ; Conv / s1 1×1×256×512          14×14×512
    ("separable", 1, 512),    # 5× Conv dw / s1 ; Conv / s1 1×1×512×512       14×14×512
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 2, 1024),   # Conv dw / s2 ; Conv / s1 1×1×512×1024          7×7×1024
    ("separable", 1, 1024),   # Conv dw / s1 (printed "s2") ; 1×1×1024×1024    7×7×1024
]                             # Avg Pool / s1 7×7 ; FC 1024×1000 ; Softmax

WIDTH_MULTIPLIERS = {"100": 1.0, "075": 0.75, "050": 0.5, "025": 0.25}   # Table 6
RESOLUTIONS = (224, 192, 160, 128)                                        # Table 7


def scaled(channels, width_multiplier):
    """α·channels, rounded down as the reference code does (never below 1)."""
    return max(1, int(channels * width_multiplier))


# ----------------------------------------------------------------------------- modules
class DepthwiseSeparableConv(nn.Sequential):
    """3×3 depthwise conv (groups = in_channels) → BN → ReLU → 1×1 pointwise conv → BN → ReLU
    (Figure 3, right)."""

    def __init__(self, in_channels, out_channels, stride=1, kernel_size=3):
        super().__init__(OrderedDict(
            depthwise=ConvBNAct(in_channels, in_channels, kernel_size, stride,
                                groups=in_channels),
            pointwise=ConvBNAct(in_channels, out_channels, 1),
        ))


class MobileNetV1(nn.Module):
    """Table 1 at width multiplier α: body, global average pool, (dropout,) FC."""

    def __init__(self, num_classes=1000, in_channels=3, width_multiplier=1.0, dropout=0.0):
        super().__init__()
        if not 0 < width_multiplier:
            raise ValueError(f"MobileNetV1: width_multiplier must be positive, "
                             f"got {width_multiplier}")
        self.width_multiplier = width_multiplier
        layers, channels = OrderedDict(), in_channels
        for index, (kind, stride, out_channels) in enumerate(BODY):
            out_channels = scaled(out_channels, width_multiplier)
            if kind == "conv":
                layers[f"conv{index}"] = ConvBNAct(channels, out_channels, 3, stride)
            else:
                layers[f"separable{index}"] = DepthwiseSeparableConv(channels, out_channels,
                                                                     stride)
            channels = out_channels
        self.features = nn.Sequential(layers)
        self.pool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)
        self._initialise()

    def _initialise(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))


def multiply_adds(width_multiplier=1.0, resolution=224, num_classes=1000):
    """Multiply-adds of one forward pass, counted from Table 1 as the paper does (§3.2).

    A K×K convolution from M to N channels (groups g) on an output of D×D costs
    K²·(M/g)·N·D² multiply-adds; the FC layer costs its weight count. Batch norm, ReLU and
    pooling are not counted. ``multiply_adds()`` = 568,740,352 ≈ the paper's "569M".
    """
    total, channels, side = 0, 3, resolution
    for kind, stride, out_channels in BODY:
        out_channels = scaled(out_channels, width_multiplier)
        side = (side + 2 - 3) // stride + 1          # 3×3 kernel, padding 1
        if kind == "conv":
            total += 3 * 3 * channels * out_channels * side * side
        else:
            total += 3 * 3 * channels * side * side              # depthwise
            total += channels * out_channels * side * side       # pointwise
        channels = out_channels
    return total + channels * num_classes


# ----------------------------------------------------------------------------- named models
@register("mobilenet_v1", input_size=224)
def mobilenet_v1(num_classes=1000, in_channels=3, **options):
    """MobileNet-v1 1.0 at 224×224 (Table 1); ``width_multiplier=`` gives the thinner ones."""
    return MobileNetV1(num_classes, in_channels, **options)


# mobilenet_v1_100_224 ... mobilenet_v1_025_128: one constructor per (α, ρ) pair.
for _width_name, _width in WIDTH_MULTIPLIERS.items():
    for _resolution in RESOLUTIONS:
        _name = f"mobilenet_v1_{_width_name}_{_resolution}"
        globals()[_name] = register_variant(
            _name, MobileNetV1, _resolution, 3, 1000,
            f"MobileNet-v1 with width multiplier {_width} for {_resolution}×{_resolution} "
            f"inputs (Tables 6 and 7).", width_multiplier=_width)


CLI_DEFAULTS = {"variant": "mobilenet_v1_050_128", "input_size": 32, "optimizer": "adam",
                "lr": 3e-3, "batch_size": 64, "epochs": 1}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
