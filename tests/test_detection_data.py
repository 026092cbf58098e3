"""COCO JSON and Pascal VOC readers (on small files written here) and mnist-detection."""
import json

import numpy as np
import pytest

from minicnn.detection.formats import read_coco_json, read_voc
from minicnn.detection.mnist_detection import (ink_box, make_canvas, mnist_detection,
                                               resize_bilinear, write_coco)

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def fake_mnist(seed=0, count=40):
    """Digit-like images (a bright block with a dark border) with labels: no MNIST needed."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    for image in images:
        top, left = rng.integers(2, 8, size=2)
        image[top:top + rng.integers(10, 18), left:left + rng.integers(6, 16)] = 255
    labels = rng.integers(0, 10, size=count)
    return images, labels, images[::-1].copy(), labels[::-1].copy()


def write_png(path, width, height, channels=3):
    mode = "RGB" if channels == 3 else "L"
    Image.new(mode, (width, height)).save(path)


def coco_file(tmp_path, **changes):
    data = {"images": [{"id": 10, "file_name": "a.png", "width": 40, "height": 30},
                       {"id": 11, "file_name": "b.png", "width": 20, "height": 20}],
            "categories": [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 10, "category_id": 5, "bbox": [1, 2, 10, 5],
                             "iscrowd": 0},
                            {"id": 2, "image_id": 10, "category_id": 2,
                             "bbox": [35, 25, 10, 10], "iscrowd": 0},
                            {"id": 3, "image_id": 10, "category_id": 2, "bbox": [0, 0, 4, 4],
                             "iscrowd": 1}]}
    data.update(changes)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    write_png(tmp_path / "a.png", 40, 30)
    write_png(tmp_path / "b.png", 20, 20)
    return path, data


def test_coco_reader_reads_boxes_clips_and_keeps_empty_images(tmp_path):
    path, _ = coco_file(tmp_path)
    dataset = read_coco_json(path)
    assert dataset.classes == ("dog", "cat") and dataset.category_ids == (2, 5)
    boxes, labels = dataset.targets(0)
    assert np.allclose(boxes, [[1, 2, 11, 7], [35, 25, 40, 30]])     # second one clipped
    assert labels.tolist() == [1, 0]
    assert dataset.records[0]["ignore"].tolist() == [False, False, True]   # the crowd
    empty_boxes, empty_labels = dataset.targets(1)
    assert empty_boxes.shape == (0, 4) and empty_labels.shape == (0,)
    assert dataset.load_image(0).shape == (30, 40, 3)
    coco = dataset.to_coco()
    assert [a["category_id"] for a in coco["annotations"]] == [5, 2, 2]
    assert coco["annotations"][2]["iscrowd"] == 1


@pytest.mark.parametrize("annotation, message", [
    ({"image_id": 10, "category_id": 5, "bbox": [1, 2, 0, 5]}, "zero area or is inverted"),
    ({"image_id": 10, "category_id": 5, "bbox": [5, 5, -3, 4]}, "zero area or is inverted"),
    ({"image_id": 10, "category_id": 5, "bbox": [50, 5, 3, 4]}, "lies outside its 40×30 image"),
    ({"image_id": 10, "category_id": 7, "bbox": [1, 1, 3, 4]}, "category_id 7"),
    ({"image_id": 99, "category_id": 5, "bbox": [1, 1, 3, 4]}, "image_id 99"),
])
def test_coco_reader_names_bad_annotations(tmp_path, annotation, message):
    path, _ = coco_file(tmp_path, annotations=[{"id": 4, **annotation}])
    with pytest.raises(ValueError, match=message):
        read_coco_json(path)


def test_coco_reader_notices_images_that_do_not_match(tmp_path):
    path, data = coco_file(tmp_path)
    data["images"][1]["file_name"] = "missing.png"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="1 of 2 images .* missing.png"):
        read_coco_json(path)
    data["images"][1]["file_name"] = "b.png"
    data["images"][1]["width"] = 64
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="b.png is 20×20 pixels but the annotations say 64×20"):
        read_coco_json(path).load_image(1)


def write_voc(folder, objects, size=(50, 40), name="img1"):
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    (folder / "JPEGImages").mkdir(exist_ok=True)
    write_png(folder / "JPEGImages" / f"{name}.jpg", *size)
    body = "".join(
        f"<object><name>{label}</name><difficult>{int(difficult)}</difficult><bndbox>"
        f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for label, (x1, y1, x2, y2), difficult in objects)
    (folder / "Annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.jpg</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{body}</annotation>")


def test_voc_reader_converts_one_based_pixels_and_marks_difficult(tmp_path):
    write_voc(tmp_path, [("dog", (1, 1, 10, 20), False), ("cat", (5, 5, 50, 40), True)])
    write_voc(tmp_path, [], name="img2")                       # no objects: valid
    dataset = read_voc(tmp_path)
    assert np.allclose(dataset.records[0]["boxes"], [[0, 0, 10, 20], [4, 4, 50, 40]])
    assert dataset.records[0]["labels"].tolist() == [11, 7]     # VOC's class order
    boxes, labels = dataset.targets(0)
    assert labels.tolist() == [11]                              # difficult left out
    assert dataset.targets(1)[0].shape == (0, 4)
    own = read_voc(tmp_path, classes=None)
    assert own.classes == ("cat", "dog")


def test_voc_reader_names_bad_input(tmp_path):
    write_voc(tmp_path, [("unicorn", (1, 1, 10, 20), False)])
    with pytest.raises(ValueError, match="'unicorn', not one of the classes"):
        read_voc(tmp_path)
    write_voc(tmp_path, [("dog", (10, 1, 5, 20), False)])
    with pytest.raises(ValueError, match="zero area or is inverted"):
        read_voc(tmp_path)
    with pytest.raises(ValueError, match="no Annotations"):
        read_voc(tmp_path / "JPEGImages")
    with pytest.raises(ValueError, match="split 'val'"):
        read_voc(tmp_path, split="val")


def test_resize_and_ink_box():
    image = np.zeros((6, 6))
    image[2:4, 1:5] = 200
    assert ink_box(image) == (1, 2, 5, 4)
    assert np.allclose(resize_bilinear(image, 12, 12)[5:7, 3:9], 200)   # ×2: inside kept
    assert np.allclose(resize_bilinear(image, 6, 6), image)               # identity


def test_canvas_boxes_are_the_ink_of_each_pasted_digit():
    x_train, y_train, _, _ = fake_mnist()
    for seed in range(20):
        canvas, boxes, labels = make_canvas(np.random.default_rng(seed), x_train, y_train, 128)
        assert 1 <= len(boxes) <= 6 and len(labels) == len(boxes)
        painted = np.zeros_like(canvas, dtype=bool)
        for x1, y1, x2, y2 in boxes.astype(int):
            region = canvas[y1:y2, x1:x2]
            # ink touches all four sides of the box: it is the tightest box
            assert region[0].any() and region[-1].any()
            assert region[:, 0].any() and region[:, -1].any()
            painted[y1:y2, x1:x2] = True
        assert not canvas[~painted].any()            # no ink outside every box
        for i in range(len(boxes)):                  # boxes never overlap
            for j in range(i):
                a, b = boxes[i], boxes[j]
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_mnist_detection_is_deterministic_and_exports_coco(tmp_path):
    mnist = fake_mnist()
    first = mnist_detection("train", count=6, seed=3, mnist=mnist)
    again = mnist_detection("train", count=4, seed=3, mnist=mnist)
    other = mnist_detection("train", count=4, seed=4, mnist=mnist)
    assert (first.images[:4] == again.images).all()          # canvas i does not depend on count
    assert not (first.images[:4] == other.images).all()
    test = mnist_detection("test", count=3, mnist=mnist)
    assert test.images.shape == (3, 128, 128)
    path = write_coco(test, tmp_path / "out")
    back = read_coco_json(path)
    assert len(back) == 3 and back.classes == tuple("0123456789")
    for index in range(3):
        assert (back.load_image(index)[..., 0] == test.images[index]).all()   # gray as RGB
        assert np.allclose(back.targets(index)[0], test.targets(index)[0])
        assert (back.targets(index)[1] == test.targets(index)[1]).all()
    with pytest.raises(ValueError, match="multiples of its stride 128"):
        mnist_detection("test", count=1, canvas_size=100, mnist=mnist)
