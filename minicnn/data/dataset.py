"""What every dataset becomes: images and labels in memory, plus where files live.

All of minicnn's datasets are small enough to hold in memory as ``uint8``, which is what
makes a fast loader possible: a batch is one fancy-indexing gather (``images[indices]``),
not thousands of Python-level file reads. ``ArrayDataset`` holds

    images  uint8  (N, C, H, W)   — NCHW like the models; a grayscale set has C = 1
    labels  int64  (N,)           — class indices 0 … K−1
    classes tuple of K names      — what each index means (for printing predictions)
"""
import os
import pickle

import numpy as np

DATA_ENV = "MINICNN_DATA"


class DatasetError(ValueError):
    """A dataset is missing, truncated, corrupt, or not what it claims to be."""


def make_download_folder(root, name):
    """Create ``root`` for downloading data set ``name``, or say in one line why it cannot
    be and what the user can do instead."""
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"{name} is not in {root}, and it cannot be downloaded there "
                           f"({error.strerror or error}); point --data-dir or $MINICNN_DATA "
                           "at a folder that holds it or can be written") from None


def default_data_dir():
    """Where datasets are looked for and cached: ``$MINICNN_DATA`` or ``~/.cache/minicnn``."""
    return os.environ.get(DATA_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "minicnn")


def resolve_data_dir(data_dir=None):
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir))) if data_dir else default_data_dir()


SPLITS = ("train", "test")


def split_generator(split, seed, caller):
    """The random generator a generated set draws one split from: seeded by ``(seed,
    split)``, so the same seed builds the same split and the two splits never share draws."""
    if split not in SPLITS:
        raise ValueError(f"{caller}: expected split 'train' or 'test', got {split!r}")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split),)))


class ArrayDataset:
    """Images ``uint8 (N, C, H, W)`` and labels ``int64 (N,)`` held in memory."""

    def __init__(self, images, labels, classes, name="dataset"):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise DatasetError(f"{name}: expected uint8 images of shape (N, C, H, W), got "
                               f"{images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],) or labels.dtype.kind not in "iu":
            raise DatasetError(f"{name}: expected {images.shape[0]} integer labels, got "
                               f"{labels.dtype} {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DatasetError(f"{name}: labels must lie in [0, {len(classes)}), got "
                               f"[{labels.min()}, {labels.max()}]")
        self.images, self.labels = images, labels.astype(np.int64, copy=False)
        self.classes, self.name = tuple(classes), name

    def __len__(self):
        return len(self.labels)

    num_classes = property(lambda self: len(self.classes))
    channels = property(lambda self: self.images.shape[1])
    image_size = property(lambda self: self.images.shape[2:])

    def subset(self, count, seed=0):
        """``count`` samples drawn without replacement by a seeded generator, kept in their
        original order (a prefix would be unfair to a folder sorted by class)."""
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise ValueError(f"subset of {self.name}: count must be at least 1, got {count}")
        chosen = np.sort(np.random.default_rng(seed).choice(len(self), count, replace=False))
        return ArrayDataset(self.images[chosen], self.labels[chosen], self.classes,
                            f"{self.name}[{count}]")

    def channel_statistics(self):
        """Per-channel mean and standard deviation of the pixels scaled to [0, 1].

        From exact integer sums over each channel's n pixels p (no float copy of the set):
        mean = Σ p / (255·n),   var = Σ p² / (255²·n) − mean².  The sums run over chunks
        of images in uint32 (p² ≤ 255² fits) and add up in Python integers, which cannot
        overflow: 0.08 s for MNIST's training set, where a 256-bin histogram took 0.85 s
        (``np.bincount`` first widens every uint8 to a 64-bit index).
        """
        means, stds = [], []
        chunk = max(1, 2**22 // max(1, int(np.prod(self.images.shape[2:]))))  # ≈ 16 MB
        for c in range(self.channels):
            total = total_of_squares = 0
            for start in range(0, len(self.images), chunk):
                pixels = self.images[start:start + chunk, c].astype(np.uint32)
                total += int(pixels.sum(dtype=np.uint64))
                total_of_squares += int(np.square(pixels).sum(dtype=np.uint64))
            n = self.images[:, c].size
            mean = total / (255.0 * n)
            variance = total_of_squares / (255.0 ** 2 * n) - mean ** 2
            means.append(mean)
            stds.append(max(variance, 1e-12) ** 0.5)
        return tuple(means), tuple(stds)

    def __repr__(self):
        return (f"ArrayDataset({self.name!r}, {len(self)} images of {self.images.shape[1:]}, "
                f"{self.num_classes} classes)")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickling runs code named in the file; this one resolves only what a pickled NumPy
    array (or a dict/list/tuple of them) needs, so a hostile file cannot run anything."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),   # how protocol 2 spells a bytes object
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DatasetError(f"unpickling: refusing {module}.{name} (only NumPy arrays, "
                               "lists, tuples and dicts are expected)")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]  # NumPy 2 renamed the package
        return super().find_class(module, name)


def safe_unpickle(fileobj, encoding="latin1"):
    """Load a pickle of NumPy arrays and containers; anything else is refused.

    ``encoding="latin1"`` reads Python-2 pickles (MNIST's pkl.gz, CIFAR's batches), whose
    byte strings otherwise fail to decode; ``"bytes"`` keeps their dict keys as bytes.
    """
    try:
        return _ArraysOnlyUnpickler(fileobj, encoding=encoding).load()
    except DatasetError:
        raise
    except Exception as error:  # truncated or not a pickle at all
        raise DatasetError(f"unpickling: not a readable pickle ({type(error).__name__}: "
                           f"{error})") from None
