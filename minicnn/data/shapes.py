"""Shapes: ten classes of coloured objects at every scale on textured, cluttered
backgrounds, generated offline and written as an image folder.

MNIST's digits come at one size, centred, in one colour on black. The photographs the
papers train on hold objects at every scale, anywhere, in any colour, over backgrounds
that are themselves patterned; a recipe that changes the image size during training
(EfficientNetV2's progressive learning) meets the two very differently. This set is a
stand-in that can be built here without a download. Each image holds one object:

* its class is its shape (``SHAPES``: crescent, cross, disk, ellipse, frame, half-disk,
  ring, square, star, triangle), each a test on local coordinates (u, v) in which the
  object has radius 1;
* its radius is drawn from ``scale`` (a fraction of the side, so objects span a range of
  sizes), its centre anywhere that keeps most of it inside, its rotation from [0, 2π),
  and its colour at random but far from the background's mean colour;
* the background blends two random colours, at most ``contrast`` apart in each channel,
  through the same texture as cluttered MNIST (a smooth random field plus a grating,
  ``cluttered.textures``), crossed by ``twigs``
  thin straight strokes of other random colours, which occlude nothing of the object;
* edges are anti-aliased (drawn at twice the size and averaged 2×2), and every pixel gets
  a little Gaussian noise, as a camera's would.

Everything is drawn from a generator seeded by ``(seed, split)``, so the same seed builds
the same images, bit for bit, and the test split never repeats a training image.

    >>> train, test = shapes_datasets(train=8192, test=2000, seed=0)   # 3×64×64 uint8
    >>> save_image_folder(train, test, "data/shapes")                   # PNG, per class

or, from a shell, ``python -m minicnn.data.shapes data/shapes``; then any family trains
on it as on your own pictures: ``python -m architectures.efficientnet_v2 --train data/shapes``.
"""
import argparse
import os

import numpy as np

from minicnn.data.cluttered import textures
from minicnn.data.dataset import ArrayDataset, split_generator
from minicnn.data.folder import save_image_folder

SIZE = 64                     # the side, in pixels, the set is drawn at unless told


def _polygon(u, v, sides):
    """Inside the regular polygon of circumradius 1: every side's half-plane holds."""
    inside = np.ones(u.shape, dtype=bool)
    for k in range(sides):
        angle = 2 * np.pi * k / sides
        inside &= u * np.cos(angle) + v * np.sin(angle) <= np.cos(np.pi / sides)
    return inside


# Each shape is a test on local coordinates (u, v), in which the object has radius 1. The
# names are in sorted order, as an image folder's class sub-folders are read back.
SHAPES = {
    "crescent": lambda u, v: (u * u + v * v <= 1) & ((u - 0.5) ** 2 + v * v >= 0.8 ** 2),
    "cross": lambda u, v: (np.minimum(abs(u), abs(v)) <= 0.28) & (np.maximum(abs(u), abs(v)) <= 1),
    "disk": lambda u, v: u * u + v * v <= 1,
    "ellipse": lambda u, v: u * u + (v / 0.45) ** 2 <= 1,
    "frame": lambda u, v: ((np.maximum(abs(u), abs(v)) <= 0.8)
                           & (np.maximum(abs(u), abs(v)) >= 0.45)),
    "half-disk": lambda u, v: (u * u + v * v <= 1) & (v >= 0),
    "ring": lambda u, v: (u * u + v * v <= 1) & (u * u + v * v >= 0.55 ** 2),
    "square": lambda u, v: np.maximum(abs(u), abs(v)) <= 0.75,
    "star": lambda u, v: np.hypot(u, v) <= 0.5 + 0.5 * np.cos(5 * np.arctan2(v, u)),
    "triangle": lambda u, v: _polygon(u, v, 3),
}
CLASSES = tuple(SHAPES)


def _segment_distance(xs, ys, start, end):
    """Distance from each pixel (xs, ys) to the segments start→end, (N, 2) each."""
    sx, sy = start[:, 0, None, None], start[:, 1, None, None]
    dx, dy = (end - start)[:, 0, None, None], (end - start)[:, 1, None, None]
    along = ((xs - sx) * dx + (ys - sy) * dy) / np.maximum(dx * dx + dy * dy, 1e-6)
    along = np.clip(along, 0, 1)
    return np.hypot(xs - sx - along * dx, ys - sy - along * dy)


def _distinct_colours(avoid, rng, distance=110.0):
    """Random RGB colours, each at least ``distance`` from the matching ``avoid`` colour
    (redrawn where too close: a few rounds leave none, and a last resort mirrors it)."""
    colours = rng.uniform(0, 255, avoid.shape)
    for _ in range(8):
        close = np.linalg.norm(colours - avoid, axis=1) < distance
        if not close.any():
            break
        colours[close] = rng.uniform(0, 255, (close.sum(), 3))
    close = np.linalg.norm(colours - avoid, axis=1) < distance
    colours[close] = 255 - avoid[close]
    return colours


