"""EfficientNetV2's progressive learning (Tan & Le 2021, §4 and Algorithm 1).

Training is cut into M stages. In stage i (0-based) the image size and every
regularisation strength move together, linearly between a minimum and a maximum:

    value_i = value_min + (value_max − value_min) · i / (M − 1)

so the network first sees small, lightly regularised images (fast steps, easy to fit),
and ends on large images with strong regularisation (dropout, RandAugment magnitude,
mixup α) — the paper's argument is that small networks need weak regularisation and large
images need strong regularisation, so the two must grow together. Evaluation runs at the
final size (Table 6 of the paper lists the values for S/M/L; the training size ends about
20% below the evaluation size, e.g. 300 for training and 384 for evaluation of S).

    >>> schedule = ProgressiveSchedule(epochs=8, stages=4, image_size=(128, 300),
    ...                                dropout=(0.1, 0.3), randaugment=(5, 15), mixup=(0, 0))
    >>> schedule.at_epoch(0).image_size, schedule.at_epoch(7).image_size
    (128, 300)
"""
import math


class Stage:
    """The settings of one stage: its epochs [first_epoch, last_epoch] and values."""

    def __init__(self, index, first_epoch, last_epoch, image_size, dropout, randaugment, mixup):
        self.index, self.first_epoch, self.last_epoch = index, first_epoch, last_epoch
        self.image_size, self.dropout = image_size, dropout
        self.randaugment, self.mixup = randaugment, mixup

    def as_dict(self):
        return dict(stage=self.index, epochs=(self.first_epoch, self.last_epoch),
                    image_size=self.image_size, dropout=self.dropout,
                    randaugment=self.randaugment, mixup=self.mixup)

    def __repr__(self):
        return (f"Stage({self.index}: epochs {self.first_epoch}–{self.last_epoch}, "
                f"size {self.image_size}, dropout {self.dropout:.3g}, RandAugment "
                f"{self.randaugment:.3g}, mixup {self.mixup:.3g})")


def _check_range(name, pair, low, high=None):
    try:
        start, end = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(f"progressive learning: {name} must be a (minimum, maximum) pair of "
                         f"numbers, got {pair!r}") from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"progressive learning: {name} must be finite, got {pair!r}")
    if start > end:
        raise ValueError(f"progressive learning: {name} minimum {start:g} is above its "
                         f"maximum {end:g}")
    if start < low or (high is not None and end > high):
        bound = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValueError(f"progressive learning: {name} must lie in {bound}, got {pair!r}")
    return start, end


class ProgressiveSchedule:
    """Image size and regularisation per stage, for ``epochs`` epochs in ``stages`` stages.

    ``image_size`` is a (min, max) pair of pixels; sizes are rounded down to a multiple of
    ``size_multiple`` (rounded down: the network's total stride, 32 for EfficientNetV2, so every stage's
    feature maps tile evenly) and must stay at least ``min_size`` (the smallest input the
    network accepts). ``dropout`` in [0, 1), ``randaugment`` magnitude in [0, 30] and
    ``mixup`` α ≥ 0 (0: no mixup) are (min, max) pairs. Epochs are shared out as evenly as
    possible, earlier stages taking the remainder.
    """

    def __init__(self, epochs, stages, image_size, dropout=(0.0, 0.0), randaugment=(0, 0),
                 mixup=(0.0, 0.0), size_multiple=1, min_size=1):
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
            raise ValueError(f"progressive learning: stages must be an int >= 1, got {stages!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < stages:
            raise ValueError(f"progressive learning: {stages} stages need at least {stages} "
                             f"epochs, got {epochs!r}")
        low, high = _check_range("image_size", image_size, 1)
        self.sizes = (int(low), int(high))
        self.dropout = _check_range("dropout", dropout, 0.0, 0.999)
        self.randaugment = _check_range("randaugment magnitude", randaugment, 0.0, 30.0)
        self.mixup = _check_range("mixup alpha", mixup, 0.0)
        self.epochs, self.stages = epochs, stages
        self.size_multiple, self.min_size = size_multiple, min_size
        smallest = self._size(0)
        if smallest < max(min_size, 1):
            raise ValueError(f"progressive learning: the first stage's image size "
                             f"{smallest} (from {self.sizes[0]}, rounded to a multiple of "
                             f"{size_multiple}) is below the network's minimum {max(min_size, 1)}")

    def _fraction(self, index):
        return index / (self.stages - 1) if self.stages > 1 else 1.0

    def _interpolate(self, pair, index):
        return pair[0] + (pair[1] - pair[0]) * self._fraction(index)

    def _size(self, index):
        size = round(self._interpolate(self.sizes, index))
        return size // self.size_multiple * self.size_multiple

    def stage(self, index):
        if not 0 <= index < self.stages:
            raise IndexError(f"stage {index} of a {self.stages}-stage schedule")
        base, extra = divmod(self.epochs, self.stages)
        first = index * base + min(index, extra)
        last = first + base + (1 if index < extra else 0) - 1
        return Stage(index, first, last, self._size(index),
                     self._interpolate(self.dropout, index),
                     self._interpolate(self.randaugment, index),
                     self._interpolate(self.mixup, index))

    def at_epoch(self, epoch):
        """The stage that epoch ``epoch`` (0-based) belongs to."""
        if not 0 <= epoch < self.epochs:
            raise IndexError(f"epoch {epoch} outside a {self.epochs}-epoch schedule")
        return next(s for s in (self.stage(i) for i in range(self.stages))
                    if s.first_epoch <= epoch <= s.last_epoch)

    def __iter__(self):
        return (self.stage(i) for i in range(self.stages))

    def __repr__(self):
        return "ProgressiveSchedule(\n  " + "\n  ".join(repr(s) for s in self) + "\n)"


# Table 6 of the paper: progressive learning settings of EfficientNetV2 (min, max).
EFFICIENTNET_V2_TABLE6 = {
    "efficientnet_v2_s": dict(image_size=(128, 300), randaugment=(5, 15), mixup=(0, 0),
                              dropout=(0.1, 0.3)),
    "efficientnet_v2_m": dict(image_size=(128, 380), randaugment=(5, 20), mixup=(0, 0.2),
                              dropout=(0.1, 0.4)),
    "efficientnet_v2_l": dict(image_size=(128, 380), randaugment=(5, 25), mixup=(0, 0.4),
                              dropout=(0.1, 0.5)),
}
