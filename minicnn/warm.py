"""Compile a network's kernels in the background, while its data loads, on every core.

Numba compiles a kernel on its first call (and caches the result on disk, ``cache=True``),
so a new user's first training step waits for every kernel the network uses: LeNet-5's
take ≈ 3 CPU-seconds to compile. ``warm_up`` takes that wait off the path::

    warming = warm_up(lambda: architectures.create("lenet5", in_channels=1), (1, 28, 28))
    train_set, test_set = load_dataset("mnist")       # meanwhile, the kernels compile
    warming.join()                                     # the first step finds them ready

It works in three steps, in a background thread:

1. **List what to compile.** One forward pass of a blank batch of two images in reference
   mode (plain NumPy, nothing to compile; ``thread_kernel_mode``, so the caller's threads
   stay fast) records every operation with the shapes and memory layouts of its inputs.
   The operations are grouped by what they compile: one group per Function type, per
   convolution algorithm (LeNet-5: the direct convolution, the im2col convolution, max
   pooling, ...).
2. **Compile the groups on every core.** A helper process, forked at the call, makes the
   same list; it and the thread each take the next group no one has taken (a shared
   counter) and compile it by running its operations forward and backward on zeros of the
   recorded shapes. Numba writes every kernel to its disk cache as it compiles it.
3. **One pass of the whole network**, forward and backward, as a training step runs it:
   the helper's kernels now load from the disk cache in milliseconds, and anything no
   group covered (a kernel called outside a Function) compiles here.

The kernels compile per element type and array layout, not per size, so the tiny batch
compiles what the real one will run: float32 on the CPU, with gradients for the
parameters and activations but not the images (as in training). Where there is no
``fork`` (Windows, macOS), where the cores are one, where other threads already run, or
with ``helpers=0``, the thread does step 3 alone. A call the main thread makes meanwhile
waits for the compilation in progress (Numba compiles under one lock) and never compiles
twice.

Nothing of the caller's state is touched: the network is built with the weight
initializer's random state restored afterwards (the caller's own network draws the same
weights), or deep-copied when given, and run in eval mode, where nothing is drawn from the
dropout generator and batch-norm statistics are not updated (batch norm's training
kernels therefore compile at the first real step).
"""
import copy
import multiprocessing
import os
import sys
import threading
import time

import numpy as np


def warm_up(network, input_shape, dtype=np.float32, helpers=None):
    """Start compiling ``network``'s CPU kernels for inputs (N, *input_shape) of ``dtype``
    in a daemon thread; returns the thread (``.join()`` waits for it).

    ``network`` is a Module (deep-copied here) or a function of no arguments that builds
    one (called here, in the calling thread, without consuming the initializer's random
    numbers). ``helpers`` is the number of helper processes that compile beside the thread
    (default: one per further core, at most ``MAX_HELPERS``; none where fork is missing
    or another thread runs in this process, whose locks a forked child could inherit held).
    Errors inside the thread are kept on the thread as ``.error`` and otherwise ignored:
    the first real step will raise them where the user can see them. ``.taken_by`` lists,
    once joined, which worker compiled each group (0 the thread, 1… the helpers).
    """
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"warm_up: expected input_shape (channels, height, width), got "
                         f"{tuple(input_shape)!r}")
    input_shape, count = tuple(int(size) for size in input_shape), _helper_count(helpers)
    model = _private_copy(network)
    shared = SharedGroups.start(model, input_shape, dtype, count)
    thread = threading.Thread(target=_run, args=(model, input_shape, dtype, shared),
                              name="minicnn-warm-up", daemon=True)
    thread.error, thread.taken_by = None, []
    thread.start()
    return thread


#: helper processes at most: the groups of a small network keep two or three cores busy
MAX_HELPERS = 3
#: how long the thread waits for a helper to finish before compiling without it
HELPER_PATIENCE_S = 120
#: groups a run can record in its shared table of who compiled what (more still compile)
RECORDED_GROUPS = 512


