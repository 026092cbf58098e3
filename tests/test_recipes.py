"""minicnn.recipes: the papers' recipes scaled to a run's length and batch."""
import pytest

from minicnn.recipes import RECIPES, describe_all, recipe
from minicnn.optim import SGD
from minicnn.nn import Parameter
from minicnn.train import make_schedule


def test_a_decay_every_n_epochs_is_stretched_to_the_run():
    settings = recipe("efficientnet").settings(epochs=35, batch_size=64)
    assert settings["schedule"] == "decay:0.24:0.97"            # 2.4 · 35/350
    assert settings["lr"] == pytest.approx(0.256 * 64 / 4096)   # linear in the batch


def test_plateaus_become_three_tenfold_steps_late_in_the_run():
    assert recipe("alexnet").settings(epochs=8, batch_size=128)["schedule"] == "multistep:4,6,7:0.1"
    assert recipe("vgg").settings(epochs=2, batch_size=256)["schedule"] == "multistep:1,2:0.1"


def test_warm_up_then_decay_for_efficientnet_v2():
    assert recipe("efficientnet_v2").settings(70, 64)["schedule"] == "warmup:1+decay:0.48:0.97"


def test_every_recipe_yields_a_schedule_the_training_loop_accepts():
    for name, r in RECIPES.items():
        spec = r.settings(epochs=10, batch_size=32)["schedule"]
        optimizer = SGD([Parameter([1.0])], lr=0.1)
        assert make_schedule(spec, optimizer, epochs=10, steps_per_epoch=5) is not None, name
        assert name in r.describe(name) and r.paper in r.describe(name)


def test_an_unknown_family_names_the_ones_that_have_a_recipe():
    with pytest.raises(ValueError, match="no paper recipe for 'lenet5'; recipes exist for alexnet"):
        recipe("lenet5")


def test_fixed_milestones_and_steps_move_with_the_runs_length():
    assert recipe("densenet").settings(epochs=9, batch_size=256)["schedule"] == "multistep:3,6:0.1"
    assert recipe("wide_resnet").settings(20, 128)["schedule"] == "multistep:6,12,16:0.2"
    assert recipe("senet").settings(10, 1024)["schedule"] == "step:3:0.1"
    assert recipe("densenet").settings(2, 256)["schedule"] == "multistep:1:0.1"   # merged


def test_the_papers_own_numbers_are_kept_unscaled_where_scaling_does_not_apply():
    v3 = recipe("inception_v3").settings(epochs=5, batch_size=32)
    assert (v3["rmsprop_eps"], v3["label_smoothing"], v3["clip_grad_norm"]) == (1.0, 0.1, 2.0)
    assert v3["lr"] == pytest.approx(0.045 * 32 / 1600)
    v2 = recipe("efficientnet_v2").settings(epochs=5, batch_size=64)
    assert (v2["ema_decay"], v2["bn_momentum"], v2["drop_path"]) == (0.9999, 0.01, 0.2)
    assert recipe("densenet").settings(9, 256)["nesterov"] is True
    assert recipe("inception_resnet") is recipe("inception_v4")


def test_describe_states_the_paper_and_what_a_run_of_given_length_will_use():
    text = recipe("efficientnet").describe("efficientnet", epochs=35, batch_size=64)
    assert "Tan & Le 2019" in text and "×0.97 every 2.4 epochs" in text
    assert "for 35 epochs at batch 64: lr 0.004, schedule decay:0.24:0.97" in text
    listing = describe_all()
    for name in list(RECIPES) + ["inception_resnet: as inception_v4"]:
        assert name in listing
    assert "÷10 when the validation error stops improving" in listing
