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

``ProgressiveLearning`` applies such a schedule during ``minicnn.train.fit`` (a callback).
"""
import math

import numpy as np

from minicnn import nn
from minicnn.backend import get_array_module
from minicnn.callbacks import Callback
from minicnn.data import augment
from minicnn.data.transforms import resize
from minicnn.tensor import Tensor, no_grad


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
        bound = f"lie in [{low:g}, {high:g}]" if high is not None else f"be at least {low:g}"
        raise ValueError(f"progressive learning: {name} must {bound}, got {pair!r}")
    return start, end


class ProgressiveSchedule:
    """Image size and regularisation per stage, for ``epochs`` epochs in ``stages`` stages.

    ``image_size`` is a (min, max) pair of pixels; sizes are rounded down to a multiple of
    ``size_multiple`` (e.g. the network's total stride, 32 for EfficientNetV2, so that
    every stage's feature maps tile evenly) and must stay at least ``min_size`` (the
    smallest input the network accepts). ``dropout`` in [0, 1), ``randaugment`` magnitude in [0, 30] and
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



# ============================================================ the training-loop callback

def size_refused(model, size, in_channels):
    """Why ``model`` cannot take a (1, in_channels, size, size) input, or None if it can.

    One eval-mode forward pass without a graph, so the architecture's own checks (a
    classifier built for one input size, maps pooled down to nothing) give the reason.
    """
    parameter = next(iter(model.parameters()), None)
    xp = get_array_module(parameter.data) if parameter is not None else np
    dtype = parameter.dtype if parameter is not None else np.float32
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with no_grad():
            model(Tensor(xp.zeros((1, in_channels, size, size), dtype=dtype)))
    except (ValueError, IndexError) as error:
        return str(error).splitlines()[0]
    finally:
        for module, mode in modes:
            object.__setattr__(module, "training", mode)
    return None


def _in_channels(model):
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError("progressive learning: expected a model that starts with a Conv2d "
                         "(it resizes images), got one without any")
    return first_conv.in_channels


def _classes(model):
    """The class count: the out_features of the model's last Linear (or 1×1 Conv2d)."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not last:
        raise ValueError("progressive learning: mixup needs the class count, and the model "
                         "has no Linear or Conv2d to read it from")
    return getattr(last[-1], "out_features", None) or last[-1].out_channels


def _pipeline_transforms(loader):
    """Every transform of a loader's pipeline, a Compose opened recursively."""
    pending = [getattr(loader, "transform", None)]
    while pending:
        transform = pending.pop(0)
        if transform is not None:
            yield transform
            pending.extend(getattr(transform, "transforms", ()))


def mixed_soft_targets(images, labels, alpha, classes, rng):
    """mixup with soft targets: x̃ = λ·x + (1 − λ)·x[π] and
    ỹ = λ·onehot(y) + (1 − λ)·onehot(y[π]), λ ~ Beta(α, α) (see ``augment.mixup``)."""
    mixed, labels_a, labels_b, lam = augment.mixup(images, labels, alpha, rng)
    xp = get_array_module(labels)
    eye = xp.eye(classes, dtype=images.dtype)
    return mixed, lam * eye[labels_a] + (1.0 - lam) * eye[labels_b]


