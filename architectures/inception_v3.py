"""Inception-v3: Szegedy, Vanhoucke, Ioffe, Shlens & Wojna (2015), "Rethinking the
Inception Architecture for Computer Vision" (CVPR 2016).

The ideas (§2–§6): keep the representation wide and reduce the grid gently; factorize
large convolutions — a 5×5 into two 3×3 (Figure 5), an n×n into a 1×n followed by an n×1
(Figure 6, n = 7 on the 17×17 grid), and on the coarsest grid into parallel 1×3 and 3×1
(Figure 7, "expanded filter bank outputs"); shrink the grid with a stride-2 convolution
branch beside a stride-2 pooling branch, concatenated (Figure 10), so neither a
representational bottleneck nor an expensive pre-pool widening is needed.

What this file builds
---------------------
``inception_v3`` — the reference build that TF-slim, Keras and torchvision share:
23,834,568 parameters without the auxiliary head, 27,161,264 with it. Read top to bottom:

* stem: Conv 32 3×3/2 V, Conv 32 3×3 V, Conv 64 3×3, MaxPool 3×3/2 V, Conv 80 1×1,
  Conv 192 3×3 V, MaxPool 3×3/2 V  ("V" = valid, no padding): 299² → 35²×192;
* three 35×35 modules (``InceptionA``), four 17×17 modules (``InceptionB``, the
  factorized 1×7/7×1 module) and two 8×8 modules (``InceptionC``), with the two
  grid-size reductions (``ReductionA``: 35→17, ``ReductionB``: 17→8) between;
* global average pooling, dropout, one fully connected layer (2048 → classes);
* the auxiliary classifier on the last 17×17 module (Figure 8, §7's "BN-auxiliary").

How the reference departs from Table 1 of the paper (those choices are the variant
``inception_v3_paper``):

* the stem: after the 147²×64 pooling the reference has a 1×1 convolution to 80 and a
  valid 3×3 to 192 at 71², then a max-pool to 35²×192; Table 1 has a valid 3×3 to 80, a
  3×3/2 to 192 and one more (padded) 3×3 to 288;
* the 35×35 modules keep GoogLeNet's 5×5 branch (1×1 48 → 5×5 64) next to the double-3×3
  branch, where Figure 5 replaces every 5×5; they take 192 channels and widen to
  256, 288, 288, where Table 1 has 288 → 288 throughout;
* four 17×17 modules, where Table 1 says five.

``inception_v3_paper`` follows Table 1 row by row. The paper gives no filter counts
inside its modules, so the variant takes them from the reference build: the 3×3 that
replaces the 5×5 keeps that branch's 48 → 64 widths, the pooling projection of every
35×35 module is 64 (so 64 + 64 + 96 + 64 = 288, Table 1's width), and the fifth 17×17
module repeats the reference's 160-wide one (7×7 widths 128, 160, 160, 160, 192).
Result: 25,954,248 parameters without the auxiliary head, 29,280,944 with it.

Modules are named by the grid they work on (A = 35×35, B = 17×17, C = 8×8) as in
Inception-v4; torchvision calls the same five classes InceptionA, C, E (modules) and
InceptionB, D (reductions).

The auxiliary classifier
------------------------
On the 17×17×768 map: AvgPool 5×5/3 → 5²×768, Conv 128 1×1 (BN, ReLU), Conv 768 5×5
(BN, ReLU; the batch-normalized "fully connected" layer of §7, a 5×5 convolution over
the 5×5 map), global pooling, FC 768 → classes. In training mode with
``aux_logits=True`` the model returns ``(logits, aux_logits)``; in eval mode only logits.
TF-slim and torchvision's recipes weight the auxiliary loss by 0.4 (``AUX_LOSS_WEIGHT``;
the shared training loop reads it).

Input sizes
-----------
299×299 is the published size. The trunk works from **75×75** up: the stride-2 valid
convolutions and pools shrink 75 → 37 → 35 → 17 → 15 → 7 → 3 → 1, and one pixel less
leaves the last reduction nothing to pool (the same for both variants). The auxiliary
head's 5×5/3 pooling gives the 5×5 its 5×5 convolution needs only from a 17×17 grid,
i.e. from 299×299 inputs; on the smaller grids of smaller inputs it pools *adaptively*
to 5×5 instead (as torchvision's GoogLeNet heads do), so every input of at least 75
trains with the auxiliary head. At 299 and above the head is exactly the reference one.

Details
-------
* Every convolution is Conv (no bias) → BatchNorm (ε = 0.001, TensorFlow's) → ReLU.
* Average pooling inside modules is 3×3/1 "same" and, as TensorFlow's, does not count
  the padding (torchvision counts it; parameters are the same). ``pool_counts_padding=True``
  builds torchvision's version, the one its pretrained weights need.
* Dropout before the classifier is 0.2 (TF-slim's keep probability 0.8).
* Weights start as in TF-slim and torchvision: truncated normal (cut at ±2σ) with
  σ = 0.1 for every convolution and the classifier, 0.01 for the auxiliary 5×5
  convolution and 0.001 for the auxiliary classifier; zero biases.
* Training recipe (§8): RMSProp with decay 0.9 and ε = 1.0, learning rate 0.045 decayed
  by 0.94 every two epochs, gradient clipping at 2.0, label smoothing 0.1 (§7).
  ``CLI_DEFAULTS`` carries the optimizer and the label smoothing.
"""
from collections import OrderedDict

