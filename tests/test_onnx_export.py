"""minicnn.onnx.export: every file passes onnx's full checker, onnxruntime computes what
minicnn computes (relative error ≤ 1e-4) at a batch size other than the traced one, and
loading the file back gives the same outputs and the same number of parameters."""
import importlib
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import architectures  # noqa: E402
from architectures.alexnet import TowerLocalResponseNorm  # noqa: E402
from architectures.common import ConvBNAct, SqueezeExcitation  # noqa: E402
from architectures.densenet import DenseBlock  # noqa: E402
from architectures.resnet import ZeroPadShortcut  # noqa: E402
from minicnn import functional as F  # noqa: E402
from minicnn import nn  # noqa: E402
from minicnn.onnx import ExportError, export, load  # noqa: E402
from minicnn.onnx.export import TRACE_BATCH  # noqa: E402
from minicnn.tensor import Function, Tensor, no_grad  # noqa: E402

BATCH = TRACE_BATCH + 1          # never the traced batch: the file's batch must be dynamic


def relative_error(ours, theirs):
    return float(np.abs(ours - theirs).max() / max(np.abs(ours).max(), 1e-30))


def randomize_statistics(model, seed=0):
    """Batch norms with running statistics and affine terms that are not the identity."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) or isinstance(module, nn.BatchNorm1d):
            channels = module.num_features
            module.running_mean[...] = rng.normal(0, 0.1, channels)
            module.running_var[...] = rng.uniform(0.5, 1.5, channels)
            if module.weight is not None:
                module.weight.data[...] = rng.uniform(0.5, 1.5, channels)
                module.bias.data[...] = rng.normal(0, 0.1, channels)
    return model


def export_and_compare(model, input_shape, tmp_path, batch=BATCH, tolerance=1e-4):
    """Export, check, run in onnxruntime and load back; returns the two relative errors."""
    path = tmp_path / "model.onnx"
    export(model, path, input_shape)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = np.random.default_rng(1).standard_normal((batch,) + tuple(input_shape))
    x = x.astype(np.float32)
    model.eval()
    with no_grad():
        ours = model(Tensor(x)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"input": x})
    assert theirs.shape == ours.shape
    runtime_error = relative_error(ours, theirs)
    assert runtime_error <= tolerance

    loaded = load(path)
    with no_grad():
        again = loaded(x).numpy()
    round_trip_error = relative_error(ours, again)
    assert round_trip_error <= tolerance
    return runtime_error, round_trip_error, loaded


# ============================================================================ layers

class Residual(nn.Module):
    """y = relu(x + BN(conv(x))): the addition happens between layers."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))


class Branches(nn.Module):
    """Concatenation, a slice, a mean over the map and a reshape between layers."""

    def __init__(self):
        super().__init__()
        self.left = nn.Conv2d(4, 6, 1)
        self.right = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        joined = F.concat([self.left(x), self.right(x)], axis=1)
        first_half = joined[:, :4]
        pooled = F.mean(first_half, axis=(2, 3), keepdims=True)
        gated = first_half * F.sigmoid(pooled) - 0.5
        return F.reshape(gated, (x.shape[0], -1))


