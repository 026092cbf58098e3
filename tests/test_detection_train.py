"""The detection command end to end at a tiny scale, with a tiny stand-in network: training,
progress, checkpoints, Ctrl-C and exact resumption, --evaluate, --plot and --predict."""
import json
import os
import signal

import numpy as np
import pytest

from minicnn import nn
from minicnn.detection import evaluate_coco
from minicnn.detection import train as detection_train
from minicnn.optim import load_checkpoint
from minicnn.tensor import is_grad_enabled

pytest.importorskip("PIL")
pytest.importorskip("matplotlib")


class TinyDetector(nn.Module):
    """Five strided convolutions make P3–P7 (strides 8 … 128); one class head and one box
    head are shared across levels, as EfficientDet's are. A stand-in, not a design."""

    def __init__(self, num_classes, in_channels, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.downs = nn.ModuleList([nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1),
                                                  nn.ReLU()) for _ in range(4)])
        self.class_head = nn.Conv2d(width, 9 * num_classes, 3, padding=1)
        self.box_head = nn.Conv2d(width, 9 * 4, 3, padding=1)
        self.interrupt_after_calls = None       # the test's Ctrl-C, in that training step
        self.calls = 0

    def forward(self, x):
        if is_grad_enabled():                   # a training step (not evaluation, not BN refresh)
            self.calls += 1
            if self.calls == self.interrupt_after_calls:
                os.kill(os.getpid(), signal.SIGINT)
        levels = [self.stem(x)]
        for down in self.downs:
            levels.append(down(levels[-1]))
        return [self.class_head(p) for p in levels], [self.box_head(p) for p in levels]


def fake_mnist(count=60):
    rng = np.random.default_rng(0)
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 3, size=count)
    for image, label in zip(images, labels):      # three shapes a tiny net can tell apart
        if label == 0:
            image[4:24, 10:18] = 255
        elif label == 1:
            image[10:18, 4:24] = 255
        else:
            image[6:22, 6:22] = 255
    return images, labels, images.copy(), labels.copy()


@pytest.fixture
def offline_mnist(monkeypatch):
    import minicnn.data.mnist
    monkeypatch.setattr(minicnn.data.mnist, "load_mnist", lambda data_dir=None: fake_mnist())


def build_tiny(variant, num_classes, in_channels, **options):
    return TinyDetector(num_classes, in_channels)


def run(argv, lines=None):
    out = [] if lines is None else lines
    return detection_train.main(argv, build_model=build_tiny, variants=["tiny"],
                                default_variant="tiny", program="test", log=out.append)


COMMON = ["--train", "mnist-detection", "--input-size", "128", "--epochs", "2",
          "--batch-size", "4", "--train-count", "12", "--test-count", "4", "--no-progress",
          "--lr", "0.01"]


def test_train_checkpoint_interrupt_resume_evaluate_plot_predict(tmp_path, offline_mnist):
    straight = tmp_path / "straight.npz"
    lines = []
    history = run(COMMON + ["--save", str(straight), "--plot", str(tmp_path / "plots")], lines)
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and r["mAP"] is not None for r in history)
    assert any(line.startswith("epoch 2/2  loss") and "test mAP" in line for line in lines)
    assert straight.exists() and (tmp_path / "straight.history.csv").exists()
    assert (tmp_path / "plots" / "curves.png").exists()
    assert (tmp_path / "plots" / "test_detections.png").exists()

    # Ctrl-C in the 5th batch (epoch 2, batch 2): the checkpoint holds that point; resuming
    # finishes with exactly the weights of the uninterrupted run
    interrupted = tmp_path / "interrupted.npz"
    with pytest.raises(SystemExit) as stopped:
        detection_train.main(COMMON + ["--save", str(interrupted)], build_model=_interrupting,
                             variants=["tiny"], default_variant="tiny", program="test",
                             log=lines.append)
    assert stopped.value.code == 130
    progress = load_checkpoint(interrupted)["progress"]
    assert (progress["epoch"], progress["batch"]) == (1, 2)
    run(["--resume", str(interrupted), "--no-progress"])
    final, expected = load_checkpoint(interrupted)["model"], load_checkpoint(straight)["model"]
    for name in expected:
        np.testing.assert_array_equal(final[name], expected[name], err_msg=name)

    # --evaluate writes both COCO files beside the checkpoint and prints their mAP
    lines = []
    run(["--resume", str(straight), "--evaluate"], lines)
    truth, detections = tmp_path / "ground_truth.json", tmp_path / "detections.json"
    figures = evaluate_coco(str(truth), str(detections))
    assert f"mAP50 {figures['mAP50']:.4f}" in " ".join(lines)
    assert len(json.loads(truth.read_text())["images"]) == 4

    # --predict prints the boxes and writes the picture
    from PIL import Image
    from minicnn.detection.mnist_detection import mnist_detection
    canvas = mnist_detection("test", count=1, mnist=fake_mnist()).images[0]
    image_path = tmp_path / "canvas.png"
    Image.fromarray(canvas).save(image_path)
    lines = []
    run(["--resume", str(straight), "--predict", str(image_path),
         "--score-threshold", "0.0"], lines)
    assert lines[0].startswith(f"{image_path}: ") and "object(s)" in lines[0]
    assert (tmp_path / "canvas.detections.png").exists()


