"""ImageNet inference: a photo in, the network's input out, class names back.

A network trained on ImageNet saw its images prepared one exact way; to reuse its
weights, a photo must be prepared the same way (torchvision's evaluation transform):

    1. resize so that the *shorter* side is ``resize_size`` (256), keeping the aspect ratio
    2. crop the central ``crop_size`` × ``crop_size`` square (224)
    3. scale to [0, 1] and normalise each channel: (x − mean) / std, with ImageNet's
       mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)

Some weights were trained with other sizes (``PRESETS``): Inception-v3 reads 299 pixels
cropped from 342, EfficientNet-B4 380 from 384 (bicubic), and so on. Inception-v3's
official weights also expect [−1, 1] inputs: torchvision switches on ``transform_input``,
which maps ImageNet-normalised values back to (x − 0.5) / 0.5; normalising with mean =
std = 0.5 here is the same thing, so our network needs no such switch.

The 1000 class names (``imagenet_classes.txt``, index order) are torchvision's.

    >>> from minicnn.data.imagenet import predict_topk
    >>> predict_topk(model, "cat.jpg", variant="resnet50_b")
    [('tabby', 0.53), ('tiger cat', 0.31), ...]
"""
import os
from collections import namedtuple

import numpy as np

from minicnn.data.dataset import DatasetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.txt")

