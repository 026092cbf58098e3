"""minicnn.io's safetensors reader and writer: round trips, the ``safetensors`` package
as referee in both directions, and a file for each way a header can lie."""
import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicnn import nn
from minicnn.io import (FormatError, load_model_safetensors, load_safetensors,
                        load_state_dict_file, read_safetensors_metadata, save_safetensors,
                        save_model_safetensors)
from minicnn.tensor import Tensor

safetensors_numpy = pytest.importorskip("safetensors.numpy")
from safetensors import safe_open  # noqa: E402

DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float16", "float32", "float64"]


def sample_arrays():
    arrays = {dtype: (np.arange(24) % 3 == 0) if dtype == "bool"
              else (np.arange(24) - (0 if dtype.startswith("u") else 12)).astype(dtype)
              for dtype in DTYPES}
    arrays = {name: array.reshape(2, 3, 4) for name, array in arrays.items()}
    arrays["scalar"] = np.array(2.5, dtype=np.float32)
    arrays["empty"] = np.zeros((0, 5), dtype=np.float32)
    return arrays


def assert_same_arrays(actual, expected):
    assert set(actual) == set(expected)
    for name, array in expected.items():
        assert actual[name].dtype == array.dtype and actual[name].shape == array.shape, name
        np.testing.assert_array_equal(actual[name], array, err_msg=name)


