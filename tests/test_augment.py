"""The papers' augmentations (minicnn.data.augment): RandAugment, mixup, PCA colour noise,
scale jittering — each against what it must do, and deterministic by seed."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minicnn import Tensor, functional as F
from minicnn.data import augment
from minicnn.data.augment import RANDAUGMENT_OPS


def images(n=6, c=3, h=12, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w)).astype(np.uint8)


# ------------------------------------------------------------------------ RandAugment

def test_rand_augment_is_deterministic_by_seed_and_changes_images():
    x = images(32)
    a = augment.rand_augment(x, 2, 9, np.random.default_rng(7))
    b = augment.rand_augment(x, 2, 9, np.random.default_rng(7))
    c = augment.rand_augment(x, 2, 9, np.random.default_rng(8))
    assert a.dtype == np.uint8 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a != x).any(axis=(1, 2, 3)).mean() > 0.5       # most images were altered
    np.testing.assert_array_equal(x, images(32))           # the input is left alone


def test_rand_augment_with_zero_operations_or_identity_only_is_the_identity():
    x = images()
    np.testing.assert_array_equal(augment.rand_augment(x, 0, 9, np.random.default_rng(0)), x)
    np.testing.assert_array_equal(
        augment.rand_augment(x, 3, 9, np.random.default_rng(0), ops=["identity"]), x)


def test_geometric_operations_at_zero_strength_are_the_identity():
    x = images()
    zero = np.zeros(len(x))
    for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y",
                 "brightness", "color", "contrast", "sharpness"):
        np.testing.assert_array_equal(RANDAUGMENT_OPS[name][0](x, zero, 0), x, err_msg=name)


def test_translate_shifts_pixels_and_fills_the_gap():
    x = images(1, 1, 8, 8)
    y = augment.translate_x(x, np.array([0.25]), 0)              # 2 pixels right
    np.testing.assert_array_equal(y[..., 2:], x[..., :-2])
    assert (y[..., :2] == 0).all()


def test_rotate_by_90_degrees_is_a_transpose_with_flip():
    x = images(1, 1, 9, 9)
    y = augment.rotate(x, np.array([90.0]), 0)
    assert np.array_equal(y[0, 0], np.rot90(x[0, 0], k=1)) or \
        np.array_equal(y[0, 0], np.rot90(x[0, 0], k=-1))


def test_solarize_posterize_and_autocontrast_follow_their_formulas():
    x = images()
    y = augment.solarize(x, np.full(len(x), 128.0), 0)
    np.testing.assert_array_equal(y, np.where(x >= 128, 255 - x, x))
    y = augment.posterize(x, np.full(len(x), 3.0), 0)
    np.testing.assert_array_equal(y, x & 0b11100000)
    low = (x // 4 + 50).astype(np.uint8)                           # values 50..113
    y = augment.autocontrast(low, np.zeros(len(x)), 0)
    assert (y.min(axis=(2, 3)) == 0).all() and (y.max(axis=(2, 3)) == 255).all()


def test_equalize_spreads_a_narrow_histogram_and_keeps_order():
    rng = np.random.default_rng(0)
    x = rng.integers(100, 120, (2, 3, 16, 16)).astype(np.uint8)
    y = augment.equalize(x, np.zeros(2), 0)
    assert y.min() == 0 and y.max() == 255
    flat_x, flat_y = x.reshape(6, -1).astype(int), y.reshape(6, -1).astype(int)
    for px, py in zip(flat_x, flat_y):                             # a monotone mapping
        order = np.argsort(px, kind="stable")
        assert (np.diff(py[order]) >= 0).all()


def test_brightness_scales_and_clips():
    x = images()
    y = augment.brightness(x, np.full(len(x), 0.5), 0)
    np.testing.assert_array_equal(y, np.clip(np.rint(x * 1.5), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("bad", [-1, 31, float("nan"), float("inf"), "9", True])
def test_rand_augment_refuses_a_magnitude_out_of_range(bad):
    with pytest.raises(ValueError, match="magnitude must be a number in \\[0, 30\\]"):
        augment.RandAugment(2, bad)


def test_rand_augment_refuses_float_images_and_unknown_operations():
    with pytest.raises(TypeError, match="expected uint8 images"):
        augment.rand_augment(np.zeros((1, 3, 4, 4), np.float32), 2, 9, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown operations \\['cutout'\\]"):
        augment.rand_augment(images(), 1, 9, np.random.default_rng(0), ops=["cutout"])


# ------------------------------------------------------------------------------ mixup

def test_mixup_mixes_images_and_labels_with_one_lambda():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    labels = np.arange(8)
    mixed, a, b, lam = augment.mixup(x, labels, 0.4, np.random.default_rng(5))
    permutation = np.random.default_rng(5)
    lam_expected = permutation.beta(0.4, 0.4)
    order = permutation.permutation(8)
    assert lam == pytest.approx(lam_expected)
    np.testing.assert_array_equal(b, labels[order])
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[order], rtol=1e-6)
    again = augment.mixup(x, labels, 0.4, np.random.default_rng(5))
    np.testing.assert_array_equal(again[0], mixed)


def test_mixup_loss_is_the_cross_entropy_of_the_mixed_target():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4))
    a, b, lam = np.array([0, 1, 2, 3, 0]), np.array([1, 1, 0, 2, 3]), 0.3
    loss = augment.mixup_cross_entropy(Tensor(logits), a, b, lam).item()
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    target = lam * np.eye(4)[a] + (1 - lam) * np.eye(4)[b]
    assert loss == pytest.approx(-(target * log_p).sum(axis=1).mean(), rel=1e-9)


@pytest.mark.parametrize("alpha", [0, -0.2, float("nan"), float("inf")])
def test_mixup_refuses_a_non_positive_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        augment.mixup(np.zeros((2, 1, 2, 2), np.float32), np.arange(2), alpha,
                      np.random.default_rng(0))


# ------------------------------------------------------------------------- PCA colour

def test_principal_components_diagonalise_the_rgb_covariance():
    rng = np.random.default_rng(0)
    mixing = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.0, 0.0, 0.4]])
    pixels = rng.standard_normal((4000, 3)) @ mixing * 0.1 + 0.5
    batch = pixels.reshape(40, 10, 10, 3).transpose(0, 3, 1, 2)
    eigenvalues, eigenvectors = augment.rgb_principal_components(batch)
    covariance = np.cov(pixels, rowvar=False)
    np.testing.assert_allclose(eigenvectors @ np.diag(eigenvalues) @ eigenvectors.T,
                               covariance, atol=1e-12)
    assert (np.diff(eigenvalues) <= 0).all()


def test_pca_noise_keeps_the_mean_colour_and_has_the_stated_covariance():
    """Offsets δ = P(α ⊙ λ), α ~ N(0, σ²): E[δ] = 0 (the mean colour is kept) and
    Cov[δ] = P diag(σ² λ²) Pᵀ; the offset is one colour per image (every pixel the same)."""
    eigenvalues = np.array([0.2, 0.05, 0.01])
    eigenvectors, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    x = np.zeros((20000, 3, 2, 2), np.float64)
    y = augment.pca_colour_noise(x, eigenvalues, eigenvectors, np.random.default_rng(2))
    offsets = y[:, :, 0, 0]
    np.testing.assert_array_equal(y, np.broadcast_to(offsets[:, :, None, None], y.shape))
    np.testing.assert_allclose(offsets.mean(axis=0), 0, atol=4 * 0.1 * 0.2 / np.sqrt(20000))
    expected = eigenvectors @ np.diag((0.1 * eigenvalues) ** 2) @ eigenvectors.T
    np.testing.assert_allclose(np.cov(offsets, rowvar=False), expected, atol=5e-5)


# ---------------------------------------------------------------------- scale jittering

def test_scale_jitter_at_the_crop_size_of_a_square_image_is_the_image():
    x = np.random.default_rng(0).standard_normal((3, 2, 16, 16)).astype(np.float32)
    y = augment.scale_jitter(x, 16, (16, 16), np.random.default_rng(0))
    np.testing.assert_allclose(y, x, atol=1e-6)


@given(st.integers(8, 20), st.integers(0, 2**31 - 1))
def test_scale_jitter_crops_a_window_of_the_drawn_scale(side, seed):
    """With a linear ramp image the crop's values reveal its window: its spread is
    crop · min(H, W) / S input pixels, S ∈ [S_min, S_max]."""
    ramp = np.broadcast_to(np.arange(24, dtype=np.float32), (1, 1, 24, 24)).copy()
    y = augment.scale_jitter(ramp, 8, (side, 24), np.random.default_rng(seed))
    step = (y[0, 0, 0, -1] - y[0, 0, 0, 0]) / 7                  # input pixels per output pixel
    scale = 24 / (8 * step) * 8                                   # the shorter side S
    assert side - 1e-3 <= scale <= 24 + 1e-3
    assert y.shape == (1, 1, 8, 8)


def test_scale_jitter_refuses_a_range_below_the_crop():
    with pytest.raises(ValueError, match="crop_size <= S_min <= S_max"):
        augment.scale_jitter(np.zeros((1, 3, 8, 8), np.float32), 224, (128, 512),
                             np.random.default_rng(0))
