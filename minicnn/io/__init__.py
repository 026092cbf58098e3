"""Weights in and out without a deep-learning framework.

    load_torch(path)                     what torch.save wrote, tensors as NumPy arrays
    load_state_dict_file(path)           the flat state dict in a .pth/.pt/.safetensors file
    load_safetensors(path)               {name: ndarray}
    save_safetensors(tensors, path, metadata=None)
    save_model_safetensors(model, path)  /  load_model_safetensors(model, path)

    torch_format.py        the zip and legacy torch.save formats, behind a guarded unpickler
    safetensors_format.py  the safetensors format, validated
    state_dict.py          unwrapping checkpoints, flattening nested dicts, minicnn models
    errors.py              FormatError: the one error for a file that cannot be trusted
"""
from minicnn.io.errors import FormatError
from minicnn.io.safetensors_format import (load_safetensors, read_safetensors_metadata,
                                           save_safetensors)
from minicnn.io.state_dict import (find_state_dict, flatten_state_dict,
                                   load_model_safetensors, load_state_dict_file,
                                   save_model_safetensors)
from minicnn.io.torch_format import ALLOWED_GLOBALS, load_torch

__all__ = ["FormatError", "load_torch", "load_state_dict_file", "find_state_dict",
           "flatten_state_dict", "load_safetensors", "save_safetensors",
           "read_safetensors_metadata", "save_model_safetensors", "load_model_safetensors",
           "ALLOWED_GLOBALS"]
