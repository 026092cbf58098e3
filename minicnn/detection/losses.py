"""Detection losses: sigmoid focal loss for classes, Huber loss for boxes (EfficientDet).

Both are summed over the anchors of the whole batch and divided by the same normaliser,
the number of foreground anchors plus one, as the official implementation does (the +1
keeps a batch of empty images finite: its loss is then the background terms alone)::

    n_fg = #{anchors matched to an object in the batch} + 1
    loss = focal / n_fg + box_loss_weight · huber / (4 · n_fg)      (box_loss_weight = 50)

Targets come from ``match_anchors``: ``classes`` (N, A) holds a class index for
foreground anchors, ``BACKGROUND`` (−1) or ``IGNORED`` (−2); ``box_targets`` (N, A, 4).
Ignored anchors contribute nothing to either loss; background anchors only to the
class loss.
"""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.detection.boxes import BACKGROUND, IGNORED
from minicnn.tensor import Function, Tensor, as_tensor

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 1.5
HUBER_DELTA = 0.1
BOX_LOSS_WEIGHT = 50.0


def _check_targets(name, outputs, classes, last):
    if outputs.ndim != 3 or outputs.shape[2] != (last or outputs.shape[2]):
        want = f"(N, A, {last})" if last else "(N, A, classes)"
        raise ValueError(f"{name}: expected outputs of shape {want}, got {outputs.shape}")
    if classes.shape != outputs.shape[:2]:
        raise ValueError(f"{name}: expected anchor classes of shape {outputs.shape[:2]} to "
                         f"match the outputs {outputs.shape}, got {classes.shape}")
    if classes.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer anchor classes, got dtype {classes.dtype}")


def foreground_normaliser(classes):
    """n_fg = the number of foreground anchors + 1 (see module doc)."""
    return float((classes >= 0).sum()) + 1.0


class SigmoidFocalLoss(Function):
    """Focal loss (Lin et al. 2017, eq. 5) over independent per-class sigmoids.

    For logit x with target t ∈ {0, 1} (1 for the anchor's own class), p = σ(x) and

        p_t = p if t = 1 else 1 − p,        α_t = α if t = 1 else 1 − α
        FL  = −α_t · (1 − p_t)^γ · log p_t                      (α = 0.25, γ = 1.5)

    summed over classes and non-ignored anchors, divided by n_fg. With s = 2t − 1,
    p_t = σ(s·x), so dp_t/dx = s·p_t·(1 − p_t) and

        ∂FL/∂x = α_t · s · (1 − p_t)^γ · (γ·p_t·log p_t − (1 − p_t)).

    log p_t = −softplus(−s·x) is computed without exp overflowing for large |x|. The
    gradient is made in forward, where every term it needs is at hand, and kept.
    """
    def __init__(self, classes, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA):
        self.classes, self.alpha, self.gamma = classes, alpha, gamma

    def forward(self, logits):
        _check_targets("focal_loss", logits, self.classes, None)
        xp = get_array_module(logits)
        classes = xp.asarray(self.classes)
        if classes.size and int(classes.max()) >= logits.shape[2]:
            raise ValueError(f"focal_loss: anchor class {int(classes.max())} does not exist "
                             f"among the {logits.shape[2]} outputs per anchor")
        if classes.size and int(classes.min()) < IGNORED:
            raise ValueError(f"focal_loss: anchor classes must be ≥ {IGNORED} (ignored), "
                             f"{BACKGROUND} (background) or a class index; got "
                             f"{int(classes.min())}")
        target = (classes[..., None] == xp.arange(logits.shape[2])).astype(logits.dtype)
        counted = (classes != IGNORED)[..., None].astype(logits.dtype)
        sign = 2 * target - 1
        z = sign * logits
        log_p_t = -(xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(-z, 0))     # log σ(z)
        p_t = xp.exp(log_p_t)
        one_minus_p_t = 0.5 * (1 - xp.tanh(0.5 * z))              # σ(−z), no cancellation
        alpha_t = self.alpha * target + (1 - self.alpha) * (1 - target)
        modulating = one_minus_p_t ** self.gamma
        normaliser = foreground_normaliser(self.classes)
        terms = -alpha_t * modulating * log_p_t * counted
        gradient = (alpha_t * sign * modulating
                    * (self.gamma * p_t * log_p_t - one_minus_p_t) * counted / normaliser)
        self.save_for_backward(gradient.astype(logits.dtype, copy=False))
        return xp.asarray(terms.sum() / normaliser, dtype=logits.dtype)

    def backward(self, gy):
        (gradient,) = self.saved
        return gradient * gy


