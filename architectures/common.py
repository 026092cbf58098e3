"""Building blocks several families share. Each family file still spells out its own
paper-specific modules; only the truly common pieces live here."""
from minicnn import nn
from minicnn.functional.geometry import pair


def make_divisible(value, divisor=8, min_value=None):
    """Round a channel count to the nearest multiple of ``divisor`` (never below 90% of it).

    The rule of the MobileNet/EfficientNet reference code: hardware likes multiples of 8,
    and the 90% floor keeps rounding down from removing too much width.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias: BN's β replaces it) → BatchNorm2d → activation.

    ``padding=None`` means "same" for odd kernels at stride 1: (k − 1)/2 · dilation.
    ``activation=None`` leaves the output linear (MobileNetV2's projection).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None,
                 groups=1, dilation=1, activation=nn.ReLU, bn_eps=1e-5, bn_momentum=0.1):
        kh, kw = pair(kernel_size, "kernel_size", "ConvBNAct")
        if padding is None:
            padding = ((kh - 1) // 2 * dilation, (kw - 1) // 2 * dilation)
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                            groups, bias=False),
                  nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2017): reweight channels by a learned gate.

    s = gate(W₂ · act(W₁ · GAP(x) + b₁) + b₂),  y = x · s   (per channel)

    The two fully connected layers are 1×1 convolutions with bias on the pooled (N, C, 1, 1)
    map: the same parameters as FC layers, without reshaping.
    """

    def __init__(self, channels, squeeze_channels, activation=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.pool = nn.GlobalAvgPool2d()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.activation = activation()
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = gate()

    def forward(self, x):
        s = self.gate(self.expand(self.activation(self.reduce(self.pool(x)))))
        return x * s
