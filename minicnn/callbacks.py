"""Callbacks: what ``minicnn.train.fit`` does besides the training step, in pieces.

``fit`` runs the loop below and calls every callback's hooks at the marked points, in the
order the callbacks were given::

    on_fit_start
    for each epoch:
        on_epoch_start
        for each batch:
            images, labels = on_batch(images, labels)     # may replace them (mixup)
            forward, loss, backward
            after_backward                                # gradients ready (clipping)
            optimizer.step(), schedule.step()
            on_batch_end                                  # after the update (EMA)
        on_train_epoch_end                                # all batches done, or a stop
        before_evaluate, evaluate, after_evaluate         # with a test loader only
        on_epoch_end                                      # the history record is final
    on_fit_end                                            # always, however fit ends

Checkpointing, the progress bar, Ctrl-C, divergence checks and data-parallel averaging are
callbacks too (``minicnn.train``): the loop itself is only the part every run shares.

A callback with state that a resumed run needs (EMA's averages) returns it from
``state_dict``; the training checkpoint keeps it under the callback's ``state_key`` (its
class name unless set) and ``load_state_dict`` gets it back on resume, after
``on_fit_start``.

This module holds the protocol and three techniques from the papers, ready to pass to
``fit(..., callbacks=[...])``: gradient-norm clipping, an exponential moving average of
the weights, and mixup.
"""
import math

import numpy as np

from minicnn.backend import get_array_module


class Callback:
    """fit() calls these in order; each is a no-op unless overridden.

    ``loop`` (a ``minicnn.train.TrainingLoop``) exposes the run: ``model``, ``optimizer``,
    ``schedule``, ``train_loader``, ``test_loader``, ``epochs``, ``epoch``, ``batch``
    (batches done in this epoch), ``steps`` (batches per epoch), ``history``, ``device``,
    ``stop_requested`` (set it to end the run at the next batch boundary, with a
    checkpoint), ``evaluation`` (the test metrics, between ``before_evaluate`` and
    ``on_epoch_end``) and ``log``.
    """

    state_key = None          # the checkpoint's name for this callback's state; None: class name

    def on_fit_start(self, loop): pass

    def on_epoch_start(self, loop, epoch): pass

    def on_batch(self, loop, images, labels):
        """Before the forward pass; may return new arrays. ``labels`` may become soft
        targets, float (N, classes) probabilities (mixup)."""
        return images, labels

    def after_backward(self, loop): pass      # gradients ready, before optimizer.step

    def on_batch_end(self, loop, epoch, batch, loss): pass

    def on_train_epoch_end(self, loop, epoch): pass   # batches done (or a stop), before evaluation

    def before_evaluate(self, loop): pass     # e.g. swap in EMA weights

    def after_evaluate(self, loop): pass

    def on_epoch_end(self, loop, epoch, record): pass   # record: the history dict, editable

    def on_fit_end(self, loop): pass          # also after an exception: release what you took

    def state_dict(self): return {}           # saved in the training checkpoint

    def load_state_dict(self, state): pass    # restored on resume


class GradientClipping(Callback):
    """Scale the gradients so that their global L2 norm is at most ``max_norm`` before
    each update (``optim.clip_grad_norm_``; Inception-v3 clips at 2.0). The largest norm
    seen in an epoch, before clipping, goes into its history record as ``grad_norm_max``:
    a run whose norms keep hitting the limit is one the limit is shaping."""

    def __init__(self, max_norm):
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) \
                or not math.isfinite(max_norm) or max_norm <= 0:
            raise ValueError(f"GradientClipping: max_norm must be a positive number, "
                             f"got {max_norm!r}")
        self.max_norm, self.largest = float(max_norm), 0.0

    def on_epoch_start(self, loop, epoch):
        self.largest = 0.0

    def after_backward(self, loop):
        from minicnn.optim import clip_grad_norm_
        trainable = [p for p in loop.model.parameters() if p.requires_grad]
        self.largest = max(self.largest, clip_grad_norm_(trainable, self.max_norm))

    def on_epoch_end(self, loop, epoch, record):
        record["grad_norm_max"] = self.largest


class ExponentialMovingAverage(Callback):
    """Keep an exponential moving average of the weights (``optim.ema``), updated after
    every step, and evaluate with it: the averaged weights are swapped in for the
    evaluation and the trained ones back after, so training continues from its own
    weights. The averages are part of the checkpoint. EfficientNet(V2) uses decay 0.9999.
    """

    state_key = "ema"

    def __init__(self, decay=0.9999, use_num_updates=False, include_buffers=True):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) \
                or not 0.0 <= decay <= 1.0:
            raise ValueError(f"ExponentialMovingAverage: decay must lie in [0, 1], got {decay!r}")
        self.decay, self.use_num_updates = float(decay), use_num_updates
        self.include_buffers = include_buffers
        self.average, self.swapped_in = None, False

    def on_fit_start(self, loop):
        from minicnn.optim.ema import ExponentialMovingAverage as Average
        self.average = Average(loop.model, self.decay, self.use_num_updates,
                               self.include_buffers)

    def on_batch_end(self, loop, epoch, batch, loss):
        self.average.update()

    def before_evaluate(self, loop):
        self.average.apply_to(loop.model)
        self.swapped_in = True

    def after_evaluate(self, loop):
        self.average.restore()
        self.swapped_in = False

    def on_fit_end(self, loop):
        if self.swapped_in:           # the evaluation failed: give back the trained weights
            self.after_evaluate(loop)

    def state_dict(self):
        return self.average.state_dict() if self.average is not None else {}

    def load_state_dict(self, state):
        if state:
            self.average.load_state_dict(state)


def soft_targets(labels_a, labels_b, lam, num_classes, dtype=np.float32):
    """λ·onehot(a) + (1 − λ)·onehot(b): mixup's target distribution, (N, classes)."""
    xp = get_array_module(labels_a)
    targets = xp.zeros((len(labels_a), num_classes), dtype=dtype)
    rows = xp.arange(len(labels_a))
    targets[rows, labels_a] += lam
    targets[rows, labels_b] += 1.0 - lam
    return targets


class Mixup(Callback):
    """Train on mixed batches (Zhang et al. 2018; ``data.augment.mixup``): each batch is
    blended with a shuffled copy of itself, ``x̃ = λ·x + (1 − λ)·x[π]``, λ ~ Beta(α, α),
    and learns the blended target ``λ·onehot(y) + (1 − λ)·onehot(y[π])`` as soft targets
    (``train.compute_loss`` takes them). Evaluation sees clean images.

    λ and π are drawn from a generator seeded by (``seed``, epoch, batch), like the
    loaders' augmentation, so a resumed run mixes exactly as an uninterrupted one.
    ``alpha`` may be changed between epochs (progressive learning raises it).
    """

    def __init__(self, alpha, num_classes, seed=0):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"Mixup: alpha must be a positive number, got {alpha!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"Mixup: num_classes must be an integer of at least 2, "
                             f"got {num_classes!r}")
        self.alpha, self.num_classes, self.seed = float(alpha), num_classes, seed

    def on_batch(self, loop, images, labels):
        from minicnn.data.augment import mixup
        rng = np.random.default_rng(np.random.SeedSequence(self.seed,
                                                           spawn_key=(loop.epoch, loop.batch)))
        mixed, labels_a, labels_b, lam = mixup(images, labels, self.alpha, rng)
        return mixed, soft_targets(labels_a, labels_b, lam, self.num_classes, images.dtype)
