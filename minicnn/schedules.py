"""Learning-rate schedules from a short text spec: the grammar and its help, in one place.

    make_schedule("warmup:5+decay:2.4:0.97", optimizer, epochs=350, steps_per_epoch=1250)

``SCHEDULE_HELP`` is the grammar in words; the command line shows it under ``--help``
(this module imports nothing heavy until a schedule is built, so ``--help`` stays fast).
"""
import math


SCHEDULE_HELP = (
    "constant (fixed); cosine (half a cosine down to 0 over the run); step:N[:G] (×G, "
    "default 0.1, every N epochs); multistep:A,B,...[:G] (×G at epochs A, B, ...); "
    "exponential:G (×G per epoch); decay:E:G (×G every E epochs, EfficientNet's "
    "decay:2.4:0.97); warmup:W+S (linear warm-up over W epochs, then schedule S)")


def _schedule_number(text, role):
    """A number of a schedule spec: ``role`` "epochs" (a finite time > 0) or "factor" (a
    multiplier in (0, 1]: a schedule that grows the rate without end is a typo)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if role == "factor" and not 0 < value <= 1:
        raise ValueError(f"the factor must lie in (0, 1], got {text}")
    if role == "epochs" and not (math.isfinite(value) and value > 0):
        raise ValueError(f"a number of epochs must be finite and positive, got {text}")
    return value


def make_schedule(spec, optimizer, epochs, steps_per_epoch):
    """A learning-rate schedule from a short spec (see ``SCHEDULE_HELP``), or None.

    Every schedule is stepped after each iteration (``steps_per_epoch`` steps make an
    epoch): smooth ones then change smoothly, staircase ones still change at exactly the
    epoch (or fraction of an epoch) they name. Every number is checked: periods finite and
    positive, factors in (0, 1].
    """
    from minicnn import optim
    spec = (spec or "constant").strip()
    epochs_of, factor = (lambda text: _schedule_number(text, "epochs"),
                         lambda text: _schedule_number(text, "factor"))
    try:
        if spec.startswith("warmup:"):
            warmup, _, rest = spec[len("warmup:"):].partition("+")
            if rest.startswith("warmup:"):
                raise ValueError("one warm-up is enough")
            inner = make_schedule(rest or "constant", optimizer, epochs, steps_per_epoch)
            if inner is None:
                inner = optim.StepLR(optimizer, step_size=10 ** 9, gamma=1.0,
                                     steps_per_epoch=steps_per_epoch)
            return optim.LinearWarmup(inner, warmup_epochs=epochs_of(warmup))
        name, _, arguments = spec.partition(":")
        values = arguments.split(":") if arguments else []
        if name == "constant" and not values:
            return None
        if name == "cosine" and not values:
            return optim.CosineAnnealingLR(optimizer, T_max=epochs, steps_per_epoch=steps_per_epoch)
        if name == "step" and 1 <= len(values) <= 2:
            gamma = factor(values[1]) if len(values) > 1 else 0.1
            return optim.StepLR(optimizer, step_size=epochs_of(values[0]), gamma=gamma,
                                steps_per_epoch=steps_per_epoch)
        if name == "multistep" and 1 <= len(values) <= 2:
            gamma = factor(values[1]) if len(values) > 1 else 0.1
            milestones = [epochs_of(m) for m in values[0].split(",")]
            return optim.MultiStepLR(optimizer, milestones, gamma=gamma,
                                     steps_per_epoch=steps_per_epoch)
        if name == "exponential" and len(values) == 1:
            return optim.ExponentialLR(optimizer, gamma=factor(values[0]),
                                       steps_per_epoch=steps_per_epoch)
        if name == "decay" and len(values) == 2:
            return optim.DecayEveryNEpochs(optimizer, every=epochs_of(values[0]),
                                           decay=factor(values[1]), steps_per_epoch=steps_per_epoch)
    except ValueError as error:
        message = str(error)
        if message.startswith("schedule "):      # a nested warm-up's schedule said it
            raise
        raise ValueError(f"schedule {spec!r}: {message}") from None
    raise ValueError(f"unknown schedule {spec!r}; use one of: {SCHEDULE_HELP}")
