"""Test-time augmentation: predictions averaged over several views of each test image.

    flip        the image and its mirror (2 views)
    10crop      AlexNet (Krizhevsky et al. 2012, §4.1): "the network makes a prediction by
                extracting five 224 × 224 patches (the four corner patches and the center
                patch) as well as their horizontal reflections (hence ten patches in all),
                and averaging the predictions made by the network's softmax layer on the
                ten patches"
    dense       VGG (Simonyan & Zisserman 2015, §3.2): the fully connected layers become
                convolutions (``minicnn.convolutionize``), the whole uncropped image at
                several scales Q goes through the network, each class-score map is
                spatially averaged, and the soft-max posteriors of all scales and of the
                mirrored images are averaged

Every function returns class probabilities (N, classes): the mean of the soft-max over
the views, as the papers average them.
"""
import numpy as np

from minicnn.backend import get_array_module, to_device
from minicnn.data.transforms import resize
from minicnn.tensor import Tensor, no_grad

TTA_MODES = ("none", "flip", "10crop")


def _softmax(scores):
    xp = get_array_module(scores)
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _probabilities(model, images):
    with no_grad():
        return _softmax(model(Tensor(images)).data)


def ten_crops(images, size):
    """The four corner crops, the centre crop, and the five mirrored: (10, N, C, s, s)."""
    if images.ndim != 4:
        raise ValueError(f"ten_crops: expected a batch (N, C, H, W), got {images.shape}")
    height, width = images.shape[2:]
    if size > min(height, width):
        raise ValueError(f"ten_crops: crop {size} is larger than the {height}x{width} images")
    top, left = (height - size) // 2, (width - size) // 2
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
               (top, left)]
    crops = [images[:, :, y:y + size, x:x + size] for y, x in corners]
    return np.stack(crops + [c[..., ::-1] for c in crops])


def predict(model, images, mode="none", crop_size=None):
    """Class probabilities of ``images`` (already normalised) under ``mode``:
    ``none`` (one view; the images must be the network's input size), ``flip`` or
    ``10crop`` (crops of ``crop_size`` from larger images)."""
    if mode not in TTA_MODES:
        raise ValueError(f"test-time augmentation must be one of {', '.join(TTA_MODES)}, "
                         f"got {mode!r}")
    model.eval()
    if mode == "none":
        return _probabilities(model, images)
    if mode == "flip":
        views = [images, images[..., ::-1]]
    else:
        views = ten_crops(images, crop_size or min(images.shape[2:]))
    return sum(_probabilities(model, np.ascontiguousarray(v)) for v in views) / len(views)


def tiled_centre(images, window, stride):
    """The centre of ``images`` that a score map of ``window``-sized cells, ``stride``
    pixels apart, tiles exactly: window + (c − 1)·stride pixels along each axis, for the
    most cells c that fit.

    The network itself would floor the r < stride pixels left over away at the bottom and
    the right (VGG at Q = 48, stride 32, window 32: its last 2×2 pooling turns 3×3 into
    1×1, so the one cell sees the top-left 32×32 of the image). Cropping ⌊r/2⌋ from the
    top and left and the rest from the bottom and right instead keeps the image centred.
    At the paper's scales (Q = 256, 384, 512 for a 224 window and stride 32) r = 0.
    """
    height, width = images.shape[2:]
    if height < window[0] or width < window[1]:
        raise ValueError(f"dense evaluation: expected images of at least the network's "
                         f"{window[0]}x{window[1]} input, got {height}x{width}")
    keep = [w + (n - w) // s * s for n, w, s in zip((height, width), window, stride)]
    top, left = (height - keep[0]) // 2, (width - keep[1]) // 2
    return images[:, :, top:top + keep[0], left:left + keep[1]]


def dense_predict(fully_convolutional, images, scales, flip=True, device="cpu"):
    """VGG's dense multi-scale evaluation with a convolutionized network.

    For each scale Q (the shorter side, in pixels) the images are resized so their shorter
    side is Q, cropped to the centre the score map tiles exactly (``tiled_centre``; only
    for a network from ``convolutionize``, which records its cells' window and stride),
    the score map (N, K, H', W') is averaged over its cells, and the soft-max of that
    average is taken; the probabilities of every scale (and mirror) are averaged.
    ``images`` are host arrays (resized here); each view runs on ``device``, the network's.
    """
    if images.ndim != 4:
        raise ValueError(f"dense_predict: expected a batch (N, C, H, W), got {images.shape}")
    if not scales or any(isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 1
                         for q in scales):
        raise ValueError(f"dense_predict: expected one or more scales Q (the shorter side, "
                         f"whole pixels >= 1), got {scales!r}")
    fully_convolutional.eval()
    height, width = images.shape[2:]
    total, views = 0.0, 0
    for scale in scales:
        factor = scale / min(height, width)
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        resized = resize(images, size)
        if hasattr(fully_convolutional, "score_map_window"):
            resized = tiled_centre(resized, fully_convolutional.score_map_window,
                                   fully_convolutional.score_map_stride)
        for view in ([resized, resized[..., ::-1]] if flip else [resized]):
            with no_grad():
                scores = fully_convolutional(
                    Tensor(to_device(np.ascontiguousarray(view), device))).data
            total = total + to_device(_softmax(scores.mean(axis=(2, 3))), "cpu")
            views += 1
    return total / views
