"""Checkpoints: named sections of nested dicts and lists, in one ``.npz`` file, atomically.

    save_checkpoint("runs/last.npz", model=model.state_dict(), optimizer=opt.state_dict(),
                    schedule=schedule.state_dict(), extra={"epoch": 12, "best_top1": 0.71})
    state = load_checkpoint("runs/last.npz")
    model.load_state_dict(state["model"])

Key scheme
----------
Every array becomes one entry of the archive, named by its path through the nesting
joined with ``/``: ``model/features.0.weight``, ``optimizer/state/3/momentum_buffer``
(list items are numbered from 0). Everything else (ints, floats, bools, strings, None, and
the shape of the tree: which nodes are dicts, which are lists) goes into a JSON header,
the entry ``__minicnn_checkpoint__``, where each array stands as ``{"__array__": path}``.
So ``numpy.load`` shows readable names, nothing is pickled (loading never runs code), and
``load_checkpoint`` rebuilds the same dicts and lists (tuples come back as lists). Dict
keys must be strings without ``/``.

Two containers
--------------
A path ending in ``.safetensors`` holds the same checkpoint as a safetensors file: the
arrays under the same names, the JSON header as the file's ``__metadata__`` entry
``__minicnn_checkpoint__``. Any safetensors reader sees the weights; ``load_checkpoint``
rebuilds everything. Any other path is an ``.npz``.

Atomic writes
-------------
The file is written under a temporary name in the same directory, flushed to disk, and
then renamed over the destination with ``os.replace`` (``minicnn.files.atomic_write``).
A crash at any moment leaves either the old checkpoint or the new one, never half of one;
the temporary file is removed when the write fails, and one left by a killed process
(``.NAME.PID-RANDOM.tmp``) is removed by the next training run.
"""
import json
import os
import zipfile

import numpy as np

from minicnn.backend import to_device
from minicnn.files import atomic_write
from minicnn.tensor import Tensor

HEADER = "__minicnn_checkpoint__"
FORMAT, VERSION = "minicnn-checkpoint", 1


def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _pack(value, path, arrays):
    """The JSON skeleton of ``value``; arrays found on the way go into ``arrays[path]``."""
    if isinstance(value, Tensor):
        value = value.data
    if _is_array(value):                          # ndarray, cupy array or NumPy scalar
        arrays[path] = np.asarray(to_device(np.asarray(value) if isinstance(value, np.generic)
                                            else value, "cpu"))
        return {"__array__": path}
    if isinstance(value, dict):
        skeleton = {}
        for key, item in value.items():
            if not isinstance(key, str) or "/" in key or key == "__array__":
                raise TypeError(f"save_checkpoint: keys must be strings without '/' (and not "
                                f"'__array__'), got {key!r} under {path!r}")
            skeleton[key] = _pack(item, f"{path}/{key}", arrays)
        return skeleton
    if isinstance(value, (list, tuple)):
        return [_pack(item, f"{path}/{i}", arrays) for i, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"save_checkpoint: cannot store a {type(value).__name__} at {path!r}; "
                    f"use arrays, numbers, strings, None, and dicts or lists of them")


def _unpack(skeleton, arrays):
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__array__"}:
            path = skeleton["__array__"]
            if path not in arrays:
                raise ValueError(f"load_checkpoint: the header names array {path!r}, which is "
                                 f"missing from the file (corrupt checkpoint)")
            return arrays[path]
        return {key: _unpack(item, arrays) for key, item in skeleton.items()}
    if isinstance(skeleton, list):
        return [_unpack(item, arrays) for item in skeleton]
    return skeleton


def save_checkpoint(path, **sections):
    """Write ``sections`` (name -> nested dict/list/array/number) to ``path`` atomically."""
    if not sections:
        raise ValueError("save_checkpoint: nothing to save (pass sections as keywords, "
                         "e.g. model=model.state_dict())")
    arrays = {}
    tree = {}
    for name, value in sections.items():
        if name.startswith("__"):
            raise ValueError(f"save_checkpoint: section names may not start with '__', "
                             f"got {name!r}")
        tree[name] = _pack(value, name, arrays)
    header = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    if _is_safetensors(path):
        from minicnn.io import save_safetensors
        save_safetensors(arrays, path, metadata={HEADER: header})
        return
    atomic_write(path, lambda file: _write_npz(file, {HEADER: np.array(header), **arrays}))


def _is_safetensors(path):
    return str(path).lower().endswith(".safetensors")


def _write_npz(file, entries):
    """The ``.npz`` format: a zip archive holding one ``.npy`` file per entry."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in entries.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def load_checkpoint(path):
    """Read a file written by ``save_checkpoint``: ``{section name: nested value}``.

    Arrays come back as NumPy arrays. A truncated, corrupt or foreign file raises
    ``ValueError`` saying which; a missing file raises ``FileNotFoundError``.
    """
    if _is_safetensors(path):
        header, arrays = _read_safetensors_checkpoint(path)
    else:
        header, arrays = _read_npz_checkpoint(path)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"load_checkpoint: {path} has an unrecognised header")
    if header.get("version") != VERSION:
        raise ValueError(f"load_checkpoint: {path} is checkpoint format version "
                         f"{header.get('version')}; this minicnn reads version {VERSION}")
    return _unpack(header["tree"], arrays)


def _read_safetensors_checkpoint(path):
    from minicnn.io import load_safetensors, read_safetensors_metadata
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_checkpoint: {path} does not exist")
    metadata = read_safetensors_metadata(path)      # FormatError (a ValueError) if damaged
    if HEADER not in metadata:
        raise ValueError(f"load_checkpoint: {path} is a safetensors file but not a minicnn "
                         f"checkpoint (its metadata has no {HEADER!r})")
    try:
        header = json.loads(metadata[HEADER])
    except ValueError:
        raise ValueError(f"load_checkpoint: {path} has a damaged checkpoint header") from None
    return header, load_safetensors(path)


def _read_npz_checkpoint(path):
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"load_checkpoint: {path} is truncated, corrupt or not a minicnn "
                         f"checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"load_checkpoint: {path} holds a single .npy array, not a minicnn "
                         f"checkpoint")
    with loaded as archive:
        if HEADER not in archive.files:
            raise ValueError(f"load_checkpoint: {path} is an .npz archive but not a minicnn "
                             f"checkpoint (no {HEADER!r} entry; it has {archive.files[:5]})")
        try:
            header = json.loads(str(archive[HEADER]))
            arrays = {name: archive[name] for name in archive.files if name != HEADER}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"load_checkpoint: {path} is truncated or corrupt "
                             f"({type(error).__name__}: {error})") from None
    return header, arrays
