"""ONNX out and in: ``export(model, path, input_shape)`` and ``load(path) -> Module``.

    >>> from minicnn import onnx as mo
    >>> mo.export(model, "lenet5.onnx", input_shape=(1, 32, 32))   # any batch size
    >>> net = mo.load("lenet5.onnx")                               # a minicnn Module again

Both need the ``onnx`` package (``pip install minicnn[onnx]``); it is imported when they
run, so ``import minicnn`` never needs it. ``export.py`` traces a forward pass and writes
one node per layer or operation; ``load.py`` turns each node back into a minicnn layer or
function. Each file keeps its converters in one table.
"""
from minicnn.onnx.export import ExportError, export, to_onnx
from minicnn.onnx.load import OnnxLoadError, OnnxModel, from_proto, load

__all__ = ["export", "to_onnx", "load", "from_proto", "OnnxModel", "ExportError",
           "OnnxLoadError"]
