"""SqueezeNet: Iandola, Han, Moskewicz, Ashraf, Dally & Keutzer (2016), "SqueezeNet:
AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size".

The building block is the **fire module** (Figure 1): a 1×1 *squeeze* convolution to few
channels, then two parallel *expand* convolutions, 1×1 and 3×3, whose outputs are
concatenated along the channel axis::

    x ──> squeeze 1×1 (s₁ₓ₁) ─ReLU─┬─> expand 1×1 (e₁ₓ₁) ─ReLU─┐
                                    └─> expand 3×3 (e₃ₓ₃) ─ReLU─┴─ concat ──> e₁ₓ₁ + e₃ₓ₃ channels

The squeeze layer is the paper's strategy 2 (fewer input channels to the 3×3 filters);
replacing most 3×3 filters by 1×1 ones is strategy 1; pooling late is strategy 3.

What this file builds
---------------------
* ``squeezenet1_0``: Table 1 of the paper, 1,248,424 parameters. conv1 is 96 filters of
  7×7 / 2; max pools of 3×3 / 2 follow conv1, fire4 and fire8; no fully connected layer:
  conv10 (1×1, one filter per class) and a global average pool produce the logits.
* ``squeezenet1_1``: the "SqueezeNet v1.1" released with the reference code (not in the
  paper): conv1 is 64 filters of 3×3 / 2 and the pools move earlier (after conv1, fire3,
  fire5), 2.4× less computation at the same accuracy; 1,235,496 parameters.
* ``squeezenet1_0_simple_bypass``: the paper's §6 "simple bypass" (Figure 2, middle): an
  identity shortcut around fire3, fire5, fire7 and fire9, the modules whose input and output
  widths match. Same parameter count; the paper reports +2.9 points top-1.

Details shared with the reference implementation (Caffe, and torchvision's port):
max pooling rounds its output size up (``ceil_mode``), as Caffe does; dropout 0.5 precedes
conv10; conv10 is followed by ReLU before the average pool; conv10's weights are drawn
from N(0, 0.01²), all other convolutions use He (Kaiming) uniform initialisation, biases
start at zero. The final pool is global, so any input of at least about 32×32 works.
"""
from collections import OrderedDict

from minicnn import functional as F
from minicnn import nn
from architectures import register

# ----------------------------------------------------------------------------- the tables
# One row per layer of Table 1 ("SqueezeNet architectural dimensions"):
#   ("conv", out_channels, kernel, stride)    ("maxpool",)
#   ("fire", s1x1, e1x1, e3x3)                 — squeeze width and the two expand widths
# conv10 and the pooling head are added by the network, as they are the same in both.
SQUEEZENET_1_0 = [
    ("conv1",    "conv", 96, 7, 2),        # 224×224×3 -> 109×109×96
    ("maxpool1", "maxpool"),               # -> 54×54×96
    ("fire2",    "fire", 16, 64, 64),      # -> 54×54×128
    ("fire3",    "fire", 16, 64, 64),      # -> 54×54×128
    ("fire4",    "fire", 32, 128, 128),    # -> 54×54×256
    ("maxpool4", "maxpool"),               # -> 27×27×256
    ("fire5",    "fire", 32, 128, 128),    # -> 27×27×256
    ("fire6",    "fire", 48, 192, 192),    # -> 27×27×384
    ("fire7",    "fire", 48, 192, 192),    # -> 27×27×384
    ("fire8",    "fire", 64, 256, 256),    # -> 27×27×512
    ("maxpool8", "maxpool"),               # -> 13×13×512
    ("fire9",    "fire", 64, 256, 256),    # -> 13×13×512
]

# v1.1 (reference code release): a 3×3 conv1 with 64 filters and earlier pooling.
SQUEEZENET_1_1 = [
    ("conv1",    "conv", 64, 3, 2),        # 224×224×3 -> 111×111×64
    ("maxpool1", "maxpool"),               # -> 55×55×64
    ("fire2",    "fire", 16, 64, 64),
    ("fire3",    "fire", 16, 64, 64),
    ("maxpool3", "maxpool"),               # -> 27×27×128
    ("fire4",    "fire", 32, 128, 128),
    ("fire5",    "fire", 32, 128, 128),
    ("maxpool5", "maxpool"),               # -> 13×13×256
    ("fire6",    "fire", 48, 192, 192),
    ("fire7",    "fire", 48, 192, 192),
    ("fire8",    "fire", 64, 256, 256),
    ("fire9",    "fire", 64, 256, 256),    # -> 13×13×512
]

# §6, Figure 2 (middle): identity shortcuts where a fire module keeps its width.
SIMPLE_BYPASS = ("fire3", "fire5", "fire7", "fire9")


