"""Test-time augmentation (minicnn.tta) and EfficientNetV2's progressive learning
schedule (minicnn.progressive)."""
import numpy as np
import pytest

import architectures
from minicnn import Tensor, nn, no_grad
from minicnn.convolutionize import convolutionize
from minicnn.progressive import EFFICIENTNET_V2_TABLE6, ProgressiveSchedule
from minicnn.tta import dense_predict, predict, ten_crops, tiled_centre


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def small_classifier():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 5 * 5, 3))
    return model.double()


# ---------------------------------------------------------------------------- 10 crops

def test_ten_crops_are_the_corners_the_centre_and_their_mirrors():
    x = np.arange(2 * 1 * 6 * 7, dtype=np.float64).reshape(2, 1, 6, 7)
    crops = ten_crops(x, 4)
    assert crops.shape == (10, 2, 1, 4, 4)
    np.testing.assert_array_equal(crops[0], x[:, :, :4, :4])
    np.testing.assert_array_equal(crops[3], x[:, :, 2:, 3:])
    np.testing.assert_array_equal(crops[4], x[:, :, 1:5, 1:5])
    np.testing.assert_array_equal(crops[5:], crops[:5][..., ::-1])


def test_ten_crop_prediction_is_the_mean_of_the_ten_softmaxes():
    model = small_classifier()
    x = np.random.default_rng(0).standard_normal((3, 1, 14, 14))
    probabilities = predict(model, x, "10crop", crop_size=12)
    with no_grad():
        expected = np.mean([softmax(model(Tensor(np.ascontiguousarray(v))).data)
                            for v in ten_crops(x, 12)], axis=0)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-12)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_flip_prediction_averages_the_image_and_its_mirror():
    model = small_classifier()
    x = np.random.default_rng(1).standard_normal((2, 1, 12, 12))
    with no_grad():
        expected = (softmax(model(Tensor(x)).data)
                    + softmax(model(Tensor(np.ascontiguousarray(x[..., ::-1]))).data)) / 2
    np.testing.assert_allclose(predict(model, x, "flip"), expected, rtol=1e-12)


def test_an_unknown_mode_and_a_crop_larger_than_the_image_are_refused():
    with pytest.raises(ValueError, match="must be one of none, flip, 10crop, got '5crop'"):
        predict(small_classifier(), np.zeros((1, 1, 12, 12)), "5crop")
    with pytest.raises(ValueError, match="crop 16 is larger than the 12x12 images"):
        ten_crops(np.zeros((1, 1, 12, 12)), 16)


# ----------------------------------------------------------------- dense evaluation

def test_dense_evaluation_at_the_training_size_equals_the_plain_prediction():
    model = small_classifier()
    dense = convolutionize(model, (1, 12, 12))
    x = np.random.default_rng(2).standard_normal((2, 1, 12, 12))
    np.testing.assert_allclose(dense_predict(dense, x, [12], flip=False), predict(model, x),
                               rtol=1e-12)


def test_dense_evaluation_averages_score_maps_over_cells_scales_and_mirrors():
    model = small_classifier()
    dense = convolutionize(model, (1, 12, 12))
    x = np.random.default_rng(3).standard_normal((2, 1, 16, 16))
    result = dense_predict(dense, x, [12, 16])
    with no_grad():
        views = []
        for size in (12, 16):
            from minicnn.data.transforms import resize
            r = resize(x, size)
            for v in (r, r[..., ::-1]):
                scores = dense(Tensor(np.ascontiguousarray(v))).data
                views.append(softmax(scores.mean(axis=(2, 3))))
    np.testing.assert_allclose(result, np.mean(views, axis=0), rtol=1e-12)
    assert dense(Tensor(x)).shape == (2, 3, 3, 3)                 # a 3×3 score map at 16


# ------------------------------------------------------------ progressive learning

