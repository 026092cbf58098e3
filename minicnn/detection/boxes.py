"""Boxes: areas, IoU, the anchor-relative coding the box network predicts, and matching.

Every box here is a row ``(x1, y1, x2, y2)`` in pixels: left, top, right, bottom, with
x2 > x1 and y2 > y1 (a box's width is ``x2 − x1``, no "+1": coordinates are continuous,
as COCO's are). Arrays of boxes have shape (N, 4).

Box coding (Faster R-CNN, Ren et al. 2015, eq. 2; EfficientDet uses it unscaled)
---------------------------------------------------------------------------------
An anchor with centre (xₐ, yₐ) and size (wₐ, hₐ) describes a box with centre (x, y) and
size (w, h) by four numbers that do not depend on the anchor's size::

    dx = (x − xₐ) / wₐ      dy = (y − yₐ) / hₐ      dw = log(w / wₐ)      dh = log(h / hₐ)

The box network predicts (dx, dy, dw, dh) in that order for every anchor; ``decode``
inverts the formulas.

Matching anchors to objects (EfficientDet's ArgMaxMatcher)
----------------------------------------------------------
Each anchor takes the object it overlaps most. With q = that best IoU:

    q ≥ 0.5         foreground: it learns the object's class and box
    q < 0.4         background: it learns "no object" (every class 0)
    0.4 ≤ q < 0.5   ignored: neither (an ambiguous anchor teaches nothing useful)

and, as the official implementation does (``force_match_for_each_row``), every object
also claims the anchor it overlaps most even below 0.5, so no object is left without a
foreground anchor (small digits would otherwise be).
"""
import numpy as np

FOREGROUND_IOU = 0.5
BACKGROUND_IOU = 0.4

# What match_anchors writes for anchors that carry no object
BACKGROUND = -1
IGNORED = -2


def as_boxes(boxes, name="boxes"):
    """``boxes`` as a float64 (N, 4) array, or a ValueError naming what arrived."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name}: expected an (N, 4) array of (x1, y1, x2, y2), "
                         f"got shape {array.shape}")
    return array


def box_area(boxes):
    """(x2 − x1)·(y2 − y1) for each row."""
    boxes = as_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes_a, boxes_b):
    """The (N, M) matrix of intersection over union of every pair.

        IoU(a, b) = |a ∩ b| / (|a| + |b| − |a ∩ b|)

    where the intersection is the box [max x1, max y1, min x2, min y2] when it is not
    empty. A pair whose union is zero (two empty boxes) has IoU 0.
    """
    a, b = as_boxes(boxes_a, "boxes_a"), as_boxes(boxes_b, "boxes_b")
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    intersection = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _centres_and_sizes(boxes):
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * width, boxes[..., 1] + 0.5 * height, width, height


def encode(boxes, anchors):
    """The (dx, dy, dw, dh) of each box relative to the anchor in the same row (see module doc)."""
    x, y, w, h = _centres_and_sizes(as_boxes(boxes))
    xa, ya, wa, ha = _centres_and_sizes(as_boxes(anchors, "anchors"))
    return np.stack([(x - xa) / wa, (y - ya) / ha, np.log(w / wa), np.log(h / ha)], axis=-1)


def decode(deltas, anchors):
    """The boxes that ``deltas`` (..., 4) describe relative to ``anchors`` (..., 4).

    Inverts ``encode``: x = xₐ + dx·wₐ, w = wₐ·exp(dw) (and so for y, h). ``dw`` and ``dh``
    are capped at log(1000/16), as torchvision does, so an untrained network's wild output
    cannot overflow exp.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    xa, ya, wa, ha = _centres_and_sizes(np.asarray(anchors, dtype=np.float64))
    limit = np.log(1000.0 / 16)
    x = xa + deltas[..., 0] * wa
    y = ya + deltas[..., 1] * ha
    w = wa * np.exp(np.minimum(deltas[..., 2], limit))
    h = ha * np.exp(np.minimum(deltas[..., 3], limit))
    return np.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], axis=-1)


def clip_boxes(boxes, width, height):
    """Boxes cut to the image [0, width] × [0, height]."""
    boxes = np.array(boxes, dtype=np.float64)
    boxes[..., 0::2] = np.clip(boxes[..., 0::2], 0, width)
    boxes[..., 1::2] = np.clip(boxes[..., 1::2], 0, height)
    return boxes


def match_anchors(anchors, boxes, labels, foreground_iou=FOREGROUND_IOU,
                  background_iou=BACKGROUND_IOU):
    """Training targets for every anchor: ``(classes, box_targets)``.

    ``classes`` (A,) int64: the label of the matched object for foreground anchors,
    ``BACKGROUND`` (−1) or ``IGNORED`` (−2) otherwise (rules in the module doc).
    ``box_targets`` (A, 4): the matched object's box encoded against the anchor
    (zeros where the anchor is not foreground). An image without objects is valid: every
    anchor is background.
    """
    anchors = as_boxes(anchors, "anchors")
    boxes = as_boxes(boxes)
    labels = np.asarray(labels)
    if labels.shape != (len(boxes),):
        raise ValueError(f"match_anchors: expected {len(boxes)} labels (one per box), "
                         f"got shape {labels.shape}")
    if not 0 <= background_iou <= foreground_iou <= 1:
        raise ValueError(f"match_anchors: need 0 ≤ background_iou ≤ foreground_iou ≤ 1, got "
                         f"{background_iou} and {foreground_iou}")
    classes = np.full(len(anchors), BACKGROUND, dtype=np.int64)
    box_targets = np.zeros((len(anchors), 4), dtype=np.float64)
    if len(boxes) == 0:
        return classes, box_targets

    iou = box_iou(anchors, boxes)                     # (A, M)
    best_object = iou.argmax(axis=1)
    best_iou = iou[np.arange(len(anchors)), best_object]
    classes[best_iou >= background_iou] = IGNORED
    foreground = best_iou >= foreground_iou
    # Every object claims its best anchor, whatever the IoU (later objects win a tie for
    # the same anchor, as in the official matcher).
    best_anchor = iou.argmax(axis=0)
    best_object[best_anchor] = np.arange(len(boxes))
    foreground[best_anchor] = True

    classes[foreground] = labels[best_object[foreground]]
    box_targets[foreground] = encode(boxes[best_object[foreground]], anchors[foreground])
    return classes, box_targets