def draw_shapes(labels, rng, size=SIZE, scale=(0.2, 0.45), twigs=2, contrast=60.0,
                noise=6.0):
    """Images (N, 3, size, size) uint8, one object of class ``labels[i]`` in image i."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(SHAPES)):
        raise ValueError(f"draw_shapes: labels must lie in [0, {len(SHAPES)}), got "
                         f"[{labels.min()}, {labels.max()}]")
    if not 0 < scale[0] <= scale[1] <= 0.5:
        raise ValueError(f"draw_shapes: expected 0 < min ≤ max ≤ 0.5 for the scale, got {scale}")
    count, fine = len(labels), 2 * size                     # drawn at 2× for smooth edges
    ys, xs = np.mgrid[0:fine, 0:fine].astype(np.float32) + 0.5

    # the background: two colours blended through a texture, crossed by thin twigs
    low = rng.uniform(0, 255, (count, 3)).astype(np.float32)
    high = np.clip(low + rng.uniform(-contrast, contrast, (count, 3)), 0, 255).astype(np.float32)
    blend = textures(count, fine, rng, 1.0)[:, None]                    # (N, 1, H, W)
    canvas = low[:, :, None, None] + (high - low)[:, :, None, None] * blend
    for _ in range(twigs):
        start, end = rng.uniform(0, fine, (count, 2)), rng.uniform(0, fine, (count, 2))
        width = rng.uniform(1, 2.5, (count, 1, 1)).astype(np.float32)
        stroke = _segment_distance(xs, ys, start.astype(np.float32), end.astype(np.float32)) <= width
        colour = rng.uniform(0, 255, (count, 3)).astype(np.float32)[:, :, None, None]
        canvas = np.where(stroke[:, None], colour, canvas)

    # the object: its radius, centre and rotation, then its class's test in local coordinates
    radius = (rng.uniform(*scale, count) * fine).astype(np.float32)
    centre = rng.uniform(0.8 * radius[:, None], fine - 0.8 * radius[:, None],
                         (count, 2)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, count).astype(np.float32)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx = (xs - centre[:, 0, None, None]) / radius[:, None, None]
    dy = (ys - centre[:, 1, None, None]) / radius[:, None, None]
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    inside = np.zeros((count, fine, fine), dtype=bool)
    for label, test in enumerate(SHAPES.values()):
        members = labels == label
        inside[members] = test(u[members], v[members])
    colour = _distinct_colours((low + high) / 2, rng).astype(np.float32)[:, :, None, None]
    canvas = np.where(inside[:, None], colour, canvas)

    canvas = canvas.reshape(count, 3, size, 2, size, 2).mean(axis=(3, 5))   # 2×2 average
    canvas += rng.normal(0, noise, canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def shapes(count, split="train", seed=0, size=SIZE, chunk=1000, **options):
    """One split of ``count`` images, classes balanced (cycled, then shuffled)."""
    if count < 1:
        raise ValueError(f"shapes: expected at least one image, got {count}")
    rng = split_generator(split, seed, "shapes")
    labels = rng.permutation(np.arange(count) % len(SHAPES))
    images = np.concatenate([draw_shapes(labels[start:start + chunk], rng, size, **options)
                             for start in range(0, count, chunk)])
    return ArrayDataset(images, labels, CLASSES, f"shapes-{split}")


def shapes_datasets(train=8192, test=2000, seed=0, size=SIZE, **options):
    """(train, test) shapes, (N, 3, size, size) uint8, from independent generators."""
    return (shapes(train, "train", seed, size, **options),
            shapes(test, "test", seed, size, **options))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minicnn.data.shapes",
        description="Write the shapes set as an image folder: ROOT/train/<class>/*.png and "
                    "ROOT/test/<class>/*.png, which --train ROOT then reads.")
    parser.add_argument("root", help="the folder to write (must not exist or be empty)")
    parser.add_argument("--train", type=int, default=8192, help="training images")
    parser.add_argument("--test", type=int, default=2000, help="test images")
    parser.add_argument("--size", type=int, default=SIZE, help="side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if os.path.isdir(args.root) and os.listdir(args.root):
        parser.error(f"{args.root} already holds files; give a new or empty folder")
    train, test = shapes_datasets(args.train, args.test, args.seed, args.size)
    save_image_folder(train, test, args.root)
    print(f"wrote {len(train)} training and {len(test)} test images of "
          f"{args.size}×{args.size} px, {len(CLASSES)} classes, to {args.root}")


if __name__ == "__main__":
    main()
