"""EfficientNetV2's progressive learning as a training-loop callback
(minicnn.progressive.ProgressiveLearning): what it sets at each stage, what it refuses."""
import numpy as np
import pytest

from minicnn import nn
from minicnn.callbacks import Callback
from minicnn.optim import SGD
from minicnn.train import fit
from minicnn.data import DataLoader
from minicnn.data import augment
from minicnn.data.augment import RandAugment
from minicnn.data.transforms import Compose, Normalize
from minicnn.progressive import (ProgressiveLearning, ProgressiveSchedule, mixed_soft_targets,
                                 size_refused)


class Loop:
    """What a callback reads from the training loop."""

    def __init__(self, model, train_loader, epochs):
        self.model, self.train_loader, self.epochs = model, train_loader, epochs
        self.optimizer = self.schedule = self.test_loader = None
        self.history, self.device, self.epoch, self.batch = [], "cpu", 0, 0


def any_size_model(classes=3):
    """Convolutions, global pooling, dropout, a classifier: takes any image of 4 px or more."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                         nn.GlobalAvgPool2d(), nn.Flatten(), nn.Dropout(0.5),
                         nn.Linear(4, classes))


def one_size_model(size=12):
    """A classifier on the flattened map: takes only size × size images."""
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(),
                         nn.Linear(2 * size * size, 3))


def loop_for(model, epochs=4, randaugment=True, size=32):
    images = np.random.default_rng(0).integers(0, 256, (8, 1, size, size)).astype(np.uint8)
    steps = ([RandAugment(2, 0)] if randaugment else []) + [Normalize((0.5,), (0.25,))]
    loader = DataLoader((images, np.arange(8) % 3), batch_size=4, transform=Compose(steps))
    return Loop(model, loader, epochs)


def table(stages=4, **ranges):
    settings = dict(image_size=(16, 32), dropout=(0.1, 0.4), randaugment=(3, 9))
    settings.update(ranges)
    return ProgressiveLearning(stages, **settings)


def run_epoch(callback, loop, epoch):
    """on_epoch_start, then on_batch over the epoch's batches: the batches as trained on."""
    loop.epoch = epoch
    callback.on_epoch_start(loop, epoch)
    batches = []
    for loop.batch, (images, labels) in enumerate(loop.train_loader.batches(epoch)):
        batches.append(callback.on_batch(loop, images, labels))
    return batches


def test_each_stage_sets_size_dropout_and_magnitude_together():
    loop = loop_for(any_size_model())
    callback = table()
    callback.on_fit_start(loop)
    dropout = [m for m in loop.model.modules() if isinstance(m, nn.Dropout)][0]
    randaugment = loop.train_loader.transform.transforms[0]
    expected = [(16, 0.1, 3.0), (21, 0.2, 5.0), (27, 0.3, 7.0), (32, 0.4, 9.0)]
    for epoch, (size, rate, magnitude) in enumerate(expected):
        batches = run_epoch(callback, loop, epoch)
        assert all(images.shape == (4, 1, size, size) for images, _ in batches)
        assert all(labels.dtype == np.int64 for _, labels in batches)      # no mixup
        assert dropout.p == pytest.approx(rate)
        assert randaugment.magnitude == pytest.approx(magnitude)


def test_stages_are_spread_over_the_runs_epochs_and_a_resumed_run_needs_no_state():
    loop = loop_for(any_size_model(), epochs=8)
    uninterrupted = table()
    uninterrupted.on_fit_start(loop)
    sizes = [run_epoch(uninterrupted, loop, e)[0][0].shape[-1] for e in range(8)]
    assert sizes == [16, 16, 21, 21, 27, 27, 32, 32]
    assert uninterrupted.state_dict() == {}
    resumed = table()                                   # a new process, at epoch 5
    resumed.load_state_dict(uninterrupted.state_dict())
    resumed.on_fit_start(loop)
    again = run_epoch(resumed, loop, 5)
    np.testing.assert_array_equal(again[1][0], run_epoch(uninterrupted, loop, 5)[1][0])


def test_the_final_stage_is_the_full_size_batch_unchanged():
    loop = loop_for(any_size_model())
    callback = table()
    callback.on_fit_start(loop)
    trained_on = run_epoch(callback, loop, 3)[0][0]
    images, labels = loop.train_loader.batch(3, 0)          # at the stage's magnitude
    np.testing.assert_array_equal(trained_on, images)
    assert callback.on_batch(loop, images, labels)[0] is images


def test_mixup_makes_soft_targets_deterministic_by_seed_epoch_and_batch():
    loop = loop_for(any_size_model(), randaugment=False)
    callback = ProgressiveLearning(2, image_size=(32, 32), mixup=(0.2, 0.8), seed=5)
    callback.on_fit_start(loop)
    first = run_epoch(callback, loop, 0)
    assert callback.stage.mixup == pytest.approx(0.2)
    for images, targets in first:
        assert targets.shape == (4, 3) and targets.dtype == images.dtype
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    repeated = run_epoch(callback, loop, 0)
    for (a, ta), (b, tb) in zip(first, repeated):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta, tb)
    assert not np.array_equal(first[0][1], run_epoch(callback, loop, 1)[0][1])


