"""DenseNet: Huang, Liu, van der Maaten & Weinberger (2017), "Densely Connected
Convolutional Networks".

Inside a dense block every layer receives the feature maps of *all* layers before it,
concatenated along channels, and adds k new ones (k = the growth rate)::

    x_ℓ = H_ℓ([x_0, x_1, ..., x_{ℓ−1}])           (Eq. 2)

so layer ℓ of a block with k₀ input channels sees k₀ + (ℓ − 1)·k channels. H_ℓ is
BN → ReLU → Conv (pre-activation order). DenseNet-**B** puts a 1×1 bottleneck of 4k
channels before the 3×3; DenseNet-**C** compresses between blocks: a *transition layer*
(BN → ReLU → 1×1 conv to ⌊θ·m⌋ channels → 2×2 average pool) with θ = 0.5. Both together
are DenseNet-BC, the reference build.

Table 1 of the paper (ImageNet, 224×224, k = 32)::

    layers            output    DenseNet-121   -169   -201   -264
    convolution       112×112   7×7 conv, stride 2
    pooling            56×56    3×3 max pool, stride 2
    dense block (1)    56×56    [1×1 conv, 3×3 conv] × 6      × 6    × 6    × 6
    transition (1)     28×28    1×1 conv, 2×2 average pool, stride 2
    dense block (2)    28×28    × 12                          × 12   × 12   × 12
    transition (2)     14×14
    dense block (3)    14×14    × 24                          × 32   × 48   × 64
    transition (3)      7×7
    dense block (4)     7×7     × 16                          × 32   × 32   × 48
    classification      1×1     7×7 global average pool, 1000D fully connected, softmax

As in the released models (and torchvision), a final BN → ReLU precedes the pool, and
DenseNet-161 uses k = 48 with 96 stem filters. The transitions halve the resolution three
times after the stem's 4×, so the ImageNet models need inputs of at least 32×32.

For CIFAR (§3 "Implementation details"), three dense blocks of equal depth on 32, 16 and
8 pixels, after one 3×3 convolution with 16 filters (2k for DenseNet-BC): L = 3·2n + 4
for BC (two convolutions per layer), L = 3n + 4 without the bottleneck.

What this file builds
---------------------
* ``densenet121/169/201/264`` (7,978,856 / 14,149,480 / 20,013,928 / 33,337,704
  parameters) and ``densenet161`` (28,681,000).
* CIFAR (Table 2): ``densenet_bc_100_12`` (L = 100, k = 12; 769,162 at 10 classes, paper
  0.8M), ``densenet_bc_250_24`` (15,324,406; 15.3M), ``densenet_bc_190_40`` (25,624,430;
  25.6M), and the plain ``densenet40_12`` (L = 40, k = 12, no bottleneck or compression;
  1,019,722 at 10 classes, paper 1.0M). The paper adds dropout 0.2 after each convolution
  when training without data augmentation: option ``dropout``.

The concatenation, and what it costs
------------------------------------
Written literally, Eq. 2 concatenates [x_0, ..., x_{ℓ−1}] afresh for every layer: layer ℓ
copies all k₀ + (ℓ−1)k earlier channels, so a block of L layers copies
L·k₀ + k·L(L−1)/2 channel maps — quadratic in L — and, because each layer's batch norm
keeps its input for the backward pass, all those concatenations stay alive until then:
quadratic *memory* too. (torchvision's reference does exactly this.)

Here a block allocates its whole output, (N, k₀ + L·k, H, W), once. The block input is
copied into the first k₀ channels; each layer reads the *prefix* of the buffer that is
filled so far (a view, no copy) and its k new channels are written into the next slice.
Copies per block: k₀ + L·k channel maps (linear), one buffer alive instead of L
concatenations. The write is a differentiable operation, ``F.concat_into_buffer``: its
forward fills the slice and returns the longer prefix view; its backward hands the
prefix part of the incoming gradient (a view) to the shorter prefix and the new slice to
the layer that produced it. Earlier views stay valid because a layer only ever writes
channels no earlier view covers. ``efficient_concat=False`` uses the literal
concatenation (same numbers, for comparison and tests).

What it buys depends on the first reader of each prefix, the layer's batch norm. The
prefix is a strided view (row stride k₀ + L·k channels); a batch norm that wants
contiguous rows copies it, and then the quadratic copy has only moved from the
concatenation into the normalisation: DenseNet-121 at 64×64, batch 16, measured the same
memory (≈ 300 MiB held by the graph) and time either way. A batch norm that reads strided
rows in place makes the saving real: 257 MiB against 301 MiB held (−15%), peak resident
memory of a training step 185 against 224 MiB, same step time. What stays quadratic is
inherent to H_ℓ: each layer's BN and ReLU outputs are as wide as its input (the
"memory-efficient DenseNet" of Pleiss et al. 2017 recomputes them in the backward pass).

Initialisation as torchvision: He-normal (fan_in) convolutions, BN γ = 1 and β = 0, the
classifier's bias 0.
"""
from collections import OrderedDict

