"""Whole networks, training runs and the command line on the emulated GPU (``--device gpu``
semantics: ``model.to("gpu")``), each compared with the same thing on the CPU.

The emulation (tests/gpu_emulation, and why it and not Numba's CUDA simulator) makes
``cupy`` a host-memory stand-in that refuses what CuPy refuses, and runs the CUDA C kernels
compiled for the host, every thread of every launch. So everything here runs the code a
GPU run runs: the Functions' CuPy branches, the CUDA kernels, moving models, optimizer
state and checkpoints between devices, the CLI's ``--device gpu`` paths.

* every zoo family: one forward and backward on the GPU equals the CPU's (float64,
  evaluation mode, as tests/test_kernels_reference_mode.py compares its modes);
* ``fit()`` with every optimizer, checkpointed and resumed: bit for bit the straight run;
* the defects of issue 19 that a first GPU run would hit, each on the GPU path;
* the command lines, in-process: train, evaluate, predict and ``--summary --measure``
  with ``--device gpu``, and the detection command's training on the GPU.
"""
import copy
from pathlib import Path

import numpy as np
import pytest

import architectures
from minicnn import Tensor, functional as F, nn
from minicnn.backend import device_of
from minicnn.convolutionize import convolutionize
from minicnn.functional import conv as conv_module
from minicnn.functional.dropout import manual_seed as seed_dropout
from minicnn.kernels.im2col import ConvGeometry
from minicnn.train import fit, load_training_checkpoint, make_optimizer
from tests.gpu_emulation import GPU_KINDS, on_gpu
from tests.test_cli import pictures, run  # noqa: F401  (pictures is a fixture)
from tests.test_kernels_reference_mode import DEFAULT_VARIANTS, _forward_and_backward
from tests.test_train import loaders


@pytest.fixture(scope="module", params=GPU_KINDS)
def cupy(request):
    """The emulated GPU; on a machine with a CUDA GPU, that GPU too (marked ``gpu``)."""
    with on_gpu(request.param) as module:
        yield module


def _assert_close(got, expected, what, tolerance=1e-10):
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= tolerance * scale, what


def _on_cpu(array):
    return array.get() if device_of(array) == "gpu" else array


# ============================================================================ every family

# every family of the registry, at the small inputs of the reference-mode comparison: about
# 40 s together on 2 cores once the kernels are compiled (EfficientNetV2, AlexNet and
# EfficientDet take 5–6 s each: their depthwise reductions and large 3×3 layers run every
# emulated thread), so the default suite and CI run them all
VARIANTS = dict(DEFAULT_VARIANTS, lenet5_lecun98=("lenet5_lecun98", 32))   # issue 19, defect 4


@pytest.mark.parametrize("family", sorted(VARIANTS))
def test_one_forward_and_backward_on_the_gpu_equals_the_cpu(cupy, family):
    name, size = VARIANTS[family]
    model = architectures.create(name, num_classes=10, in_channels=1).double()
    model.eval()
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((2, 1, size, size)), rng.integers(0, 10, 2)
    on_gpu = copy.deepcopy(model).to("gpu")
    assert all(device_of(p.data) == "gpu" for p in on_gpu.parameters())
    assert all(device_of(b) == "gpu" for b in on_gpu.buffers() if b is not None)
    cpu_outputs, cpu_grads = _forward_and_backward(model, x, labels)
    gpu_outputs, gpu_grads = _forward_and_backward(on_gpu, cupy.asarray(x), cupy.asarray(labels))
    for got, expected in zip(gpu_outputs, cpu_outputs):
        _assert_close(got, expected, f"{name}: output")
    compared = 0
    for parameter, expected in cpu_grads.items():
        got = gpu_grads[parameter]
        assert (got is None) == (expected is None), f"{name}: {parameter}"
        if expected is not None:
            assert device_of(got) == "gpu", f"{name}: the gradient of {parameter} left the GPU"
            _assert_close(got.get(), expected, f"{name}: gradient of {parameter}")
            compared += 1
    assert compared >= 0.8 * len(cpu_grads), f"{name}: {compared} of {len(cpu_grads)}"


def test_every_family_is_run_on_the_gpu_here():
    assert set(architectures.FAMILIES) <= set(VARIANTS)


