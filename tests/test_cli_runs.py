"""Real training runs of the command line, and what they leave on disk: a second run
never touches the first one's files, a resumed run follows the command line, the plots
are drawn from what a run really records, and neither SIGTERM nor kill -9 at any moment
leaves a checkpoint that cannot be loaded or a temporary file behind."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minicnn import cli
from minicnn.cli import commands, pieces
from minicnn.train import load_training_checkpoint
from tests.test_cli import pictures, quick, run  # noqa: F401  (pictures is a fixture)

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def in_a_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def files_of(folder):
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder))}


# ----------------------------------------------------------------------------- nothing overwritten

def test_a_second_run_leaves_the_first_runs_files_byte_identical(pictures, tmp_path, capsys):
    first = ["--train", pictures, "--epochs", 1, "--batch-size", 8, "--limit-train", 16]
    assert run(first) == 0
    saved = files_of(tmp_path / "checkpoints")
    assert set(saved) == {"lenet5-bars.npz", "lenet5-bars.history.csv",
                          "lenet5-bars.history.json"}
    capsys.readouterr()

    assert run(first + ["--seed", 1]) == 0
    err = capsys.readouterr().err
    assert "lenet5-bars.npz holds an earlier run, kept as it is" in err
    now = files_of(tmp_path / "checkpoints")
    assert {name: now[name] for name in saved} == saved          # byte for byte
    assert "lenet5-bars-2.npz" in now and "lenet5-bars-2.history.csv" in now
    assert load_training_checkpoint(tmp_path / "checkpoints" / "lenet5-bars-2.npz")[
        "meta"]["settings"]["seed"] == 1


def test_an_explicit_save_over_another_run_is_refused_unless_told(pictures, tmp_path, capsys):
    save = tmp_path / "mine.npz"
    assert run(quick(pictures, save, "--limit-train", 16)) == 0
    before = save.read_bytes()
    capsys.readouterr()
    assert run(quick(pictures, save, "--limit-train", 16)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "--overwrite" in err
    assert save.read_bytes() == before
    assert run(quick(pictures, save, "--limit-train", 16, "--seed", 5, "--overwrite")) == 0
    assert load_training_checkpoint(save)["meta"]["settings"]["seed"] == 5


# ----------------------------------------------------------------------------- resume

def test_resume_applies_the_command_line_and_records_what_was_used(pictures, tmp_path,
                                                                   capsys):
    save = tmp_path / "r.npz"
    assert run(quick(pictures, save, "--limit-train", 16, "--lr", 0.01)) == 0
    capsys.readouterr()
    assert run(["--resume", save, "--epochs", 2, "--lr", 0.02, "--batch-size", 4]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--batch-size 4 ignored: a resumed run keeps 8" in notes[0]
    assert "resume: --lr 0.02 replaces the checkpoint's 0.01" in captured.err
    assert "sgd lr 0.02" in captured.out and "of 8," in captured.out
    state = load_training_checkpoint(save)
    assert state["meta"]["settings"]["lr"] == 0.02
    assert state["meta"]["settings"]["batch_size"] == 8
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 0.02
    assert state["progress"]["epoch"] == 2

    assert run(["--resume", save, "--epochs", 2]) == 2          # nothing left to train
    assert "already trained 2 epochs; give --epochs above 2" in capsys.readouterr().err


# ----------------------------------------------------------------------------- checkpoints that do not fit

def test_a_damaged_checkpoint_is_one_line_under_eval_predict_and_finetune(pictures, tmp_path,
                                                                          capsys):
    from minicnn.optim import load_checkpoint, save_checkpoint
    save = tmp_path / "good.npz"
    assert run(quick(pictures, save, "--limit-train", 16)) == 0
    state = load_checkpoint(save)
    first = next(iter(state["model"]))
    state["model"][first] = np.zeros((3, 3), np.float32)
    save_checkpoint(tmp_path / "misshaped.npz", **state)
    data = save.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 2])
    picture = os.path.join(pictures, "vertical", "0.png")
    capsys.readouterr()
    for argv, message in [
            (["--resume", tmp_path / "misshaped.npz", "--eval-only"], "does not fit its own"),
            (["--resume", tmp_path / "misshaped.npz", "--predict", picture], "does not fit"),
            (quick(pictures, tmp_path / "new.npz", "--finetune", tmp_path / "truncated.npz"),
             "--finetune"),
            (["--resume", tmp_path / "truncated.npz"], "truncated")]:
        assert run(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_finetune_from_another_network_that_fits_nothing_is_an_error(pictures, tmp_path,
                                                                     capsys):
    import architectures
    from minicnn.optim import save_checkpoint
    save_checkpoint(tmp_path / "resnet.npz", model=architectures.create("resnet20").state_dict())
    assert run(quick(pictures, tmp_path / "new.npz", "--finetune", tmp_path / "resnet.npz")) == 2
    err = capsys.readouterr().err
    assert "none of its arrays fits lenet5" in err and err.count("\n") == 1
    assert not (tmp_path / "new.npz").exists()


def test_an_internal_error_is_reported_as_a_bug(pictures, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(commands, "train", broken)
    assert run(quick(pictures, tmp_path / "b.npz")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a bug in minicnn: ZeroDivisionError" in err
    assert "--debug" in err and "Traceback" not in err
    assert run(quick(pictures, tmp_path / "b.npz", "--debug")) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("MINICNN_DEBUG", "1")
    assert run(quick(pictures, tmp_path / "b.npz")) == 1
    assert "Traceback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- plots

def drawn_panels(figure):
    """How many of a figure's visible panels hold data (curves, images, bars)."""
    def has_data(ax):
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 0]
        return bool(curves or ax.images or ax.collections or ax.patches)
    visible = [ax for ax in figure.axes if ax.get_visible() and ax.axison or has_data(ax)]
    return visible, [ax for ax in visible if has_data(ax)]