from minicnn import functional as F
from minicnn import nn
from minicnn.backend import get_array_module
from architectures import register_variant

# ----------------------------------------------------------------------------- the tables
# Table 1 (ImageNet): name: (growth rate k, layers per dense block, stem filters)
IMAGENET_CONFIGS = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
    "densenet264": (32, (6, 12, 64, 48), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
}

# Table 2 (CIFAR): name: (depth L, growth rate k, bottleneck + compression (BC)?)
CIFAR_CONFIGS = {
    "densenet40_12":      (40, 12, False),
    "densenet_bc_100_12": (100, 12, True),
    "densenet_bc_250_24": (250, 24, True),
    "densenet_bc_190_40": (190, 40, True),
}

BOTTLENECK_WIDTH = 4     # DenseNet-B: the 1×1 conv produces 4k channels
COMPRESSION = 0.5        # DenseNet-C: θ


# ----------------------------------------------------------------------------- modules
class DenseLayer(nn.Module):
    """H_ℓ: BN → ReLU → 1×1 conv (4k) → BN → ReLU → 3×3 conv (k)   (DenseNet-B), or
    BN → ReLU → 3×3 conv (k) without the bottleneck. Returns only the k new channels."""

    def __init__(self, in_channels, growth_rate, bottleneck=True, dropout=0.0):
        super().__init__()
        if bottleneck:
            width = BOTTLENECK_WIDTH * growth_rate
            self.norm1 = nn.BatchNorm2d(in_channels)
            self.relu1 = nn.ReLU()
            self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
            in_channels = width
        self.bottleneck = bottleneck
        self.norm2 = nn.BatchNorm2d(in_channels)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, features):
        x = features
        if self.bottleneck:
            x = self.dropout(self.conv1(self.relu1(self.norm1(x))))
        return self.dropout(self.conv2(self.relu2(self.norm2(x))))


class DenseBlock(nn.Module):
    """L dense layers; output = [x, H_1(...), ..., H_L(...)] with k₀ + L·k channels."""

    def __init__(self, num_layers, in_channels, growth_rate, bottleneck=True, dropout=0.0,
                 efficient_concat=True):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}",
                            DenseLayer(in_channels + i * growth_rate, growth_rate, bottleneck,
                                       dropout))
        self.in_channels, self.growth_rate, self.num_layers = in_channels, growth_rate, num_layers
        self.out_channels = in_channels + num_layers * growth_rate
        self.efficient_concat = efficient_concat

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DenseBlock: expected (N, {self.in_channels}, H, W) input, got "
                             f"shape {x.shape}")
        layers = self._modules.values()
        if not self.efficient_concat:                # Eq. 2 literally: quadratic copies
            features = x
            for layer in layers:
                features = F.concat([features, layer(features)], axis=1)
            return features
        n, _, h, w = x.shape
        storage = get_array_module(x.data).empty((n, h, w, self.out_channels), dtype=x.dtype)
        features = F.concat_into_buffer(storage, 0, x)
        for layer in layers:
            features = F.concat_into_buffer(storage, features.shape[1], layer(features),
                                            prefix=features)
        return features

    def extra_repr(self):
        return (f"{self.num_layers} layers, {self.in_channels} -> {self.out_channels} channels"
                f", k={self.growth_rate}")


class Transition(nn.Sequential):
    """Between blocks: BN → ReLU → 1×1 conv (⌊θ·m⌋ channels) → 2×2 average pool, stride 2."""

    def __init__(self, in_channels, out_channels):
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_channels),
            relu=nn.ReLU(),
            conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
            pool=nn.AvgPool2d(2, stride=2),
        ))


