"""Optimizers against updates computed by hand, schedules at known epochs, EMA, checkpoints.

Hand computations use one scalar trajectory θ written out step by step in plain Python
floats. Each parameter is the pair [θ, −θ] driven by gradients [g, −g]: every update rule
here is odd in (θ, g), so the second element must follow −θ exactly, which checks that the
array code treats elements independently.
"""
import math
import os

import numpy as np
import pytest

from minicnn import Tensor
from minicnn.nn.module import Module, Parameter
from minicnn.optim import (SGD, Adam, AdamW, CosineAnnealingLR, DecayEveryNEpochs,
                           ExponentialLR, ExponentialMovingAverage, LinearWarmup, MultiStepLR,
                           RMSProp, StepLR, clip_grad_norm_, load_checkpoint, save_checkpoint)
from minicnn.optim import checkpoint as checkpoint_module

GRADS = [0.5, -0.2, 0.1]          # the gradient at steps 1, 2, 3


def run(make_optimizer, grads=GRADS, theta=1.0, dtype=np.float64):
    """Apply ``grads`` one step at a time; return the trajectory of θ after each step."""
    p = Parameter(np.array([theta, -theta], dtype=dtype))
    optimizer = make_optimizer([p])
    data_id = id(p.data)
    trajectory = []
    for g in grads:
        p.grad = np.array([g, -g], dtype=dtype)
        optimizer.step()
        assert p.data[1] == -p.data[0]
        trajectory.append(float(p.data[0]))
    assert id(p.data) == data_id and p.dtype == dtype     # in place, no dtype change
    return trajectory


def assert_trajectory(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


# ============================================================================ SGD

def test_sgd_plain():
    # θ ← θ − η g with η = 0.1
    assert_trajectory(run(lambda ps: SGD(ps, lr=0.1)), [0.95, 0.97, 0.96])


def test_sgd_momentum():
    # b1 = g1 = 0.5            θ1 = 1 − 0.1·0.5      = 0.95
    # b2 = 0.9·0.5 − 0.2 = 0.25  θ2 = 0.95 − 0.1·0.25 = 0.925
    # b3 = 0.9·0.25 + 0.1 = 0.325  θ3 = 0.925 − 0.0325 = 0.8925
    assert_trajectory(run(lambda ps: SGD(ps, lr=0.1, momentum=0.9)), [0.95, 0.925, 0.8925])


def test_sgd_nesterov():
    # d = g + μ·b with the buffers above:
    # d1 = 0.5 + 0.45 = 0.95      θ1 = 1 − 0.095         = 0.905
    # d2 = −0.2 + 0.225 = 0.025   θ2 = 0.905 − 0.0025    = 0.9025
    # d3 = 0.1 + 0.2925 = 0.3925  θ3 = 0.9025 − 0.03925  = 0.86325
    assert_trajectory(run(lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True)),
                      [0.905, 0.9025, 0.86325])


def test_sgd_weight_decay():
    # g' = g + 0.1·θ:  0.6 -> θ 0.94;  −0.2 + 0.094 = −0.106 -> θ 0.9506;
    #                  0.1 + 0.09506 = 0.19506 -> θ 0.931094
    assert_trajectory(run(lambda ps: SGD(ps, lr=0.1, weight_decay=0.1)),
                      [0.94, 0.9506, 0.931094])


def test_sgd_dampening():
    # b1 = g1 (no dampening on the first step), then b = 0.9 b + 0.5 g
    # b2 = 0.45 − 0.1 = 0.35, b3 = 0.315 + 0.05 = 0.365
    assert_trajectory(run(lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.5)),
                      [0.95, 0.915, 0.8785])


def test_sgd_does_not_modify_the_gradient():
    p = Parameter(np.ones(2))
    optimizer = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    p.grad = np.array([1.0, 2.0])
    optimizer.step()
    optimizer.step()
    np.testing.assert_array_equal(p.grad, [1.0, 2.0])


