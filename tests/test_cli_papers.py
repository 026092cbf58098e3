"""Issue 18's flags on the command line: each one, in a short real run, changes training
(or the evaluation) as it claims; --recipe applies the paper's values with explicit flags
winning, and --recipe alone lists them."""
import argparse

import numpy as np
import pytest

from minicnn import cli, recipes
from minicnn.cli import pieces
from minicnn.train import load_training_checkpoint
from tests.test_cli import pictures, quick, run  # noqa: F401  (pictures is a fixture)


def trained(pictures, save, *flags, family="lenet5"):
    """Train one short epoch with ``flags``; returns the checkpoint's weights and history."""
    assert run(quick(pictures, save, "--limit-train", 16, *flags), family=family) == 0
    state = load_training_checkpoint(save)
    return state["model"], state["progress"]["history"]


def differ(first, second):
    return any(not np.array_equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def plain(pictures, tmp_path_factory):
    return trained(pictures, tmp_path_factory.mktemp("plain") / "plain.npz")


def test_the_same_run_twice_is_the_same(pictures, plain, tmp_path):
    weights, _ = trained(pictures, tmp_path / "again.npz")
    assert not differ(weights, plain[0])          # so any difference below is the flag's


@pytest.mark.parametrize("flags", [["--mixup", "0.4"], ["--clip-grad", "0.01"],
                                   ["--randaugment", "2,9"], ["--pca-colour"],
                                   ["--scale-jitter", "32,40"]])
def test_each_training_flag_changes_training(pictures, plain, tmp_path, flags):
    weights, history = trained(pictures, tmp_path / "run.npz", *flags)
    assert differ(weights, plain[0]), f"{flags} left the weights as they were"
    assert load_training_checkpoint(tmp_path / "run.npz")["meta"]["settings"][
        flags[0][2:].replace("-", "_")] not in (None, False)      # and the run records it
    if flags[0] == "--clip-grad":
        assert history[0]["grad_norm_max"] > 0.01


def test_ema_evaluates_with_the_average_and_trains_as_before(pictures, plain, tmp_path):
    weights, history = trained(pictures, tmp_path / "ema.npz", "--ema", "0.5")
    assert not differ(weights, plain[0])                   # the trained weights: unchanged
    assert history[0]["test_loss"] != plain[1][0]["test_loss"]   # evaluated on the average
    assert "ema" in load_training_checkpoint(tmp_path / "ema.npz")["progress"]["callbacks"]


def test_bn_momentum_changes_the_running_statistics(pictures, tmp_path):
    flags = ("--variant", "resnet20", "--epochs", 1)
    default, _ = trained(pictures, tmp_path / "a.npz", *flags, family="resnet")
    changed, _ = trained(pictures, tmp_path / "b.npz", *flags, "--bn-momentum", "0.9",
                         family="resnet")
    means = [k for k in default if k.endswith("running_mean")]
    assert means and all(not np.array_equal(default[k], changed[k]) for k in means)


def test_bn_momentum_on_a_network_without_batch_norm_is_one_line(pictures, tmp_path, capsys):
    assert run(quick(pictures, tmp_path / "x.npz", "--bn-momentum", "0.1")) == 2
    err = capsys.readouterr().err
    assert "--bn-momentum 0.1: " in err and "has no batch norm" in err
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("mode", ["flip", "10crop", "dense"])
def test_tta_evaluates_a_checkpoint_over_several_views(pictures, tmp_path, capsys, mode):
    save = tmp_path / "run.npz"
    trained(pictures, save)
    capsys.readouterr()
    assert run(["--resume", save, "--eval-only", "--tta", mode]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"with --tta {mode}: test loss" in line and "accuracy" in line


def test_dense_evaluation_is_vggs_three_scales_at_the_networks_input_size():
    from minicnn.cli.commands import dense_scales
    assert dense_scales(224) == (256, 384, 512)
    assert dense_scales(32) == (37, 55, 73)


def test_tta_dense_on_a_network_it_cannot_convolutionize_is_refused_before_training(
        pictures, tmp_path, capsys):
    save = tmp_path / "g.npz"
    assert run(quick(pictures, save, "--tta", "dense"), family="googlenet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("googlenet: error: --tta dense needs a network whose classifier can "
                          "become convolutions: convolutionize: GoogLeNet has no Flatten module")
    assert not save.exists() and "epoch" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- recipes

def settings_with(family, variant, **given):
    defaults = cli.family_defaults(family)
    args = argparse.Namespace(**{key: None for key in cli.BUILTIN_DEFAULTS})
    for key, value in given.items():
        setattr(args, key, value)
    return cli.resolve_settings(defaults, args, variant, "mnist",
                                recipe=recipes.recipe(family))


def test_a_recipe_sets_the_papers_values_and_explicit_flags_win():
    settings = settings_with("inception_v3", "inception_v3")
    assert settings["optimizer"] == "rmsprop" and settings["label_smoothing"] == 0.1
    assert settings["clip_grad"] == 2.0
    assert settings["optimizer_options"] == {"rmsprop": {"alpha": 0.9, "eps": 1.0}}
    assert settings["schedule"].startswith("decay:")
    explicit = settings_with("inception_v3", "inception_v3", lr=0.5, clip_grad=7.0)
    assert (explicit["lr"], explicit["clip_grad"]) == (0.5, 7.0)
    assert settings_with("alexnet", "alexnet")["tta"] == "10crop"
    assert settings_with("vgg", "vgg16")["tta"] == "dense"
    assert settings_with("efficientnet_v2", "efficientnet_v2_s")["ema"] == 0.9999


def test_recipe_alone_lists_what_it_sets(capsys):
    assert run(["--recipe"], family="inception_v3") == 0
    out = capsys.readouterr().out
    assert "Szegedy" in out and "--optimizer rmsprop" in out and "--clip-grad 2.0" in out


def test_a_family_without_a_recipe_says_so(capsys):
    assert run(["--recipe"]) == 2
    assert "no paper recipe for 'lenet5'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- progressive

def test_progressive_stages_scale_the_papers_sizes_to_the_input():
    settings = dict(cli.BUILTIN_DEFAULTS, epochs=4, progressive=4, progressive_size=None)
    stages = list(pieces.progressive_schedule(settings, "efficientnet_v2_s", 32))
    assert [s.image_size for s in stages] == [14, 20, 26, 32]     # 128→300 scaled to 32
    assert stages[0].dropout == pytest.approx(0.1) and stages[-1].randaugment == 15
    settings["progressive_size"] = (16, 32)
    assert [s.image_size for s in pieces.progressive_schedule(settings, "efficientnet_v2_s",
                                                              32)] == [16, 21, 27, 32]
