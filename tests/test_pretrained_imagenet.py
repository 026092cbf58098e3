"""ImageNet inference helpers: the preprocessing equals torchvision's evaluation
transform (fixtures from tests/fixtures/torchvision/make_fixtures.py), the class names are
the 1000 in index order, and top-k reports names with probabilities."""
import os

import numpy as np
import pytest

from minicnn import nn
from minicnn.data import imagenet
from minicnn.data.imagenet import (Preprocessing, center_crop_box, class_names, predict_topk,
                                   preprocess, preprocessing_for, resized_size, topk)

PIL = pytest.importorskip("PIL.Image")
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "torchvision")
# (name, resize_size, crop_size, interpolation, mean, std) as make_fixtures.py wrote them
CASES = [
    ("landscape_bilinear", 32, 24, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("portrait_bicubic", 32, 24, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("odd_crop_half", 33, 27, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
]


@pytest.mark.parametrize("name, resize, crop, interpolation, mean, std", CASES)
def test_preprocess_equals_torchvision(name, resize, crop, interpolation, mean, std):
    with np.load(os.path.join(FIXTURES, "preprocessing.npz")) as fixtures:
        photo, expected = fixtures[f"{name}_photo"], fixtures[f"{name}_expected"]
    found = preprocess(PIL.fromarray(photo), Preprocessing(resize, crop, interpolation, mean, std))
    assert found.shape == (1,) + expected.shape and found.dtype == np.float32
    np.testing.assert_allclose(found[0], expected, rtol=0, atol=1e-5)


def test_preprocess_reads_files_and_converts_to_rgb(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    path = tmp_path / "grey.png"
    PIL.fromarray(grey).save(path)
    x = preprocess(path, Preprocessing(32, 32, "bilinear", (0.5,) * 3, (0.5,) * 3))
    assert x.shape == (1, 3, 32, 32)
    assert np.array_equal(x[0, 0], x[0, 1]) and np.array_equal(x[0, 1], x[0, 2])
    assert -1.0 <= x.min() and x.max() <= 1.0


def test_sizes_follow_torchvision_rules():
    assert resized_size(640, 480, 256) == (341, 256)       # ⌊256 · 640/480⌋ = 341
    assert resized_size(480, 640, 256) == (256, 341)
    assert center_crop_box(341, 256, 224) == (58, 16, 282, 240)
    with pytest.raises(ValueError, match=r"a 224×224 crop does not fit a 200×300 image"):
        center_crop_box(200, 300, 224)


def test_presets_inception_reads_299_from_342_in_minus_one_to_one():
    preset = preprocessing_for("inception_v3")
    assert (preset.resize_size, preset.crop_size, preset.mean, preset.std) == \
        (342, 299, (0.5,) * 3, (0.5,) * 3)
    assert preprocessing_for("resnet50_b") == imagenet.DEFAULT
    assert preprocessing_for("efficientnet_b4").crop_size == 380


def test_unreadable_photo_is_named(tmp_path):
    path = tmp_path / "not_a_photo.jpg"
    path.write_bytes(b"plain text, not a JPEG")
    with pytest.raises(Exception, match=r"not_a_photo\.jpg: not a readable image"):
        preprocess(path)


def test_class_names_are_the_1000_in_index_order():
    names = class_names()
    assert len(names) == 1000 and len(set(names)) == 1000   # torchvision made them unique
    assert names[0] == "tench" and names[1] == "goldfish" and names[999] == "toilet tissue"
    assert names[281] == "tabby" and names[282] == "tiger cat"


def test_topk_gives_names_and_probabilities_best_first():
    logits = np.full(1000, -5.0)
    logits[281], logits[282], logits[285] = 4.0, 3.0, 2.0
    best = topk(logits, k=3)
    assert [name for name, _ in best] == ["tabby", "tiger cat", "Egyptian cat"]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose([p for _, p in best], probabilities[[281, 282, 285]], rtol=1e-12)
    with pytest.raises(ValueError, match=r"topk: 1000 logits but 2 class names"):
        topk(logits, names=["a", "b"])


def test_predict_topk_runs_a_model_on_a_photo(tmp_path):
    """A tiny "network" whose logit i is the mean of channel i % 3: a red photo must put
    the classes of channel 0 first."""
    photo = np.zeros((30, 40, 3), dtype=np.uint8)
    photo[..., 0] = 255
    path = tmp_path / "red.png"
    PIL.fromarray(photo).save(path)

    class ChannelMeans(nn.Module):
        def forward(self, x):
            means = x.mean(axis=(2, 3))                               # (1, 3)
            return means[:, [0, 1, 2, 0]]
    best = predict_topk(ChannelMeans(), path, k=2, names=["r", "g", "b", "r again"],
                        preprocessing=Preprocessing(24, 24, "bilinear", (0.5,) * 3, (0.5,) * 3))
    assert {name for name, _ in best} == {"r", "r again"}
    assert best[0][1] == pytest.approx(best[1][1])
