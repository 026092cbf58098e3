"""ZFNet: Zeiler & Fergus (2013), "Visualizing and Understanding Convolutional Networks",
ECCV 2014 (arXiv 1311.2901). Figure 3 is followed.

Looking inside AlexNet with their deconvnet, Zeiler and Fergus saw dead and aliased
first-layer filters, and traced both to conv1's large 11×11 kernels and stride 4. Their
fix is a smaller, denser first layer and a stride-2 second layer; the rest is AlexNet in
one tower (Section 4.1)::

    input 224×224×3
    conv1  96 @ 7×7 / 2, pad 1      ReLU  max-pool 3×3/2  LRN     110 → 55
    conv2 256 @ 5×5 / 2             ReLU  max-pool 3×3/2  LRN      26 → 13
    conv3 384 @ 3×3, pad 1          ReLU                           13
    conv4 384 @ 3×3, pad 1          ReLU                           13
    conv5 256 @ 3×3, pad 1          ReLU  max-pool 3×3/2           13 → 6
    fc6 4096  ReLU  dropout 0.5
    fc7 4096  ReLU  dropout 0.5
    fc8 1000                                        62,357,608 parameters

Figure 3 shows pooling *then* contrast normalization ("3×3 max pool stride 2, contrast
norm."), the reverse of AlexNet's order, and this build follows the figure. The first two
max-pools round up (``ceil_mode``) so that the map sizes are the figure's 110 → 55 and
26 → 13; rounding down would give 54 and 12. The normalization uses AlexNet's constants.

Variants
--------
* ``zfnet_wide``: conv3–conv5 of 512, 1024 and 512 kernels, the "ZFNet" of many course
  slides (the paper's Table 2 reports such a bigger model as a further experiment):
  107,627,624 parameters.

Like the AlexNet builds, the maps are pooled adaptively to the 6×6 that fc6 expects (a
no-op at 224×224), so smaller inputs work down to 63×63, where the last pool meets a 3×3
map. Initialization: He normal (fan_out) convolutions, N(0, 0.01) linear layers, zero
biases; the paper used N(0, 0.01) weights and zero biases throughout.

Training (Section 3): SGD, batch 128, learning rate 1e-2, momentum 0.9, dropout 0.5.
"""
from collections import OrderedDict

from architectures import register
from architectures.alexnet import LRN, POOLED_SIZE, check_input, fully_connected, he_initialize
from minicnn import nn

# Figure 3, one row per convolution (the rows AlexNet's table would have, changed where
# the paper changed it).
#        name   kernels  size stride pad  followed by
FEATURES = [
    ("conv1",    96,      7,   2,    1,   ("pool", "lrn")),
    ("conv2",   256,      5,   2,    0,   ("pool", "lrn")),
    ("conv3",   384,      3,   1,    1,   ()),
    ("conv4",   384,      3,   1,    1,   ()),
    ("conv5",   256,      3,   1,    1,   ("pool",)),
]
WIDE_KERNELS = {"conv3": 512, "conv4": 1024, "conv5": 512}  # the "bigger model"


class ZFNet(nn.Module):
    """ZFNet as Figure 3: ``features`` → ``avgpool`` (adaptive, 6×6) → ``flatten`` →
    ``classifier`` (AlexNet's fc6–fc8). ``kernels`` overrides the width of named layers."""
    min_input_size = 63

    def __init__(self, num_classes=1000, in_channels=3, kernels=None, dropout=0.5):
        super().__init__()
        self.in_channels = in_channels
        kernels = dict(kernels or {})
        layers, channels = OrderedDict(), in_channels
        for index, (name, width, size, stride, padding, after) in enumerate(FEATURES, 1):
            width = kernels.pop(name, width)
            layers[name] = nn.Conv2d(channels, width, size, stride, padding)
            layers[f"relu{index}"] = nn.ReLU()
            if "pool" in after:
                # The first two pools round up to reach the figure's 55 and 13; the last
                # one (13 → 6) is exact either way.
                layers[f"pool{index}"] = nn.MaxPool2d(3, 2, ceil_mode=index < 3)
            if "lrn" in after:
                layers[f"lrn{index}"] = nn.LocalResponseNorm(**LRN)
            channels = width
        if kernels:
            raise ValueError(f"ZFNet: unknown layers in kernels: {sorted(kernels)}")
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.flatten = nn.Flatten()
        self.classifier = fully_connected(channels * POOLED_SIZE ** 2, num_classes, dropout)
        he_initialize(self)

    def forward(self, x):
        check_input("ZFNet", x, self.in_channels, self.min_input_size)
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


@register("zfnet", input_size=224,
          description="ZFNet: AlexNet with conv1 7×7/2 and conv2 5×5/2 (62,357,608)")
def zfnet(num_classes=1000, in_channels=3, **options):
    """ZFNet as Figure 3 of Zeiler & Fergus."""
    return ZFNet(num_classes, in_channels, **options)


@register("zfnet_wide", input_size=224,
          description="ZFNet with conv3-5 of 512/1024/512 kernels (107,627,624)")
def zfnet_wide(num_classes=1000, in_channels=3, **options):
    """ZFNet with the wider conv3–conv5 (512, 1024, 512 kernels)."""
    return ZFNet(num_classes, in_channels, kernels=WIDE_KERNELS, **options)


# Quick runs, as for AlexNet: Adam at 1e-4; MNIST resized to 63×63, the smallest input.
CLI_DEFAULTS = {"variant": "zfnet", "optimizer": "adam", "lr": 1e-4, "batch_size": 64,
                "datasets": {"mnist": {"input_size": 63, "epochs": 1}}}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
