"""VGG: Simonyan & Zisserman (2014), "Very Deep Convolutional Networks for Large-Scale
Image Recognition", ICLR 2015 (arXiv 1409.1556). Table 1 is followed.

One idea, pushed to depth: only 3×3 convolutions (stride 1, padding 1, so a stack keeps
the map size), 2×2/2 max-pools between five stages, widths 64-128-256-512-512, then three
fully connected layers. Two stacked 3×3 layers see 5×5 and three see 7×7, with fewer
parameters and more non-linearities than one big kernel (Section 2.3).

Table 1's configurations are written below in the paper's own notation: ``conv3-256`` is
a 3×3 convolution with 256 kernels, ``conv1-256`` a 1×1 one, ``maxpool`` a 2×2/2 max-pool
and ``LRN`` local response normalization. Every convolution is followed by a ReLU.
Parameter counts at 1000 classes (the paper's Table 2 rounds them to 133, 133, 134, 138
and 144 million):

    A      vgg11       11 weight layers     132,863,336
    A-LRN  vgg11_lrn   A + LRN after conv1  132,863,336 (LRN has no parameters)
    B      vgg13       13 weight layers     133,047,848
    C      vgg16_c     16, with 1×1 convs   133,638,952
    D      vgg16       16 weight layers     138,357,544
    E      vgg19       19 weight layers     143,667,240

The classifier is FC-4096 → ReLU → dropout 0.5 → FC-4096 → ReLU → dropout 0.5 → FC-classes
(Section 3.1: dropout on the first two fully connected layers).

Reference builds and departures
-------------------------------
* ``*_bn``: batch normalization after every convolution (conv → BN → ReLU), which the
  paper predates; the layout torchvision ships, convolutions keeping their biases. Adds
  2 parameters (γ, β) per convolution channel: vgg11_bn 132,868,840, vgg13_bn 133,053,736,
  vgg16_c_bn 133,647,400, vgg16_bn 138,365,992, vgg19_bn 143,678,248; ``vgg11_lrn_bn``
  (A-LRN with batch norm, kept so every column has its BN version) equals vgg11_bn.
* ``vgg16_bn_cifar``: configuration D's 13 convolutions with batch norm, then one
  512 → classes linear layer on 32×32 input, where five pools leave a 1×1×512 map (the
  common CIFAR-10 VGG, and a row of the benchmark suite). A global average pool before the
  linear layer is an identity at 32×32 and lets larger inputs work.
* The maps are pooled adaptively to the 7×7 that the first FC layer expects (a no-op at
  224×224, as torchvision does), so any input from 32×32 up works (five 2×2 pools need it).
* Initialization as torchvision: He normal (fan_out) convolutions, N(0, 0.01) linear
  layers, zero biases, BN γ = 1, β = 0. The paper trained A from N(0, 0.01) and initialized
  the deeper nets' first four convolutions and FC layers from A (Section 3.1), noting that
  Glorot initialization works without the pre-training.

Training: SGD, batch 256, momentum 0.9, weight decay 5e-4, learning rate 1e-2 divided by
10 when the validation accuracy stops improving.
"""
import re
from collections import OrderedDict

from architectures import register, register_variant
from architectures.alexnet import LRN
from minicnn import nn

