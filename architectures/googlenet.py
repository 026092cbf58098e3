"""GoogLeNet (Inception v1): Szegedy et al. (2014), "Going Deeper with Convolutions",
CVPR 2015 (arXiv 1409.4842). Table 1 and Figure 2(b) are followed, with the layer
settings of the authors' release in Caffe (bvlc_googlenet) where the paper gives none.

The inception module (Figure 2(b)) runs four branches side by side on the same input and
concatenates their maps: a 1×1 convolution; a 1×1 "reduce" then 3×3; a 1×1 reduce then a
real 5×5; a 3×3/1 max-pool then a 1×1 "pool proj". The 1×1 reductions are what make the
module cheap: they shrink the channels before the expensive kernels. Every convolution,
reductions included, is followed by a ReLU.

Table 1 (224×224 input)::

    conv 7×7/2, 64                          112×112×64
    max-pool 3×3/2, LRN                      56×56×64
    conv 1×1, 64 ("reduce") then 3×3, 192    56×56×192
    LRN, max-pool 3×3/2                      28×28×192
    inception 3a, 3b                         28×28×480
    max-pool 3×3/2                           14×14×480
    inception 4a, 4b, 4c, 4d, 4e             14×14×832
    max-pool 3×3/2                            7×7×832
    inception 5a, 5b                          7×7×1024
    avg-pool 7×7/1, dropout 0.4               1×1×1024
    linear                                    classes

Auxiliary classifiers (Section 5) on the outputs of 4a and 4d, used in training only:
avg-pool 5×5/3 (14×14 → 4×4), conv 1×1 128 + ReLU, FC 1024 + ReLU, dropout 0.7, FC classes.
In training mode with ``aux_logits=True`` (the default) the model returns
``(logits, aux_4a, aux_4d)``; the training loop adds the auxiliary losses weighted by 0.3,
as the paper does. In eval mode it returns the logits alone.

Parameters at 1000 classes: 6,998,552 without the auxiliary heads (``aux_logits=False``),
13,378,280 with them. The build has conv biases, LRN, real 5×5 kernels and max-pools that
round their output size up (Caffe's ``ceil_mode``, which gives Table 1's 112 → 56 → 28 →
14 → 7). LRN uses Caffe's constants: n = 5, α = 1e-4 divided by n, β = 0.75, k = 1.

Departures for other input sizes, none at 224×224: the final 7×7 average pool is a global
average pool, and an auxiliary head pools with 5×5/3 windows when its map is at least
5×5 and then adaptively to the 4×4 its FC layer expects (torchvision pools adaptively
only). The strided pools set a minimum input of 47×47.

Initialization: He normal (fan_in) convolutions, N(0, 0.01) linear layers, zero biases.
The release used Xavier weights with biases of 0.2.

Training (Section 6): asynchronous SGD, momentum 0.9, learning rate decreased by 4% every
8 epochs, Polyak averaging for the final model.
"""
from collections import OrderedDict

from architectures import register
from minicnn import functional as F
from minicnn import nn

# Table 1, one row per inception module, columns in the table's order, and the max-pools
# between the groups. Output channels = #1×1 + #3×3 + #5×5 + pool proj.
#             name        #1×1  #3×3 reduce  #3×3  #5×5 reduce  #5×5  pool proj
INCEPTION = [
    ("inception3a",   64,     96,        128,     16,        32,      32),
    ("inception3b",  128,    128,        192,     32,        96,      64),
    "maxpool",
    ("inception4a",  192,     96,        208,     16,        48,      64),
    ("inception4b",  160,    112,        224,     24,        64,      64),
    ("inception4c",  128,    128,        256,     24,        64,      64),
    ("inception4d",  112,    144,        288,     32,        64,      64),
    ("inception4e",  256,    160,        320,     32,       128,     128),
    "maxpool",
    ("inception5a",  256,    160,        320,     32,       128,     128),
    ("inception5b",  384,    192,        384,     48,       128,     128),
]
AUX_TAPS = {"inception4a": "aux1", "inception4d": "aux2"}   # Section 5
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0, alpha_over_n=True)   # bvlc_googlenet
MIN_INPUT_SIZE = 47


