"""Xception: Chollet (2017), "Xception: Deep Learning with Depthwise Separable Convolutions".

The hypothesis (§2): cross-channel and spatial correlations can be mapped *entirely*
separately, the extreme ("X") of the Inception idea. Every convolution after the stem is a
**separable convolution**: a 3×3 depthwise convolution (one filter per channel) followed
by a 1×1 pointwise convolution, with *no* nonlinearity between the two (§4.7 finds the
intermediate ReLU hurts).

What this file builds
---------------------
Figure 5 of the paper: 36 convolutional layers in 14 modules, all but the first and last
with linear residual connections.

* **Entry flow**: Conv 32 3×3/2, Conv 64 3×3 (both unpadded), then three modules of
  [ReLU → SeparableConv → BN] × 2 → MaxPool 3×3/2 (128, 256, 728 channels), each with a
  1×1/2 convolution + BN on its shortcut;
* **Middle flow**: eight modules of [ReLU → SeparableConv 728 → BN] × 3 with identity
  shortcuts;
* **Exit flow**: one module (728, 1024 channels, pooled, 1×1/2 projection shortcut),
  SeparableConv 1536 → BN → ReLU, SeparableConv 2048 → BN → ReLU, global average pooling,
  fully connected layer.

Every convolution is followed by batch norm (so none has a bias). 22,855,952 parameters with
the 1000-class head, as Keras' ``Xception``; the output map at 299×299 is 10×10×2048.

Details
-------
* The first entry module starts without ReLU: the stem already ended with one.
* §3.3 trains ImageNet with dropout 0.5 before the classifier; ``dropout=`` (0.5 by default)
  keeps it. Keras' head has none (``dropout=0``); parameters are the same.
* "Same" max pooling at stride 2 is written with padding 1 on every side. TensorFlow pads
  even-sized maps only at the bottom/right; the output sizes agree, the window alignment
  differs by one pixel on even inputs.
* Weights start Glorot (Xavier) uniform with zero biases, Keras' defaults.
* Global pooling makes any input of at least about 29×29 work.
"""
from collections import OrderedDict

from minicnn import nn
from architectures import register
from architectures.common import ConvBNAct

# ----------------------------------------------------------------------------- the tables
# Figure 5, one row per residual module:
#   (separable convolution widths, downsample with MaxPool 3×3/2, starts with ReLU)
ENTRY_FLOW = [
    ((128, 128), True, False),      # 147²×64  -> 74²×128
    ((256, 256), True, True),       # 74²×128  -> 37²×256
    ((728, 728), True, True),       # 37²×256  -> 19²×728
]
MIDDLE_FLOW = [((728, 728, 728), False, True)] * 8      # "repeated 8 times", 19²×728
EXIT_FLOW = [
    ((728, 1024), True, True),      # 19²×728  -> 10²×1024
]
EXIT_CONVOLUTIONS = (1536, 2048)    # SeparableConv → BN → ReLU each, 10²×2048


# ----------------------------------------------------------------------------- modules
class SeparableConv2d(nn.Module):
    """Depthwise k×k convolution (groups = in_channels) then pointwise 1×1, no activation
    between and no biases (batch norm follows)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """One module of Figure 5: [ReLU →] SeparableConv → BN, repeated per width, then
    MaxPool 3×3/2 when downsampling; plus a shortcut, identity or Conv 1×1/2 → BN where
    the width or size changes.

    The ReLUs sit *before* each separable convolution, so the module's output (a sum) is
    linear: the next module's first ReLU acts on it.
    """

    def __init__(self, in_channels, widths, downsample=False, start_with_relu=True):
        super().__init__()
        layers, channels = OrderedDict(), in_channels
        for index, width in enumerate(widths, start=1):
            if index > 1 or start_with_relu:
                layers[f"relu{index}"] = nn.ReLU()
            layers[f"separable{index}"] = SeparableConv2d(channels, width)
            layers[f"bn{index}"] = nn.BatchNorm2d(width)
            channels = width
        stride = 2 if downsample else 1
        if downsample:
            layers["pool"] = nn.MaxPool2d(3, stride=2, padding=1)
        self.residual = nn.Sequential(layers)
        if downsample or channels != in_channels:
            self.shortcut = ConvBNAct(in_channels, channels, 1, stride, padding=0,
                                      activation=None)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)


class Xception(nn.Module):
    """Figure 5: entry flow, middle flow, exit flow, global pool, (dropout,) FC."""

    def __init__(self, num_classes=1000, in_channels=3, dropout=0.5):
        super().__init__()
        flows = OrderedDict(
            conv1=ConvBNAct(in_channels, 32, 3, stride=2, padding=0),
            conv2=ConvBNAct(32, 64, 3, padding=0),
        )
        channels = 64
        rows = ([("entry", row) for row in ENTRY_FLOW] + [("middle", row) for row in MIDDLE_FLOW]
                + [("exit", row) for row in EXIT_FLOW])
        counters = {}
        for flow, (widths, downsample, start_with_relu) in rows:
            counters[flow] = counters.get(flow, 0) + 1
            flows[f"{flow}{counters[flow]}"] = XceptionBlock(channels, widths, downsample,
                                                             start_with_relu)
            channels = widths[-1]
        for index, width in enumerate(EXIT_CONVOLUTIONS, start=1):
            flows[f"exit_separable{index}"] = nn.Sequential(OrderedDict(
                separable=SeparableConv2d(channels, width), bn=nn.BatchNorm2d(width),
                relu=nn.ReLU()))
            channels = width
        self.features = nn.Sequential(flows)
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
@register("xception", input_size=299)
def xception(num_classes=1000, in_channels=3, **options):
    """Xception (Figure 5): separable convolutions with residual connections, 299×299."""
    return Xception(num_classes, in_channels, **options)


CLI_DEFAULTS = {"variant": "xception", "input_size": 32, "optimizer": "adam", "lr": 1e-3,
                "batch_size": 64, "epochs": 1}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