def _interrupting(variant, num_classes, in_channels, **options):
    model = TinyDetector(num_classes, in_channels)
    model.interrupt_after_calls = 5      # 3 batches make an epoch: epoch 2, batch 2
    return model


def test_coco_json_training_and_clear_errors(tmp_path, offline_mnist):
    from minicnn.detection.mnist_detection import mnist_detection, write_coco
    path = write_coco(mnist_detection("train", count=10, mnist=fake_mnist()), tmp_path / "data")
    history = run(["--train", f"coco-json:{path}", "--input-size", "128", "--epochs", "1",
                   "--batch-size", "4", "--no-progress", "--save", str(tmp_path / "c.npz")])
    assert len(history) == 1 and history[0]["mAP"] is not None    # 1 of 10 images held out
    with pytest.raises(SystemExit, match="multiples of its stride 128"):
        run(COMMON + ["--input-size", "96"])
    with pytest.raises(SystemExit, match="unknown detection data 'pascal'"):
        run(["--train", "pascal", "--save", str(tmp_path / "x.npz")])
    with pytest.raises(SystemExit, match="need a trained network"):
        run(["--evaluate"])


def test_the_efficientdet_family_is_wired_to_the_command(capsys):
    architectures = pytest.importorskip("architectures")
    if "efficientdet_d0" not in architectures.available():
        pytest.skip("the efficientdet family is not in this tree")
    with pytest.raises(SystemExit) as done:
        detection_train.family_main("efficientdet", ["--help"])
    assert done.value.code == 0
    assert "efficientdet_d0" in capsys.readouterr().out


def test_batch_norm_recalibration_averages_the_batch_statistics():
    """After recalibration the running mean is the mean of the batches' means, whatever
    the layer's (slow) momentum, and the momentum is put back."""
    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(1, momentum=0.01)

        def forward(self, x):
            self.norm(x)
            return x.reshape(len(x), -1, 1), x.reshape(len(x), -1, 4)

    class Images:
        """Six constant images, 1 to 6: in batches of two, 1 and 2, 3 and 4, 5 and 6."""

        def order(self, epoch):
            return np.arange(6)

        def images(self, indices):
            return np.stack([np.full((1, 4, 4), i + 1.0, np.float32) for i in indices]), None

    model = Probe()
    detection_train.recalibrate_batch_norm(model, Images(), 0, count=3, batch_size=2)
    assert model.norm.running_mean.item() == pytest.approx(3.5)    # mean of 1.5, 3.5, 5.5
    # each batch: variance 0.25 over 2·16 values, unbiased ×32/31 as PyTorch keeps it
    assert model.norm.running_var.item() == pytest.approx(0.25 * 32 / 31)
    assert model.norm.momentum == 0.01


def _settings_for(argv, saved=None):
    args = detection_train.build_parser("test", ["tiny"], "tiny").parse_args(argv)
    return detection_train._settings(args, saved, args.train)


def test_mnist_detection_trains_with_its_recipe_and_user_data_with_the_network_as_published():
    recipe = _settings_for(["--train", "mnist-detection"])
    assert recipe["anchor_scale"] == 3.0 and recipe["drop_path_rate"] == 0.0
    published = _settings_for(["--train", "coco-json:instances.json"])
    assert published["anchor_scale"] is None and published["drop_path_rate"] is None
    assert _settings_for(["--train", "mnist-detection", "--anchor-scale", "4"])[
        "anchor_scale"] == 4.0
    # a resumed run keeps the settings it was trained with
    resumed = _settings_for([], saved={"anchor_scale": 2.5, "epochs": 3})
    assert resumed["anchor_scale"] == 2.5 and resumed["epochs"] == 3


def test_a_time_budget_drives_the_schedule_when_the_clock_is_ahead_of_the_steps():
    from minicnn.train import make_optimizer, make_schedule
    weight = nn.Parameter(np.zeros(1, np.float32))
    optimizer = make_optimizer("adamw", [weight], 1.0, 0.9, 0.0)
    schedule = make_schedule("cosine", optimizer, epochs=1, steps_per_epoch=100)
    detection_train.follow_the_clock(schedule, 0.5, total_steps=100)   # half the time: half-way
    assert schedule.step_count == 50
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)     # cos(π/2) halfway down
    detection_train.follow_the_clock(schedule, 0.2, total_steps=100)   # steps ahead: no change
    assert schedule.step_count == 50
    detection_train.follow_the_clock(schedule, 1.3, total_steps=100)   # never past the end
    assert schedule.step_count == 100 and optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