LAYER_CASES = {
    "conv_groups_dilation_stride": (nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=2), nn.ReLU(),
        nn.Conv2d(8, 8, (1, 5), padding=(0, 2), groups=8, bias=False)), (4, 11, 13)),
    "asymmetric_padding": (nn.Sequential(
        nn.ZeroPad2d((0, 1, 2, 0)), nn.Conv2d(3, 5, 3, stride=2), nn.ReLU6()), (3, 9, 10)),
    "batch_norm_2d_and_1d": (nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 6 * 6, 10), nn.BatchNorm1d(10), nn.Tanh()), (3, 8, 8)),
    "max_pool_ceil_mode_padding": (nn.Sequential(
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.MaxPool2d(2, 2, ceil_mode=True), nn.MaxPool2d(3, 1, padding=1, dilation=1)),
        (2, 10, 11)),
    "avg_pool_counts_padding": (nn.Sequential(
        nn.AvgPool2d(3, 2, padding=1, count_include_pad=True),
        nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)), (2, 13, 12)),
    "pool_ceil_mode_drops_a_window_starting_in_the_padding": (nn.Sequential(
        nn.MaxPool2d(2, 2, padding=1, ceil_mode=True),
        nn.AvgPool2d(2, 2, padding=1, ceil_mode=True, count_include_pad=False)), (2, 5, 9)),
    "avg_pool_ceil_mode": (nn.Sequential(
        nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=True),
        nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)), (2, 10, 10)),
    "lrn_and_global_pool": (nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.LocalResponseNorm(5, 1e-2, 0.75, 2.0),
        nn.LocalResponseNorm(3, 1e-1, 0.5, 1.0, alpha_over_n=True), nn.GlobalAvgPool2d(),
        nn.Flatten()), (3, 7, 7)),
    "activations": (nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 1), nn.Sigmoid(),
        nn.Conv2d(4, 4, 1), nn.SiLU(), nn.Conv2d(4, 4, 1), nn.HardSigmoid(),
        nn.Conv2d(4, 4, 1), nn.HardSwish(), nn.Conv2d(4, 4, 1), nn.ScaledTanh(),
        nn.Flatten(), nn.Softmax(axis=1)), (3, 4, 4)),
    "squeeze_excitation_gate": (nn.Sequential(
        ConvBNAct(3, 8, 3, activation=nn.SiLU),
        SqueezeExcitation(8, 2, activation=nn.SiLU)), (3, 6, 6)),
    "residual_and_dropout": (nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), Residual(4), nn.Dropout2d(0.3), nn.DropPath(0.2),
        nn.Identity(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 5 * 5, 3)), (3, 5, 5)),
    "operations_between_layers": (Branches(), (4, 5, 5)),
    "adaptive_pools": (nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(2), nn.AdaptiveMaxPool2d(4),
        nn.AdaptiveAvgPool2d(1)), (3, 6, 8)),
    "zoo_layers_tower_lrn_zero_pad_dense_block": (nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), TowerLocalResponseNorm(2, size=3),
        ZeroPadShortcut(8, 12, 2), DenseBlock(2, 12, 4)), (3, 7, 6)),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layers_export_to_what_onnxruntime_computes(case, tmp_path):
    model, input_shape = LAYER_CASES[case]
    randomize_statistics(model)
    _, _, loaded = export_and_compare(model, input_shape, tmp_path)
    assert loaded.num_parameters() == model.num_parameters()


def test_the_batch_dimension_is_dynamic(tmp_path):
    model = randomize_statistics(nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 2)))
    path = tmp_path / "model.onnx"
    proto = export(model, path, (1, 5, 5))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model.eval()
    for batch in (1, 7):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 5, 5)).astype(np.float32)
        with no_grad():
            ours = model(Tensor(x)).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x})[0], ours, rtol=1e-5,
                                   atol=1e-6)


def test_export_keeps_train_mode_and_names_initializers_after_parameters(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model.train()
    proto = export(model, tmp_path / "model.onnx", (1, 4, 4))
    assert model.training and model[1].training
    names = {i.name for i in proto.graph.initializer}
    assert names == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                     "1.running_var"}


def test_float64_models_export_as_double_and_load_back_as_double(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU6(), nn.Flatten(),
                          nn.Linear(27, 2)).double()
    path = tmp_path / "model.onnx"
    proto = export(model, path, (2, 5, 5))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    loaded = load(path)            # (onnxruntime's CPU build has no double convolution)
    assert all(p.dtype == np.float64 for p in loaded.parameters())
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5))
    with no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(Tensor(x)).numpy(), rtol=1e-12)


# ============================================================================ errors

class Cube(Function):
    """y = x³ — an operation the exporter has never heard of."""

    def forward(self, x):
        return x ** 3

    def backward(self, gy):
        raise AssertionError("not used")


class CubeLayer(nn.Module):
    def forward(self, x):
        return Cube()(x)


def test_a_layer_without_onnx_form_is_named(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), CubeLayer())
    with pytest.raises(ExportError, match=r"cannot export layer '1' \(CubeLayer\): it computes "
                                          r".*Cube, which has no ONNX converter"):
        export(model, tmp_path / "model.onnx", (1, 5, 5))
    assert not (tmp_path / "model.onnx").exists()


def test_even_lrn_and_batch_norm_without_statistics_are_named(tmp_path):
    with pytest.raises(ExportError, match=r"layer '1' \(LocalResponseNorm size=4\)"):
        export(nn.Sequential(nn.Conv2d(1, 6, 1), nn.LocalResponseNorm(4)),
               tmp_path / "a.onnx", (1, 3, 3))
    with pytest.raises(ExportError, match=r"layer '1' \(BatchNorm2d\): batch norm without "
                                          "running statistics"):
        export(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False)),
               tmp_path / "b.onnx", (1, 3, 3))


def test_adaptive_pool_with_unequal_windows_is_named(tmp_path):
    with pytest.raises(ExportError, match=r"layer '1' \(AdaptiveAvgPool2d\(3, 3\)\): a 5×5 "
                                          "input gives windows of unequal sizes"):
        export(nn.Sequential(nn.Conv2d(1, 2, 1), nn.AdaptiveAvgPool2d(3)),
               tmp_path / "model.onnx", (1, 5, 5))


