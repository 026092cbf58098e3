"""The detection command: train, evaluate and predict with a detector (EfficientDet).

    python -m architectures.efficientdet --train mnist-detection      # the recipe below
    python -m architectures.efficientdet --train coco-json:annotations/train.json \\
        --test coco-json:annotations/val.json
    python -m architectures.efficientdet --train voc:VOCdevkit/VOC2012
    python -m architectures.efficientdet --resume RUN.npz --evaluate
    python -m architectures.efficientdet --resume RUN.npz --predict photo.png

A network family hands its constructor to ``main(argv, build_model=..., variants=...)``;
everything else is here. The network's contract: ``model(x)`` for images (N, C, S, S)
returns ``(class outputs, box outputs)``, either as lists of per-level maps
(N, 9·classes, H, W) and (N, 9·4, H, W) for P3…P7, or already flattened to (N, A, classes)
and (N, A, 4) in the anchor order of ``minicnn.detection.anchors``.

One training step::

    classes, box_targets = match_anchors(anchors, boxes, labels)   # per image, no gradient
    class_logits, box_deltas = model(images)
    loss = focal(class_logits) / n_fg + 50 · huber(box_deltas) / (4 · n_fg)
    optimizer.zero_grad(); loss.backward(); clip the gradient norm to 10; optimizer.step()

The duties of minicnn's command line, as ``minicnn.train`` does them for classifiers:

* progress: a tqdm bar per epoch (running loss, images/s) on stderr, or, with
  ``--no-progress`` (a log file), a line every tenth of an epoch; one summary line per
  epoch on stdout with the test mAP figures;
* checkpoints (``--save``, default ``checkpoints/VARIANT-DATASET.npz``): written atomically
  after every epoch with the weights, optimizer, schedule, epoch and batch reached, the
  history and the random state; the history also goes beside it as CSV and JSON;
* ``--resume``: continues where the checkpoint stopped — shuffling is a function of
  (seed, epoch), so the batches are the ones the uninterrupted run would have seen;
* Ctrl-C stops after the current batch and saves (a second Ctrl-C quits at once);
  ``--max-minutes`` does the same when the training time is spent, then evaluates — and
  until then the learning-rate schedule keeps pace with the clock (``follow_the_clock``);
* at each epoch's end the batch-norm statistics are recomputed over ``--bn-batches``
  batches of 64 training images (``recalibrate_batch_norm`` says why), then the test mAP
  is measured;
* ``--evaluate`` writes ``ground_truth.json`` and ``detections.json`` (COCO format) beside
  the checkpoint and prints the mAP figures computed from exactly those files;
* ``--plot DIR``: loss and mAP curves and test images with predicted boxes;
* ``--predict IMAGE``: prints each box and writes IMAGE's ``.detections.png``.

Images are fed as pixel / 255. Images whose size differs from ``--input-size`` are
resized to it (stretched; boxes scaled alike) and detections scaled back, so evaluation
and predictions are in the image's own pixels. No augmentation: flipping digits would
change what they are.

The mnist-detection recipe (``DEFAULTS`` with ``MNIST_DETECTION_RECIPE`` over them): D0 on
128-px canvases, anchor scale 3, no stochastic depth, AdamW at 2·10⁻³ with a warm-up and
a cosine decay, batches of 8, an 11-minute training budget; then precise batch norm and
the COCO evaluation on 500 test canvases.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from minicnn.backend import to_device
from minicnn.detection.anchors import (ANCHOR_SCALE, MAX_LEVEL, MIN_LEVEL, check_image_size,
                                       generate_anchors)
from minicnn.detection.boxes import match_anchors
from minicnn.detection.coco_eval import evaluate_coco
from minicnn.detection.losses import detection_loss, flatten_level_outputs
from minicnn.detection.nms import postprocess
from minicnn.tensor import Tensor, no_grad
from minicnn.train import StopRequests

DEFAULTS = {"input_size": 128, "epochs": 12, "batch_size": 16, "lr": 2e-3,
            "optimizer": "adamw", "momentum": 0.9, "weight_decay": 1e-4,
            "schedule": "warmup:0.3+cosine", "seed": 0, "train_count": 6000, "test_count": 500,
            "clip_norm": 10.0, "score_threshold": 0.05, "device": "cpu", "eval_every": 1,
            "bn_batches": 20, "anchor_scale": None, "drop_path_rate": None,
            "max_minutes": None}

# What ``--train mnist-detection`` changes in DEFAULTS (a user's data keeps the network as
# published). Why each value:
# * anchor_scale 3: the official configuration's ``anchor_scale`` (4 for D0) sets the
#   smallest anchor to 4 × 8 = 32 px; a 128-px canvas's digits are 23–58 px tall and as
#   narrow as 5 px, and at scale 4 one digit in ten overlaps no anchor by IoU 0.5 (it is
#   then learned from its single forced match only). At 3 (24–38 px at P3) all but 2 %
#   do, with about 16 foreground anchors per digit.
# * drop_path_rate 0: stochastic depth regularises long runs; a run of a few hundred
#   steps underfits, so it only slows the fit.
# * max_minutes 11: the run is a time budget, not a number of epochs (see
#   ``follow_the_clock``), so that data, training and the final evaluation fit 15 minutes
#   on two shared cores, however busy they are (under a load of 14 on 2 cores the
#   batch-norm refresh and the evaluation of 500 canvases took 3.7 of them).
# * batch_size 8: the time per image hardly depends on the batch (GEMMs dominate), so
#   half the batch is twice the steps in the budget.
MNIST_DETECTION_RECIPE = {"anchor_scale": 3.0, "drop_path_rate": 0.0, "max_minutes": 11.0,
                          "epochs": 2, "batch_size": 8}


class TrainingStopped(Exception):
    """Training stopped early (Ctrl-C or SIGTERM) with its checkpoint saved."""


# ----------------------------------------------------------------------------- data

def load_dataset(spec, split, input_size, count=None, seed=0, data_dir=None):
    """A DetectionDataset from ``mnist-detection``, ``coco-json:PATH`` or ``voc:PATH``.

    For VOC, ``split`` names ``ImageSets/Main/<split>.txt`` when it exists (else every
    annotation of the folder is used).
    """
    kind, _, path = spec.partition(":")
    if kind == "mnist-detection" and not path:
        from minicnn.detection.mnist_detection import mnist_detection
        return mnist_detection(split, count, input_size, seed, data_dir)
    if kind == "coco-json" and path:
        from minicnn.detection.formats import read_coco_json
        return read_coco_json(path)
    if kind == "voc" and path:
        from minicnn.detection.formats import read_voc
        listed = os.path.isfile(os.path.join(path, "ImageSets", "Main", f"{split}.txt"))
        return read_voc(path, split=split if listed else None)
    raise ValueError(f"unknown detection data {spec!r}; use mnist-detection, coco-json:PATH "
                     f"(a COCO instances file) or voc:PATH (a Pascal VOC folder)")


def held_out_split(dataset, fraction=0.1, seed=0):
    """(train, test) index arrays: a seeded ``fraction`` of the images held out for testing."""
    order = np.random.default_rng((seed, 7)).permutation(len(dataset))
    held = max(1, int(round(fraction * len(dataset))))
    return np.sort(order[held:]), np.sort(order[:held])


def prepare_pixels(image, input_size):
    """(float32 (C, S, S) pixels / 255, (x scale, y scale) from the image to the input) of a
    uint8 (H, W, C) image, resized (bilinear) when it is not S×S already."""
    height, width = image.shape[:2]
    if (height, width) != (input_size, input_size):
        from PIL import Image
        squeezed = image[..., 0] if image.shape[2] == 1 else image
        image = np.asarray(Image.fromarray(squeezed).resize((input_size, input_size),
                                                            Image.BILINEAR))
        image = image[..., None] if image.ndim == 2 else image
    pixels = image.transpose(2, 0, 1).astype(np.float32) / 255.0
    return pixels, (input_size / width, input_size / height)


class DetectionBatches:
    """Batches of (images, anchor classes, box targets) from some images of a data set."""

    def __init__(self, dataset, indices, input_size, batch_size, anchors, seed=0):
        self.dataset, self.indices = dataset, np.asarray(indices)
        self.input_size, self.batch_size = input_size, batch_size
        self.anchors, self.seed = anchors, seed

    def __len__(self):
        return -(-len(self.indices) // self.batch_size)

    def order(self, epoch):
        shuffle = np.random.default_rng((self.seed, epoch))
        return self.indices[shuffle.permutation(len(self.indices))]

    def images(self, indices):
        pixels, scales = zip(*(prepare_pixels(self.dataset.load_image(i), self.input_size)
                               for i in indices))
        return np.stack(pixels), scales

    def batch(self, indices):
        images, scales = self.images(indices)
        classes, box_targets = [], []
        for index, (scale_x, scale_y) in zip(indices, scales):
            boxes, labels = self.dataset.targets(index)
            c, t = match_anchors(self.anchors, boxes * [scale_x, scale_y, scale_x, scale_y],
                                 labels)
            classes.append(c)
            box_targets.append(t)
        return images, np.stack(classes), np.stack(box_targets).astype(np.float32)

    def batches(self, epoch, start=0):
        order = self.order(epoch)
        for first in range(start * self.batch_size, len(order), self.batch_size):
            yield self.batch(order[first:first + self.batch_size])


# ----------------------------------------------------------------------------- the model

def model_outputs(model, images):
    """The model's (class logits (N, A, C), box deltas (N, A, 4)) as Tensors."""
    class_outputs, box_outputs = model(images)
    if isinstance(class_outputs, (list, tuple)):
        class_outputs = flatten_level_outputs(class_outputs, class_outputs[0].shape[1] // 9)
        box_outputs = flatten_level_outputs(box_outputs, 4)
    return class_outputs, box_outputs


def anchor_settings(model):
    """(min level, max level, anchor scale) of a network that has a ``config`` with those
    fields (EfficientDet's: D7 uses anchor scale 5, D7x goes up to P8), else P3–P7 and 4."""
    config = getattr(model, "config", None)
    return (getattr(config, "min_level", MIN_LEVEL), getattr(config, "max_level", MAX_LEVEL),
            getattr(config, "anchor_scale", ANCHOR_SCALE))


def check_model(model, anchors, num_classes, in_channels, input_size, device):
    """A clear error when the network's outputs do not fit the anchors or the classes."""
    model.eval()
    with no_grad():
        probe = Tensor(to_device(np.zeros((1, in_channels, input_size, input_size),
                                          np.float32), device))
        class_logits, box_deltas = model_outputs(model, probe)
    model.train()
    expected_classes, expected_boxes = (1, len(anchors), num_classes), (1, len(anchors), 4)
    if class_logits.shape != expected_classes or box_deltas.shape != expected_boxes:
        raise ValueError(f"the network gives class outputs {class_logits.shape} and box outputs "
                         f"{box_deltas.shape} at {input_size}×{input_size}; the anchors need "
                         f"{expected_classes} and {expected_boxes}")


def detect_images(model, images, input_size, anchors, score_threshold, device):
    """Detections (dicts of boxes, scores, labels) for uint8 (H, W, C) ``images``, in each
    image's own pixels."""
    pixels, scales = zip(*(prepare_pixels(image, input_size) for image in images))
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            class_logits, box_deltas = model_outputs(model, Tensor(to_device(np.stack(pixels),
                                                                             device)))
    finally:
        model.train(was_training)
    found = postprocess(class_logits, box_deltas, anchors, (input_size, input_size),
                        score_threshold=score_threshold)
    for detections, (scale_x, scale_y) in zip(found, scales):
        detections["boxes"] = detections["boxes"] / [scale_x, scale_y, scale_x, scale_y]
    return found


def detect(model, batches, indices, score_threshold, device):
    """Detections for images ``indices`` of ``batches.dataset``, batch by batch."""
    found = []
    for first in range(0, len(indices), batches.batch_size):
        images = [batches.dataset.load_image(i) for i in indices[first:first + batches.batch_size]]
        found += detect_images(model, images, batches.input_size, batches.anchors,
                               score_threshold, device)
    return found


def detections_to_coco(dataset, indices, detections):
    """Detections as the COCO results list: {image_id, category_id, bbox [x, y, w, h], score}."""
    results = []
    for index, found in zip(indices, detections):
        image_id = dataset.records[index]["image_id"]
        for (x1, y1, x2, y2), score, label in zip(found["boxes"], found["scores"],
                                                  found["labels"]):
            results.append({"image_id": image_id, "category_id": dataset.category_ids[label],
                            "bbox": [round(float(x1), 3), round(float(y1), 3),
                                     round(float(x2 - x1), 3), round(float(y2 - y1), 3)],
                            "score": round(float(score), 5)})
    return results


def ground_truth_of(dataset, indices):
    coco = dataset.to_coco()
    keep = {dataset.records[i]["image_id"] for i in indices}
    coco["images"] = [image for image in coco["images"] if image["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    return coco


def evaluate_detector(model, batches, indices, score_threshold, device, out_dir=None):
    """COCO mAP figures on images ``indices``; with ``out_dir``, the ground truth and the
    detections are written there as COCO JSON first and the figures computed from them."""
    truth = ground_truth_of(batches.dataset, indices)
    results = detections_to_coco(batches.dataset, indices,
                                  detect(model, batches, indices, score_threshold, device))
    if out_dir is None:
        return evaluate_coco(truth, results)
    os.makedirs(out_dir, exist_ok=True)
    truth_path = os.path.join(out_dir, "ground_truth.json")
    results_path = os.path.join(out_dir, "detections.json")
    from minicnn.data.download import atomic_write
    for path, value in ((truth_path, truth), (results_path, results)):
        atomic_write(path, lambda f, v=value: f.write(json.dumps(v).encode()))
    figures = evaluate_coco(truth_path, results_path)
    return {**figures, "ground_truth": truth_path, "detections": results_path}


# ----------------------------------------------------------------------------- training

# Precise BN reads the training images in batches of this many, not the training batch:
# the statistics of a batch of 8 canvases are too noisy for the deep levels (P5–P7 hold
# 4×4 to 1×1 cells per canvas). The mnist-detection D0 after two epochs (6,000 canvases,
# batches of 8), test mAP / mAP50: running statistics 0.309 / 0.392; recomputed over 10
# batches of 8 canvases, the same; over 100 batches of 8, 0.446 / 0.558; over 20 batches of
# 64, 0.759 / 0.954 (and normalising each test batch by its own statistics, which makes a
# detection depend on the other images of the batch, 0.735 / 0.947).
RECALIBRATION_BATCH = 64


def recalibrate_batch_norm(model, batches, epoch, count, batch_size=RECALIBRATION_BATCH):
    """Set every batch norm's running statistics to the average of its batch statistics
    over the first ``count`` batches of ``batch_size`` training images in ``epoch``'s
    order (the weights stay as they are).

    Why: EfficientDet's batch norms use momentum 0.01 (TensorFlow's decay 0.99), so their
    running averages remember about the last 100 steps — of weights that have changed
    since, and of batches too small to describe the whole training set (see
    RECALIBRATION_BATCH). After a short run they describe an older network, and in eval
    mode the detector then scores badly. Forward passes with momentum 1/k on the k-th
    batch make the running values the plain mean over the batches, of the current weights
    ("precise BN", Wu & Johnson 2021).
    """
    norms = [m for m in model.modules()      # every layer that keeps running statistics
             if getattr(m, "track_running_stats", False) and hasattr(m, "momentum")]
    if not norms or count <= 0:
        return
    momenta = [m.momentum for m in norms]
    order = batches.order(epoch)
    was_training = model.training
    model.train()
    try:
        with no_grad():
            for k, first in enumerate(range(0, min(count * batch_size, len(order)),
                                             batch_size), 1):
                for norm in norms:
                    norm.momentum = 1.0 / k
                images, _ = batches.images(order[first:first + batch_size])
                model_outputs(model, Tensor(to_device(images, _model_device(model))))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)


def _model_device(model):
    for parameter in model.parameters():
        return parameter.device
    return "cpu"


def follow_the_clock(schedule, fraction_of_budget, total_steps):
    """Advance ``schedule`` to ``fraction_of_budget`` of its ``total_steps`` when the clock
    is ahead of the steps taken.

    With a time budget the run ends when the time is spent, however many steps the
    machine managed by then. A schedule counted in steps alone would then stop midway
    (a cosine still near its peak); following whichever is further along, the steps or
    the clock, brings the warm-up and the decay to their end exactly when the budget is
    spent, on an idle machine and on a busy one alike.
    """
    behind = int(fraction_of_budget * total_steps) - schedule.step_count
    for _ in range(min(behind, total_steps - schedule.step_count)):
        schedule.step()


def _summary_line(record, epochs):
    line = (f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}  loss "
            f"{record['train_loss']:.4f} (focal {record['class_loss']:.4f}, box "
            f"{record['box_loss']:.5f})")
    if record.get("mAP") is not None:
        line += (f"  test mAP {record['mAP']:.3f} mAP50 {record['mAP50']:.3f} "
                 f"mAP75 {record['mAP75']:.3f}")
    return line + (f"  lr {record['lr']:.3g}  {record['time_s']:.0f} s  "
                   f"{record['images_per_s']:.1f} img/s")


def fit_detector(model, optimizer, schedule, train, test, test_indices, epochs, *, device="cpu",
                 checkpoint=None, metadata=None, resume_state=None, clip_norm=10.0,
                 score_threshold=0.05, eval_every=1, max_seconds=None, progress=True,
                 bn_batches=20, log=print):
    """Train for ``epochs`` (see module doc); returns the history (one dict per epoch).

    Raises ``TrainingStopped`` after Ctrl-C, once the checkpoint is saved. When
    ``max_seconds`` of training time are spent, the epoch ends there, is evaluated and
    saved, and training stops. At the end of every epoch, before evaluating and saving,
    the batch-norm statistics are recomputed over ``bn_batches`` training batches
    (``recalibrate_batch_norm``).
    """
    from minicnn.optim import clip_grad_norm_
    from minicnn.train import restore, save_training_checkpoint, write_history
    history, start_epoch, start_batch = [], 0, 0
    running = {"loss": 0.0, "class": 0.0, "box": 0.0, "seen": 0, "time_s": 0.0}
    spent = 0.0
    if resume_state is not None:
        saved = restore(resume_state, model, optimizer, schedule)
        history, start_epoch, start_batch = saved["history"], saved["epoch"], saved["batch"]
        running, spent = saved["running"], saved.get("spent_s", 0.0)

    def snapshot(epoch, batch):
        if checkpoint is None:
            return
        save_training_checkpoint(checkpoint, model, optimizer, schedule,
                                 {"epoch": epoch, "batch": batch, "history": history,
                                  "running": running, "spent_s": spent}, metadata)
        write_history(checkpoint, history)

    steps = len(train)
    model.train()
    with StopRequests(lambda line: print(line, file=sys.stderr, flush=True)) as stop:
        for epoch in range(start_epoch, epochs):
            first = start_batch if epoch == start_epoch else 0
            if first == 0:
                running = {"loss": 0.0, "class": 0.0, "box": 0.0, "seen": 0, "time_s": 0.0}
            bar = None
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{epochs}",
                           unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)
            began, before = time.perf_counter(), running["time_s"]
            spent_before = spent
            batch, out_of_time = first, False
            try:
                for images, classes, box_targets in train.batches(epoch, start=first):
                    x = Tensor(to_device(images, device))
                    class_logits, box_deltas = model_outputs(model, x)
                    loss, class_loss, box_loss = detection_loss(class_logits, box_deltas,
                                                                classes, box_targets)
                    optimizer.zero_grad()
                    loss.backward()
                    if clip_norm:
                        clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                        clip_norm)
                    optimizer.step()
                    if schedule is not None:
                        schedule.step()
                    value = float(loss.item())
                    if not math.isfinite(value):
                        raise FloatingPointError(
                            f"the loss became {value} at epoch {epoch + 1}, batch {batch + 1} "
                            f"(learning rate {optimizer.param_groups[0]['lr']:.4g}); try a "
                            f"lower --lr")
                    count = len(images)
                    running["loss"] += value * count
                    running["class"] += float(class_loss.item()) * count
                    running["box"] += float(box_loss.item()) * count
                    running["seen"] += count
                    batch += 1
                    running["time_s"] = before + time.perf_counter() - began
                    spent = spent_before + time.perf_counter() - began
                    if max_seconds is not None and schedule is not None:
                        follow_the_clock(schedule, spent / max_seconds, epochs * steps)
                    status = (f"loss {running['loss'] / running['seen']:.4f} "
                              f"{running['seen'] / running['time_s']:.1f} img/s")
                    if bar is not None:
                        bar.set_postfix_str(status, refresh=False)
                        bar.update(1)
                    elif batch % max(1, steps // 10) == 0:   # a log file gets ten lines
                        log(f"  epoch {epoch + 1} batch {batch}/{steps}  {status}")
                    out_of_time = max_seconds is not None and spent >= max_seconds
                    if stop.requested or out_of_time:
                        break
            finally:
                if bar is not None:
                    bar.close()
            if stop.requested and batch < steps:
                snapshot(epoch, batch)
                raise TrainingStopped(f"training stopped at epoch {epoch + 1}, batch {batch}"
                                      + (f"; checkpoint saved to {checkpoint}" if checkpoint
                                         else "; nothing saved"))
            seen = max(running["seen"], 1)
            record = {"epoch": epoch + 1, "batches": batch, "train_loss": running["loss"] / seen,
                      "class_loss": running["class"] / seen, "box_loss": running["box"] / seen,
                      "lr": float(optimizer.param_groups[0]["lr"]), "time_s": running["time_s"],
                      "images_per_s": running["seen"] / max(running["time_s"], 1e-9),
                      "mAP": None, "mAP50": None, "mAP75": None}
            last = epoch + 1 == epochs or out_of_time
            recalibrate_batch_norm(model, train, epoch, bn_batches)
            if test is not None and ((epoch + 1) % eval_every == 0 or last):
                figures = evaluate_detector(model, test, test_indices, score_threshold, device)
                record.update(mAP=figures["mAP"], mAP50=figures["mAP50"], mAP75=figures["mAP75"])
            history.append(record)
            log(_summary_line(record, epochs))
            running = {"loss": 0.0, "class": 0.0, "box": 0.0, "seen": 0, "time_s": 0.0}
            snapshot(epoch + 1, 0)
            if out_of_time:
                log(f"the training time budget ({max_seconds / 60:g} min) is spent: stopping "
                    f"after {epoch + 1} epoch(s)")
                break
            if stop.requested:
                raise TrainingStopped(f"training stopped after epoch {epoch + 1}"
                                      + (f"; checkpoint saved to {checkpoint}" if checkpoint
                                         else ""))
    return history


# ----------------------------------------------------------------------------- the command

def build_parser(program, variants, default_variant):
    d = DEFAULTS
    parser = argparse.ArgumentParser(
        prog=program, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, evaluate or run an object detector (minicnn).",
        epilog="examples:\n"
               f"  {program} --train mnist-detection --input-size 128 --max-minutes 15\n"
               f"  {program} --resume checkpoints/RUN.npz --evaluate\n"
               f"  {program} --resume checkpoints/RUN.npz --predict image.png")
    task = parser.add_argument_group("what to do")
    task.add_argument("--train", metavar="DATA", help="train on mnist-detection, "
                      "coco-json:PATH (COCO instances JSON, images beside it) or voc:PATH "
                      "(a Pascal VOC folder)")
    task.add_argument("--test", metavar="DATA", help="evaluate on this data (same forms); "
                      "default: mnist-detection's test split, VOC's val split when listed, "
                      "else 10%% of the training images held out")
    task.add_argument("--evaluate", action="store_true", help="evaluate the --resume "
                      "checkpoint: print COCO mAP and write ground_truth.json and "
                      "detections.json beside the checkpoint")
    task.add_argument("--predict", nargs="+", metavar="IMAGE", help="print the boxes found in "
                      "each image and write IMAGE.detections.png (with --resume)")
    task.add_argument("--summary", action="store_true", help="print layers, shapes, "
                      "parameters and FLOPs at --input-size")
    net = parser.add_argument_group("network")
    net.add_argument("--variant", default=default_variant, choices=variants,
                     help=f"which network (default: {default_variant})")
    net.add_argument("--input-size", type=int, metavar="PIXELS", help="square input side, a "
                     f"multiple of 128 (default: {d['input_size']} for mnist-detection, else "
                     "the variant's published size)")
    recipe = parser.add_argument_group("training")
    for flag, kind, text in (
            ("--epochs", int, "passes over the training images"),
            ("--batch-size", int, "images per step"),
            ("--lr", float, "peak learning rate"),
            ("--momentum", float, "momentum of sgd and rmsprop"),
            ("--weight-decay", float, "L2 penalty (decoupled for adamw)"),
            ("--schedule", str, "learning-rate schedule, as for the classifiers: constant, "
                                "cosine, warmup:W+cosine, step:N[:G], ..."),
            ("--clip-norm", float, "clip the global gradient norm to this (0: off)"),
            ("--seed", int, "seed of initialisation, shuffling and the canvases"),
            ("--train-count", int, "mnist-detection: training canvases"),
            ("--test-count", int, "mnist-detection: test canvases"),
            ("--eval-every", int, "evaluate mAP every N epochs (and after the last)"),
            ("--bn-batches", int, "at each epoch's end, recompute batch-norm statistics "
                                  "over N batches of 64 training images (0: keep the "
                                  "running ones)"),
            ("--score-threshold", float, "detections below this score are dropped"),
            ("--anchor-scale", float, "anchor side at octave 0 in strides (the official "
                                      "anchor_scale)"),
            ("--drop-path-rate", float, "the backbone's stochastic depth")):
        key = flag[2:].replace("-", "_")
        recipe.add_argument(flag, type=kind, help=f"{text} (default: "
            f"{'as the network is published' if d[key] is None else d[key]}" + (
            f"; mnist-detection: {MNIST_DETECTION_RECIPE[key]})"
            if key in MNIST_DETECTION_RECIPE else ")"))
    recipe.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "rmsprop"),
                        help=f"update rule (default: {d['optimizer']})")
    recipe.add_argument("--max-minutes", type=float, metavar="M", help="a training time "
                        "budget: the schedule runs on the clock when it is ahead of the steps, "
                        "and training stops (then evaluates and saves) when M minutes are "
                        "spent (mnist-detection: "
                        f"{MNIST_DETECTION_RECIPE['max_minutes']:g}; else none)")
    where = parser.add_argument_group("where")
    where.add_argument("--device", choices=("cpu", "gpu"), help="default: cpu")
    where.add_argument("--data-dir", metavar="DIR", help="folder holding MNIST")
    where.add_argument("--save", metavar="PATH", help="checkpoint written after every epoch "
                       "(default: checkpoints/VARIANT-DATA.npz)")
    where.add_argument("--resume", metavar="PATH", help="continue training from, evaluate or "
                       "predict with this checkpoint")
    where.add_argument("--plot", metavar="DIR", help="write loss/mAP curves and test images "
                       "with predicted boxes as PNGs into DIR")
    where.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _settings(args, saved, train_spec):
    """Command line over the checkpoint's settings over the defaults (with the
    mnist-detection recipe's for that data)."""
    settings = dict(DEFAULTS)
    if train_spec in (None, "mnist-detection"):
        settings.update(MNIST_DETECTION_RECIPE)
    settings.update({k: v for k, v in (saved or {}).items() if k in DEFAULTS})
    settings.update({k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None})
    return settings