def test_every_plot_holds_data_from_what_a_real_run_records(pictures, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from minicnn import plots
    drawn = {}
    original = plots._save

    def keep(figure, path):
        drawn[os.path.basename(path)] = figure
        return original(figure, path)
    monkeypatch.setattr(plots, "_save", keep)
    save = tmp_path / "p.npz"
    assert run(quick(pictures, save, "--epochs", 2, "--plot", tmp_path / "plots")) == 0
    assert set(drawn) == set(cli.PLOT_FILES)
    assert sorted(os.listdir(tmp_path / "plots")) == sorted(cli.PLOT_FILES)
    for name, figure in drawn.items():
        visible, with_data = drawn_panels(figure)
        assert visible and visible == with_data, f"{name}: an empty panel"

    # and from the files the run left: the checkpoint's history, the CSV and the JSON
    from minicnn.train import history_paths
    history = load_training_checkpoint(save)["progress"]["history"]
    for source in (history, *history_paths(save)):
        drawn.clear()
        plots.learning_curves(source, tmp_path / "again.png")
        loss, accuracy = drawn["again.png"].axes
        assert len(loss.get_lines()) == 2 and len(accuracy.get_lines()) == 2, source
        assert all(len(line.get_xdata()) == 2 for line in accuracy.get_lines())


def test_plot_without_matplotlib_is_refused_before_training(pictures, tmp_path, monkeypatch,
                                                            capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    monkeypatch.setattr(pieces, "load_datasets", lambda *a, **k: pytest.fail("trained first"))
    assert run(quick(pictures, tmp_path / "m.npz", "--plot", tmp_path / "plots")) == 2
    assert "pip install 'minicnn[plot]'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- signals, in a real process

def start(argv, cwd):
    environment = dict(os.environ, PYTHONPATH=REPOSITORY + os.pathsep
                       + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "architectures.lenet5", *map(str, argv)],
                            cwd=cwd, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path, process, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no checkpoint appeared: {process.communicate()}")
        time.sleep(0.02)


def stray_temporaries(folder):
    return glob.glob(os.path.join(folder, ".*.tmp"))


def test_sigterm_saves_a_checkpoint_and_says_how_to_continue(pictures, tmp_path):
    save = tmp_path / "t.npz"
    process = start(["--train", pictures, "--epochs", 10_000, "--batch-size", 8,
                     "--save", save], tmp_path)
    wait_for(save, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    assert "interrupted by SIGTERM" in last and f"continue with --resume {save}" in last
    assert "Traceback" not in err
    progress = load_training_checkpoint(save)["progress"]
    assert 1 <= progress["epoch"] < 10_000
    assert stray_temporaries(tmp_path) == []


def test_kill_9_at_random_moments_never_leaves_a_broken_checkpoint(pictures, tmp_path):
    """Each run saves after every (tiny) epoch, so a kill lands in a save often. After
    every kill the checkpoint loads; the next run removes what the killed one left."""
    save = tmp_path / "k.npz"
    rng = np.random.default_rng(0)
    for kill in range(3):
        if save.exists():
            done = load_training_checkpoint(save)["progress"]["epoch"]
            argv = ["--resume", save, "--epochs", done + 10_000]
        else:
            argv = ["--train", pictures, "--epochs", 10_000, "--batch-size", 8, "--save", save]
        process = start(argv, tmp_path)
        wait_for(save, process)
        time.sleep(rng.uniform(0.0, 0.5))
        process.kill()
        process.communicate(timeout=60)
        state = load_training_checkpoint(save)                   # never torn
        assert state["progress"]["epoch"] >= 1
    done = load_training_checkpoint(save)["progress"]["epoch"]
    process = start(["--resume", save, "--epochs", done + 1], tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert stray_temporaries(tmp_path) == []
    assert load_training_checkpoint(save)["progress"]["epoch"] == done + 1