def _helper_count(requested):
    import numba

    from minicnn.kernels.registry import current_mode
    if requested is not None and (not isinstance(requested, int) or requested < 0):
        raise ValueError(f"warm_up: helpers must be a whole number ≥ 0, got {requested!r}")
    if (sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods()
            or numba.config.DISABLE_JIT or current_mode() == "reference"):
        return 0          # fork is missing or unsafe here, or there is nothing to compile
    if threading.active_count() > 1:
        return 0          # another thread could hold a lock (Numba compiles under one) that
        #                   a forked child would wait for forever
    if requested is not None:
        return requested
    return max(0, min(len(os.sched_getaffinity(0)) - 1, MAX_HELPERS))


class SharedGroups:
    """The groups' shared counter and who-took-what table, and the helper processes.

    The helpers are forked here, in the caller's thread, before the warm-up thread
    starts, and only when it is the process's one thread: a fork copies only the forking
    thread, so no lock can be caught held by another. Each helper traces the network
    itself (the trace is deterministic, so its list is the thread's list) and takes groups
    until none is left.
    """

    def __init__(self, context, helpers):
        self.next = context.Value("i", 0)
        self.taken_by = context.Array("b", RECORDED_GROUPS)     # 0: not taken, else worker + 1
        self.helpers = helpers

    @classmethod
    def start(cls, model, input_shape, dtype, count):
        if count == 0:
            return None
        context = multiprocessing.get_context("fork")
        shared = cls(context, [])
        for worker in range(1, count + 1):
            process = context.Process(target=_helper, name=f"minicnn-warm-up-{worker}",
                                      args=(model, input_shape, dtype, shared, worker),
                                      daemon=True)
            process.start()
            shared.helpers.append(process)
        return shared

    def take(self):
        """The index of the next group no worker has taken."""
        with self.next.get_lock():
            index, self.next.value = self.next.value, self.next.value + 1
        return index

    def wait_for_helpers(self):
        """Wait for the helpers (at most ``HELPER_PATIENCE_S``); stop any still running."""
        deadline = time.monotonic() + HELPER_PATIENCE_S
        for process in self.helpers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join()


def _helper(model, input_shape, dtype, shared, worker):
    """A helper process's whole life: trace, then compile groups until none is left."""
    try:
        _compile_groups(operation_groups(model, input_shape, dtype), shared, worker)
    except Exception:           # noqa: BLE001 — the thread's whole pass compiles the rest
        sys.exit(1)             # (quietly: a helper's failure is no user's concern)


def _run(model, input_shape, dtype, shared):
    thread = threading.current_thread()
    try:
        if shared is not None:
            try:
                _compile_groups(operation_groups(model, input_shape, dtype), shared, 0)
            except Exception:   # noqa: BLE001 — the whole pass below meets it again
                pass
            shared.wait_for_helpers()
            thread.taken_by = [worker - 1 for worker in shared.taken_by if worker]
        _whole_pass(model, input_shape, dtype)
    except Exception as error:     # noqa: BLE001 — reported by the first real step instead
        thread.error = error


def _private_copy(network):
    from minicnn.nn import Module, init
    if isinstance(network, Module):
        return copy.deepcopy(network)
    if not callable(network):
        raise TypeError(f"warm_up: expected a Module or a function that builds one, got "
                        f"{type(network).__name__}")
    generator = init._default_rng
    state = generator.bit_generator.state
    try:
        model = network()
    finally:
        init._default_rng = generator          # as if the build had never drawn
        generator.bit_generator.state = state
    if not isinstance(model, Module):
        raise TypeError(f"warm_up: the builder returned {type(model).__name__}, not a Module")
    return model


def _blank(input_shape, dtype):
    from minicnn.tensor import Tensor
    return Tensor(np.zeros((2,) + input_shape, dtype=dtype))   # images need no gradient


def _whole_pass(model, input_shape, dtype):
    """One forward and backward pass of the whole network, in eval mode."""
    _prepare(model, dtype)
    outputs = model(_blank(input_shape, dtype))
    _backward_of_sum(outputs)


