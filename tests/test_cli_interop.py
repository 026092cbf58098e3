"""The command line's doors to other tools: --weights (torchvision-named weights: predict
ImageNet classes, fine-tune, summary) and --export-onnx (after training, or from a
checkpoint or weights), each checked against the library call or onnxruntime."""
import os

import numpy as np
import pytest

import architectures
from architectures import pretrained
from minicnn import Tensor, no_grad
from minicnn.data.imagenet import predict_topk, read_rgb
from minicnn.io import save_safetensors
from tests.test_cli import pictures, quick, run  # noqa: F401  (pictures is a fixture)

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def squeezenet_weights(tmp_path_factory):
    """squeezenet1_1 weights under torchvision's key names, as a .safetensors file, and
    the network they were taken from."""
    model = architectures.create("squeezenet1_1", **pretrained.source("squeezenet1_1").options)
    ours = model.state_dict()
    state = {theirs: ours[mine] for theirs, mine in pretrained.torchvision_keys(
        model, "squeezenet1_1").items()}
    path = tmp_path_factory.mktemp("weights") / "squeezenet1_1.safetensors"
    save_safetensors(state, str(path))
    return str(path), model


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    Image.fromarray((rng.random((180, 240, 3)) * 255).astype(np.uint8)).save(path)
    return str(path)


def test_weights_predict_prints_the_top5_imagenet_classes(squeezenet_weights, photo, capsys):
    path, model = squeezenet_weights
    assert run(["--variant", "squeezenet1_1", "--weights", path, "--predict", photo],
               family="squeezenet") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = predict_topk(model, read_rgb(photo), k=5, variant="squeezenet1_1")
    assert lines[0] == photo and len(lines) == 6
    for line, (name, probability) in zip(lines[1:], expected):
        assert line.strip().startswith(name) and line.strip().endswith(f"{100 * probability:.2f}%")


def test_weights_of_another_network_are_one_clear_line(squeezenet_weights, photo, capsys):
    path, _ = squeezenet_weights
    assert run(["--variant", "squeezenet1_0", "--weights", path, "--predict", photo],
               family="squeezenet") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("squeezenet: error: --weights")


def test_weights_start_a_training_run_with_a_new_head(squeezenet_weights, pictures, tmp_path,
                                                       capsys):
    path, model = squeezenet_weights
    save = tmp_path / "sq.npz"
    assert run(quick(pictures, save, "--variant", "squeezenet1_1", "--weights", path,
                     "--input-size", 64, "--freeze", "backbone"), family="squeezenet") == 0
    out = capsys.readouterr().out
    assert "frozen (backbone)" in out and "skipped" in out     # the 1000-class head
    from minicnn.train import load_training_checkpoint
    trained = load_training_checkpoint(str(save))["model"]
    first = "features.fire2.squeeze.weight"           # a backbone layer
    np.testing.assert_array_equal(trained[first], model.state_dict()[first])  # frozen, loaded


def test_export_onnx_after_training_and_from_the_checkpoint(pictures, tmp_path, capsys):
    onnxruntime = pytest.importorskip("onnxruntime")
    save, trained_onnx, again_onnx = tmp_path / "l5.npz", tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert run(quick(pictures, save, "--export-onnx", trained_onnx)) == 0
    assert run(["--resume", save, "--export-onnx", again_onnx]) == 0
    assert "ONNX:" in capsys.readouterr().out
    from minicnn.train import load_training_checkpoint, restore
    state = load_training_checkpoint(str(save))
    meta = state["meta"]
    model = architectures.create(meta["architecture"], num_classes=meta["num_classes"],
                                 in_channels=meta["in_channels"])
    restore(state, model)
    x = np.random.default_rng(1).standard_normal(
        (3, meta["in_channels"], meta["input_size"], meta["input_size"])).astype(np.float32)
    with no_grad():
        expected = model.eval()(Tensor(x)).data
    for path in (trained_onnx, again_onnx):
        session = onnxruntime.InferenceSession(str(path))
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert os.path.getsize(trained_onnx) == os.path.getsize(again_onnx)


def test_a_run_saved_as_safetensors_resumes_exactly_as_one_saved_as_npz(pictures, tmp_path):
    """--save x.safetensors holds the whole training checkpoint (weights, optimizer,
    schedule, progress, generators): both containers continue to the same weights."""
    from safetensors.numpy import load_file
    from minicnn.train import load_training_checkpoint
    runs = {}
    for name in ("run.npz", "run.safetensors"):     # own folders: the metrics share a stem
        save = tmp_path / name.split(".")[1] / name
        assert run(quick(pictures, save)) == 0
        assert run(["--resume", save, "--epochs", 2]) == 0
        runs[name] = load_training_checkpoint(str(save))
    npz, safetensors = runs["run.npz"], runs["run.safetensors"]
    assert npz["progress"]["epoch"] == safetensors["progress"]["epoch"] == 2
    for key, value in npz["model"].items():
        np.testing.assert_array_equal(safetensors["model"][key], value)
    readable = load_file(str(tmp_path / "safetensors" / "run.safetensors"))   # any reader
    assert any(key.startswith("model/") for key in readable)


def test_weights_eval_only_scores_a_folder_of_labelled_photos(squeezenet_weights, tmp_path,
                                                              capsys):
    """Sub-folders named by ImageNet class (name or index): three photos filed under the
    class the network gives them, one under another class → top-1 75%."""
    from minicnn.data.imagenet import class_names
    path, model = squeezenet_weights
    names, rng = class_names(), np.random.default_rng(3)
    for i, folder_by in enumerate(("index", "name", "index", "wrong")):
        picture = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
        probe = tmp_path / f"probe{i}.png"
        Image.fromarray(picture).save(probe)
        best = names.index(predict_topk(model, read_rgb(str(probe)), k=1,
                                        variant="squeezenet1_1")[0][0])
        folder = {"index": str(best), "name": names[best].replace(" ", "_"),
                  "wrong": str((best + 1) % 1000)}[folder_by]
        os.makedirs(tmp_path / "photos" / folder, exist_ok=True)
        Image.fromarray(picture).save(tmp_path / "photos" / folder / f"{i}.png")
    assert run(["--variant", "squeezenet1_1", "--weights", path, "--eval-only",
                "--train", tmp_path / "photos"], family="squeezenet") == 0
    assert "top-1 75.00%" in capsys.readouterr().out