def test_batch_norm_in_training_mode_on_the_gpu_equals_the_cpu(cupy):
    """Batch statistics, running statistics and every gradient: the two-pass CUDA path."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 6, 7)) * 3 + 2
    gy = rng.standard_normal(x.shape)
    results = []
    for device in ("cpu", "gpu"):
        layer = nn.BatchNorm2d(5).double()
        layer.weight.data[...] = np.linspace(0.5, 2, 5)
        layer.to(device)
        xs = Tensor(x if device == "cpu" else cupy.asarray(x), requires_grad=True)
        y = layer(xs)
        y.backward(gy if device == "cpu" else cupy.asarray(gy))
        results.append([_on_cpu(a) for a in (y.data, xs.grad, layer.weight.grad,
                                             layer.bias.grad, layer.running_mean,
                                             layer.running_var)])
    for got, expected in zip(results[1], results[0]):
        _assert_close(got, expected, "batch norm", tolerance=1e-12)


# ============================================================================ convolutions

@pytest.mark.parametrize("algorithm", sorted(conv_module.ALGORITHMS))
def test_every_convolution_algorithm_on_the_gpu_equals_the_cpu(cupy, algorithm):
    """Each algorithm forced where it applies (Winograd's xp-generic transforms, the
    blocked im2col, the depthwise kernels...), forward and both gradients."""
    rng = np.random.default_rng(1)
    cases = {"im2col": ((2, 4, 9, 8), (6, 2, 3, 3), dict(stride=(2, 1), padding=1, groups=2)),
             "pointwise": ((2, 4, 5, 6), (5, 4, 1, 1), dict(stride=2)),
             "blocked": ((3, 4, 7, 7), (5, 4, 3, 3), dict(padding=1, dilation=2)),
             "depthwise": ((2, 4, 7, 6), (8, 1, 3, 3), dict(padding=1, groups=4)),
             "winograd": ((2, 3, 9, 7), (4, 3, 3, 3), dict(padding=1)),
             "direct": ((2, 1, 7, 6), (3, 1, 3, 3), dict(padding=1)),
             "grouped": ((2, 4, 7, 6), (6, 2, 3, 3), dict(padding=1, groups=2))}
    x_shape, w_shape, options = cases[algorithm]
    x, w, b = (rng.standard_normal(s) for s in (x_shape, w_shape, w_shape[:1]))
    gy = None
    results = []
    for to_device in (lambda a: a, cupy.asarray):
        inputs = [Tensor(to_device(a), requires_grad=True) for a in (x, w, b)]
        y = F.conv2d(*inputs, conv_algorithm=algorithm, **options)
        assert y.creator.algorithm.name == algorithm
        gy = rng.standard_normal(y.shape) if gy is None else gy
        y.backward(to_device(gy))
        results.append([_on_cpu(a) for a in (y.data, *(t.grad for t in inputs))])
    for got, expected in zip(results[1], results[0]):
        _assert_close(got, expected, algorithm, tolerance=1e-12)


def test_a_large_convolution_on_the_gpu_builds_its_columns_in_bounded_blocks(cupy, monkeypatch):
    """VGG-16's conv1_2 at batch 128 would need 14.8 GB of columns in one piece: the GPU
    chooses the blocked im2col there, whose blocks hold at most GPU_BLOCK_BYTES. A small
    convolution with a small block budget shows the blocks add up to the whole."""
    vgg = ConvGeometry((128, 224, 224, 64), (3, 3), (1, 1), (1, 1), (1, 1), groups=1,
                       out_channels=64)
    assert vgg.M * vgg.K * 4 > 14e9
    assert conv_module.choose_algorithm(vgg, "gpu") is conv_module.BlockedIm2col
    per_sample = vgg.OH * vgg.OW * vgg.K * 4
    blocks = list(conv_module.sample_blocks(vgg.N, per_sample, conv_module.GPU_BLOCK_BYTES))
    assert max((last - first) * per_sample for first, last in blocks) \
        <= conv_module.GPU_BLOCK_BYTES
    small = ConvGeometry((2, 8, 8, 3), (3, 3), (1, 1), (1, 1), (1, 1), groups=1, out_channels=4)
    assert conv_module.choose_algorithm(small, "gpu") is conv_module.Im2colGemm

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    whole = F.conv2d(Tensor(cupy.asarray(x)), Tensor(cupy.asarray(w)), padding=1)
    monkeypatch.setattr(conv_module, "GPU_BLOCK_BYTES", 2 * 64 * 27 * 8)     # 2 samples
    xs, ws = (Tensor(cupy.asarray(a), requires_grad=True) for a in (x, w))
    blocked = F.conv2d(xs, ws, padding=1)
    assert blocked.creator.algorithm is conv_module.BlockedIm2col
    _assert_close(blocked.data.get(), whole.data.get(), "blocked forward", 1e-12)
    blocked.backward(cupy.ones(blocked.shape))
    expected = [Tensor(a, requires_grad=True) for a in (x, w)]
    y = F.conv2d(*expected, padding=1, conv_algorithm="im2col")
    y.backward(np.ones(y.shape))
    for got, want in zip((xs.grad, ws.grad), expected):
        _assert_close(got.get(), want.grad, "blocked backward", 1e-12)


# ============================================================================ training

def _small_network(seed):
    nn.init.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.MaxPool2d(2), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(4 * 3 * 3, 3))


def _gpu_run(optimizer_name, seed=0):
    seed_dropout(123)
    model = _small_network(seed).to("gpu")
    optimizer = make_optimizer(optimizer_name, model.parameters(), lr=0.01)
    return model, optimizer


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "adamw", "rmsprop"])
def test_fit_on_the_gpu_resumes_bit_for_bit(cupy, optimizer_name, tmp_path):
    """Two epochs straight, against one epoch, a checkpoint, and a fresh model (other
    weights, other dropout draws) resumed from it: the same weights bit for bit. The GPU's
    dropout masks come from seeds the checkpointed host generator draws (defect 8); the
    optimizer state goes to the checkpoint as host arrays and comes back onto the GPU."""
    train_loader, test_loader = loaders()
    quiet = dict(progress=False, log=lambda line: None)
    model, optimizer = _gpu_run(optimizer_name)
    history = fit(model, optimizer, train_loader, test_loader, 2, **quiet)
    straight = {name: p.data.get() for name, p in model.named_parameters()}
    assert all(np.isfinite(record["train_loss"]) for record in history)

    path = tmp_path / "half.npz"
    model, optimizer = _gpu_run(optimizer_name)
    fit(model, optimizer, *loaders(), 1, checkpoint=path, **quiet)
    saved = load_training_checkpoint(path)
    assert all(type(v) is np.ndarray for v in saved["model"].values())

    model, optimizer = _gpu_run(optimizer_name, seed=7)
    seed_dropout(999)
    resumed = fit(model, optimizer, *loaders(), 2, resume=path, **quiet)
    assert [r["epoch"] for r in resumed] == [1, 2]
    for name, p in model.named_parameters():
        assert device_of(p.data) == "gpu"
        np.testing.assert_array_equal(p.data.get(), straight[name], err_msg=name)
    for state in optimizer.state.values():
        for value in state.values():
            if hasattr(value, "shape") and value.ndim:
                assert device_of(value) == "gpu"


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "adamw", "rmsprop"])
def test_optimizer_state_follows_its_parameters_to_the_gpu(cupy, optimizer_name):
    """Defect 5: a step on the CPU, ``model.to("gpu")``, a second step — as two CPU steps."""
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 3, 4)
    weights = []
    for move in (False, True):
        nn.init.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3)).double()
        optimizer = make_optimizer(optimizer_name, model.parameters(), lr=0.1)
        for step in range(2):
            if move and step == 1:
                model.to("gpu")
            on_gpu = move and step == 1
            xs = Tensor(cupy.asarray(x) if on_gpu else x)
            optimizer.zero_grad()
            F.cross_entropy(model(xs), cupy.asarray(labels) if on_gpu else labels).backward()
            optimizer.step()
        weights.append([_on_cpu(p.data) for p in model.parameters()])
    for got, expected in zip(weights[1], weights[0]):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_convolutionize_traces_a_gpu_model_on_the_gpu(cupy):
    """Defect 6: the tracing input is made on the model's device."""
    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 6 * 6, 5)).double()
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    expected = model(Tensor(x)).numpy()
    converted = convolutionize(model.to("gpu"), 8, in_channels=1)
    scores = converted(Tensor(cupy.asarray(x)))
    assert device_of(scores.data) == "gpu" and scores.shape == (2, 5, 1, 1)
    _assert_close(scores.data.get()[:, :, 0, 0], expected, "convolutionized scores", 1e-12)


