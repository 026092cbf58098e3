"""convolutionize: fully connected layers as convolutions, a classifier that slides."""
from collections import OrderedDict

import numpy as np
import pytest

import architectures
from minicnn import nn, no_grad, Tensor
from minicnn.convolutionize import convolutionize, score_map_size


def run(model, x):
    model.eval()
    with no_grad():
        return model(Tensor(x)).data


def lenet5():
    nn.init.manual_seed(0)
    return architectures.create("lenet5", num_classes=10, in_channels=1).double()


def test_lenet5_scores_equal_at_the_original_size():
    model = lenet5()
    conv = convolutionize(model, 28)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28))
    out = run(conv, x)
    assert out.shape == (3, 10, 1, 1)
    np.testing.assert_allclose(out[:, :, 0, 0], run(model, x), rtol=1e-12, atol=1e-12)
    assert not any(isinstance(m, (nn.Linear, nn.Flatten)) for m in conv.modules())
    assert conv.fc1.kernel_size == (4, 4) and conv.fc2.kernel_size == (1, 1)
    assert isinstance(model.fc1, nn.Linear)            # the original is untouched


def test_lenet5_each_cell_is_the_model_on_its_crop():
    """No padding in LeNet-5: cell (i, j) = the original model on the 28×28 crop at
    (4i, 4j), 4 being the trunk's effective stride (two 2×2 pools)."""
    model = lenet5()
    conv = convolutionize(model, 28)
    assert conv.score_map_stride == (4, 4)
    height, width = 40, 36
    image = np.random.default_rng(1).standard_normal((2, 1, height, width))
    scores = run(conv, image)
    rows, cols = score_map_size(28, height, 4), score_map_size(28, width, 4)
    assert scores.shape == (2, 10, rows, cols) == (2, 10, 4, 3)
    for i in range(rows):
        for j in range(cols):
            crop = image[:, :, 4 * i:4 * i + 28, 4 * j:4 * j + 28]
            np.testing.assert_allclose(scores[:, :, i, j], run(model, crop),
                                       rtol=1e-10, atol=1e-10)


def padded_net():
    """A padded trunk with a global pool before the classifier (ResNet-style head)."""
    nn.init.manual_seed(3)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 4, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(4, 6, 3, padding=1), relu2=nn.ReLU(),
        gap=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
        classifier=nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                 nn.Dropout(0.5), nn.Linear(8, 3), nn.Softmax(axis=-1)),
    )).double()


def test_padded_trunk_matches_at_its_size_and_is_the_trunk_classified_window_by_window():
    model = padded_net()
    bn = model.classifier[1]
    bn.running_mean[...] = np.linspace(-1, 1, 8)
    bn.running_var[...] = np.linspace(0.5, 2, 8)
    conv = convolutionize(model, 12)
    x = np.random.default_rng(2).standard_normal((2, 1, 12, 12))
    np.testing.assert_allclose(run(conv, x)[:, :, 0, 0], run(model, x), rtol=1e-12, atol=1e-12)

    big = np.random.default_rng(3).standard_normal((1, 1, 20, 16))
    scores = run(conv, big)
    stride = conv.score_map_stride[0]
    assert stride == 2
    assert scores.shape == (1, 3, score_map_size(12, 20, 2), score_map_size(12, 16, 2))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-12)  # softmax over classes

    # What a cell is: the trunk run on the whole image, its 6×6 feature window averaged
    # (the global pool at the original size) and classified.
    trunk = model[:5]
    features = run(trunk, big)
    head = nn.Sequential(nn.GlobalAvgPool2d(), nn.Flatten(), *list(model.classifier))
    for i in range(scores.shape[2]):
        for j in range(scores.shape[3]):
            window = features[:, :, i:i + 6, j:j + 6]
            np.testing.assert_allclose(scores[:, :, i, j], run(head, window), rtol=1e-10)

    # ... which is not the model on the crop: the crop's own padding zeros replace real
    # pixels at its border. Only features whose receptive field lies inside the crop agree.
    crop = big[:, :, 2:14, 2:14]                       # the crop of cell (1, 1)
    assert not np.allclose(scores[:, :, 1, 1], run(model, crop))
    # a trunk feature at crop position p (stride 2, receptive field 8) sees crop rows
    # 2p−3 … 2p+4: inside 0 … 11 only for p = 2, 3 — those agree exactly (the big map's
    # positions are the crop's + 1, the crop starting 2 pixels = 1 feature in)
    crop_features = run(trunk, crop)
    np.testing.assert_allclose(features[:, :, 3:5, 3:5], crop_features[:, :, 2:4, 2:4],
                               rtol=1e-12, atol=1e-12)
    border_big, border_crop = features[:, :, 1, 1:7], crop_features[:, :, 0, :]
    assert not np.allclose(border_big, border_crop)


