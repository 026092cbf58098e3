"""ResNet: He, Zhang, Ren & Sun (2015), "Deep Residual Learning for Image Recognition",
with its best-known descendants: pre-activation ResNet (He et al. 2016), stochastic depth
(Huang et al. 2016) and the model tweaks of "Bag of Tricks" (He, T. et al. 2019).

A residual block learns a correction F(x) to its input instead of a whole new mapping::

    y = relu(F(x) + shortcut(x))          F = two 3×3 convs (basic) or 1×1-3×3-1×1 (bottleneck)

When a stage halves the resolution and widens the channels, the shortcut must change shape
too. The paper's §4.1 offers three shortcuts (Table 3): **A** zero-pads the new channels
and subsamples (no parameters), **B** projects with a strided 1×1 convolution where shapes
change and is the identity elsewhere, **C** projects everywhere.

What this file builds
---------------------
* ``resnet18/34/50/101/152``: Table 1 (ImageNet, 224×224), option B shortcuts with batch
  norm: 11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 / 60,192,808 parameters.
  The paper's bottleneck puts the stride-2 of a downsampling block on its *first* 1×1
  convolution (the released Caffe models). torchvision (and fb.resnet.torch before it)
  moves it to the 3×3 ("ResNet v1.5"), which is Bag of Tricks' **ResNet-B**: 4.09 instead
  of 3.86 billion multiply-adds for ResNet-50 at 224×224, and no parameter more.
* Bag of Tricks tweaks (Figure 2), each an option of ``ResNet`` and named cumulatively as
  GluonCV's v1b/v1c/v1d models (and timm's ``resnet50d``) apply them:
  ``stride_on_3x3=True`` (ResNet-B), ``stem="deep"`` (ResNet-C: three 3×3 convolutions
  32-32-64 instead of the 7×7), ``avg_down=True`` (ResNet-D: a 2×2 average pool, then a
  stride-1 projection, so the shortcut no longer skips 3/4 of its input):
  ``resnet50_b`` (B), ``resnet50_c`` (B+C), ``resnet50_d``, ``resnet18_d``, ``resnet101_d``
  (B+C+D).
* CIFAR ResNets (§4.2): 3×3 stem with 16 filters, three stages of n blocks with 16/32/64
  filters, global pool, FC; option A shortcuts; depth 6n + 2: ``resnet20/32/44/56/110/1202``
  (at 10 classes resnet20 269,722 and resnet110 1,727,962 parameters; paper: 0.27M, 1.7M).
* ``resnet18_cifar``/``resnet34_cifar``/``resnet50_cifar``: the ImageNet ResNets with a
  3×3 stride-1 stem and no max pool (the popular CIFAR port; the benchmarks time
  ``resnet18_cifar`` at 10 classes on 32×32).
* Pre-activation ResNet-v2 (He et al. 2016, "Identity Mappings in Deep Residual Networks",
  Figure 4(e), the *full pre-activation* unit): BN → ReLU → conv → BN → ReLU → conv, and a
  shortcut that stays a clean identity (no ReLU after the sum); one final BN → ReLU
  before pooling. ``preact_resnet18/34/50/101/152`` (ImageNet: 11,687,720 / 21,795,880 /
  25,549,352 / 44,541,480 / 60,185,128 parameters — the shortcut projections lose their
  BN) and ``preact_resnet110/164/1001`` (CIFAR, at 10 classes 1,727,962 / 1,703,258 /
  10,327,706; Tables 2-3 of that paper: 1.7M, 1.7M, 10.2M). A projection
  shortcut (a weighted layer) reads the pre-activated input, as in the authors' code; an
  identity or zero-padding shortcut reads x itself. The stem is a bare convolution (and
  max pool): the first unit's BN → ReLU normalises it. (The authors' Torch code puts
  BN → ReLU in the stem and skips the first unit's; the parameter count is the same.)
* Stochastic depth (Huang, Sun, Liu, Sedra & Weinberger 2016, "Deep Networks with Stochastic
  Depth"): during training block l keeps its residual branch with probability
  p_l = 1 − (l/L)(1 − p_L), the linear decay rule of their Eq. (4), p_L = 0.5. Any
  residual family here takes ``drop_path_rate`` = 1 − p_L; ``resnet110_stochastic_depth``
  is their CIFAR ResNet-110. At test time the whole network runs. The paper scales a kept
  branch by p_l at test time; ``DropPath`` scales it by 1/p_l during training instead
  ("inverted"), which has the same expectation and leaves inference untouched.

The CIFAR constructors default to 10 classes (their published configuration), the
ImageNet ones to 1000; ``architectures.create`` always passes ``num_classes``.

Initialisation as torchvision: He-normal (fan_out) convolutions, BN γ = 1 and β = 0, the
default uniform fully connected layer; ``zero_init_residual=True`` starts each block's last
BN γ at 0 (Bag of Tricks' "zero γ"), so every block begins as the identity. The head is a
global average pool, so any input size works.
"""
from collections import OrderedDict

