"""fit's callbacks: the hooks fire in the documented order, the ready-made ones (clipping,
EMA, mixup) change training as they claim and resume exactly, soft targets are a real
cross-entropy, and the generator registry keeps the names old checkpoints use."""
import signal

import numpy as np
import pytest

from minicnn import functional as F
from minicnn.callbacks import (Callback, ExponentialMovingAverage, GradientClipping, Mixup,
                               soft_targets)
from minicnn.random import generators, register_generator
from minicnn.tensor import Tensor
from minicnn.train import (TrainingInterrupted, compute_loss, evaluate, fit,
                           load_training_checkpoint, soft_cross_entropy)
from tests.test_train import assert_same_weights, setup, without_times

QUIET = {"progress": False, "log": lambda line: None}


class Recorder(Callback):
    """Writes down the name of every hook fit calls."""
    HOOKS = ("on_fit_start", "on_epoch_start", "after_backward", "on_batch_end",
             "on_train_epoch_end", "before_evaluate", "after_evaluate", "on_epoch_end",
             "on_fit_end")

    def __init__(self):
        self.calls = []

    def on_batch(self, loop, images, labels):
        self.calls.append("on_batch")
        return images, labels


for _hook in Recorder.HOOKS:
    setattr(Recorder, _hook,
            lambda self, loop, *arguments, hook=_hook: self.calls.append(hook))


def test_hooks_fire_in_the_documented_order():
    model, optimizer, schedule, train_loader, test_loader = setup()
    recorder = Recorder()
    fit(model, optimizer, train_loader, test_loader, 1, schedule=schedule,
        callbacks=[recorder], **QUIET)
    steps = len(train_loader)
    batch = ["on_batch", "after_backward", "on_batch_end"]
    assert recorder.calls == (["on_fit_start", "on_epoch_start"] + batch * steps
                              + ["on_train_epoch_end", "before_evaluate", "after_evaluate",
                                 "on_epoch_end", "on_fit_end"])


def test_a_callback_can_stop_the_run_with_a_checkpoint(tmp_path):
    class StopAtBatchTwo(Callback):
        def on_batch_end(self, loop, epoch, batch, loss):
            if (epoch, batch) == (0, 2):
                loop.request_stop()
    model, optimizer, schedule, train_loader, test_loader = setup()
    with pytest.raises(TrainingInterrupted, match="epoch 1, batch 2; checkpoint saved"):
        fit(model, optimizer, train_loader, test_loader, 3, schedule=schedule,
            checkpoint=tmp_path / "c.npz", callbacks=[StopAtBatchTwo()], **QUIET)
    progress = load_training_checkpoint(tmp_path / "c.npz")["progress"]
    assert (progress["epoch"], progress["batch"]) == (0, 2)


def test_on_fit_end_runs_after_an_exception(terminal_sigint):
    class Boom(Callback):
        def on_batch_end(self, loop, epoch, batch, loss):
            raise RuntimeError("boom")
    recorder = Recorder()
    model, optimizer, _, train_loader, _ = setup()
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, optimizer, train_loader, None, 1, callbacks=[recorder, Boom()], **QUIET)
    assert recorder.calls[-1] == "on_fit_end"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ----------------------------------------------------------------------------- soft targets

def test_soft_cross_entropy_of_one_hot_targets_is_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    one_hot = np.eye(4)[labels]
    for smoothing in (0.0, 0.1):
        z1, z2 = Tensor(logits, requires_grad=True), Tensor(logits, requires_grad=True)
        hard = F.cross_entropy(z1, labels, label_smoothing=smoothing)
        soft = soft_cross_entropy(z2, one_hot, label_smoothing=smoothing)
        np.testing.assert_allclose(soft.item(), hard.item(), rtol=1e-12)
        hard.backward(), soft.backward()
        np.testing.assert_allclose(z2.grad, z1.grad, rtol=1e-10, atol=1e-14)


def test_soft_targets_mix_the_losses_linearly():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 3))
    a, b, lam = rng.integers(0, 3, 5), rng.integers(0, 3, 5), 0.3
    mixed = soft_targets(a, b, lam, 3, np.float64)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0)
    expected = lam * F.cross_entropy(Tensor(logits), a).item() \
        + (1 - lam) * F.cross_entropy(Tensor(logits), b).item()
    loss, _ = compute_loss(Tensor(logits), mixed)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-12)


def test_soft_targets_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"soft targets of shape \(5, 4\).*\(5, 3\)"):
        compute_loss(Tensor(np.zeros((5, 3))), np.full((5, 4), 0.25))


# ----------------------------------------------------------------------------- ready-made

def test_gradient_clipping_changes_training_and_records_the_norm():
    def run(callbacks):
        model, optimizer, schedule, train_loader, _ = setup()
        history = fit(model, optimizer, train_loader, None, 1, schedule=schedule,
                      callbacks=callbacks, **QUIET)
        return model, history
    plain, _ = run([])
    clipped, history = run([GradientClipping(0.01)])
    assert history[0]["grad_norm_max"] > 0.01          # the limit did bite
    difference = max(np.abs(a.data - b.data).max()
                     for a, b in zip(plain.parameters(), clipped.parameters()))
    assert difference > 1e-3
    with pytest.raises(ValueError, match="max_norm must be a positive number, got 0"):
        GradientClipping(0)


