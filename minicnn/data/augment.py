"""The papers' augmentations, on whole batches: RandAugment, mixup, AlexNet's PCA colour
noise and VGG's scale jittering.

Like ``minicnn.data.transforms``, every function takes a batch ``(N, C, H, W)`` and a
NumPy ``Generator``, and draws all its randomness from it: a seeded loader reproduces
every augmentation exactly. Geometric and colour operations of RandAugment run on
``uint8`` images (as the image libraries the papers used do); mixup and PCA noise act
on float images, after normalisation.

    RandAugment      Cubuk et al. 2019: N operations, each drawn uniformly from 14, all of
                     one magnitude M (EfficientNetV2 raises M over training)
    mixup            Zhang et al. 2018: x = λ·x_i + (1 − λ)·x_j, the loss mixed the same
                     way, λ ~ Beta(α, α)
    PCA colour       Krizhevsky et al. 2012, §4.1: add Σ_k α_k λ_k p_k to every pixel of
                     an image, α_k ~ N(0, 0.1²), (λ_k, p_k) the eigenpairs of the RGB
                     covariance of the training set
    scale jittering  Simonyan & Zisserman 2015, §3.1: rescale so the shorter side is
                     S ~ U[S_min, S_max], then take a random crop of the network's input
"""
import math

import numpy as np

from minicnn import functional as F


def _check_batch(name, images, dtype_kind=None):
    if images.ndim != 4:
        raise ValueError(f"{name}: expected a batch of shape (N, C, H, W), got {images.shape}")
    if dtype_kind == "u" and images.dtype != np.uint8:
        raise TypeError(f"{name}: expected uint8 images (before normalisation), got {images.dtype}")
    if dtype_kind == "f" and images.dtype.kind != "f":
        raise TypeError(f"{name}: expected float images (after normalisation), got {images.dtype}")


# ============================================================================ RandAugment
#
# Each operation is ``op(images, strength, fill) -> images`` on a uint8 batch, where
# ``strength`` is one signed number per image: the magnitude mapped to the operation's own
# unit (degrees, a blend factor, a fraction of the width, a bit count). Magnitudes follow
# the reference implementation's scale: M = 10 is the largest of the paper's table (30°
# rotation, shear 0.3, ...); larger M (EfficientNetV2 uses up to 15) extrapolates, clipped
# where an operation's unit ends (0 bits, threshold 0).

MAX_MAGNITUDE = 30      # M beyond this leaves nothing of most images


def _blend(images, other, factor):
    """other + factor·(images − other), per image, rounded and clipped to uint8."""
    factor = factor.reshape(-1, 1, 1, 1).astype(np.float32)
    out = other + factor * (images.astype(np.float32) - other)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _grayscale(images):
    """ITU-R 601 luma, (N, 1, H, W) float; a 1-channel batch is its own gray."""
    if images.shape[1] == 1:
        return images.astype(np.float32)
    weights = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)
    return (images[:, :3].astype(np.float32) * weights).sum(axis=1, keepdims=True)


def identity(images, strength, fill):
    return images


def brightness(images, strength, fill):
    """Blend with black: x·(1 + s)."""
    return _blend(images, np.zeros((1, 1, 1, 1), np.float32), 1.0 + strength)


def color(images, strength, fill):
    """Saturation: blend with the image's own gray, gray + (1 + s)·(x − gray)."""
    return _blend(images, _grayscale(images), 1.0 + strength)


def contrast(images, strength, fill):
    """Blend with the image's mean gray level, μ + (1 + s)·(x − μ)."""
    mean = _grayscale(images).mean(axis=(1, 2, 3), keepdims=True)
    return _blend(images, mean, 1.0 + strength)


