"""Reading the files ``torch.save`` writes, without torch and without trusting them.

    state = load_torch("resnet18-f37072fd.pth")          # {"conv1.weight": ndarray, ...}
    state = load_state_dict_file("checkpoint.pth.tar")   # unwraps {"state_dict": ...}

What ``torch.save`` writes
--------------------------
A tensor is two things: a *storage* (a flat run of elements of one dtype) and a *view*
of it (``storage_offset``, ``size``, ``stride``: element ``[i, j, ...]`` of the tensor is
element ``offset + i*stride[0] + j*stride[1] + ...`` of the storage). The file keeps them
apart: a pickle holds the structure (dicts of tensors, numbers, strings) in which each
tensor is a call ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
and each storage a *persistent id* ``("storage", torch.FloatStorage, key, location,
numel)``; the raw storage bytes live outside the pickle, keyed by ``key``. Several
tensors may view one storage (a parameter and a slice of it), and a view need not be
contiguous (a weight kept in a permuted layout has strides like ``(1, 10, 30, 90)``).

Two containers carry these pieces:

zip (the default since PyTorch 1.6)
    A zip archive with one top folder ``<root>/``: ``data.pkl`` (the pickle),
    ``data/<key>`` (each storage's raw bytes), ``byteorder`` (``little`` or ``big``;
    absent means little) and ``version``.
legacy (``_use_new_zipfile_serialization=False``, and every file before 1.6)
    Five pickles back to back, then the bytes: the magic number
    ``0x1950a86a20f9469cfc6c``, the protocol version ``1001``, a ``sys_info`` dict, the
    object, and the sorted list of storage keys; then, for each key in that order, the
    storage as a little-endian int64 element count followed by its raw little-endian
    bytes. A persistent id carries a sixth field, ``view_metadata``: ``None`` or
    ``(view_key, offset, numel)`` for a storage that is a slice of another.

Safety
------
Unpickling runs whatever callables a pickle names, so ``torch.load`` of a stranger's file
can run ``os.system``. Here ``find_class`` — the only door through which a pickle reaches
a Python object — answers from a short allow-list of names (``ALLOWED_GLOBALS``) with
stand-ins written in this file: the tensor rebuild functions only record a view
(``_PendingTensor``), the storage types are plain markers, ``OrderedDict`` is itself.
Any other name raises ``FormatError`` naming it at the moment it is looked up, before
anything could call it. Tensors become NumPy arrays only after the whole pickle is read
and every storage's size is checked, so a bad file never yields half a result. A damaged
or hostile file must not cost unbounded memory either: see ``_RestrictedUnpickler`` and
``MAX_EXPANDED_ELEMENTS``.

Not read: the tar format of PyTorch before 0.4 and TorchScript archives
(``torch.jit.save``); both get a ``FormatError`` saying so.

What comes back
---------------
``load_torch`` returns the saved object as it was, with every tensor (and
``nn.Parameter``) replaced by a NumPy array that owns its memory and is C-contiguous:
a state dict comes back as an ``OrderedDict`` of ``{name: ndarray}``, a checkpoint
``{"epoch": 3, "state_dict": {...}}`` as that dict. ``load_state_dict_file`` finds the
state dict inside such a checkpoint and flattens nested dicts into dotted names.
dtypes: float16, float32, float64, int8/16/32/64, uint8 and bool keep theirs; bfloat16,
which NumPy lacks, widens exactly to float32.
"""
import io
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

from minicnn.io.errors import FormatError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
ZIP_SIGNATURE = b"PK\x03\x04"
TAR_MAGIC, TAR_MAGIC_OFFSET = b"ustar", 257
# A view may read storage elements more than once (stride 0: torch's expand), so a few
# bytes of file can describe a tensor of any size. Up to this many elements such a view is
# materialized; beyond, refused. Views no larger than their storage are always read.
MAX_EXPANDED_ELEMENTS = 1 << 24

