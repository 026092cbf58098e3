"""Cluttered MNIST (minicnn.data.cluttered): digits on textured, cluttered canvases,
the same for the same seed, each digit pasted whole."""
import numpy as np
import pytest

from minicnn.data import ArrayDataset
from minicnn.data.cluttered import clutter, cluttered_mnist


def digits(count=12, seed=0):
    """Stand-in digits: a bright 12×12 block with a dark centre, at a random place."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, 28, 28), np.uint8)
    for i, (y, x) in enumerate(rng.integers(4, 12, (count, 2))):
        out[i, y:y + 12, x:x + 12] = 255
        out[i, y + 4:y + 8, x + 4:x + 8] = 0
    return out


def split(count=12):
    return ArrayDataset(digits(count)[:, None], np.arange(count) % 10,
                        tuple(str(d) for d in range(10)), "stand-in")


def test_the_same_seed_builds_the_same_images_and_another_seed_others():
    a = cluttered_mnist(split(), "train", seed=3)
    b = cluttered_mnist(split(), "train", seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (12, 1, 40, 40) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.labels, np.arange(12) % 10)
    assert not np.array_equal(a.images, cluttered_mnist(split(), "train", seed=4).images)
    assert not np.array_equal(a.images, cluttered_mnist(split(), "test", seed=3).images)


def test_every_digit_is_pasted_whole_over_a_textured_background():
    source = digits()
    canvases = clutter(source, np.random.default_rng(0), canvas=40, fragments=3)
    for digit, canvas in zip(source, canvases):
        bright = digit == 255
        found = any(np.all(canvas[y:y + 28, x:x + 28][bright] == 255)
                    for y in range(13) for x in range(13))
        assert found                                    # max-composited: never hidden
        background = canvas.astype(float)
        assert background.std() > 10                    # texture, not a flat field
        assert 0 < np.median(background) < 160          # darker than the strokes


def test_a_canvas_too_small_or_an_unknown_split_is_refused():
    with pytest.raises(ValueError, match="expected a canvas of at least 30 px for 28x28 "
                                         "digits, got 29"):
        clutter(digits(2), np.random.default_rng(0), canvas=29)
    with pytest.raises(ValueError, match="expected split 'train' or 'test', got 'val'"):
        cluttered_mnist(split(), "val")