def test_sgd_rejects_bad_settings():
    p = [Parameter(np.ones(1))]
    with pytest.raises(ValueError, match="SGD: Nesterov momentum needs momentum > 0"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="SGD: lr, momentum and weight_decay must be >= 0"):
        SGD(p, lr=-1)


# ============================================================================ Adam, AdamW

def adam_by_hand(lr, beta1, beta2, eps, weight_decay=0.0, decoupled=False, theta=1.0):
    """Kingma & Ba's Algorithm 1 in scalars, one line per equation."""
    m = v = 0.0
    trajectory = []
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            theta = theta - lr * weight_decay * theta
        else:
            g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        theta = theta - lr * m_hat / (math.sqrt(v_hat) + eps)
        trajectory.append(theta)
    return trajectory


def test_adam_first_step_is_lr_times_sign():
    # with bias correction, m̂₁ = g and v̂₁ = g², so the first step is η·g/(|g| + ε)
    p = Parameter(np.array([1.0, -1.0]))
    optimizer = Adam([p], lr=0.1)
    p.grad = np.array([0.5, -0.5])
    optimizer.step()
    step = 0.1 * 0.5 / (0.5 + 1e-8)
    np.testing.assert_allclose(p.data, [1 - step, -1 + step])


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam(weight_decay):
    settings = dict(lr=0.1, eps=1e-8)
    actual = run(lambda ps: Adam(ps, betas=(0.8, 0.95), weight_decay=weight_decay, **settings))
    assert_trajectory(actual, adam_by_hand(beta1=0.8, beta2=0.95, weight_decay=weight_decay,
                                           **settings))


def test_adamw_decays_weights_directly():
    actual = run(lambda ps: AdamW(ps, lr=0.1, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1))
    assert_trajectory(actual, adam_by_hand(0.1, 0.8, 0.95, 1e-8, weight_decay=0.1,
                                           decoupled=True))
    coupled = run(lambda ps: Adam(ps, lr=0.1, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1))
    assert abs(actual[-1] - coupled[-1]) > 1e-3            # really a different rule


def test_adam_rejects_bad_betas():
    with pytest.raises(ValueError, match=r"Adam: betas must be two numbers in \[0, 1\)"):
        Adam([Parameter(np.ones(1))], betas=(0.9, 1.0))


# ============================================================================ RMSProp

def test_rmsprop_pytorch_form():
    # s ← 0.9 s + 0.1 g², s₀ = 0;  θ ← θ − η g / (√s + ε)
    lr, eps, s, theta, expected = 0.01, 1e-8, 0.0, 1.0, []
    for g in GRADS:
        s = 0.9 * s + 0.1 * g * g
        theta -= lr * g / (math.sqrt(s) + eps)
        expected.append(theta)
    assert_trajectory(run(lambda ps: RMSProp(ps, lr=lr, alpha=0.9, eps=eps)), expected)


def test_rmsprop_pytorch_form_with_momentum():
    lr, eps, s, b, theta, expected = 0.01, 1e-8, 0.0, 0.0, 1.0, []
    for g in GRADS:
        s = 0.9 * s + 0.1 * g * g
        b = 0.5 * b + g / (math.sqrt(s) + eps)
        theta -= lr * b
        expected.append(theta)
    assert_trajectory(run(lambda ps: RMSProp(ps, lr=lr, alpha=0.9, eps=eps, momentum=0.5)),
                      expected)


def test_rmsprop_tensorflow_form():
    # TensorFlow (EfficientNet's settings): s₀ = 1, ε inside the root, η inside the buffer
    #   s ← ρ s + (1 − ρ) g²,   b ← μ b + η g / √(s + ε),   θ ← θ − b
    # step 1: s = 0.9 + 0.025 = 0.925,  b = 0.016·0.5/√0.926
    lr, eps, s, b, theta, expected = 0.016, 1e-3, 1.0, 0.0, 1.0, []
    for g in GRADS:
        s = 0.9 * s + 0.1 * g * g
        b = 0.9 * b + lr * g / math.sqrt(s + eps)
        theta -= b
        expected.append(theta)
    assert expected[0] == pytest.approx(1 - 0.016 * 0.5 / math.sqrt(0.926))
    actual = run(lambda ps: RMSProp(ps, lr=lr, alpha=0.9, eps=eps, momentum=0.9,
                                    tf_style=True))
    assert_trajectory(actual, expected)