def test_soft_targets_mix_the_one_hot_labels_with_the_images_lambda():
    images = np.random.default_rng(0).standard_normal((5, 1, 4, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1])
    mixed, targets = mixed_soft_targets(images, labels, 0.4, 4, np.random.default_rng(3))
    same_mix, a, b, lam = augment.mixup(images, labels, 0.4, np.random.default_rng(3))
    np.testing.assert_array_equal(mixed, same_mix)
    expected = lam * np.eye(4)[a] + (1 - lam) * np.eye(4)[b]
    np.testing.assert_allclose(targets, expected, rtol=1e-6)
    assert 0 < lam < 1 and not np.array_equal(a, b)


# ------------------------------------------------------------------ refused, one line each

@pytest.mark.parametrize("stages, ranges, message", [
    (0, {}, "stages must be an int >= 1, got 0"),
    (2, dict(image_size=(32, 16)), "image_size minimum 32 is above its maximum 16"),
    (2, dict(mixup=(-0.5, 0.2)), "mixup alpha must be at least 0, got"),
    (2, dict(randaugment=(5, 31)), r"randaugment magnitude must lie in \[0, 30\]"),
    (2, dict(dropout=(0.2, 1.0)), r"dropout must lie in \[0, 0.999\]"),
])
def test_bad_ranges_are_refused_when_the_callback_is_made(stages, ranges, message):
    with pytest.raises(ValueError, match=message):
        table(stages, **ranges)


def test_a_number_of_stages_needs_an_image_size_range():
    with pytest.raises(ValueError, match=r"needs image_size=\(minimum, maximum\)"):
        ProgressiveLearning(3, dropout=(0.1, 0.3))


def test_a_size_the_network_cannot_take_is_refused_before_training():
    loop = loop_for(one_size_model(32))
    callback = ProgressiveLearning(2, image_size=(16, 32))
    with pytest.raises(ValueError, match=r"stage 1 trains at 16x16, which the network cannot "
                                         r"take: Linear\(2048, 3\): expected input with last "
                                         r"dimension 2048, got shape \(1, 512\)"):
        callback.on_fit_start(loop)
    assert size_refused(loop.model, 32, 1) is None
    assert size_refused(any_size_model(), 3, 1) is not None


def test_settings_with_nowhere_to_go_and_a_schedule_of_another_length_are_refused():
    no_dropout = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GlobalAvgPool2d(), nn.Flatten(),
                               nn.Linear(2, 3))
    with pytest.raises(ValueError, match="dropout rises to 0.4 but the model has no nn.Dropout"):
        table().on_fit_start(loop_for(no_dropout))
    with pytest.raises(ValueError, match="magnitude rises to 9 but the training pipeline has "
                                         "no RandAugment"):
        table().on_fit_start(loop_for(any_size_model(), randaugment=False))
    schedule = ProgressiveSchedule(6, 3, (16, 32))
    with pytest.raises(ValueError, match="expected a schedule of the run's 4 epochs, got one of 6"):
        ProgressiveLearning(schedule).on_fit_start(loop_for(any_size_model()))
    with pytest.raises(ValueError, match="a ProgressiveSchedule or a number of stages"):
        ProgressiveLearning(schedule, mixup=(0, 1))


# ------------------------------------------------------------------ inside fit

class Recorder(Callback):
    """Notes the shape of every batch the model trains on and the dropout rate then."""

    def __init__(self, dropout):
        self.dropout, self.seen = dropout, []

    def on_batch(self, loop, images, labels):
        self.seen.append((loop.epoch, images.shape[-1], self.dropout.p))
        return images, labels


def test_fit_trains_each_epoch_at_its_stage_and_evaluates_at_the_final_size():
    model = any_size_model().double()
    images = np.random.default_rng(1).integers(0, 256, (8, 1, 24, 24)).astype(np.uint8)
    transform = Compose([RandAugment(1, 0), Normalize((0.5,), (0.25,), dtype=np.float64)])
    train = DataLoader((images, np.arange(8) % 3), batch_size=4, transform=transform)
    test = DataLoader((images, np.arange(8) % 3), batch_size=8,
                      transform=Compose([Normalize((0.5,), (0.25,), dtype=np.float64)]))
    dropout = [m for m in model.modules() if isinstance(m, nn.Dropout)][0]
    recorder, lines = Recorder(dropout), []
    progressive = ProgressiveLearning(3, image_size=(8, 24), dropout=(0.0, 0.2),
                                      randaugment=(0, 4), log=lines.append)
    history = fit(model, SGD(model.parameters(), lr=0.01), train, test, epochs=3,
                  callbacks=[progressive, recorder], progress=False, log=lambda line: None)
    assert recorder.seen == [(0, 8, 0.0), (0, 8, 0.0), (1, 16, 0.1), (1, 16, 0.1),
                             (2, 24, 0.2), (2, 24, 0.2)]
    assert len(history) == 3 and history[-1]["test_accuracy"] is not None
    assert len(lines) == 3 and "size 16" in lines[1]


def test_a_3x3_convolution_on_a_1x1_map_learns_nothing_off_its_centre():
    """Why progressive learning on tiny images fails (experiments/untrained_taps.py): a
    3×3 convolution whose input is 1×1 gets no gradient at its eight off-centre taps."""
    from experiments.untrained_taps import untrained_taps

    def network():
        nn.init.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(4, 4, 3, padding=1), nn.GlobalAvgPool2d(),
                             nn.Flatten(), nn.Linear(4, 10))
    assert untrained_taps(network(), 2) == (1, 2)       # the second runs at 1×1
    assert untrained_taps(network(), 4) == (0, 2)       # at 2×2 every tap is read
