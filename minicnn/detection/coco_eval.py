"""COCO mean average precision, written to be read (and held to pycocotools' numbers).

    scores = evaluate_coco("instances_test.json", "detections.json")
    scores["mAP"], scores["mAP50"], scores["mAP75"]     # also mAP_small / _medium / _large

The inputs are the two files every COCO tool exchanges: the ground truth (``images``,
``annotations`` with ``bbox`` = [x, y, width, height], ``area``, ``iscrowd``, and
``categories``) and the detections (a list of ``{"image_id", "category_id", "bbox",
"score"}``). Either may also be given already loaded (a dict, a list).

What COCO's mAP is (Lin et al. 2014; the procedure of pycocotools' COCOeval)
----------------------------------------------------------------------------
For every category, every IoU threshold t ∈ {0.50, 0.55, …, 0.95} and every object size
range (all; small < 32²; medium 32²…96²; large > 96² pixels of area):

1. **Match, image by image.** The image's detections of that category, best score first
   and at most 100 of them, each take the still-unmatched ground-truth box they overlap
   most, if that IoU ≥ t. Ground truth marked ``iscrowd`` (one box around a crowd) or
   whose area lies outside the size range is *ignored*: a detection is matched to it
   only when no regular box qualifies, and such a detection then counts neither as a
   hit nor as a miss. A crowd box can absorb any number of detections, and its IoU is
   measured as |d ∩ g| / |d| (the detection only has to lie inside the crowd).
   Unmatched detections outside the size range are ignored as well.
2. **Rank, across images.** All detections of the category, sorted by score, give
   cumulative true and false positives; after k of them
   precision_k = TP_k / (TP_k + FP_k), recall_k = TP_k / (number of regular ground truth).
3. **Interpolate.** Precision is replaced by the best precision at any higher recall
   (the curve made monotone), then read at the 101 recall points 0, 0.01, …, 1: the
   value at r is the interpolated precision of the first rank whose recall reaches r
   (0 when recall never reaches r). Their mean is the AP.

A category with no regular ground truth in the size range has no AP and is left out of
the mean (pycocotools marks it −1). **mAP** averages AP over categories and all ten
thresholds; **mAP50** and **mAP75** use one threshold each; ``mAP_small`` etc. restrict the
size range. A figure with nothing to average over is −1, as COCOeval prints it.
"""
import json
import os
from collections import defaultdict

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2),
               "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e10)}


def _load(source, what):
    if isinstance(source, (str, os.PathLike)):
        with open(source) as file:
            return json.load(file)
    return source