def test_rmsprop_tensorflow_form_without_momentum():
    lr, eps, s, theta, expected = 0.01, 1e-3, 1.0, 1.0, []
    for g in GRADS:
        s = 0.9 * s + 0.1 * g * g
        theta -= lr * g / math.sqrt(s + eps)
        expected.append(theta)
    assert_trajectory(run(lambda ps: RMSProp(ps, lr=lr, alpha=0.9, eps=eps, tf_style=True)),
                      expected)


# ============================================================================ all optimizers

ALL = {
    "sgd": lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adam": lambda ps: Adam(ps, lr=0.01, weight_decay=1e-4),
    "adamw": lambda ps: AdamW(ps, lr=0.01),
    "rmsprop": lambda ps: RMSProp(ps, lr=0.01, momentum=0.9, weight_decay=1e-4),
    "rmsprop_tf": lambda ps: RMSProp(ps, lr=0.01, alpha=0.9, eps=1e-3, momentum=0.9,
                                     tf_style=True),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_float32_parameters_stay_float32(name):
    run(ALL[name], dtype=np.float32)
    p = Parameter(np.ones((3, 4), np.float32))
    optimizer = ALL[name]([p])
    p.grad = np.full((3, 4), 0.1, np.float32)
    optimizer.step()
    for value in optimizer.state[p].values():
        if hasattr(value, "dtype"):
            assert value.dtype == np.float32


@pytest.mark.parametrize("name", sorted(ALL))
def test_frozen_and_untouched_parameters_are_skipped(name):
    trained, frozen, unused = (Parameter(np.ones(3)) for _ in range(3))
    frozen.requires_grad = False
    optimizer = ALL[name]([trained, frozen, unused])
    trained.grad = np.ones(3)
    frozen.grad = np.ones(3)                  # e.g. left over from before it was frozen
    optimizer.step()
    assert (trained.data != 1).all()
    np.testing.assert_array_equal(frozen.data, np.ones(3))
    np.testing.assert_array_equal(unused.data, np.ones(3))
    assert frozen not in optimizer.state and unused not in optimizer.state


@pytest.mark.parametrize("name", sorted(ALL))
def test_state_dict_round_trip_resumes_exactly(name, tmp_path):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((2, 3)) for _ in range(4)]

    def fresh():
        return [Parameter(np.arange(6.0).reshape(2, 3)), Parameter(np.zeros(2))]

    # reference: four uninterrupted steps
    params = fresh()
    optimizer = ALL[name](params)
    for g in grads:
        params[0].grad, params[1].grad = g, g[0, :2]
        optimizer.step()

    # interrupted after two steps, saved through a checkpoint file, resumed in a new optimizer
    first = fresh()
    optimizer = ALL[name](first)
    for g in grads[:2]:
        first[0].grad, first[1].grad = g, g[0, :2]
        optimizer.step()
    path = tmp_path / "opt.npz"
    save_checkpoint(path, optimizer=optimizer.state_dict(), params=[p.data for p in first])
    state = load_checkpoint(path)
    resumed = [Parameter(a) for a in state["params"]]
    optimizer = ALL[name](resumed)
    optimizer.load_state_dict(state["optimizer"])
    for g in grads[2:]:
        resumed[0].grad, resumed[1].grad = g, g[0, :2]
        optimizer.step()
    for a, b in zip(params, resumed):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-14)


def test_load_state_dict_refuses_a_different_model():
    optimizer = SGD([Parameter(np.ones(3))], lr=0.1, momentum=0.9)
    optimizer.param_groups[0]["params"][0].grad = np.ones(3)
    optimizer.step()
    saved = optimizer.state_dict()
    with pytest.raises(ValueError, match=r"groups of \[1\] parameters, this one has \[2\]"):
        SGD([Parameter(np.ones(3)), Parameter(np.ones(3))], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"momentum_buffer' of parameter 0 has shape \(3,\)"):
        SGD([Parameter(np.ones(4))], lr=0.1).load_state_dict(saved)