import numpy as np

from minicnn import Tensor, functional as F, nn
from minicnn.backend import get_array_module
from architectures import register
from architectures.common import ConvBNAct

BN_EPS = 1e-3          # TensorFlow's batch-norm epsilon, used by every reference build
AUX_LOSS_WEIGHT = 0.4  # the auxiliary classifier's loss weight in TF-slim's training


# ----------------------------------------------------------------------------- the tables
# Stems, one row per layer: ("conv", out_channels, kernel, stride, padding) or
# ("maxpool", kernel, stride). Sizes in the comments are for a 299×299 input.
REFERENCE_STEM = [
    ("conv", 32, 3, 2, 0),       # 299² → 149²×32
    ("conv", 32, 3, 1, 0),       # 149² → 147²×32
    ("conv", 64, 3, 1, 1),       # 147² → 147²×64
    ("maxpool", 3, 2),           # 147² → 73²×64
    ("conv", 80, 1, 1, 0),       # 73²  → 73²×80
    ("conv", 192, 3, 1, 0),      # 73²  → 71²×192
    ("maxpool", 3, 2),           # 71²  → 35²×192
]
PAPER_STEM = [                   # Table 1, rows 1–7
    ("conv", 32, 3, 2, 0),       # conv 3×3/2          299² → 149²×32
    ("conv", 32, 3, 1, 0),       # conv 3×3/1          149² → 147²×32
    ("conv", 64, 3, 1, 1),       # conv padded 3×3/1   147² → 147²×64
    ("maxpool", 3, 2),           # pool 3×3/2          147² → 73²×64
    ("conv", 80, 3, 1, 0),       # conv 3×3/1          73²  → 71²×80
    ("conv", 192, 3, 2, 0),      # conv 3×3/2          71²  → 35²×192
    ("conv", 288, 3, 1, 1),      # conv 3×3/1          35²  → 35²×288 (padded)
]

# The modules after the stem, one row per module: (name, block, widths).
#   InceptionA   branch1x1, (reduce, k×k) with k = 5 or 3, (reduce, 3×3, 3×3), pool_proj
#   ReductionA   3×3/2, (reduce, 3×3, 3×3/2)                       + max-pool pass-through
#   InceptionB   branch1x1, (reduce, 1×7, 7×1), (reduce, 7×1, 1×7, 7×1, 1×7), pool_proj
#   ReductionB   (reduce, 3×3/2), (reduce, 1×7, 7×1, 3×3/2)         + max-pool pass-through
#   InceptionC   branch1x1, (reduce, 1×3 ‖ 3×1), (reduce, 3×3, 1×3 ‖ 3×1), pool_proj
# Names are TF-slim's. AUX marks the module the auxiliary classifier reads.
AUX = "Mixed_6e"


