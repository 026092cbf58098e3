"""The weight initializers draw from the distributions their docstrings state.

A (256, 128, 3, 3) convolution weight has fan_in = 128·9 = 1152 and fan_out = 256·9 = 2304;
its 294,912 draws pin a standard deviation to about 0.3% (the sampling error of a sample
standard deviation is σ/√(2n)), so a wrong rule — a missing gain, fan_out for fan_in, the
uniform bound a instead of a/√3 as the spread — fails by far more than the 2% allowed.
"""
import math

import numpy as np
import pytest

from minicnn.nn import Parameter, init

SHAPE = (256, 128, 3, 3)
FAN_IN, FAN_OUT = 128 * 9, 256 * 9


def drawn(initializer, **options):
    weight = Parameter(np.zeros(SHAPE, np.float32))
    returned = initializer(weight, rng=np.random.default_rng(0), **options)
    assert returned is weight                      # in place, and handed back
    return weight.data


@pytest.mark.parametrize("initializer, options, std", [
    (init.lecun_normal_, {}, math.sqrt(1 / FAN_IN)),
    (init.xavier_normal_, {}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
    (init.xavier_normal_, {"gain": 2.0}, 2 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
    (init.kaiming_normal_, {}, math.sqrt(2 / FAN_IN)),
    (init.kaiming_normal_, {"mode": "fan_out"}, math.sqrt(2 / FAN_OUT)),
    (init.kaiming_normal_, {"nonlinearity": "tanh"}, 5 / 3 / math.sqrt(FAN_IN)),
])
def test_normal_initializers_have_the_stated_spread(initializer, options, std):
    values = drawn(initializer, **options)
    assert abs(values.mean()) < 0.02 * std
    assert values.std() == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize("initializer, options, bound", [
    (init.lecun_uniform_, {}, math.sqrt(3 / FAN_IN)),
    (init.xavier_uniform_, {}, math.sqrt(6 / (FAN_IN + FAN_OUT))),
    (init.kaiming_uniform_, {}, math.sqrt(6 / FAN_IN)),
    (init.kaiming_uniform_, {"nonlinearity": "leaky_relu", "slope": 0.2},
     math.sqrt(3 * 2 / (1 + 0.2 ** 2) / FAN_IN)),
])
def test_uniform_initializers_fill_their_interval(initializer, options, bound):
    values = drawn(initializer, **options)
    assert values.min() >= -bound and values.max() <= bound
    assert values.min() < -0.99 * bound and values.max() > 0.99 * bound
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)   # a²/3 = Var


def test_default_layer_init_bounds_weight_and_bias_by_one_over_root_fan_in():
    weight, bias = Parameter(np.zeros((64, 50), np.float32)), Parameter(np.zeros(64, np.float32))
    init.default_layer_init_(weight, bias, rng=np.random.default_rng(1))
    bound = 1 / math.sqrt(50)
    for values in (weight.data, bias.data):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound


def test_fan_in_and_fan_out_and_bad_arguments():
    assert init.fan_in_and_fan_out(SHAPE) == (FAN_IN, FAN_OUT)
    assert init.fan_in_and_fan_out((10, 20)) == (20, 10)             # Linear (out, in)
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got \(5,\)"):
        init.fan_in_and_fan_out((5,))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out', got 'fan'"):
        init.kaiming_normal_(Parameter(np.zeros((4, 4), np.float32)), mode="fan")


def test_float64_weights_are_drawn_in_float64():
    weight = Parameter(np.zeros((8, 8)))
    init.xavier_uniform_(weight, rng=np.random.default_rng(2))
    assert weight.dtype == np.float64 and len(np.unique(weight.data)) == 64