Preprocessing = namedtuple("Preprocessing", "resize_size crop_size interpolation mean std")
DEFAULT = Preprocessing(256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
HALF = (0.5, 0.5, 0.5)

# What each variant's torchvision weights (the IMAGENET1K_V1 files) were evaluated with;
# every variant not listed uses DEFAULT. (torchvision's newer IMAGENET1K_V2 ResNet,
# ResNeXt, Wide ResNet and MobileNetV2 files resize to 232 instead of 256.)
PRESETS = {
    "inception_v3": Preprocessing(342, 299, "bilinear", HALF, HALF),
    "resnext101_64x4d": Preprocessing(232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b0": Preprocessing(256, 224, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b1": Preprocessing(256, 240, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b2": Preprocessing(288, 288, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b3": Preprocessing(320, 300, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b4": Preprocessing(384, 380, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b5": Preprocessing(456, 456, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b6": Preprocessing(528, 528, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b7": Preprocessing(600, 600, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_v2_s": Preprocessing(384, 384, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_v2_m": Preprocessing(480, 480, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_v2_l": Preprocessing(480, 480, "bicubic", HALF, HALF),
}


def preprocessing_for(variant):
    """The ``Preprocessing`` the torchvision weights of ``variant`` expect."""
    return PRESETS.get(variant, DEFAULT)


def class_names():
    """The 1000 ImageNet class names, in the index order of the classifiers' outputs."""
    with open(CLASSES_FILE, encoding="utf-8") as file:
        names = [line.rstrip("\n") for line in file]
    if len(names) != 1000:
        raise DatasetError(f"{CLASSES_FILE}: expected 1000 class names, found {len(names)}")
    return names


# ----------------------------------------------------------------------------- the steps
def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError("reading photos needs Pillow: pip install 'minicnn[images]' "
                           "(or pip install pillow)") from None
    return Image


def read_rgb(path):
    """A photo file as a Pillow RGB image (grey, palette and RGBA images converted)."""
    Image = _pillow()
    try:
        with Image.open(path) as picture:
            return picture.convert("RGB")
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"{path}: not a readable image ({error})") from None


def resized_size(width, height, shorter_side):
    """(width, height) with the shorter side scaled to ``shorter_side``; the longer side is
    truncated as torchvision does: ⌊shorter_side · long / short⌋."""
    if width <= height:
        return shorter_side, int(shorter_side * height / width)
    return int(shorter_side * width / height), shorter_side


def center_crop_box(width, height, crop_size):
    """(left, top, right, bottom) of the central ``crop_size`` square, its offsets rounded
    as torchvision's: ``int(round((size − crop) / 2))``."""
    if crop_size > min(width, height):
        raise ValueError(f"center crop: a {crop_size}×{crop_size} crop does not fit a "
                         f"{width}×{height} image")
    left = int(round((width - crop_size) / 2.0))
    top = int(round((height - crop_size) / 2.0))
    return left, top, left + crop_size, top + crop_size


def preprocess(image, preprocessing=DEFAULT):
    """A photo (path or Pillow image) → float32 ``(1, 3, crop, crop)`` network input.

    Resize (shorter side), centre crop, [0, 1], per-channel (x − mean) / std.
    """
    Image = _pillow()
    picture = read_rgb(image) if isinstance(image, (str, os.PathLike)) else image.convert("RGB")
    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
    if preprocessing.interpolation not in filters:
        raise ValueError(f"preprocess: interpolation must be one of {sorted(filters)}, got "
                         f"{preprocessing.interpolation!r}")
    picture = picture.resize(resized_size(*picture.size, preprocessing.resize_size),
                             filters[preprocessing.interpolation])
    picture = picture.crop(center_crop_box(*picture.size, preprocessing.crop_size))
    pixels = np.asarray(picture, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(preprocessing.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocessing.std, dtype=np.float32)[:, None, None]
    return ((pixels - mean) / std)[None].astype(np.float32)


def softmax(logits):
    """Probabilities from a logit vector, shifted by its maximum so exp cannot overflow."""
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def topk(logits, k=5, names=None):
    """The ``k`` most probable classes of one logit vector as (name, probability) pairs,
    most probable first; ``names`` defaults to ImageNet's."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    names = class_names() if names is None else list(names)
    if len(names) != logits.size:
        raise ValueError(f"topk: {logits.size} logits but {len(names)} class names")
    probabilities = softmax(logits)
    best = np.argsort(-probabilities, kind="stable")[:k]
    return [(names[index], float(probabilities[index])) for index in best]


def predict_topk(model, image, k=5, variant=None, preprocessing=None, names=None):
    """Classify one photo: the ``k`` best (class name, probability) pairs.

    The preprocessing is ``preprocessing``, else the one of ``variant``'s torchvision
    weights, else the 256 → 224 default. The model runs in eval mode without gradients.
    """
    from minicnn import Tensor, no_grad
    from minicnn.backend import to_device
    x = preprocess(image, preprocessing or preprocessing_for(variant))
    model.eval()
    with no_grad():
        logits = to_device(model(Tensor(x)).data, "cpu")
    return topk(logits[0], k, names)


def class_index(name, names=None):
    """The ImageNet index of a folder name: one of the 1000 class names (any case, ``_``
    for a space) or the index itself ("0" … "999"); None when it is neither. The two names
    ImageNet uses twice ("crane", "maillot") resolve to their first class: file those photos
    under the index."""
    names = names if names is not None else class_names()
    if name.isdigit() and 0 <= int(name) < len(names):
        return int(name)
    wanted = name.replace("_", " ").strip().lower()
    for index, candidate in enumerate(names):
        if candidate.lower() == wanted:
            return index
    return None


def evaluate_folder(model, root, variant=None, batch_size=32, k=5):
    """Top-1 and top-k accuracy of a 1000-class ImageNet model on a folder holding one
    sub-folder per class, each named by its ImageNet class name or index (``tench/``,
    ``goldfish/`` or ``0/``, ``1/``): ``{"top1", "topk", "images", "classes"}``.

    Each photo is prepared as the weights expect (``preprocessing_for(variant)``) and the
    network runs in eval mode without gradients, ``batch_size`` photos at a time.
    """
    from minicnn import Tensor, no_grad
    from minicnn.backend import get_array_module, to_device
    from minicnn.data.folder import _class_files
    classes, files, labels = _class_files(root)
    if not files:
        raise DatasetError(f"{root}: no images in its class sub-folders")
    names = class_names()
    indices = [class_index(name, names) for name in classes]
    unknown = [name for name, index in zip(classes, indices) if index is None]
    if unknown:
        raise DatasetError(f"{root}: sub-folders {unknown[:5]} are neither ImageNet class "
                           f"names (see minicnn/data/imagenet_classes.txt) nor indices 0–999")
    targets = np.array(indices)[labels]
    preprocessing = preprocessing_for(variant)
    device_array = next(iter(model.parameters())).data
    xp = get_array_module(device_array)
    model.eval()
    top1 = topk_hits = 0
    for start in range(0, len(files), batch_size):
        batch = np.concatenate([preprocess(path, preprocessing)
                                for path in files[start:start + batch_size]])
        with no_grad():
            logits = to_device(model(Tensor(xp.asarray(batch, dtype=device_array.dtype))).data,
                               "cpu")
        best = np.argsort(-logits, axis=1)[:, :k]
        wanted = targets[start:start + batch_size]
        top1 += int((best[:, 0] == wanted).sum())
        topk_hits += int((best == wanted[:, None]).any(axis=1).sum())
    return {"top1": top1 / len(files), "topk": topk_hits / len(files), "images": len(files),
            "classes": len(classes)}