# Storage class name -> NumPy dtype of its elements as stored (little-endian). bfloat16
# is read as its 16 raw bits and widened later (see _bfloat16_to_float32).
STORAGE_DTYPES = {
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "CharStorage": np.dtype("i1"),
    "ShortStorage": np.dtype("<i2"),
    "IntStorage": np.dtype("<i4"),
    "LongStorage": np.dtype("<i8"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


# ----------------------------------------------------------------------- the stand-ins

class _Sealed:
    """Base of the stand-ins: a pickle's BUILD opcode may not set their fields."""
    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"the pickle tries to set the state of a "
                                     f"{type(self).__name__.strip('_')}")


class _StorageType(_Sealed):
    """What the global ``torch.FloatStorage`` (and its siblings) unpickles to: a name and
    the element dtype, nothing callable."""
    __slots__ = ("name", "dtype")

    def __init__(self, name):
        self.name, self.dtype = name, STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage(_Sealed):
    """A storage named by a persistent id: ``numel`` elements of ``storage_type``,
    possibly a slice (``offset``, in elements) of a root storage (legacy views). The
    bytes arrive later (``root.elements``), once the pickle has been read."""
    __slots__ = ("key", "storage_type", "numel", "root", "offset", "elements")

    def __init__(self, key, storage_type, numel, root=None, offset=0):
        self.key, self.storage_type, self.numel = key, storage_type, numel
        self.root, self.offset = root if root is not None else self, offset
        self.elements = None                      # flat ndarray, set on the root only

    def flat(self):
        return self.root.elements[self.offset:self.offset + self.numel]


class _PendingTensor(_Sealed):
    """A tensor as the pickle describes it: a strided view of a storage. It becomes an
    array in ``_materialize`` once the storage bytes are loaded and checked."""
    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _TypeMarker(_Sealed):
    """What ``torch.Tensor`` and ``torch.nn.parameter.Parameter`` unpickle to: only an
    argument of ``_rebuild_from_type_v2``, never called."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride):
    """Stand-in for ``torch._utils._rebuild_tensor``: record the view, build nothing."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"a tensor's storage must be a persistent storage id, "
                                     f"got {type(storage).__name__}")
    return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``; the autograd flag, hooks and
    metadata (a tensor's Python attributes) mean nothing to an array and are dropped."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    """Stand-in for ``_rebuild_parameter`` (and ``_with_state``): a Parameter is its data."""
    return data


_REBUILD_FUNCTIONS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter)


def _rebuild_from_type_v2(function, new_type, args, state):
    """Stand-in for ``torch._tensor._rebuild_from_type_v2``, which wraps a tensor rebuild
    for subclasses and tensors with attributes: rebuild the plain tensor, drop the rest."""
    if function not in _REBUILD_FUNCTIONS or not isinstance(new_type, _TypeMarker):
        raise pickle.UnpicklingError("_rebuild_from_type_v2 wraps something other than a "
                                     "tensor rebuild")
    return function(*args)


def _torch_size(sizes=()):
    """``torch.Size`` is a tuple of ints."""
    return tuple(sizes)


def _torch_device(kind, index=None):
    """``torch.device("cuda", 0)`` keeps its meaning as the string ``"cuda:0"``."""
    return f"{kind}:{index}" if index is not None else str(kind)


