"""Network in Network: Lin, Chen & Yan (2013), "Network In Network", ICLR 2014
(arXiv 1312.4400). Figure 2 and Section 3 are followed, with the layer settings of the
authors' released Caffe models (the paper gives none for ImageNet).

Two ideas:

* **mlpconv**: a convolution followed by a small multilayer perceptron applied at every
  position. A per-position MLP over channels is exactly a stack of 1×1 convolutions (the
  paper's "cascaded cross channel parametric pooling"), so an mlpconv block is
  conv k×k → ReLU → conv 1×1 → ReLU → conv 1×1 → ReLU.
* **global average pooling** instead of fully connected layers: the last mlpconv has one
  map per class and each class score is the mean of its map. No parameters, so nothing to
  overfit, and each map reads as a confidence map for its class.

The pools are Caffe's, which round their output size up (``ceil_mode``). A ReLU follows
every convolution except the last, which makes the class maps: they stay linear. The
released models rectify the class maps too (``class_map_relu=True`` builds that), but then
a class whose map turns negative everywhere gives a score of exactly 0 and no gradient,
for good: on MNIST at learning rate 0.01 every class map died within the first epoch and
the network answered 1/10 for every image.

ImageNet configuration (224×224; 7,595,176 parameters)::

    mlpconv1  11×11/4,  96 → 1×1  96 → 1×1  96     max-pool 3×3/2    54 → 27
    mlpconv2   5×5 p2, 256 → 1×1 256 → 1×1 256     max-pool 3×3/2    27 → 13
    mlpconv3   3×3 p1, 384 → 1×1 384 → 1×1 384     max-pool 3×3/2    13 → 6, dropout 0.5
    mlpconv4   3×3 p1, 1024 → 1×1 1024 → 1×1 classes                global average pool

CIFAR-10 configuration (32×32; 966,986 parameters at 10 classes)::

    mlpconv1   5×5 p2, 192 → 1×1 160 → 1×1  96     max-pool 3×3/2    32 → 16, dropout 0.5
    mlpconv2   5×5 p2, 192 → 1×1 192 → 1×1 192     avg-pool 3×3/2    16 → 8,  dropout 0.5
    mlpconv3   3×3 p1, 192 → 1×1 192 → 1×1 classes                  global average pool

Any input from 55×55 (``nin``; 6×6 for ``nin_cifar``) up works: the global average pool
does not care about the map size, only the strided pools need a 3×3 map to start from.

Initialization: He normal (fan_in) weights and zero biases, except the class-map layer,
drawn from N(0, 0.01) like the other families' classifiers so that training starts from
scores near zero (with He scale there, the first loss was 6 instead of ln 10 ≈ 2.3 and the
first steps killed most ReLUs). The released models drew every weight from N(0, 0.01)
(ImageNet) or N(0, 0.05) (CIFAR-10).
"""
from collections import OrderedDict

from architectures import register
from minicnn import nn

CLASSES = "classes"   # the width of the last 1×1 convolution: one map per class

# The networks, row by row. An mlpconv row is (kernel, stride, padding, widths of its
# three convolutions); a pool row is (kind, size, stride).
IMAGENET = [
    ("mlpconv", 11, 4, 0, (96, 96, 96)),
    ("maxpool", 3, 2),
    ("mlpconv", 5, 1, 2, (256, 256, 256)),
    ("maxpool", 3, 2),
    ("mlpconv", 3, 1, 1, (384, 384, 384)),
    ("maxpool", 3, 2),
    ("dropout", 0.5),
    ("mlpconv", 3, 1, 1, (1024, 1024, CLASSES)),
]
CIFAR = [
    ("mlpconv", 5, 1, 2, (192, 160, 96)),
    ("maxpool", 3, 2),
    ("dropout", 0.5),
    ("mlpconv", 5, 1, 2, (192, 192, 192)),
    ("avgpool", 3, 2),
    ("dropout", 0.5),
    ("mlpconv", 3, 1, 1, (192, 192, CLASSES)),
]


