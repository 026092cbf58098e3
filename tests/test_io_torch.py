"""minicnn.io.load_torch against files a real torch.save wrote (tests/fixtures/torch/,
made by tests/fixtures/make_torch_fixtures.py), hand-built files, hostile pickles, and the
trained MTCNN weights inside the facenet-pytorch wheel."""
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicnn.io import FormatError, load_state_dict_file, load_torch
from minicnn.io.torch_format import _RestrictedUnpickler

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "torch")
FORMATS = ["zip", "legacy"]
SHAPE = (2, 3, 4)
DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64",
          "uint8", "bool"]


def fixture(name, container):
    return os.path.join(FIXTURES, f"{name}_{container}.pt")


def expected_values(name, shape=SHAPE):
    """NumPy twin of ``values`` in make_torch_fixtures.py. bfloat16 arrives as float32."""
    count = int(np.prod(shape))
    steps = np.arange(count, dtype=np.float64) - count // 2
    if name == "bool":
        result = np.arange(count) % 3 == 0
    elif name == "uint8":
        result = (np.arange(count) * 10).astype(np.uint8)
    elif name.startswith("int"):
        result = steps.astype(name)
    else:
        result = (steps * 0.25).astype("float32" if name == "bfloat16" else name)
    return result.reshape(shape)


def expected_small_model():
    """The state dict of make_torch_fixtures.small_model, recomputed."""
    shapes = OrderedDict([("0.weight", (2, 1, 3, 3)), ("0.bias", (2,)), ("1.weight", (2,)),
                          ("1.bias", (2,)), ("1.running_mean", (2,)), ("1.running_var", (2,)),
                          ("1.num_batches_tracked", ()), ("3.weight", (3, 8)),
                          ("3.bias", (3,))])
    state = OrderedDict()
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = np.array(7, dtype=np.int64)
        else:
            count = int(np.prod(shape))
            state[name] = (np.arange(count, dtype=np.float32).reshape(shape)
                           * np.float32(0.01) - np.float32(0.05))
    return state


