"""Transfer learning on MNIST: what a network learned on digits 0–4 helps it learn 5–9.

    python -m minicnn.demos.transfer_mnist                 # real MNIST (fetched if needed)
    python -m minicnn.demos.transfer_mnist --synthetic     # offline: seven-segment digits

The experiment
--------------
1. **Pretrain** LeNet-5 (modern: ReLU, max-pooling) on the training images of digits 0–4,
   as a 5-class problem.
2. **Learn digits 5–9 from a small labelled subset** (``--per-class`` images of each
   digit, 5 by default: 25 labelled images), three ways, with the same optimizer, the
   same number of steps and the same batches:

   (a) *frozen pretrained trunk + new head* — the pretrained convolutional trunk
       (conv1, conv2: the feature extractor) frozen, under a freshly initialised head
       (fc1 → fc2 → a new 5-way fc3, ``new_head``): only the head trains;
   (b) *full fine-tuning* — the same start (pretrained trunk, the same new head), every
       layer trainable;
   (c) *from scratch* — a freshly initialised LeNet-5.
3. **Evaluate** each on the test images of digits 5–9 and print the three accuracies.

With two dozen labelled images and a few dozen steps, (c) has to learn edge and stroke
detectors from almost nothing, while (a) and (b) start from detectors that digits 0–4
already trained: strokes are strokes, whichever digit they make. That is the whole
argument for transfer learning, and (a) > (c), (b) > (c) is what the test checks on a
tiny budget. (Freezing the trunk is the safer choice with this little data: fine-tuning it
too can bend good features toward the few examples seen.) With the defaults on the real
data (seed 0; all 30,596 training images of digits 0–4, all 4,861 test images of 5–9):

    (a) frozen pretrained trunk + new head    86.2 %
    (b) full fine-tuning                      83.9 %
    (c) from scratch                          43.8 %

``--synthetic`` replaces MNIST by seven-segment digits drawn with random slant, size,
position, stroke width and noise (``synthetic_digits``): digits share their strokes the
same way, so the experiment behaves alike, with no data to fetch.
"""
import argparse
import copy
import sys
import time

import numpy as np

from minicnn import functional as F
from minicnn import nn
from minicnn.nn.transfer import freeze, replace_head, replace_module, trainable_parameters
from minicnn.tensor import Tensor, no_grad

OLD_DIGITS, NEW_DIGITS = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
TRUNK = ("conv1", "conv2")          # LeNet-5's feature extractor; fc1, fc2, fc3: its head


# ============================================================================= data

# Seven segments in a glyph box x ∈ [0, 1], y ∈ [0, 2] (y down): a top, b top-right,
# c bottom-right, d bottom, e bottom-left, f top-left, g middle.
SEGMENTS = {"a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 1)), "c": ((1, 1), (1, 2)),
            "d": ((0, 2), (1, 2)), "e": ((0, 1), (0, 2)), "f": ((0, 0), (0, 1)),
            "g": ((0, 1), (1, 1))}
DIGIT_SEGMENTS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc",
                  "abcdefg", "abcdfg")