def test_stage_values_are_interpolated_linearly_between_minimum_and_maximum():
    schedule = ProgressiveSchedule(epochs=8, stages=4, image_size=(128, 300),
                                   dropout=(0.1, 0.3), randaugment=(5, 15), mixup=(0, 0.3))
    stages = list(schedule)
    assert [s.image_size for s in stages] == [128, 185, 243, 300]
    np.testing.assert_allclose([s.dropout for s in stages], [0.1, 0.1 + 0.2 / 3,
                                                             0.1 + 0.4 / 3, 0.3])
    np.testing.assert_allclose([s.randaugment for s in stages], [5, 5 + 10 / 3,
                                                                 5 + 20 / 3, 15])
    np.testing.assert_allclose([s.mixup for s in stages], [0, 0.1, 0.2, 0.3])
    assert [(s.first_epoch, s.last_epoch) for s in stages] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert [schedule.at_epoch(e).index for e in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_sizes_round_down_to_the_network_stride_and_uneven_epochs_go_first():
    schedule = ProgressiveSchedule(epochs=7, stages=3, image_size=(128, 300), size_multiple=32)
    assert [s.image_size for s in schedule] == [128, 192, 288]
    assert [(s.first_epoch, s.last_epoch) for s in schedule] == [(0, 2), (3, 4), (5, 6)]


def test_one_stage_trains_at_the_maximum():
    stage = ProgressiveSchedule(epochs=2, stages=1, image_size=(64, 96), dropout=(0, 0.2)).stage(0)
    assert stage.image_size == 96 and stage.dropout == pytest.approx(0.2)


def test_table6_settings_build_schedules_for_every_efficientnet_v2():
    for name, settings in EFFICIENTNET_V2_TABLE6.items():
        assert name in architectures.available("efficientnet_v2")
        schedule = ProgressiveSchedule(epochs=4, stages=4, size_multiple=32, **settings)
        assert schedule.stage(3).image_size <= settings["image_size"][1]


@pytest.mark.parametrize("options, message", [
    (dict(stages=0), "stages must be an int >= 1"),
    (dict(epochs=2, stages=3), "3 stages need at least 3 epochs"),
    (dict(image_size=(300, 128)), "image_size minimum 300 is above its maximum 128"),
    (dict(image_size=(20, 64), size_multiple=32, min_size=32),
     "first stage's image size 0 .* below the network's minimum 32"),
    (dict(dropout=(0.1, 1.5)), "dropout must lie in"),
    (dict(randaugment=(5, 40)), "randaugment magnitude must lie in"),
    (dict(mixup=(-0.1, 0.2)), "mixup alpha must be at least 0"),
    (dict(mixup=(0, float("nan"))), "mixup alpha must be finite"),
])
def test_bad_schedules_are_refused_with_one_clear_line(options, message):
    settings = dict(epochs=4, stages=2, image_size=(64, 128))
    settings.update(options)
    with pytest.raises(ValueError, match=message):
        ProgressiveSchedule(**settings)


@pytest.mark.parametrize("scales", [[], [0], [12.5], [True]])
def test_dense_evaluation_refuses_scales_that_are_not_whole_positive_sides(scales):
    dense = convolutionize(small_classifier(), (1, 12, 12))
    with pytest.raises(ValueError, match=r"expected one or more scales Q \(the shorter side, "
                                         r"whole pixels >= 1\), got"):
        dense_predict(dense, np.zeros((1, 1, 12, 12)), scales)


def test_dense_evaluation_keeps_the_image_centred_where_the_cells_do_not_tile_it():
    """A 12-px window, stride 4: at 19 px two cells cover 16 px. The 3 left over are cut
    1 from the top/left and 2 from the bottom/right, not all 3 from the bottom/right."""
    x = np.arange(2 * 1 * 19 * 19, dtype=np.float64).reshape(2, 1, 19, 19)
    np.testing.assert_array_equal(tiled_centre(x, (12, 12), (4, 4)), x[:, :, 1:17, 1:17])
    np.testing.assert_array_equal(tiled_centre(x[..., :16], (12, 12), (4, 4)),
                                  x[:, :, 1:17, :16])              # 16 wide: tiled already
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                          nn.Linear(2 * 2 * 2, 3)).double()          # 12 → 10 → 2×2
    dense = convolutionize(model, (1, 12, 12))
    assert dense.score_map_stride == (4, 4) and dense.score_map_window == (12, 12)
    centre = x[:, :, 1:17, 1:17] / x.max()
    with no_grad():
        scores = dense(Tensor(np.ascontiguousarray(centre))).data
    assert scores.shape[2:] == (2, 2)
    np.testing.assert_allclose(dense_predict(dense, x / x.max(), [19], flip=False),
                               softmax(scores.mean(axis=(2, 3))), rtol=1e-12)
    with pytest.raises(ValueError, match="at least the network's 12x12 input, got 10x10"):
        tiled_centre(x[:, :, :10, :10], (12, 12), (4, 4))
