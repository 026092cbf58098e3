"""The shared command line, driven in-process (``main(family, argv)``) on a generated folder
of pictures, plus one real ``python -m architectures.lenet5 --help`` subprocess."""
import argparse
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from minicnn import cli
from minicnn.train import load_training_checkpoint

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Two classes of 28×28 pictures: a bright bar, horizontal or vertical."""
    from PIL import Image
    root = tmp_path_factory.mktemp("pictures") / "bars"
    rng = np.random.default_rng(0)
    for label, name in enumerate(("horizontal", "vertical")):
        os.makedirs(root / name)
        for i in range(16):
            pixels = rng.integers(0, 50, (28, 28)).astype(np.uint8)
            where = rng.integers(4, 24)
            if label == 0:
                pixels[where - 2:where + 2, :] = 250
            else:
                pixels[:, where - 2:where + 2] = 250
            Image.fromarray(pixels).convert("RGB").save(root / name / f"{i}.png")
    return str(root)


@pytest.fixture(autouse=True)
def in_a_temporary_folder(tmp_path, monkeypatch):
    """Runs without --save write to ./checkpoints: keep that out of the repository."""
    monkeypatch.chdir(tmp_path)


def run(argv, family="lenet5"):
    """Run the CLI; returns the exit status (0 when main returns)."""
    try:
        cli.main(family, [str(a) for a in argv])
    except SystemExit as stop:
        return stop.code
    return 0


def quick(pictures, save, *extra):
    return ["--train", pictures, "--epochs", 1, "--batch-size", 8, "--save", save, *extra]


# ----------------------------------------------------------------------------- --help

def test_help_is_complete_and_loads_nothing_heavy():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "architectures.lenet5",
                             "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for option in ("--train", "--variant", "--epochs", "--batch-size", "--lr", "--optimizer",
                   "--momentum", "--weight-decay", "--schedule", "--label-smoothing", "--seed",
                   "--device", "--data-dir", "--input-size", "--limit-train", "--save",
                   "--resume", "--eval-only", "--summary", "--predict"):
        assert option in result.stdout
    assert "lenet5_lecun98" in result.stdout                   # the family's variants
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    for heavy in ("minicnn.train", "minicnn.data", "tqdm", "matplotlib"):
        assert heavy not in imported


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv, message", [
    (["--train", "imagenet"], "unknown dataset 'imagenet'"),
    (["--train", "{pictures}", "--variant", "lenet7"], "unknown variant 'lenet7'"),
    (["--train", "{pictures}", "--input-size", "8"], "cannot take 8x8 input"),
    (["--train", "{pictures}", "--save", "{blocker}/model.npz"], "cannot write there"),
    (["--train", "{pictures}", "--save", "{tmp}"], "it is a folder"),
    (["--train", "{pictures}", "--epochs", "0"], "--epochs: expected a whole number at least 1"),
    (["--train", "{pictures}", "--schedule", "zigzag"], "unknown schedule 'zigzag'"),
    (["--train", "{pictures}", "--label-smoothing", "1.5"], "--label-smoothing: expected a"),
    (["--optimizer", "lion"], "invalid choice: 'lion'"),
    ([], "nothing to do"),
    (["--eval-only"], "needs a trained checkpoint"),
    (["--predict", "x.png"], "needs a trained checkpoint"),
    (["--resume", "{tmp}/missing.npz", "--eval-only"], "does not exist"),
    (["--resume", "{junk}", "--eval-only"], "corrupt"),
])
def test_bad_input_is_one_line_and_status_2(argv, message, pictures, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder is needed")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint")
    argv = [a.format(pictures=pictures, blocker=blocker, tmp=tmp_path, junk=junk) for a in argv]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lenet5: error: ") and message in err


def test_gpu_request_without_a_gpu(pictures, capsys):
    from minicnn.backend import gpu_available
    if gpu_available():
        pytest.skip("this machine has a GPU")
    assert run(["--train", pictures, "--device", "gpu"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_checkpoint_of_another_architecture(pictures, tmp_path, capsys):
    from minicnn import nn
    from minicnn.train import save_training_checkpoint
    path = tmp_path / "resnet.npz"
    save_training_checkpoint(path, nn.Linear(2, 2), None, None,
                             {"epoch": 1, "batch": 0, "history": [], "running": {}},
                             {"architecture": "resnet18", "family": "resnet"})
    assert run(["--resume", path, "--eval-only"]) == 2
    err = capsys.readouterr().err
    assert "holds a 'resnet18' network (family 'resnet')" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- working runs

def test_train_evaluate_predict(pictures, tmp_path, capsys):
    save = tmp_path / "bars.npz"
    assert run(quick(pictures, save, "--epochs", 3, "--lr", 0.05)) == 0
    out = capsys.readouterr().out
    assert "lenet5 on bars" in out and "epoch 3/3  train loss" in out and "done in" in out
    assert save.exists() and (tmp_path / "bars.history.csv").exists()
    state = load_training_checkpoint(save)
    assert state["meta"]["architecture"] == "lenet5"
    assert state["meta"]["classes"] == ["horizontal", "vertical"]
    accuracy = state["progress"]["history"][-1]["test_accuracy"]

    assert run(["--resume", save, "--eval-only"]) == 0
    out = capsys.readouterr().out
    assert f"accuracy {100 * accuracy:.2f}%" in out

    picture = os.path.join(pictures, "vertical", "0.png")
    assert run(["--resume", save, "--predict", picture]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == picture and len(out) == 3                  # two classes: a top-2
    shares = [float(line.split()[-1].rstrip("%")) for line in out[1:]]
    assert sum(shares) == pytest.approx(100, abs=0.02) and shares[0] >= shares[1]


def test_cli_resume_continues_exactly(pictures, tmp_path, capsys):
    straight, part = tmp_path / "straight.npz", tmp_path / "part.npz"
    # a constant rate, so that stopping after one epoch is the same run's first half
    common = ["--augment", "translate", "--seed", 3, "--schedule", "constant"]
    assert run(quick(pictures, straight, "--epochs", 2, *common)) == 0
    assert run(quick(pictures, part, "--epochs", 1, *common)) == 0
    assert run(["--resume", part, "--epochs", 2]) == 0          # the saved settings return
    assert "resuming" in capsys.readouterr().out
    a, b = load_training_checkpoint(straight), load_training_checkpoint(part)
    assert b["progress"]["epoch"] == 2
    for key, value in a["model"].items():
        np.testing.assert_array_equal(b["model"][key], value, err_msg=key)


def test_resume_with_another_variant_is_refused(pictures, tmp_path, capsys):
    save = tmp_path / "m.npz"
    assert run(quick(pictures, save, "--limit-train", 8)) == 0
    capsys.readouterr()
    assert run(["--resume", save, "--variant", "lecun98", "--eval-only"]) == 2
    assert "holds lenet5, not lenet5_lecun98" in capsys.readouterr().err


def test_variant_short_name_and_padding_to_32(pictures, tmp_path, capsys):
    save = tmp_path / "lecun.npz"
    assert run(quick(pictures, save, "--variant", "lecun98", "--limit-train", 16)) == 0
    meta = load_training_checkpoint(save)["meta"]
    assert meta["architecture"] == "lenet5_lecun98"
    assert (meta["image_size"], meta["input_size"]) == (32, 32)   # a folder is read at 32
    assert "input 3x32x32" in capsys.readouterr().out


def test_summary_of_the_published_network(capsys):
    assert run(["--summary"]) == 0
    out = capsys.readouterr().out
    assert "44,426" in out or "44426" in out


def test_ctrl_c_exits_130_with_a_hint(pictures, tmp_path, monkeypatch, capsys):
    import minicnn.train
    from minicnn.train import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(kwargs["checkpoint"], 0, 3)
    monkeypatch.setattr(minicnn.train, "fit", interrupted)
    save = tmp_path / "c.npz"
    assert run(quick(pictures, save)) == 130
    assert f"continue with --resume {save}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- settings

def test_settings_precedence():
    defaults = dict(cli.BUILTIN_DEFAULTS, epochs=4, lr=0.05,
                    datasets={"cifar10": {"epochs": 30, "lr": 0.1}},
                    variants={"big": {"lr": 0.01, "optimizer": "rmsprop"}})
    args = argparse.Namespace(**{key: None for key in cli.BUILTIN_DEFAULTS})
    plain = cli.resolve_settings(defaults, args, "small", "mnist")
    assert (plain["epochs"], plain["lr"], plain["augment"]) == (4, 0.05, "none")
    both = cli.resolve_settings(defaults, args, "big", "cifar10")
    assert (both["epochs"], both["lr"], both["optimizer"]) == (30, 0.01, "rmsprop")
    assert both["augment"] == "crop-flip"
    saved = cli.resolve_settings(defaults, args, "big", "cifar10", saved={"lr": 0.3})
    assert saved["lr"] == 0.3
    args.lr, args.epochs = 0.2, 1
    typed = cli.resolve_settings(defaults, args, "big", "cifar10", saved={"lr": 0.3})
    assert (typed["lr"], typed["epochs"]) == (0.2, 1)


def test_family_detection(monkeypatch):
    fake_main = types.ModuleType("__main__")
    fake_main.__spec__ = types.SimpleNamespace(name="architectures.resnet")
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    assert cli.detect_family() == "resnet"
    fake_main.__spec__ = None
    monkeypatch.setattr(sys, "argv", ["/somewhere/architectures/vgg.py"])
    assert cli.detect_family() == "vgg"


def test_family_defaults_come_from_the_module():
    defaults = cli.family_defaults("lenet5")
    import architectures.lenet5 as lenet5
    for key, value in lenet5.CLI_DEFAULTS.items():
        assert defaults[key] == value
    assert defaults["seed"] == cli.BUILTIN_DEFAULTS["seed"]


# ----------------------------------------------------------------------------- real MNIST

def _mnist_cached():
    from minicnn.data.dataset import default_data_dir
    return os.path.isfile(os.path.join(default_data_dir(), "mnist", "mnist.npz"))


@pytest.mark.slow
@pytest.mark.skipif(not _mnist_cached(), reason="MNIST is not in the cache")
def test_lenet5_learns_mnist_quickly(tmp_path, capsys):
    assert run(["--train", "mnist", "--limit-train", 6000, "--epochs", 1,
                "--save", tmp_path / "m.npz"]) == 0
    history = load_training_checkpoint(tmp_path / "m.npz")["progress"]["history"]
    assert history[-1]["test_accuracy"] > 0.85