def assert_same_state(actual, expected):
    assert list(actual) == list(expected)
    for name in expected:
        assert actual[name].shape == expected[name].shape, name
        assert actual[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


# --------------------------------------------------------------- files real torch wrote

@pytest.mark.parametrize("container", FORMATS)
def test_every_dtype_arrives_with_its_values(container):
    loaded = load_torch(fixture("dtypes", container))
    for name in DTYPES:
        expected = expected_values(name)
        assert loaded[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(loaded[name], expected, err_msg=name)
    # bfloat16 keeps 8 significant bits: torch rounded pi to 3.140625, widened exactly.
    assert loaded["bfloat16_pi"].tolist() == [3.140625]
    assert loaded["scalar"].shape == () and loaded["scalar"] == np.float32(2.5)
    assert loaded["empty"].shape == (0, 3) and loaded["empty"].dtype == np.float32


@pytest.mark.parametrize("container", FORMATS + ["zip_protocol4", "legacy_protocol4"])
def test_views_honour_offset_and_strides_over_one_shared_storage(container):
    loaded = load_torch(fixture("views", container))
    base = np.arange(270, dtype=np.float32)
    np.testing.assert_array_equal(loaded["base"], base)
    # The stride (1, 10, 30, 90) view real checkpoints contain (MTCNN's conv1.weight).
    np.testing.assert_array_equal(loaded["permuted"], base.reshape(3, 3, 3, 10).transpose())
    np.testing.assert_array_equal(loaded["slice"], base[5:17])
    np.testing.assert_array_equal(loaded["strided"], base[3::7])
    np.testing.assert_array_equal(loaded["transposed"], base[:12].reshape(3, 4).T)
    np.testing.assert_array_equal(loaded["shared_reshape"], base.reshape(27, 10))
    for array in loaded.values():              # each owns its memory, C order
        assert array.flags.c_contiguous and array.flags.owndata and array.flags.writeable
    loaded["base"][0] = -1                     # so changing one leaves its siblings alone
    assert loaded["shared_reshape"][0, 0] == 0


@pytest.mark.parametrize("container", FORMATS)
def test_a_state_dict_is_an_ordered_dict_of_arrays(container):
    loaded = load_torch(fixture("state_dict", container))
    assert isinstance(loaded, OrderedDict)
    assert_same_state(loaded, expected_small_model())


@pytest.mark.parametrize("container", FORMATS)
def test_a_wrapped_checkpoint_keeps_its_other_entries_and_unwraps(container):
    path = fixture("wrapped", container)
    checkpoint = load_torch(path)
    assert checkpoint["epoch"] == 3 and checkpoint["arch"] == "tiny"
    assert checkpoint["best_acc"] == 0.875     # a NumPy scalar in the pickle
    assert checkpoint["device"] == "cpu"       # torch.device("cpu")
    assert checkpoint["optimizer"]["param_groups"][0]["params"] == [0, 1, 2, 3, 4, 5]
    assert_same_state(load_state_dict_file(path), expected_small_model())


@pytest.mark.parametrize("container", FORMATS)
def test_nested_state_dicts_flatten_to_dotted_names(container):
    state = load_state_dict_file(fixture("nested", container))
    expected = expected_small_model()
    renamed = OrderedDict((("head." + k[2:]) if k.startswith("3.") else "backbone." + k, v)
                          for k, v in expected.items())
    assert_same_state(state, renamed)


@pytest.mark.parametrize("container", FORMATS)
def test_parameters_load_as_their_data(container):
    loaded = load_torch(fixture("parameters", container))
    np.testing.assert_array_equal(loaded["weight"], expected_values("float32"))
    np.testing.assert_array_equal(loaded["frozen"], expected_values("float64"))


def test_a_big_endian_zip_reads_the_same_values(tmp_path):
    """The zip format records its byte order; write the same file big-endian by hand."""
    source, target = fixture("dtypes", "zip"), tmp_path / "big.pt"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as rewritten:
        pickled = original.read("dtypes_zip/data.pkl")
        # Which storage holds which element size: the pickle's storage ids say.
        unpickler = _RestrictedUnpickler(io.BytesIO(pickled), source, legacy=False)
        unpickler.load()
        sizes = {key: storage.storage_type.dtype.itemsize
                 for key, storage in unpickler.roots().items()}
        for member in original.namelist():
            data = original.read(member)
            key = member.rsplit("/", 1)[-1]
            if member.endswith("byteorder"):
                data = b"big"
            elif "/data/" in member and key in sizes and sizes[key] > 1:
                swapped = np.frombuffer(data, f"<u{sizes[key]}").astype(f">u{sizes[key]}")
                data = swapped.tobytes()
            rewritten.writestr(member, data)
    assert len(sizes) >= 10
    loaded = load_torch(target)
    for name in DTYPES:
        np.testing.assert_array_equal(loaded[name], expected_values(name), err_msg=name)


# --------------------------------------------------------- hand-built legacy storage views

def _text(value):
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
    return b"J" + struct.pack("<i", value)


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _tensor_dict_pickle(tensor_entries):
    """A protocol-2 pickle of ``{name: tensor}``, opcode by opcode, as torch writes it:
    ``tensor_entries`` maps a name to (persistent id bytes, offset, size, stride)."""
    return b"\x80\x02}(" + b"".join(
        _text(name) + b"ctorch._utils\n_rebuild_tensor_v2\n"
        + _tuple(persistent_id + b"Q", _int(offset), _tuple(*map(_int, size)),
                 _tuple(*map(_int, stride)), b"\x89", b"ccollections\nOrderedDict\n)R")
        + b"R" for name, (persistent_id, offset, size, stride) in tensor_entries.items()
    ) + b"u."


def _legacy_file(tensor_entries, storages):
    """A legacy torch file holding float32 ``storages`` ({key: values})."""
    dump = lambda value: pickle.dumps(value, protocol=2)                      # noqa: E731
    data = b"".join(struct.pack("<q", len(values)) + np.asarray(values, "<f4").tobytes()
                    for _, values in sorted(storages.items()))
    return (dump(0x1950A86A20F9469CFC6C) + dump(1001)
            + dump({"protocol_version": 1001, "little_endian": True})
            + _tensor_dict_pickle(tensor_entries) + dump(sorted(storages)) + data)


def _write_zip_file(path, tensor_entries, storages):
    """The same in the zip format (persistent ids without the view field)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _tensor_dict_pickle(tensor_entries))
        archive.writestr("archive/byteorder", "little")
        for key, values in storages.items():
            archive.writestr(f"archive/data/{key}", np.asarray(values, "<f4").tobytes())


def _storage_id(key, numel, view=None, legacy=True):
    view_bytes = b"N" if view is None else _tuple(_text(view[0]), _int(view[1]), _int(view[2]))
    return _tuple(_text("storage"), b"ctorch\nFloatStorage\n", _text(key), _text("cpu"),
                  _int(numel), *([view_bytes] if legacy else []))


@st.composite
def strided_views(draw):
    """Any view torch can save: sizes (zero included), non-negative strides (zero is an
    expanded dimension), an offset, and a storage just long enough or longer."""
    size = draw(st.lists(st.integers(0, 4), max_size=4))
    stride = draw(st.lists(st.integers(0, 12), min_size=len(size), max_size=len(size)))
    offset = draw(st.integers(0, 6))
    reach = offset + sum((n - 1) * s for n, s in zip(size, stride)) if 0 not in size else 0
    numel = reach + 1 + draw(st.integers(0, 3))
    return tuple(size), tuple(stride), offset, numel


@pytest.mark.parametrize("container", FORMATS)
@given(view=strided_views())
def test_any_strided_view_reads_the_elements_its_formula_names(tmp_path_factory, container,
                                                               view):
    size, stride, offset, numel = view
    storage = np.arange(numel, dtype=np.float32) * 0.5 - 3
    path = tmp_path_factory.mktemp("views") / "view.pt"
    entry = {"t": (_storage_id("s", numel, legacy=container == "legacy"), offset, size,
                   stride)}
    if container == "legacy":
        path.write_bytes(_legacy_file(entry, {"s": storage}))
    else:
        _write_zip_file(path, entry, {"s": storage})
    # Element [i, j, ...] is storage[offset + i*stride[0] + j*stride[1] + ...].
    index = offset + sum(axis * s for axis, s in zip(np.indices(size), stride))
    loaded = load_torch(path)["t"]
    assert loaded.shape == size and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, storage[index] if size else storage[offset])


def test_legacy_storage_views_slice_their_root(tmp_path):
    path = tmp_path / "views.pt"
    path.write_bytes(_legacy_file(
        {"whole": (_storage_id("root", 10), 0, (10,), (1,)),
         "tail": (_storage_id("root", 10, ("view", 4, 6)), 1, (2, 2), (1, 2))},
        {"root": np.arange(10)}))
    loaded = load_torch(path)
    np.testing.assert_array_equal(loaded["whole"], np.arange(10, dtype=np.float32))
    # The view starts at element 4 of the root; the tensor at element 1 of the view.
    np.testing.assert_array_equal(loaded["tail"], [[5, 7], [6, 8]])


def test_a_view_reaching_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "overreach.pt"
    path.write_bytes(_legacy_file({"w": (_storage_id("root", 10), 3, (4, 2), (2, 1))},
                                  {"root": np.arange(10)}))
    with pytest.raises(FormatError, match=r"'w'.*reaches element 10 of a storage of 10"):
        load_torch(path)


def test_an_expanded_view_of_absurd_size_is_refused_not_allocated(tmp_path):
    """Stride 0 repeats one element: 10^10 of them would need 40 GB from a 200-byte file."""
    path = tmp_path / "bomb.pt"
    path.write_bytes(_legacy_file({"w": (_storage_id("one", 1), 0, (100_000, 100_000),
                                         (0, 0))}, {"one": [1.0]}))
    with pytest.raises(FormatError, match=r"'w': a view of 10000000000 elements over a "
                                          r"storage of 1 repeats"):
        load_torch(path)


def test_a_modest_expanded_view_is_materialized(tmp_path):
    path = tmp_path / "expanded.pt"
    path.write_bytes(_legacy_file({"w": (_storage_id("row", 3), 0, (4, 3), (0, 1))},
                                  {"row": [1.0, 2.0, 3.0]}))
    np.testing.assert_array_equal(load_torch(path)["w"], np.tile([1.0, 2.0, 3.0], (4, 1)))


@pytest.mark.parametrize("protocol", [2, 4])
def test_plain_python_values_in_a_checkpoint_come_back(tmp_path, protocol):
    """bytes (``_codecs.encode`` under protocol 2), sets, tuples, None, floats."""
    values = {"note": b"\x00\xff", "classes": {"cat", "dog"}, "size": (224, 224),
              "scheduler": None, "lr": 0.1, "nested": [{"a": 1}, ("b", 2.5)]}
    path = tmp_path / "plain.pt"
    _zip_with_pickle(path, pickle.dumps(values, protocol=protocol))
    assert load_torch(path) == values


@pytest.mark.parametrize("encoding", ["zlib_codec", "base64", "rot13"])
def test_codecs_encode_only_turns_text_into_bytes(tmp_path, encoding):
    """Other codecs could inflate a zlib bomb; they are refused."""
    path = tmp_path / "codec.pt"
    _zip_with_pickle(path, b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00a"
                     + _text(encoding) + b"\x86R.")
    with pytest.raises(FormatError, match=f"got encoding '{encoding}'"):
        load_torch(path)


# ------------------------------------------------------------------ hostile pickles

class _RunsACommand:
    """Unpickling this with plain pickle would run ``command`` in a shell."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _zip_with_pickle(path, pickled):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("container", FORMATS)
def test_a_pickle_naming_os_system_is_refused_and_never_run(tmp_path, container, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": _RunsACommand(f"touch {marker}")}, protocol=protocol)
    path = tmp_path / "evil.pt"
    if container == "zip":
        _zip_with_pickle(path, payload)
    else:
        dump = lambda value: pickle.dumps(value, protocol=2)                  # noqa: E731
        path.write_bytes(dump(0x1950A86A20F9469CFC6C) + dump(1001) + dump({}) + payload)
    global_name = f"{os.system.__module__}.system"                  # posix.system on Linux
    with pytest.raises(FormatError, match=rf"{global_name}.*refused without running it"):
        load_torch(path)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("builtins", "getattr"),
                                          ("subprocess", "Popen"), ("torch", "load"),
                                          ("numpy", "load"), ("collections", "Counter")])
def test_every_global_outside_the_allow_list_is_refused_by_name(tmp_path, module, name):
    path = tmp_path / "evil.pt"
    _zip_with_pickle(path, b"c" + f"{module}\n{name}\n".encode() + b"(X\x01\x00\x00\x001tR.")
    with pytest.raises(FormatError, match=rf"global {module}\.{name}\b"):
        load_torch(path)


def test_the_refusal_happens_at_lookup_before_any_import(tmp_path):
    """A module that was never imported stays unimported: the name is only compared."""
    path = tmp_path / "evil.pt"
    _zip_with_pickle(path, b"cantigravity\nfly\n)R.")
    with pytest.raises(FormatError, match="antigravity.fly"):
        load_torch(path)
    assert "antigravity" not in sys.modules


def test_containers_nested_beyond_reason_are_one_error(tmp_path):
    """200 000 lists inside each other: pickle builds them without recursion, and the
    walk that turns tensors into arrays must not die of a RecursionError."""
    path, depth = tmp_path / "deep.pt", 200_000
    _zip_with_pickle(path, b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".")
    with pytest.raises(FormatError, match="nested too deeply"):
        load_torch(path)


# ---------------------------------------------------------------------- bad input

def _truncated(tmp_path, source, keep):
    path = tmp_path / "truncated.pt"
    with open(source, "rb") as file:
        raw = file.read()
    path.write_bytes(raw[:int(len(raw) * keep)])
    return path


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.95])
@pytest.mark.parametrize("container", FORMATS)
def test_a_truncated_file_is_one_clear_error(tmp_path, container, keep):
    path = _truncated(tmp_path, fixture("views", container), keep)
    with pytest.raises(FormatError, match=str(path)):
        load_torch(path)


