"""Wide Residual Networks: Zagoruyko & Komodakis (2016), "Wide Residual Networks".

The paper's claim: a residual network gains more from width than from depth. WRN-d-k is a
pre-activation ResNet of depth d whose three CIFAR stages are k times wider than the
original 16/32/64 filters; a 16-layer net 8 times wider beats a thin ResNet-1001.

Table 1 of the paper (CIFAR, 32×32 input), block type B(3,3)::

    group   output   layers
    conv1   32×32    [3×3, 16]
    conv2   32×32    [3×3, 16·k ; 3×3, 16·k] × N
    conv3   16×16    [3×3, 32·k ; 3×3, 32·k] × N         N = (d − 4) / 6
    conv4    8×8     [3×3, 64·k ; 3×3, 64·k] × N
    avg-pool 1×1     [8×8]

The block (Figure 1(d), "wide-dropout") is the full pre-activation unit with dropout
between its two convolutions (§2.3, optional: ``dropout``)::

    y = conv3×3(dropout(relu(BN(conv3×3(relu(BN(x))))))) + shortcut

The shortcut is the identity, or a 1×1 convolution (no batch norm) of the pre-activated
input where the shape changes, as in the authors' code. After the last group: BN → ReLU →
global average pool → FC. The first group changes 16 → 16k channels at stride 1, so even
its first block projects (unless k = 1).

What this file builds
---------------------
* ``wrn_28_10`` (36,479,194 parameters at 10 classes), ``wrn_40_4`` (8,949,210),
  ``wrn_16_8`` (10,961,370), ``wrn_16_4`` (2,748,890), ``wrn_28_10_dropout`` (the paper's
  best CIFAR model, dropout 0.3 — same parameters as ``wrn_28_10``). ``wide_resnet_cifar(d,
  k)`` builds any other WRN-d-k.
* ``wide_resnet50_2`` (68,883,240) and ``wide_resnet101_2`` (126,886,696): the ImageNet
  WRN-50-2-bottleneck of §4 as released (torchvision): ResNet-50/101 whose bottleneck 3×3
  is twice as wide (``width_per_group=128``) with the stride on the 3×3 (fb.resnet.torch's
  placement, which the authors built on). Built with ``architectures.resnet.ResNet``.

The CIFAR WRNs default to 10 classes, the ImageNet ones to 1000.

Initialisation as the authors' code: He-normal (fan_in) for convolutions and the FC
layer, zero biases, BN γ = 1 and β = 0. ``drop_path_rate`` adds stochastic depth (linear
decay, as in architectures.resnet) to any of these.
"""
from collections import OrderedDict

from minicnn import nn
from architectures import register_variant
from architectures.resnet import drop_path_rates, imagenet_resnet

# ----------------------------------------------------------------------------- the table
# Table 1: (group name, base width multiplied by k, stride of its first block)
GROUPS = (
    ("conv2", 16, 1),
    ("conv3", 32, 2),
    ("conv4", 64, 2),
)
STEM_WIDTH = 16


# ----------------------------------------------------------------------------- modules
class WideBasicBlock(nn.Module):
    """Figure 1(d): BN → ReLU → conv3×3 → BN → ReLU → dropout → conv3×3, plus shortcut."""

    def __init__(self, in_channels, out_channels, stride=1, dropout=0.0, drop_path=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        projects = stride != 1 or in_channels != out_channels
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
                         if projects else None)
        self.drop_path = nn.DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        activated = self.relu(self.bn1(x))
        # the projection is a weighted layer: it reads the normalised input, the identity x
        identity = x if self.shortcut is None else self.shortcut(activated)
        y = self.dropout(self.relu(self.bn2(self.conv1(activated))))
        return self.drop_path(self.conv2(y)) + identity


