"""``mnist-detection``: a detection task that works offline — MNIST digits on a canvas.

    train = mnist_detection("train", count=6000, canvas_size=128, seed=0)
    test = mnist_detection("test", count=500, canvas_size=128, seed=0)
    write_coco(test, "mnist-detection-test")      # PNGs + instances.json for any COCO tool

Each canvas is black and holds 1 to 6 digits. A digit is cut to the bounding box of its
ink, resized (bilinear, aspect kept) to a random height between 18 % and 45 % of the
canvas, and pasted at a random place where its box overlaps no earlier digit's box
(a digit that finds no free place in 30 tries is left out, so crowded canvases may hold
fewer than drawn). Pasting takes the brighter pixel, as ink on ink would.

Boxes are derived from the pasted pixels exactly: a digit's box is the smallest box of
whole pixels holding every pixel of its resized image that is not black, so
(x1, y1, x2, y2) = (first ink column, first ink row, last ink column + 1, last ink row + 1).
The label is the digit; its COCO category id is digit + 1 (COCO ids start at 1) and its
class name the digit itself.

Deterministic by seed: canvas i of a split is drawn from its own generator
``default_rng((seed, split, i))``, so it does not depend on how many canvases are made.
The train canvases use MNIST's 60,000 training digits, the test canvases its 10,000 test
digits, so no digit shape is shared between them.
"""
import os

import numpy as np

from minicnn.detection.anchors import check_image_size
from minicnn.detection.formats import DetectionDataset, make_record

SPLITS = {"train": 0, "test": 1}
DIGITS_PER_CANVAS = (1, 6)
HEIGHT_FRACTION = (0.18, 0.45)
PLACEMENT_TRIES = 30


def resize_bilinear(image, height, width):
    """``image`` (h, w) resampled to (height, width) by bilinear interpolation between pixel
    centres: output pixel i samples the input at (i + ½)·h/height − ½, clamped to the edge."""
    def sample_positions(out_size, in_size):
        position = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, position - low

    image = image.astype(np.float64)
    top, bottom, fy = sample_positions(height, image.shape[0])
    left, right, fx = sample_positions(width, image.shape[1])
    rows = image[top] * (1 - fy)[:, None] + image[bottom] * fy[:, None]
    return rows[:, left] * (1 - fx) + rows[:, right] * fx


def ink_box(image):
    """(x1, y1, x2, y2) of the non-black pixels of ``image``: whole pixels, x2 exclusive."""
    rows, columns = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return columns[0], rows[0], columns[-1] + 1, rows[-1] + 1


def _overlaps(box, boxes):
    return any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
               for b in boxes)


def make_canvas(rng, digit_images, digit_labels, canvas_size,
                digits_per_canvas=DIGITS_PER_CANVAS, height_fraction=HEIGHT_FRACTION):
    """One canvas: (uint8 (size, size) image, boxes (M, 4), labels (M,)) — see module doc."""
    canvas = np.zeros((canvas_size, canvas_size), dtype=np.uint8)
    boxes, labels = [], []
    for _ in range(int(rng.integers(digits_per_canvas[0], digits_per_canvas[1] + 1))):
        index = int(rng.integers(len(digit_images)))
        x1, y1, x2, y2 = ink_box(digit_images[index])
        ink = digit_images[index][y1:y2, x1:x2]
        height = max(2, int(round(rng.uniform(*height_fraction) * canvas_size)))
        width = max(2, min(canvas_size, int(round(ink.shape[1] * height / ink.shape[0]))))
        patch = np.clip(np.rint(resize_bilinear(ink, height, width)), 0, 255).astype(np.uint8)
        px1, py1, px2, py2 = ink_box(patch)     # resizing may leave a black rim: measure again
        for _ in range(PLACEMENT_TRIES):
            left = int(rng.integers(0, canvas_size - width + 1))
            top = int(rng.integers(0, canvas_size - height + 1))
            box = (left + px1, top + py1, left + px2, top + py2)
            if not _overlaps(box, boxes):
                region = canvas[top:top + height, left:left + width]
                np.maximum(region, patch, out=region)
                boxes.append(box)
                labels.append(int(digit_labels[index]))
                break
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    return canvas, boxes, np.array(labels, dtype=np.int64)


class MnistDetection(DetectionDataset):
    """Canvases of MNIST digits held in memory (``images`` uint8 (N, size, size))."""

    def __init__(self, images, records, split, seed):
        super().__init__(records, [str(d) for d in range(10)], range(1, 11),
                         name=f"mnist-detection-{split}", channels=1)
        self.images, self.split, self.seed = images, split, seed

    def load_image(self, index):
        return self.images[index][..., None]

    def image_path(self, index):
        return self.records[index]["file_name"]


def mnist_detection(split="train", count=None, canvas_size=128, seed=0, data_dir=None,
                    mnist=None):
    """The ``mnist-detection`` split as a ``DetectionDataset`` (see the module doc).

    ``count`` defaults to 6000 train / 500 test canvases. ``mnist`` may pass the
    ``(x_train, y_train, x_test, y_test)`` arrays (else ``load_mnist(data_dir)``).
    ``canvas_size`` must suit a detector with levels up to P7: a multiple of 128.
    """
    if split not in SPLITS:
        raise ValueError(f"mnist_detection: split must be 'train' or 'test', got {split!r}")
    check_image_size(canvas_size)
    if count is None:
        count = 6000 if split == "train" else 500
    if mnist is None:
        from minicnn.data.mnist import load_mnist
        mnist = load_mnist(data_dir)
    digit_images, digit_labels = (mnist[0], mnist[1]) if split == "train" else (mnist[2], mnist[3])
    images = np.zeros((count, canvas_size, canvas_size), dtype=np.uint8)
    records = []
    for i in range(count):
        rng = np.random.default_rng((seed, SPLITS[split], i))
        images[i], boxes, labels = make_canvas(rng, digit_images, digit_labels, canvas_size)
        records.append(make_record(i + 1, f"{split}-{i:06d}.png", canvas_size, canvas_size, boxes,
                               labels, np.zeros(len(labels), dtype=bool)))
    return MnistDetection(images, records, split, seed)


def write_coco(dataset, folder):
    """Write every image of ``dataset`` as a PNG under ``folder`` and the ground truth as
    ``folder/instances.json``; returns the JSON path (readable by ``read_coco_json``)."""
    import json
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for index, record in enumerate(dataset.records):
        image = dataset.load_image(index)
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(
            os.path.join(folder, record["file_name"]))
    path = os.path.join(folder, "instances.json")
    with open(path, "w") as file:
        json.dump(dataset.to_coco(), file)
    return path