def conv_relu(in_channels, out_channels, kernel_size, stride=1, padding=0):
    """A convolution (with bias) and its ReLU: every convolution of GoogLeNet."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
        relu=nn.ReLU()))


class Inception(nn.Module):
    """The inception module with dimension reductions (Figure 2(b)):

        y = concat[ 1×1(x),  3×3(1×1(x)),  5×5(1×1(x)),  1×1(maxpool₃ₓ₃(x)) ]

    along the channels. Padding keeps every branch at the input's height and width.
    """

    def __init__(self, in_channels, ch1x1, ch3x3_reduce, ch3x3, ch5x5_reduce, ch5x5,
                 pool_proj):
        super().__init__()
        self.branch1 = conv_relu(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(OrderedDict(
            reduce=conv_relu(in_channels, ch3x3_reduce, 1),
            conv3x3=conv_relu(ch3x3_reduce, ch3x3, 3, padding=1)))
        self.branch3 = nn.Sequential(OrderedDict(
            reduce=conv_relu(in_channels, ch5x5_reduce, 1),
            conv5x5=conv_relu(ch5x5_reduce, ch5x5, 5, padding=2)))
        self.branch4 = nn.Sequential(OrderedDict(
            pool=nn.MaxPool2d(3, 1, padding=1),
            proj=conv_relu(in_channels, pool_proj, 1)))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x):
        return F.concat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)],
                        axis=1)


class AuxiliaryClassifier(nn.Module):
    """Section 5's side classifier: avg-pool 5×5/3 → conv 1×1 128 → ReLU → FC 1024 →
    ReLU → dropout 0.7 → FC classes.

    At the published size the pool turns 14×14 into 4×4; the adaptive pool after it is
    then a no-op and only serves other input sizes (see the module docstring).
    ``conv_channels`` and ``fc_units`` are the paper's 128 and 1024 unless a test asks
    for a tiny head.
    """
    window, grid = 5, 4

    def __init__(self, in_channels, num_classes, dropout=0.7, conv_channels=128,
                 fc_units=1024):
        super().__init__()
        self.pool = nn.AvgPool2d(self.window, 3)
        self.to_grid = nn.AdaptiveAvgPool2d(self.grid)
        self.conv = conv_relu(in_channels, conv_channels, 1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(conv_channels * self.grid ** 2, fc_units)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(fc_units, num_classes)

    def forward(self, x):
        if min(x.shape[2:]) >= self.window:
            x = self.pool(x)
        x = self.flatten(self.conv(self.to_grid(x)))
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNet(nn.Module):
    """Table 1: ``stem`` → the inception modules and pools of ``INCEPTION`` (``blocks``)
    → global average pool → dropout 0.4 → ``fc``; ``aux`` heads on 4a and 4d."""

    def __init__(self, num_classes=1000, in_channels=3, aux_logits=True, dropout=0.4,
                 aux_dropout=0.7):
        super().__init__()
        self.in_channels, self.aux_logits = in_channels, aux_logits
        self.stem = nn.Sequential(OrderedDict(
            conv1=conv_relu(in_channels, 64, 7, stride=2, padding=3),
            pool1=nn.MaxPool2d(3, 2, ceil_mode=True),
            lrn1=nn.LocalResponseNorm(**LRN),
            conv2_reduce=conv_relu(64, 64, 1),
            conv2=conv_relu(64, 192, 3, padding=1),
            lrn2=nn.LocalResponseNorm(**LRN),
            pool2=nn.MaxPool2d(3, 2, ceil_mode=True)))
        self.blocks = nn.ModuleDict()
        self.aux = nn.ModuleDict()
        channels, pools = 192, 2
        for row in INCEPTION:
            if row == "maxpool":
                pools += 1
                self.blocks[f"pool{pools}"] = nn.MaxPool2d(3, 2, ceil_mode=True)
                continue
            name, *widths = row
            self.blocks[name] = Inception(channels, *widths)
            channels = self.blocks[name].out_channels
            if aux_logits and name in AUX_TAPS:
                self.aux[AUX_TAPS[name]] = AuxiliaryClassifier(channels, num_classes,
                                                               aux_dropout)
        self.avgpool = nn.GlobalAvgPool2d()   # Table 1's avg-pool 7×7/1 at 224×224
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        initialize(self)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"GoogLeNet: expected input (N, {self.in_channels}, H, W), "
                             f"got shape {x.shape}")
        if min(x.shape[2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"GoogLeNet: input must be at least {MIN_INPUT_SIZE}×"
                             f"{MIN_INPUT_SIZE} (five strided max-pools), "
                             f"got {x.shape[2]}×{x.shape[3]}")
        use_aux = self.aux_logits and self.training
        aux_outputs = []
        x = self.stem(x)
        for name, block in self.blocks.items():
            x = block(x)
            if use_aux and name in AUX_TAPS:
                aux_outputs.append(self.aux[AUX_TAPS[name]](x))
        logits = self.fc(self.dropout(self.flatten(self.avgpool(x))))
        return (logits, *aux_outputs) if use_aux else logits


def initialize(model):
    """He normal (fan_in) convolutions, N(0, 0.01) linear layers, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)


@register("googlenet", input_size=224,
          description="GoogLeNet (Inception v1), Table 1, aux heads on 4a/4d (13,378,280)")
def googlenet(num_classes=1000, in_channels=3, **options):
    """GoogLeNet as Table 1; ``aux_logits=False`` leaves out the auxiliary heads."""
    return GoogLeNet(num_classes, in_channels, **options)


# Quick runs: Adam at 1e-3 (SGD at 0.01 had barely moved after 60 steps); MNIST resized to
# 48×48, just above the 47×47 minimum; the auxiliary heads train too.
CLI_DEFAULTS = {"variant": "googlenet", "optimizer": "adam", "lr": 1e-3, "batch_size": 64,
                "datasets": {"mnist": {"input_size": 48, "epochs": 1}}}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