class ProgressiveLearning(Callback):
    """EfficientNetV2's progressive learning as a callback of ``minicnn.train.fit``.

    At the start of every epoch it looks up the epoch's stage and sets, together:

    * the image size: every training batch is resized to the stage's size in
      ``on_batch`` (bilinear, anti-aliased when shrinking); the test loader is left
      alone, so evaluation runs at the size it produces: the final size, or above it as
      in the paper (train at 300, evaluate at 384);
    * the rate ``p`` of every ``nn.Dropout`` of the model (the classifier's dropout;
      stochastic depth is not in Table 6 and stays as built);
    * the magnitude of every ``RandAugment`` transform of the training pipeline;
    * mixup's α: with α > 0 each batch is mixed with a shuffled copy of itself and the
      labels become soft targets (N × classes); α = 0 is no mixup (EfficientNetV2-S's
      Table 6 row).

    Everything follows from the epoch number, and mixup draws from a generator derived
    from (seed, epoch, batch): a resumed run is the uninterrupted run, with no state of
    its own to save.

    ``schedule_or_stages`` is a ``ProgressiveSchedule``, or a number of stages with the
    (minimum, maximum) ranges as keywords (``image_size=(128, 300), dropout=...,
    randaugment=..., mixup=...``, ``size_multiple``, ``min_size``): the schedule is then
    spread over the run's epochs. Bad ranges fail here, at construction; before the first
    step, ``on_fit_start`` refuses (one line each) a stage size the network cannot take,
    a schedule of another length than the run, and a dropout or magnitude to set where
    the model has no ``Dropout`` or the pipeline no ``RandAugment``.
    """

    def __init__(self, schedule_or_stages, seed=0, log=None, **ranges):
        if isinstance(schedule_or_stages, ProgressiveSchedule):
            if ranges:
                raise ValueError(f"progressive learning: expected a ProgressiveSchedule or a "
                                 f"number of stages with ranges, got both (a schedule and "
                                 f"{', '.join(sorted(ranges))})")
            self.schedule, self.ranges = schedule_or_stages, None
        else:
            if "image_size" not in ranges:
                raise ValueError("progressive learning: a number of stages needs "
                                 "image_size=(minimum, maximum)")
            stages = schedule_or_stages
            shortest = stages if isinstance(stages, int) else 1
            ProgressiveSchedule(shortest, stages, **ranges)      # refuses bad ranges now
            self.schedule, self.ranges = None, dict(ranges, stages=stages)
        self.seed, self.log = seed, log
        self.stage, self.dropouts, self.randaugments, self.classes = None, [], [], None

    # ------------------------------------------------------------------ before training
    def on_fit_start(self, loop):
        self.prepare(loop.model, loop.train_loader, loop.epochs)
        if self.log is None:
            self.log = getattr(loop, "log", None)

    def prepare(self, model, train_loader, epochs):
        """Check the schedule against the run and find what it sets: ValueError, one line,
        for anything it cannot do. ``on_fit_start`` calls it; a command line may call it
        first, to report a bad setting as the user's error before the run begins."""
        if self.ranges is not None:
            self.schedule = ProgressiveSchedule(epochs, **self.ranges)
        if self.schedule.epochs != epochs:
            raise ValueError(f"progressive learning: expected a schedule of the run's "
                             f"{epochs} epochs, got one of {self.schedule.epochs}")
        in_channels = _in_channels(model)
        for stage in self.schedule:
            reason = size_refused(model, stage.image_size, in_channels)
            if reason is not None:
                raise ValueError(f"progressive learning: stage {stage.index + 1} trains at "
                                 f"{stage.image_size}x{stage.image_size}, which the network "
                                 f"cannot take: {reason}")
        self.dropouts = [m for m in model.modules() if type(m) is nn.Dropout]
        self.randaugments = [t for t in _pipeline_transforms(train_loader)
                             if isinstance(t, augment.RandAugment)]
        high = self.schedule.dropout[1]
        if high > 0 and not self.dropouts:
            raise ValueError(f"progressive learning: dropout rises to {high:g} but the model "
                             f"has no nn.Dropout to set")
        if self.schedule.randaugment[1] > 0 and not self.randaugments:
            raise ValueError("progressive learning: the RandAugment magnitude rises to "
                             f"{self.schedule.randaugment[1]:g} but the training pipeline has "
                             "no RandAugment transform to set (add one before normalising; on the "
                             "command line: --randaugment N,M)")
        self.classes = _classes(model) if self.schedule.mixup[1] > 0 else None

    # ------------------------------------------------------------------ during training
    def on_epoch_start(self, loop, epoch):
        stage = self.schedule.at_epoch(epoch)
        for dropout in self.dropouts:
            dropout.p = stage.dropout
        for transform in self.randaugments:
            transform.magnitude = stage.randaugment
        if self.log is not None and (self.stage is None or self.stage.index != stage.index):
            self.log(f"progressive learning: {stage!r}")
        self.stage = stage

    def on_batch(self, loop, images, labels):
        size = self.stage.image_size
        if images.shape[2:] != (size, size):
            images = resize(images, size)
        if self.stage.mixup > 0:
            rng = np.random.default_rng(np.random.SeedSequence(
                self.seed, spawn_key=(_MIXUP, loop.epoch, loop.batch)))
            images, labels = mixed_soft_targets(images, labels, self.stage.mixup,
                                                self.classes, rng)
        return images, labels

    # No state of its own to save: ``Callback.state_dict`` ({}) is the truth here, since
    # every setting follows from the epoch number and mixup's draws from (epoch, batch).


_MIXUP = 2      # spawn-key tag: the mixup stream, apart from the loader's (0, 1)