def _codecs_encode(text, encoding="utf-8"):
    """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(text, "latin1")``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError(f"_codecs.encode is allowed only to turn text into "
                                     f"bytes (latin1/utf-8), got encoding {encoding!r}")
    return text.encode(encoding)


class _NumpyDtype:
    """Stand-in for ``numpy.dtype`` as pickled inside NumPy scalars (``best_acc =
    np.float64(0.93)`` in a training checkpoint): only plain numeric and bool dtypes."""
    __slots__ = ("dtype",)

    def __init__(self, name, align=False, copy=True):
        dtype = np.dtype(name) if isinstance(name, str) else None
        if dtype is None or dtype.kind not in "biufc":
            raise pickle.UnpicklingError(f"numpy.dtype({name!r}) is not a plain numeric dtype")
        self.dtype = dtype

    def __setstate__(self, state):
        # NumPy's state tuple starts (version, byteorder, ...); only the byte order counts.
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype, raw=None):
    """Stand-in for ``numpy.core.multiarray.scalar(dtype, bytes)``."""
    if not isinstance(dtype, _NumpyDtype) or not isinstance(raw, bytes) \
            or len(raw) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar with an unexpected dtype or byte count")
    return np.frombuffer(raw, dtype=dtype.dtype)[0].item()


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.Parameter"),
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,                 # the name protocol-2 pickles use
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


# ----------------------------------------------------------------- the guarded unpickler

class _RestrictedUnpickler(pickle._Unpickler):
    """An unpickler whose ``find_class`` answers only from ``ALLOWED_GLOBALS`` and whose
    persistent ids are storages, shared by key (the same key is the same storage).

    It is the pure-Python unpickler, not the C one: the C one keeps its memo in an array
    and sizes byte strings before reading them, so a five-byte ``LONG_BINPUT 225539084``
    in a damaged file makes it zero-fill gigabytes. The Python one keeps a dict and reads
    what is there; the pickles in weight files are small, so its speed does not matter.
    """

    def __init__(self, file, path, legacy):
        super().__init__(file)
        self.path, self.legacy = path, legacy
        self.storages = {}                        # key -> _Storage (roots and views)

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise FormatError(self.path, f"the pickle asks for the global {module}.{name}, "
                              f"which a tensor file never needs; refused without running "
                              f"it") from None

    def persistent_load(self, saved_id):
        expected_length = 6 if self.legacy else 5
        if not (isinstance(saved_id, tuple) and len(saved_id) == expected_length
                and _as_text(saved_id[0]) == "storage"):
            raise pickle.UnpicklingError(f"expected a persistent id ('storage', type, key, "
                                         f"location, numel{', view' if self.legacy else ''})"
                                         f", got {saved_id!r:.120}")
        storage_type, key, _location, numel = saved_id[1:5]
        key = _as_text(key)
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) \
                or not _is_count(numel):
            raise pickle.UnpicklingError(f"malformed storage id {saved_id!r:.120}")
        root = self._shared(key, storage_type, numel)
        view = saved_id[5] if self.legacy else None
        if view is None:
            return root
        if not (isinstance(view, tuple) and len(view) == 3 and _is_count(view[1])
                and _is_count(view[2]) and view[1] + view[2] <= numel):
            raise pickle.UnpicklingError(f"malformed storage view {view!r:.120} of a storage "
                                         f"of {numel} elements")
        view_key, offset, view_numel = _as_text(view[0]), view[1], view[2]
        if view_key not in self.storages:
            self.storages[view_key] = _Storage(view_key, storage_type, view_numel, root, offset)
        return self.storages[view_key]

    def _shared(self, key, storage_type, numel):
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type, numel)
        elif storage.storage_type is not storage_type or storage.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} is described twice, differently")
        return storage

    def roots(self):
        return {key: s for key, s in self.storages.items() if s.root is s}


def _as_text(value):
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _unpickle(file, path, legacy, what):
    """One pickle from ``file`` through the guard; any failure is a FormatError."""
    unpickler = _RestrictedUnpickler(file, path, legacy)
    try:
        return unpickler.load(), unpickler
    except FormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, RecursionError, MemoryError,
            UnicodeDecodeError, struct.error) as error:
        raise FormatError(path, f"{what} is truncated or corrupt "
                          f"({type(error).__name__}: {error})") from None


# -------------------------------------------------------------------- the two containers

def _read_zip(path):
    """The zip container: returns the unpickled object with pending tensors."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as error:
        raise FormatError(path, f"a truncated or corrupt zip archive ({error})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1 or _is_torchscript(names):
            raise FormatError(path, _not_a_torch_zip(names))
        root = pickles[0][:-len("data.pkl")]
        byteorder = _read_member(archive, path, root + "byteorder", default=b"little")
        if byteorder not in (b"little", b"big"):
            raise FormatError(path, f"byteorder record says {byteorder[:20]!r}; expected "
                              f"'little' or 'big'")
        pickled = _read_member(archive, path, pickles[0])
        obj, unpickler = _unpickle(io.BytesIO(pickled), path, legacy=False,
                                   what=pickles[0])
        for key, storage in unpickler.roots().items():
            member = f"{root}data/{key}"
            expected = storage.numel * storage.storage_type.dtype.itemsize
            try:
                size = archive.getinfo(member).file_size
            except KeyError:
                raise FormatError(path, f"tensor storage {member} is missing from the "
                                  f"archive (truncated or not written by torch.save)") from None
            if size != expected:
                raise FormatError(path, f"{member} holds {size} bytes; its tensors need "
                                  f"{storage.numel} × {storage.storage_type.dtype.itemsize} "
                                  f"= {expected}")
            raw = _read_member(archive, path, member)
            storage.elements = _elements(raw, storage.storage_type.dtype, byteorder.decode())
    return obj


def _is_torchscript(names):
    """torch.jit.save archives add compiled code and constants next to data.pkl."""
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _not_a_torch_zip(names):
    if _is_torchscript(names):
        return ("a TorchScript archive (torch.jit.save), not a torch.save file: its weights "
                "are not a plain state dict; save model.state_dict() with torch.save instead")
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return (f"a zip archive but not a PyTorch file: expected exactly one <root>/data.pkl "
            f"(torch.save's zip format); it holds {shown or 'nothing'}")


def _read_member(archive, path, name, default=None):
    try:
        return archive.read(name)
    except KeyError:
        if default is not None:
            return default
        raise FormatError(path, f"{name} is missing from the archive") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError) as error:               # RuntimeError: "encrypted, password required"
        raise FormatError(path, f"{name} in the archive is truncated or corrupt "
                          f"({error})") from None