# ============================================================================ groups

def test_parameter_groups_have_their_own_settings():
    weight, bias = Parameter(np.ones(2)), Parameter(np.ones(2))
    optimizer = SGD([{"params": [weight]}, {"params": [bias], "weight_decay": 0.0, "lr": 0.5}],
                    lr=0.1, weight_decay=0.5)
    first, second = optimizer.param_groups
    assert (first["lr"], first["weight_decay"]) == (0.1, 0.5)      # defaults filled in
    assert (second["lr"], second["weight_decay"]) == (0.5, 0.0)    # the group's own
    weight.grad, bias.grad = np.zeros(2), np.zeros(2)
    optimizer.step()
    np.testing.assert_allclose(weight.data, 1 - 0.1 * 0.5)   # decayed with a zero gradient
    np.testing.assert_array_equal(bias.data, [1.0, 1.0])      # no decay on the bias group


def test_zero_grad_clears_every_group():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    optimizer = SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)
    optimizer.zero_grad()
    assert a.grad is None and b.grad is None


def test_group_errors():
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="SGD: got an empty list of parameters"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['momentun'\] in parameter group"):
        SGD([{"params": [p], "momentun": 0.9}], lr=0.1)
    with pytest.raises(ValueError, match="appears in more than one group"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError, match="parameters must be Tensors, got ndarray"):
        SGD([np.ones(2)], lr=0.1)
    with pytest.raises(TypeError, match="got a single Tensor"):
        SGD(p, lr=0.1)


# ============================================================================ clipping

def test_clip_grad_norm_scales_all_gradients_together():
    a, b, c = Parameter(np.zeros(2)), Parameter(np.zeros(1)), Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([12.0])     # global norm 13
    total = clip_grad_norm_([a, b, c], max_norm=6.5)
    assert total == pytest.approx(13.0)
    np.testing.assert_allclose(a.grad, [1.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(b.grad, [6.0], rtol=1e-6)
    assert c.grad is None


def test_clip_grad_norm_leaves_small_gradients_alone():
    p = Parameter(np.zeros(2, np.float32))
    p.grad = np.array([0.3, 0.4], np.float32)
    assert clip_grad_norm_(p, max_norm=1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(p.grad, np.array([0.3, 0.4], np.float32))
    assert p.grad.dtype == np.float32


# ============================================================================ schedules

def lr_sequence(schedule, steps):
    """The learning rate in force at step 0, 1, ..., steps (stepping after each read)."""
    values = [schedule.optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        schedule.step()
        values.append(schedule.optimizer.param_groups[0]["lr"])
    return values


def sgd(lr=1.0):
    return SGD([Parameter(np.ones(1))], lr=lr)


def test_step_lr():
    lrs = lr_sequence(StepLR(sgd(0.1), step_size=30, gamma=0.1), 90)
    assert lrs[0] == lrs[29] == 0.1
    assert lrs[30] == lrs[59] == pytest.approx(0.01)
    assert lrs[60] == pytest.approx(0.001) and lrs[90] == pytest.approx(1e-4)


def test_multi_step_lr():
    lrs = lr_sequence(MultiStepLR(sgd(1.0), milestones=[3, 5], gamma=0.5), 6)
    assert lrs == pytest.approx([1, 1, 1, 0.5, 0.5, 0.25, 0.25])


def test_exponential_lr():
    assert lr_sequence(ExponentialLR(sgd(2.0), gamma=0.5), 3) == pytest.approx([2, 1, 0.5, 0.25])


def test_cosine_annealing():
    schedule = CosineAnnealingLR(sgd(1.0), T_max=10, eta_min=0.1)
    lrs = lr_sequence(schedule, 12)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.55)                     # halfway: the mean
    assert lrs[10] == lrs[12] == pytest.approx(0.1)          # then it stays at eta_min
    assert lrs[2] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.2)) / 2)


