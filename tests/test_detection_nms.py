"""NMS against a brute-force reference, per-class NMS and post-processing."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minicnn.detection import batched_nms, encode, generate_anchors, nms, postprocess
from minicnn.detection.boxes import box_iou


def brute_force_nms(boxes, scores, threshold):
    """The definition: a box survives unless a kept, better box overlaps it too much."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= threshold for j in kept):
            kept.append(i)
    return kept


@st.composite
def scored_boxes(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    count = draw(st.integers(0, 30))
    corners = rng.uniform(0, 60, size=(count, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 40, size=(count, 2))], axis=1)
    scores = rng.integers(0, 8, size=count) / 8.0     # many ties on purpose
    return boxes, scores, rng.integers(0, 3, size=count), draw(st.floats(0.1, 0.9))


@given(scored_boxes())
def test_nms_matches_brute_force(case):
    boxes, scores, _, threshold = case
    assert nms(boxes, scores, threshold).tolist() == brute_force_nms(boxes, scores, threshold)


@given(scored_boxes())
def test_batched_nms_is_nms_within_each_class(case):
    boxes, scores, classes, threshold = case
    expected = []
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        expected += members[brute_force_nms(boxes[members], scores[members], threshold)].tolist()
    expected.sort(key=lambda i: (-scores[i], i))
    assert batched_nms(boxes, scores, classes, threshold).tolist() == expected
    assert batched_nms(boxes, scores, classes, threshold, max_kept=3).tolist() == expected[:3]


def test_overlapping_boxes_of_different_classes_both_survive():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, np.array([1, 1, 2]), 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5).tolist() == [0]


def test_postprocess_recovers_encoded_objects_and_keeps_top_k():
    anchors = generate_anchors(128)
    objects = np.array([[10, 12, 40, 50], [70, 60, 120, 110]], dtype=float)
    logits = np.full((1, len(anchors), 3), -8.0)
    box_regression = np.zeros((1, len(anchors), 4))
    for box, label, score in zip(objects, (2, 0), (3.0, 2.0)):
        near = np.flatnonzero(box_iou(anchors, box[None])[:, 0] > 0.3)
        logits[0, near, label] = score
        box_regression[0, near] = encode(np.repeat(box[None], len(near), 0), anchors[near])
    (found,) = postprocess(logits, box_regression, anchors, (128, 128))
    assert found["labels"].tolist() == [2, 0]
    assert np.allclose(found["boxes"], objects)
    assert np.allclose(found["scores"], 1 / (1 + np.exp(-np.array([3.0, 2.0]))))
    (capped,) = postprocess(logits, box_regression, anchors, 128, max_detections=1)
    assert capped["labels"].tolist() == [2]
    (nothing,) = postprocess(np.full((1, len(anchors), 3), -8.0), box_regression, anchors, 128)
    assert nothing["boxes"].shape == (0, 4)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="expected 2 scores"):
        nms(np.zeros((2, 4)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="class logits"):
        postprocess(np.zeros((1, 5, 2)), np.zeros((1, 5, 4)), generate_anchors(128), 128)
