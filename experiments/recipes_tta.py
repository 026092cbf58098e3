"""Test-time augmentation and dense multi-scale evaluation of a short-trained checkpoint.

    python -m experiments.recipes_tta --arch alexnet --out runs/tta-alexnet.json
    python -m experiments.recipes_tta --arch vgg --out runs/tta-vgg.json

Trains the network briefly on an MNIST subset with its paper's training augmentation,
then scores the *same* trained weights on the same test images several ways:

    single     the whole test image resized to the network's input (what --train does)
    flip       that view and its mirror, soft-max averaged
    10crop     AlexNet's: four corner crops, the centre crop and their mirrors, taken from
               the test image at the larger "stored" size
    dense      VGG's: the network convolutionized (minicnn.convolutionize), run on the
               whole image at each scale Q (and its mirror), the class-score maps averaged
               over their cells, the soft-max posteriors averaged over scales and mirrors

The settings are scaled down from the papers (224 crops of 256, Q ∈ {256, 384, 512}) to
MNIST's small digits:

    AlexNet   trains on random 67 crops of the digit enlarged to 76 (67/76 ≈ 224/256) with
              mirroring; 10-crop takes 67 crops of 76. Its adaptive pool turns the 1×1
              map of a 67 input into 6×6 by copying, which is no pooling a convolution can
              slide, so dense evaluation would need inputs of 224 and more: not run here.
    VGG       configuration A (VGG-11, the one the paper trained first) in the CLI's MNIST
              form (batch norm, global pooling, one linear layer), trained with Adam
              (SGD at 0.01 left it at chance after 64 steps here) and scale jittering
              S ∈ [32, 64] (crops of 32) and mirroring; 10-crop takes 32 crops of 36;
              dense evaluation at Q ∈ {32, 48, 64} (a 64 image gives a 2×2 score map).
              As in the paper (S ∈ [256, 512], Q ∈ {256, 384, 512}), the test scales
              span the training scales: a network trained only up to S = 48 tested 18.1%
              at Q = 64, where every digit is larger than any it was trained on.
"""
import argparse
import json
import os
import time

import numpy as np

import architectures
from minicnn import optim
from minicnn.data import DataLoader, mnist_datasets
from minicnn.data.augment import scale_jitter
from minicnn.data.transforms import crop_at, normalize, random_horizontal_flip, resize
from minicnn.files import atomic_write
from minicnn.convolutionize import convolutionize
from minicnn.train import fit
from minicnn.tta import dense_predict, predict

SETUPS = {
    # variant, input size, stored test size, optimizer, lr, dense scales
    "alexnet": dict(variant="alexnet", input_size=67, stored_size=76, optimizer="adam",
                    lr=1e-4, scales=None),
    "vgg": dict(variant="vgg11_bn_cifar", input_size=32, stored_size=36, optimizer="adam",
                lr=1e-3, scales=(32, 48, 64), jitter=(32, 64)),
}


def build(variant):
    """The registered variant, or VGG-11's configuration A in the CLI's MNIST form (batch
    norm, global pooling, one linear layer): D's shape at half the convolutions."""
    if variant == "vgg11_bn_cifar":
        from architectures.vgg import VGGCifar
        return VGGCifar(num_classes=10, in_channels=1, config="A")
    return architectures.create(variant, num_classes=10, in_channels=1)


class PaperTrainingAugmentation:
    """uint8 digits → normalised float crops of the input size, mirrored at random:
    AlexNet's random crops of the enlarged image, or VGG's scale jittering."""
    random = True

    def __init__(self, setup, mean, std):
        self.setup, self.mean, self.std = setup, mean, std

    def __call__(self, images, rng):
        x = normalize(images, self.mean, self.std)
        size = self.setup["input_size"]
        if "jitter" in self.setup:
            x = scale_jitter(x, size, self.setup["jitter"], rng)
        else:
            x = resize(x, self.setup["stored_size"])
            room = self.setup["stored_size"] - size + 1
            x = crop_at(x, rng.integers(room, size=len(x)), rng.integers(room, size=len(x)), size)
        return np.ascontiguousarray(random_horizontal_flip(x, rng))


def accuracy(probabilities_of, images, labels, batch=100):
    hits = 0
    for start in range(0, len(images), batch):
        chosen = slice(start, start + batch)
        hits += int((probabilities_of(images[chosen]).argmax(axis=1) == labels[chosen]).sum())
    return hits / len(images)


def ways_to_score(model, setup, single, stored):
    """name: (images → class probabilities, the test images it takes)."""
    size = setup["input_size"]
    views = {
        "single": (lambda x: predict(model, x), single),
        "flip": (lambda x: predict(model, x, "flip"), single),
        "10crop": (lambda x: predict(model, x, "10crop", crop_size=size), stored),
    }
    if setup["scales"]:
        dense = convolutionize(model, (1, size, size))       # a copy of the weights as now
        for scales in [(q,) for q in setup["scales"]] + [setup["scales"]]:
            name = "dense Q=" + ",".join(str(q) for q in scales) + " +flip"
            views[name] = (lambda x, s=scales: dense_predict(dense, x, s), stored)
    return views


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=tuple(SETUPS), default="vgg")
    parser.add_argument("--train", type=int, default=2048, help="training images (a subset)")
    parser.add_argument("--test", type=int, default=1000, help="test images (a subset)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, help="learning rate (default: the setup's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    setup = dict(SETUPS[args.arch], lr=args.lr or SETUPS[args.arch]["lr"])

    train, test = mnist_datasets()
    train, test = train.subset(args.train, args.seed), test.subset(args.test, args.seed)
    mean, std = train.channel_statistics()
    model = build(setup["variant"])
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = (optim.Adam(parameters, lr=setup["lr"]) if setup["optimizer"] == "adam"
                 else optim.SGD(parameters, lr=setup["lr"], momentum=0.9, weight_decay=5e-4))
    loader = DataLoader(train, args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                        transform=PaperTrainingAugmentation(setup, mean, std))
    stored = resize(normalize(test.images, mean, std), setup["stored_size"])
    single = resize(normalize(test.images, mean, std), setup["input_size"])
    for probabilities_of, images in ways_to_score(model, setup, single, stored).values():
        probabilities_of(images[:2])              # every way works, before the training time

    began = time.perf_counter()
    fit(model, optimizer, loader, epochs=args.epochs, progress=False)
    results = dict(vars(args), setup=setup, trained_s=time.perf_counter() - began, accuracy={})
    views = ways_to_score(model, setup, single, stored)     # convolutionized after training
    for name, (probabilities_of, images) in views.items():
        results["accuracy"][name] = accuracy(probabilities_of, images, test.labels)
        print(f"{args.arch:<8} {name:<22} test accuracy "
              f"{100 * results['accuracy'][name]:.2f}%", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_write(args.out, lambda f: f.write(json.dumps(results, indent=1).encode()))
    return results


if __name__ == "__main__":
    main()