def _dataset_tag(spec):
    kind, _, path = spec.partition(":")
    return kind if not path else f"{kind}-{os.path.splitext(os.path.basename(path.rstrip('/')))[0]}"


def _data(train_spec, test_spec, settings, data_dir):
    """(train set, train indices, test set, test indices)."""
    size, seed = settings["input_size"], settings["seed"]
    train = load_dataset(train_spec, "train", size, settings["train_count"], seed, data_dir)
    if test_spec is None and train_spec == "mnist-detection":
        test_spec = "mnist-detection"
    if test_spec is None and train_spec.startswith("voc:"):
        listing = os.path.join(train_spec[4:], "ImageSets", "Main", "val.txt")
        test_spec = train_spec if os.path.isfile(listing) else None
    if test_spec is None:
        train_indices, test_indices = held_out_split(train, seed=seed)
        return train, train_indices, train, test_indices
    test = load_dataset(test_spec, "test" if test_spec == "mnist-detection" else "val", size,
                        settings["test_count"], seed, data_dir)
    return train, np.arange(len(train)), test, np.arange(len(test))


def _write_plots(directory, model, history, batches, indices, settings, device, log):
    from minicnn.detection.plots import detection_curves, detections_grid
    written = []
    if history:
        written.append(detection_curves(history, os.path.join(directory, "curves.png")))
    shown = np.asarray(indices)[:8]
    found = detect(model, batches, shown, max(settings["score_threshold"], 0.3), device)
    images = [batches.dataset.load_image(i) for i in shown]
    truth = [batches.dataset.targets(i) for i in shown]
    written.append(detections_grid(images, found, batches.dataset.classes,
                                   os.path.join(directory, "test_detections.png"), truth))
    log("plots: " + ", ".join(written))


