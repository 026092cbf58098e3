"""Squeeze-and-Excitation Networks: Hu, Shen & Sun (2017), "Squeeze-and-Excitation
Networks" (CVPR 2018; extended with Albanie & Wu in TPAMI 2019).

The SE block recalibrates channels with a gate computed from the whole feature map
(§3, Figure 1)::

    squeeze     z = GAP(u)                       (N, C, H, W) -> (N, C, 1, 1)
    excitation  s = σ(W₂ · relu(W₁ z + b₁) + b₂)   W₁: C -> C/r,  W₂: C/r -> C
    scale       y = u · s                        one weight per channel, in (0, 1)

with reduction ratio r = 16 and fully connected layers with bias. It is
``architectures.common.SqueezeExcitation`` (the FCs written as 1×1 convolutions on the
pooled map: identical parameters), reused here and by EfficientNet/MobileNetV3-style blocks.

The block is added to existing architectures rather than defining a new one (Figure 2 and
Figure 3): SE-Inception gates an Inception module's output; SE-ResNet gates the residual
branch *before* the sum with the identity::

    y = relu(SE(F(x)) + shortcut(x))

Table 1 of the paper, stage conv2 (56×56) of its three columns::

    ResNet-50            [1×1, 64;  3×3, 64;         1×1, 256]                  × 3
    SE-ResNet-50         [1×1, 64;  3×3, 64;         1×1, 256;  fc, [16, 256]]  × 3
    SE-ResNeXt-50 32×4d  [1×1, 128; 3×3, 128, C=32;  1×1, 256;  fc, [16, 256]]  × 3

(the fc pair "[16, 256]" is the SE block: C/r = 16 hidden units, 256 outputs; the other
stages follow with 512, 1024 and 2048 outputs, r = 16 throughout)

What this file builds
---------------------
* ``SEInceptionModule``: SE applied to the output of ``InceptionModule``, a small
  BN-Inception-style module defined here (1×1 | 1×1→3×3 | 1×1→3×3→3×3 | pool→1×1).
* ``se_resnet50`` (28,088,024 parameters), ``se_resnet101`` (49,326,872),
  ``se_resnet152`` (66,821,848): ResNet-50/101/152 of architectures/resnet.py (stride on
  the first 1×1, as the released SE-ResNets) with an SE block in every bottleneck.
* ``se_resnext50_32x4d`` (27,559,896) and ``se_resnext101_32x4d`` (48,955,416): the
  ResNeXt models of architectures/resnext.py (stride on the grouped 3×3) with SE blocks.
* ``se_resnet20`` (272,095 at 10 classes) and ``se_resnet110`` (1,742,200 at 10 classes):
  the CIFAR ResNets of §4.2 of He et al. with SE blocks (the paper's CIFAR experiments
  use SE-ResNet-110). At 16 channels r = 16 leaves one hidden unit: C/r is floored at 1.

Every residual model takes ``reduction`` (r) and ``drop_path_rate`` (stochastic depth),
plus the options of ``architectures.resnet.ResNet``. The SE FC layers keep the default
uniform initialisation; everything else is initialised as in architectures/resnet.py.
"""
from minicnn import functional as F
from minicnn import nn
from architectures import register_variant
from architectures.common import ConvBNAct, SqueezeExcitation
from architectures.resnet import IMAGENET_DEPTHS, BasicBlock, Bottleneck, ResNet, CIFAR_WIDTHS
from architectures.resnext import IMAGENET_CONFIGS

REDUCTION = 16   # r, §6.1 (Table 10): the best accuracy/complexity trade-off


