"""The cost table of a network: per layer, its shape, parameters, FLOPs, memory and
receptive field — the table every course on CNN architectures puts on its slides.

    >>> import minicnn, architectures
    >>> print(minicnn.summary(architectures.create("vgg16"), 224, batch_size=128))

How the table is made
---------------------
One forward pass **at batch 1**, in eval mode and under ``no_grad()``, traced by
``minicnn.trace.trace_forward``: every module call with its input and output, every
operation between them. That gives each layer's output shape; everything else in the
table is arithmetic on those shapes and the layer's settings (its FLOPs by the rules in
``minicnn.flops``), multiplied by the batch size. The requested batch itself never runs:
VGG-16 at batch 128 would need tens of GB. This module collects the rows and totals;
``minicnn.report`` lays them out as text, Markdown or CSV.

A *layer* (a row) is a module without children, or a container that owns parameters
itself (its own parameters only). A module called twice (a shared ReLU) gives two rows;
a parameter shared by two layers is counted once.

Columns and formulas (B = batch size, A = #activations of the row's output)
---------------------------------------------------------------------------
* channels, kernel KH×KW, stride, padding, groups — a convolution's or pooling's settings;
* output C and H×W, and ``#act`` A = C_out·H_out·W_out (the numbers of one sample);
* ``#params`` — conv (KH·KW·C_in/groups + 1)·C_out with bias, linear C_in·C_out + C_out,
  batch norm 2·C (γ and β; the running statistics are buffers, not parameters);
* FLOPs of the forward pass for the whole batch, a multiply-add counted as 2, by category
  so that any table can be reproduced (``count=`` picks the categories in the column):

  ======  =================================================  =============================
  conv    A · KH·KW·C_in/groups · 2 · B                      Conv2d (the weights only)
  linear  2 · C_in · C_out · B                               Linear
  pool    A · KH·KW · B (one compare or add per window       MaxPool2d, AvgPool2d; adaptive
          element)                                           and global pooling: C · Σ of
                                                             their actual window areas · B
  bias    A · B (one add per output element)                 Conv2d and Linear with bias
  norm    2 · A · B (scale and shift: the inference cost)    BatchNorm1d/2d
          (2·size + 4) · A · B (sum of squares, then k+α·s,  LocalResponseNorm
          power and divide)
  act     A · B (one operation per element, whatever the     ReLU, sigmoid, tanh, ...
          function)
  add     one per output element of an element-wise          residual connections
          addition of two same-shaped activations written
          as a functional op between layers
  other   whatever a custom layer reports through a method   e.g. LeNet's trainable
          ``count_flops(input_shape, output_shape)``         subsampling
          returning a number or {category: number} per
          sample
  ======  =================================================  =============================

  The default ``count=('conv', 'linear', 'pool')`` gives the table courses print; the
  other categories are still computed, reported below the table and in every row of the
  ``'dict'`` and ``'csv'`` output. Additions and concatenations of activations are
  functional operations, not modules, so they are **not rows**: their cost appears only in
  the totals (category ``add``); a concatenation moves data and costs no FLOPs.
* memory by the float32 training rule of thumb: activations 2 · B · A · 4 bytes (the output,
  and its gradient in the backward pass), parameters 3 · #params · 4 bytes (value,
  gradient, one optimizer slot). The input image is the first row and counts as an
  activation; rows that only reshape or pass their input on (Flatten, Identity) store
  nothing new and count 0 bytes.
* receptive field (RF) and effective stride ("jump") of the row's output, per axis, from
  the layer's kernel k, stride s and dilation d and its input's RF r and jump j:

      r_out = r_in + (d·(k − 1)) · j_in,        j_out = j_in · s

  Two stacked 3×3 convolutions see 5×5, three see 7×7 — the VGG argument for small
  filters. Where branches meet (a residual addition, an Inception concatenation) the RF is
  the maximum over the branches: the pass records which operation made each tensor, so a
  merged tensor's inputs are known. Linear layers and global pooling see the whole image
  ("all"). Values are the theoretical ones: they may exceed the image (the padding).

``measure=True`` also runs one real training step (forward, cross-entropy, backward, an
SGD-with-momentum update: one optimizer slot, as the rule assumes) on a copy of the model at
``measure_batch_size`` (default: the table's batch size; pick one that fits in memory) and
reports its peak memory next to the estimate. The peak is measured with ``tracemalloc``,
which sees every NumPy array allocation (NumPy reports its data buffers to it), plus the
bytes of parameters and buffers that already exist; the growth of the process's peak
resident set (``ru_maxrss``) is shown as well, a lower bound when the process had already
peaked higher.
"""
import copy
import gc
import time
import tracemalloc
from collections import OrderedDict

