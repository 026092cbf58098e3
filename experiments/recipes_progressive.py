"""EfficientNetV2-S: progressive learning against fixed-size training at the final size.

    python -m experiments.recipes_progressive --dataset mnist --out runs/progressive-mnist.json
    python -m experiments.recipes_progressive --dataset cluttered \
        --out runs/progressive-cluttered.json
    python -m experiments.recipes_progressive --dataset shapes --folder data/shapes \
        --out runs/progressive-shapes.json

``shapes`` (``minicnn.data.shapes``) is a generated set of coloured objects at every scale
on textured backgrounds, written as PNG files and read back through the image-folder
loader, as a user's own pictures are.
``--device gpu`` trains both arms on a GPU (each batch is still resized on the host).

Both arms start from the same initial weights, see the same images in the same order
(one loader, one seed), train the same number of epochs with the same optimizer and
learning-rate schedule (Adam with the command line's cosine decay, stepped every batch) and
are evaluated on the same test images at the final size. ``--progressive-epochs`` gives the
progressive arm a number of epochs of its own (its schedules span them): the paper's claim
is about wall time, and an epoch of small images costs less, so the question "does it reach
the fixed arm's accuracy in less time?" can be asked with the time it saves spent on more
epochs. They differ only in what the paper
changes: the progressive arm trains in stages whose image size, dropout and RandAugment
magnitude rise together from a minimum to a maximum (``minicnn.progressive``); the fixed
arm trains every epoch at the final stage's size and regularisation.

The arms are *interleaved* epoch by epoch in this one process (fixed epoch 1,
progressive epoch 1, fixed epoch 2, ...), so that whatever else loads the machine
loads both alike; each arm's wall time and process CPU time are summed over its own
training epochs.
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

import architectures
from minicnn import optim
from minicnn.backend import gpu_available, to_device
from minicnn.data import DataLoader, mnist_datasets
from minicnn.data.augment import RandAugment, scale_jitter
from minicnn.data.cluttered import cluttered_mnist
from minicnn.data.folder import load_image_folder, save_image_folder
from minicnn.data import shapes as shapes_set
from minicnn.data.transforms import Compose, pipeline
from minicnn.files import atomic_write
from minicnn.functional import dropout
from minicnn.nn import init as nn_init
from minicnn.progressive import ProgressiveLearning, ProgressiveSchedule
from minicnn.schedules import make_schedule
from minicnn.tensor import Tensor
from minicnn.train import evaluate, train_step


class Loop:
    """The attributes a callback reads (the subset of minicnn.train's loop used here)."""

    def __init__(self, model, optimizer, schedule, train_loader, test_loader, epochs,
                 device="cpu"):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.train_loader, self.test_loader, self.epochs = train_loader, test_loader, epochs
        self.history, self.device = [], device
        self.epoch = self.batch = 0


def train_one_epoch(loop, callback, epoch):
    """One epoch of ``loop`` with ``callback``'s hooks; returns (wall s, CPU s, loss)."""
    wall, cpu = time.perf_counter(), time.process_time()
    loop.epoch = epoch
    callback.on_epoch_start(loop, epoch)
    loop.model.train()
    losses = []
    for loop.batch, (images, labels) in enumerate(loop.train_loader.batches(epoch)):
        images, labels = callback.on_batch(loop, images, labels)     # on the host
        loss, _ = train_step(loop.model, loop.optimizer, Tensor(to_device(images, loop.device)),
                             to_device(labels, loop.device), schedule=loop.schedule)
        losses.append(loss)
    return time.perf_counter() - wall, time.process_time() - cpu, float(np.mean(losses))


class ScaleJitter:
    """Each training image rescaled to a side S ~ U[size, ⌊(1 + extra)·size⌋] and cropped
    back to ``size`` at random (VGG's scale jittering, ``augment.scale_jitter``): digits
    then come in several sizes, as objects do in the photographs the paper trains on."""
    random = True

    def __init__(self, size, extra):
        self.size, self.largest = size, int((1 + extra) * size)

    def __call__(self, images, rng):
        return scale_jitter(images, self.size, (self.size, self.largest), rng)


def shapes_folder(train_count, test_count, seed, folder=None):
    """The shapes set through the image-folder loader: generated into ``folder`` (or a
    temporary one) unless that folder already holds it, then read back from the PNGs."""
    def written_and_read(root):
        if not (os.path.isdir(root) and os.listdir(root)):
            save_image_folder(*shapes_set.shapes_datasets(train_count, test_count, seed), root)
        return load_image_folder(root, image_size=shapes_set.SIZE, channels=3)

    if folder:
        return written_and_read(folder)
    with tempfile.TemporaryDirectory() as scratch:
        return written_and_read(scratch)


def datasets(name, train_count, test_count, seed, fragments, folder=None):
    if name == "shapes":
        train, test = shapes_folder(train_count, test_count, seed, folder)
    else:
        train, test = mnist_datasets()
    train, test = train.subset(train_count, seed), test.subset(test_count, seed)
    if name == "cluttered":
        train = cluttered_mnist(train, "train", seed, fragments=fragments)
        test = cluttered_mnist(test, "test", seed, fragments=fragments)
    return train, test


def draw_classifier(model, head_init):
    """Redraw the classifier's weights at ImageNet's scale when ``head_init`` says so.

    EfficientNet's reference code draws them from U(±1/√classes): ±0.03 for ImageNet's
    1,000 classes, but ±0.32 for 10, where the initial logits have a standard deviation
    near 3 (a loss near 3.6 where chance is ln 10 ≈ 2.3). Adam moves a weight by about
    its learning rate per step, so it spends hundreds of steps shrinking them before the
    network learns; ``imagenet`` draws them from U(±1/√1000) instead (logits ≈ 0.35).
    """
    if head_init == "imagenet":
        bound = 1 / np.sqrt(1000)
        nn_init.uniform_(model.classifier.weight, -bound, bound)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("mnist", "cluttered", "shapes"), default="mnist")
    parser.add_argument("--train", type=int, default=1024, help="training images (a subset)")
    parser.add_argument("--test", type=int, default=1000, help="test images (a subset)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--progressive-epochs", type=int, default=None,
                        help="the progressive arm's epochs (default: --epochs)")
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sizes", type=int, nargs=2, default=(16, 32), metavar=("MIN", "MAX"))
    parser.add_argument("--dropout", type=float, nargs=2, default=(0.1, 0.3))
    parser.add_argument("--magnitude", type=float, nargs=2, default=(5 / 3, 5))
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="Adam's peak learning rate (the command line's default)")
    parser.add_argument("--schedule", default="cosine",
                        help="learning-rate schedule, as the command line's --schedule")
    parser.add_argument("--bn-momentum", type=float, default=0.01,
                        help="batch norm's weight of the new statistics (the paper's 0.01 "
                             "needs thousands of steps before the running statistics that "
                             "evaluation uses are the trained ones)")
    parser.add_argument("--scale-jitter", type=float, default=0.0, metavar="EXTRA",
                        help="both arms: rescale each training image to S ~ U[size, "
                             "(1 + EXTRA)·size] and crop it back (0: off)")
    parser.add_argument("--fragments", type=int, default=4,
                        help="cluttered: pieces of other digits on each canvas")
    parser.add_argument("--folder", help="shapes: the image folder to read, or to write the "
                                         "generated set to first (default: a temporary one)")
    parser.add_argument("--head-init", choices=("paper", "imagenet"), default="paper",
                        help="the classifier's initial weights: U(±1/√classes) as the "
                             "reference code, or U(±1/√1000) as at ImageNet's 1,000 classes")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="where both arms train (gpu: CuPy and a CUDA GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.device == "gpu" and not gpu_available():
        parser.error("--device gpu: no CUDA GPU with CuPy is available here")

    # Every generator a run draws from starts at the seed: the initial weights, and the
    # dropout and stochastic-depth masks (one generator, which both arms draw from in turn).
    # (Runs up to progressive12 left the masks' generator unseeded: their fixed arms, with
    # the same settings, differed — 97.47% in progressive10, 96.90% in progressive12.)
    nn_init.manual_seed(args.seed)
    dropout.manual_seed(args.seed)
    train, test = datasets(args.dataset, args.train, args.test, args.seed, args.fragments,
                           args.folder)
    mean, std = train.channel_statistics()
    final, channels = args.sizes[1], train.channels
    to_network = pipeline(train.images.shape[2], channels, final, channels, mean, std)
    randaugment = RandAugment(num_ops=2, magnitude=args.magnitude[0])
    jitter = [ScaleJitter(final, args.scale_jitter)] if args.scale_jitter > 0 else []
    train_loader = DataLoader(train, args.batch_size, shuffle=True, drop_last=True,
                              transform=Compose([randaugment] + to_network.transforms + jitter),
                              seed=args.seed)
    test_loader = DataLoader(test, 250, transform=to_network)

    args.progressive_epochs = args.progressive_epochs or args.epochs
    regularisation = dict(dropout=tuple(args.dropout), randaugment=tuple(args.magnitude))
    schedules = {
        "fixed": ProgressiveSchedule(args.epochs, 1, (final, final),
                                     dropout=(args.dropout[1],) * 2,
                                     randaugment=(args.magnitude[1],) * 2),
        "progressive": ProgressiveSchedule(args.progressive_epochs, args.stages,
                                           tuple(args.sizes), size_multiple=4,
                                           **regularisation),
    }
    arms = {}
    for name, schedule in schedules.items():
        model = architectures.create("efficientnet_v2_s", num_classes=train.num_classes,
                                     in_channels=channels,
                                     bn_momentum=args.bn_momentum)
        draw_classifier(model, args.head_init)
        model.to(args.device)
        optimizer = optim.Adam(model.parameters(), lr=args.lr)
        learning_rate = make_schedule(args.schedule, optimizer, schedule.epochs,
                                      len(train_loader))
        arms[name] = dict(loop=Loop(model, optimizer, learning_rate, train_loader, test_loader,
                                    schedule.epochs, args.device),
                          callback=ProgressiveLearning(schedule, seed=args.seed, log=print),
                          wall_s=0.0, cpu_s=0.0, epochs=[])
    initial = arms["fixed"]["loop"].model.state_dict()
    arms["progressive"]["loop"].model.load_state_dict(initial)      # the same start
    for arm in arms.values():
        arm["callback"].on_fit_start(arm["loop"])

    print(f"{args.dataset}: {len(train)} training and {len(test)} test images of "
          f"{train.images.shape[1:]}, batch {args.batch_size}, {args.epochs} epochs "
          f"(progressive: {args.progressive_epochs})")
    for epoch in range(max(args.epochs, args.progressive_epochs)):
        for name, arm in arms.items():
            if epoch >= arm["loop"].epochs:
                continue                            # this arm is done
            # the two arms share the RandAugment transform: each sets its magnitude first
            wall, cpu, loss = train_one_epoch(arm["loop"], arm["callback"], epoch)
            arm["wall_s"] += wall
            arm["cpu_s"] += cpu
            arm["epochs"].append(dict(epoch=epoch + 1, size=arm["callback"].stage.image_size,
                                      dropout=arm["callback"].stage.dropout,
                                      magnitude=arm["callback"].stage.randaugment,
                                      loss=loss, wall_s=wall, cpu_s=cpu))
            print(f"  {name:<12} epoch {epoch + 1}  size {arm['callback'].stage.image_size:>3}"
                  f"  loss {loss:.4f}  {wall:7.1f} s wall  {cpu:7.1f} s CPU", flush=True)

    results = dict(vars(args), dataset_shape=list(train.images.shape[1:]), arms={})
    for name, arm in arms.items():
        metrics = evaluate(arm["loop"].model, test_loader)
        results["arms"][name] = dict(test_accuracy=metrics["accuracy"],
                                     test_loss=metrics["loss"], wall_s=arm["wall_s"],
                                     cpu_s=arm["cpu_s"], epochs=arm["epochs"])
        print(f"{name:<12} test accuracy {100 * metrics['accuracy']:.2f}%  "
              f"training {arm['wall_s']:.1f} s wall, {arm['cpu_s']:.1f} s CPU")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_write(args.out, lambda f: f.write(json.dumps(results, indent=1).encode()))
    return results


if __name__ == "__main__":
    main()