def test_decay_every_2_4_epochs_steps_per_iteration():
    # EfficientNet: ×0.97 every 2.4 epochs; 10 iterations per epoch -> every 24 iterations
    schedule = DecayEveryNEpochs(sgd(0.256), every=2.4, decay=0.97, steps_per_epoch=10)
    lrs = lr_sequence(schedule, 72)
    assert lrs[23] == pytest.approx(0.256) and lrs[24] == pytest.approx(0.256 * 0.97)
    assert lrs[47] == pytest.approx(0.256 * 0.97) and lrs[48] == pytest.approx(0.256 * 0.97 ** 2)
    assert lrs[72] == pytest.approx(0.256 * 0.97 ** 3)
    assert schedule.epoch == pytest.approx(7.2)


def test_decay_every_n_epochs_smooth():
    schedule = DecayEveryNEpochs(sgd(1.0), every=2.0, decay=0.25, staircase=False)
    assert lr_sequence(schedule, 2) == pytest.approx([1.0, 0.5, 0.25])


def test_linear_warmup_then_cosine():
    optimizer = sgd(0.4)
    schedule = LinearWarmup(CosineAnnealingLR(optimizer, T_max=10, steps_per_epoch=2),
                            warmup_epochs=2)
    lrs = lr_sequence(schedule, 20)                           # two steps per epoch
    assert lrs[:5] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4 * (1 + math.cos(math.pi * 0.2)) / 2])
    assert lrs[10] == pytest.approx(0.2) and lrs[20] == pytest.approx(0.0)


def test_warmup_start_factor():
    schedule = LinearWarmup(StepLR(sgd(1.0), step_size=100), warmup_epochs=4, start_factor=0.2)
    assert lr_sequence(schedule, 5) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_schedules_scale_each_group_from_its_own_base():
    a, b = Parameter(np.ones(1)), Parameter(np.ones(1))
    optimizer = SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.1)
    schedule = StepLR(optimizer, step_size=1, gamma=0.5)
    schedule.step()
    assert schedule.get_lr() == pytest.approx([0.05, 0.005])
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.05, 0.005])


def test_schedule_state_dict_resumes():
    schedule = DecayEveryNEpochs(sgd(1.0), every=2.4, steps_per_epoch=5)
    lr_sequence(schedule, 17)
    resumed = DecayEveryNEpochs(sgd(1.0), every=2.4, steps_per_epoch=5)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.get_lr() == schedule.get_lr()
    assert resumed.optimizer.param_groups[0]["lr"] == schedule.optimizer.param_groups[0]["lr"]
    assert lr_sequence(resumed, 10)[-1] == lr_sequence(schedule, 10)[-1]


# ============================================================================ EMA

class Tiny(Module):
    def __init__(self):
        super().__init__()
        self.weight = Parameter(np.array([1.0, 2.0], np.float32))
        self.register_buffer("running_mean", np.zeros(2, np.float32))
        self.register_buffer("num_batches", np.zeros((), np.int64))


