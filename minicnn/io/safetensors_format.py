"""safetensors: named arrays in one file, with nothing to execute.

    save_safetensors({"conv.weight": w, "conv.bias": b}, "model.safetensors",
                     metadata={"epoch": "12"})
    tensors = load_safetensors("model.safetensors")      # {"conv.weight": ndarray, ...}

The format (https://github.com/huggingface/safetensors), byte by byte::

    [ 8 bytes ]  N, the header length, unsigned little-endian
    [ N bytes ]  the header: a UTF-8 JSON object, padded with spaces
                 {"conv.weight": {"dtype": "F32", "shape": [8, 3, 3, 3],
                                  "data_offsets": [0, 864]},
                  ...,
                  "__metadata__": {"epoch": "12"}}          (optional, strings only)
    [ rest   ]   the data buffer: each tensor's raw little-endian bytes, C order, at
                 [begin, end) counted from the end of the header

A reader trusts none of it: the header length must fit the file, the JSON must be an
object of well-formed entries, each entry's byte range must be exactly its shape × its
dtype's size, and the ranges must tile the data buffer exactly — in order, without gaps,
overlaps or bytes left over (the reference implementation's rule). Every violation is a
``FormatError`` saying which tensor and what is wrong; nothing is returned until the
whole file has been checked.

dtypes: BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, F32, F64 map to the NumPy dtype of
the same name; BF16, which NumPy lacks, widens exactly to float32 on reading.
"""
import json
import os

import numpy as np

from minicnn.backend import to_device
from minicnn.files import atomic_write
from minicnn.io.errors import FormatError
from minicnn.tensor import Tensor

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100_000_000        # the reference implementation's limit
METADATA_KEY = "__metadata__"

DTYPES = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),          # raw bits; widened in _decode
}
NAMES_BY_DTYPE = {dtype.newbyteorder("="): name for name, dtype in DTYPES.items()
                  if name != "BF16"}


# ------------------------------------------------------------------------------ reading

def load_safetensors(path):
    """The arrays of a safetensors file, ``{name: ndarray}`` in the file's data order.

    Each array owns its memory and is C-contiguous, in native byte order. Use
    ``read_safetensors_metadata`` for the ``__metadata__`` strings.
    """
    path = str(path)
    with open(path, "rb") as file:
        raw = file.read()
    header, data_start = _read_header(path, raw)
    entries = _checked_entries(path, header, len(raw) - data_start)
    return {name: _decode(raw, data_start, entry) for name, entry in entries}


def read_safetensors_metadata(path):
    """The ``__metadata__`` dict of a safetensors file (``{}`` when it has none)."""
    path = str(path)
    with open(path, "rb") as file:
        raw = file.read(HEADER_LENGTH_BYTES)
        header_length = _header_length(path, raw, os.fstat(file.fileno()).st_size)
        header, _ = _read_header(path, raw + file.read(header_length))
    return dict(header.get(METADATA_KEY) or {})


def _header_length(path, raw, file_size):
    if len(raw) < HEADER_LENGTH_BYTES:
        raise FormatError(path, f"only {len(raw)} bytes long; a safetensors file starts "
                          f"with an 8-byte header length")
    header_length = int.from_bytes(raw[:HEADER_LENGTH_BYTES], "little")
    if header_length == 0 or header_length > MAX_HEADER_BYTES:
        raise FormatError(path, f"the header length field says {header_length} bytes; "
                          f"expected 1..{MAX_HEADER_BYTES} (not a safetensors file?)")
    if HEADER_LENGTH_BYTES + header_length > file_size:
        raise FormatError(path, f"the header length field says {header_length} bytes but "
                          f"the file has only {file_size - HEADER_LENGTH_BYTES} after it "
                          f"(truncated, or not a safetensors file)")
    return header_length


def _read_header(path, raw):
    """The parsed JSON header and where the data buffer starts."""
    header_length = _header_length(path, raw, len(raw))
    data_start = HEADER_LENGTH_BYTES + header_length
    text = raw[HEADER_LENGTH_BYTES:data_start]
    if not text.startswith(b"{"):
        raise FormatError(path, f"the header should be a JSON object starting with '{{'; "
                          f"it starts with {text[:16]!r}")
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise FormatError(path, f"the header is not valid UTF-8 JSON ({error})") from None
    if not isinstance(header, dict):
        raise FormatError(path, "the header should be a JSON object")
    metadata = header.get(METADATA_KEY)
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise FormatError(path, f"{METADATA_KEY} should map strings to strings, got "
                          f"{metadata!r:.80}")
    return header, data_start


