"""Your own pictures: one sub-folder per class, read with Pillow.

    photos/                       photos/
      cat/ a.jpg b.png ...   or     train/cat/... train/dog/...
      dog/ c.jpg ...                test/cat/...  test/dog/...   (or val/)

Class names are the sub-folder names in sorted order (their index is the label). Without
``train/`` and ``test/`` (or ``val/``) sub-folders, a seeded random ``test_fraction`` of
each class is held out for testing. Every picture is converted to RGB (or grayscale when
``channels=1``) and resized to ``image_size × image_size`` as it is read, so the whole set
is one ``uint8`` array in memory and batches cost no file access.

Pillow is an optional dependency (``pip install 'minicnn[images]'``).
"""
import os

import numpy as np

from minicnn.data.dataset import ArrayDataset, DatasetError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError("reading image files needs Pillow: pip install 'minicnn[images]' "
                           "(or pip install pillow)") from None
    return Image


def load_image(path, channels=3, image_size=None):
    """One image file as uint8 ``(channels, H, W)``, resized to a square if asked."""
    Image = _pillow()
    try:
        with Image.open(path) as picture:
            picture = picture.convert("L" if channels == 1 else "RGB")
            if image_size is not None and picture.size != (image_size, image_size):
                picture = picture.resize((image_size, image_size), Image.BILINEAR)
            array = np.asarray(picture, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"{path}: not a readable image ({error})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _class_files(root):
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    files, labels = [], []
    for label, name in enumerate(classes):
        for folder, _, names in sorted(os.walk(os.path.join(root, name))):
            for file in sorted(names):
                if file.lower().endswith(EXTENSIONS):
                    files.append(os.path.join(folder, file))
                    labels.append(label)
    return classes, files, np.array(labels, dtype=np.int64)


def _read_all(files, channels, image_size):
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(files):  # decoding is per file by nature; it happens once
        images[i] = load_image(path, channels, image_size)
    return images


def load_image_folder(root, image_size=32, channels=3, test_fraction=0.2, seed=0):
    """(train, test) ``ArrayDataset`` from a folder of class sub-folders (see module doc)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f"image folder {root!r} does not exist")
    _pillow()
    test_folder = next((os.path.join(root, t) for t in ("test", "val")
                        if os.path.isdir(os.path.join(root, t))), None)
    name = os.path.basename(os.path.normpath(root))
    if os.path.isdir(os.path.join(root, "train")) and test_folder:
        classes, train_files, train_labels = _class_files(os.path.join(root, "train"))
        test_classes, test_files, test_labels = _class_files(test_folder)
        if test_classes != classes:
            raise DatasetError(f"{root}: train/ has classes {classes} but the test folder has "
                               f"{test_classes}")
    else:
        classes, files, labels = _class_files(root)
        train_files, train_labels, test_files, test_labels = _split(files, labels, test_fraction,
                                                                    seed)
    if len(classes) < 2:
        raise DatasetError(f"{root}: expected at least two class sub-folders, found "
                           f"{len(classes)} ({', '.join(classes) or 'none'})")
    if not len(train_files):
        raise DatasetError(f"{root}: no images found (extensions {', '.join(EXTENSIONS)})")
    train = ArrayDataset(_read_all(train_files, channels, image_size), train_labels, classes,
                         f"{name}-train")
    test = ArrayDataset(_read_all(test_files, channels, image_size), test_labels, classes,
                        f"{name}-test")
    return train, test


def _split(files, labels, test_fraction, seed):
    """Hold out ``test_fraction`` of each class (at least one picture when it has two)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"load_image_folder: test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(files), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(round(test_fraction * len(members)))
        count = min(max(count, 1 if len(members) > 1 else 0), len(members) - 1)
        is_test[rng.choice(members, count, replace=False)] = True
    files = np.array(files, dtype=object)
    return (list(files[~is_test]), labels[~is_test], list(files[is_test]), labels[is_test])


def save_image_folder(train, test, root):
    """Write two ``ArrayDataset`` as ``root/train/<class>/<index>.png`` and
    ``root/test/<class>/<index>.png``: the layout ``load_image_folder`` reads back (the
    PNGs are lossless, so the pixels come back unchanged at the same size)."""
    Image = _pillow()
    for split, dataset in (("train", train), ("test", test)):
        for name in dataset.classes:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
        width = len(str(len(dataset)))
        for index, (image, label) in enumerate(zip(dataset.images, dataset.labels)):
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            path = os.path.join(root, split, dataset.classes[label], f"{index:0{width}d}.png")
            Image.fromarray(pixels).save(path)