def test_ema_update_apply_restore():
    model = Tiny()
    ema = ExponentialMovingAverage(model, decay=0.9)
    model.weight.data[...] = [11.0, 12.0]
    model.running_mean[...] = [1.0, 1.0]
    model.num_batches[...] = 5
    ema.update()                                    # shadow = 0.9·old + 0.1·new
    np.testing.assert_allclose(ema.shadow["weight"], [2.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(ema.shadow["running_mean"], [0.1, 0.1], rtol=1e-6)
    assert "num_batches" not in ema.shadow          # integer buffers are not averaged
    assert ema.shadow["weight"].dtype == np.float32

    ema.apply_to()
    np.testing.assert_allclose(model.weight.data, [2.0, 3.0], rtol=1e-6)
    with pytest.raises(RuntimeError, match="already applied"):
        ema.apply_to()
    ema.restore()
    np.testing.assert_array_equal(model.weight.data, [11.0, 12.0])
    np.testing.assert_array_equal(model.running_mean, [1.0, 1.0])
    with pytest.raises(RuntimeError, match="nothing to restore"):
        ema.restore()


def test_ema_context_manager_restores_even_after_an_error():
    model = Tiny()
    ema = ExponentialMovingAverage(model, decay=0.5)
    model.weight.data[...] = [3.0, 4.0]
    ema.update()
    with ema.averaged():
        np.testing.assert_allclose(model.weight.data, [2.0, 3.0])
    np.testing.assert_array_equal(model.weight.data, [3.0, 4.0])
    with pytest.raises(KeyError):
        with ema.averaged():
            raise KeyError("evaluation failed")
    np.testing.assert_array_equal(model.weight.data, [3.0, 4.0])


def test_ema_tensorflow_warmup_of_the_decay():
    model = Tiny()
    ema = ExponentialMovingAverage(model, decay=0.9999, use_num_updates=True)
    model.weight.data[...] = [0.0, 0.0]
    ema.update()                                    # decay_1 = min(0.9999, 2/11)
    np.testing.assert_allclose(ema.shadow["weight"], np.array([1.0, 2.0]) * 2 / 11, rtol=1e-6)
    assert ema.current_decay() == pytest.approx(2 / 11)


def test_ema_state_dict_round_trip():
    model = Tiny()
    ema = ExponentialMovingAverage(model, decay=0.8)
    model.weight.data[...] = [5.0, 5.0]
    ema.update()
    copy = ExponentialMovingAverage(Tiny(), decay=0.1)
    copy.load_state_dict(ema.state_dict())
    assert copy.decay == 0.8 and copy.num_updates == 1
    np.testing.assert_array_equal(copy.shadow["weight"], ema.shadow["weight"])


# ============================================================================ checkpoints

def test_checkpoint_round_trip_and_key_scheme(tmp_path):
    path = tmp_path / "run.npz"
    model = {"features.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
             "bn.num_batches": np.array(7)}
    extra = {"epoch": 3, "best": 0.75, "done": False, "note": "résumé", "nothing": None,
             "milestones": [30, 60], "nested": {"pair": (1.5, np.float32(2.0))},
             "tensor": Tensor(np.ones(2))}
    save_checkpoint(path, model=model, extra=extra)

    with np.load(path) as archive:                  # readable names, no pickle
        assert "model/features.0.weight" in archive.files
        assert "extra/nested/pair/1" in archive.files
        assert "__minicnn_checkpoint__" in archive.files

    state = load_checkpoint(path)
    assert set(state) == {"model", "extra"}
    np.testing.assert_array_equal(state["model"]["features.0.weight"], model["features.0.weight"])
    assert state["model"]["features.0.weight"].dtype == np.float32
    assert state["model"]["bn.num_batches"].dtype == np.array(7).dtype
    e = state["extra"]
    assert (e["epoch"], e["best"], e["done"], e["note"], e["nothing"]) == (3, 0.75, False,
                                                                          "résumé", None)
    assert e["milestones"] == [30, 60]
    assert e["nested"]["pair"][0] == 1.5
    assert e["nested"]["pair"][1].dtype == np.float32 and e["nested"]["pair"][1] == 2.0
    np.testing.assert_array_equal(e["tensor"], [1.0, 1.0])


def test_checkpoint_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="keys must be strings without '/'"):
        save_checkpoint(tmp_path / "a.npz", model={"a/b": np.ones(1)})
    with pytest.raises(TypeError, match="keys must be strings"):
        save_checkpoint(tmp_path / "a.npz", model={1: np.ones(1)})
    with pytest.raises(TypeError, match="cannot store a set at 'extra/tags'"):
        save_checkpoint(tmp_path / "a.npz", extra={"tags": {1, 2}})
    with pytest.raises(ValueError, match="nothing to save"):
        save_checkpoint(tmp_path / "a.npz")
    assert os.listdir(tmp_path) == []


def crash_mid_write(file, entries):
    file.write(b"PK\x03\x04 half of a zip archive")
    raise OSError("disk full (simulated)")


@pytest.mark.parametrize("where", ["writing", "renaming"])
def test_a_crash_keeps_the_old_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch,
                                                                      where):
    path = tmp_path / "last.npz"
    save_checkpoint(path, extra={"epoch": 1})
    if where == "writing":
        monkeypatch.setattr(checkpoint_module, "_write_npz", crash_mid_write)
    else:
        def failing_replace(source, destination):
            raise OSError("rename failed (simulated)")
        monkeypatch.setattr(os, "replace", failing_replace)   # wherever the rename is
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, extra={"epoch": 2})
    assert os.listdir(tmp_path) == ["last.npz"]
    assert load_checkpoint(path)["extra"]["epoch"] == 1


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model={"w": np.random.default_rng(0).standard_normal(1000)})
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 10, 0):
        broken = tmp_path / f"cut{cut}.npz"
        broken.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="load_checkpoint: .* truncated"):
            load_checkpoint(broken)


