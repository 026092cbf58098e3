"""minicnn.recipes: the papers' recipes scaled to a run's length and batch."""
import pytest

from minicnn.recipes import RECIPES, recipe
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
