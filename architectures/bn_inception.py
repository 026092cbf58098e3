"""BN-Inception: Ioffe & Szegedy (2015), "Batch Normalization: Accelerating Deep Network
Training by Reducing Internal Covariate Shift" (ICML 2015), the network of the appendix
(Figure 5, "Inception architecture").

GoogLeNet (Szegedy et al. 2014) with batch normalization applied to the input of every
nonlinearity (§4.2), and with the changes the appendix lists:

* every 5×5 convolution is replaced by two consecutive 3×3 convolutions with up to 128
  filters (the "double 3×3" branch: the same receptive field, fewer weights);
* the 28×28 stage gets a third module (3c) and the grid is reduced *inside* modules 3c
  and 4e — stride-2 convolutions beside a stride-2 max-pool whose output passes through
  unprojected — instead of by separate pooling layers;
* average or max pooling in the pooling branch, as the table says per module.

This is not the "Inception-v2" of the later "Rethinking the Inception architecture"
paper, which is a step toward Inception-v3.

What this file builds
---------------------
``bn_inception``: the appendix table row by row (``MODULES`` below), with

* Conv → BatchNorm → ReLU everywhere, convolutions without bias (batch norm's β takes
  the bias's place: §3.2, "the bias b can be ignored");
* no dropout (§4.2.1 removes it) and no auxiliary classifiers (the table has none);
* global average pooling (the table's 7×7 average pool at 224×224) and one fully
  connected layer to the classes.

**11,285,224 parameters** with 1000 classes.

How that compares:

* The table's filter counts make modules 4c and 4d 608 wide (160+160+160+128 and
  96+192+192+128) and 4e 1056, while its output-size column says 576 and 1024. This file
  follows the filter counts, as the Caffe model behind the widely used PyTorch port
  (``bninception`` of Cadene's pretrainedmodels) does; TF-slim's ``inception_v2``
  instead gives 4c and 4d 96-wide pool projections to get 576.
* That Caffe port also gives every convolution a bias before its batch norm: 11,285,224
  + 10,016 biases = 11,295,240 parameters, the "≈11.3M" usually quoted.
  ``conv_bias=True`` builds it.
* The appendix text states 13.6·10⁶ parameters. The table as printed gives the counts
  above; we know of no reading of the table that reaches 13.6M, so the table wins.

Details
-------
* Max-pooling in the stem uses ceil mode (Caffe's rounding): 112 → 56 and 56 → 28, as the
  table's sizes. In the stride-2 modules the pass-through max-pool is 3×3/2 with padding
  1, which gives the same size as the stride-2 3×3 convolutions beside it for *any* input
  size (ceil mode does only for even sizes).
* Average pooling in modules is 3×3/1 with padding 1 that counts the padding (Caffe).
* Batch norm uses ε = 1e-5. Convolutions start He-normal (fan-in; the paper does not
  say), the classifier with PyTorch's default.
* Minimum input **11×11** (the stem's ceil-mode pools need 6 pixels after the first
  convolution); published size 224×224.
"""
from collections import OrderedDict

from minicnn import functional as F, nn
from architectures import register

# ----------------------------------------------------------------------------- the table
# Figure 5 of the paper, the stem: 224² × 3 → 28² × 192.
#   convolution 7×7/2, 64          → 112² × 64
#   max pool 3×3/2                 → 56² × 64
#   convolution 3×3/1: #3×3 reduce 64, #3×3 192   → 56² × 192
#   max pool 3×3/2                 → 28² × 192
STEM = dict(conv1=64, conv2_reduce=64, conv2=192)

# Figure 5, the inception modules, one row each:
#   name, #1×1, #3×3 reduce, #3×3, double #3×3 reduce, double #3×3, pool, pool proj, stride
# A stride-2 module has no 1×1 branch and passes its max-pool through (proj 0).
MODULES = [
    ("3a", 64,  64,  64,  64,  96, "avg", 32,  1),     # 28² × 256
    ("3b", 64,  64,  96,  64,  96, "avg", 64,  1),     # 28² × 320
    ("3c",  0, 128, 160,  64,  96, "max",  0,  2),     # 14² × 576
    ("4a", 224, 64,  96,  96, 128, "avg", 128, 1),     # 14² × 576
    ("4b", 192, 96, 128,  96, 128, "avg", 128, 1),     # 14² × 576
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),    # 14² × 608
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),     # 14² × 608
    ("4e",  0, 128, 192, 192, 256, "max",  0,  2),     # 7² × 1056
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),    # 7² × 1024
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),    # 7² × 1024
]