def _xywh_iou(detections, ground_truth, crowd):
    """(D, G) IoU of [x, y, w, h] boxes; for a crowd column, |d ∩ g| / |d|."""
    d, g = detections[:, None, :], ground_truth[None, :, :]
    right = np.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2])
    bottom = np.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3])
    width = right - np.maximum(d[..., 0], g[..., 0])
    height = bottom - np.maximum(d[..., 1], g[..., 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    detection_area = d[..., 2] * d[..., 3]
    union = np.where(crowd[None, :], detection_area,
                     detection_area + g[..., 2] * g[..., 3] - intersection)
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _match_image(ground_truth, detections, area_range):
    """Step 1 for one (image, category, size range) at every IoU threshold.

    Returns None when there is neither ground truth nor a detection, else a dict with the
    detections' ``scores`` (D,), ``matched`` and ``ignored`` (T, D) booleans and the number
    of regular (not ignored) ground-truth boxes.
    """
    if not ground_truth and not detections:
        return None
    low, high = area_range
    gt_ignored = np.array([bool(g.get("iscrowd", 0)) or not low <= g["area"] <= high
                           for g in ground_truth], dtype=bool)
    gt_order = np.argsort(gt_ignored, kind="stable")          # regular boxes first
    ground_truth = [ground_truth[i] for i in gt_order]
    gt_ignored, crowd = gt_ignored[gt_order], np.array(
        [bool(g.get("iscrowd", 0)) for g in ground_truth], dtype=bool)

    det_order = np.argsort([-d["score"] for d in detections], kind="stable")[:MAX_DETECTIONS]
    detections = [detections[i] for i in det_order]
    scores = np.array([d["score"] for d in detections], dtype=np.float64)
    det_area = np.array([d["bbox"][2] * d["bbox"][3] for d in detections], dtype=np.float64)

    iou = _xywh_iou(np.array([d["bbox"] for d in detections], dtype=np.float64).reshape(-1, 4),
                    np.array([g["bbox"] for g in ground_truth], dtype=np.float64).reshape(-1, 4),
                    crowd)
    thresholds = len(IOU_THRESHOLDS)
    matched = np.zeros((thresholds, len(detections)), dtype=bool)
    ignored = np.zeros((thresholds, len(detections)), dtype=bool)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(ground_truth), dtype=bool)
        for d in range(len(detections)):
            # a regular box if one qualifies, else an ignored one; the highest IoU wins
            # and, as in COCOeval, the later box wins a tie
            available = (~taken | crowd) & (iou[d] >= threshold)
            for group in (~gt_ignored, gt_ignored):
                candidates = np.flatnonzero(available & group)
                if candidates.size:
                    best = candidates[::-1][np.argmax(iou[d, candidates[::-1]])]
                    matched[t, d], ignored[t, d], taken[best] = True, gt_ignored[best], True
                    break
    outside = (det_area < low) | (det_area > high)
    ignored |= ~matched & outside[None, :]
    return {"scores": scores, "matched": matched, "ignored": ignored,
            "regular_ground_truth": int((~gt_ignored).sum())}


def _interpolated_precision(per_image):
    """Steps 2 and 3: (T, 101) precision at the recall points, or None without ground truth."""
    per_image = [e for e in per_image if e is not None]
    regular = sum(e["regular_ground_truth"] for e in per_image)
    if regular == 0:
        return None
    scores = np.concatenate([e["scores"] for e in per_image])
    rank = np.argsort(-scores, kind="mergesort")       # stable: ties keep image order
    matched = np.concatenate([e["matched"] for e in per_image], axis=1)[:, rank]
    ignored = np.concatenate([e["ignored"] for e in per_image], axis=1)[:, rank]
    true_positives = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    false_positives = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    result = np.zeros((len(IOU_THRESHOLDS), len(RECALL_POINTS)))
    for t in range(len(IOU_THRESHOLDS)):
        recall = true_positives[t] / regular
        precision = true_positives[t] / (true_positives[t] + false_positives[t] + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]     # best at higher recall
        first_reaching = np.searchsorted(recall, RECALL_POINTS, side="left")
        reached = first_reaching < len(precision)
        result[t, reached] = precision[first_reaching[reached]]
    return result


def _group(annotations, image_ids, category_ids, what):
    grouped = defaultdict(list)
    for annotation in annotations:
        image, category = annotation.get("image_id"), annotation.get("category_id")
        if image not in image_ids:
            raise ValueError(f"evaluate_coco: {what} refer to image_id {image!r}, which is not "
                             f"among the ground truth's {len(image_ids)} images")
        if category in category_ids:       # detections of categories COCO does not evaluate
            grouped[image, category].append(annotation)
    return grouped


def _with_area(annotation):
    """Ground truth uses its own ``area`` field, as COCOeval does (w·h when absent)."""
    if "area" in annotation:
        return annotation
    return {**annotation, "area": annotation["bbox"][2] * annotation["bbox"][3]}


def _mean_defined(values):
    values = values[values > -1]
    return float(values.mean()) if values.size else -1.0


def evaluate_coco(ground_truth_json, detections_json):
    """COCO bounding-box mAP figures of ``detections_json`` against ``ground_truth_json``
    (paths or loaded JSON; see the module docstring): a dict with ``mAP``, ``mAP50``,
    ``mAP75``, ``mAP_small``, ``mAP_medium``, ``mAP_large``."""
    truth = _load(ground_truth_json, "ground truth")
    detections = _load(detections_json, "detections")
    if not isinstance(truth, dict) or not {"images", "annotations", "categories"} <= set(truth):
        raise ValueError("evaluate_coco: the ground truth must be a COCO instances file (a "
                         "JSON object with 'images', 'annotations' and 'categories')")
    if not isinstance(detections, list):
        raise ValueError(f"evaluate_coco: detections must be a JSON list of "
                         f"{{image_id, category_id, bbox, score}}, got {type(detections).__name__}")
    image_ids = sorted({image["id"] for image in truth["images"]})
    category_ids = sorted({category["id"] for category in truth["categories"]})
    truth_by_key = _group([_with_area(a) for a in truth["annotations"]], set(image_ids),
                          set(category_ids), "ground-truth annotations")
    detections_by_key = _group(detections, set(image_ids), set(category_ids), "detections")

    # precision[t, r, k, a]: −1 where category k has no regular ground truth in range a
    precision = -np.ones((len(IOU_THRESHOLDS), len(RECALL_POINTS), len(category_ids),
                          len(AREA_RANGES)))
    for k, category in enumerate(category_ids):
        for a, area_range in enumerate(AREA_RANGES.values()):
            per_image = [_match_image(truth_by_key.get((image, category), []),
                                      detections_by_key.get((image, category), []), area_range)
                         for image in image_ids]
            curve = _interpolated_precision(per_image)
            if curve is not None:
                precision[:, :, k, a] = curve

    at_50, at_75 = 0, 5                      # IOU_THRESHOLDS[0] = 0.50, [5] = 0.75
    return {"mAP": _mean_defined(precision[:, :, :, 0]),
            "mAP50": _mean_defined(precision[at_50, :, :, 0]),
            "mAP75": _mean_defined(precision[at_75, :, :, 0]),
            "mAP_small": _mean_defined(precision[:, :, :, 1]),
            "mAP_medium": _mean_defined(precision[:, :, :, 2]),
            "mAP_large": _mean_defined(precision[:, :, :, 3])}