from minicnn import functional as F
from minicnn import nn
from architectures import register_variant

# ----------------------------------------------------------------------------- the tables
# Table 1 of the paper. The stem is conv1 (7×7, 64, stride 2) and a 3×3 max pool of
# stride 2; then four stages (torchvision's layer1..layer4, the paper's conv2_x..conv5_x)
# of 64, 128, 256, 512 filters; the first block of stages 2-4 halves the resolution:
#
#   layer name  output   18-layer        34-layer        50-layer             101 / 152
#   conv2_x     56×56    [3×3, 64]×2     [3×3, 64]×3     [1×1,64 3×3,64 1×1,256]×3    ×3 / ×3
#   conv3_x     28×28    [3×3,128]×2     [3×3,128]×4     [1×1,128 ... 1×1,512]×4      ×4 / ×8
#   conv4_x     14×14    [3×3,256]×2     [3×3,256]×6     [1×1,256 ... 1×1,1024]×6     ×23 / ×36
#   conv5_x      7×7     [3×3,512]×2     [3×3,512]×3     [1×1,512 ... 1×1,2048]×3     ×3 / ×3
IMAGENET_WIDTHS = (64, 128, 256, 512)
IMAGENET_DEPTHS = {   # depth: (block, blocks per stage conv2_x..conv5_x)
    18:  ("basic",      (2, 2, 2, 2)),
    34:  ("basic",      (3, 4, 6, 3)),
    50:  ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# §4.2 (CIFAR-10): 3×3 conv with 16 filters, then 2n layers on each of the feature-map
# sizes 32, 16, 8 with 16, 32, 64 filters: depth = 6n + 2. Option A shortcuts.
CIFAR_WIDTHS = (16, 32, 64)

# "Identity Mappings" Tables 2-3 (CIFAR): ResNet-110 of basic units, and ResNet-164/1001 of
# bottleneck units (depth = 9n + 2), on the same 16/32/64 stages (bottleneck outputs ×4).
PREACT_CIFAR_DEPTHS = {110: ("basic", 18), 164: ("bottleneck", 18), 1001: ("bottleneck", 111)}


# ----------------------------------------------------------------------------- building blocks
def conv3x3(in_channels, out_channels, stride=1, groups=1):
    """3×3 convolution, padding 1, no bias (the batch norm after it has a β)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, groups=groups, bias=False)


def conv1x1(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)


def drop_path_rates(num_blocks, drop_path_rate):
    """Stochastic depth's linear decay rule (Huang et al. 2016, Eq. 4).

    Block l (1-based) of L survives with p_l = 1 − (l/L)(1 − p_L), so it is dropped with
    probability (l/L) · drop_path_rate, where drop_path_rate = 1 − p_L: the first block is
    almost never dropped (early features are used by everything after them), the last one
    with probability 1 − p_L.
    """
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"stochastic depth: drop_path_rate (1 - p_L) must lie in [0, 1), "
                         f"got {drop_path_rate}")
    return [drop_path_rate * (l + 1) / num_blocks for l in range(num_blocks)]


class ZeroPadShortcut(nn.Module):
    """Shortcut option A (§4.1): identity on the old channels, zeros for the new ones,
    subsampling by the stride. No parameters, so a plain CIFAR ResNet has exactly as many
    weights as its plain counterpart."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ZeroPadShortcut: expected (N, {self.in_channels}, H, W) input, "
                             f"got shape {x.shape}")
        return F.zero_pad_subsample(x, self.out_channels, self.stride)

    def extra_repr(self):
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}"