def _b17(width):
    """The 17×17 module of width ``width`` on its 7×7 branches, ending at 192 each."""
    return dict(branch1x1=192, branch7x7=(width, width, 192),
                branch7x7dbl=(width, width, width, width, 192), pool_proj=192)


_C8 = dict(branch1x1=320, branch3x3=(384, 384), branch3x3dbl=(448, 384, 384), pool_proj=192)

REFERENCE_MODULES = [
    ("Mixed_5b", "InceptionA", dict(branch1x1=64, branch5x5=(48, 64),               # 35²×256
                                    branch3x3dbl=(64, 96, 96), pool_proj=32)),
    ("Mixed_5c", "InceptionA", dict(branch1x1=64, branch5x5=(48, 64),               # 35²×288
                                    branch3x3dbl=(64, 96, 96), pool_proj=64)),
    ("Mixed_5d", "InceptionA", dict(branch1x1=64, branch5x5=(48, 64),               # 35²×288
                                    branch3x3dbl=(64, 96, 96), pool_proj=64)),
    ("Mixed_6a", "ReductionA", dict(branch3x3=384, branch3x3dbl=(64, 96, 96))),     # 17²×768
    ("Mixed_6b", "InceptionB", _b17(128)),                                          # 17²×768
    ("Mixed_6c", "InceptionB", _b17(160)),
    ("Mixed_6d", "InceptionB", _b17(160)),
    ("Mixed_6e", "InceptionB", _b17(192)),
    ("Mixed_7a", "ReductionB", dict(branch3x3=(192, 320),                           # 8²×1280
                                    branch7x7x3=(192, 192, 192, 192))),
    ("Mixed_7b", "InceptionC", _C8),                                                # 8²×2048
    ("Mixed_7c", "InceptionC", _C8),                                                # 8²×2048
]

_A35_PAPER = dict(branch1x1=64, branch5x5=(48, 64), branch3x3dbl=(64, 96, 96),
                  pool_proj=64, middle_kernel=3)          # Figure 5: the 5×5 becomes a 3×3
PAPER_MODULES = [
    ("Mixed_5b", "InceptionA", _A35_PAPER),               # 3 × Inception (Figure 5), 35²×288
    ("Mixed_5c", "InceptionA", _A35_PAPER),
    ("Mixed_5d", "InceptionA", _A35_PAPER),
    ("Mixed_6a", "ReductionA", dict(branch3x3=384, branch3x3dbl=(64, 96, 96))),  # 17²×768
    ("Mixed_6b", "InceptionB", _b17(128)),                # 5 × Inception (Figure 6), 17²×768
    ("Mixed_6c", "InceptionB", _b17(160)),
    ("Mixed_6d", "InceptionB", _b17(160)),
    ("Mixed_6e", "InceptionB", _b17(160)),
    ("Mixed_6f", "InceptionB", _b17(192)),
    ("Mixed_7a", "ReductionB", dict(branch3x3=(192, 320),                        # 8²×1280
                                    branch7x7x3=(192, 192, 192, 192))),
    ("Mixed_7b", "InceptionC", _C8),                      # 2 × Inception (Figure 7), 8²×2048
    ("Mixed_7c", "InceptionC", _C8),
]
PAPER_AUX = "Mixed_6f"