@pytest.mark.parametrize("input_shape", [224, (3, 0, 4), (3.0, 4, 4), None])
def test_bad_input_shape_is_refused(input_shape, tmp_path):
    with pytest.raises(ValueError, match=r"input_shape must be the shape of one sample"):
        export(nn.Conv2d(3, 1, 1), tmp_path / "model.onnx", input_shape)


@pytest.mark.parametrize("opset", [9, 1000, "17"])
def test_unsupported_opset_is_refused(opset, tmp_path):
    with pytest.raises(ValueError, match=r"opset must be an int from 14 to"):
        export(nn.Conv2d(3, 1, 1), tmp_path / "model.onnx", (3, 4, 4), opset=opset)


@pytest.mark.parametrize("opset", [14, 18])
def test_reductions_follow_the_opset(opset, tmp_path):
    """ReduceMean's axes moved from an attribute to an input in opset 18."""
    model = Branches()
    path = tmp_path / "model.onnx"
    export(model, path, (4, 5, 5), opset=opset)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with no_grad():
        ours = model(Tensor(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], ours, rtol=1e-5, atol=1e-6)


# ============================================================================ the zoo

def default_variant(family):
    return importlib.import_module(f"architectures.{family}").CLI_DEFAULTS["variant"]


def in_channels_of(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


def parameters_in_inference(model):
    """The parameters an eval-mode forward uses: auxiliary classifiers (GoogLeNet,
    Inception-v3) only run in training, so an exported file does not hold them."""
    auxiliary = {id(p) for name, m in model.named_modules() if "aux" in name.split(".")[-1]
                 for p in m.parameters()}
    return sum(p.size for p in model.parameters() if id(p) not in auxiliary)


# Quick ones at small inputs in the default suite: between them they have every layer type
# and every zoo-specific layer the exporter converts (LeNet-5's 1998 layers, ResNet's
# zero-pad shortcut, SE gates, depthwise and pointwise convolutions, drop-path).
FAST_ZOO = [("lenet5", 28), ("lenet5_lecun98", 32), ("resnet20", 32), ("se_resnet20", 32),
            ("nin_cifar", 32), ("squeezenet1_0_simple_bypass", 64), ("mobilenet_v2", 32),
            ("efficientnet_b0", 32)]


@pytest.mark.parametrize("name, size", FAST_ZOO)
def test_zoo_network_exports_and_round_trips(name, size, tmp_path):
    model = randomize_statistics(architectures.create(name, num_classes=10))
    shape = (in_channels_of(model), size, size)
    _, _, loaded = export_and_compare(model, shape, tmp_path)
    assert loaded.num_parameters() == parameters_in_inference(model)


@pytest.mark.slow
@pytest.mark.parametrize("family", architectures.FAMILIES)
def test_every_family_exports_at_its_published_input(family, tmp_path):
    """The default variant of every family at its published input (it prints each
    family's error against onnxruntime)."""
    name = default_variant(family)
    model = randomize_statistics(architectures.create(name))
    shape = (in_channels_of(model),) + (architectures.entry(name).input_size,) * 2
    runtime_error, round_trip_error, loaded = export_and_compare(model, shape, tmp_path,
                                                                 batch=1)
    assert loaded.num_parameters() == parameters_in_inference(model)
    print(f"\n{family:18s} {name:30s} {shape}  onnxruntime {runtime_error:.2e}  "
          f"round trip {round_trip_error:.2e}  parameters {loaded.num_parameters():,}")


# ============================================================================ property

@st.composite
def window_layers(draw):
    """A pooling or convolution layer and an input it can take: any kernel, stride,
    padding up to half the kernel, dilation, ceil_mode and count_include_pad."""
    kind = draw(st.sampled_from(["max", "avg", "conv"]))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if kind != "avg" else (1, 1)
    span = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    size = tuple(draw(st.integers(max(span[i], 2), 9)) for i in range(2))
    if kind == "max":
        layer = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=draw(st.booleans()))
    elif kind == "avg":
        layer = nn.AvgPool2d(kernel, stride, padding, ceil_mode=draw(st.booleans()),
                             count_include_pad=draw(st.booleans()))
    else:
        groups = draw(st.sampled_from([1, 2]))
        layer = nn.Conv2d(2, 4, kernel, stride, padding, dilation, groups,
                          bias=draw(st.booleans()))
    return layer, (2,) + size


@pytest.mark.slow              # ~40 s: an onnxruntime session per example
@given(window_layers())
def test_any_window_geometry_matches_onnxruntime(case):
    layer, input_shape = case
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "window.onnx")
        export(layer, path, input_shape)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((BATCH,) + input_shape).astype(np.float32)
    with no_grad():
        ours = layer(Tensor(x)).numpy()
    theirs = session.run(None, {"input": x})[0]
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