def sharpness(images, strength, fill):
    """Blend with a smoothed copy (3×3 kernel [[1 1 1] [1 5 1] [1 1 1]]/13, border kept):
    s > 0 sharpens, s < 0 blurs."""
    x = images.astype(np.float32)
    smooth = x.copy()
    window = sum(x[:, :, 1 + dy:x.shape[2] - 1 + dy, 1 + dx:x.shape[3] - 1 + dx]
                 for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    smooth[:, :, 1:-1, 1:-1] = (window + 4 * x[:, :, 1:-1, 1:-1]) / 13.0
    return _blend(images, smooth, 1.0 + strength)


def solarize(images, strength, fill):
    """Invert every pixel at or above the threshold t: x ≥ t → 255 − x."""
    threshold = strength.reshape(-1, 1, 1, 1)
    return np.where(images >= threshold, 255 - images, images).astype(np.uint8)


def posterize(images, strength, fill):
    """Keep the top ``bits`` bits of every value."""
    bits = strength.astype(np.int64).reshape(-1, 1, 1, 1)
    mask = (0xFF << (8 - bits)) & 0xFF
    return (images & mask.astype(np.uint8)).astype(np.uint8)


def autocontrast(images, strength, fill):
    """Stretch each channel linearly so its darkest pixel is 0 and its brightest 255."""
    x = images.astype(np.float32)
    low = x.min(axis=(2, 3), keepdims=True)
    high = x.max(axis=(2, 3), keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    out = np.where(high > low, (x - low) * (255.0 / span), x)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def equalize(images, strength, fill):
    """Histogram equalisation of each channel: map value v to 255·(cdf(v) − cdf_min) /
    (count − cdf_min), so the values spread evenly over 0..255.

    All histograms of the batch are one ``bincount``: plane p's value v lands in bin
    p·256 + v.
    """
    n, c, h, w = images.shape
    planes = images.reshape(n * c, h * w)
    offsets = (np.arange(n * c) * 256)[:, None]
    histogram = np.bincount((planes + offsets).ravel(), minlength=n * c * 256).reshape(n * c, 256)
    cdf = histogram.cumsum(axis=1)
    cdf_min = np.where(histogram > 0, cdf, h * w).min(axis=1, keepdims=True)
    span = h * w - cdf_min
    lut = np.where(span > 0, np.rint((cdf - cdf_min) * 255.0 / np.maximum(span, 1)),
                   np.arange(256)[None, :])
    lut = np.clip(lut, 0, 255).astype(np.uint8)
    return np.take_along_axis(lut, planes.astype(np.int64), axis=1).reshape(n, c, h, w)


def _affine(images, matrices, fill):
    """Warp each image by its 2×3 matrix (output pixel → input pixel, about the centre),
    nearest-neighbour, pixels from outside filled with ``fill``: one gather."""
    n, c, h, w = images.shape
    ys, xs = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])                # (3, H·W)
    source = matrices @ grid                                                 # (N, 2, H·W)
    sx = np.rint(source[:, 0] + (w - 1) / 2).astype(np.int64)
    sy = np.rint(source[:, 1] + (h - 1) / 2).astype(np.int64)
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    flat = np.clip(sy, 0, h - 1) * w + np.clip(sx, 0, w - 1)                 # (N, H·W)
    gathered = np.take_along_axis(images.reshape(n, c, h * w), flat[:, None, :], axis=2)
    out = np.where(inside[:, None, :], gathered, np.uint8(fill))
    return out.reshape(n, c, h, w).astype(np.uint8)


def _matrices(a, b, c, d, tx, ty):
    return np.stack([np.stack([a, b, tx], axis=1), np.stack([c, d, ty], axis=1)], axis=1)


def rotate(images, strength, fill):
    """Rotate by s degrees about the centre."""
    theta = np.deg2rad(strength)
    cos, sin, zero = np.cos(theta), np.sin(theta), np.zeros_like(theta)
    return _affine(images, _matrices(cos, sin, -sin, cos, zero, zero), fill)


def shear_x(images, strength, fill):
    """x ← x + s·y."""
    one, zero = np.ones_like(strength), np.zeros_like(strength)
    return _affine(images, _matrices(one, strength, zero, one, zero, zero), fill)


def shear_y(images, strength, fill):
    """y ← y + s·x."""
    one, zero = np.ones_like(strength), np.zeros_like(strength)
    return _affine(images, _matrices(one, zero, strength, one, zero, zero), fill)


def translate_x(images, strength, fill):
    """Shift right by s·W pixels."""
    one, zero = np.ones_like(strength), np.zeros_like(strength)
    return _affine(images, _matrices(one, zero, zero, one, -strength * images.shape[3], zero), fill)


def translate_y(images, strength, fill):
    """Shift down by s·H pixels."""
    one, zero = np.ones_like(strength), np.zeros_like(strength)
    return _affine(images, _matrices(one, zero, zero, one, zero, -strength * images.shape[2]), fill)


# name: (operation, its strength at M = 10 (None: it has no magnitude), signed)
RANDAUGMENT_OPS = {
    "identity": (identity, None, False),
    "autocontrast": (autocontrast, None, False),
    "equalize": (equalize, None, False),
    "rotate": (rotate, 30.0, True),                # degrees
    "solarize": (solarize, 256.0, False),          # threshold 256 − 256·M/10
    "color": (color, 0.9, True),                   # blend factor 1 + s
    "posterize": (posterize, 4.0, False),          # bits kept 8 − 4·M/10
    "contrast": (contrast, 0.9, True),
    "brightness": (brightness, 0.9, True),
    "sharpness": (sharpness, 0.9, True),
    "shear_x": (shear_x, 0.3, True),
    "shear_y": (shear_y, 0.3, True),
    "translate_x": (translate_x, 0.45, True),      # fraction of the width
    "translate_y": (translate_y, 0.45, True),
}