class MLPConv(nn.Sequential):
    """conv k×k → ReLU → conv 1×1 → ReLU → conv 1×1 → ReLU (Figure 2's "mlpconv layer").

    The two 1×1 convolutions are a two-layer perceptron over the channels, shared by every
    position: y[:, p] = relu(W₃ relu(W₂ relu(conv(x)[:, p]))) with biases.
    ``last_relu=False`` leaves out the final ReLU (the class maps of the last block).
    """

    def __init__(self, in_channels, widths, kernel_size, stride=1, padding=0, last_relu=True):
        first, second, third = widths
        layers = OrderedDict(
            conv=nn.Conv2d(in_channels, first, kernel_size, stride, padding), relu=nn.ReLU(),
            mlp1=nn.Conv2d(first, second, 1), relu1=nn.ReLU(),
            mlp2=nn.Conv2d(second, third, 1))
        if last_relu:
            layers["relu2"] = nn.ReLU()
        super().__init__(layers)


class NiN(nn.Module):
    """Network in Network from a configuration table: mlpconv blocks, pools and dropout,
    then global average pooling of the class maps. No fully connected layer."""

    def __init__(self, config, num_classes=1000, in_channels=3, min_input_size=1,
                 class_map_relu=False):
        super().__init__()
        self.in_channels, self.min_input_size = in_channels, min_input_size
        layers, channels, blocks = OrderedDict(), in_channels, 0
        for row in config:
            kind = row[0]
            if kind == "mlpconv":
                _, kernel_size, stride, padding, widths = row
                makes_class_maps = widths[-1] == CLASSES
                widths = tuple(num_classes if w == CLASSES else w for w in widths)
                blocks += 1
                layers[f"mlpconv{blocks}"] = MLPConv(
                    channels, widths, kernel_size, stride, padding,
                    last_relu=class_map_relu or not makes_class_maps)
                channels = widths[-1]
            elif kind in ("maxpool", "avgpool"):
                _, size, stride = row
                pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
                layers[f"pool{blocks}"] = pool(size, stride, ceil_mode=True)
            elif kind == "dropout":
                layers[f"drop{blocks}"] = nn.Dropout(row[1])
            else:
                raise ValueError(f"NiN: unknown row {row!r} in a configuration")
        self.features = nn.Sequential(layers)
        self.pool = nn.GlobalAvgPool2d()   # class map → class score
        self.flatten = nn.Flatten()
        initialize(self)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"NiN: expected input (N, {self.in_channels}, H, W), "
                             f"got shape {x.shape}")
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f"NiN: input must be at least {self.min_input_size}×"
                             f"{self.min_input_size}, got {x.shape[2]}×{x.shape[3]}")
        return self.flatten(self.pool(self.features(x)))


def initialize(model):
    """He normal (fan_in) convolutions, but N(0, 0.01) for the last one, which makes the
    class maps and so plays the classifier's part; zero biases."""
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convolutions[:-1]:
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    nn.init.normal_(convolutions[-1].weight, 0.0, 0.01)
    for conv in convolutions:
        nn.init.zeros_(conv.bias)


@register("nin", input_size=224,
          description="Network in Network, ImageNet configuration (7,595,176)")
def nin(num_classes=1000, in_channels=3, **options):
    """Network in Network, the authors' ImageNet model: four mlpconv blocks."""
    return NiN(IMAGENET, num_classes, in_channels, min_input_size=55, **options)


@register("nin_cifar", input_size=32,
          description="Network in Network, CIFAR-10 configuration (966,986 at 10 classes)")
def nin_cifar(num_classes=10, in_channels=3, **options):
    """Network in Network, the authors' CIFAR-10 model: three mlpconv blocks."""
    return NiN(CIFAR, num_classes, in_channels, min_input_size=6, **options)


# Quick runs: the CIFAR-10 model on MNIST at its own 28×28, Adam at 1e-3 (without batch
# norm, and with dropout after two pools, NiN is slow to leave chance with SGD).
CLI_DEFAULTS = {"variant": "nin_cifar", "optimizer": "adam", "lr": 1e-3, "batch_size": 64,
                "datasets": {"mnist": {"input_size": 28, "epochs": 1}}}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