def projection_shortcut(in_channels, out_channels, stride, avg_down=False, batch_norm=True):
    """Shortcut option B/C: a 1×1 convolution (Eq. 2, W_s x) followed by batch norm.

    ``avg_down`` is Bag of Tricks' ResNet-D: average-pool 2×2 with the stride first, then
    project at stride 1, so every input position contributes. Pre-activation units project
    without batch norm (the input they project is already normalised).
    """
    layers = []
    if avg_down and stride != 1:
        layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
        stride = 1
    layers.append(conv1x1(in_channels, out_channels, stride))
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """The building block of Figure 2 / Figure 5 (left), for ResNet-18/34 and CIFAR:

        y = relu(BN(conv3×3(relu(BN(conv3×3(x))))) + shortcut(x))

    The first convolution carries the stride. ``drop_path`` is the probability that
    stochastic depth drops the residual branch (whole samples) in training.
    """
    expansion = 1
    preactivation = False

    def __init__(self, in_channels, channels, stride=1, shortcut=None, drop_path=0.0):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity() if shortcut is None else shortcut
        self.drop_path = nn.DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def residual(self, x):
        """F(x): the branch that learns the correction."""
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def last_norm(self):
        return self.bn2

    def forward(self, x):
        return F.relu(self.drop_path(self.residual(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """The bottleneck block of Figure 5 (right), for ResNet-50/101/152:

        y = relu(BN(conv1×1↑(relu(BN(conv3×3(relu(BN(conv1×1↓(x))))))))) + shortcut(x))

    The 1×1 reduces to ``width`` channels, the 3×3 works at that width, the last 1×1
    restores 4·channels (``expansion``). ResNeXt's template (Xie et al. 2016, form (c))
    is the same block with a grouped 3×3:

        width = ⌊channels · width_per_group / 64⌋ · groups

    (groups = 1, width_per_group = 64 gives plain ResNet; 32 groups of 4 channels at stage 1
    give ResNeXt-50 32×4d's 128; width_per_group = 128 gives Wide ResNet-50-2.)
    ``stride_on_3x3``: put the stride on the 3×3 (ResNet-B / v1.5 / ResNeXt) instead of on
    the first 1×1 (the paper's Caffe models).
    """
    expansion = 4
    preactivation = False

    def __init__(self, in_channels, channels, stride=1, shortcut=None, drop_path=0.0,
                 groups=1, width_per_group=64, stride_on_3x3=False):
        super().__init__()
        width = int(channels * width_per_group / 64) * groups
        stride_1x1, stride_3x3 = (1, stride) if stride_on_3x3 else (stride, 1)
        self.conv1 = conv1x1(in_channels, width, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, channels * self.expansion)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity() if shortcut is None else shortcut
        self.drop_path = nn.DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def residual(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))

    def last_norm(self):
        return self.bn3

    def forward(self, x):
        return F.relu(self.drop_path(self.residual(x)) + self.shortcut(x))


class _PreActivationUnit(nn.Module):
    """What both pre-activation units share: y = x + F(x), nothing after the sum.

    With the identity kept clean, x_L = x_l + Σ F(x_i) for any deeper L: the gradient
    reaches every unit directly (Eq. 4-5 of "Identity Mappings").

    ``shortcut_input`` says what the shortcut reads: ``"input"``, x itself (the identity,
    and the zero-padding shortcut, which must stay an identity on the old channels), or
    ``"activated"``, relu(BN(x)) — what a projection reads in the authors' code: it has
    weights, and like every weighted layer of the unit it sees the pre-activated input.
    """
    preactivation = True
    SHORTCUT_INPUTS = ("input", "activated")

    def _finish_init(self, shortcut, drop_path, shortcut_input):
        if shortcut_input not in self.SHORTCUT_INPUTS:
            raise ValueError(f"{type(self).__name__}: shortcut_input must be one of "
                             f"{self.SHORTCUT_INPUTS}, got {shortcut_input!r}")
        if shortcut is None and shortcut_input != "input":
            raise ValueError(f"{type(self).__name__}: the identity shortcut (shortcut=None) "
                             f"reads the unit's input; shortcut_input='activated' needs a "
                             f"shortcut module")
        self.shortcut = nn.Identity() if shortcut is None else shortcut
        self.shortcut_reads_activation = shortcut_input == "activated"
        self.drop_path = nn.DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        activated = self.relu(self.bn1(x))
        identity = self.shortcut(activated if self.shortcut_reads_activation else x)
        return self.drop_path(self.residual(activated)) + identity


class PreActBasicBlock(_PreActivationUnit):
    """Full pre-activation unit, Figure 4(e) of He et al. 2016, basic form:

        y = x + conv3×3(relu(BN(conv3×3(relu(BN(x))))))
    """
    expansion = 1

    def __init__(self, in_channels, channels, stride=1, shortcut=None, drop_path=0.0,
                 shortcut_input="input"):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self._finish_init(shortcut, drop_path, shortcut_input)

    def residual(self, activated):
        """F applied to the already pre-activated input relu(BN(x))."""
        return self.conv2(self.relu(self.bn2(self.conv1(activated))))

    def last_norm(self):
        return None  # nothing to zero: the branch ends in a convolution


class PreActBottleneck(_PreActivationUnit):
    """Full pre-activation bottleneck (ResNet-164/1001 of He et al. 2016, and v2-50+):

        y = x + conv1×1↑(relu(BN(conv3×3(relu(BN(conv1×1↓(relu(BN(x)))))))))

    The stride sits on the 3×3 as in the authors' code.
    """
    expansion = 4

    def __init__(self, in_channels, channels, stride=1, shortcut=None, drop_path=0.0,
                 shortcut_input="input"):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv1 = conv1x1(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels)
        self.conv3 = conv1x1(channels, channels * self.expansion)
        self._finish_init(shortcut, drop_path, shortcut_input)

    def residual(self, activated):
        x = self.relu(self.bn2(self.conv1(activated)))
        x = self.relu(self.bn3(self.conv2(x)))
        return self.conv3(x)

    def last_norm(self):
        return None


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck,
          "preact_basic": PreActBasicBlock, "preact_bottleneck": PreActBottleneck}


# ----------------------------------------------------------------------------- the network
class ResNet(nn.Module):
    """stem → stages of residual blocks → global average pool → fully connected.

    ``block``: a block class (or a key of ``BLOCKS``); ``layers``: blocks per stage;
    ``widths``: the ``channels`` argument of each stage's blocks (their output is
    ``channels · block.expansion``); the first block of every stage after the first has
    stride 2.

    Options
      stem            "imagenet": 7×7/2 conv, 3×3/2 max pool;  "deep": ResNet-C's three 3×3
                      convs (``stem_width``, ``stem_width``, widths[0]) and the max pool;
                      "cifar": one 3×3/1 conv with widths[0] filters, no pool.
      shortcut        "A" zero-padding, "B" projection where shapes change, "C" always.
      avg_down        ResNet-D: average-pool before the projection.
      drop_path_rate  stochastic depth's 1 − p_L (linear decay over all blocks).
      zero_init_residual  start the last BN γ of each branch at 0.
      **block_options passed to every block (groups, width_per_group, stride_on_3x3).
    """

    def __init__(self, block, layers, num_classes=1000, in_channels=3,
                 widths=IMAGENET_WIDTHS, stem="imagenet", stem_width=32, shortcut="B",
                 avg_down=False, drop_path_rate=0.0, zero_init_residual=False,
                 **block_options):
        super().__init__()
        block = BLOCKS[block] if isinstance(block, str) else block
        if len(layers) != len(widths):
            raise ValueError(f"ResNet: {len(layers)} stage depths {tuple(layers)} but "
                             f"{len(widths)} stage widths {tuple(widths)}")
        if shortcut not in ("A", "B", "C"):
            raise ValueError(f"ResNet: shortcut must be 'A', 'B' or 'C' (§4.1), got {shortcut!r}")
        self.block, self.shortcut_option, self.avg_down = block, shortcut, avg_down
        self.stem = self._make_stem(stem, in_channels, widths[0], stem_width, block.preactivation)

        rates = iter(drop_path_rates(sum(layers), drop_path_rate))
        channels = widths[0]
        self.num_stages = len(layers)
        for index, (width, depth) in enumerate(zip(widths, layers)):
            stride = 1 if index == 0 else 2
            stage, channels = self._make_stage(channels, width, depth, stride, rates,
                                               block_options)
            setattr(self, f"layer{index + 1}", stage)

        if block.preactivation:  # the last unit's sum is not normalised yet (§3.2)
            self.final_norm = nn.BatchNorm2d(channels)
            self.final_relu = nn.ReLU()
        self.avgpool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        self._initialise(zero_init_residual)

    @staticmethod
    def _make_stem(kind, in_channels, out_channels, stem_width, preactivation):
        """The layers before the first stage. Pre-activation networks leave the stem's last
        convolution bare: the first unit's BN → ReLU follows it."""
        if kind == "imagenet":
            convs, pool = [(in_channels, out_channels, 7, 2)], True
        elif kind == "deep":
            convs = [(in_channels, stem_width, 3, 2), (stem_width, stem_width, 3, 1),
                     (stem_width, out_channels, 3, 1)]
            pool = True
        elif kind == "cifar":
            convs, pool = [(in_channels, out_channels, 3, 1)], False
        else:
            raise ValueError(f"ResNet: stem must be 'imagenet', 'deep' or 'cifar', got {kind!r}")
        layers = OrderedDict()
        for i, (cin, cout, kernel, stride) in enumerate(convs, start=1):
            layers[f"conv{i}"] = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
            if i < len(convs) or not preactivation:
                layers[f"bn{i}"] = nn.BatchNorm2d(cout)
                layers[f"relu{i}"] = nn.ReLU()
        if pool:
            layers["maxpool"] = nn.MaxPool2d(3, 2, padding=1)
        return nn.Sequential(layers)

    def _make_shortcut(self, in_channels, out_channels, stride):
        """(shortcut module or None for the identity, what a pre-activation unit feeds it)."""
        shapes_change = stride != 1 or in_channels != out_channels
        if self.shortcut_option == "A" and shapes_change:
            return ZeroPadShortcut(in_channels, out_channels, stride), "input"
        if shapes_change or self.shortcut_option == "C":
            return projection_shortcut(in_channels, out_channels, stride, self.avg_down,
                                       batch_norm=not self.block.preactivation), "activated"
        return None, "input"

    def _make_stage(self, in_channels, width, depth, stride, rates, block_options):
        out_channels = width * self.block.expansion
        blocks = []
        for i in range(depth):
            block_stride = stride if i == 0 else 1
            shortcut, shortcut_input = self._make_shortcut(in_channels, out_channels,
                                                           block_stride)
            wiring = {"shortcut_input": shortcut_input} if self.block.preactivation else {}
            blocks.append(self.block(in_channels, width, block_stride, shortcut,
                                     drop_path=next(rates), **wiring, **block_options))
            in_channels = out_channels
        return nn.Sequential(*blocks), out_channels

    def _initialise(self, zero_init_residual):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                norm = module.last_norm() if hasattr(module, "last_norm") else None
                if norm is not None:
                    nn.init.zeros_(norm.weight)

    def stages(self):
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x):
        """Everything before the pooled classifier: (N, C, H, W) feature maps."""
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__}: expected an (N, C, H, W) batch, got "
                             f"shape {x.shape}")
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        if self.block.preactivation:
            x = self.final_relu(self.final_norm(x))
        return x

    def forward(self, x):
        return self.fc(self.flatten(self.avgpool(self.forward_features(x))))