def test_a_zip_of_something_else_says_what_was_expected(tmp_path):
    path = tmp_path / "weights.pth"
    np.savez(path, weight=np.ones(3))
    os.replace(str(path) + ".npz", path)
    with pytest.raises(FormatError, match=r"weights\.pth: a zip archive but not a PyTorch "
                                          r"file: expected exactly one <root>/data\.pkl"):
        load_torch(path)


@pytest.mark.parametrize("field_offset, value, message", [
    (6, 99, "zip file version 9.9"),                  # "version needed to extract"
    (8, 1, "encrypted, password required"),           # flag bit 0: encrypted
])
def test_a_zip_this_reader_cannot_open_is_one_error(tmp_path, field_offset, value, message):
    """Damage a field of the first central directory record, where zipfile looks."""
    with open(fixture("views", "zip"), "rb") as file:
        raw = bytearray(file.read())
    record = raw.index(b"PK\x01\x02")
    raw[record + field_offset] = value
    path = tmp_path / "odd.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=message):
        load_torch(path)


def test_a_torchscript_archive_is_named_as_such(tmp_path):
    """The layout torch.jit.save writes: data.pkl, but beside compiled code."""
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for member in ["data/0", "data.pkl", "code/__torch__/torch/nn/modules/linear.py",
                       "constants.pkl", "version", "byteorder"]:
            archive.writestr(f"scripted/{member}", b"")
    with pytest.raises(FormatError, match="scripted.pt: a TorchScript archive"):
        load_torch(path)