# ----------------------------------------------------------------------------- modules
class Fire(nn.Module):
    """The fire module: squeeze 1×1 → ReLU → [expand 1×1 → ReLU ‖ expand 3×3 → ReLU].

    Output channels = e1x1 + e3x3. With ``bypass=True`` the input is added to the output
    (the paper's simple bypass), which needs in_channels == e1x1 + e3x3.
    """

    def __init__(self, in_channels, squeeze_channels, expand1x1_channels, expand3x3_channels,
                 bypass=False):
        super().__init__()
        out_channels = expand1x1_channels + expand3x3_channels
        if bypass and in_channels != out_channels:
            raise ValueError(f"Fire: a simple bypass needs equal input and output widths, got "
                             f"{in_channels} in and {out_channels} out")
        self.in_channels, self.out_channels, self.bypass = in_channels, out_channels, bypass
        self.squeeze = nn.Conv2d(in_channels, squeeze_channels, 1)
        self.expand1x1 = nn.Conv2d(squeeze_channels, expand1x1_channels, 1)
        self.expand3x3 = nn.Conv2d(squeeze_channels, expand3x3_channels, 3, padding=1)

    def forward(self, x):
        squeezed = F.relu(self.squeeze(x))
        y = F.concat([F.relu(self.expand1x1(squeezed)), F.relu(self.expand3x3(squeezed))], axis=1)
        return y + x if self.bypass else y

    def extra_repr(self):
        return f"{self.in_channels} -> {self.out_channels}" + (", bypass" if self.bypass else "")


class SqueezeNet(nn.Module):
    """SqueezeNet from a table of rows (see ``SQUEEZENET_1_0``), then the shared head:
    dropout 0.5 → conv10 (1×1, ``num_classes`` filters) → ReLU → global average pool."""

    def __init__(self, table, num_classes=1000, in_channels=3, dropout=0.5, bypass=()):
        super().__init__()
        layers, channels = OrderedDict(), in_channels
        for name, kind, *settings in table:
            if kind == "conv":
                out_channels, kernel, stride = settings
                layers[name] = nn.Conv2d(channels, out_channels, kernel, stride)
                layers[f"{name}_relu"] = nn.ReLU()
                channels = out_channels
            elif kind == "maxpool":
                layers[name] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            else:
                layers[name] = Fire(channels, *settings, bypass=name in bypass)
                channels = layers[name].out_channels
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(OrderedDict(
            dropout=nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            conv10=nn.Conv2d(channels, num_classes, 1),
            relu10=nn.ReLU(),
            avgpool10=nn.GlobalAvgPool2d(),
            flatten=nn.Flatten(),
        ))
        self._initialise()

    def _initialise(self):
        final = self.classifier.conv10
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if module is final:
                    nn.init.normal_(module.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------- named models
@register("squeezenet1_0", input_size=224)
def squeezenet1_0(num_classes=1000, in_channels=3, **options):
    """SqueezeNet v1.0 (Table 1): 7×7 conv1, eight fire modules, conv10 head."""
    return SqueezeNet(SQUEEZENET_1_0, num_classes, in_channels, **options)


@register("squeezenet1_1", input_size=224)
def squeezenet1_1(num_classes=1000, in_channels=3, **options):
    """SqueezeNet v1.1 (reference release): 3×3 conv1, early pooling, 2.4× fewer FLOPs."""
    return SqueezeNet(SQUEEZENET_1_1, num_classes, in_channels, **options)


@register("squeezenet1_0_simple_bypass", input_size=224)
def squeezenet1_0_simple_bypass(num_classes=1000, in_channels=3, **options):
    """SqueezeNet v1.0 with the simple bypass of §6 around fire3, fire5, fire7, fire9."""
    return SqueezeNet(SQUEEZENET_1_0, num_classes, in_channels, bypass=SIMPLE_BYPASS,
                      **options)


# Without batch norm SqueezeNet is easy to kill. A warm-up keeps conv10's ReLU alive:
# full-rate Adam from the first step drives every class score below zero (a dead head,
# loss stuck at ln 10) within a few hundred steps. At 32 px that happened even with the
# warm-up at lr 1e-3 (MNIST: 19% after one epoch); at 64 px and lr 3e-4 the simple-bypass
# variant (§6 of the paper, its most accurate) reached 98.11% in one epoch of MNIST.
CLI_DEFAULTS = {"variant": "squeezenet1_0_simple_bypass", "input_size": 64, "optimizer": "adam",
                "lr": 3e-4, "schedule": "warmup:0.2+cosine", "batch_size": 64, "epochs": 1}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
