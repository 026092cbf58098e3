"""Focal and Huber losses against plain NumPy references, and their gradients."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minicnn.detection import BACKGROUND, IGNORED, box_loss, detection_loss, focal_loss
from minicnn.detection import flatten_level_outputs, generate_anchors
from minicnn.gradcheck import gradcheck
from minicnn.tensor import Tensor


def reference_focal(logits, classes, alpha=0.25, gamma=1.5):
    """−α_t (1 − p_t)^γ log p_t, written out element by element."""
    total = 0.0
    n, a, c = logits.shape
    for i in range(n):
        for j in range(a):
            if classes[i, j] == IGNORED:
                continue
            for k in range(c):
                p = 1 / (1 + np.exp(-logits[i, j, k]))
                if classes[i, j] == k:
                    total += -alpha * (1 - p) ** gamma * np.log(p)
                else:
                    total += -(1 - alpha) * p ** gamma * np.log(1 - p)
    return total / ((classes >= 0).sum() + 1)


def reference_huber(predictions, classes, targets, delta=0.1):
    total = 0.0
    for i, j in zip(*np.nonzero(classes >= 0)):
        for r in predictions[i, j] - targets[i, j]:
            total += 0.5 * r * r if abs(r) <= delta else delta * (abs(r) - 0.5 * delta)
    return total / (4 * ((classes >= 0).sum() + 1))


@st.composite
def detection_batch(draw):
    seed = draw(st.integers(0, 2 ** 16))
    n, a, c = draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 4))
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, a, c))
    classes = rng.integers(IGNORED, c, size=(n, a))
    box_predictions = rng.normal(0, 0.15, size=(n, a, 4))   # both sides of δ = 0.1
    box_targets = np.where((classes >= 0)[..., None], rng.normal(0, 0.1, size=(n, a, 4)), 0)
    return logits, classes, box_predictions, box_targets


@given(detection_batch())
def test_focal_loss_matches_reference_and_its_gradient_checks(batch):
    logits, classes, _, _ = batch
    x = Tensor(logits, requires_grad=True)
    assert focal_loss(x, classes).item() == pytest.approx(reference_focal(logits, classes),
                                                          rel=1e-9, abs=1e-12)
    gradcheck(lambda t: focal_loss(t, classes), [x])


@given(detection_batch())
def test_huber_box_loss_matches_reference_and_its_gradient_checks(batch):
    _, classes, predictions, targets = batch
    x = Tensor(predictions, requires_grad=True)
    assert box_loss(x, classes, targets).item() == pytest.approx(
        reference_huber(predictions, classes, targets), rel=1e-9, abs=1e-12)
    gradcheck(lambda t: box_loss(t, classes, targets), [x])


def test_focal_loss_stays_finite_for_huge_logits():
    logits = Tensor(np.array([[[80.0, -80.0]]]), requires_grad=True)
    loss = focal_loss(logits, np.array([[1]]))       # confidently wrong on both classes
    loss.backward()
    assert np.isfinite(loss.item()) and loss.item() > 10
    assert np.isfinite(logits.grad).all()


def test_total_loss_weights_the_box_loss_by_fifty_and_empty_images_are_valid():
    rng = np.random.default_rng(0)
    logits, predictions = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 4))
    classes = np.array([[0, 2, BACKGROUND, IGNORED, 1], [BACKGROUND] * 5])
    targets = np.where((classes >= 0)[..., None], rng.normal(size=(2, 5, 4)), 0)
    total, cls, box = detection_loss(Tensor(logits), Tensor(predictions), classes, targets)
    assert total.item() == pytest.approx(cls.item() + 50 * box.item())
    empty = np.full((1, 5), BACKGROUND)
    assert box_loss(Tensor(predictions[:1]), empty, np.zeros((1, 5, 4))).item() == 0
    assert focal_loss(Tensor(logits[:1]), empty).item() > 0   # background is still learned


def test_bad_targets_are_named():
    with pytest.raises(ValueError, match=r"anchor classes of shape \(1, 4\)"):
        focal_loss(Tensor(np.zeros((1, 4, 2))), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="anchor class 5 does not exist"):
        focal_loss(Tensor(np.zeros((1, 4, 2))), np.full((1, 4), 5))
    with pytest.raises(TypeError, match="integer anchor classes"):
        focal_loss(Tensor(np.zeros((1, 4, 2))), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"\(N, A, 4\)"):
        box_loss(Tensor(np.zeros((1, 4, 3))), np.zeros((1, 4), int), np.zeros((1, 4, 3)))


def test_flattened_level_outputs_follow_the_anchor_order():
    """A map whose value at (anchor k, row y, column x) names the anchor lands on that
    anchor's row of generate_anchors."""
    anchors = generate_anchors(128)
    maps, start = [], 0
    for level in range(3, 8):
        side = 128 >> level
        index = start + np.arange(side * side * 9).reshape(side, side, 9)   # y, x, k
        start += index.size
        maps.append(Tensor(index.transpose(2, 0, 1)[None].astype(np.float64)))  # (1, 9, H, W)
    flat = flatten_level_outputs(maps, 1)
    assert flat.shape == (1, len(anchors), 1)
    assert (flat.numpy()[0, :, 0] == np.arange(len(anchors))).all()
    x = Tensor(np.random.default_rng(0).normal(size=(2, 18, 2, 3)), requires_grad=True)
    gradcheck(lambda t: flatten_level_outputs([t], 2), [x])
