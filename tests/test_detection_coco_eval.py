"""Our COCO mAP against pycocotools' COCOeval on the same files (random cases with crowds,
empty images, categories without ground truth or without detections)."""
import contextlib
import io
import json

import numpy as np
import pytest

from minicnn.detection import evaluate_coco

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO          # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def random_case(seed, images=6, categories=4):
    """Ground truth and detections that overlap a lot (so every rule gets exercised)."""
    rng = np.random.default_rng(seed)
    truth = {"images": [{"id": i + 1, "width": 300, "height": 300, "file_name": f"{i}.png"}
                        for i in range(images)],
             "categories": [{"id": c * 2 + 1, "name": f"c{c}"} for c in range(categories)],
             "annotations": []}
    detections = []
    category_ids = [c["id"] for c in truth["categories"]]
    for image in truth["images"]:
        objects = int(rng.integers(0, 6))      # some images have none
        for _ in range(objects):
            w, h = rng.uniform(5, 140, size=2)
            x, y = rng.uniform(0, 300 - w), rng.uniform(0, 300 - h)
            category = int(rng.choice(category_ids[:-1]))    # the last one never appears
            truth["annotations"].append({
                "id": len(truth["annotations"]) + 1, "image_id": image["id"],
                "category_id": category, "bbox": [x, y, w, h],
                "area": float(w * h * rng.uniform(0.6, 1.0)),   # a mask's area, below w·h
                "iscrowd": int(rng.random() < 0.15)})
            for _ in range(int(rng.integers(0, 4))):           # near-duplicates of it
                jitter = rng.normal(0, 0.15, size=4) * [w, h, w, h]
                detections.append({"image_id": image["id"], "category_id": category,
                                   "bbox": [x + jitter[0], y + jitter[1],
                                            max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
                                   "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 5))):               # false alarms, any category
            w, h = rng.uniform(5, 140, size=2)
            detections.append({"image_id": image["id"],
                               "category_id": int(rng.choice(category_ids + [99])),
                               "bbox": [float(rng.uniform(0, 160)), float(rng.uniform(0, 160)),
                                        float(w), float(h)],
                               "score": float(rng.random())})
    if not detections:
        detections.append({"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5})
    return truth, detections


def pycocotools_figures(tmp_path, truth, detections):
    truth_path, detections_path = tmp_path / "truth.json", tmp_path / "detections.json"
    truth_path.write_text(json.dumps(truth))
    detections_path.write_text(json.dumps(detections))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(truth_path))
        result = coco.loadRes(str(detections_path))
        evaluation = COCOeval(coco, result, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return truth_path, detections_path, {"mAP": stats[0], "mAP50": stats[1], "mAP75": stats[2],
                                         "mAP_small": stats[3], "mAP_medium": stats[4],
                                         "mAP_large": stats[5]}


@pytest.mark.parametrize("seed", range(8))
def test_matches_pycocotools_on_random_cases(tmp_path, seed):
    truth, detections = random_case(seed)
    truth_path, detections_path, expected = pycocotools_figures(tmp_path, truth, detections)
    ours = evaluate_coco(truth_path, detections_path)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_many_detections_per_image_are_cut_at_one_hundred(tmp_path):
    truth, _ = random_case(100, images=2, categories=2)
    rng = np.random.default_rng(1)
    detections = [{"image_id": 1, "category_id": 1,
                   "bbox": [float(v) for v in rng.uniform(0, 150, 2)] + [60.0, 60.0],
                   "score": float(rng.random())} for _ in range(250)]
    truth["annotations"].append({"id": 999, "image_id": 1, "category_id": 1,
                                 "bbox": [10, 10, 60, 60], "area": 3600, "iscrowd": 0})
    _, _, expected = pycocotools_figures(tmp_path, truth, detections)
    ours = evaluate_coco(truth, detections)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_perfect_detections_score_one_and_misses_lower_it():
    truth = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 7}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 50, 50],
                              "area": 2500, "iscrowd": 0},
                             {"id": 2, "image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 20],
                              "area": 400, "iscrowd": 0}]}
    perfect = [{"image_id": a["image_id"], "category_id": 7, "bbox": a["bbox"], "score": 0.9}
               for a in truth["annotations"]]
    figures = evaluate_coco(truth, perfect)
    assert figures["mAP"] == pytest.approx(1.0) and figures["mAP50"] == pytest.approx(1.0)
    assert figures["mAP_large"] == -1.0            # no large object: nothing to average
    half = evaluate_coco(truth, perfect[:1])
    assert half["mAP"] == pytest.approx(0.5, abs=0.01)


def test_detections_on_unknown_images_are_refused():
    truth = {"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": []}
    with pytest.raises(ValueError, match="image_id 5"):
        evaluate_coco(truth, [{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1],
                               "score": 1.0}])