def test_corrupted_array_data_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model={"w": np.zeros(1000)})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                    # flip bits inside the stored array
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="load_checkpoint: .* (truncated|corrupt)"):
        load_checkpoint(path)


def test_foreign_files_are_a_clear_error(tmp_path):
    plain_npz = tmp_path / "weights.npz"
    np.savez(plain_npz, w=np.ones(3))
    with pytest.raises(ValueError, match="an .npz archive but not a minicnn checkpoint"):
        load_checkpoint(plain_npz)
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match="single .npy array, not a minicnn checkpoint"):
        load_checkpoint(npy)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a minicnn checkpoint"):
        load_checkpoint(text)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")


@pytest.mark.parametrize("grad_order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_adam_kernel_equals_the_array_formula(dtype, grad_order):
    """kernels/optim.py: the one-pass Numba Adam step against the same step written in
    array operations, over several steps (m and v carry over), for a gradient in C order
    and in a transposed layout."""
    from minicnn.kernels.optim import adam_step, adam_step_reference
    rng = np.random.default_rng(0)
    param = rng.standard_normal((37, 11)).astype(dtype)
    fused, reference = [param.copy(), np.zeros_like(param), np.zeros_like(param)], \
        [param.copy(), np.zeros_like(param), np.zeros_like(param)]
    for t in range(1, 6):
        grad = np.asarray(rng.standard_normal(param.shape).astype(dtype), order=grad_order)
        scalars = (0.9, 0.999, 1e-3 / (1 - 0.9 ** t), 1 / np.sqrt(1 - 0.999 ** t), 1e-8)
        adam_step(fused[0], grad, fused[1], fused[2], *scalars)
        adam_step_reference(reference[0], grad, reference[1], reference[2], *scalars)
    tolerance = 1e-6 if dtype == np.float32 else 1e-13
    for got, expected in zip(fused, reference):
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
    assert not np.allclose(fused[0], param)              # it did move


# ============================================================================ state follows its parameter

def model_with_one_weight(dtype=np.float32):
    model = Module()
    model.weight = Parameter(np.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3))
    return model


def state_arrays(optimizer, p):
    return [v for v in optimizer.state[p].values() if hasattr(v, "shape")]


@pytest.mark.parametrize("name", sorted(ALL))
def test_optimizer_state_follows_a_dtype_change_of_its_parameter(name):
    """Step in float32, ``model.double()``, step again: the moments are float64 too, and
    the second step equals a float64 optimizer's fed the same history."""
    model = model_with_one_weight()
    optimizer = ALL[name](model.parameters())
    model.weight.grad = np.full((2, 3), 0.25, np.float32)
    optimizer.step()
    model.double()
    model.weight.grad = np.full((2, 3), -0.5)
    optimizer.step()
    assert model.weight.dtype == np.float64
    assert all(a.dtype == np.float64 for a in state_arrays(optimizer, model.weight))