def write_raw(path, header, data, header_length=None):
    """A safetensors file from a header dict (or raw header bytes) and a data buffer."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(text) if header_length is None else header_length
    path.write_bytes(struct.pack("<Q", length) + text + data)
    return path


# ------------------------------------------------------------------------- round trips

def test_every_dtype_round_trips_through_our_writer_and_reader(tmp_path):
    arrays = sample_arrays()
    save_safetensors(arrays, tmp_path / "all.safetensors", metadata={"epoch": "12"})
    assert_same_arrays(load_safetensors(tmp_path / "all.safetensors"), arrays)
    assert read_safetensors_metadata(tmp_path / "all.safetensors") == {"epoch": "12"}


def test_files_we_write_load_in_the_safetensors_package(tmp_path):
    arrays = sample_arrays()
    path = tmp_path / "ours.safetensors"
    save_safetensors(arrays, path, metadata={"format": "np", "producer": "minicnn"})
    assert_same_arrays(safetensors_numpy.load_file(str(path)), arrays)
    with safe_open(str(path), framework="np") as opened:
        assert opened.metadata() == {"format": "np", "producer": "minicnn"}


def test_files_the_safetensors_package_writes_load_in_ours(tmp_path):
    arrays = sample_arrays()
    path = tmp_path / "theirs.safetensors"
    safetensors_numpy.save_file(arrays, str(path), metadata={"note": "referee"})
    assert_same_arrays(load_safetensors(path), arrays)
    assert read_safetensors_metadata(path) == {"note": "referee"}


@given(arrays=st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1,
            max_size=12).filter(lambda name: name != "__metadata__"),
    hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                         max_side=5)),
    max_size=5))
def test_any_dict_of_arrays_agrees_with_the_referee_both_ways(tmp_path_factory, arrays):
    folder = tmp_path_factory.mktemp("property")
    save_safetensors(arrays, folder / "ours.safetensors")
    safetensors_numpy.save_file(arrays, str(folder / "theirs.safetensors"))
    for path in ("ours.safetensors", "theirs.safetensors"):
        loaded_by_us = load_safetensors(folder / path)
        loaded_by_them = safetensors_numpy.load_file(str(folder / path))
        assert_same_arrays(loaded_by_us, loaded_by_them)
        for name, array in arrays.items():       # NaNs compare equal in the bit pattern
            assert loaded_by_us[name].tobytes() == np.ascontiguousarray(array).tobytes()


def test_any_layout_is_written_c_ordered_and_little_endian(tmp_path):
    base = np.arange(60, dtype=np.float64).reshape(3, 4, 5)
    arrays = {"transposed": base.transpose(2, 0, 1), "strided": base[:, ::2, 1:],
              "big_endian": base.astype(">f4"), "tensor": Tensor(base[0].astype(np.float32))}
    save_safetensors(arrays, tmp_path / "layouts.safetensors")
    loaded = safetensors_numpy.load_file(str(tmp_path / "layouts.safetensors"))
    np.testing.assert_array_equal(loaded["transposed"], base.transpose(2, 0, 1))
    np.testing.assert_array_equal(loaded["strided"], base[:, ::2, 1:])
    assert loaded["big_endian"].dtype == np.float32
    np.testing.assert_array_equal(loaded["big_endian"], base.astype(np.float32))
    np.testing.assert_array_equal(loaded["tensor"], base[0])


def test_bfloat16_widens_exactly_to_float32(tmp_path):
    bits = np.array([0x4049, 0xBF80, 0x0000, 0x7F80], dtype="<u2")   # 3.140625, -1, 0, inf
    path = write_raw(tmp_path / "bf16.safetensors",
                     {"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}},
                     bits.tobytes())
    loaded = load_safetensors(path)["x"]
    assert loaded.dtype == np.float32
    assert loaded.tolist() == [3.140625, -1.0, 0.0, float("inf")]


def test_the_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors({"a": np.ones(3, np.float32)}, path)
    with pytest.raises(TypeError, match="'b' has dtype object"):
        save_safetensors({"b": np.array([None])}, path)
    np.testing.assert_array_equal(load_safetensors(path)["a"], np.ones(3))   # old file kept
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


@pytest.mark.parametrize("tensors, message", [
    ({"a": [1, 2]}, "'a' is a list, expected an array"),
    ({3: np.ones(2)}, "names must be strings"),
    ({"__metadata__": np.ones(2)}, "names must be strings other than '__metadata__'"),
    ({"c": np.ones(2, np.complex64)}, "'c' has dtype complex64"),
])
def test_what_safetensors_cannot_hold_is_refused_by_name(tmp_path, tensors, message):
    with pytest.raises(TypeError, match=message):
        save_safetensors(tensors, tmp_path / "x.safetensors")


def test_metadata_must_be_strings(tmp_path):
    with pytest.raises(TypeError, match="metadata must map strings to strings"):
        save_safetensors({"a": np.ones(2)}, tmp_path / "x.safetensors", metadata={"epoch": 3})


# ---------------------------------------------------------------------- minicnn models

def small_network():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 10))


def test_a_minicnn_model_round_trips_with_its_buffers(tmp_path):
    source, target = small_network(), small_network()
    source[1].running_mean[...] = np.arange(4)             # buffers travel too
    path = tmp_path / "net.safetensors"
    save_model_safetensors(source, path, metadata={"architecture": "small"})
    assert load_model_safetensors(target, path) == ([], [])
    assert_same_arrays(target.state_dict(), source.state_dict())
    assert_same_arrays(load_state_dict_file(path), source.state_dict())
    assert read_safetensors_metadata(path) == {"architecture": "small"}


def test_another_architectures_weights_are_refused_and_nothing_changes(tmp_path):
    path = tmp_path / "other.safetensors"
    save_model_safetensors(nn.Sequential(nn.Conv2d(1, 8, 3)), path)
    model = small_network()
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"0.weight: checkpoint \(8, 1, 3, 3\), "
                                         r"model \(4, 1, 3, 3\)"):
        load_model_safetensors(model, path)
    assert_same_arrays(model.state_dict(), before)


def test_the_format_is_recognised_from_the_bytes(tmp_path):
    path = tmp_path / "weights.bin"                          # no telling extension
    save_safetensors({"w": np.ones((2, 2), np.float32)}, path)
    np.testing.assert_array_equal(load_state_dict_file(path)["w"], np.ones((2, 2)))


# ------------------------------------------------------------------------- bad headers

ONE = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


@pytest.mark.parametrize("header, data, header_length, message", [
    (ONE, bytes(16), 10 ** 9, "header length field says 1000000000 bytes; expected "
                              "1..100000000"),
    (ONE, bytes(16), 4000, "header length field says 4000 bytes but the file has only"),
    (ONE, bytes(16), 0, "header length field says 0 bytes"),
    (b"[1, 2]", b"", None, "should be a JSON object starting with '{'"),
    (b"{\"w\": nope}", b"", None, "not valid UTF-8 JSON"),
    ({"w": {"dtype": "F32", "shape": [2, 2]}}, bytes(16), None,
     "tensor 'w': expected an object with dtype, shape and data_offsets"),
    ({"w": {"dtype": "F8_E5M2", "shape": [2], "data_offsets": [0, 2]}}, bytes(2), None,
     "dtype 'F8_E5M2' is not one this reader knows"),
    ({"w": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}}, bytes(16), None,
     "shape should be a list of non-negative ints"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}}, bytes(16), None,
     r"data_offsets should be \[begin, end\]"),
    ({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}, bytes(16), None,
     r"shape \[2, 3\] of F32 needs 24 bytes but data_offsets \[0, 16\] span 16"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, bytes(16), None,
     r"tensor 'b' \(bytes 8..16\) overlaps the tensor before it, which ends at 16"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, bytes(20), None,
     r"bytes 8..12 of the data buffer belong to no tensor \(a gap before 'b'\)"),
    (ONE, bytes(12), None, "the tensors end at byte 16 of the data buffer but it holds "
                           r"12 bytes \(truncated\)"),
    (ONE, bytes(20), None, r"holds 20 bytes \(extra bytes\)"),
    ({**ONE, "__metadata__": {"epoch": 3}}, bytes(16), None,
     "__metadata__ should map strings to strings"),
])
def test_a_header_that_lies_gets_one_error_saying_how(tmp_path, header, data, header_length,
                                                      message):
    path = write_raw(tmp_path / "lying.safetensors", header, data, header_length)
    with pytest.raises(FormatError, match=message) as raised:
        load_safetensors(path)
    assert str(raised.value).startswith(str(path))


def test_the_referee_refuses_what_we_refuse(tmp_path):
    """Our overlap and gap rules are the reference implementation's, not stricter."""
    path = write_raw(tmp_path / "gap.safetensors",
                     {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}},
                     bytes(20))
    with pytest.raises(Exception, match="invalid offset for tensor `b`"):
        safetensors_numpy.load_file(str(path))


@pytest.mark.parametrize("keep", [3, 8, 40, -4])
def test_a_truncated_file_is_one_clear_error(tmp_path, keep):
    path = tmp_path / "whole.safetensors"
    save_safetensors(sample_arrays(), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])
    with pytest.raises(FormatError, match="whole.safetensors: "):
        load_safetensors(path)


def test_a_torch_file_named_safetensors_is_not_mistaken(tmp_path):
    path = tmp_path / "actually_a_zip.safetensors"
    with open(path, "wb") as file:
        np.savez(file, w=np.ones(2))
    with pytest.raises(FormatError, match="header length field says"):
        load_state_dict_file(path)
