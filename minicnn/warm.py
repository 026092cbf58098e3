"""Compile a network's kernels in the background, while its data loads.

Numba compiles a kernel on its first call (and caches the result on disk, ``cache=True``),
so a new user's first training step waits for every kernel the network uses: LeNet-5's
took ≈ 9 CPU-seconds before the kernels were made cheaper to compile, ≈ 3.7 after. Most of
what remains can overlap with loading the data::

    warming = warm_up(lambda: architectures.create("lenet5", in_channels=1), (1, 28, 28))
    train_set, test_set = load_dataset("mnist")       # meanwhile, the kernels compile
    ...                                                # the first step finds them ready

``warm_up`` runs one forward and backward pass of the network on a blank batch of two
images in a background thread. It compiles exactly what that network's chosen path needs
(each convolution's algorithm, its pooling, its activations) for float32 on the CPU: the
kernels compile per element type and array layout, not per size, so the tiny batch
compiles what the real one will run. A call the main thread makes meanwhile waits for the
compilation in progress (Numba compiles under one lock) and never compiles twice.

Nothing of the caller's state is touched: the network is built with the weight
initializer's random state restored afterwards (the caller's own network draws the same
weights), or deep-copied when given, and run in eval mode, where nothing is drawn from the
dropout generator and batch-norm statistics are not updated (batch norm's training
kernels therefore compile at the first real step).
"""
import copy
import threading

import numpy as np


def warm_up(network, input_shape, dtype=np.float32):
    """Start compiling ``network``'s CPU kernels for inputs (N, *input_shape) of ``dtype``
    in a daemon thread; returns the thread (``.join()`` waits for it).

    ``network`` is a Module (deep-copied here) or a function of no arguments that builds
    one (called here, in the calling thread, without consuming the initializer's random
    numbers). Errors inside the thread are kept on the thread as ``.error`` and otherwise
    ignored: the first real step will raise them where the user can see them.
    """
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"warm_up: expected input_shape (channels, height, width), got "
                         f"{tuple(input_shape)!r}")
    model = _private_copy(network)
    thread = threading.Thread(target=_run_once, args=(model, tuple(input_shape), dtype),
                              name="minicnn-warm-up", daemon=True)
    thread.error = None
    thread.start()
    return thread


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


def _run_once(model, input_shape, dtype):
    from minicnn.tensor import Tensor
    try:
        model.to("cpu", dtype=np.dtype(dtype))
        model.eval()
        blank = Tensor(np.zeros((2,) + input_shape, dtype=dtype), requires_grad=True)
        outputs = model(blank)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        loss = outputs[0].sum()
        for output in outputs[1:]:
            loss = loss + output.sum()
        loss.backward()
    except Exception as error:     # noqa: BLE001 — reported by the first real step instead
        threading.current_thread().error = error