def synthetic_digits(count, seed=0, size=28):
    """``count`` seven-segment digit images, uint8 (count, size, size), labels int64.

    Each image draws its digit's segments as strokes of random width, with a random
    glyph size, slant, position and per-endpoint jitter, plus a little noise: varied
    enough that a classifier must learn strokes, not pixels.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = np.empty((count, size, size), dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    for start in range(0, count, 512):
        stop = min(count, start + 512)
        n = stop - start
        width = rng.uniform(0.30, 0.45, n) * size        # glyph box width in pixels
        height = width * rng.uniform(1.6, 2.0, n) / 2    # per unit of the box's y ∈ [0, 2]
        slant = rng.uniform(-0.25, 0.25, n)
        left = (size - width) / 2 + rng.uniform(-2.5, 2.5, n)
        top = (size - 2 * height) / 2 + rng.uniform(-2.0, 2.0, n)
        stroke = rng.uniform(1.0, 2.0, n)
        canvas = np.zeros((n, size, size))
        for segment, ((x0, y0), (x1, y1)) in SEGMENTS.items():
            on = np.array([segment in DIGIT_SEGMENTS[d] for d in labels[start:stop]])
            jitter = rng.normal(0, 0.06, (n, 4))
            px0, py0 = x0 + jitter[:, 0], y0 + jitter[:, 1]
            px1, py1 = x1 + jitter[:, 2], y1 + jitter[:, 3]
            # to pixels: slant shifts x by the height above the baseline
            ax_, ay_ = left + width * px0 + slant * height * (2 - py0), top + height * py0
            bx_, by_ = left + width * px1 + slant * height * (2 - py1), top + height * py1
            distance = _distance_to_segment(xs, ys, ax_, ay_, bx_, by_)
            ink = np.clip(stroke[:, None, None] + 0.5 - distance, 0, 1) * on[:, None, None]
            canvas = np.maximum(canvas, ink)
        canvas += rng.normal(0, 0.05, canvas.shape)
        images[start:stop] = (np.clip(canvas, 0, 1) * 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _distance_to_segment(xs, ys, ax_, ay_, bx_, by_):
    """Distance of every pixel (xs, ys) to the segments A→B, one per image (broadcast)."""
    ax_, ay_, bx_, by_ = (v[:, None, None] for v in (ax_, ay_, bx_, by_))
    dx, dy = bx_ - ax_, by_ - ay_
    t = np.clip(((xs - ax_) * dx + (ys - ay_) * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(xs - (ax_ + t * dx), ys - (ay_ + t * dy))


def load_data(source="mnist", data_dir=None, seed=0):
    """(x_train, y_train, x_test, y_test): uint8 (N, 28, 28) images and int64 labels."""
    if source == "synthetic":
        x_train, y_train = synthetic_digits(30000, seed=seed)
        x_test, y_test = synthetic_digits(5000, seed=seed + 1)
        return x_train, y_train, x_test, y_test
    from minicnn.data import load_mnist
    return load_mnist(data_dir)


def to_float(images, mean=0.1307, std=0.3081):
    """uint8 (N, 28, 28) → normalized float32 (N, 1, 28, 28), MNIST's mean and std."""
    return ((images.astype(np.float32) / 255.0 - mean) / std)[:, None]


def select(images, labels, digits, per_class=None, seed=0):
    """The samples of ``digits`` (at most ``per_class`` of each, drawn by a seeded
    generator), relabelled 0 … len(digits) − 1."""
    rng = np.random.default_rng(seed)
    chosen = []
    for digit in digits:
        where = np.flatnonzero(labels == digit)
        if per_class is not None:
            if len(where) < per_class:
                raise ValueError(f"transfer demo: only {len(where)} images of digit {digit}, "
                                 f"asked for {per_class}")
            where = rng.choice(where, per_class, replace=False)
        chosen.append(where)
    chosen = np.sort(np.concatenate(chosen))
    relabel = np.full(10, -1, dtype=np.int64)
    relabel[list(digits)] = np.arange(len(digits))
    return images[chosen], relabel[labels[chosen]]


# ========================================================================= training

def build_lenet5(num_classes, seed):
    """LeNet-5 modern with seeded initial weights."""
    import architectures
    nn.init.manual_seed(seed)
    return architectures.create("lenet5", num_classes=num_classes, in_channels=1)