def _read_legacy(path, raw):
    """The legacy container: five pickles, then the storages' bytes."""
    stream = io.BytesIO(raw)
    magic, _ = _unpickle(stream, path, legacy=True, what="the magic number")
    if magic != MAGIC_NUMBER:
        raise FormatError(path, f"a pickle, but not a PyTorch file: it starts with "
                          f"{magic!r:.60} where the magic number {MAGIC_NUMBER:#x} belongs")
    protocol, _ = _unpickle(stream, path, legacy=True, what="the protocol version")
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise FormatError(path, f"legacy PyTorch protocol {protocol!r:.40}; this reader "
                          f"knows {LEGACY_PROTOCOL_VERSION}")
    sys_info, _ = _unpickle(stream, path, legacy=True, what="the sys_info record")
    if not isinstance(sys_info, dict):
        raise FormatError(path, f"sys_info should be a dict, got {type(sys_info).__name__}")
    obj, unpickler = _unpickle(stream, path, legacy=True, what="the pickled object")
    keys, _ = _unpickle(stream, path, legacy=True, what="the list of storage keys")
    roots = unpickler.roots()
    if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)
            and sorted(keys) == sorted(roots)):
        raise FormatError(path, f"the storage key list {keys!r:.80} does not match the "
                          f"{len(roots)} storages the object uses")
    position = stream.tell()
    for key in keys:
        storage = roots[key]
        if position + 8 > len(raw):
            raise FormatError(path, f"truncated: storage {key!r} has no element count "
                              f"(file ends at byte {len(raw)})")
        (count,) = struct.unpack_from("<q", raw, position)
        if count != storage.numel:
            raise FormatError(path, f"storage {key!r} holds {count} elements; the object "
                              f"declared {storage.numel}")
        start = position + 8
        position = start + count * storage.storage_type.dtype.itemsize
        if position > len(raw):
            raise FormatError(path, f"truncated: storage {key!r} needs bytes {start}..."
                              f"{position}, the file ends at byte {len(raw)}")
        storage.elements = _elements(raw[start:position], storage.storage_type.dtype, "little")
    return obj


def _elements(raw, dtype, byteorder):
    """The flat array a storage's bytes spell, in native byte order."""
    stored = dtype if byteorder == "little" else dtype.newbyteorder(">")
    return np.frombuffer(raw, dtype=stored).astype(dtype.newbyteorder("="), copy=False)


# ------------------------------------------------------------------ views into arrays

