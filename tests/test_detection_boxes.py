"""Anchors, IoU, box coding and anchor matching."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minicnn.detection import (BACKGROUND, IGNORED, anchor_count, box_iou, decode, encode,
                               generate_anchors, match_anchors)
from minicnn.detection.anchors import check_image_size, feature_shapes


def test_d0_has_49104_anchors_at_512():
    assert anchor_count(512) == 49104
    assert generate_anchors(512).shape == (49104, 4)
    assert feature_shapes(512) == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]


def test_anchor_order_is_level_then_row_then_column_then_scale_and_ratio():
    anchors = generate_anchors(256)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    sizes = anchors[:, 2:] - anchors[:, :2]
    # the first cell of P3: 9 anchors centred on (4, 4), base 32 · 2^(o/3), ratios in order
    assert np.allclose(centres[:9], 4.0)
    expected = [(32 * 2 ** (o / 3) * ax, 32 * 2 ** (o / 3) * ay)
                for o in range(3) for ax, ay in ((1, 1), (1.4, 0.7), (0.7, 1.4))]
    assert np.allclose(sizes[:9], expected)
    # the next cell is one column to the right (x moves first), then the next row
    assert np.allclose(centres[9], (12, 4))
    assert np.allclose(centres[9 * 32], (4, 12))
    # P4 starts after the 32·32 cells of P3, with stride 16 and base size 64
    first_p4 = 9 * 32 * 32
    assert np.allclose(centres[first_p4], (8, 8)) and np.allclose(sizes[first_p4], 64)
    assert np.allclose(sizes[-9], 4 * 128)   # P7


def test_non_square_images_and_a_clear_error_below_the_stride():
    assert anchor_count((128, 256)) == 9 * sum((128 >> l) * (256 >> l) for l in range(3, 8))
    with pytest.raises(ValueError, match="multiples of its stride 128.*minimum 128×128"):
        check_image_size(96)
    with pytest.raises(ValueError, match="200×256"):
        generate_anchors((200, 256))


def reference_iou(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
            out[i, j] = w * h / union
    return out


boxes_strategy = st.lists(
    st.tuples(st.floats(0, 90), st.floats(0, 90), st.floats(0.5, 60), st.floats(0.5, 60))
    .map(lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3])), min_size=1, max_size=8)


@given(boxes_strategy, boxes_strategy)
def test_iou_matches_the_pairwise_definition(a, b):
    a, b = np.array(a), np.array(b)
    assert np.allclose(box_iou(a, b), reference_iou(a, b))
    assert np.allclose(np.diag(box_iou(a, a)), 1.0)


@given(boxes_strategy)
def test_decode_inverts_encode(boxes):
    boxes = np.array(boxes)
    # anchors shifted and stretched against their boxes (well inside decode's size cap)
    sizes = boxes[:, 2:] - boxes[:, :2]
    corners = boxes[:, :2] + [3.0, -2.0]
    anchors = np.concatenate([corners, corners + sizes * [1.7, 0.6]], axis=1)
    deltas = encode(boxes, anchors)
    assert np.allclose(decode(deltas, anchors), boxes)


def test_encoding_follows_the_faster_rcnn_formulas():
    anchor = np.array([[0.0, 0.0, 10.0, 20.0]])      # centre (5, 10), size 10×20
    box = np.array([[2.0, 4.0, 22.0, 14.0]])         # centre (12, 9), size 20×10
    assert np.allclose(encode(box, anchor), [[0.7, -0.05, np.log(2), np.log(0.5)]])


def test_matching_thresholds_and_every_object_gets_an_anchor():
    anchors = np.array([[0, 0, 10, 10],      # IoU 1 with object 0: foreground
                        [0, 0, 10, 8.5],     # IoU 0.85: foreground
                        [0, 0, 10, 4.5],     # IoU 0.45: ignored
                        [0, 0, 10, 3],       # IoU 0.3: background
                        [50, 50, 60, 60],    # best (but small) anchor of object 1
                        [100, 100, 110, 110]], dtype=float)
    boxes = np.array([[0, 0, 10, 10], [52, 52, 80, 80]], dtype=float)
    classes, targets = match_anchors(anchors, boxes, np.array([3, 5]))
    assert classes.tolist() == [3, 3, IGNORED, BACKGROUND, 5, BACKGROUND]
    assert np.allclose(targets[0], 0) and np.allclose(targets[3], 0)
    assert np.allclose(decode(targets[4], anchors[4]), boxes[1])


def test_an_image_without_objects_is_all_background():
    classes, targets = match_anchors(generate_anchors(128), np.zeros((0, 4)), np.zeros(0, int))
    assert (classes == BACKGROUND).all() and not targets.any()


def test_matching_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="expected 1 labels"):
        match_anchors(generate_anchors(128), [[0, 0, 5, 5]], [1, 2])


def test_the_mnist_detection_anchor_scale_gives_every_digit_size_an_anchor():
    """Why the mnist-detection recipe sets anchor scale 3: a digit 18–45 % of a 128-px canvas
    tall (23–58 px), 0.4 to 1 times as wide, overlaps some anchor by IoU ≥ 0.5 in 98 % of
    cases at scale 3, in only 87 % at the published 4 (whose smallest anchor is 32 px)."""
    from minicnn.detection.mnist_detection import HEIGHT_FRACTION
    from minicnn.detection.train import MNIST_DETECTION_RECIPE
    rng = np.random.default_rng(0)
    height = rng.uniform(HEIGHT_FRACTION[0] * 128, HEIGHT_FRACTION[1] * 128, 400)
    width = height * rng.uniform(0.4, 1.0, 400)
    left, top = rng.uniform(0, 128 - width), rng.uniform(0, 128 - height)
    digits = np.stack([left, top, left + width, top + height], axis=1)

    def covered(anchor_scale):
        anchors = generate_anchors(128, anchor_scale=anchor_scale)
        return (box_iou(anchors, digits).max(axis=0) >= 0.5).mean()

    assert covered(MNIST_DETECTION_RECIPE["anchor_scale"]) >= 0.97
    assert covered(4.0) < 0.9