class OtherDevice(np.ndarray):
    """Stands in for a GPU array on a machine without one: a type of its own."""


@pytest.mark.parametrize("name", sorted(ALL))
def test_optimizer_state_follows_its_parameter_to_another_device(name, monkeypatch):
    """Step on the CPU, move the model, step again: the state must move with it (before,
    the second step mixed a CuPy parameter with NumPy moments: a TypeError on a GPU)."""
    from minicnn.optim import optimizer as optimizer_module
    moves = []

    def fake_device_of(array):
        return "other" if isinstance(array, OtherDevice) else "cpu"

    def fake_to_device(array, device):
        moves.append(device)
        return array.view(OtherDevice) if device == "other" else np.asarray(array)
    monkeypatch.setattr(optimizer_module, "device_of", fake_device_of)
    monkeypatch.setattr(optimizer_module, "to_device", fake_to_device)

    model = model_with_one_weight(np.float64)
    optimizer = ALL[name](model.parameters())
    model.weight.grad = np.full((2, 3), 0.25)
    optimizer.step()
    assert not moves                                 # nothing moved while nothing moved
    model.weight.data = model.weight.data.view(OtherDevice)      # what model.to() does
    model.weight.grad = np.full((2, 3), -0.5).view(OtherDevice)
    optimizer.step()
    arrays = state_arrays(optimizer, model.weight)
    assert arrays and all(isinstance(a, OtherDevice) for a in arrays)
    assert set(moves) == {"other"}


def test_the_cuda_adam_update_compiles_as_cupy_calls_it(tmp_path):
    """The ElementwiseKernel's body calls ``adam_update`` with CuPy's argument forms
    (outputs as references, inputs and scalars as const values): instantiate it that way
    for float and double and compile with nvcc, so the GPU path's source is checked on a
    machine without a GPU."""
    import shutil
    import subprocess
    from minicnn.kernels.optim import _ADAM_UPDATE_CUDA
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed on this machine")
    calls = "\n".join(f"""
__global__ void adam_{T}(long long n, const {T}* g, {T}* p, {T}* m, {T}* v) {{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {{
        const {T} grad = g[i], beta1 = 0.9, beta2 = 0.999, step_size = 1e-3,
                  correction2 = 1, eps = 1e-8;
        {T} &param = p[i], &m_i = m[i], &v_i = v[i];
        adam_update(param, grad, m_i, v_i, beta1, beta2, step_size, correction2, eps);
    }}
}}""" for T in ("float", "double"))
    unit = tmp_path / "adam.cu"
    unit.write_text(_ADAM_UPDATE_CUDA + calls)
    result = subprocess.run([nvcc, "-c", str(unit), "-o", str(tmp_path / "adam.o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"nvcc failed:\n{result.stderr}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_adam_on_the_gpu_equals_the_array_formula(dtype):
    from minicnn.backend import cupy_or_none
    from minicnn.kernels.optim import adam_step, adam_step_reference
    cupy = cupy_or_none()
    if cupy is None:
        pytest.skip("needs a CUDA GPU and CuPy")
    rng = np.random.default_rng(0)
    param = rng.standard_normal((37, 11)).astype(dtype)
    fused = [cupy.asarray(param), cupy.zeros(param.shape, dtype), cupy.zeros(param.shape, dtype)]
    reference = [param.copy(), np.zeros_like(param), np.zeros_like(param)]
    for t in range(1, 6):
        grad = rng.standard_normal(param.shape).astype(dtype)
        scalars = (0.9, 0.999, 1e-3 / (1 - 0.9 ** t), 1 / np.sqrt(1 - 0.999 ** t), 1e-8)
        adam_step(fused[0], cupy.asarray(grad).T.copy().T, fused[1], fused[2], *scalars)
        adam_step_reference(reference[0], grad, reference[1], reference[2], *scalars)
    tolerance = 1e-6 if dtype == np.float32 else 1e-13
    for got, expected in zip(fused, reference):
        np.testing.assert_allclose(got.get(), expected, rtol=tolerance, atol=tolerance)
