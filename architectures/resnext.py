"""ResNeXt: Xie, Girshick, Dollár, Tu & He (2016), "Aggregated Residual Transformations
for Deep Neural Networks".

A ResNeXt block splits the bottleneck's 3×3 into C parallel paths (the *cardinality*) of
d channels each and sums them, y = x + Σᵢ Tᵢ(x). Figure 3 shows three equivalent forms:
(a) C separate 1×1-3×3-1×1 paths summed, (b) the 3×3 outputs concatenated before one 1×1,
(c) one wide 1×1, a **grouped 3×3 convolution** with C groups, one 1×1. This file uses
form (c), the one the paper implements: it is exactly ``Bottleneck`` of
architectures/resnet.py with ``groups = C`` and ``width = C·d`` at the first stage,
doubling with every stage.

Table 1 of the paper (224×224 input), ResNeXt-50 (32×4d) next to ResNet-50::

    stage  output   ResNet-50                        ResNeXt-50 (32×4d)
    conv1  112×112  7×7, 64, stride 2                7×7, 64, stride 2
    conv2   56×56   3×3 max pool, stride 2           3×3 max pool, stride 2
                    [1×1, 64;  3×3, 64;  1×1, 256]×3  [1×1, 128;  3×3, 128, C=32;  1×1, 256]×3
    conv3   28×28   [1×1, 128; 3×3, 128; 1×1, 512]×4  [1×1, 256;  3×3, 256, C=32;  1×1, 512]×4
    conv4   14×14   [1×1, 256; 3×3, 256; 1×1,1024]×6  [1×1, 512;  3×3, 512, C=32;  1×1,1024]×6
    conv5    7×7    [1×1, 512; 3×3, 512; 1×1,2048]×3  [1×1,1024;  3×3,1024, C=32;  1×1,2048]×3
                    global average pool, 1000-d fc, softmax

Downsampling is a stride-2 3×3 (the grouped convolution) in the first block of conv3-5,
and shortcuts are identities except projections (option B) where the shape changes, as
in §4 of the paper.

What this file builds
---------------------
* ImageNet (torchvision's reference builds, same blocks): ``resnext50_32x4d``
  (25,028,904 parameters), ``resnext101_32x4d`` (44,177,704), ``resnext101_32x8d``
  (88,791,336), ``resnext101_64x4d`` (83,455,272).
* CIFAR (§5.2): ResNeXt-29, a 3×3 stem of 64 filters and three stages of 3 blocks with
  outputs 256/512/1024 and bottleneck width C·d = C·64 doubling per stage:
  ``resnext29_8x64d`` (34,426,698 at 10 classes; paper 34.4M) and ``resnext29_16x64d``
  (68,155,210; the paper's Table 7 truncates it to 68.1M).

The CIFAR models default to 10 classes, the ImageNet ones to 1000. Every model takes
``drop_path_rate`` (stochastic depth) and the other options of
``architectures.resnet.ResNet``; initialisation is the same as there.
"""
from architectures import register_variant
from architectures.resnet import IMAGENET_DEPTHS, ResNet

# ----------------------------------------------------------------------------- the tables
# name: (depth, cardinality C, width d of each group at conv2). Table 1 and torchvision.
IMAGENET_CONFIGS = {
    "resnext50_32x4d":  (50, 32, 4),
    "resnext101_32x4d": (101, 32, 4),
    "resnext101_32x8d": (101, 32, 8),
    "resnext101_64x4d": (101, 64, 4),
}

# §5.2, CIFAR: ResNeXt-29 = 3 stages × 3 blocks × 3 layers + 2; (C, d)
CIFAR_CONFIGS = {
    "resnext29_8x64d":  (8, 64),
    "resnext29_16x64d": (16, 64),
}
CIFAR_STAGE_CHANNELS = (64, 128, 256)   # × expansion 4 = outputs 256, 512, 1024
CIFAR_BLOCKS = (3, 3, 3)


def resnext_imagenet(depth, cardinality, group_width, num_classes=1000, in_channels=3,
                     **options):
    """ResNeXt-``depth`` (C × ``group_width``d) of Table 1."""
    _, layers = IMAGENET_DEPTHS[depth]
    options = {"groups": cardinality, "width_per_group": group_width, "stride_on_3x3": True,
               **options}
    return ResNet("bottleneck", layers, num_classes, in_channels, **options)


def resnext_cifar(cardinality, group_width, num_classes=10, in_channels=3, **options):
    """ResNeXt-29 (C × ``group_width``d) of §5.2: 3×3 stem, three stages, no max pool."""
    options = {"groups": cardinality, "width_per_group": group_width, "stride_on_3x3": True,
               "stem": "cifar", **options}
    return ResNet("bottleneck", CIFAR_BLOCKS, num_classes, in_channels,
                  widths=CIFAR_STAGE_CHANNELS, **options)


# ----------------------------------------------------------------------------- named models
def _imagenet(name, doc):
    depth, cardinality, group_width = IMAGENET_CONFIGS[name]
    return register_variant(name, resnext_imagenet, 224, 3, 1000, doc, depth=depth,
                            cardinality=cardinality, group_width=group_width)


def _cifar(name, doc):
    cardinality, group_width = CIFAR_CONFIGS[name]
    return register_variant(name, resnext_cifar, 32, 3, 10, doc, cardinality=cardinality,
                            group_width=group_width)


resnext50_32x4d = _imagenet("resnext50_32x4d",
                            "ResNeXt-50 (32×4d), Table 1: 32 groups of 4 channels at conv2.")
resnext101_32x4d = _imagenet("resnext101_32x4d", "ResNeXt-101 (32×4d), Table 3/5.")
resnext101_32x8d = _imagenet("resnext101_32x8d",
                             "ResNeXt-101 (32×8d): wider groups (torchvision's reference build).")
resnext101_64x4d = _imagenet("resnext101_64x4d", "ResNeXt-101 (64×4d), Table 5: higher "
                                                 "cardinality at about 2× ResNet-101's cost.")
resnext29_8x64d = _cifar("resnext29_8x64d",
                         "ResNeXt-29 (8×64d) for CIFAR, §5.2: 34.4M parameters.")
resnext29_16x64d = _cifar("resnext29_16x64d",
                          "ResNeXt-29 (16×64d) for CIFAR, §5.2: 68.1M parameters.")


CLI_DEFAULTS = {"variant": "resnext50_32x4d", "input_size": 28, "optimizer": "adam",
                "lr": 0.001, "batch_size": 32, "epochs": 1}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
