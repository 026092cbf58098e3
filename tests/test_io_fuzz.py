"""Damaged weight files: whatever bytes are flipped or cut, a reader either returns a
result or raises the one ``FormatError`` naming the file — never another exception, a
hang, or something run."""
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicnn.io import FormatError, load_safetensors, load_torch, save_safetensors

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "torch")
TORCH_FILES = ["wrapped_zip.pt", "wrapped_legacy.pt", "views_legacy_protocol4.pt"]


def _read(name):
    with open(os.path.join(FIXTURES, name), "rb") as file:
        return file.read()


@st.composite
def damaged(draw, original):
    """``original`` with a few bytes replaced, and perhaps cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def _loads_or_refuses(load, path):
    try:
        load(path)
    except FormatError as error:
        assert str(error).startswith(str(path))


# The wheel-less fuzz draws from files of a few KB, so tmp_path reuse across examples is safe.
_fuzz = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", TORCH_FILES)
@_fuzz
@given(data=st.data())
def test_a_damaged_torch_file_loads_or_raises_format_error(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data.draw(damaged(_read(name))))
    _loads_or_refuses(load_torch, path)


@_fuzz
@given(data=st.data())
def test_a_damaged_safetensors_file_loads_or_raises_format_error(tmp_path, data):
    import numpy as np
    source = tmp_path / "source.safetensors"
    save_safetensors({"weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                      "count": np.array(7, dtype=np.int64)}, source, metadata={"k": "v"})
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(data.draw(damaged(source.read_bytes())))
    _loads_or_refuses(load_safetensors, path)