@pytest.mark.parametrize("name, size", [("alexnet", 227), ("vgg16_bn_cifar", 32)])
def test_zoo_models_written_in_torchvision_style_convolutionize(name, size):
    """Their forward is classifier(flatten(avgpool(features(x)))): traced as a chain."""
    if name not in architectures.available():
        pytest.skip(f"architecture {name!r} is not registered")
    nn.init.manual_seed(0)
    model = architectures.create(name, num_classes=10)
    conv = convolutionize(model, size)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    expected = run(model, x)
    got = run(conv, x)
    assert got.shape == (1, 10, 1, 1)
    assert np.abs(got[:, :, 0, 0] - expected).max() <= 1e-4 * np.abs(expected).max()
    stride = conv.score_map_stride[0]
    assert stride == 32
    bigger = np.zeros((1, 3, size + 2 * stride, size + stride), dtype=np.float32)
    assert run(conv, bigger).shape == (1, 10, 3, 2)


def test_unsupported_structures_are_rejected_with_a_reason():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(self.conv(x).flatten(1))

    with pytest.raises(ValueError, match="no Flatten"):
        convolutionize(Functional(), 6)

    class Reordered(nn.Module):     # children registered in one order, applied in another
        def __init__(self):
            super().__init__()
            self.fc, self.flatten, self.conv = nn.Linear(32, 3), nn.Flatten(), nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.fc(self.flatten(self.conv(x)))

    with pytest.raises(ValueError, match="no Flatten"):
        convolutionize(Reordered(), 6)
    class Scale(nn.Module):         # a layer convolutionize cannot know works on maps
        def forward(self, x):
            return x * 2.0

    with pytest.raises(ValueError, match="expected only Linear"):
        convolutionize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(32, 4),
                                     Scale()), 6)
    with pytest.raises(ValueError, match="no Linear"):
        convolutionize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.ReLU()), 6)
    with pytest.raises(ValueError, match="unequal"):
        convolutionize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                                     nn.Linear(18, 4)), 7)


def test_the_tracing_input_is_made_by_the_models_array_module(monkeypatch):
    """convolutionize traces with an input made by the array module of the model's
    parameters (before: NumPy always, which a GPU model cannot read)."""
    import minicnn.convolutionize as convolutionize_module
    import minicnn.trace as trace_module

    class Marked(np.ndarray):
        """An array made by the model's array module (CuPy for a GPU model)."""

    class ModelsArrayModule:
        @staticmethod
        def asarray(array, dtype=None):
            return np.asarray(array, dtype=dtype).view(Marked)

    traced_inputs = []
    real_trace_forward = trace_module.trace_forward

    def recording_trace_forward(model, x):
        traced_inputs.append(x.data)
        return real_trace_forward(model, Tensor(np.asarray(x.data)))
    monkeypatch.setattr(trace_module, "get_array_module", lambda *arrays: ModelsArrayModule)
    monkeypatch.setattr(convolutionize_module, "trace_forward", recording_trace_forward)
    convolutionize(lenet5(), 28)
    assert traced_inputs and all(isinstance(x, Marked) for x in traced_inputs)
    assert all(x.dtype == np.float64 for x in traced_inputs)


@pytest.mark.gpu
def test_convolutionize_a_gpu_model():
    from minicnn.backend import gpu_available
    if not gpu_available():
        pytest.skip("needs a CUDA GPU and CuPy")
    model = lenet5().to("gpu")
    conv = convolutionize(model, 28)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    out = run(conv, Tensor(x).to("gpu").data)
    np.testing.assert_allclose(out.get()[:, :, 0, 0], run(model, Tensor(x).to("gpu").data).get(),
                               rtol=1e-10, atol=1e-10)