class DenseNet(nn.Module):
    """stem → [dense block → transition] × (B − 1) → dense block → BN → ReLU → pool → FC.

    ``stem``: "imagenet" (7×7/2 conv, BN, ReLU, 3×3/2 max pool) or "cifar" (one 3×3 conv);
    ``compression``: θ of the transitions (1.0 = none); ``bottleneck``: DenseNet-B layers.
    """

    def __init__(self, growth_rate, block_config, num_init_features, num_classes=1000,
                 in_channels=3, stem="imagenet", bottleneck=True, compression=COMPRESSION,
                 dropout=0.0, efficient_concat=True):
        super().__init__()
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"DenseNet: compression θ must lie in (0, 1], got {compression}")
        layers = OrderedDict()
        if stem == "imagenet":
            layers["conv0"] = nn.Conv2d(in_channels, num_init_features, 7, 2, 3, bias=False)
            layers["norm0"] = nn.BatchNorm2d(num_init_features)
            layers["relu0"] = nn.ReLU()
            layers["pool0"] = nn.MaxPool2d(3, 2, padding=1)
        elif stem == "cifar":
            layers["conv0"] = nn.Conv2d(in_channels, num_init_features, 3, padding=1,
                                        bias=False)
        else:
            raise ValueError(f"DenseNet: stem must be 'imagenet' or 'cifar', got {stem!r}")
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, channels, growth_rate, bottleneck, dropout,
                               efficient_concat)
            layers[f"denseblock{i + 1}"] = block
            channels = block.out_channels
            if i < len(block_config) - 1:
                out_channels = int(channels * compression)
                layers[f"transition{i + 1}"] = Transition(channels, out_channels)
                channels = out_channels
        layers[f"norm{len(block_config) + 1}"] = nn.BatchNorm2d(channels)
        layers["relu"] = nn.ReLU()
        self.features = nn.Sequential(layers)
        self.avgpool = nn.GlobalAvgPool2d()
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)
        self.num_features = channels
        self._initialise()

    def _initialise(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"DenseNet: expected an (N, C, H, W) batch, got shape {x.shape}")
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


# ----------------------------------------------------------------------------- named models
def densenet_imagenet(config, num_classes=1000, in_channels=3, **options):
    """The Table 1 DenseNet ``config`` (a key of ``IMAGENET_CONFIGS``; options as ``DenseNet``)."""
    growth_rate, block_config, num_init_features = IMAGENET_CONFIGS[config]
    return DenseNet(growth_rate, block_config, num_init_features, num_classes, in_channels,
                    **options)


def densenet_cifar(depth, growth_rate, bc=True, num_classes=10, in_channels=3, **options):
    """CIFAR DenseNet(-BC) of depth L and growth rate k: three blocks of n layers,
    n = (L − 4)/6 for BC (two convolutions per layer), (L − 4)/3 otherwise."""
    convs_per_layer = 2 if bc else 1
    if (depth - 4) % (3 * convs_per_layer):
        raise ValueError(f"CIFAR DenseNet{'-BC' if bc else ''}: depth must be "
                         f"{3 * convs_per_layer}n + 4, got {depth}")
    n = (depth - 4) // (3 * convs_per_layer)
    options = {"stem": "cifar", "bottleneck": bc, "compression": COMPRESSION if bc else 1.0,
               **options}
    stem_filters = 2 * growth_rate if bc else 16
    return DenseNet(growth_rate, (n, n, n), stem_filters, num_classes, in_channels, **options)


def _imagenet(name, doc):
    return register_variant(name, densenet_imagenet, 224, 3, 1000, doc, config=name)


def _cifar(name):
    depth, growth_rate, bc = CIFAR_CONFIGS[name]
    doc = f"CIFAR DenseNet{'-BC' if bc else ''} (Table 2): L = {depth}, k = {growth_rate}."
    return register_variant(name, densenet_cifar, 32, 3, 10, doc, depth=depth,
                            growth_rate=growth_rate, bc=bc)


# Table 1 (ImageNet), and the released DenseNet-161.
densenet121 = _imagenet("densenet121",
                        "DenseNet-121 (Table 1): k = 32, blocks of 6, 12, 24, 16 layers.")
densenet169 = _imagenet("densenet169",
                        "DenseNet-169 (Table 1): k = 32, blocks of 6, 12, 32, 32 layers.")
densenet201 = _imagenet("densenet201",
                        "DenseNet-201 (Table 1): k = 32, blocks of 6, 12, 48, 32 layers.")
densenet264 = _imagenet("densenet264",
                        "DenseNet-264 (Table 1): k = 32, blocks of 6, 12, 64, 48 layers.")
densenet161 = _imagenet("densenet161", "DenseNet-161 (released model): k = 48, 96 stem filters, "
                                       "blocks of 6, 12, 36, 24.")

# Table 2 (CIFAR).
densenet40_12 = _cifar("densenet40_12")
densenet_bc_100_12 = _cifar("densenet_bc_100_12")
densenet_bc_250_24 = _cifar("densenet_bc_250_24")
densenet_bc_190_40 = _cifar("densenet_bc_190_40")


CLI_DEFAULTS = {"variant": "densenet121", "input_size": 32, "optimizer": "sgd", "lr": 0.1,
                "batch_size": 64, "epochs": 2}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