def _prepare(model, dtype):
    model.to("cpu", dtype=np.dtype(dtype))
    model.eval()


def _backward_of_sum(outputs):
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    trainable = [y.sum() for y in outputs if y.requires_grad]
    if trainable:
        total = trainable[0]
        for term in trainable[1:]:
            total = total + term
        total.backward()


# ----------------------------------------------------------------------------- the groups

class Operation:
    """One Function call of the traced pass: the Function, and for each input either the
    shape, element type, memory order and gradient need of a tensor, or the value itself."""

    def __init__(self, function, inputs):
        self.function, self.inputs = function, inputs

    def key(self):
        return (type(self.function).__name__,) + tuple(
            spec if isinstance(spec, tuple) else ("value", repr(spec)) for spec in self.inputs)

    def replay(self):
        """Run the Function again, forward and backward, on zeros laid out as recorded."""
        from minicnn.tensor import Tensor
        inputs = [Tensor(_zeros_in_order(*spec[1:4]), requires_grad=spec[4])
                  if isinstance(spec, tuple) else spec for spec in self.inputs]
        _backward_of_sum(copy.copy(self.function)(*inputs))


def _memory_order(array):
    """The axes from the slowest-varying to the fastest in memory (C order: 0, 1, …)."""
    return tuple(sorted(range(array.ndim), key=lambda axis: -abs(array.strides[axis])))


def _zeros_in_order(shape, dtype, order):
    """Zeros of ``shape`` whose memory runs through the axes in ``order``: a channels-last
    activation seen as NCHW is laid out as it was in the network."""
    base = np.zeros([shape[axis] for axis in order], dtype=dtype)
    return base.transpose(np.argsort(order))


def operation_groups(model, input_shape, dtype=np.float32):
    """The network's operations, grouped by what they compile: a list of (family,
    [Operation, ...]) in the order the families first ran. A family is a Function type,
    for a convolution with the algorithm the chooser picks for it on the CPU
    ("Conv2d/direct"). Traced in reference mode, in this thread only."""
    from minicnn.functional.conv import Conv2d, choose_algorithm
    from minicnn.kernels.registry import thread_kernel_mode
    from minicnn.nn.module import Parameter
    from minicnn.tensor import Tensor, observe_functions

    _prepare(model, dtype)
    me, needs_grad, seen, calls = threading.get_ident(), set(), [], []

    def record(function, inputs, outputs):
        if threading.get_ident() != me:        # another thread's operation
            return
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        specs, any_grad = [], False
        for x in inputs:
            if isinstance(x, Tensor):
                grad = isinstance(x, Parameter) or id(x) in needs_grad
                any_grad |= grad
                specs.append(("tensor", tuple(x.shape), x.data.dtype, _memory_order(x.data),
                              grad))
            else:
                specs.append(x)
        if any_grad:
            needs_grad.update(id(y) for y in outputs)
        seen.extend(outputs)                   # alive until the end: ids stay unique
        calls.append(Operation(function, specs))

    with thread_kernel_mode("reference"), observe_functions(record):
        model(_blank(input_shape, dtype))
    groups, done = {}, set()
    for call in calls:
        key = call.key()
        if key in done:
            continue
        done.add(key)
        family = type(call.function).__name__
        if isinstance(call.function, Conv2d):
            family += "/" + choose_algorithm(call.function.geometry, "cpu",
                                             call.function.requested).name
        groups.setdefault(family, []).append(call)
    return list(groups.items())


def _compile_groups(groups, shared, worker):
    """Take the next group no worker has taken and replay its operations, until none is
    left. One operation that fails is skipped: the whole pass meets it again. (DenseNet's
    concatenation into its block's buffer does: on zeros its prefix is no view of the
    buffer. It compiles nothing, being NumPy slicing.)"""
    while True:
        index = shared.take()
        if index >= len(groups):
            return
        if index < RECORDED_GROUPS:
            shared.taken_by[index] = worker + 1
        for operation in groups[index][1]:
            try:
                operation.replay()
            except Exception:     # noqa: BLE001
                pass