def _strengths(name, magnitude, count, rng):
    """The operation's strength for ``count`` images at ``magnitude`` (signs drawn for
    the symmetric operations), kept inside the operation's own range."""
    _, at_ten, signed = RANDAUGMENT_OPS[name]
    if at_ten is None:
        return np.zeros(count)
    value = at_ten * magnitude / 10.0
    if name == "solarize":
        return np.full(count, max(0.0, 256.0 - value))
    if name == "posterize":
        return np.full(count, float(max(1, 8 - round(value))))
    strengths = value * rng.choice((-1.0, 1.0), size=count) if signed else np.full(count, value)
    if name in ("color", "contrast", "brightness", "sharpness"):
        strengths = np.maximum(strengths, -1.0)    # a blend factor 1 + s never below 0
    return strengths


def check_magnitude(magnitude):
    if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float, np.number)) \
            or not math.isfinite(magnitude) or not 0 <= magnitude <= MAX_MAGNITUDE:
        raise ValueError(f"RandAugment magnitude must be a number in [0, {MAX_MAGNITUDE}], "
                         f"got {magnitude!r}")


def rand_augment(images, num_ops, magnitude, rng, fill=0, ops=None):
    """RandAugment on a uint8 batch: each image gets ``num_ops`` operations, each drawn
    uniformly (with replacement) from ``ops`` (default: the paper's 14), all at
    ``magnitude``.

    Work is grouped by operation: at each of the ``num_ops`` rounds the images that drew
    the same operation are transformed together, so the cost is 14 array passes per
    round, not one Python call per image.
    """
    _check_batch("rand_augment", images, "u")
    check_magnitude(magnitude)
    if isinstance(num_ops, bool) or not isinstance(num_ops, (int, np.integer)) or num_ops < 0:
        raise ValueError(f"RandAugment num_ops must be an int >= 0, got {num_ops!r}")
    names = list(RANDAUGMENT_OPS) if ops is None else list(ops)
    unknown = [name for name in names if name not in RANDAUGMENT_OPS]
    if unknown:
        raise ValueError(f"RandAugment: unknown operations {unknown}; known: "
                         f"{', '.join(RANDAUGMENT_OPS)}")
    out = images.copy()
    for _ in range(num_ops):
        chosen = rng.integers(len(names), size=len(out))
        for index, name in enumerate(names):
            members = np.flatnonzero(chosen == index)
            if len(members) == 0:
                continue
            operation = RANDAUGMENT_OPS[name][0]
            strengths = _strengths(name, magnitude, len(members), rng)
            out[members] = operation(out[members], strengths, fill)
    return out


class RandAugment:
    """``RandAugment(num_ops, magnitude)(images, rng)``: the transform form, for pipelines."""
    random = True

    def __init__(self, num_ops=2, magnitude=9, fill=0):
        check_magnitude(magnitude)
        self.num_ops, self.magnitude, self.fill = num_ops, magnitude, fill

    def __call__(self, images, rng):
        return rand_augment(images, self.num_ops, self.magnitude, rng, self.fill)

    def __repr__(self):
        return f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude})"


# ================================================================================= mixup

def mixup(images, labels, alpha, rng):
    """Mix the batch with a shuffled copy of itself (Zhang et al. 2018):

        x̃ = λ·x + (1 − λ)·x[π],   λ ~ Beta(α, α),   π a random permutation

    Returns ``(x̃, labels, labels[π], λ)``; train with ``mixup_cross_entropy``, which mixes
    the two labels' losses with the same λ. One λ per batch, as the paper's code does.
    """
    _check_batch("mixup", images, "f")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) \
            or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"mixup: alpha must be a positive number, got {alpha!r}")
    if len(labels) != len(images):
        raise ValueError(f"mixup: {len(images)} images but {len(labels)} labels")
    lam = float(rng.beta(alpha, alpha))
    permutation = rng.permutation(len(images))
    mixed = (lam * images + (1.0 - lam) * images[permutation]).astype(images.dtype, copy=False)
    return mixed, labels, labels[permutation], lam


def mixup_cross_entropy(logits, labels_a, labels_b, lam, label_smoothing=0.0):
    """λ·CE(z, a) + (1 − λ)·CE(z, b): the cross-entropy against the mixed labels (it is
    linear in the target distribution, so mixing the losses mixes the targets)."""
    return (lam * F.cross_entropy(logits, labels_a, label_smoothing)
            + (1.0 - lam) * F.cross_entropy(logits, labels_b, label_smoothing))


