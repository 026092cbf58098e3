"""EfficientNetV2: Tan & Le (2021), "EfficientNetV2: Smaller Models and Faster Training".

Training-aware architecture search found that depthwise convolutions are slow in the
*early* layers, where maps are large and channels few: there they use the accelerators
poorly. EfficientNetV2 therefore starts with **Fused-MBConv** blocks (Figure 2), which
replace MBConv's 1×1 expansion + k×k depthwise pair by a single full k×k convolution:

    Fused-MBConv (t > 1):  k×k conv to t·C_in, stride s → BN → SiLU → 1×1 project → BN
    Fused-MBConv1 (t = 1): k×k conv to C_out, stride s → BN → SiLU
    + x (after stochastic depth) when s = 1 and C_in = C_out; no squeeze-and-excitation.

The later stages keep EfficientNet's MBConv with SE (``architectures.efficientnet.MBConv``;
squeeze width a quarter of the block's input channels). Smaller expansion ratios (4 early)
and only 3×3 kernels are the other search results (§3.3).

What this file builds
---------------------
* ``efficientnet_v2_s``: Table 4 of the paper, 21,458,488 parameters;
* ``efficientnet_v2_m`` and ``efficientnet_v2_l``: the paper gives only their sizes
  (Table 7); their stage tables come from the released code (the same as torchvision's):
  54,139,356 and 118,515,272 parameters.

The rows are used as written (no width or depth multiplier). All three end in a 1×1
convolution to 1280 channels, global pooling, dropout (0.2 / 0.3 / 0.4) and a FC layer;
stochastic depth rises linearly to 0.2 over the blocks; batch norm ε = 10⁻³, momentum 0.01.
Published evaluation sizes (Table 7): 384 for S, 480 for M and L. The paper's progressive
learning trains at smaller sizes with weaker regularisation first; that is how the network
is trained, not what it is, so it lives beside the training loop: ``minicnn.progressive``
(Table 6's stages), ``--progressive N`` on this file's command line, and ``--recipe paper``.
"""
from minicnn import nn
from architectures import register
from architectures.common import ConvBNAct, make_divisible
from architectures.efficientnet import BN_EPS, BN_MOMENTUM, EfficientNet, MBConv, Stage


# ----------------------------------------------------------------------------- modules
class FusedMBConv(nn.Module):
    """k×k conv (expansion fused in) → BN → SiLU [→ 1×1 linear projection → BN when t > 1],
    plus x after stochastic depth when s = 1 and in_channels = out_channels (Figure 2).

    The signature matches ``MBConv`` so both fit the same stage table.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio,
                 drop_path=0.0, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FusedMBConv: stride must be 1 or 2, got {stride}")
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        if expand_ratio == 1:
            self.block = nn.Sequential(ConvBNAct(in_channels, out_channels, kernel_size, stride,
                                                 activation=nn.SiLU, **bn))
        else:
            hidden = make_divisible(in_channels * expand_ratio, 8)
            self.block = nn.Sequential(
                ConvBNAct(in_channels, hidden, kernel_size, stride, activation=nn.SiLU, **bn),
                ConvBNAct(hidden, out_channels, 1, activation=None, **bn))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = nn.DropPath(drop_path) if self.use_residual and drop_path > 0 \
            else nn.Identity()

    def forward(self, x):
        y = self.block(x)
        return x + self.drop_path(y) if self.use_residual else y


# ----------------------------------------------------------------------------- the tables
# Table 4, "EfficientNetV2-S architecture" (stage 0 = Conv3×3 stride 2 stem with the first
# row's input width; the last stage = Conv1×1 & Pooling & FC, 1280 channels):
#   block, t, kernel, stride, in, out, layers             paper's operator
V2_S = [
    Stage(FusedMBConv, 1, 3, 1, 24, 24, 2),               # 1  Fused-MBConv1, k3×3
    Stage(FusedMBConv, 4, 3, 2, 24, 48, 4),               # 2  Fused-MBConv4, k3×3
    Stage(FusedMBConv, 4, 3, 2, 48, 64, 4),               # 3  Fused-MBConv4, k3×3
    Stage(MBConv, 4, 3, 2, 64, 128, 6),                   # 4  MBConv4, k3×3, SE0.25
    Stage(MBConv, 6, 3, 1, 128, 160, 9),                  # 5  MBConv6, k3×3, SE0.25
    Stage(MBConv, 6, 3, 2, 160, 256, 15),                 # 6  MBConv6, k3×3, SE0.25
]
# M and L: the released code's tables (the paper reports only their totals).
V2_M = [
    Stage(FusedMBConv, 1, 3, 1, 24, 24, 3),
    Stage(FusedMBConv, 4, 3, 2, 24, 48, 5),
    Stage(FusedMBConv, 4, 3, 2, 48, 80, 5),
    Stage(MBConv, 4, 3, 2, 80, 160, 7),
    Stage(MBConv, 6, 3, 1, 160, 176, 14),
    Stage(MBConv, 6, 3, 2, 176, 304, 18),
    Stage(MBConv, 6, 3, 1, 304, 512, 5),
]
V2_L = [
    Stage(FusedMBConv, 1, 3, 1, 32, 32, 4),
    Stage(FusedMBConv, 4, 3, 2, 32, 64, 7),
    Stage(FusedMBConv, 4, 3, 2, 64, 96, 7),
    Stage(MBConv, 4, 3, 2, 96, 192, 10),
    Stage(MBConv, 6, 3, 1, 192, 224, 19),
    Stage(MBConv, 6, 3, 2, 224, 384, 25),
    Stage(MBConv, 6, 3, 1, 384, 640, 7),
]
HEAD_CHANNELS = 1280


# ----------------------------------------------------------------------------- named models
@register("efficientnet_v2_s", input_size=384)
def efficientnet_v2_s(num_classes=1000, in_channels=3, dropout=0.2, **options):
    """EfficientNetV2-S (Table 4): three Fused-MBConv stages, three MBConv stages."""
    return EfficientNet(V2_S, HEAD_CHANNELS, dropout, num_classes, in_channels, **options)


@register("efficientnet_v2_m", input_size=480)
def efficientnet_v2_m(num_classes=1000, in_channels=3, dropout=0.3, **options):
    """EfficientNetV2-M (released configuration): 3 Fused-MBConv + 4 MBConv stages."""
    return EfficientNet(V2_M, HEAD_CHANNELS, dropout, num_classes, in_channels, **options)


@register("efficientnet_v2_l", input_size=480)
def efficientnet_v2_l(num_classes=1000, in_channels=3, dropout=0.4, **options):
    """EfficientNetV2-L (released configuration): 3 Fused-MBConv + 4 MBConv stages."""
    return EfficientNet(V2_L, HEAD_CHANNELS, dropout, num_classes, in_channels, **options)


# MNIST at 32 px: Adam at 3e-3 gave 93.95% after one epoch and fell to 81.79% over two;
# at 1e-3, two epochs reach 97.63%.
CLI_DEFAULTS = {"variant": "efficientnet_v2_s", "input_size": 32, "optimizer": "adam",
                "lr": 1e-3, "batch_size": 64, "epochs": 2}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