class WideResNet(nn.Module):
    """WRN-d-k for CIFAR (Table 1): conv1, three groups of N = (d − 4)/6 wide blocks,
    BN → ReLU → global average pool → FC."""

    def __init__(self, depth, widen_factor, num_classes=10, in_channels=3, dropout=0.0,
                 drop_path_rate=0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet: depth must be 6N + 4 with N ≥ 1 (10, 16, 22, 28, "
                             f"40, ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"WideResNet: widen_factor k must be ≥ 1, got {widen_factor}")
        blocks_per_group = (depth - 4) // 6
        self.depth, self.widen_factor = depth, widen_factor
        self.conv1 = nn.Conv2d(in_channels, STEM_WIDTH, 3, padding=1, bias=False)
        rates = iter(drop_path_rates(blocks_per_group * len(GROUPS), drop_path_rate))
        channels = STEM_WIDTH
        groups = OrderedDict()
        for name, base_width, stride in GROUPS:
            width = base_width * widen_factor
            blocks = []
            for i in range(blocks_per_group):
                blocks.append(WideBasicBlock(channels, width, stride if i == 0 else 1,
                                             dropout, next(rates)))
                channels = width
            groups[name] = nn.Sequential(*blocks)
        self.groups = nn.Sequential(groups)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.avgpool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        self._initialise()

    def _initialise(self):
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"WideResNet: expected an (N, C, H, W) batch, got shape {x.shape}")
        x = self.relu(self.bn(self.groups(self.conv1(x))))
        return self.fc(self.flatten(self.avgpool(x)))

    def extra_repr(self):
        return f"WRN-{self.depth}-{self.widen_factor}"


# ----------------------------------------------------------------------------- named models
def wide_resnet_cifar(depth, widen_factor, num_classes=10, in_channels=3, **options):
    """WRN-``depth``-``widen_factor`` (options: dropout, drop_path_rate)."""
    return WideResNet(depth, widen_factor, num_classes, in_channels, **options)


def wide_resnet_imagenet(depth, num_classes=1000, in_channels=3, **options):
    """WRN-``depth``-2-bottleneck (ImageNet): the ResNet with 2× wider 3×3 convolutions."""
    options = {"width_per_group": 128, "stride_on_3x3": True, **options}
    return imagenet_resnet(depth, num_classes, in_channels, **options)


def _cifar(name, depth, widen_factor, doc, **settings):
    return register_variant(name, wide_resnet_cifar, 32, 3, 10, doc, depth=depth,
                            widen_factor=widen_factor, **settings)


wrn_28_10 = _cifar("wrn_28_10", 28, 10,
                   "WRN-28-10 (CIFAR): 36.5M parameters, the paper's headline model.")
wrn_28_10_dropout = _cifar(
    "wrn_28_10_dropout", 28, 10,
    "WRN-28-10 with dropout 0.3 between the convolutions (Table 6's best CIFAR model).",
    dropout=0.3)
wrn_40_4 = _cifar("wrn_40_4", 40, 4, "WRN-40-4 (CIFAR): 8.9M parameters.")
wrn_16_8 = _cifar("wrn_16_8", 16, 8, "WRN-16-8 (CIFAR): 11.0M parameters.")
wrn_16_4 = _cifar("wrn_16_4", 16, 4,
                  "WRN-16-4 (CIFAR): 2.7M parameters, the smallest of Table 4.")
wide_resnet50_2 = register_variant(
    "wide_resnet50_2", wide_resnet_imagenet, 224, 3, 1000,
    "WRN-50-2-bottleneck (ImageNet): ResNet-50 with 2× wider 3×3 convolutions.", depth=50)
wide_resnet101_2 = register_variant(
    "wide_resnet101_2", wide_resnet_imagenet, 224, 3, 1000,
    "WRN-101-2-bottleneck (ImageNet): ResNet-101 with 2× wider 3×3 convolutions.", depth=101)


CLI_DEFAULTS = {"variant": "wrn_16_4", "input_size": 20, "optimizer": "sgd", "lr": 0.1,
                "batch_size": 64, "epochs": 2}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
