"""Learning-rate schedules: the learning rate as a function of the (fractional) epoch.

Every schedule here is a closed-form ``lr_at(base_lr, epoch)``, so its value at any epoch
can be read off without replaying history, and resuming from a checkpoint is exact. The
schedule object counts calls to ``step()`` and writes the result into every parameter
group's ``lr``::

    schedule = CosineAnnealingLR(optimizer, T_max=90)
    for epoch in range(90):
        train_one_epoch(...)          # optimizer.step() inside
        schedule.step()               # now at epoch + 1

Schedules that change within an epoch (EfficientNet's 0.97 every 2.4 epochs, warm-up)
take ``steps_per_epoch`` and are stepped after every iteration: after ``k`` calls the
epoch is ``k / steps_per_epoch``, a fraction. ``base_lr`` is each group's learning rate
when the first schedule was attached (kept in the group as ``"initial_lr"``).
"""
import abc
import bisect
import math

# Staircase schedules take floor(epoch / period). Epochs are step / steps_per_epoch, so
# e.g. 24 / 10 / 2.4 may land at 0.9999999999999998 in floating point; this nudge puts
# such values on the step they mean, without moving any genuine fraction.
_STAIRCASE_NUDGE = 1e-9


def _stairs(epoch, period):
    return math.floor(epoch / period + _STAIRCASE_NUDGE)


class LRSchedule(abc.ABC):
    """Base class: subclasses define ``lr_at(base_lr, epoch)``."""

    def __init__(self, optimizer, steps_per_epoch=1):
        if not (isinstance(steps_per_epoch, int) and steps_per_epoch >= 1):
            raise ValueError(f"{type(self).__name__}: steps_per_epoch must be a positive "
                             f"integer, got {steps_per_epoch!r}")
        self.optimizer = optimizer
        self.steps_per_epoch = steps_per_epoch
        self.base_lrs = [group.setdefault("initial_lr", group["lr"])
                         for group in optimizer.param_groups]
        self.step_count = 0
        self._apply()

    @property
    def epoch(self):
        """Epochs completed so far: a float when stepping per iteration."""
        return self.step_count / self.steps_per_epoch

    @abc.abstractmethod
    def lr_at(self, base_lr, epoch):
        """The learning rate at ``epoch`` (a float) for a group whose base rate is ``base_lr``."""

    def get_lr(self):
        """The learning rate of each parameter group at the current epoch."""
        return [float(self.lr_at(base, self.epoch)) for base in self.base_lrs]

    def step(self):
        """Advance by one step (one epoch, or one iteration with ``steps_per_epoch``)."""
        self.step_count += 1
        self._apply()

    def _apply(self):
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def state_dict(self):
        return {"step_count": self.step_count, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        self.step_count = int(state["step_count"])
        self.base_lrs = [float(b) for b in state["base_lrs"]]
        self._apply()


class StepLR(LRSchedule):
    """lr = base · γ^⌊epoch / step_size⌋   (AlexNet, VGG, ResNet: ÷10 every 30 epochs)."""

    def __init__(self, optimizer, step_size, gamma=0.1, steps_per_epoch=1):
        if step_size <= 0:
            raise ValueError(f"StepLR: step_size must be positive, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** _stairs(epoch, self.step_size)


class MultiStepLR(LRSchedule):
    """lr = base · γ^(number of milestones ≤ epoch)   (e.g. ÷10 at epochs 30, 60, 80)."""

    def __init__(self, optimizer, milestones, gamma=0.1, steps_per_epoch=1):
        milestones = list(milestones)
        if milestones != sorted(milestones):
            raise ValueError(f"MultiStepLR: milestones must be increasing, got {milestones}")
        self.milestones, self.gamma = milestones, gamma
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, base_lr, epoch):
        passed = bisect.bisect_right(self.milestones, epoch + _STAIRCASE_NUDGE)
        return base_lr * self.gamma ** passed


class ExponentialLR(LRSchedule):
    """lr = base · γ^epoch   (smooth; fractional epochs interpolate geometrically)."""

    def __init__(self, optimizer, gamma, steps_per_epoch=1):
        self.gamma = gamma
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRSchedule):
    """lr = η_min + (base − η_min) · (1 + cos(π · epoch / T_max)) / 2, then η_min.

    Half a cosine from ``base`` down to ``eta_min`` over ``T_max`` epochs (Loshchilov &
    Hutter 2017, without restarts); it stays at ``eta_min`` after ``T_max``.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, steps_per_epoch=1):
        if T_max <= 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, base_lr, epoch):
        progress = min(epoch, self.T_max) / self.T_max
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2


class DecayEveryNEpochs(LRSchedule):
    """lr = base · decay^⌊epoch / every⌋   (``staircase=False``: decay^(epoch / every)).

    EfficientNet (Tan & Le 2019, §5.2): ``decay=0.97, every=2.4``, stepped every
    iteration with ``steps_per_epoch`` = dataset size / batch size, so the learning rate
    drops in the middle of epochs 2, 4, 7, 9, ... exactly as TensorFlow's
    ``exponential_decay(staircase=True)`` with ``decay_steps = 2.4 · steps_per_epoch``.
    """

    def __init__(self, optimizer, every, decay=0.97, staircase=True, steps_per_epoch=1):
        if every <= 0:
            raise ValueError(f"DecayEveryNEpochs: every must be positive, got {every}")
        self.every, self.decay, self.staircase = every, decay, staircase
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, base_lr, epoch):
        periods = _stairs(epoch, self.every) if self.staircase else epoch / self.every
        return base_lr * self.decay ** periods


class LinearWarmup(LRSchedule):
    """Ramp linearly up to the base rate over ``warmup_epochs``, then follow ``schedule``.

        lr = base · (start_factor + (1 − start_factor) · epoch / warmup_epochs)   while
             epoch < warmup_epochs,
        lr = schedule.lr_at(base, epoch)                                         afterwards.

    Large-batch training (Goyal et al. 2017) and EfficientNet warm up this way; the
    wrapped schedule is evaluated at the absolute epoch, as theirs is. Build the wrapped
    schedule on the same optimizer first; this one takes its ``steps_per_epoch`` and
    drives the learning rate from then on (step only the warm-up object).
    """

    def __init__(self, schedule, warmup_epochs, start_factor=0.0):
        if warmup_epochs <= 0:
            raise ValueError(f"LinearWarmup: warmup_epochs must be positive, got "
                             f"{warmup_epochs}")
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"LinearWarmup: start_factor must lie in [0, 1], got "
                             f"{start_factor}")
        self.schedule = schedule
        self.warmup_epochs, self.start_factor = warmup_epochs, start_factor
        super().__init__(schedule.optimizer, schedule.steps_per_epoch)

    def lr_at(self, base_lr, epoch):
        if epoch < self.warmup_epochs:
            fraction = epoch / self.warmup_epochs
            return base_lr * (self.start_factor + (1 - self.start_factor) * fraction)
        return self.schedule.lr_at(base_lr, epoch)