import numpy as np

from minicnn.backend import get_array_module
from minicnn.flops import CATEGORIES, adaptive_window_lengths, layer_flops
from minicnn.functional.geometry import pair
from minicnn.nn.conv import Conv2d
from minicnn.nn.layers import Flatten, Identity, Linear
from minicnn.nn.pool import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d,
                             GlobalAvgPool2d, MaxPool2d)
from minicnn.report import render_csv, render_table
from minicnn.tensor import Tensor
from minicnn.trace import input_shape, sample_input, tensors_in, trace_forward

DEFAULT_COUNT = ("conv", "linear", "pool")
FORMATS = ("text", "markdown", "csv", "dict")
BYTES_PER_VALUE = 4                 # the rule of thumb is stated for float32
ACTIVATION_COPIES = 2               # output + its gradient
PARAMETER_COPIES = 3                # value + gradient + one optimizer slot

WINDOW_POOLS = (MaxPool2d, AvgPool2d)
ADAPTIVE_POOLS = (AdaptiveAvgPool2d, AdaptiveMaxPool2d, GlobalAvgPool2d)
VIEW_LAYERS = (Flatten, Identity)       # their output is their input, reshaped


# ===================================================================== receptive fields

class Field:
    """Receptive field ``size`` and effective stride ``jump``, (h, w) pairs, of a tensor.

    ``Field.ALL`` (size None) stands for "the whole image" (after a Linear layer or global
    pooling).
    """

    def __init__(self, size, jump):
        self.size, self.jump = size, jump

    def through(self, kernel, stride, dilation=(1, 1)):
        """The field after a window of ``kernel`` at ``stride``: r + d(k−1)·j, j·s."""
        if self.size is None:
            return self
        size = tuple(r + d * (k - 1) * j
                     for r, k, d, j in zip(self.size, kernel, dilation, self.jump))
        return Field(size, tuple(j * s for j, s in zip(self.jump, stride)))

    @staticmethod
    def merge(fields):
        """Where branches meet: the largest field and jump over the branches."""
        fields = [f for f in fields if f is not None]
        if not fields:
            return None
        if any(f.size is None for f in fields):
            return Field.ALL
        return Field(tuple(max(f.size[i] for f in fields) for i in range(2)),
                     tuple(max(f.jump[i] for f in fields) for i in range(2)))


Field.ALL = Field(None, None)
Field.PIXEL = Field((1, 1), (1, 1))


class _FieldTracker:
    """Receptive fields of the tensors of a trace: known for layer outputs, merged over
    the inputs of the operation that made any other tensor."""

    def __init__(self, trace):
        self.trace = trace
        self.known = {id(trace.input): Field.PIXEL}

    def of(self, tensor):
        """The field of ``tensor`` (None when it comes from no input: a constant)."""
        target = id(tensor)
        stack = [target]                       # iterative: a long chain of ops is fine
        while stack:
            tid = stack[-1]
            if tid in self.known:
                stack.pop()
                continue
            op = self.trace.made_by.get(tid)
            if op is None:
                self.known[tid] = None
                stack.pop()
                continue
            pending = [i for i in op.input_ids if i not in self.known]
            if pending:
                stack.extend(pending)
                continue
            self.known[tid] = Field.merge([self.known[i] for i in op.input_ids])
            stack.pop()
        return self.known[target]

    def set(self, tensor, field):
        self.known[id(tensor)] = field


