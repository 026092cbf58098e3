"""Cluttered MNIST: handwritten digits on textured, cluttered backgrounds, built offline.

Plain MNIST is a solved toy: a centred white digit on black. To see a training recipe
matter without downloading a large photo set, each digit here is pasted at a random
place of a larger canvas over

* a texture: a smooth random field (a coarse grid of random values, enlarged
  bilinearly) plus a sinusoidal grating of random orientation, frequency and phase
  ("wood grain" and "fabric" that a 3×3 edge detector also responds to), and
* clutter: ``fragments`` random square pieces cut from *other* digits of the same split,
  strokes that look like parts of digits (as in the cluttered MNIST of Mnih et al. 2014
  and Jaderberg et al. 2015), so the network must find which strokes form the whole digit.

The digit is composited on top with ``max`` (strokes are bright), so it is never hidden,
only surrounded. Everything is drawn from a generator seeded by ``(seed, split)``: the
same seed builds the same images, bit for bit; the training set comes from MNIST's
training split and the test set from its test split, so no test digit is ever trained on.
Construction is vectorised over chunks of images (one fancy-index paste per fragment).

    >>> train, test = cluttered_mnist_datasets(seed=0)          # 60,000 and 10,000 40×40
"""
import numpy as np

from minicnn.data.dataset import ArrayDataset, split_generator
from minicnn.data.mnist import CLASSES, mnist_datasets
from minicnn.data.transforms import resize_matrix

def textures(count, canvas, rng, brightness):
    """(count, canvas, canvas) float32 in [0, brightness]: a smooth random field (6×6
    random values enlarged) averaged with a grating sin(2π f (x cos θ + y sin θ) + φ)."""
    coarse = rng.random((count, 6, 6), dtype=np.float32)
    enlarge = resize_matrix(6, canvas)                                   # (canvas, 6)
    field = enlarge @ coarse @ enlarge.T
    theta = rng.uniform(0, np.pi, (count, 1, 1))
    frequency = rng.uniform(0.08, 0.3, (count, 1, 1))                    # cycles per pixel
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 1))
    ys, xs = np.mgrid[0:canvas, 0:canvas]
    grating = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (xs * np.cos(theta) + ys * np.sin(theta))
                                 + phase)
    return (brightness * 0.5 * (field + grating)).astype(np.float32)


def _paste(canvases, pieces, top, left):
    """canvases[i, top_i:top_i+h, left_i:left_i+w] = max(that window, pieces[i]), all i."""
    count, height, width = pieces.shape
    rows = top[:, None, None] + np.arange(height)[None, :, None]
    cols = left[:, None, None] + np.arange(width)[None, None, :]
    index = (np.arange(count)[:, None, None], rows, cols)
    canvases[index] = np.maximum(canvases[index], pieces)


def clutter(digits, rng, canvas=40, fragments=4, fragment_size=9, brightness=110.0):
    """The digits (N, 28, 28) uint8 on textured, cluttered canvases (N, canvas, canvas)."""
    count, height, width = digits.shape
    if canvas < max(height, width) + 2:
        raise ValueError(f"clutter: expected a canvas of at least {max(height, width) + 2} px "
                         f"for {height}x{width} digits, got {canvas}")
    if not 0 < fragment_size <= min(height, width):
        raise ValueError(f"clutter: expected a fragment size in [1, {min(height, width)}], got "
                         f"{fragment_size}")
    canvases = textures(count, canvas, rng, brightness)
    for _ in range(fragments):
        donors = rng.integers(count, size=count)                 # other digits' strokes
        # cut from the digit's middle 20×20, where the strokes are
        y0 = rng.integers(4, height - 4 - fragment_size + 1, size=count)
        x0 = rng.integers(4, width - 4 - fragment_size + 1, size=count)
        window = np.arange(fragment_size)
        pieces = digits[donors[:, None, None], y0[:, None, None] + window[None, :, None],
                        x0[:, None, None] + window[None, None, :]]
        _paste(canvases, pieces.astype(np.float32),
               rng.integers(0, canvas - fragment_size + 1, size=count),
               rng.integers(0, canvas - fragment_size + 1, size=count))
    _paste(canvases, digits.astype(np.float32),
           rng.integers(0, canvas - height + 1, size=count),
           rng.integers(0, canvas - width + 1, size=count))
    return np.clip(np.rint(canvases), 0, 255).astype(np.uint8)


def cluttered_mnist(mnist_split, split, seed=0, canvas=40, fragments=4, chunk=5000):
    """One split of cluttered MNIST from the ``ArrayDataset`` of that MNIST split."""
    rng = split_generator(split, seed, "cluttered_mnist")
    digits = mnist_split.images[:, 0]
    images = np.concatenate([clutter(digits[start:start + chunk], rng, canvas, fragments)
                             for start in range(0, len(digits), chunk)])
    return ArrayDataset(images[:, None], mnist_split.labels, CLASSES,
                        f"cluttered-mnist-{split}")


def cluttered_mnist_datasets(data_dir=None, seed=0, canvas=40, fragments=4):
    """(train, test) cluttered MNIST (N, 1, canvas, canvas), from MNIST's own split."""
    train, test = mnist_datasets(data_dir)
    return (cluttered_mnist(train, "train", seed, canvas, fragments),
            cluttered_mnist(test, "test", seed, canvas, fragments))
