"""Exponential moving average of a model's weights (Polyak averaging).

Evaluating with averaged weights smooths out the noise of the last SGD steps; Inception-v3,
MobileNet and EfficientNet report their accuracy this way (decay 0.9999).
"""
import contextlib
from collections import OrderedDict

from minicnn.backend import device_of, to_device


class ExponentialMovingAverage:
    """Keep ``shadow ← decay · shadow + (1 − decay) · θ`` for every weight θ of ``model``.

    Call ``update()`` after each ``optimizer.step()``. To evaluate with the averages::

        with ema.averaged():          # swaps the averages in, and the weights back after
            evaluate(model)

    or ``ema.apply_to(model)`` ... ``ema.restore()``. Floating-point buffers (batch-norm
    running statistics) are averaged too when ``include_buffers`` (as TensorFlow's
    EfficientNet does). ``use_num_updates=True`` uses TensorFlow's warm-up,
    ``decay_t = min(decay, (1 + t) / (10 + t))`` at update t, so that early averages are
    not dominated by the random initialisation.
    """

    def __init__(self, model, decay=0.9999, use_num_updates=False, include_buffers=True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ExponentialMovingAverage: decay must lie in [0, 1], got {decay}")
        self.model, self.decay = model, decay
        self.use_num_updates, self.include_buffers = use_num_updates, include_buffers
        self.num_updates = 0
        self.shadow = OrderedDict((name, value.copy()) for name, value in self._tracked(model))
        self._backup = None

    def _tracked(self, model):
        """(name, array) of what is averaged, looked up afresh (arrays may be replaced)."""
        for name, p in model.named_parameters():
            yield name, p.data
        if self.include_buffers:
            for name, b in model.named_buffers():
                if b is not None and b.dtype.kind == "f":
                    yield name, b

    def current_decay(self):
        if self.use_num_updates:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    def update(self):
        """Fold the model's current weights into the averages (in place)."""
        self.num_updates += 1
        keep = 1.0 - self.current_decay()
        for name, value in self._tracked(self.model):
            shadow = self.shadow[name]
            if device_of(shadow) != device_of(value):     # the model moved to another device
                shadow = self.shadow[name] = to_device(shadow, device_of(value))
            shadow -= keep * (shadow - value)             # = decay·shadow + (1 − decay)·value

    def apply_to(self, model=None):
        """Copy the averages into ``model``'s weights (default: the tracked model)."""
        if self._backup is not None:
            raise RuntimeError("ExponentialMovingAverage.apply_to: averages are already "
                               "applied; call restore() first")
        model = self.model if model is None else model
        self._backup = (model, OrderedDict())
        for name, value in self._tracked(model):
            self._backup[1][name] = value.copy()
            value[...] = to_device(self.shadow[name], device_of(value))

    def restore(self):
        """Put back the weights that ``apply_to`` replaced."""
        if self._backup is None:
            raise RuntimeError("ExponentialMovingAverage.restore: nothing to restore "
                               "(apply_to was not called)")
        model, saved = self._backup
        for name, value in self._tracked(model):
            value[...] = saved[name]
        self._backup = None

    @contextlib.contextmanager
    def averaged(self, model=None):
        """``with ema.averaged(): ...`` runs the block with the averaged weights."""
        self.apply_to(model)
        try:
            yield
        finally:
            self.restore()

    def state_dict(self):
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": OrderedDict((k, to_device(v, "cpu").copy())
                                      for k, v in self.shadow.items())}

    def load_state_dict(self, state):
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        unexpected = sorted(set(state["shadow"]) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(f"ExponentialMovingAverage.load_state_dict: missing {missing}, "
                             f"unexpected {unexpected}")
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        for name, value in state["shadow"].items():
            old = self.shadow[name]
            if tuple(value.shape) != tuple(old.shape):
                raise ValueError(f"ExponentialMovingAverage.load_state_dict: {name} has "
                                 f"shape {tuple(value.shape)}, expected {tuple(old.shape)}")
            self.shadow[name] = to_device(value, device_of(old)).astype(old.dtype, copy=True)
