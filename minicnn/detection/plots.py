"""Pictures of a detector (``--plot DIR`` and ``--predict``).

* ``detection_curves``  — per epoch: the training losses (total, focal, box) and the test
  mAP / mAP@0.5;
* ``detections_grid``   — test images with the predicted boxes drawn and labelled
  ("7 0.98": class and score), ground truth in thin dashed green;
* ``draw_detections``   — one image at its own resolution with its boxes, as a PIL image.

matplotlib draws the first two without a display (Agg canvas, no pyplot); the third
needs only pillow.
"""
import os

import numpy as np

from minicnn.plots import _figure, _save

BOX_COLOURS = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
               "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff")


def _colour(label):
    return BOX_COLOURS[int(label) % len(BOX_COLOURS)]


def detection_curves(history, path):
    """Losses and test mAP per epoch from the run's history records; returns ``path``."""
    figure = _figure((10, 4), 100)
    losses, scores = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    epochs = [record["epoch"] for record in history]
    for key, name in (("train_loss", "total"), ("class_loss", "focal (classes)"),
                      ("box_loss", "Huber (boxes) × 50")):
        values = [record[key] * (50 if key == "box_loss" else 1) for record in history]
        losses.plot(epochs, values, marker="o", label=name)
    losses.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss")
    losses.legend()
    for key, name in (("mAP50", "mAP@0.5"), ("mAP", "mAP@[.5:.95]")):
        points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        if points:
            scores.plot(*zip(*points), marker="o", label=name)
    scores.set(xlabel="epoch", ylabel="COCO mAP on the test set", ylim=(0, 1), title="test mAP")
    scores.legend()
    figure.tight_layout()
    return _save(figure, path)


def detections_grid(images, detections, classes, path, ground_truth=None, columns=4):
    """A grid of ``images`` (uint8 (H, W, C)) with their ``detections`` (dicts of boxes,
    scores, labels) and optionally ``ground_truth`` (a list of (boxes, labels))."""
    from matplotlib.patches import Rectangle
    rows = -(-len(images) // columns)
    figure = _figure((3 * columns, 3 * rows), 100)
    for index, (image, found) in enumerate(zip(images, detections)):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray",
                    vmin=0, vmax=255)
        axes.set_axis_off()
        if ground_truth is not None:
            for x1, y1, x2, y2 in ground_truth[index][0]:
                axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                                         edgecolor="#00ff00", linestyle="--", linewidth=0.8))
        for (x1, y1, x2, y2), score, label in zip(found["boxes"], found["scores"],
                                                  found["labels"]):
            axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                                     edgecolor=_colour(label), linewidth=1.5))
            axes.text(x1, y1, f"{classes[label]} {score:.2f}", color="black", fontsize=7,
                      va="bottom", bbox={"facecolor": _colour(label), "alpha": 0.8, "pad": 1,
                                         "linewidth": 0})
    figure.tight_layout()
    return _save(figure, path)


def draw_detections(image, detections, classes):
    """A PIL RGB image of ``image`` (uint8 (H, W, C)) with boxes and "class score" labels."""
    from PIL import Image, ImageDraw
    picture = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for (x1, y1, x2, y2), score, label in zip(detections["boxes"], detections["scores"],
                                              detections["labels"]):
        draw.rectangle([x1, y1, x2, y2], outline=_colour(label), width=2)
        text = f"{classes[label]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        shift = bottom - top + 2
        draw.rectangle([left, top - shift, right, bottom - shift], fill=_colour(label))
        draw.text((x1, y1 - shift), text, fill="black")
    return picture


def write_detections_image(image, detections, classes, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    draw_detections(np.asarray(image), detections, classes).save(path)
    return path
