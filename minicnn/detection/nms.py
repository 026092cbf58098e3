"""Non-maximum suppression and turning a detector's raw outputs into detections.

A detector scores every anchor for every class, so one object lights up many
overlapping anchors. Greedy NMS keeps the best of each cluster:

    repeat: take the highest-scoring box left; keep it; drop every box left whose IoU
            with it exceeds the threshold

``batched_nms`` runs that separately per class (a "3" never suppresses an overlapping
"8"), and ``postprocess`` is the whole path from the network's outputs to at most 100
boxes per image, as EfficientDet's evaluation does it: sigmoid scores, the top 5000
(anchor, class) candidates above a score threshold, box decoding, clipping to the image,
per-class NMS at IoU 0.5, the best 100 kept.
"""
import numpy as np

from minicnn.detection.boxes import as_boxes, box_iou, clip_boxes, decode


def _scores(scores, count, name):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (count,):
        raise ValueError(f"{name}: expected {count} scores (one per box), got shape {scores.shape}")
    return scores


def nms(boxes, scores, iou_threshold, max_kept=None):
    """Indices of the boxes greedy NMS keeps, in descending score (see module doc).

    A box is dropped when its IoU with a kept, higher-scoring box is *greater than*
    ``iou_threshold``; equal scores keep the earlier box first. ``max_kept`` stops after
    that many (the first ``max_kept`` of the full answer).
    """
    boxes = as_boxes(boxes)
    scores = _scores(scores, len(boxes), "nms")
    remaining = np.argsort(-scores, kind="stable")
    kept = []
    while remaining.size and (max_kept is None or len(kept) < max_kept):
        best, remaining = remaining[0], remaining[1:]
        kept.append(best)
        overlap = box_iou(boxes[best][None], boxes[remaining])[0]
        remaining = remaining[overlap <= iou_threshold]
    return np.array(kept, dtype=np.int64)


def batched_nms(boxes, scores, classes, iou_threshold, max_kept=None):
    """NMS within each class separately; the kept indices of all classes, in descending
    score (ties: lower index first), the first ``max_kept`` of them when given."""
    boxes = as_boxes(boxes)
    scores = _scores(scores, len(boxes), "batched_nms")
    classes = np.asarray(classes)
    if classes.shape != (len(boxes),):
        raise ValueError(f"batched_nms: expected {len(boxes)} classes (one per box), "
                         f"got shape {classes.shape}")
    # a class's boxes past its own max_kept-th can never be among the best max_kept overall
    kept = [np.flatnonzero(classes == c)[nms(boxes[classes == c], scores[classes == c],
                                             iou_threshold, max_kept)]
            for c in np.unique(classes)]
    kept = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return kept[np.lexsort((kept, -scores[kept]))][:max_kept]


def sigmoid(x):
    return 0.5 * (np.tanh(0.5 * np.asarray(x, dtype=np.float64)) + 1)


def postprocess(class_logits, box_regression, anchors, image_size, score_threshold=0.05,
                iou_threshold=0.5, pre_nms_top_k=5000, max_detections=100):
    """Detections per image from a detector's outputs.

    ``class_logits`` (N, A, C) and ``box_regression`` (N, A, 4) as arrays (or Tensors),
    ``anchors`` (A, 4), ``image_size`` (height, width) to clip to. Returns one dict per
    image: ``boxes`` (D, 4) as (x1, y1, x2, y2), ``scores`` (D,), ``labels`` (D,) class
    indices, sorted by descending score, D ≤ ``max_detections``.
    """
    class_logits, box_regression = _numpy(class_logits), _numpy(box_regression)
    anchors = as_boxes(anchors, "anchors")
    if class_logits.ndim != 3 or class_logits.shape[1] != len(anchors):
        raise ValueError(f"postprocess: expected class logits (N, {len(anchors)}, C), "
                         f"got {class_logits.shape}")
    if box_regression.shape != class_logits.shape[:2] + (4,):
        raise ValueError(f"postprocess: expected box regression {class_logits.shape[:2] + (4,)}, "
                         f"got {box_regression.shape}")
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    num_classes = class_logits.shape[2]
    detections = []
    for logits, deltas in zip(class_logits, box_regression):
        scores = sigmoid(logits).ravel()                       # (A·C,): anchor-major
        candidates = np.flatnonzero(scores > score_threshold)
        if candidates.size > pre_nms_top_k:
            best = np.argpartition(-scores[candidates], pre_nms_top_k - 1)[:pre_nms_top_k]
            candidates = candidates[best]
        anchor_index, labels = np.divmod(candidates, num_classes)
        boxes = clip_boxes(decode(deltas[anchor_index], anchors[anchor_index]), width, height)
        kept = batched_nms(boxes, scores[candidates], labels, iou_threshold, max_detections)
        detections.append({"boxes": boxes[kept], "scores": scores[candidates][kept],
                           "labels": labels[kept].astype(np.int64)})
    return detections


def _numpy(x):
    if hasattr(x, "numpy") and callable(x.numpy):     # a Tensor
        return np.asarray(x.numpy(), dtype=np.float64)
    if hasattr(x, "get"):                             # a CuPy array
        x = x.get()
    return np.asarray(x, dtype=np.float64)