# ----------------------------------------------------------------------------- helpers
def conv_bn(in_channels, out_channels, kernel_size, stride=1, padding=None):
    """Conv (no bias) → BatchNorm (ε = 0.001) → ReLU; ``padding=None`` is "same" (stride 1).

    ``kernel_size`` may be a pair: ``conv_bn(c, c, (1, 7))`` pads (0, 3).
    """
    return ConvBNAct(in_channels, out_channels, kernel_size, stride, padding, bn_eps=BN_EPS)


def same_avg_pool():
    """3×3/1 average pooling that keeps the size and averages only real pixels (TF)."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


def truncated_normal_(tensor, std, rng=None):
    """Fill with N(0, std²) cut at ±2·std (TensorFlow's ``truncated_normal``): a value drawn
    outside the cut is drawn again, so the result has no outliers."""
    nn.init.normal_(tensor, 0.0, std, rng)
    data = tensor.data
    xp = get_array_module(data)
    outside = xp.abs(data) > 2 * std
    while bool(outside.any()):
        redraw = Tensor(np.empty(int(outside.sum()), dtype=data.dtype))
        nn.init.normal_(redraw, 0.0, std, rng)
        data[outside] = xp.asarray(redraw.data)
        outside = xp.abs(data) > 2 * std
    return tensor


def build_stem(rows, in_channels):
    """A Sequential from stem rows ("conv", out, kernel, stride, padding) / ("maxpool", k, s).

    Returns ``(stem, out_channels)``; layers are named conv1, conv2, ..., pool1, ...
    """
    layers, channels, counts = OrderedDict(), in_channels, {"conv": 0, "maxpool": 0}
    for row in rows:
        kind = row[0]
        counts[kind] += 1
        if kind == "conv":
            _, out_channels, kernel_size, stride, padding = row
            layers[f"conv{counts['conv']}"] = conv_bn(channels, out_channels, kernel_size,
                                                      stride, padding)
            channels = out_channels
        elif kind == "maxpool":
            _, kernel_size, stride = row
            layers[f"pool{counts['maxpool']}"] = nn.MaxPool2d(kernel_size, stride)
        else:
            raise ValueError(f"stem: unknown row kind {kind!r} in {row!r}; expected "
                             f"'conv' or 'maxpool'")
    return nn.Sequential(layers), channels


def chain(in_channels, widths, kernels, strides=None, padding=None):
    """A branch of convolutions in sequence: ``widths[i]`` filters of ``kernels[i]``.

    Stride 1 convolutions are "same" and stride-2 ones valid, as in every Inception
    table, unless ``padding`` gives a layer's padding (0 = valid, None = the default).
    """
    if not len(widths) == len(kernels):
        raise ValueError(f"chain: {len(widths)} widths {widths} but {len(kernels)} kernels "
                         f"{kernels}; expected one kernel per convolution")
    strides = strides or [1] * len(widths)
    padding = padding or [None] * len(widths)
    layers, channels = [], in_channels
    for width, kernel_size, stride, pad in zip(widths, kernels, strides, padding):
        if pad is None and stride > 1:
            pad = 0
        layers.append(conv_bn(channels, width, kernel_size, stride, pad))
        channels = width
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- modules
class InceptionA(nn.Module):
    """The 35×35 module (Figure 5): four branches, concatenated along channels.

        1×1                                      → branch1x1
        1×1 reduce → k×k                         → branch5x5[1]   (k = 5 reference, 3 paper)
        1×1 reduce → 3×3 → 3×3                   → branch3x3dbl[2]
        3×3 average pool → 1×1                   → pool_proj

    out_channels = branch1x1 + branch5x5[1] + branch3x3dbl[2] + pool_proj.
    """

    def __init__(self, in_channels, branch1x1, branch5x5, branch3x3dbl, pool_proj,
                 middle_kernel=5):
        super().__init__()
        self.branch1x1 = conv_bn(in_channels, branch1x1, 1)
        self.branch5x5 = chain(in_channels, branch5x5, (1, middle_kernel))
        self.branch3x3dbl = chain(in_channels, branch3x3dbl, (1, 3, 3))
        self.branch_pool = nn.Sequential(same_avg_pool(), conv_bn(in_channels, pool_proj, 1))
        self.out_channels = branch1x1 + branch5x5[-1] + branch3x3dbl[-1] + pool_proj

    def forward(self, x):
        return F.concat([self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x),
                         self.branch_pool(x)], axis=1)


class ReductionA(nn.Module):
    """Grid reduction 35×35 → 17×17 (Figure 10): stride-2 convolutions beside a stride-2
    max-pool, so the grid halves while the width grows (no bottleneck).

        3×3/2 V                                  → branch3x3
        1×1 reduce → 3×3 → 3×3/2 V               → branch3x3dbl[2]
        3×3/2 V max pool (pass-through)          → in_channels

    out_channels = branch3x3 + branch3x3dbl[2] + in_channels  (288 → 384 + 96 + 288 = 768).
    """

    def __init__(self, in_channels, branch3x3, branch3x3dbl):
        super().__init__()
        self.branch3x3 = conv_bn(in_channels, branch3x3, 3, stride=2, padding=0)
        self.branch3x3dbl = chain(in_channels, branch3x3dbl, (1, 3, 3), (1, 1, 2))
        self.branch_pool = nn.MaxPool2d(3, stride=2)
        self.out_channels = branch3x3 + branch3x3dbl[-1] + in_channels

    def forward(self, x):
        return F.concat([self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)], axis=1)


class InceptionB(nn.Module):
    """The 17×17 module (Figure 6, n = 7): each n×n factorized into 1×n then n×1.

        1×1                                      → branch1x1
        1×1 reduce → 1×n → n×1                   → branch7x7[2]
        1×1 reduce → n×1 → 1×n → n×1 → 1×n       → branch7x7dbl[4]
        3×3 average pool → 1×1                   → pool_proj

    A 1×n followed by an n×1 sees an n×n window with 2n instead of n² weights per
    input–output channel pair (§3.2): 14 instead of 49 for n = 7.
    """

    def __init__(self, in_channels, branch1x1, branch7x7, branch7x7dbl, pool_proj, n=7):
        super().__init__()
        row, column = (1, n), (n, 1)
        self.branch1x1 = conv_bn(in_channels, branch1x1, 1)
        self.branch7x7 = chain(in_channels, branch7x7, (1, row, column))
        self.branch7x7dbl = chain(in_channels, branch7x7dbl, (1, column, row, column, row))
        self.branch_pool = nn.Sequential(same_avg_pool(), conv_bn(in_channels, pool_proj, 1))
        self.out_channels = branch1x1 + branch7x7[-1] + branch7x7dbl[-1] + pool_proj

    def forward(self, x):
        return F.concat([self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x),
                         self.branch_pool(x)], axis=1)


class ReductionB(nn.Module):
    """Grid reduction 17×17 → 8×8 (the reference build's Figure-10 reduction):

        1×1 reduce → 3×3/2 V                     → branch3x3[1]
        1×1 reduce → 1×7 → 7×1 → 3×3/2 V         → branch7x7x3[3]
        3×3/2 V max pool (pass-through)          → in_channels

    out_channels = branch3x3[1] + branch7x7x3[3] + in_channels  (320 + 192 + 768 = 1280).
    """

    def __init__(self, in_channels, branch3x3, branch7x7x3, n=7):
        super().__init__()
        self.branch3x3 = chain(in_channels, branch3x3, (1, 3), (1, 2))
        self.branch7x7x3 = chain(in_channels, branch7x7x3, (1, (1, n), (n, 1), 3), (1, 1, 1, 2))
        self.branch_pool = nn.MaxPool2d(3, stride=2)
        self.out_channels = branch3x3[-1] + branch7x7x3[-1] + in_channels

    def forward(self, x):
        return F.concat([self.branch3x3(x), self.branch7x7x3(x), self.branch_pool(x)], axis=1)


class SplitConv(nn.Module):
    """Figure 7's expanded filter bank: a 1×3 and a 3×1 side by side on the same input,
    concatenated (2·width channels), instead of one after the other."""

    def __init__(self, in_channels, width):
        super().__init__()
        self.conv1x3 = conv_bn(in_channels, width, (1, 3))
        self.conv3x1 = conv_bn(in_channels, width, (3, 1))

    def forward(self, x):
        return F.concat([self.conv1x3(x), self.conv3x1(x)], axis=1)


class InceptionC(nn.Module):
    """The 8×8 module (Figure 7): the 3×3s split into parallel 1×3 and 3×1 branches,
    widening the output to promote high-dimensional representations (§2, principle 2).

        1×1                                      → branch1x1
        1×1 reduce → (1×3 ‖ 3×1)                 → 2·branch3x3[1]
        1×1 reduce → 3×3 → (1×3 ‖ 3×1)           → 2·branch3x3dbl[2]
        3×3 average pool → 1×1                   → pool_proj

    out_channels = 320 + 2·384 + 2·384 + 192 = 2048 in the reference build.
    """

    def __init__(self, in_channels, branch1x1, branch3x3, branch3x3dbl, pool_proj):
        super().__init__()
        reduce, width = branch3x3
        self.branch1x1 = conv_bn(in_channels, branch1x1, 1)
        self.branch3x3 = nn.Sequential(conv_bn(in_channels, reduce, 1), SplitConv(reduce, width))
        reduce_dbl, middle, width_dbl = branch3x3dbl
        self.branch3x3dbl = nn.Sequential(conv_bn(in_channels, reduce_dbl, 1),
                                          conv_bn(reduce_dbl, middle, 3),
                                          SplitConv(middle, width_dbl))
        self.branch_pool = nn.Sequential(same_avg_pool(), conv_bn(in_channels, pool_proj, 1))
        self.out_channels = branch1x1 + 2 * width + 2 * width_dbl + pool_proj

    def forward(self, x):
        return F.concat([self.branch1x1(x), self.branch3x3(x), self.branch3x3dbl(x),
                         self.branch_pool(x)], axis=1)


class AuxiliaryClassifier(nn.Module):
    """Figure 8 with §7's batch norm: AvgPool 5×5/3 → Conv 1×1 (BN, ReLU) → Conv 5×5
    (BN, ReLU) → global pool → FC.

    The 5×5 convolution needs a 5×5 map, which the 5×5/3 pooling makes from a 17×17 grid
    (299×299 inputs). A smaller grid is pooled adaptively to 5×5 instead, so that smaller
    inputs train with the head too (see the module docstring).
    """

    pooled_size = 5

    def __init__(self, in_channels, num_classes, conv_channels=128, hidden_channels=768):
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3)
        self.adaptive_pool = nn.AdaptiveAvgPool2d(self.pooled_size)
        self.conv0 = conv_bn(in_channels, conv_channels, 1)
        self.conv1 = conv_bn(conv_channels, hidden_channels, 5, padding=0)
        self.conv1[0].init_std = 0.01       # TF-slim / torchvision: σ = 0.01 here
        self.flatten = nn.Sequential(nn.GlobalAvgPool2d(), nn.Flatten())
        self.fc = nn.Linear(hidden_channels, num_classes)
        self.fc.init_std = 0.001            # and σ = 0.001 for the auxiliary logits

    def forward(self, x):
        grid = min(x.shape[2], x.shape[3])
        pooled_side = (grid - 5) // 3 + 1 if grid >= 5 else 0
        x = self.pool(x) if pooled_side >= self.pooled_size else self.adaptive_pool(x)
        return self.fc(self.flatten(self.conv1(self.conv0(x))))


BLOCKS = {"InceptionA": InceptionA, "ReductionA": ReductionA, "InceptionB": InceptionB,
          "ReductionB": ReductionB, "InceptionC": InceptionC}


# ----------------------------------------------------------------------------- the network
class InceptionV3(nn.Module):
    """Stem → modules of the table → global average pool → dropout → FC, with the
    auxiliary classifier read from module ``aux_source`` in training mode.

    ``pool_counts_padding=True`` makes the modules' 3×3/1 average pools divide by 9 at the
    border too, counting the zero padding, as torchvision's build does (its pretrained
    weights were trained that way); the default averages only real pixels, as TensorFlow.
    """

    def __init__(self, stem_rows, module_rows, aux_source, num_classes=1000, in_channels=3,
                 aux_logits=True, dropout=0.2, pool_counts_padding=False):
        super().__init__()
        stem, channels = build_stem(stem_rows, in_channels)
        layers = OrderedDict(stem=stem)
        aux_channels = None
        for name, block, widths in module_rows:
            layers[name] = BLOCKS[block](channels, **widths)
            channels = layers[name].out_channels
            if name == aux_source:
                aux_channels = channels
        self.features = nn.Sequential(layers)
        if pool_counts_padding:   # the only average pools in the trunk are the 3×3/1 ones
            for module in self.features.modules():
                if isinstance(module, nn.AvgPool2d):
                    module.count_include_pad = True
        self.aux_source = aux_source
        self.aux_logits = (AuxiliaryClassifier(aux_channels, num_classes)
                           if aux_logits else None)
        self.aux_loss_weight = AUX_LOSS_WEIGHT     # read by minicnn.train
        self.pool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)
        self._initialise()

    def _initialise(self):
        """TF-slim / torchvision: truncated normal, σ = 0.1 unless a layer says otherwise."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                truncated_normal_(module.weight, getattr(module, "init_std", 0.1))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        aux = None
        for name, layer in self.features.named_children():
            x = layer(x)
            if name == self.aux_source and self.training and self.aux_logits is not None:
                aux = self.aux_logits(x)
        logits = self.fc(self.dropout(self.flatten(self.pool(x))))
        return (logits, aux) if aux is not None else logits


# ----------------------------------------------------------------------------- named models
@register("inception_v3", input_size=299)
def inception_v3(num_classes=1000, in_channels=3, aux_logits=True, **options):
    """Inception-v3, the TF-slim/Keras/torchvision reference build (27,161,264 with aux)."""
    return InceptionV3(REFERENCE_STEM, REFERENCE_MODULES, AUX, num_classes, in_channels,
                       aux_logits, **options)


@register("inception_v3_paper", input_size=299)
def inception_v3_paper(num_classes=1000, in_channels=3, aux_logits=True, **options):
    """Inception-v3 as Table 1 of the paper (29,280,944 with aux, 25,954,248 without)."""
    return InceptionV3(PAPER_STEM, PAPER_MODULES, PAPER_AUX, num_classes, in_channels,
                       aux_logits, **options)


# The paper's recipe (§7, §8) is the default: RMSProp in TensorFlow's form (decay 0.9,
# ε = 1.0 inside the root, momentum 0.9 as TF-slim), learning rate 0.045 decayed ×0.94
# every two epochs, label smoothing 0.1, on the smallest input the network takes (75).
# That learning rate was tuned for 50 replicas × 32 images; a short MNIST run on one CPU
# diverges with it, so the MNIST settings below use Adam.
CLI_DEFAULTS = {
    "variant": "inception_v3", "input_size": 75, "epochs": 10, "batch_size": 32,
    "optimizer": "rmsprop", "lr": 0.045, "momentum": 0.9, "schedule": "decay:2:0.94",
    "optimizer_options": {"rmsprop": {"alpha": 0.9, "eps": 1.0, "tf_style": True}},
    "label_smoothing": 0.1,
    "datasets": {"mnist": {"optimizer": "adam", "lr": 0.003, "schedule": "cosine",
                           "epochs": 2}},
}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
