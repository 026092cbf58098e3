"""Pictures of a network and its training, each written as a PNG (``--plot DIR``).

* ``learning_curves``     — loss and accuracy per epoch, train and test;
* ``filter_grid``         — the first convolution's filters as small images (ZFNet, Fig. 2);
* ``feature_maps``        — the maps a chosen layer computes for a chosen input;
* ``confusion_matrix``    — true class × predicted class counts;
* ``worst_misclassified`` — the test images the model got wrong most confidently.

Each function returns the path it wrote. The pixel size of every PNG is exactly
``figsize × dpi`` (no tight cropping), so it is predictable. matplotlib is an optional
extra (``pip install minicnn[plot]``); it is imported only when a picture is drawn, and
drawn without a display: figures are rendered by the Agg backend directly
(``FigureCanvasAgg``), never through ``pyplot``, so no global backend state is touched.
"""
import json
import math
import os

import numpy as np


def _figure(figsize, dpi):
    """A matplotlib Figure attached to an Agg canvas (clear error without matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("minicnn.plots needs matplotlib, an optional extra: "
                          "pip install 'minicnn[plot]' (or pip install matplotlib)") from None
    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    """Write the figure as a PNG atomically (no half-drawn picture after a crash)."""
    from minicnn.files import atomic_write
    return atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=figure.dpi))


def _numpy(x):
    """A NumPy array from a Tensor, a CuPy array or anything array-like."""
    if hasattr(x, "numpy") and callable(x.numpy):
        return x.numpy()
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


def _grid_shape(count, columns=None):
    columns = columns or math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def _to_unit(image):
    """Scale an image's values to [0, 1] (a constant image becomes 0.5)."""
    image = image.astype(np.float64)
    low, high = image.min(), image.max()
    return np.full_like(image, 0.5) if high == low else (image - low) / (high - low)