# ----------------------------------------------------------------------------- modules
def conv_bn(in_channels, out_channels, kernel_size, stride=1, bias=False):
    """Conv ("same" padding) → BatchNorm → ReLU; ``bias=True`` only for the Caffe port
    (a bias before batch norm is cancelled by its mean subtraction)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                  bias=bias),
        nn.BatchNorm2d(out_channels),
        nn.ReLU())


class BNInceptionModule(nn.Module):
    """One row of the table: four (stride 1) or three (stride 2) branches, concatenated.

        1×1                                       → ch1x1          (absent at stride 2)
        1×1 reduce → 3×3 (stride s)               → ch3x3
        1×1 reduce → 3×3 → 3×3 (stride s)         → double_3x3
        pool 3×3 (stride s) [→ 1×1 projection]    → pool_proj, or in_channels unprojected

    At stride 2 the module halves the grid itself: its pooling branch is a max-pool
    whose output passes through, so the width grows by ch3x3 + double_3x3.
    """

    def __init__(self, in_channels, ch1x1, ch3x3_reduce, ch3x3, double_3x3_reduce,
                 double_3x3, pool="avg", pool_proj=0, stride=1, conv_bias=False):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"BNInceptionModule: pool must be 'avg' or 'max', got {pool!r}")
        if stride not in (1, 2):
            raise ValueError(f"BNInceptionModule: stride must be 1 or 2, got {stride!r}")
        if stride == 2 and (ch1x1 or pool_proj or pool != "max"):
            raise ValueError("BNInceptionModule: a stride-2 module has no 1×1 branch and a "
                             f"max-pool pass-through (ch1x1=0, pool='max', pool_proj=0); got "
                             f"ch1x1={ch1x1}, pool={pool!r}, pool_proj={pool_proj}")

        def conv(cin, cout, k, s=1):
            return conv_bn(cin, cout, k, s, bias=conv_bias)

        self.branch1x1 = conv(in_channels, ch1x1, 1) if ch1x1 else None
        self.branch3x3 = nn.Sequential(conv(in_channels, ch3x3_reduce, 1),
                                       conv(ch3x3_reduce, ch3x3, 3, stride))
        self.branch_double_3x3 = nn.Sequential(conv(in_channels, double_3x3_reduce, 1),
                                               conv(double_3x3_reduce, double_3x3, 3),
                                               conv(double_3x3, double_3x3, 3, stride))
        if pool == "avg":
            pooling = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=True)
        else:
            pooling = nn.MaxPool2d(3, stride=stride, padding=1)
        if pool_proj:
            self.branch_pool = nn.Sequential(pooling, conv(in_channels, pool_proj, 1))
        else:
            self.branch_pool = pooling
        self.out_channels = (ch1x1 + ch3x3 + double_3x3 + (pool_proj or in_channels))

    def forward(self, x):
        branches = [] if self.branch1x1 is None else [self.branch1x1(x)]
        branches += [self.branch3x3(x), self.branch_double_3x3(x), self.branch_pool(x)]
        return F.concat(branches, axis=1)


# ----------------------------------------------------------------------------- the network
class BNInception(nn.Module):
    """Figure 5: stem → inception 3a … 5b → global average pool → FC (no dropout)."""

    def __init__(self, num_classes=1000, in_channels=3, conv_bias=False):
        super().__init__()
        layers = OrderedDict(
            conv1=conv_bn(in_channels, STEM["conv1"], 7, stride=2, bias=conv_bias),
            pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),
            conv2_reduce=conv_bn(STEM["conv1"], STEM["conv2_reduce"], 1, bias=conv_bias),
            conv2=conv_bn(STEM["conv2_reduce"], STEM["conv2"], 3, bias=conv_bias),
            pool2=nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        channels = STEM["conv2"]
        for name, *widths in MODULES:
            module = BNInceptionModule(channels, *widths, conv_bias=conv_bias)
            layers[f"inception_{name}"] = module
            channels = module.out_channels
        self.features = nn.Sequential(layers)
        self.pool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        self._initialise()

    def _initialise(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.features(x))))


# ----------------------------------------------------------------------------- named models
@register("bn_inception", input_size=224)
def bn_inception(num_classes=1000, in_channels=3, **options):
    """BN-Inception, the batch-normalization paper's appendix table: 11,285,224 parameters."""
    return BNInception(num_classes, in_channels, **options)


# The paper trained with SGD and momentum at a raised learning rate, quickly decayed (§4.2.1);
# the numbers here are for short runs at a small input (32 px; the minimum is 11).
CLI_DEFAULTS = {"variant": "bn_inception", "input_size": 32, "optimizer": "sgd", "lr": 0.01,
                "momentum": 0.9, "batch_size": 32, "epochs": 1}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
