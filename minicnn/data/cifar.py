"""CIFAR-10: 60,000 colour images 32×32 in 10 classes (Krizhevsky, 2009).

Read from the official "python version" archive ``cifar-10-python.tar.gz``, or from its
extracted folder ``cifar-10-batches-py/``, found in ``<data_dir>/cifar10/`` or
``<data_dir>/``; downloaded from the official site when neither is there (the site is
not reachable from every machine: then put the archive there by hand). The first load
writes a fast ``<data_dir>/cifar10/cifar10.npz`` cache.

The archive holds six pickled batches (``data_batch_1`` … ``data_batch_5`` for training,
``test_batch``) and ``batches.meta``. Each batch is a dict with

    data    uint8 (10000, 3072): per row the 1024 red, then green, then blue pixels,
            each plane in row-major order — so ``reshape(N, 3, 32, 32)`` is NCHW
    labels  list of 10000 ints in 0…9

and ``batches.meta`` names the classes (``label_names``).
"""
import dataclasses
import io
import os
import tarfile
import tempfile

import numpy as np

from minicnn.data.dataset import (ArrayDataset, DatasetError, make_download_folder,
                                   resolve_data_dir, safe_unpickle)
from minicnn.data.download import DownloadError, download, report
from minicnn.files import atomic_write

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
CACHE_NAME = "cifar10.npz"


@dataclasses.dataclass(frozen=True)
class CifarSources:
    """Where CIFAR-10 is downloaded from and what it must contain (tests swap these)."""
    url: str
    md5: str
    counts: dict
    connect_timeout: float = 5.0


STANDARD = CifarSources(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",     # as published on the dataset's page
    counts={"train": 50000, "test": 10000},
)


def _key(batch, name):
    """Batches pickled by Python 2 have bytes keys or str keys depending on decoding."""
    for key in (name, name.encode()):
        if key in batch:
            return batch[key]
    raise DatasetError(f"CIFAR batch: missing {name!r} (has {sorted(map(str, batch))})")


def parse_batch(buffer, source):
    """One pickled batch -> (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    batch = safe_unpickle(io.BytesIO(buffer), encoding="latin1")
    if not isinstance(batch, dict):
        raise DatasetError(f"{source}: expected a pickled dict, got {type(batch).__name__}")
    data, labels = np.asarray(_key(batch, "data")), np.asarray(_key(batch, "labels"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{source}: data must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DatasetError(f"{source}: expected {len(data)} integer labels, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{source}: labels must lie in 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def parse_meta(buffer, source):
    meta = safe_unpickle(io.BytesIO(buffer), encoding="latin1")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _key(meta, "label_names")]
    if len(names) != 10:
        raise DatasetError(f"{source}: expected 10 class names, got {len(names)}")
    return tuple(names)


def _read_members(read, source):
    """Assemble the arrays from a ``read(name) -> bytes`` over the archive or the folder."""
    def split(names):
        parts = [parse_batch(read(name), f"{source}/{name}") for name in names]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_train, y_train = split(TRAIN_BATCHES)
    x_test, y_test = split(TEST_BATCHES)
    classes = parse_meta(read("batches.meta"), f"{source}/batches.meta")
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "classes": np.array(classes)}


def read_archive(path):
    """Arrays from ``cifar-10-python.tar.gz``, read member by member (nothing extracted
    to disk, so a hostile archive's paths cannot write anywhere)."""
    try:
        with tarfile.open(path, "r:*") as archive:
            def read(name):
                try:
                    member = archive.extractfile(f"{FOLDER}/{name}")
                except KeyError:
                    member = None
                if member is None:
                    raise DatasetError(f"{path}: no {FOLDER}/{name} inside")
                return member.read()
            return _read_members(read, path)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DatasetError(f"{path}: corrupt or truncated archive ({error})") from None


def read_folder(folder):
    """Arrays from an extracted ``cifar-10-batches-py`` folder."""
    def read(name):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DatasetError(f"{folder}: missing {name}")
        with open(path, "rb") as f:
            return f.read()
    return _read_members(read, folder)


def check_counts(arrays, sources, source):
    for split, count in sources.counts.items():
        if len(arrays[f"x_{split}"]) != count:
            raise DatasetError(f"{source}: {len(arrays[f'x_{split}'])} {split} images, "
                               f"expected {count}")


def load_cifar10(data_dir=None, sources=STANDARD):
    """``(x_train, y_train, x_test, y_test, classes)``; images uint8 (N, 3, 32, 32)."""
    root = os.path.join(resolve_data_dir(data_dir), "cifar10")
    parent = os.path.dirname(root)
    cache = os.path.join(root, CACHE_NAME)
    if os.path.isfile(cache):
        try:
            with np.load(cache, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except Exception as error:
            raise DatasetError(f"{cache}: unreadable cache ({error}); delete it") from None
        expected = {"x_train", "y_train", "x_test", "y_test", "classes"}
        try:
            if not expected <= set(arrays):
                raise DatasetError(f"{cache}: the cache lacks {sorted(expected - set(arrays))}")
            check_counts(arrays, sources, cache)
        except DatasetError as error:
            raise DatasetError(f"{error}; delete {cache} and run again") from None
    else:
        arrays = None
        for folder in (root, parent):
            if os.path.isfile(os.path.join(folder, ARCHIVE)):
                report(f"cifar10: reading {os.path.join(folder, ARCHIVE)}")
                arrays = read_archive(os.path.join(folder, ARCHIVE))
                break
            if os.path.isdir(os.path.join(folder, FOLDER)):
                report(f"cifar10: reading {os.path.join(folder, FOLDER)}")
                arrays = read_folder(os.path.join(folder, FOLDER))
                break
        if arrays is None:
            arrays = fetch(root, sources)
        check_counts(arrays, sources, "cifar10")
        try:
            atomic_write(cache, lambda f: np.savez(f, **arrays))
            report(f"cifar10: cached at {cache}")
        except OSError as error:    # a shared, read-only dataset folder: use it as it is
            report(f"cifar10: note: could not write the cache {cache} "
                   f"({error.strerror or error}); reading the archive again on every run")
    check_counts(arrays, sources, cache)
    classes = tuple(str(c) for c in arrays["classes"])
    return (arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
            arrays["y_test"].astype(np.int64), classes)


def fetch(root, sources):
    report(f"cifar10: not found in {root}; downloading {sources.url}")
    make_download_folder(root, "CIFAR-10")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as folder:
        path = os.path.join(folder, ARCHIVE)
        try:
            download(sources.url, path, md5=sources.md5, timeout=sources.connect_timeout)
        except DownloadError as error:
            raise DatasetError(
                f"CIFAR-10 is not on disk and the download failed: {error}\n"
                f"To install it by hand, put {ARCHIVE} (from {sources.url}) or its extracted "
                f"{FOLDER}/ folder into {root}.") from None
        return read_archive(path)


def cifar10_datasets(data_dir=None, sources=STANDARD):
    """CIFAR-10 as two ``ArrayDataset`` (train, test) of shape (N, 3, 32, 32)."""
    x_train, y_train, x_test, y_test, classes = load_cifar10(data_dir, sources)
    return (ArrayDataset(x_train, y_train, classes, "cifar10-train"),
            ArrayDataset(x_test, y_test, classes, "cifar10-test"))