def test_ema_evaluates_with_the_averaged_weights_and_trains_on_its_own():
    model, optimizer, schedule, train_loader, test_loader = setup(epochs=1)
    ema = ExponentialMovingAverage(decay=0.5)
    history = fit(model, optimizer, train_loader, test_loader, 1, schedule=schedule,
                  callbacks=[ema], **QUIET)
    trained = evaluate(model, test_loader)
    with ema.average.averaged():
        averaged = evaluate(model, test_loader)
    assert history[0]["test_loss"] == pytest.approx(averaged["loss"], rel=1e-12)
    assert history[0]["test_loss"] != pytest.approx(trained["loss"], rel=1e-6)


def test_ema_and_mixup_resume_bit_for_bit(tmp_path):
    def callbacks():
        return [ExponentialMovingAverage(decay=0.9), Mixup(0.4, num_classes=3, seed=3)]
    model, optimizer, schedule, train_loader, test_loader = setup()
    straight_callbacks = callbacks()
    history = fit(model, optimizer, train_loader, test_loader, 2, schedule=schedule,
                  callbacks=straight_callbacks, **QUIET)

    def stop(epoch, batch, loss):
        if (epoch, batch) == (1, 2):
            signal.raise_signal(signal.SIGINT)
    path = tmp_path / "mixed.npz"
    again, optimizer, schedule, train_loader, test_loader = setup()
    with pytest.raises(TrainingInterrupted):
        fit(again, optimizer, train_loader, test_loader, 2, schedule=schedule, checkpoint=path,
            callbacks=callbacks(), on_batch_end=stop, **QUIET)
    assert "ema" in load_training_checkpoint(path)["progress"]["callbacks"]
    resumed_model, optimizer, schedule, train_loader, test_loader = setup(model_seed=5)
    resumed_callbacks = callbacks()
    resumed = fit(resumed_model, optimizer, train_loader, test_loader, 2, schedule=schedule,
                  resume=path, callbacks=resumed_callbacks, **QUIET)
    assert_same_weights(resumed_model, model)
    assert without_times(resumed) == without_times(history)
    for name, value in straight_callbacks[0].average.shadow.items():
        np.testing.assert_array_equal(resumed_callbacks[0].average.shadow[name], value)


def test_mixup_changes_training_and_is_deterministic_by_seed():
    def run(seed):
        model, optimizer, schedule, train_loader, _ = setup()
        return fit(model, optimizer, train_loader, None, 1, schedule=schedule,
                   callbacks=[Mixup(1.0, num_classes=3, seed=seed)], **QUIET)[0]
    model, optimizer, schedule, train_loader, _ = setup()
    plain = fit(model, optimizer, train_loader, None, 1, schedule=schedule, **QUIET)[0]
    first, again, other = run(0), run(0), run(1)
    assert first["train_loss"] == again["train_loss"]
    assert first["train_loss"] != other["train_loss"] != plain["train_loss"]
    with pytest.raises(ValueError, match="alpha must be a positive number, got 0"):
        Mixup(0, num_classes=3)


# ----------------------------------------------------------------------------- generators

def test_the_registry_keeps_the_names_old_checkpoints_use():
    import importlib
    dropout = importlib.import_module("minicnn.functional.dropout")   # F.dropout hides it
    init = importlib.import_module("minicnn.nn.init")
    found = generators()
    assert found["module:minicnn.functional.dropout._generator"] is dropout._generator
    assert found["module:minicnn.nn.init._default_rng"] is init._default_rng
    dropout.manual_seed(7)                      # a new generator: the registry follows it
    assert generators()["module:minicnn.functional.dropout._generator"] is dropout._generator


def test_register_generator_refuses_what_is_not_a_generator():
    with pytest.raises(TypeError, match="needs a numpy.random.Generator.*got int"):
        register_generator("test:bad", 3)


def test_an_old_checkpoint_resumes(tmp_path):
    """A checkpoint written before the callbacks existed (no 'callbacks' in its progress)
    resumes as before."""
    model, optimizer, schedule, train_loader, test_loader = setup()
    path = tmp_path / "old.npz"
    fit(model, optimizer, train_loader, test_loader, 1, schedule=schedule, checkpoint=path,
        **QUIET)
    state = load_training_checkpoint(path)
    assert "callbacks" not in state["progress"]
    assert set(state["random"]) >= {"module:minicnn.functional.dropout._generator",
                                    "module:minicnn.nn.init._default_rng", "numpy.random"}
    model, optimizer, schedule, train_loader, test_loader = setup()
    history = fit(model, optimizer, train_loader, test_loader, 2, schedule=schedule,
                  resume=state, callbacks=[ExponentialMovingAverage(0.9)], **QUIET)
    assert [r["epoch"] for r in history] == [1, 2]