def test_indexing_backward_accumulates_repeated_indices_on_the_gpu(cupy):
    """Defect 9: GetItem's backward puts with cupyx.scatter_add (every CuPy has it)."""
    x = Tensor(cupy.asarray(np.arange(5.0)), requires_grad=True)
    index = cupy.asarray(np.array([0, 2, 2, 4, 2]))
    x[index].backward(cupy.asarray(np.array([1.0, 2.0, 3.0, 4.0, 5.0])))
    assert device_of(x.grad) == "gpu"
    np.testing.assert_array_equal(x.grad.get(), [1.0, 0.0, 10.0, 0.0, 4.0])


# ============================================================================ the command line

def test_the_command_line_trains_evaluates_and_predicts_on_the_gpu(cupy, pictures, tmp_path,
                                                                    capsys):
    save = tmp_path / "gpu.npz"
    assert run(["--train", pictures, "--epochs", 1, "--batch-size", 8, "--limit-train", 16,
                "--device", "gpu", "--save", save]) == 0
    out = capsys.readouterr().out
    assert "seed 0, gpu" in out and "test accuracy" in out
    assert run(["--resume", save, "--eval-only", "--device", "gpu"]) == 0
    assert "accuracy" in capsys.readouterr().out
    picture = sorted(Path(pictures).glob("*/*.png"))[0]
    assert run(["--resume", save, "--predict", picture, "--device", "gpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(picture) and lines[1].strip().endswith("%")


def test_the_first_lenet5_trains_on_the_gpu(cupy, pictures, tmp_path, capsys):
    """Defect 4: lenet5_lecun98's connection table is a buffer that moves with the model."""
    assert run(["--train", pictures, "--variant", "lenet5_lecun98", "--epochs", 1,
                "--batch-size", 8, "--limit-train", 16, "--device", "gpu",
                "--save", tmp_path / "lecun98.npz"]) == 0
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("train", [False, True], ids=["summary-only", "with-training"])
def test_summary_measure_runs_its_step_on_the_gpu(cupy, pictures, tmp_path, capsys, train):
    """Defect 10: ``--summary --measure N --device gpu`` measured a GPU model with the host
    tracer and ended in a traceback. The step now runs on the GPU, measured by CuPy's pool."""
    argv = ["--summary", "--measure", 4, "--device", "gpu"]
    if train:
        argv += ["--train", pictures, "--epochs", 1, "--batch-size", 8, "--limit-train", 16,
                 "--save", tmp_path / "measured.npz"]
    assert run(argv) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "bug" not in captured.err
    line, = [line for line in captured.out.splitlines() if line.startswith("Measured")]
    assert "at batch 4" in line and "growth of CuPy's GPU memory pool" in line
    assert "peak RSS" not in line                 # the host's resident set is not GPU memory
    growth = line.split("growth of CuPy's GPU memory pool ")[1].split(")")[0]
    assert growth != "0 B"


def test_the_detection_command_trains_and_evaluates_on_the_gpu(cupy, tmp_path, monkeypatch):
    """The detection command's ``--device gpu``: the tiny stand-in detector of
    tests/test_detection_train.py trained one step on each device ends with the same
    weights (float32: to rounding), and its epoch's COCO mAP is computed from the GPU
    model's detections (NMS and box decoding on GPU outputs)."""
    import minicnn.data.mnist
    from minicnn.optim import load_checkpoint
    from tests.test_detection_train import fake_mnist, run as run_detection
    monkeypatch.setattr(minicnn.data.mnist, "load_mnist", lambda data_dir=None: fake_mnist())
    argv = ["--train", "mnist-detection", "--input-size", "128", "--epochs", "1",
            "--batch-size", "4", "--train-count", "4", "--test-count", "2", "--no-progress",
            "--lr", "0.01"]
    run_detection(argv + ["--save", str(tmp_path / "cpu.npz"), "--device", "cpu"])
    lines = []
    run_detection(argv + ["--save", str(tmp_path / "gpu.npz"), "--device", "gpu"], lines)
    assert any(line.startswith("epoch 1/1  loss") and "test mAP" in line for line in lines)
    cpu, gpu = (load_checkpoint(tmp_path / name)["model"] for name in ("cpu.npz", "gpu.npz"))
    for name in cpu:
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_the_progressive_learning_experiment_trains_both_arms_on_the_gpu(cupy):
    """``experiments.recipes_progressive --device gpu``: each batch is resized on the host
    by the stage's callback, then moved to where the model is for its step (a host batch
    fed to a GPU model is refused, as CuPy refuses it). The GPU draws other dropout and
    stochastic-depth masks than the CPU, so the losses are checked for sense, not equality."""
    from experiments import recipes_progressive
    results = recipes_progressive.main(
        ["--dataset", "shapes", "--train", "20", "--test", "10", "--epochs", "1",
         "--progressive-epochs", "2", "--stages", "2", "--sizes", "40", "44",
         "--batch-size", "10", "--head-init", "imagenet", "--device", "gpu"])
    for arm, sizes in (("fixed", [44]), ("progressive", [40, 44])):
        epochs = results["arms"][arm]["epochs"]
        assert [epoch["size"] for epoch in epochs] == sizes
        assert all(1.0 < epoch["loss"] < 5.0 for epoch in epochs)    # ln 10 ≈ 2.3 at the start
        assert 0.0 <= results["arms"][arm]["test_accuracy"] <= 1.0
