"""Batch transforms: every operation acts on a whole batch ``(N, C, H, W)`` at once.

A per-sample loop in Python costs microseconds per image, and a training step of a small
network costs about that much per image too: per-sample preprocessing would halve the
speed. So each transform here is a handful of array expressions over the batch:

    pad                 one ``np.pad``
    random translate /  pad, then ONE gather: a sliding-window view holds every possible
    random crop         crop of every image, and fancy indexing picks one per image
    horizontal flip     ``np.where`` between the batch and its mirror
    resize              two matrix products  R_h · X · R_wᵀ  (bilinear, anti-aliased)
    normalize           x = (pixel/255 − mean)/std  as one multiply-add per channel
    repeat channels     grayscale → RGB for a 3-channel network

Geometric transforms run first, on ``uint8`` (a quarter of the bytes of float32), and
padding with 0 then means black, the digits' background. Every transform is a callable
``t(batch, rng) -> batch``; random ones draw from ``rng`` (a NumPy Generator) so a
seeded loader reproduces its augmentations exactly.
"""
import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _check_batch(name, images):
    if images.ndim != 4:
        raise ValueError(f"{name}: expected a batch of shape (N, C, H, W), got {images.shape}")


# ----------------------------------------------------------------------------- functions

def pad(images, padding, value=0):
    """Add ``padding`` pixels of ``value`` on every side (an int or (top, bottom, left, right))."""
    _check_batch("pad", images)
    top, bottom, left, right = (padding,) * 4 if np.isscalar(padding) else padding
    return np.pad(images, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def pad_to(images, size):
    """Centre the images in a ``size × size`` canvas (28 → 32 is how LeCun et al. fed MNIST
    to LeNet-5: the digit's 20×20 box then sits in the middle of the 32×32 input)."""
    _check_batch("pad_to", images)
    height, width = images.shape[2:]
    if height > size or width > size:
        raise ValueError(f"pad_to: cannot pad {height}x{width} images to a smaller {size}x{size}")
    top, left = (size - height) // 2, (size - width) // 2
    return pad(images, (top, size - height - top, left, size - width - left))


def crop_at(images, offsets_y, offsets_x, size):
    """Crop image i at (offsets_y[i], offsets_x[i]) to ``size`` (an int or (h, w)): one gather.

    ``sliding_window_view`` is a zero-copy view of shape (N, C, Y, X, h, w) holding every
    h×w window; indexing it with (i, :, y_i, x_i) takes one window per image.
    """
    height, width = (size, size) if np.isscalar(size) else size
    windows = sliding_window_view(images, (height, width), axis=(2, 3))
    return windows[np.arange(len(images)), :, offsets_y, offsets_x]


def random_crop(images, size, padding, rng):
    """Zero-pad by ``padding`` then cut a ``size`` crop at a random place in each image."""
    _check_batch("random_crop", images)
    padded = pad(images, padding) if padding else images
    height, width = (size, size) if np.isscalar(size) else size
    if height > padded.shape[2] or width > padded.shape[3]:
        raise ValueError(f"random_crop: crop {height}x{width} exceeds padded images "
                         f"{padded.shape[2]}x{padded.shape[3]}")
    offsets_y = rng.integers(0, padded.shape[2] - height + 1, size=len(images))
    offsets_x = rng.integers(0, padded.shape[3] - width + 1, size=len(images))
    return crop_at(padded, offsets_y, offsets_x, (height, width))


def random_translate(images, max_shift, rng):
    """Shift each image by a random whole number of pixels in [−max_shift, max_shift] along
    each axis, filling with zeros: a crop of the original size from the padded image."""
    return random_crop(images, images.shape[2:], max_shift, rng)


def random_horizontal_flip(images, rng, probability=0.5):
    """Mirror left-right a random ``probability`` share of the images."""
    _check_batch("random_horizontal_flip", images)
    flip = rng.random(len(images)) < probability
    return np.where(flip[:, None, None, None], images[..., ::-1], images)


@functools.lru_cache(maxsize=64)
def resize_matrix(in_size, out_size):
    """The (out_size, in_size) matrix R with ``resized = R @ signal`` along one axis.

    Output pixel o sits at input coordinate u = (o + ½)·s − ½, s = in_size/out_size
    (pixel centres aligned, as every image library does). It takes a triangle-weighted
    average of the input pixels around u:

        R[o, i] ∝ max(0, 1 − |i − u| / σ),   σ = max(s, 1),   each row normalised to 1.

    Enlarging (σ = 1) this is plain bilinear interpolation; shrinking, the triangle widens
    with the scale so every input pixel contributes (anti-aliasing), which is what
    Pillow's BILINEAR filter does.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale - 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(in_size)[None, :] - centres[:, None]) / support)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def resize(images, size):
    """Resize float images to ``size`` (int or (h, w)) with two matrix products per batch:

        Y = R_h · X · R_wᵀ     for every (image, channel) plane X of shape (H, W).
    """
    _check_batch("resize", images)
    if images.dtype.kind != "f":
        raise TypeError(f"resize: expected float images (normalise first), got {images.dtype}")
    out_h, out_w = (size, size) if np.isscalar(size) else size
    n, c, h, w = images.shape
    if (h, w) == (out_h, out_w):
        return images
    rows = resize_matrix(h, out_h).astype(images.dtype, copy=False)
    cols = resize_matrix(w, out_w).astype(images.dtype, copy=False)
    across = images.reshape(n * c * h, w) @ cols.T               # (N·C·H, out_w): one GEMM
    return np.matmul(rows, across.reshape(n * c, h, out_w)).reshape(n, c, out_h, out_w)


def normalize(images, mean, std, dtype=np.float32):
    """x = (pixel / 255 − mean_c) / std_c per channel c, as one multiply-add:
    x = pixel · a_c + b_c with a_c = 1 / (255·std_c), b_c = −mean_c / std_c."""
    _check_batch("normalize", images)
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if len(mean) not in (1, images.shape[1]) or len(std) != len(mean):
        raise ValueError(f"normalize: {images.shape[1]}-channel images but {len(mean)} means "
                         f"and {len(std)} standard deviations")
    scale = (1.0 / (255.0 * std)).astype(dtype).reshape(1, -1, 1, 1)
    shift = (-mean / std).astype(dtype).reshape(1, -1, 1, 1)
    out = images.astype(dtype)
    out *= scale
    out += shift
    return out


def repeat_channels(images, channels):
    """Grayscale (C = 1) to ``channels`` copies, for a network built for colour input."""
    _check_batch("repeat_channels", images)
    if images.shape[1] == channels:
        return images
    if images.shape[1] != 1:
        raise ValueError(f"repeat_channels: can only repeat 1 channel, got {images.shape[1]} "
                         f"channels for a {channels}-channel network")
    return np.repeat(images, channels, axis=1)


# ----------------------------------------------------------------------------- callables

class Transform:
    """A batch transform ``t(images, rng) -> images``; ``random`` ones use ``rng``."""
    random = False

    def __call__(self, images, rng=None):
        raise NotImplementedError(f"{type(self).__name__} must define __call__")

    def __repr__(self):
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


class Compose(Transform):
    """Apply ``transforms`` in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        self.random = any(t.random for t in self.transforms)

    def __call__(self, images, rng=None):
        for t in self.transforms:
            images = t(images, rng)
        return images

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


class PadTo(Transform):
    def __init__(self, size):
        self.size = size

    def __call__(self, images, rng=None):
        return pad_to(images, self.size)


class RandomTranslate(Transform):
    random = True

    def __init__(self, max_shift):
        self.max_shift = max_shift

    def __call__(self, images, rng=None):
        return random_translate(images, self.max_shift, rng)


class RandomCrop(Transform):
    random = True

    def __init__(self, size, padding=0):
        self.size, self.padding = size, padding

    def __call__(self, images, rng=None):
        return random_crop(images, self.size, self.padding, rng)


class RandomHorizontalFlip(Transform):
    random = True

    def __init__(self, probability=0.5):
        self.probability = probability

    def __call__(self, images, rng=None):
        return random_horizontal_flip(images, rng, self.probability)


class Normalize(Transform):
    """uint8 → float32 ``(pixel/255 − mean)/std`` (the "to float" step included)."""

    def __init__(self, mean, std, dtype=np.float32):
        self.mean, self.std, self.dtype = tuple(mean), tuple(std), dtype

    def __call__(self, images, rng=None):
        return normalize(images, self.mean, self.std, self.dtype)


class Resize(Transform):
    def __init__(self, size):
        self.size = size

    def __call__(self, images, rng=None):
        return resize(images, self.size)


class RepeatChannels(Transform):
    def __init__(self, channels):
        self.channels = channels

    def __call__(self, images, rng=None):
        return repeat_channels(images, self.channels)


AUGMENTATIONS = ("none", "translate", "crop-flip", "flip")


def pipeline(image_size, channels, input_size, in_channels, mean, std, augment="none"):
    """The standard preprocessing from a dataset's images to a network's input.

    ``image_size``/``channels``: the dataset's; ``input_size``/``in_channels``: the
    network's. Steps, in order:

    1. augmentation on uint8 (training only): ``translate`` (±2 px, suits digits),
       ``crop-flip`` (pad 4, random crop, mirror: the CIFAR recipe), ``flip``;
    2. enlarge by centring in a zero canvas when the network is at most 4 px larger
       (MNIST 28 → LeNet-5's 32), else leave it to step 4;
    3. to float32 and normalise with the training set's per-channel mean and std;
    4. resize to the network's input size (bilinear, anti-aliased when shrinking);
    5. repeat a grayscale channel for a colour network.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    steps = []
    if augment == "translate":
        steps.append(RandomTranslate(2))
    elif augment == "crop-flip":
        steps += [RandomCrop(image_size, padding=4), RandomHorizontalFlip()]
    elif augment == "flip":
        steps.append(RandomHorizontalFlip())
    padded_size = image_size
    if image_size < input_size <= image_size + 4:
        steps.append(PadTo(input_size))
        padded_size = input_size
    steps.append(Normalize(mean, std))
    if padded_size != input_size:
        steps.append(Resize(input_size))
    if in_channels != channels:
        steps.append(RepeatChannels(in_channels))
    return Compose(steps)