# ----------------------------------------------------------------------------- named models
def imagenet_resnet(depth, num_classes=1000, in_channels=3, preactivation=False, **options):
    """A Table 1 ResNet of ``depth`` 18/34/50/101/152 (keyword options as ``ResNet``)."""
    if depth not in IMAGENET_DEPTHS:
        raise ValueError(f"ImageNet ResNet: depth must be one of {sorted(IMAGENET_DEPTHS)}, "
                         f"got {depth}")
    block, layers = IMAGENET_DEPTHS[depth]
    block = "preact_" + block if preactivation else block
    return ResNet(block, layers, num_classes, in_channels, **options)


def cifar_resnet(depth, num_classes=10, in_channels=3, **options):
    """A §4.2 CIFAR ResNet of depth 6n + 2 (options as ``ResNet``)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet: depth must be 6n + 2, got {depth}")
    n = (depth - 2) // 6
    options = {"stem": "cifar", "shortcut": "A", **options}
    return ResNet("basic", (n,) * 3, num_classes, in_channels, widths=CIFAR_WIDTHS, **options)


def _imagenet(name, depth, doc, **settings):
    return register_variant(name, imagenet_resnet, 224, 3, 1000, doc, depth=depth, **settings)


def _cifar(name, depth, doc, **settings):
    return register_variant(name, cifar_resnet, 32, 3, 10, doc, depth=depth, **settings)


# Table 1, option B shortcuts, stride on the first 1×1 of a bottleneck (the paper's models).
resnet18 = _imagenet("resnet18", 18, "ResNet-18 (Table 1): basic blocks [2, 2, 2, 2].")
resnet34 = _imagenet("resnet34", 34, "ResNet-34 (Table 1): basic blocks [3, 4, 6, 3].")
resnet50 = _imagenet("resnet50", 50, "ResNet-50 (Table 1): bottlenecks [3, 4, 6, 3].")
resnet101 = _imagenet("resnet101", 101, "ResNet-101 (Table 1): bottlenecks [3, 4, 23, 3].")
resnet152 = _imagenet("resnet152", 152, "ResNet-152 (Table 1): bottlenecks [3, 8, 36, 3].")

# Bag of Tricks, Figure 2, cumulatively (GluonCV v1b / v1c / v1d).
resnet50_b = _imagenet("resnet50_b", 50,
                       "ResNet-50-B: stride on the bottleneck's 3×3 (ResNet v1.5).",
                       stride_on_3x3=True)
resnet50_c = _imagenet("resnet50_c", 50,
                       "ResNet-50-C: ResNet-B plus a deep stem of three 3×3 convs.",
                       stride_on_3x3=True, stem="deep")
resnet50_d = _imagenet("resnet50_d", 50,
                       "ResNet-50-D: ResNet-C plus average-pool downsampling shortcuts.",
                       stride_on_3x3=True, stem="deep", avg_down=True)
resnet101_d = _imagenet("resnet101_d", 101, "ResNet-101-D: tweaks B, C and D on ResNet-101.",
                        stride_on_3x3=True, stem="deep", avg_down=True)
resnet18_d = _imagenet("resnet18_d", 18, "ResNet-18-D: deep stem and average-pool shortcuts.",
                       stem="deep", avg_down=True)

# He et al. 2016, full pre-activation units (ImageNet).
preact_resnet18 = _imagenet("preact_resnet18", 18,
                            "Pre-activation ResNet-18 (full pre-activation units).",
                            preactivation=True)
preact_resnet34 = _imagenet("preact_resnet34", 34, "Pre-activation ResNet-34.",
                            preactivation=True)
preact_resnet50 = _imagenet("preact_resnet50", 50, "Pre-activation ResNet-50 (ResNet-v2).",
                            preactivation=True)
preact_resnet101 = _imagenet("preact_resnet101", 101, "Pre-activation ResNet-101.",
                             preactivation=True)
preact_resnet152 = _imagenet("preact_resnet152", 152,
                             "Pre-activation ResNet-152 (the paper's ImageNet run).",
                             preactivation=True)

# §4.2: the CIFAR-10 ResNets, 16/32/64 filters, option A shortcuts.
resnet20 = _cifar("resnet20", 20, "CIFAR ResNet-20 (§4.2, n = 3): 0.27M parameters.")
resnet32 = _cifar("resnet32", 32, "CIFAR ResNet-32 (§4.2, n = 5): 0.46M parameters.")
resnet44 = _cifar("resnet44", 44, "CIFAR ResNet-44 (§4.2, n = 7): 0.66M parameters.")
resnet56 = _cifar("resnet56", 56, "CIFAR ResNet-56 (§4.2, n = 9): 0.85M parameters.")
resnet110 = _cifar("resnet110", 110, "CIFAR ResNet-110 (§4.2, n = 18): 1.7M parameters.")
resnet1202 = _cifar("resnet1202", 1202, "CIFAR ResNet-1202 (§4.2, n = 200): 19.4M parameters.")

# Huang et al. 2016: ResNet-110 with stochastic depth, p_L = 0.5.
resnet110_stochastic_depth = _cifar(
    "resnet110_stochastic_depth", 110,
    "CIFAR ResNet-110 with stochastic depth, linear decay to p_L = 0.5 (Huang et al. 2016).",
    drop_path_rate=0.5)

# The ImageNet ResNets with a 3×3 stride-1 stem and no max pool, for 32×32 inputs.
resnet18_cifar = register_variant("resnet18_cifar", imagenet_resnet, 32, 3, 10,
                                  "ResNet-18 with a 3×3 stride-1 stem, no max pool (CIFAR).",
                                  depth=18, stem="cifar")
resnet34_cifar = register_variant("resnet34_cifar", imagenet_resnet, 32, 3, 10,
                                  "ResNet-34 with a 3×3 stride-1 stem, no max pool (CIFAR).",
                                  depth=34, stem="cifar")
resnet50_cifar = register_variant("resnet50_cifar", imagenet_resnet, 32, 3, 10,
                                  "ResNet-50 with a 3×3 stride-1 stem, no max pool (CIFAR).",
                                  depth=50, stem="cifar")


def preact_cifar_resnet(depth, num_classes=10, in_channels=3, **options):
    """"Identity Mappings" CIFAR networks: ResNet-110 (basic, option A as the original
    ResNet-110) and ResNet-164/1001 (bottleneck, projection shortcuts)."""
    if depth not in PREACT_CIFAR_DEPTHS:
        raise ValueError(f"pre-activation CIFAR ResNet: depth must be one of "
                         f"{sorted(PREACT_CIFAR_DEPTHS)}, got {depth}")
    kind, n = PREACT_CIFAR_DEPTHS[depth]
    shortcut = "A" if kind == "basic" else "B"
    options = {"stem": "cifar", "shortcut": shortcut, **options}
    return ResNet("preact_" + kind, (n,) * 3, num_classes, in_channels, widths=CIFAR_WIDTHS,
                  **options)


preact_resnet110 = register_variant(
    "preact_resnet110", preact_cifar_resnet, 32, 3, 10,
    "Pre-activation ResNet-110 for CIFAR (He et al. 2016, Table 2): 1.7M parameters.", depth=110)
preact_resnet164 = register_variant(
    "preact_resnet164", preact_cifar_resnet, 32, 3, 10,
    "Pre-activation ResNet-164 for CIFAR, bottleneck units (Table 3): 1.7M parameters.",
    depth=164)
preact_resnet1001 = register_variant(
    "preact_resnet1001", preact_cifar_resnet, 32, 3, 10,
    "Pre-activation ResNet-1001 for CIFAR, bottleneck units (Table 3): 10.2M parameters.",
    depth=1001)


CLI_DEFAULTS = {"variant": "resnet20", "input_size": 28, "optimizer": "sgd", "lr": 0.1,
                "batch_size": 64, "epochs": 2}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