def squeeze_width(channels, reduction):
    """C / r hidden units, at least one."""
    return max(1, channels // reduction)


# ----------------------------------------------------------------------------- SE-Inception
class InceptionModule(nn.Module):
    """A small Inception module (BN-Inception style, Ioffe & Szegedy 2015, Figure 5)::

        ┌ 1×1 ──────────────────────────────── out_1x1 ─────┐
        ├ 1×1 (reduce_3x3) → 3×3 ───────────── out_3x3 ─────┤
    x ──┤                                                    ├─ concat along channels
        ├ 1×1 (reduce_double) → 3×3 → 3×3 ──── out_double ──┤
        └ 3×3 max pool, stride 1 → 1×1 ─────── pool_proj ───┘

    output channels = out_1x1 + out_3x3 + out_double + pool_proj.

    Every convolution is Conv → BN → ReLU (``ConvBNAct``); the two stacked 3×3s see a 5×5
    window for fewer weights than one 5×5.
    """

    def __init__(self, in_channels, out_1x1, reduce_3x3, out_3x3, reduce_double, out_double,
                 pool_proj):
        super().__init__()
        self.branch1x1 = ConvBNAct(in_channels, out_1x1, 1)
        self.branch3x3 = nn.Sequential(ConvBNAct(in_channels, reduce_3x3, 1),
                                       ConvBNAct(reduce_3x3, out_3x3, 3))
        self.branch_double3x3 = nn.Sequential(ConvBNAct(in_channels, reduce_double, 1),
                                              ConvBNAct(reduce_double, out_double, 3),
                                              ConvBNAct(out_double, out_double, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                         ConvBNAct(in_channels, pool_proj, 1))
        self.out_channels = out_1x1 + out_3x3 + out_double + pool_proj

    def forward(self, x):
        return F.concat([self.branch1x1(x), self.branch3x3(x), self.branch_double3x3(x),
                         self.branch_pool(x)], axis=1)


class SEInceptionModule(nn.Module):
    """Figure 2 of the paper: y = SE(Inception(x)) — the gate rescales the concatenated
    branch outputs, so the module learns which branches (and channels) to trust."""

    def __init__(self, in_channels, out_1x1, reduce_3x3, out_3x3, reduce_double, out_double,
                 pool_proj, reduction=REDUCTION):
        super().__init__()
        self.inception = InceptionModule(in_channels, out_1x1, reduce_3x3, out_3x3,
                                         reduce_double, out_double, pool_proj)
        channels = self.inception.out_channels
        self.se = SqueezeExcitation(channels, squeeze_width(channels, reduction))
        self.out_channels = channels

    def forward(self, x):
        return self.se(self.inception(x))


# ----------------------------------------------------------------------------- SE-ResNet
class SEBasicBlock(BasicBlock):
    """Figure 3 with a basic block: y = relu(SE(BN(conv(relu(BN(conv(x)))))) + shortcut(x))."""

    def __init__(self, in_channels, channels, stride=1, shortcut=None, drop_path=0.0,
                 reduction=REDUCTION):
        super().__init__(in_channels, channels, stride, shortcut, drop_path)
        out_channels = channels * self.expansion
        self.se = SqueezeExcitation(out_channels, squeeze_width(out_channels, reduction))

    def residual(self, x):
        return self.se(super().residual(x))


class SEBottleneck(Bottleneck):
    """Figure 3 (right), the SE-ResNet module: the bottleneck's output, gated per channel,
    then added to the shortcut. With ``groups`` > 1 it is the SE-ResNeXt module."""

    def __init__(self, in_channels, channels, stride=1, shortcut=None, drop_path=0.0,
                 reduction=REDUCTION, **bottleneck_options):
        super().__init__(in_channels, channels, stride, shortcut, drop_path,
                         **bottleneck_options)
        out_channels = channels * self.expansion
        self.se = SqueezeExcitation(out_channels, squeeze_width(out_channels, reduction))

    def residual(self, x):
        return self.se(super().residual(x))


# ----------------------------------------------------------------------------- named models
def se_resnet(depth, num_classes=1000, in_channels=3, **options):
    """SE-ResNet-``depth`` (50/101/152) on Table 1's ResNet."""
    kind, layers = IMAGENET_DEPTHS[depth]
    block = SEBottleneck if kind == "bottleneck" else SEBasicBlock
    return ResNet(block, layers, num_classes, in_channels, **options)


def se_resnext(config, num_classes=1000, in_channels=3, **options):
    """SE-ResNeXt from a ResNeXt configuration name (e.g. "resnext50_32x4d")."""
    depth, cardinality, group_width = IMAGENET_CONFIGS[config]
    _, layers = IMAGENET_DEPTHS[depth]
    options = {"groups": cardinality, "width_per_group": group_width, "stride_on_3x3": True,
               **options}
    return ResNet(SEBottleneck, layers, num_classes, in_channels, **options)


def se_cifar_resnet(depth, num_classes=10, in_channels=3, **options):
    """A §4.2 CIFAR ResNet (depth 6n + 2, option A shortcuts) with SE basic blocks."""
    if (depth - 2) % 6:
        raise ValueError(f"SE CIFAR ResNet: depth must be 6n + 2, got {depth}")
    n = (depth - 2) // 6
    options = {"stem": "cifar", "shortcut": "A", **options}
    return ResNet(SEBasicBlock, (n,) * 3, num_classes, in_channels, widths=CIFAR_WIDTHS,
                  **options)


se_resnet50 = register_variant(
    "se_resnet50", se_resnet, 224, 3, 1000,
    "SE-ResNet-50 (Table 1): 28.1M parameters, +2.5M over ResNet-50.", depth=50)
se_resnet101 = register_variant("se_resnet101", se_resnet, 224, 3, 1000,
                                "SE-ResNet-101 (Table 2): 49.3M parameters.", depth=101)
se_resnet152 = register_variant("se_resnet152", se_resnet, 224, 3, 1000,
                                "SE-ResNet-152 (Table 2): 66.8M parameters.", depth=152)
se_resnext50_32x4d = register_variant(
    "se_resnext50_32x4d", se_resnext, 224, 3, 1000,
    "SE-ResNeXt-50 (32×4d) (Table 1): 27.6M parameters.", config="resnext50_32x4d")
se_resnext101_32x4d = register_variant(
    "se_resnext101_32x4d", se_resnext, 224, 3, 1000,
    "SE-ResNeXt-101 (32×4d) (Table 2): 49.0M parameters.", config="resnext101_32x4d")
se_resnet20 = register_variant(
    "se_resnet20", se_cifar_resnet, 32, 3, 10,
    "CIFAR ResNet-20 with SE blocks (a small model for quick runs).", depth=20)
se_resnet110 = register_variant(
    "se_resnet110", se_cifar_resnet, 32, 3, 10,
    "CIFAR ResNet-110 with SE blocks (the paper's CIFAR-10 experiment).", depth=110)


CLI_DEFAULTS = {"variant": "se_resnet20", "input_size": 28, "optimizer": "sgd", "lr": 0.1,
                "batch_size": 64, "epochs": 2}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
