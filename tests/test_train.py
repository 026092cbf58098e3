"""The training loop: it learns, it evaluates exactly, and it loses nothing.

The headline test interrupts a run with a real SIGINT (what Ctrl-C sends) in the middle
of an epoch, resumes it in a fresh model, and demands the very same weights, bit for bit,
as a run that was never interrupted — with dropout, augmentation, Adam and a per-iteration
cosine schedule all drawing on their state.
"""
import csv
import json
import math
import signal

import numpy as np
import pytest

from minicnn import functional as F, nn, optim
from minicnn.data import ArrayDataset, DataLoader, transforms
from minicnn.tensor import Tensor
from minicnn.train import (TrainingDiverged, TrainingInterrupted, compute_loss, evaluate, fit,
                           history_paths, load_training_checkpoint, make_optimizer,
                           make_schedule, random_state, set_random_state)


def toy_datasets(seed=0, train=96, test=48):
    """Three classes of 8×8 images: a bright square in a class-specific corner, plus noise."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 3, n)
        images = rng.integers(0, 60, (n, 1, 8, 8))
        for i, label in enumerate(labels):
            y, x = [(0, 0), (0, 4), (4, 2)][label]
            images[i, 0, y:y + 4, x:x + 4] += 150
        return ArrayDataset(images.astype(np.uint8), labels, ("a", "b", "c"))
    return make(train), make(test)


def tiny_model(seed=0, dropout=0.2):
    nn.init.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dropout(dropout), nn.Linear(4 * 3 * 3, 3))


def loaders(augment="translate", seed=0, prefetch=0):
    train, test = toy_datasets()
    mean, std = train.channel_statistics()
    train_loader = DataLoader(train, batch_size=16, shuffle=True, drop_last=True, seed=seed,
                              transform=transforms.pipeline(8, 1, 8, 1, mean, std, augment),
                              prefetch=prefetch)
    test_loader = DataLoader(test, batch_size=32,
                             transform=transforms.pipeline(8, 1, 8, 1, mean, std))
    return train_loader, test_loader


def setup(model_seed=0, epochs=3):
    """A fresh model, optimizer, schedule and loaders, all from seeds."""
    import importlib
    importlib.import_module("minicnn.functional.dropout").manual_seed(123)
    model = tiny_model(model_seed)
    train_loader, test_loader = loaders()
    optimizer = optim.Adam(model.parameters(), lr=0.02)
    schedule = make_schedule("cosine", optimizer, epochs, len(train_loader))
    return model, optimizer, schedule, train_loader, test_loader


def without_times(history):
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in history]


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def uninterrupted(tmp_path, epochs=3):
    model, optimizer, schedule, train_loader, test_loader = setup(epochs=epochs)
    history = fit(model, optimizer, train_loader, test_loader, epochs, schedule=schedule,
                  checkpoint=tmp_path / "straight.npz", progress=False, log=lambda line: None)
    return model, history


# ----------------------------------------------------------------------------- learning

def test_fit_learns_and_reports(tmp_path):
    lines = []
    model, optimizer, schedule, train_loader, test_loader = setup()
    history = fit(model, optimizer, train_loader, test_loader, 3, schedule=schedule,
                  progress=False, log=lines.append)
    assert len(history) == 3 and len(lines) == 3
    assert history[-1]["test_accuracy"] >= 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert lines[0].startswith("epoch 1/3  train loss") and "test loss" in lines[0]
    assert "img/s" in lines[-1]
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)    # the cosine reached 0
    assert model.training


def test_progress_bar_reports_running_metrics(tmp_path, capsys):
    model, optimizer, _, train_loader, _ = setup()
    fit(model, optimizer, train_loader, None, 1, progress=True, log=lambda line: None)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "img/s" in err and "acc" in err


def test_evaluate_matches_a_direct_computation():
    model = tiny_model(dropout=0.5)
    _, test_loader = loaders()
    result = evaluate(model, test_loader)
    assert model.training                                       # the mode is restored
    images = np.concatenate([x for x, _ in test_loader.batches(0)])
    labels = np.concatenate([y for _, y in test_loader.batches(0)])
    model.eval()
    logits = model(Tensor(images)).data                         # dropout off
    model.train()
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert result["loss"] == pytest.approx(-log_p[np.arange(len(labels)), labels].mean(),
                                           rel=1e-5)
    assert result["accuracy"] == pytest.approx((logits.argmax(axis=1) == labels).mean())
    assert result["top5"] == 1.0                                # only three classes


def test_auxiliary_outputs_are_weighted():
    logits = Tensor(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
    aux = Tensor(np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32))
    labels = np.array([0, 1, 2, 1])
    loss, main = compute_loss((logits, aux), labels, aux_weight=0.3)
    expected = F.cross_entropy(logits, labels).item() + 0.3 * F.cross_entropy(aux, labels).item()
    assert main is logits and loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_non_finite_loss_stops_with_advice():
    model, optimizer, _, train_loader, _ = setup()
    model[0].weight.data[...] = np.nan
    with pytest.raises(FloatingPointError, match="lower --lr"):
        fit(model, optimizer, train_loader, None, 1, progress=False, log=lambda line: None)


# ----------------------------------------------------------------------------- nothing lost

def test_resume_after_ctrl_c_is_bit_for_bit(tmp_path, terminal_sigint):
    straight, history = uninterrupted(tmp_path)

    model, optimizer, schedule, train_loader, test_loader = setup()

    def press_ctrl_c(epoch, batch, loss):
        if (epoch, batch) == (1, 2):
            signal.raise_signal(signal.SIGINT)                  # what the terminal sends
    path = tmp_path / "interrupted.npz"
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(model, optimizer, train_loader, test_loader, 3, schedule=schedule, checkpoint=path,
            progress=False, log=lambda line: None, on_batch_end=press_ctrl_c)
    assert (stopped.value.epoch, stopped.value.batch) == (1, 2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored
    progress = load_training_checkpoint(path)["progress"]
    assert (progress["epoch"], progress["batch"]) == (1, 2) and len(progress["history"]) == 1

    # A new process would start from scratch: other initial weights, other generators.
    model, optimizer, schedule, train_loader, test_loader = setup(model_seed=99)
    np.random.default_rng(5).random(10)
    resumed = fit(model, optimizer, train_loader, test_loader, 3, schedule=schedule,
                  checkpoint=path, resume=path, progress=False, log=lambda line: None)
    assert_same_weights(model, straight)
    assert without_times(resumed) == without_times(history)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_resume_at_an_epoch_boundary_matches(tmp_path):
    straight, history = uninterrupted(tmp_path)
    model, optimizer, schedule, train_loader, test_loader = setup()
    path = tmp_path / "part.npz"
    fit(model, optimizer, train_loader, test_loader, 1, schedule=schedule, checkpoint=path,
        progress=False, log=lambda line: None)
    # the schedule spans the full run, as the CLI builds it from --epochs
    model, optimizer, schedule, train_loader, test_loader = setup(model_seed=7)
    resumed = fit(model, optimizer, train_loader, test_loader, 3, schedule=schedule,
                  resume=path, progress=False, log=lambda line: None)
    assert_same_weights(model, straight)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]


def test_second_ctrl_c_quits_at_once(tmp_path, terminal_sigint):
    model, optimizer, _, train_loader, _ = setup()

    def press_twice(epoch, batch, loss):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        fit(model, optimizer, train_loader, None, 1, checkpoint=tmp_path / "x.npz",
            progress=False, log=lambda line: None, on_batch_end=press_twice)
    assert not (tmp_path / "x.npz").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_checkpoint_and_history_files(tmp_path):
    model, optimizer, schedule, train_loader, test_loader = setup()
    path = tmp_path / "runs" / "toy.npz"
    meta = {"architecture": "toy", "classes": ["a", "b", "c"]}
    history = fit(model, optimizer, train_loader, test_loader, 2, schedule=schedule,
                  checkpoint=path, metadata=meta, progress=False, log=lambda line: None)
    state = load_training_checkpoint(path)
    assert state["meta"] == meta
    assert (state["progress"]["epoch"], state["progress"]["batch"]) == (2, 0)
    assert state["schedule"]["step_count"] == 2 * len(train_loader)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(state["model"][key], value)
    assert any("dropout" in name for name in state["random"])   # dropout's generator saved
    csv_path, json_path = history_paths(path)
    assert json.loads(open(json_path).read()) == history
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 2 and float(rows[1]["test_accuracy"]) == history[1]["test_accuracy"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "toy.history.csv", "toy.history.json", "toy.npz"]        # no temporary files left


def test_a_foreign_checkpoint_is_refused(tmp_path):
    optim.save_checkpoint(tmp_path / "other.npz", model={"w": np.zeros(3)})
    with pytest.raises(ValueError, match="not a minicnn training checkpoint"):
        load_training_checkpoint(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="corrupt"):
        load_training_checkpoint(tmp_path / "junk.npz")


def test_random_state_round_trip():
    import importlib
    dropout_module = importlib.import_module("minicnn.functional.dropout")
    model = tiny_model()
    model[4].rng = np.random.default_rng(1)
    state = random_state(model)
    first = (model[4].rng.random(3), dropout_module._generator.random(3), np.random.random(3))
    set_random_state(model, state)
    again = (model[4].rng.random(3), dropout_module._generator.random(3), np.random.random(3))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- recipes

@pytest.mark.parametrize("name, kind", [("sgd", optim.SGD), ("adam", optim.Adam),
                                        ("adamw", optim.AdamW), ("rmsprop", optim.RMSProp)])
def test_make_optimizer(name, kind):
    model = tiny_model()
    model[0].requires_grad_(False)                              # frozen layers are left out
    optimizer = make_optimizer(name, model.parameters(), 0.1, momentum=0.5, weight_decay=1e-4)
    assert isinstance(optimizer, kind)
    assert len(optimizer.param_groups[0]["params"]) == 2
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_make_optimizer_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        make_optimizer("lion", tiny_model().parameters(), 0.1)


@pytest.mark.parametrize("spec, epoch, factor", [
    ("cosine", 5, 0.5), ("cosine", 10, 0.0), ("step:3", 3, 0.1), ("step:3:0.5", 7, 0.25),
    ("multistep:2,6", 6, 0.01), ("exponential:0.9", 2, 0.81), ("decay:2.4:0.97", 5, 0.97 ** 2),
    ("warmup:2+cosine", 1, 0.5), ("warmup:2", 1, 0.5), ("warmup:2", 4, 1.0)])
def test_make_schedule(spec, epoch, factor):
    optimizer = optim.SGD(tiny_model().parameters(), lr=1.0)
    schedule = make_schedule(spec, optimizer, epochs=10, steps_per_epoch=4)
    for _ in range(4 * epoch):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(factor, abs=1e-9)


def test_make_schedule_constant_and_errors():
    optimizer = optim.SGD(tiny_model().parameters(), lr=1.0)
    assert make_schedule("constant", optimizer, 10, 4) is None
    for bad in ("cosine:3", "triangle", "step", "step:x", "decay:1"):
        with pytest.raises(ValueError, match="schedule"):
            make_schedule(bad, optimizer, 10, 4)


def test_prefetching_loader_trains_identically(tmp_path):
    def run(prefetch):
        model = tiny_model()
        train_loader, _ = loaders(prefetch=prefetch)
        optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        import importlib
        importlib.import_module("minicnn.functional.dropout").manual_seed(0)
        fit(model, optimizer, train_loader, None, 2, progress=False, log=lambda line: None)
        return model
    assert_same_weights(run(0), run(2))
    assert math.isfinite(float(run(0)[5].weight.data.sum()))


# ----------------------------------------------------------------------------- nothing broken kept

def quiet(line):
    pass


def test_sigterm_saves_and_stops_like_ctrl_c(tmp_path):
    model, optimizer, schedule, train_loader, _ = setup()

    def terminate(epoch, batch, loss):
        if (epoch, batch) == (0, 2):
            signal.raise_signal(signal.SIGTERM)                 # what `timeout` sends
    path = tmp_path / "t.npz"
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(model, optimizer, train_loader, None, 2, schedule=schedule, checkpoint=path,
            progress=False, log=quiet, on_batch_end=terminate)
    assert (stopped.value.epoch, stopped.value.batch) == (0, 2)
    progress = load_training_checkpoint(path)["progress"]
    assert (progress["epoch"], progress["batch"]) == (0, 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL      # handler restored


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_weights_gone_bad_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    model, optimizer, schedule, train_loader, test_loader = setup()
    path = tmp_path / "good.npz"

    first_epoch = []

    def poison(epoch, batch, loss):
        if epoch == 1:
            first_epoch.append(path.read_bytes())        # what epoch 1 saved
            model[-1].weight.data[0, 0] = np.inf
    with pytest.raises(TrainingDiverged) as failed:
        fit(model, optimizer, train_loader, test_loader, 3, schedule=schedule,
            checkpoint=path, progress=False, log=quiet, on_batch_end=poison)
    message = str(failed.value)
    assert "epoch 2" in message and "lower --lr" in message
    assert f"last good checkpoint ({path}, after epoch 1) was kept" in message
    assert path.read_bytes() == first_epoch[0]          # byte for byte the epoch-1 save
    assert load_training_checkpoint(path)["progress"]["epoch"] == 1


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_non_finite_data_is_named_as_the_cause(tmp_path):
    train, test = toy_datasets()
    loader = DataLoader(train, batch_size=16,
                        transform=lambda images, rng: np.full(images.shape, np.nan, np.float32))
    model = tiny_model()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingDiverged, match="input batch itself holds NaN") as failed:
        fit(model, optimizer, loader, None, 1, checkpoint=tmp_path / "n.npz", progress=False,
            log=quiet)
    assert "nothing was saved" in str(failed.value)
    assert not (tmp_path / "n.npz").exists()
    assert all(np.isfinite(p.data).all() for p in model.parameters())   # no step was taken


def test_resume_takes_the_settings_given_now(tmp_path):
    """The checkpoint gives progress, the optimizer and schedule passed in the settings:
    a new learning rate and a longer cosine apply from the saved step on."""
    model, optimizer, schedule, train_loader, test_loader = setup(epochs=2)
    path = tmp_path / "part.npz"
    fit(model, optimizer, train_loader, None, 1, schedule=schedule, checkpoint=path,
        progress=False, log=quiet)
    steps = len(train_loader)

    model = tiny_model()
    optimizer = optim.Adam(model.parameters(), lr=0.5)
    schedule = make_schedule("cosine", optimizer, 4, steps)
    seen = []
    fit(model, optimizer, train_loader, None, 2, schedule=schedule, resume=path,
        progress=False, log=quiet,
        on_batch_end=lambda e, b, loss: seen.append(optimizer.param_groups[0]["lr"]))
    # the first resumed step ran at step `steps` of a 4-epoch cosine from 0.5, and the
    # step count went on from there
    assert seen[0] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * (steps + 1) / (4 * steps))))
    assert schedule.step_count == 2 * steps
    assert optimizer.param_groups[0]["initial_lr"] == 0.5


def test_a_killed_runs_temporaries_are_removed_by_the_next_run(tmp_path):
    path = tmp_path / "k.npz"
    dead = tmp_path / ".k.npz.999999999-abcd1234.tmp"           # no such process
    dead.write_bytes(b"PK half a checkpoint")
    old_style = tmp_path / ".k.history.csv.x1y2z3.tmp"          # written before owners
    old_style.write_text("epoch,")
    import os
    alive = tmp_path / f".k.npz.{os.getpid()}-inflight.tmp"     # a write still going on
    alive.write_bytes(b"")
    unrelated = tmp_path / ".other.npz.999999999-abcd1234.tmp"
    unrelated.write_bytes(b"")
    model, optimizer, schedule, train_loader, _ = setup()
    fit(model, optimizer, train_loader, None, 1, checkpoint=path, progress=False, log=quiet)
    assert not dead.exists() and not old_style.exists()
    assert alive.exists() and unrelated.exists()
    load_training_checkpoint(path)
