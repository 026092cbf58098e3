"""Which 3×3 convolutions of a network learn nothing off their centre tap at a given size?

    python -m experiments.untrained_taps --sizes 20 32 40 64

A 3×3 convolution (padding 1) whose input is 1×1 reads only its centre tap: the eight
others multiply padding, so their gradient is exactly zero and they keep their initial
values however long the network trains at that size. EfficientNetV2-S halves its input
five times, so below 64 px its last stage runs at 1×1 — and when progressive learning
then raises the image size, those untouched taps start to count, with random weights.
This prints, for each size, how many 3×3 convolutions got no gradient at any off-centre
tap from one training step on a batch of random images.
"""
import argparse

import numpy as np

import architectures
from minicnn import Tensor, functional as F, nn


def untrained_taps(model, size, in_channels=1, seed=0):
    """(convolutions whose eight off-centre taps all got a zero gradient, 3×3 convolutions)
    after one forward and backward pass of ``model`` on a batch of four size×size images."""
    rng = np.random.default_rng(seed)
    model.train()
    images = Tensor(rng.standard_normal((4, in_channels, size, size)).astype(np.float32))
    F.cross_entropy(model(images), rng.integers(0, 10, 4)).backward()
    dead = total = 0
    for module in model.modules():
        if not isinstance(module, nn.Conv2d) or module.weight.shape[2:] != (3, 3):
            continue
        taps = module.weight.grad.reshape(module.weight.shape[:2] + (9,))
        total += 1
        dead += not np.any(np.delete(taps, 4, axis=2))          # tap 4 is the centre
    return dead, total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", default="efficientnet_v2_s")
    parser.add_argument("--sizes", type=int, nargs="+", default=(20, 32, 40, 64))
    args = parser.parse_args(argv)
    for size in args.sizes:
        model = architectures.create(args.network, num_classes=10, in_channels=1)
        dead, total = untrained_taps(model, size)
        print(f"{args.network} at {size} px: {dead} of {total} 3×3 convolutions learn "
              f"nothing off their centre tap")


if __name__ == "__main__":
    main()