def _layer_field(module, field, input_shape, output_shape):
    """The receptive field after ``module`` given the field of its input."""
    field = field or Field.PIXEL
    if isinstance(module, Linear):
        return Field.ALL
    if isinstance(module, (Conv2d,) + WINDOW_POOLS):
        return field.through(module.kernel_size, module.stride,
                             getattr(module, "dilation", (1, 1)))
    spatial_in, spatial_out = input_shape[2:], output_shape[2:]
    if isinstance(module, ADAPTIVE_POOLS):
        if spatial_out == spatial_in:
            return field
        if spatial_out == (1, 1):
            return Field.ALL
        kernel = tuple(max(adaptive_window_lengths(i, o)) for i, o in zip(spatial_in, spatial_out))
        return field.through(kernel, tuple(i // o for i, o in zip(spatial_in, spatial_out)))
    if len(input_shape) == 4 and len(output_shape) == 4:
        if spatial_in == spatial_out:
            return field
        if hasattr(module, "kernel_size") and hasattr(module, "stride"):
            owner = type(module).__name__
            return field.through(pair(module.kernel_size, "kernel_size", owner),
                                 pair(module.stride, "stride", owner),
                                 pair(getattr(module, "dilation", 1), "dilation", owner))
        if spatial_out == (1, 1):
            return Field.ALL
        # A custom down-sampling layer that says nothing of its window: assume
        # non-overlapping windows (kernel = stride = input/output), as in LeNet's S2.
        stride = tuple(max(1, i // o) for i, o in zip(spatial_in, spatial_out))
        return field.through(stride, stride)
    if len(output_shape) < len(input_shape) and not isinstance(module, Flatten):
        return Field.ALL
    return field


# ====================================================================== rows and FLOPs

class Row:
    """One line of the table; the numbers are those of one sample (times B when shown)."""

    def __init__(self, name, kind):
        self.name, self.type = name, kind
        self.in_channels = self.out_channels = None
        self.kernel = self.stride = self.padding = self.groups = None
        self.output_shape = ()
        self.activations = 0
        self.params = 0
        self.flops = dict.fromkeys(CATEGORIES, 0)   # per sample
        self.stores_activations = True
        self.field = None
        self.layers = 1                             # > 1 for a collapsed block

    @property
    def out_hw(self):
        return self.output_shape[1:3] if len(self.output_shape) == 3 else None


def _shape(value):
    tensors = tensors_in(value)
    return tuple(tensors[0].shape) if tensors else ()


def _settings(row, module, input_shape):
    """Fill the channel / kernel / stride / padding / groups columns from the module."""
    if len(input_shape) >= 2:
        row.in_channels = input_shape[1]
    if isinstance(module, Conv2d):
        row.kernel, row.stride, row.padding = module.kernel_size, module.stride, module.padding
        row.groups = module.groups
    elif isinstance(module, WINDOW_POOLS):
        row.kernel, row.stride, row.padding = module.kernel_size, module.stride, module.padding


def _collect(model, input_shape):
    """Trace a batch-1 pass and turn it into rows (input row first) plus the trace."""
    trace = trace_forward(model, sample_input(model, input_shape))
    fields = _FieldTracker(trace)

    first = Row("input", "Input")
    first.output_shape = tuple(input_shape)
    first.out_channels = input_shape[0]
    first.activations = int(np.prod(input_shape))
    first.field = Field.PIXEL
    rows, events = [first], []          # events: (row or None, call) in hook order
    counted = set()
    for call in trace.calls:
        own_params = [p for p in call.module._parameters.values() if p is not None]
        if not _is_row_module(call.module):
            events.append((None, call))
            continue
        row = Row(call.name, type(call.module).__name__)
        in_shape = _shape(call.inputs)
        out_tensors = tensors_in(call.output)
        out_shape = _shape(call.output)
        row.output_shape = out_shape[1:]
        if len(row.output_shape) >= 1:
            row.out_channels = row.output_shape[0]
        row.params = sum(p.size for p in own_params if id(p) not in counted)
        counted.update(id(p) for p in own_params)
        input_field = Field.merge([fields.of(t) for t in tensors_in(call.inputs)])
        if call.is_leaf:
            row.activations = sum(int(np.prod(t.shape[1:])) for t in out_tensors)
            row.flops = layer_flops(call.module, in_shape, out_shape)
            row.stores_activations = not isinstance(call.module, VIEW_LAYERS)
            row.field = _layer_field(call.module, input_field, in_shape, out_shape)
            for t in out_tensors:
                fields.set(t, row.field)
        else:                      # a container's own parameters: its output is its children's
            row.stores_activations = False
            row.field = Field.merge([fields.of(t) for t in out_tensors])
        _settings(row, call.module, in_shape)
        rows.append(row)
        events.append((row, call))

    all_params = {id(p): p.size for p in model.parameters()}
    unused = sum(size for pid, size in all_params.items() if pid not in counted)
    additions = _between_layer_additions(trace)
    return rows, events, trace, fields, unused, additions


def _between_layer_additions(trace):
    """FLOPs (per sample) of element-wise additions of two same-shaped activations made
    outside every layer (residual connections): one per output element."""
    total = 0
    for op in trace.operations:
        if op.kind != "Add" or len(op.input_shapes) != 2 or any(op.input_is_parameter):
            continue
        if op.module is not None and _is_row_module(op.module):
            continue                        # inside a layer, e.g. a Linear's own "+ bias"
        if op.input_shapes[0] == op.input_shapes[1] == op.output_shape:
            total += int(np.prod(op.output_shape[1:]))
    return total


def _is_row_module(module):
    """A layer of the table: no children, or parameters of its own."""
    return not module._modules or any(p is not None for p in module._parameters.values())


def _collapse(rows, events, depth, model, fields):
    """Rows deeper than ``depth`` name components merged into one row per block."""
    if depth is None:
        return rows
    types = {name: type(m).__name__ for name, m in model.named_modules()}
    result, group, prefix = [rows[0]], [], None
    pending_containers = []

    def close():
        if not group:
            return
        block = Row(prefix, types.get(prefix, "Block"))
        block.layers = len(group)
        block.in_channels = group[0].in_channels
        container = next((c for c in pending_containers if c.name == prefix), None)
        out_shape = (_shape(container.output)[1:] if container is not None
                     else group[-1].output_shape)
        block.output_shape = out_shape
        block.out_channels = out_shape[0] if out_shape else None
        block.activations = sum(r.activations for r in group if r.stores_activations)
        block.params = sum(r.params for r in group)
        for category in CATEGORIES:
            block.flops[category] = sum(r.flops[category] for r in group)
        block.field = (Field.merge([fields.of(t) for t in tensors_in(container.output)])
                       if container is not None else Field.merge([r.field for r in group]))
        result.append(block)

    for row, call in events:
        if row is None:                     # a parameter-free container finished
            pending_containers.append(call)
            continue
        parts = row.name.split(".")
        if len(parts) <= depth:
            close()
            group, prefix, pending_containers = [], None, []
            result.append(row)
            continue
        row_prefix = ".".join(parts[:depth])
        if row_prefix != prefix:
            close()
            group, prefix, pending_containers = [], row_prefix, []
        group.append(row)
    # the last block's container fires after its last layer: look at all of them
    close()
    return result


# ========================================================================== measuring

def measure_training_step(model, input_shape, batch_size, seed=0):
    """Peak memory of one real training step at ``batch_size``, on a copy of ``model``.

    The step: forward in training mode, softmax cross-entropy against random labels (or the
    mean square of the output when it is not (N, classes)), backward, and an SGD update with
    one momentum slot per parameter — what the 3·#params rule assumes.

    Returns a dict: ``peak_bytes`` = bytes of the parameters and buffers that exist before
    the step + the peak of new allocations during it, ``resident_bytes``,
    ``step_peak_bytes``, ``measured_by`` (what counted them), ``rss_growth_bytes`` and
    ``seconds``. On the CPU ``tracemalloc`` counts (every NumPy array is reported to it;
    memory that compiled kernels allocate outside NumPy is not) and ``rss_growth_bytes`` is
    the growth of the process's peak resident set (0 when it had already peaked higher).
    On the GPU CuPy's memory pool counts: emptied before the step, it keeps every block
    the step frees for reuse, so its size after the step is the step's peak (an upper
    bound: a freed block too small for a later request stays counted); the host's
    resident set says nothing about GPU memory, so ``rss_growth_bytes`` is None.
    """
    work = copy.deepcopy(model)       # measuring must not change the caller's weights
    params = list(work.parameters())
    xp = get_array_module(params[0].data) if params else np
    dtype = params[0].dtype if params else np.float32
    resident = (sum(p.data.nbytes for p in params)
                + sum(b.nbytes for b in work.buffers() if b is not None))
    rng = np.random.default_rng(seed)
    measure = _measure_on_host if xp is np else _measure_on_gpu
    start = time.perf_counter()
    step_peak, rss_growth, measured_by = measure(
        lambda: _training_step(work, params, input_shape, batch_size, dtype, rng, xp), xp)
    return {"batch_size": batch_size, "peak_bytes": resident + step_peak,
            "resident_bytes": resident, "step_peak_bytes": step_peak,
            "measured_by": measured_by, "rss_growth_bytes": rss_growth,
            "seconds": time.perf_counter() - start}


def _training_step(work, params, input_shape, batch_size, dtype, rng, xp):
    from minicnn import functional as F

    work.train()
    x = Tensor(xp.asarray(rng.standard_normal((batch_size,) + tuple(input_shape)).astype(dtype)))
    outputs = work(x)
    # several outputs (GoogLeNet's auxiliary classifiers in training): sum their losses
    loss = None
    for out in (outputs if isinstance(outputs, (tuple, list)) else (outputs,)):
        if out.ndim == 2:
            labels = xp.asarray(rng.integers(0, out.shape[1], batch_size))
            term = F.cross_entropy(out, labels)
        else:
            term = (out * out).mean()
        loss = term if loss is None else loss + term
    loss.backward()
    slots = {}
    for p in params:
        if p.grad is not None:
            slots[id(p)] = p.grad.copy()       # the momentum buffer
            p.data -= 0.01 * slots[id(p)]


def _measure_on_host(step, xp):
    """(peak bytes NumPy allocated during ``step``, peak-RSS growth, what counted)."""
    import resource

    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    already_tracing = tracemalloc.is_tracing()
    if already_tracing:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
    else:
        tracemalloc.start()
        base = 0
    try:
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not already_tracing:
            tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak - base, max(0, rss_after - rss_before) * 1024,
            "tracemalloc peak of NumPy allocations")


def _measure_on_gpu(step, cupy):
    """(growth of CuPy's memory pool over ``step``, None, what counted): see above."""
    pool = cupy.get_default_memory_pool()
    gc.collect()
    cupy.cuda.Device().synchronize()
    pool.free_all_blocks()                 # the pool now holds only live arrays
    before = pool.total_bytes()
    step()
    cupy.cuda.Device().synchronize()
    return pool.total_bytes() - before, None, "growth of CuPy's GPU memory pool"


# ============================================================================ summary

def summary(model, input_size, batch_size=1, in_channels=None, format="text", depth=None,
            measure=False, count=DEFAULT_COUNT, measure_batch_size=None):
    """The per-layer cost table of ``model`` for inputs of ``input_size``.

    Args:
        model: a ``Module``.
        input_size: the side of a square image (int), ``(H, W)``, ``(C, H, W)``, or
            ``(features,)`` for a network that takes vectors.
        batch_size: B in every FLOP and memory figure (nothing runs at this batch).
        in_channels: C when ``input_size`` does not say; by default the ``in_channels`` of
            the model's first Conv2d.
        format: ``'text'`` (aligned table), ``'markdown'``, ``'csv'`` or ``'dict'``.
        depth: None for one row per layer; an int d to show rows at most d name levels
            deep, every deeper layer folded into its block's row (subtotals of #act,
            #params, FLOPs and memory; the block's output and receptive field).
        measure: also run one real training step and report its measured peak memory.
        count: FLOP categories summed in the FLOPs column (see the module docstring),
            or ``'all'``.
        measure_batch_size: the batch of the measured step (default ``batch_size``).

    Returns the rendered table (a str), or a dict for ``format='dict'``.
    """
    shape = input_shape(model, input_size, in_channels, caller="summary")
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ValueError(f"summary: batch_size must be a positive int, got {batch_size!r}")
    if format not in FORMATS:
        raise ValueError(f"summary: format must be one of {FORMATS}, got {format!r}")
    if depth is not None and (not isinstance(depth, (int, np.integer)) or depth < 1):
        raise ValueError(f"summary: depth must be None or an int >= 1, got {depth!r}")
    count = CATEGORIES if count == "all" else (count,) if isinstance(count, str) else tuple(count)
    unknown = [c for c in count if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"summary: unknown FLOP categories {unknown}; known: "
                         f"{', '.join(CATEGORIES)}")

    rows, events, trace, fields, unused, additions = _collect(model, shape)
    layer_rows = rows
    rows = _collapse(rows, events, depth, model, fields)
    totals = _totals(layer_rows, additions, trace, fields)
    report = _as_dict(model, shape, batch_size, count, rows, totals, unused, additions)
    if measure:
        measured_batch = measure_batch_size or batch_size
        result = measure_training_step(model, shape, measured_batch)
        result["estimate_bytes"] = _memory_estimate(totals, measured_batch)
        report["measured"] = result
    if format == "dict":
        return report
    if format == "csv":
        return render_csv(report)
    return render_table(report, markdown=(format == "markdown"))


def _totals(rows, additions, trace, fields):
    total = Row("total", "")
    total.activations = sum(r.activations for r in rows if r.stores_activations)
    total.params = sum(r.params for r in rows)
    for category in CATEGORIES:
        total.flops[category] = sum(r.flops[category] for r in rows)
    total.flops["add"] += additions
    total.output_shape = _shape(trace.output)[1:]
    total.out_channels = total.output_shape[0] if total.output_shape else None
    total.field = Field.merge([fields.of(t) for t in tensors_in(trace.output)])
    total.layers = len(rows) - 1
    return total


def _memory_estimate(total, batch_size):
    return (ACTIVATION_COPIES * batch_size * total.activations * BYTES_PER_VALUE
            + PARAMETER_COPIES * total.params * BYTES_PER_VALUE)


def _row_dict(row, batch_size, count):
    flops = {c: v * batch_size for c, v in row.flops.items()}
    stored = row.activations if row.stores_activations else 0
    return OrderedDict([
        ("name", row.name), ("type", row.type), ("layers", row.layers),
        ("in_channels", row.in_channels), ("out_channels", row.out_channels),
        ("kernel", row.kernel), ("stride", row.stride), ("padding", row.padding),
        ("groups", row.groups), ("output_shape", tuple(row.output_shape)),
        ("activations", row.activations), ("params", row.params),
        ("flops", sum(flops[c] for c in count)), ("flops_by_category", flops),
        ("activation_bytes", ACTIVATION_COPIES * batch_size * stored * BYTES_PER_VALUE),
        ("param_bytes", PARAMETER_COPIES * row.params * BYTES_PER_VALUE),
        # (h, w) pairs; "all" once a Linear layer or global pooling has seen the whole image;
        # None where no field is defined (a container's own row)
        ("receptive_field", None if row.field is None else (row.field.size or "all")),
        ("jump", None if row.field is None else (row.field.jump or "all")),
    ])


def _as_dict(model, shape, batch_size, count, rows, totals, unused, additions):
    total = _row_dict(totals, batch_size, count)
    return {
        "model": type(model).__name__, "input_shape": tuple(shape), "batch_size": batch_size,
        "count": count, "rows": [_row_dict(r, batch_size, count) for r in rows],
        "total": total,
        "uncounted_flops": {c: v for c, v in total["flops_by_category"].items() if c not in count},
        "unused_params": unused, "memory_estimate_bytes": _memory_estimate(totals, batch_size),
        "measured": None,
    }