def _materialize(obj, path):
    """``obj`` with every pending tensor replaced by an array (views honoured, copied so
    each array owns its memory). Containers are rebuilt, shared ones once."""
    done = {}

    def walk(value, where):
        if isinstance(value, _PendingTensor):
            return _to_array(value, path, where)
        if not isinstance(value, (dict, list, tuple, set)):
            if isinstance(value, (_Storage, _StorageType, _TypeMarker, _NumpyDtype)):
                raise FormatError(path, f"{where or 'the object'} is a bare "
                                  f"{type(value).__name__.strip('_')}, not a tensor")
            return value
        if id(value) in done:
            return done[id(value)]
        if isinstance(value, dict):
            rebuilt = OrderedDict() if isinstance(value, OrderedDict) else {}
            done[id(value)] = rebuilt
            for key, item in value.items():
                rebuilt[key] = walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            rebuilt = done[id(value)] = []
            rebuilt.extend(walk(item, f"{where}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, tuple):
            rebuilt = tuple(walk(item, f"{where}[{i}]") for i, item in enumerate(value))
            done[id(value)] = rebuilt
        else:                                     # a set: an array cannot be a member
            if any(isinstance(item, _PendingTensor) for item in value):
                raise FormatError(path, f"{where or 'the object'} is a set of tensors, "
                                  f"which no state dict or checkpoint holds")
            rebuilt = done[id(value)] = set(value)
        return rebuilt

    return walk(obj, "")


def _to_array(tensor, path, where):
    """The strided view ``tensor`` describes, as a C-contiguous array of its own: element
    ``[i, j, ...]`` is ``storage[offset + i*stride[0] + j*stride[1] + ...]``, which is
    exactly what ``as_strided`` reads once the strides are in bytes."""
    storage, offset, size, stride = tensor.storage, tensor.offset, tensor.size, tensor.stride
    name = f"tensor {where!r}" if where else "the tensor"
    if not (isinstance(storage, _Storage) and _is_count(offset) and len(size) == len(stride)
            and all(map(_is_count, size)) and all(map(_is_count, stride))):
        raise FormatError(path, f"{name}: malformed view (offset {offset!r}, size {size!r}, "
                          f"stride {stride!r})")
    flat = storage.flat()
    count = int(np.prod(size, dtype=object))
    if count > max(len(flat), MAX_EXPANDED_ELEMENTS):
        raise FormatError(path, f"{name}: a view of {count} elements over a storage of "
                          f"{len(flat)} repeats its elements beyond the "
                          f"{MAX_EXPANDED_ELEMENTS} this reader materializes")
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(flat):
            raise FormatError(path, f"{name}: the view (offset {offset}, size {size}, stride "
                              f"{stride}) reaches element {last} of a storage of "
                              f"{len(flat)} elements")
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:] if 0 not in size else flat[:0],
                                           shape=size,
                                           strides=tuple(s * itemsize for s in stride),
                                           writeable=False)
    array = np.array(view, order="C")              # a copy: owns its memory, 0-d stays 0-d
    if storage.storage_type.name == "BFloat16Storage":
        array = _bfloat16_to_float32(array)
    return array


def _bfloat16_to_float32(bits):
    """bfloat16 is the top half of a float32: shifting its 16 bits up is exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


# ------------------------------------------------------------------------- public API

def load_torch(path):
    """The object ``torch.save`` wrote to ``path``, tensors as NumPy arrays.

    A state dict comes back as ``{name: ndarray}`` (an ``OrderedDict``, as saved);
    a wrapped checkpoint as its dict (see ``load_state_dict_file`` to unwrap it). Reads
    the zip and the legacy format; raises ``FormatError`` for anything else, for
    truncated or corrupt files, and for pickles that name a global outside
    ``ALLOWED_GLOBALS`` (which is never run).
    """
    path = str(path)
    with open(path, "rb") as file:
        head = file.read(TAR_MAGIC_OFFSET + len(TAR_MAGIC))
    if head[TAR_MAGIC_OFFSET:] == TAR_MAGIC:
        raise FormatError(path, "a tar archive: PyTorch's format before 0.4, which this "
                          "reader does not read (load it with torch and save it again)")
    head = head[:4]
    if head == ZIP_SIGNATURE:
        obj = _read_zip(path)
    elif head[:1] == b"\x80":                       # a binary pickle: the legacy format
        with open(path, "rb") as file:
            obj = _read_legacy(path, file.read())
    elif len(head) < 4:
        raise FormatError(path, f"only {len(head)} bytes long: truncated or empty, not a "
                          f"PyTorch file")
    else:
        raise FormatError(path, f"not a PyTorch file: expected a zip archive (torch.save "
                          f"since 1.6) or a legacy pickle starting with byte 0x80; it "
                          f"starts with {head!r}")
    try:
        return _materialize(obj, path)
    except RecursionError:
        raise FormatError(path, "containers nested too deeply for a checkpoint") from None