def train(model, images, labels, epochs, batch_size=32, lr=0.05, momentum=0.9, seed=0):
    """Plain mini-batch SGD with momentum over the trainable parameters; the batch order
    depends only on ``seed``, so the three contenders see the same batches."""
    from minicnn.optim import SGD
    optimizer = SGD(trainable_parameters(model), lr=lr, momentum=momentum)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = F.cross_entropy(model(Tensor(images[batch])), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def new_head(model, num_classes, seed):
    """Give ``model`` a freshly initialised classifier: fc1 and fc2 re-drawn, fc3 replaced
    by a ``num_classes``-way layer (``replace_head``). The trunk keeps its weights."""
    nn.init.manual_seed(seed)
    for name in ("fc1", "fc2"):
        old = getattr(model, name)
        replace_module(model, name, nn.Linear(old.in_features, old.out_features))
    replace_head(model, num_classes)
    return model


def accuracy(model, images, labels, batch_size=500):
    """Top-1 accuracy in eval mode."""
    model.eval()
    correct = 0
    with no_grad():
        for start in range(0, len(labels), batch_size):
            logits = model(Tensor(images[start:start + batch_size])).data
            correct += int((logits.argmax(axis=1) == labels[start:start + batch_size]).sum())
    return correct / len(labels)


def run(source="mnist", data=None, data_dir=None, pretrain_per_class=None, pretrain_epochs=2,
        per_class=5, finetune_epochs=8, test_limit=None, batch_size=5, lr=0.02, seed=0,
        verbose=True):
    """The whole experiment; returns {'pretrain', 'frozen', 'finetune', 'scratch'}
    accuracies (pretrain: on the test digits 0–4; the others: on the test digits 5–9).

    ``data`` may be given directly as (x_train, y_train, x_test, y_test) uint8/int64.
    ``pretrain_per_class`` and ``test_limit`` take seeded subsets of that many images per
    digit (None: all of them).
    """
    say = print if verbose else (lambda *a, **k: None)
    start = time.perf_counter()
    if data is None:
        data = load_data(source, data_dir, seed)
    x_train, y_train, x_test, y_test = data

    old_x, old_y = select(x_train, y_train, OLD_DIGITS, pretrain_per_class, seed)
    old_test_x, old_test_y = select(x_test, y_test, OLD_DIGITS, test_limit, seed)
    new_x, new_y = select(x_train, y_train, NEW_DIGITS, per_class, seed + 1)
    new_test_x, new_test_y = select(x_test, y_test, NEW_DIGITS, test_limit, seed + 2)
    old_x, old_test_x = to_float(old_x), to_float(old_test_x)
    new_x, new_test_x = to_float(new_x), to_float(new_test_x)

    say(f"1. pretraining LeNet-5 on {len(old_y):,} images of digits 0-4 "
        f"({pretrain_epochs} epochs) ...")
    pretrained = train(build_lenet5(len(OLD_DIGITS), seed), old_x, old_y, pretrain_epochs,
                       batch_size=64, lr=0.05, seed=seed)
    results = {"pretrain": accuracy(pretrained, old_test_x, old_test_y)}
    say(f"   test accuracy on digits 0-4: {results['pretrain']:.2%}")

    steps = finetune_epochs * -(-len(new_y) // batch_size)
    say(f"2. learning digits 5-9 from {len(new_y)} labelled images ({per_class} per digit), "
        f"{steps} steps of {batch_size} each way:")
    frozen = new_head(copy.deepcopy(pretrained), len(NEW_DIGITS), seed + 3)
    freeze(frozen, TRUNK)
    finetuned = new_head(copy.deepcopy(pretrained), len(NEW_DIGITS), seed + 3)
    scratch = build_lenet5(len(NEW_DIGITS), seed + 4)
    contenders = (("frozen", "(a) frozen pretrained trunk + new head", frozen),
                  ("finetune", "(b) full fine-tuning", finetuned),
                  ("scratch", "(c) from scratch", scratch))
    for key, title, model in contenders:
        trainable = sum(p.size for p in trainable_parameters(model))
        train(model, new_x, new_y, finetune_epochs, batch_size=batch_size, lr=lr, seed=seed + 5)
        results[key] = accuracy(model, new_test_x, new_test_y)
        say(f"   {title:<40} {trainable:>6,} trainable parameters   "
            f"test accuracy on digits 5-9: {results[key]:.2%}")
    say(f"({time.perf_counter() - start:.1f} s)")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minicnn.demos.transfer_mnist",
        description="Pretrain LeNet-5 on MNIST digits 0-4, then learn 5-9 from a few "
                    "labelled images: frozen trunk vs fine-tuning vs from scratch.")
    parser.add_argument("--synthetic", action="store_true",
                        help="use generated seven-segment digits instead of MNIST (offline)")
    parser.add_argument("--data-dir", help="where MNIST is cached (default ~/.cache/minicnn)")
    parser.add_argument("--per-class", type=int, default=5,
                        help="labelled images of each new digit (default 5)")
    parser.add_argument("--pretrain-epochs", type=int, default=2, help="default 2")
    parser.add_argument("--finetune-epochs", type=int, default=8,
                        help="passes over the small labelled set (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error(f"--per-class must be at least 1, got {args.per_class}")
    run("synthetic" if args.synthetic else "mnist", data_dir=args.data_dir,
        per_class=args.per_class, pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