# ========================================================================== PCA colour

def rgb_principal_components(images, max_pixels=1_000_000, rng=None):
    """Eigenvalues λ (descending) and eigenvectors P (columns) of the 3×3 covariance of
    the RGB values (scaled to [0, 1]) over the pixels of ``images`` (a sample of at most
    ``max_pixels``, drawn with ``rng``, for a large training set)."""
    _check_batch("rgb_principal_components", images)
    if images.shape[1] != 3:
        raise ValueError(f"rgb_principal_components: expected 3 colour channels, got "
                         f"{images.shape[1]}")
    pixels = images.transpose(0, 2, 3, 1).reshape(-1, 3)
    if len(pixels) > max_pixels:
        rng = np.random.default_rng(0) if rng is None else rng
        pixels = pixels[rng.choice(len(pixels), max_pixels, replace=False)]
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    covariance = np.cov(pixels.astype(np.float64) / scale, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    return np.maximum(eigenvalues[order], 0.0), eigenvectors[:, order]


def pca_colour_noise(images, eigenvalues, eigenvectors, rng, std=0.1, pixel_scale=1.0):
    """AlexNet's colour augmentation: to every pixel of image i add the same RGB offset

        δ_i = P · (α_i ⊙ λ),   α_i ~ N(0, std²) per component,

    "an important property of natural images, namely, that object identity is invariant to
    changes in the intensity and color of the illumination". ``pixel_scale`` converts the
    [0, 1] offsets to the images' units (divide by the normalisation std first when the
    images are normalised: pass ``1 / std_c`` per channel as an array of shape (3,)).
    The offsets have mean 0 and covariance P·diag(std²·λ²)·Pᵀ.
    """
    _check_batch("pca_colour_noise", images, "f")
    if images.shape[1] != 3:
        raise ValueError(f"pca_colour_noise: expected 3 colour channels, got {images.shape[1]}")
    alphas = rng.normal(0.0, std, size=(len(images), 3))
    offsets = (alphas * eigenvalues) @ np.asarray(eigenvectors).T            # (N, 3)
    offsets = offsets * np.asarray(pixel_scale, dtype=np.float64).reshape(-1)
    return (images + offsets[:, :, None, None]).astype(images.dtype, copy=False)


# ======================================================================= scale jittering

def _interpolation_matrices(starts, length, out_size, in_size):
    """Per image, the (out_size, in_size) bilinear matrix sampling the window
    [start, start + length) of the input at ``out_size`` evenly spaced pixel centres."""
    scale = length / out_size
    centres = starts[:, None] + (np.arange(out_size)[None, :] + 0.5) * scale - 0.5   # (N, out)
    centres = np.clip(centres, 0, in_size - 1)
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(in_size)[None, None, :] - centres[:, :, None]))
    return (weights / weights.sum(axis=2, keepdims=True)).astype(np.float32)


def scale_jitter(images, crop_size, scale_range, rng):
    """VGG's training scale jittering: rescale each image so its shorter side is
    S ~ U[S_min, S_max] (an integer), then take a random ``crop_size`` square.

    Rescaling then cropping is the same as cropping the window of side crop·min(H, W)/S
    and resizing it to ``crop_size``, so each image costs two small matrix products
    (Y = R_h · X · R_wᵀ with its own R's) instead of materialising a 512-pixel image.
    """
    _check_batch("scale_jitter", images, "f")
    low, high = scale_range
    if not (isinstance(low, (int, np.integer)) and isinstance(high, (int, np.integer))) \
            or not crop_size <= low <= high:
        raise ValueError(f"scale_jitter: expected integers crop_size <= S_min <= S_max, got "
                         f"crop {crop_size}, S in [{low}, {high}]")
    n, c, h, w = images.shape
    sides = rng.integers(low, high + 1, size=n)
    window = crop_size * min(h, w) / sides                                    # input pixels
    y0 = rng.uniform(0, 1, n) * (h - window)
    x0 = rng.uniform(0, 1, n) * (w - window)
    rows = _interpolation_matrices(y0, window[:, None], crop_size, h)        # (N, crop, H)
    cols = _interpolation_matrices(x0, window[:, None], crop_size, w)        # (N, crop, W)
    x = images.astype(np.float32, copy=False)
    out = np.matmul(rows[:, None], x) @ cols[:, None].transpose(0, 1, 3, 2)
    return out.astype(images.dtype, copy=False)