def test_the_tar_format_before_torch_0_4_is_named(tmp_path):
    path = tmp_path / "ancient.pt"
    with tarfile.open(path, "w") as archive:
        for member in ("sys_info", "pickle", "storages", "tensors"):
            info = tarfile.TarInfo(member)
            archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(FormatError, match="ancient.pt: a tar archive: PyTorch's format "
                                          "before 0.4"):
        load_torch(path)


def test_a_storage_of_the_wrong_size_is_refused(tmp_path):
    path = tmp_path / "short.pt"
    with zipfile.ZipFile(fixture("views", "zip")) as original, \
            zipfile.ZipFile(path, "w") as rewritten:
        for member in original.namelist():
            data = original.read(member)
            rewritten.writestr(member, data[:-4] if member.endswith("/data/0") else data)
    with pytest.raises(FormatError, match=r"data/0 holds 1076 bytes; its tensors need "
                                          r"270 × 4 = 1080"):
        load_torch(path)


def test_a_missing_storage_is_refused(tmp_path):
    path = tmp_path / "missing.pt"
    with zipfile.ZipFile(fixture("views", "zip")) as original, \
            zipfile.ZipFile(path, "w") as rewritten:
        for member in original.namelist():
            if not member.endswith("/data/0"):
                rewritten.writestr(member, original.read(member))
    with pytest.raises(FormatError, match=r"storage views_zip/data/0 is missing"):
        load_torch(path)