def _predict(model, paths, meta, anchors, settings, device, log):
    from minicnn.detection.formats import read_image
    from minicnn.detection.plots import write_detections_image
    classes = meta["classes"]
    for path in paths:
        image = read_image(path, meta["in_channels"])
        (found,) = detect_images(model, [image], settings["input_size"], anchors,
                                 settings["score_threshold"], device)
        log(f"{path}: {len(found['boxes'])} object(s)")
        for (x1, y1, x2, y2), score, label in zip(found["boxes"], found["scores"], found["labels"]):
            log(f"  {classes[label]:>12}  {score:.3f}  x1 {x1:.1f}  y1 {y1:.1f}  "
                f"x2 {x2:.1f}  y2 {y2:.1f}")
        written = write_detections_image(image, found, classes,
                                         os.path.splitext(path)[0] + ".detections.png")
        log(f"  boxes drawn in {written}")


def _train(args, model, run, state, settings, log):
    """Train (or continue) the run; returns its history. Ctrl-C ends the command (code 130)
    once the checkpoint is saved."""
    from minicnn.train import make_optimizer, make_schedule
    size, device = settings["input_size"], settings["device"]
    check_model(model, run["anchors"], len(run["classes"]), run["in_channels"], size, device)
    batches = DetectionBatches(run["train"], run["train_indices"], size, settings["batch_size"],
                               run["anchors"], settings["seed"])
    optimizer = make_optimizer(settings["optimizer"], model.parameters(), settings["lr"],
                               settings["momentum"], settings["weight_decay"])
    schedule = make_schedule(settings["schedule"], optimizer, settings["epochs"], len(batches))
    log(f"{run['metadata']['variant']} on {run['metadata']['train']}: "
        f"{len(run['train_indices'])} training and {len(run['test_indices'])} test images, "
        f"{len(run['classes'])} classes, input {size}×{size}, {len(run['anchors'])} anchors")
    log("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    log(f"checkpoint: {run['checkpoint']}")
    started = time.perf_counter()
    try:
        history = fit_detector(
            model, optimizer, schedule, batches, _test_batches(run, settings),
            run["test_indices"], settings["epochs"], device=device,
            checkpoint=run["checkpoint"], metadata=run["metadata"], resume_state=state,
            clip_norm=settings["clip_norm"], score_threshold=settings["score_threshold"],
            eval_every=settings["eval_every"], bn_batches=settings["bn_batches"],
            max_seconds=None if settings["max_minutes"] is None else 60 * settings["max_minutes"],
            progress=not args.no_progress, log=log)
    except TrainingStopped as stopped:
        log(str(stopped))
        raise SystemExit(130) from None
    log(f"trained in {time.perf_counter() - started:.0f} s wall time")
    return history


def _test_batches(run, settings):
    return DetectionBatches(run["test"], run["test_indices"], settings["input_size"],
                            settings["batch_size"], run["anchors"])


def _evaluate(model, run, settings, log):
    """Print COCO mAP on the test images, from the JSON files written beside the checkpoint."""
    figures = evaluate_detector(model, _test_batches(run, settings), run["test_indices"],
                                settings["score_threshold"], settings["device"],
                                out_dir=os.path.dirname(os.path.abspath(run["checkpoint"])))
    log(f"COCO mAP on {len(run['test_indices'])} test images: mAP {figures['mAP']:.4f}  "
        f"mAP50 {figures['mAP50']:.4f}  mAP75 {figures['mAP75']:.4f}  small "
        f"{figures['mAP_small']:.4f}  medium {figures['mAP_medium']:.4f}  large "
        f"{figures['mAP_large']:.4f}")
    log(f"ground truth: {figures['ground_truth']}\ndetections: {figures['detections']}")


def _open_run(args, state, settings, needs_data, program):
    """What the tasks share: the data (when a task needs it), the classes, the
    checkpoint path and the metadata a checkpoint carries."""
    meta = state["meta"] if state else {}
    train_spec = meta.get("train") or args.train or "mnist-detection"
    test_spec = meta.get("test") or args.test
    run = {"train": None, "test": None, "train_indices": None, "test_indices": None}
    if needs_data:
        try:   # bad data is the user's to fix: say what is wrong, no traceback
            run["train"], run["train_indices"], run["test"], run["test_indices"] = _data(
                train_spec, test_spec, settings, args.data_dir)
        except ValueError as error:
            raise SystemExit(f"{program}: {error}") from None
        run.update(classes=run["train"].classes, category_ids=run["train"].category_ids,
                   in_channels=run["train"].channels)
    else:
        run.update(classes=meta["classes"], category_ids=meta["category_ids"],
                   in_channels=meta["in_channels"])
    variant = meta.get("variant", args.variant)
    run["checkpoint"] = args.save or args.resume or os.path.join(
        "checkpoints", f"{variant}-{_dataset_tag(train_spec)}.npz")
    run["metadata"] = {"task": "detection", "variant": variant, "train": train_spec,
                       "test": test_spec, "classes": list(run["classes"]),
                       "category_ids": list(run["category_ids"]),
                       "in_channels": run["in_channels"], "settings": settings}
    return run


def _check_request(args, state, training, program):
    meta = state["meta"] if state else {}
    if not (training or args.evaluate or args.predict or args.summary or args.plot):
        raise SystemExit(f"{program}: say what to do: --train DATA, --resume CHECKPOINT, "
                         f"--evaluate, --predict IMAGE, --plot DIR or --summary (see --help)")
    if (args.evaluate or args.predict) and state is None:
        raise SystemExit(f"{program}: --evaluate and --predict need a trained network: "
                         f"--resume CHECKPOINT")
    if state is not None and meta.get("task") != "detection":
        raise SystemExit(f"{program}: {args.resume} is not a detection checkpoint")
    if args.train and meta.get("train") not in (None, args.train):
        raise SystemExit(f"{program}: {args.resume} was trained on {meta['train']}, not "
                         f"{args.train}; leave out --train to continue it")


def main(argv=None, *, build_model, variants, default_variant, program="detect",
         published_size=None, log=print):
    """The command (see module doc). ``build_model(variant, num_classes, in_channels,
    **options)`` makes the network (options: ``drop_path_rate`` when the settings name
    one); ``published_size(variant)`` its published input side (for user data)."""
    from minicnn.nn.init import manual_seed
    from minicnn.train import load_training_checkpoint
    args = build_parser(program, variants, default_variant).parse_args(argv)
    state = load_training_checkpoint(args.resume) if args.resume else None
    # --resume alone continues the run; with another task it only provides the network
    training = bool(args.train) or (state is not None and not (
        args.evaluate or args.predict or args.summary or args.plot))
    _check_request(args, state, training, program)
    meta = state["meta"] if state else {}
    variant = meta.get("variant", args.variant)
    settings = _settings(args, meta.get("settings"), meta.get("train") or args.train)
    if args.input_size is None and "input_size" not in meta.get("settings", {}) \
            and (meta.get("train") or args.train) not in (None, "mnist-detection") \
            and published_size is not None:
        settings["input_size"] = published_size(variant)     # a user's data: as published

    if args.summary and state is None and not training:
        # the network as published: COCO's 90 classes, RGB, its own input size
        from minicnn.summary import summary
        size = settings["input_size"]
        if args.input_size is None and published_size is not None:
            size = published_size(variant)
        model = build_model(variant, num_classes=90, in_channels=3)
        log(summary(model, (3, size, size), settings["batch_size"]))
        return None

    run = _open_run(args, state, settings, training or args.evaluate or args.plot, program)
    manual_seed(settings["seed"])
    options = ({} if settings["drop_path_rate"] is None
               else {"drop_path_rate": settings["drop_path_rate"]})
    model = build_model(variant, num_classes=len(run["classes"]), in_channels=run["in_channels"],
                        **options)
    if settings["device"] == "gpu":
        model.to("gpu")
    if state is not None:
        model.load_state_dict(state["model"])
    min_level, max_level, anchor_scale = anchor_settings(model)
    if settings["anchor_scale"] is not None:
        anchor_scale = settings["anchor_scale"]
    try:
        check_image_size(settings["input_size"], max_level)
    except ValueError as error:
        raise SystemExit(f"{program}: --input-size: {error}") from None
    run["anchors"] = generate_anchors(settings["input_size"], min_level, max_level, anchor_scale)

    history = (state or {}).get("progress", {}).get("history", [])
    if training:
        history = _train(args, model, run, state, settings, log)
    if args.evaluate:
        _evaluate(model, run, settings, log)
    if args.plot:
        _write_plots(args.plot, model, history, _test_batches(run, settings),
                     run["test_indices"], settings, settings["device"], log)
    if args.predict:
        _predict(model, args.predict, run["metadata"], run["anchors"], settings,
                 settings["device"], log)
    return history


def family_main(family="efficientdet", argv=None):
    """``python -m architectures.<family>`` for a detector family of the architectures
    registry: its variants, its published input sizes, ``architectures.create``."""
    import importlib
    import architectures
    variants = architectures.available(family)
    module = importlib.import_module(f"architectures.{family}")
    default = getattr(module, "CLI_DEFAULTS", {}).get("variant", variants[0])

    def build_model(variant, num_classes, in_channels, **options):
        return architectures.create(variant, num_classes=num_classes, in_channels=in_channels,
                                    **options)

    return main(argv, build_model=build_model, variants=variants, default_variant=default,
                program=f"python -m architectures.{family}",
                published_size=lambda variant: architectures.entry(variant).input_size)


if __name__ == "__main__":
    family_main()