def _checked_entries(path, header, data_length):
    """``[(name, (dtype name, shape, begin, end))]`` sorted by offset, after checking
    each entry and that the ranges tile the data buffer exactly."""
    entries = []
    for name, entry in header.items():
        if name == METADATA_KEY:
            continue
        entries.append((name, _checked_entry(path, name, entry)))
    entries.sort(key=lambda item: (item[1][2], item[1][3]))
    expected_begin = 0
    for name, (_, _, begin, end) in entries:
        if begin < expected_begin:
            raise FormatError(path, f"tensor {name!r} (bytes {begin}..{end}) overlaps the "
                              f"tensor before it, which ends at {expected_begin}")
        if begin > expected_begin:
            raise FormatError(path, f"bytes {expected_begin}..{begin} of the data buffer "
                              f"belong to no tensor (a gap before {name!r})")
        expected_begin = end
    if expected_begin != data_length:
        raise FormatError(path, f"the tensors end at byte {expected_begin} of the data "
                          f"buffer but it holds {data_length} bytes "
                          f"({'truncated' if data_length < expected_begin else 'extra bytes'})")
    return entries


def _checked_entry(path, name, entry):
    where = f"tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(path, f"{where}: expected an object with dtype, shape and "
                          f"data_offsets, got {entry!r:.100}")
    dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype_name not in DTYPES:
        raise FormatError(path, f"{where}: dtype {dtype_name!r} is not one this reader "
                          f"knows ({', '.join(DTYPES)})")
    if not (isinstance(shape, list) and all(_is_count(n) for n in shape)):
        raise FormatError(path, f"{where}: shape should be a list of non-negative ints, "
                          f"got {shape!r:.60}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise FormatError(path, f"{where}: data_offsets should be [begin, end] with "
                          f"0 <= begin <= end, got {offsets!r:.60}")
    begin, end = offsets
    expected = int(np.prod(shape, dtype=object)) * DTYPES[dtype_name].itemsize
    if end - begin != expected:
        raise FormatError(path, f"{where}: shape {shape} of {dtype_name} needs {expected} "
                          f"bytes but data_offsets [{begin}, {end}] span {end - begin}")
    return dtype_name, tuple(shape), begin, end


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _decode(raw, data_start, entry):
    dtype_name, shape, begin, end = entry
    stored = DTYPES[dtype_name]
    array = np.frombuffer(raw, dtype=stored, count=(end - begin) // stored.itemsize,
                          offset=data_start + begin).reshape(shape)
    if dtype_name == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(stored.newbyteorder("="), copy=True)


# ------------------------------------------------------------------------------ writing

def save_safetensors(tensors, path, metadata=None):
    """Write ``{name: array}`` to ``path`` as safetensors, atomically.

    Arrays may be NumPy or CuPy arrays or minicnn Tensors, of any layout (they are
    written C-contiguous, little-endian). ``metadata`` maps strings to strings.
    """
    path = str(path)
    header, chunks, offset = {}, [], 0
    if metadata is not None:
        if not (isinstance(metadata, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
            raise TypeError(f"save_safetensors: metadata must map strings to strings, got "
                            f"{metadata!r:.80}")
        header[METADATA_KEY] = dict(metadata)
    if not isinstance(tensors, dict):
        raise TypeError(f"save_safetensors: expected a dict of name -> array, got "
                        f"{type(tensors).__name__}")
    for name, value in tensors.items():
        array = _as_numpy(name, value)
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": NAMES_BY_DTYPE[array.dtype.newbyteorder("=")],
                        "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)       # the data buffer starts 8-byte aligned
    chunks = [len(text).to_bytes(HEADER_LENGTH_BYTES, "little"), text, *chunks]
    atomic_write(path, lambda file: [file.write(chunk) for chunk in chunks])


def _as_numpy(name, value):
    if not isinstance(name, str) or name == METADATA_KEY:
        raise TypeError(f"save_safetensors: names must be strings other than "
                        f"{METADATA_KEY!r}, got {name!r}")
    if isinstance(value, Tensor):
        value = value.data
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise TypeError(f"save_safetensors: {name!r} is a {type(value).__name__}, "
                        f"expected an array")
    array = np.asarray(to_device(value, "cpu"))
    if array.dtype.newbyteorder("=") not in NAMES_BY_DTYPE:
        raise TypeError(f"save_safetensors: {name!r} has dtype {array.dtype}; safetensors "
                        f"stores {', '.join(str(d) for d in NAMES_BY_DTYPE)}")
    return array