@pytest.mark.parametrize("content, message", [
    (b"", "truncated or empty"),
    (b"\x00\x01\x02\x03 hello", "not a PyTorch file: expected a zip archive"),
    (pickle.dumps({"a": 1}, protocol=2), "not a PyTorch file: it starts with"),
    (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(999, protocol=2),
     "legacy PyTorch protocol 999"),
])
def test_other_files_are_named_for_what_they_are_not(tmp_path, content, message):
    path = tmp_path / "odd.pt"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message):
        load_torch(path)


def test_a_missing_file_stays_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_torch(tmp_path / "nowhere.pt")


def test_a_checkpoint_without_a_state_dict_lists_its_keys(tmp_path):
    path = tmp_path / "settings.pt"
    with zipfile.ZipFile(fixture("wrapped", "zip")) as original, \
            zipfile.ZipFile(path, "w") as rewritten:
        for member in original.namelist():      # the same pickle, its state dict renamed
            data = original.read(member)
            if member.endswith("data.pkl"):
                data = data.replace(b"state_dict", b"statistics")
            rewritten.writestr(member.replace("wrapped_zip/", "settings/"), data)
    assert "statistics" in load_torch(path)
    with pytest.raises(FormatError, match=r"settings\.pt: no state dict found.*top-level "
                                          r"keys are 'epoch', 'statistics', 'optimizer'"):
        load_state_dict_file(path)


# ------------------------------------------------------ real trained weights from PyPI

# Checksums torch itself computed on these files (float64 sums, one strided element each).
MTCNN = {
    "pnet": (13, 6632, "conv1.weight", (10, 3, 3, 3), 2.3487670375034213, (1, 2, 0, 1),
             1.1879833936691284),
    "rnet": (16, 100178, "dense4.weight", (128, 576), -73.59475462388977, (5, 7),
             0.0010394188575446606),
    "onet": (21, 389040, "conv2.weight", (64, 32, 3, 3), -118.87277581477679, (1, 2, 0, 1),
             -0.00044018044718541205),
}


@pytest.fixture(scope="module")
def facenet_wheel(tmp_path_factory):
    """facenet-pytorch 2.6.0's wheel, downloaded once; the test skips without network."""
    folder = tmp_path_factory.mktemp("facenet")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "facenet-pytorch==2.6.0", "-d", str(folder)],
                       check=True, timeout=180, capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        pytest.skip(f"could not download facenet-pytorch (no network?): {error}")
    wheels = list(folder.glob("facenet_pytorch-*.whl"))
    if not wheels:
        pytest.skip("pip download produced no facenet-pytorch wheel")
    return wheels[0]


@pytest.mark.parametrize("network", sorted(MTCNN))
def test_trained_mtcnn_weights_from_the_facenet_wheel(facenet_wheel, tmp_path, network):
    count, total, name, shape, checksum, index, element = MTCNN[network]
    path = tmp_path / f"{network}.pt"
    with zipfile.ZipFile(facenet_wheel) as wheel:
        path.write_bytes(wheel.read(f"facenet_pytorch/data/{network}.pt"))
    assert path.read_bytes()[:2] == b"\x80\x02"             # the legacy format
    state = load_torch(path)
    assert len(state) == count and sum(a.size for a in state.values()) == total
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in state.values())
    assert all(k.endswith((".weight", ".bias")) for k in state)
    assert state[name].shape == shape
    assert state[name].astype(np.float64).sum() == pytest.approx(checksum, rel=1e-9)
    assert state[name][index] == np.float32(element)
