"""minicnn.plots: each picture renders headless into a valid PNG of the expected size."""
import json
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

import architectures
from minicnn import nn, plots

SIZE, DPI = (4, 3), 50                  # → 200 × 150 pixels


def check_png(path, size=SIZE, dpi=DPI):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (size[0] * dpi, size[1] * dpi)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 1.0            # something was drawn


@pytest.fixture(scope="module")
def lenet():
    nn.init.manual_seed(0)
    return architectures.create("lenet5", num_classes=10, in_channels=1)


HISTORY = [{"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 1 - 0.5 / e,
            "test_loss": 2.2 / e, "test_accuracy": 1 - 0.6 / e} for e in range(1, 6)]


def test_learning_curves_from_list_dict_and_files(tmp_path):
    check_png(plots.learning_curves(HISTORY, tmp_path / "a.png", figsize=SIZE, dpi=DPI))
    columns = {k: [e[k] for e in HISTORY] for k in HISTORY[0]}
    check_png(plots.learning_curves(columns, tmp_path / "b.png", figsize=SIZE, dpi=DPI))
    (tmp_path / "h.json").write_text(json.dumps(HISTORY))
    check_png(plots.learning_curves(str(tmp_path / "h.json"), tmp_path / "c.png",
                                    figsize=SIZE, dpi=DPI))
    lines = ["epoch,train_loss,train_acc,test_loss,test_acc"] + [   # the short names too
        ",".join(str(e[k]) for k in ("epoch", "train_loss", "train_accuracy", "test_loss",
                                     "test_accuracy"))
        for e in HISTORY]
    (tmp_path / "h.csv").write_text("\n".join(lines))
    path = plots.learning_curves(str(tmp_path / "h.csv"), tmp_path / "sub" / "d.png",
                                 figsize=SIZE, dpi=DPI)
    assert path.endswith("d.png")
    check_png(path)
    with pytest.raises(ValueError, match="learning_curves"):
        plots.learning_curves([], tmp_path / "e.png")


def test_filter_grid_gray_and_colour(tmp_path, lenet):
    check_png(plots.filter_grid(lenet, tmp_path / "gray.png", figsize=SIZE, dpi=DPI))
    rgb = np.random.default_rng(0).standard_normal((16, 3, 5, 5))
    check_png(plots.filter_grid(rgb, tmp_path / "rgb.png", figsize=SIZE, dpi=DPI))
    with pytest.raises(ValueError, match="filter_grid"):
        plots.filter_grid(np.zeros((3, 3)), tmp_path / "bad.png")


def test_feature_maps_of_a_named_layer(tmp_path, lenet):
    image = (np.random.default_rng(1).random((1, 28, 28)) * 255).astype(np.uint8)
    maps = plots.layer_output(lenet, "conv2", image)
    assert maps.shape == (16, 8, 8)
    lenet.train()
    check_png(plots.feature_maps(lenet, "conv1", image, tmp_path / "maps.png",
                                 figsize=SIZE, dpi=DPI))
    assert lenet.training                                   # mode restored
    check_png(plots.feature_maps(lenet, lenet.conv2, image[None], tmp_path / "maps2.png",
                                 max_maps=4, figsize=SIZE, dpi=DPI))
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        plots.feature_maps(lenet, "conv9", image, tmp_path / "x.png")
    with pytest.raises(ValueError, match="feature maps"):
        plots.feature_maps(lenet, "fc1", image, tmp_path / "x.png")


def test_confusion_matrix_counts_and_picture(tmp_path):
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2])
    counts = plots.confusion_counts(y_true, y_pred)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 2, 0], [1, 0, 2]])
    check_png(plots.confusion_matrix(y_true, y_pred, tmp_path / "cm.png", figsize=SIZE, dpi=DPI))
    scores = np.eye(3)[y_pred] * 5
    check_png(plots.confusion_matrix(y_true, scores, tmp_path / "cm2.png", normalize=True,
                                     class_names=["a", "b", "c"], figsize=SIZE, dpi=DPI))


def test_worst_misclassified_ranks_confident_mistakes_first(tmp_path):
    rng = np.random.default_rng(2)
    images = (rng.random((6, 1, 8, 8)) * 255).astype(np.uint8)
    y_true = np.array([0, 1, 2, 0, 1, 2])
    scores = np.array([[5, 0, 0], [0, 5, 0],          # right
                       [3, 0, 0],                     # wrong, confident
                       [0, 1, 0.5],                   # wrong, unsure
                       [0, 0, 9],                     # wrong, most confident
                       [0, 0, 1]], dtype=float)       # right
    chosen, predicted, _ = plots.worst_misclassified_indices(y_true, scores)
    assert list(chosen) == [4, 2, 3]
    check_png(plots.worst_misclassified(images, y_true, scores, tmp_path / "worst.png",
                                        figsize=SIZE, dpi=DPI))
    colour = rng.standard_normal((6, 3, 8, 8))
    check_png(plots.worst_misclassified(colour, y_true, scores, tmp_path / "worst3.png",
                                        count=2, class_names="abc", figsize=SIZE, dpi=DPI))


def test_write_all(tmp_path, lenet):
    rng = np.random.default_rng(3)
    images = (rng.random((20, 1, 28, 28)) * 255).astype(np.uint8)
    labels = rng.integers(0, 10, 20)
    scores = rng.standard_normal((20, 10))
    paths = plots.write_all(tmp_path, history=HISTORY, model=lenet, images=images,
                            labels=labels, scores=scores)
    names = sorted(p.rsplit("/", 1)[-1] for p in paths)
    assert names == ["confusion_matrix.png", "feature_maps.png", "filters.png",
                     "learning_curves.png", "worst_misclassified.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100


def test_missing_matplotlib_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"minicnn\[plot\]"):
        plots.learning_curves(HISTORY, tmp_path / "x.png")


def test_scores_for_a_loader(lenet):
    from minicnn.data import DataLoader
    rng = np.random.default_rng(4)
    images = rng.standard_normal((10, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 10)
    lenet.train()
    got_labels, scores = plots.scores_for(lenet, DataLoader((images, labels), batch_size=4))
    assert scores.shape == (10, 10) and lenet.training
    np.testing.assert_array_equal(got_labels, labels)
    assert plots.confusion_counts(got_labels, scores.argmax(1), 10).sum() == 10