# Table 1, column by column, in the paper's notation.
CONFIGS = {
    "A": ["conv3-64", "maxpool", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "maxpool"],
    "A-LRN": ["conv3-64", "LRN", "maxpool", "conv3-128", "maxpool",
              "conv3-256", "conv3-256", "maxpool",
              "conv3-512", "conv3-512", "maxpool",
              "conv3-512", "conv3-512", "maxpool"],
    "B": ["conv3-64", "conv3-64", "maxpool", "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "maxpool"],
    "C": ["conv3-64", "conv3-64", "maxpool", "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv1-256", "maxpool",
          "conv3-512", "conv3-512", "conv1-512", "maxpool",
          "conv3-512", "conv3-512", "conv1-512", "maxpool"],
    "D": ["conv3-64", "conv3-64", "maxpool", "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "maxpool"],
    "E": ["conv3-64", "conv3-64", "maxpool", "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "conv3-512", "maxpool"],
}
FC_WIDTHS = (4096, 4096)       # then FC-classes
POOLED_SIZE = 7                # the last stage's map at 224×224
MIN_INPUT_SIZE = 32            # 2⁵: five 2×2/2 pools


def parse_conv(entry):
    """'conv3-256' -> (kernel_size 3, kernels 256)."""
    match = re.fullmatch(r"conv(\d+)-(\d+)", entry)
    if not match:
        raise ValueError(f"VGG: unknown layer {entry!r} in a configuration (expected "
                         "'convK-C', 'maxpool' or 'LRN')")
    return int(match.group(1)), int(match.group(2))


def make_features(config, in_channels, batch_norm):
    """The convolutional part of a Table 1 column, layers named as the paper counts them
    (``conv3_2`` is stage 3's second convolution)."""
    layers, channels, stage, index = OrderedDict(), in_channels, 1, 0
    for entry in config:
        if entry == "maxpool":
            layers[f"pool{stage}"] = nn.MaxPool2d(2, 2)
            stage, index = stage + 1, 0
        elif entry == "LRN":
            layers[f"lrn{stage}_{index}"] = nn.LocalResponseNorm(**LRN)
        else:
            kernel_size, kernels = parse_conv(entry)
            index += 1
            name = f"conv{stage}_{index}"
            layers[name] = nn.Conv2d(channels, kernels, kernel_size, padding=kernel_size // 2)
            if batch_norm:
                layers[f"bn{stage}_{index}"] = nn.BatchNorm2d(kernels)
            layers[f"relu{stage}_{index}"] = nn.ReLU()
            channels = kernels
    return nn.Sequential(layers), channels


def initialize(model):
    """torchvision's VGG initialization (see the module docstring)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and module.bias is not None:
            nn.init.zeros_(module.bias)


def _check_input(model, x):
    if x.ndim != 4 or x.shape[1] != model.in_channels:
        raise ValueError(f"{type(model).__name__}: expected input (N, {model.in_channels}, H, W), "
                         f"got shape {x.shape}")
    if min(x.shape[2:]) < MIN_INPUT_SIZE:
        raise ValueError(f"{type(model).__name__}: input must be at least {MIN_INPUT_SIZE}×"
                         f"{MIN_INPUT_SIZE} (five 2×2/2 max-pools), got {x.shape[2]}×{x.shape[3]}")


class VGG(nn.Module):
    """A Table 1 column: ``features`` → ``avgpool`` (adaptive, 7×7) → ``flatten`` →
    ``classifier`` (FC-4096, FC-4096, FC-classes)."""

    def __init__(self, config, num_classes=1000, in_channels=3, batch_norm=False, dropout=0.5):
        super().__init__()
        if config not in CONFIGS:
            raise ValueError(f"VGG: unknown configuration {config!r}; Table 1 has "
                             f"{', '.join(CONFIGS)}")
        self.config, self.in_channels = config, in_channels
        self.features, channels = make_features(CONFIGS[config], in_channels, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.flatten = nn.Flatten()
        layers, width = OrderedDict(), channels * POOLED_SIZE ** 2
        for index, units in enumerate(FC_WIDTHS, 1):
            layers[f"fc{index}"] = nn.Linear(width, units)
            layers[f"relu_fc{index}"] = nn.ReLU()
            layers[f"drop{index}"] = nn.Dropout(dropout)
            width = units
        layers[f"fc{len(FC_WIDTHS) + 1}"] = nn.Linear(width, num_classes)
        self.classifier = nn.Sequential(layers)
        initialize(self)

    def forward(self, x):
        _check_input(self, x)
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


class VGGCifar(nn.Module):
    """Configuration D's convolutions with batch norm, global average pool (1×1 → 1×1 at
    32×32 input), flatten, one linear layer 512 → classes."""

    def __init__(self, num_classes=10, in_channels=3, config="D"):
        super().__init__()
        self.in_channels = in_channels
        self.features, channels = make_features(CONFIGS[config], in_channels, batch_norm=True)
        self.avgpool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)
        initialize(self)

    def forward(self, x):
        _check_input(self, x)
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def _vgg(name, config, doc, batch_norm=False):
    return register_variant(name, VGG, 224, 3, 1000, doc, config=config, batch_norm=batch_norm)


# Table 1's configurations, each as published and with batch norm after every convolution.
vgg11 = _vgg("vgg11", "A", "VGG configuration A (11 weight layers).")
vgg11_bn = _vgg("vgg11_bn", "A", "VGG configuration A (11 weight layers) with batch norm.",
                batch_norm=True)
vgg11_lrn = _vgg("vgg11_lrn", "A-LRN", "VGG configuration A-LRN (A with LRN after conv1).")
vgg11_lrn_bn = _vgg("vgg11_lrn_bn", "A-LRN",
                    "VGG configuration A-LRN (A with LRN after conv1) with batch norm.",
                    batch_norm=True)
vgg13 = _vgg("vgg13", "B", "VGG configuration B (13 weight layers).")
vgg13_bn = _vgg("vgg13_bn", "B", "VGG configuration B (13 weight layers) with batch norm.",
                batch_norm=True)
vgg16_c = _vgg("vgg16_c", "C", "VGG configuration C (16 weight layers, three of them 1×1).")
vgg16_c_bn = _vgg("vgg16_c_bn", "C",
                  "VGG configuration C (16 weight layers, three of them 1×1) with batch norm.",
                  batch_norm=True)
vgg16 = _vgg("vgg16", "D", "VGG configuration D (16 weight layers).")
vgg16_bn = _vgg("vgg16_bn", "D", "VGG configuration D (16 weight layers) with batch norm.",
                batch_norm=True)
vgg19 = _vgg("vgg19", "E", "VGG configuration E (19 weight layers).")
vgg19_bn = _vgg("vgg19_bn", "E", "VGG configuration E (19 weight layers) with batch norm.",
                batch_norm=True)


@register("vgg16_bn_cifar", input_size=32, num_classes=10,
          description="VGG-16-BN for 32×32: 13 convs with BN, then one linear layer")
def vgg16_bn_cifar(num_classes=1000, in_channels=3, **options):
    """VGG-16's 13 convolutions with batch norm, then one 512 → classes linear layer."""
    return VGGCifar(num_classes, in_channels, **options)


# Quick runs use the 32×32 VGG-16-BN: batch norm lets plain SGD at 0.01 train at once, and
# it has no 102M-weight FC layer to update. ``--variant vgg16`` for Table 1's D.
CLI_DEFAULTS = {"variant": "vgg16_bn_cifar", "optimizer": "sgd", "lr": 0.01, "batch_size": 64,
                "datasets": {"mnist": {"input_size": 32, "epochs": 1}}}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