def _as_picture(image):
    """(C, H, W) with C in {1, 3} → what imshow takes: (H, W) or (H, W, 3) in [0, 1]."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image / 255.0
    elif image.min() < 0 or image.max() > 1:
        image = _to_unit(image)
    if image.ndim == 3 and image.shape[0] == 3:
        return image.transpose(1, 2, 0)
    if image.ndim == 3:
        return image[0]
    return image


# ===================================================================== learning curves

def _read_history(history):
    """A list of per-epoch dicts, from a list, a dict of lists, or a .json/.csv file."""
    if isinstance(history, (str, os.PathLike)):
        path = os.fspath(history)
        if path.endswith(".json"):
            with open(path) as f:
                history = json.load(f)
        else:
            import csv
            with open(path, newline="") as f:
                history = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                           for row in csv.DictReader(f)]
    if isinstance(history, dict) and "history" in history:
        history = history["history"]
    if isinstance(history, dict):
        length = max(len(v) for v in history.values())
        history = [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(length)]
    history = list(history)
    if not history or not all(isinstance(e, dict) for e in history):
        raise ValueError("learning_curves: expected a non-empty list of per-epoch dicts "
                         "(train_loss, train_accuracy, test_loss, test_accuracy)")
    return history


SHORT_METRIC_NAMES = {"accuracy": "acc"}


def _metric(record, split, metric):
    """``record["train_accuracy"]``, or its short name ``train_acc``; None when absent."""
    value = record.get(f"{split}_{metric}")
    if value is None and metric in SHORT_METRIC_NAMES:
        value = record.get(f"{split}_{SHORT_METRIC_NAMES[metric]}")
    return value


def learning_curves(history, path, figsize=(10, 4), dpi=100):
    """Loss (left) and accuracy (right) per epoch, train and test.

    ``history``: a list of per-epoch dicts with any of ``train_loss``, ``train_accuracy``,
    ``test_loss``, ``test_accuracy`` (and optionally ``epoch``) — the keys ``fit`` records;
    ``train_acc``/``test_acc`` are read too — a dict of such lists, or the path of the
    metrics JSON/CSV a training run writes. Missing values are left out.
    """
    history = _read_history(history)
    epochs = [e.get("epoch", i + 1) for i, e in enumerate(history)]
    figure = _figure(figsize, dpi)
    axes = figure.subplots(1, 2)
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        drawn = False
        for split, style in (("train", "-o"), ("test", "--s")):
            points = [(x, _metric(e, split, metric)) for x, e in zip(epochs, history)]
            points = [(x, float(y)) for x, y in points if y is not None]
            if points:
                ax.plot(*zip(*points), style, label=split, markersize=3)
                drawn = True
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend()
    figure.suptitle("Learning curves")
    return _save(figure, path)


# ========================================================================= filters

def first_conv(model):
    """(name, module) of the first Conv2d a model registers (its stem)."""
    from minicnn.nn import Conv2d
    for name, module in model.named_modules():
        if isinstance(module, Conv2d):
            return name, module
    raise ValueError(f"filter_grid: {type(model).__name__} has no Conv2d layer")


def filter_grid(model_or_weight, path, columns=None, figsize=(8, 8), dpi=100):
    """The first convolution's filters, one tile each, each scaled to its own range.

    With 3 input channels a filter is shown in colour (RGB); otherwise as the grey
    mean over its input channels. ``model_or_weight``: a model (its first Conv2d) or a
    weight array (C_out, C_in, KH, KW).
    """
    if hasattr(model_or_weight, "named_modules"):
        _, conv = first_conv(model_or_weight)
        weight = _numpy(conv.weight.data)
    else:
        weight = _numpy(model_or_weight)
    if weight.ndim != 4:
        raise ValueError(f"filter_grid: expected a weight of shape (C_out, C_in, KH, KW), "
                         f"got {weight.shape}")
    rows, columns = _grid_shape(weight.shape[0], columns)
    figure = _figure(figsize, dpi)
    for index in range(rows * columns):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.set_axis_off()
        if index >= weight.shape[0]:
            continue
        w = weight[index]
        if w.shape[0] == 3:
            ax.imshow(_to_unit(w).transpose(1, 2, 0), interpolation="nearest")
        else:
            ax.imshow(_to_unit(w.mean(axis=0)), cmap="gray", interpolation="nearest")
    figure.suptitle(f"{weight.shape[0]} filters {weight.shape[2]}×{weight.shape[3]}")
    return _save(figure, path)


# ====================================================================== feature maps

def layer_output(model, layer, image, preprocess=None):
    """The output of ``layer`` (a name or a module of ``model``) for one ``image``.

    ``image``: (C, H, W) or (1, C, H, W); uint8 images are scaled to [0, 1] unless a
    ``preprocess(batch) -> float array`` is given (e.g. the training normalization).
    Runs in eval mode under ``no_grad()``; the model's modes are restored.
    """
    from minicnn.tensor import Tensor, no_grad
    modules = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in modules:
            raise ValueError(f"feature_maps: {type(model).__name__} has no layer {layer!r}; "
                             f"layers: {', '.join(n for n in modules if n)}")
        target = modules[layer]
    else:
        target = layer
    batch = np.asarray(_numpy(image))
    batch = batch[None] if batch.ndim == 3 else batch
    if batch.ndim != 4 or batch.shape[0] != 1:
        raise ValueError(f"feature_maps: expected one image (C, H, W) or (1, C, H, W), got "
                         f"shape {batch.shape}")
    if preprocess is not None:
        batch = preprocess(batch)
    elif batch.dtype == np.uint8:
        batch = batch / 255.0
    parameter = next(iter(model.parameters()))
    batch = np.asarray(batch, dtype=parameter.dtype)
    captured = []
    remove = target.register_forward_hook(lambda m, i, o: captured.append(_numpy(o.data)))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with no_grad():
            model(Tensor(batch))
    finally:
        remove()
        for module, mode in modes:
            object.__setattr__(module, "training", mode)
    if not captured:
        raise ValueError(f"feature_maps: layer {layer!r} did not run in the forward pass")
    return captured[0][0]


def feature_maps(model, layer, image, path, max_maps=64, preprocess=None, columns=None,
                 figsize=(10, 10), dpi=100):
    """The input image and the first ``max_maps`` maps that ``layer`` computes for it."""
    maps = layer_output(model, layer, image, preprocess)
    if maps.ndim != 3:
        raise ValueError(f"feature_maps: layer {layer!r} outputs shape {maps.shape}; "
                         f"expected feature maps (C, H, W)")
    count = min(max_maps, maps.shape[0])
    rows, columns = _grid_shape(count + 1, columns)
    figure = _figure(figsize, dpi)
    picture = np.asarray(_numpy(image))
    picture = picture[0] if picture.ndim == 4 else picture
    ax = figure.add_subplot(rows, columns, 1)
    ax.imshow(_as_picture(picture), cmap="gray", interpolation="nearest")
    ax.set_title("input", fontsize=8)
    ax.set_axis_off()
    for index in range(count):
        ax = figure.add_subplot(rows, columns, index + 2)
        ax.imshow(maps[index], cmap="viridis", interpolation="nearest")
        ax.set_axis_off()
    name = layer if isinstance(layer, str) else type(layer).__name__
    figure.suptitle(f"{name}: {count} of {maps.shape[0]} maps, {maps.shape[1]}×{maps.shape[2]}")
    return _save(figure, path)


# ================================================================= confusion matrix

def confusion_counts(y_true, y_pred, num_classes=None):
    """counts[t, p] = number of samples of true class t predicted as p."""
    y_true, y_pred = np.asarray(_numpy(y_true)).ravel(), np.asarray(_numpy(y_pred)).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: {y_true.size} true labels but {y_pred.size} "
                         f"predictions")
    k = num_classes or int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def confusion_matrix(y_true, y_pred, path, class_names=None, normalize=False,
                     figsize=(7, 6), dpi=100):
    """The confusion matrix as a heat map, counts written in the cells (up to 20 classes).

    ``y_pred`` may be class indices or scores (N, K) (argmax taken). ``normalize`` divides
    each row by its total (recall per class).
    """
    y_pred = np.asarray(_numpy(y_pred))
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    k = len(class_names) if class_names is not None else None
    counts = confusion_counts(y_true, y_pred, k)
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    figure = _figure(figsize, dpi)
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(shown, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=ax)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(counts))]
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 10 else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 20:
        threshold = shown.max() / 2
        for t in range(len(names)):
            for p in range(len(names)):
                text = f"{shown[t, p]:.2f}" if normalize else str(counts[t, p])
                ax.text(p, t, text, ha="center", va="center", fontsize=7,
                        color="white" if shown[t, p] > threshold else "black")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"Confusion matrix (accuracy {accuracy:.2%})")
    return _save(figure, path)


# ========================================================== worst misclassified images

def worst_misclassified_indices(y_true, scores, count=16):
    """Indices of misclassified samples, most confident first.

    Confidence is the softmax probability of the (wrong) predicted class.
    """
    scores = np.asarray(_numpy(scores), dtype=np.float64)
    y_true = np.asarray(_numpy(y_true)).ravel()
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    order = np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")
    return wrong[order[:count]], predicted, probabilities


def worst_misclassified(images, y_true, scores, path, count=16, class_names=None,
                        columns=None, figsize=(8, 8), dpi=100):
    """A grid of the ``count`` misclassified images with the most confident wrong
    prediction, each titled "true→predicted (probability)".

    ``images``: (N, C, H, W) with C = 1 or 3 (uint8, or floats of any range);
    ``scores``: (N, K) logits or probabilities (softmax is applied, so either works for
    the ranking).
    """
    images = np.asarray(_numpy(images))
    if images.ndim != 4:
        raise ValueError(f"worst_misclassified: expected images (N, C, H, W), got {images.shape}")
    chosen, predicted, probabilities = worst_misclassified_indices(y_true, scores, count)
    y_true = np.asarray(_numpy(y_true)).ravel()
    name = (lambda i: str(class_names[i])) if class_names is not None else str
    rows, columns = _grid_shape(max(len(chosen), 1), columns)
    figure = _figure(figsize, dpi)
    for slot in range(rows * columns):
        ax = figure.add_subplot(rows, columns, slot + 1)
        ax.set_axis_off()
        if slot >= len(chosen):
            continue
        i = chosen[slot]
        ax.imshow(_as_picture(images[i]), cmap="gray", interpolation="nearest")
        ax.set_title(f"{name(y_true[i])}→{name(predicted[i])} "
                     f"({probabilities[i, predicted[i]]:.2f})", fontsize=7)
    figure.suptitle(f"{len(chosen)} most confident mistakes"
                    + ("" if len(chosen) else " (none: every image is right)"))
    return _save(figure, path)


# =========================================================================== all

def scores_for(model, loader):
    """(labels, scores): the model's logits (N, K) for every sample of a DataLoader, in
    its order, computed in eval mode without a graph (the model's modes are restored) —
    what ``confusion_matrix`` and ``worst_misclassified`` take."""
    from minicnn.backend import device_of, to_device
    from minicnn.tensor import Tensor, no_grad
    modes = [(m, m.training) for m in model.modules()]
    labels, scores = [], []
    device = device_of(next(iter(model.parameters())).data)
    try:
        model.eval()
        with no_grad():
            for images, batch_labels in loader.batches(0):
                logits = model(Tensor(to_device(images, device)))
                logits = logits[0] if isinstance(logits, (tuple, list)) else logits
                scores.append(_numpy(logits.data))
                labels.append(np.asarray(batch_labels))
    finally:
        for module, mode in modes:
            object.__setattr__(module, "training", mode)
    return np.concatenate(labels), np.concatenate(scores)


def write_all(directory, history=None, model=None, images=None, labels=None, scores=None,
              class_names=None, feature_layer=None, feature_index=0, preprocess=None):
    """Every picture the arguments allow, into ``directory``; returns the paths written.

    The CLI's ``--plot DIR``: ``history`` → learning_curves.png; ``model`` →
    filters.png and (with ``images``) feature_maps.png of ``feature_layer`` (default: the
    first convolution) for ``images[feature_index]``; ``labels`` and ``scores`` (the test
    set's logits) → confusion_matrix.png and (with ``images``) worst_misclassified.png.
    """
    paths = []
    join = lambda name: os.path.join(os.fspath(directory), name)
    if history:
        paths.append(learning_curves(history, join("learning_curves.png")))
    if model is not None:
        paths.append(filter_grid(model, join("filters.png")))
        if images is not None:
            layer = feature_layer or first_conv(model)[0]
            paths.append(feature_maps(model, layer, images[feature_index],
                                      join("feature_maps.png"), preprocess=preprocess))
    if labels is not None and scores is not None:
        paths.append(confusion_matrix(labels, scores, join("confusion_matrix.png"),
                                      class_names=class_names))
        if images is not None:
            paths.append(worst_misclassified(images, labels, scores,
                                             join("worst_misclassified.png"),
                                             class_names=class_names))
    return paths
