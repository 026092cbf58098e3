"""Folding batch normalization into the layer before it, for inference.

In eval mode a batch-norm layer is a fixed affine map per channel c:

    y_c = γ_c · (x_c − μ_c) / σ_c + β_c,        σ_c = √(running_var_c + ε)

When x is the output of a convolution, x_c = W_c ∗ a + b_c (W_c the filters of output
channel c), the two maps compose into one convolution:

    y_c = (γ_c/σ_c · W_c) ∗ a + (γ_c/σ_c · (b_c − μ_c) + β_c)

so  W'_c = γ_c/σ_c · W_c  and  b'_c = γ_c/σ_c · (b_c − μ_c) + β_c  (b_c = 0 for a
convolution without bias), and the batch norm becomes an Identity: one pass over every
activation less at inference time. The same holds for a Linear layer followed by
BatchNorm1d (W_c is then row c of the weight). Groups do not matter: the scale is per
output channel. The folding is computed in float64 and cast back to the layer's dtype.

Which pairs are folded
----------------------
A batch norm is folded into a Conv2d or Linear when its input is exactly that layer's
output and **nothing else reads that output** (folding changes the output; another reader
would see the changed values), each called once, and the batch norm uses running
statistics (``track_running_stats``). The pairs are found in one of two ways:

* ``input_size`` given (exact, recommended for networks written with custom ``forward``
  methods): one batch-1 pass is traced (``minicnn.trace.trace_forward``) and the rule
  is checked on the actual data flow. This finds a ResNet block's ``conv1``/``bn1``
  attributes as surely as a Sequential's children.
* no ``input_size`` (structural): within every module, a Conv2d/Linear child followed
  *in registration order* by a batch-norm child of matching width. In a Sequential that
  order is the data flow by definition; in other modules it is the near-universal
  convention (define ``conv1`` then ``bn1``), but a forward method may disobey it — pass
  ``input_size`` when unsure. The width check (out_channels == num_features) catches most
  misreadings.
"""
import copy

import numpy as np

from minicnn.backend import get_array_module
from minicnn.nn.conv import Conv2d
from minicnn.nn.layers import Identity, Linear
from minicnn.nn.module import Parameter
from minicnn.nn.norm import BatchNorm1d, BatchNorm2d, BatchNormNd
from minicnn.nn.transfer import replace_module
from minicnn.trace import input_shape, sample_input, tensors_in, trace_forward

_WEIGHT_LAYERS = (Conv2d, Linear)


def _width(layer):
    return layer.out_channels if isinstance(layer, Conv2d) else layer.out_features


def _fits(layer, bn):
    """Can ``bn`` (in eval mode) be folded into ``layer`` at all?"""
    matching = (isinstance(layer, Conv2d) and isinstance(bn, BatchNorm2d)
                or isinstance(layer, Linear) and isinstance(bn, BatchNorm1d))
    return matching and bn.track_running_stats and _width(layer) == bn.num_features


def _structural_pairs(model):
    """(layer name, bn name): consecutive children in registration order."""
    pairs = []
    for parent_name, parent in model.named_modules():
        children = list(parent._modules.items())
        for (name_a, a), (name_b, b) in zip(children, children[1:]):
            if isinstance(a, _WEIGHT_LAYERS) and isinstance(b, BatchNormNd) and _fits(a, b):
                prefix = parent_name + "." if parent_name else ""
                pairs.append((prefix + name_a, prefix + name_b))
    return pairs


def _traced_pairs(model, input_size, in_channels):
    """(layer name, bn name) from the data flow of one traced batch-1 pass."""
    shape = input_shape(model, input_size, in_channels, caller="fold_batchnorm")
    trace = trace_forward(model, sample_input(model, shape))
    times_called = {}
    for call in trace.calls:
        times_called[id(call.module)] = times_called.get(id(call.module), 0) + 1
    made_by_layer = {id(call.output): call for call in trace.calls
                     if isinstance(call.module, _WEIGHT_LAYERS)}
    returned = {id(t) for t in tensors_in(trace.output)}
    pairs = []
    for call in trace.calls:
        bn = call.module
        if not isinstance(bn, BatchNormNd) or len(call.inputs) != 1:
            continue
        x = call.inputs[0]
        producer = made_by_layer.get(id(x))
        if producer is None or not _fits(producer.module, bn) or id(x) in returned:
            continue
        if isinstance(producer.module, Linear) and x.ndim != 2:
            continue                       # BatchNorm1d over (N, C, L) normalizes axis 1
        if times_called[id(bn)] != 1 or times_called[id(producer.module)] != 1:
            continue                       # a shared layer: folding would change other uses
        if all(op.module is bn for op in trace.readers(x)):
            pairs.append((producer.name, call.name))
    return pairs


def find_foldable_pairs(model, input_size=None, in_channels=None):
    """The (layer name, batch-norm name) pairs ``fold_batchnorm`` would fold."""
    if input_size is None:
        return _structural_pairs(model)
    return _traced_pairs(model, input_size, in_channels)


def fold_into(layer, bn):
    """Fold ``bn``'s eval-mode affine map into ``layer``'s weight and bias, in place."""
    if not _fits(layer, bn):
        raise ValueError(f"fold_batchnorm: cannot fold {type(bn).__name__}({bn.num_features}) "
                         f"into {type(layer).__name__} with {_width(layer)} outputs "
                         f"(BatchNorm2d follows Conv2d, BatchNorm1d follows Linear, widths "
                         f"equal, running statistics tracked)")
    xp = get_array_module(layer.weight.data)
    dtype = layer.weight.dtype
    mean = bn.running_mean.astype(np.float64)
    sigma = xp.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    gamma = bn.weight.data.astype(np.float64) if bn.weight is not None else xp.ones_like(mean)
    beta = bn.bias.data.astype(np.float64) if bn.bias is not None else xp.zeros_like(mean)
    scale = gamma / sigma                                   # γ/σ, one per output channel
    old_bias = layer.bias.data.astype(np.float64) if layer.bias is not None else xp.zeros_like(mean)
    weight = layer.weight.data.astype(np.float64)
    weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    layer.weight.data = weight.astype(dtype)
    new_bias = (scale * (old_bias - mean) + beta).astype(dtype)
    if layer.bias is None:
        layer.bias = Parameter(new_bias, requires_grad=layer.weight.requires_grad)
    else:
        layer.bias.data = new_bias


def fold_batchnorm(model, input_size=None, in_channels=None):
    """An equivalent eval-mode deep copy of ``model`` with every batch norm that directly
    follows a Conv2d or Linear folded into it (and replaced by Identity).

    The original model is untouched. See the module docstring for the formulas and for
    how pairs are found (``input_size`` traces the real data flow). The copy is returned
    in eval mode: it computes what the original computes in eval mode.
    """
    folded = copy.deepcopy(model)
    folded.eval()
    pairs = find_foldable_pairs(folded, input_size, in_channels)
    modules = dict(folded.named_modules())
    for layer_name, bn_name in pairs:
        fold_into(modules[layer_name], modules[bn_name])
        replace_module(folded, bn_name, Identity())
    folded.eval()
    folded.folded_pairs = pairs
    return folded