class HuberBoxLoss(Function):
    """Huber loss of the box deltas of foreground anchors (EfficientDet's box loss).

    With r = prediction − target for each of the 4 deltas of a foreground anchor,

        h(r) = ½ r²               if |r| ≤ δ          (δ = 0.1)
               δ (|r| − ½ δ)      otherwise

    summed and divided by 4·n_fg. Its gradient is the residual clipped to the band:
    ∂h/∂r = clip(r, −δ, δ) (quadratic inside, constant slope ±δ outside).
    """
    def __init__(self, classes, box_targets, delta=HUBER_DELTA):
        self.classes, self.box_targets, self.delta = classes, box_targets, delta

    def forward(self, predictions):
        _check_targets("box_loss", predictions, self.classes, 4)
        if self.box_targets.shape != predictions.shape:
            raise ValueError(f"box_loss: expected box targets of shape {predictions.shape}, "
                             f"got {self.box_targets.shape}")
        xp = get_array_module(predictions)
        foreground = (xp.asarray(self.classes) >= 0)[..., None]
        residual = xp.where(foreground, predictions - xp.asarray(self.box_targets,
                                                                  dtype=predictions.dtype), 0)
        size = xp.abs(residual)
        delta = self.delta
        terms = xp.where(size <= delta, 0.5 * residual * residual, delta * (size - 0.5 * delta))
        normaliser = 4 * foreground_normaliser(self.classes)
        self.save_for_backward(xp.clip(residual, -delta, delta) / normaliser)
        return xp.asarray(terms.sum() / normaliser, dtype=predictions.dtype)

    def backward(self, gy):
        (clipped_residual,) = self.saved
        return clipped_residual * gy


def focal_loss(class_logits, classes, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA):
    """Sigmoid focal loss of (N, A, C) logits against anchor classes (N, A), over n_fg."""
    return SigmoidFocalLoss(_array(classes), alpha, gamma)(class_logits)


def box_loss(box_regression, classes, box_targets, delta=HUBER_DELTA):
    """Huber loss of (N, A, 4) predicted deltas against ``box_targets``, over 4·n_fg."""
    return HuberBoxLoss(_array(classes), _array(box_targets), delta)(box_regression)


def detection_loss(class_logits, box_regression, classes, box_targets,
                   box_loss_weight=BOX_LOSS_WEIGHT):
    """``(total, class loss, box loss)`` with total = class + box_loss_weight · box."""
    classification = focal_loss(class_logits, classes)
    regression = box_loss(box_regression, classes, box_targets)
    return classification + box_loss_weight * regression, classification, regression


def _array(value):
    """The raw array of targets given as a Tensor, an array or a list."""
    if isinstance(value, Tensor):
        return value.data
    return value if hasattr(value, "shape") else np.asarray(value)


def flatten_level_outputs(level_maps, values_per_anchor):
    """Per-level head maps (N, 9·K, H, W) → one (N, A, K) tensor in anchor order.

    Channel k·K + j of a map holds value j of the cell's anchor k, so moving channels
    last and reshaping lists the anchors row by row, column by column, 9 per cell —
    exactly the order of ``generate_anchors``; levels are then concatenated P3 first.
    """
    from minicnn import functional as F
    flattened = []
    for level_map in level_maps:
        level_map = as_tensor(level_map)
        if level_map.ndim != 4 or level_map.shape[1] % values_per_anchor:
            raise ValueError(f"flatten_level_outputs: expected maps (N, anchors·"
                             f"{values_per_anchor}, H, W), got {level_map.shape}")
        batch = level_map.shape[0]
        flattened.append(F.reshape(F.transpose(level_map, (0, 2, 3, 1)),
                                   (batch, -1, values_per_anchor)))
    return flattened[0] if len(flattened) == 1 else F.concat(flattened, axis=1)
