"""The shapes set (minicnn.data.shapes): each class's test encloses its formula's area,
the same seed builds the same images, and the set survives the trip through an image
folder unchanged."""
import numpy as np
import pytest

pytest.importorskip("PIL", reason="writing and reading image folders needs Pillow")

from minicnn.data.folder import load_image_folder
from minicnn.data.shapes import CLASSES, SHAPES, draw_shapes, main, shapes, shapes_datasets

# Area of each shape at radius 1, from its definition in SHAPES.
AREAS = {
    "crescent": None,                                   # checked below against disk − lens
    "cross": 2 * (2 * 0.56) - 0.56 ** 2,                # two 2 × 0.56 bars, less their overlap
    "disk": np.pi,
    "ellipse": np.pi * 0.45,
    "frame": 1.6 ** 2 - 0.9 ** 2,
    "half-disk": np.pi / 2,
    "ring": np.pi * (1 - 0.55 ** 2),
    "square": 1.5 ** 2,
    "star": 0.375 * np.pi,                              # ½∫(½ + ½ cos 5φ)² dφ over 2π
    "triangle": 3 * np.sqrt(3) / 4,                     # equilateral, circumradius 1
}


def lens_area(r1, r2, d):
    """Area where two disks of radii r1, r2 with centres d apart overlap."""
    a = r1 ** 2 * np.arccos((d * d + r1 * r1 - r2 * r2) / (2 * d * r1))
    b = r2 ** 2 * np.arccos((d * d + r2 * r2 - r1 * r1) / (2 * d * r2))
    return a + b - 0.5 * np.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))


@pytest.mark.parametrize("name", CLASSES)
def test_each_shape_encloses_the_area_of_its_formula(name):
    step = 1 / 400
    u, v = np.meshgrid(np.arange(-1.2, 1.2, step) + step / 2, np.arange(-1.2, 1.2, step) + step / 2)
    area = SHAPES[name](u, v).sum() * step * step
    expected = AREAS[name] if name != "crescent" else np.pi - lens_area(1, 0.8, 0.5)
    assert area == pytest.approx(expected, rel=0.01)


def test_the_classes_are_sorted_as_an_image_folder_reads_them():
    assert list(CLASSES) == sorted(CLASSES) and len(CLASSES) == 10


def test_the_same_seed_builds_the_same_images_and_another_seed_or_split_others():
    a = shapes(20, "train", seed=3, size=32)
    b = shapes(20, "train", seed=3, size=32)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.images.shape == (20, 3, 32, 32) and a.images.dtype == np.uint8
    assert np.bincount(a.labels, minlength=10).tolist() == [2] * 10     # balanced
    assert not np.array_equal(a.images, shapes(20, "train", seed=4, size=32).images)
    assert not np.array_equal(a.images, shapes(20, "test", seed=3, size=32).images)


def test_the_object_stands_out_in_its_own_colour_over_a_textured_background():
    rng = np.random.default_rng(0)
    plain = draw_shapes(np.full(8, CLASSES.index("square")), rng, size=48, scale=(0.3, 0.3),
                        twigs=0, noise=0.0)
    for image in plain.astype(float):
        colours, counts = np.unique(image.reshape(3, -1).T, axis=0, return_counts=True)
        object_colour = colours[counts.argmax()]          # the one flat colour: the object
        # a square of side 1.5 × radius (0.3 × 96 px at 2×) covers ≈ 19% of the picture;
        # its anti-aliased edge and any part outside the picture take a little off
        assert 0.10 < counts.max() / (48 * 48) < 0.21
        background = image.reshape(3, -1).T[(image.reshape(3, -1).T != object_colour).any(1)]
        assert np.linalg.norm(object_colour - background.mean(0)) > 40
        assert background.std(0).max() > 3                # texture, not a flat field


def test_the_set_comes_back_unchanged_from_an_image_folder(tmp_path):
    train, test = shapes_datasets(train=30, test=10, seed=1, size=24)
    main([str(tmp_path / "set"), "--train", "30", "--test", "10", "--size", "24", "--seed", "1"])
    back_train, back_test = load_image_folder(tmp_path / "set", image_size=24, channels=3)
    assert back_train.classes == CLASSES
    for original, back in ((train, back_train), (test, back_test)):
        # the folder lists class by class: compare each class's images in their order
        for label in range(10):
            np.testing.assert_array_equal(back.images[back.labels == label],
                                          original.images[original.labels == label])


def test_bad_input_is_refused_in_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got \[0, 10\]"):
        draw_shapes(np.array([0, 10]), rng)
    with pytest.raises(ValueError, match=r"expected 0 < min ≤ max ≤ 0.5 for the scale, got "
                                         r"\(0.4, 0.2\)"):
        draw_shapes(np.array([0]), rng, scale=(0.4, 0.2))
    with pytest.raises(ValueError, match="expected split 'train' or 'test', got 'val'"):
        shapes(4, "val")
    with pytest.raises(ValueError, match="expected at least one image, got 0"):
        shapes(0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "full")])
    assert "already holds files; give a new or empty folder" in capsys.readouterr().err
