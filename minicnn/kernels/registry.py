"""One way to pick a kernel: each is registered once with its three versions.

    im2col = register_kernel("im2col", reference=im2col_reference,
                             numba=im2col_numba, cuda=im2col_cuda)
    cols = im2col(x, ...)            # picks the version for x's device and the mode

Which version runs
------------------
* mode ``"fast"`` (the default): CuPy arrays go to ``cuda``, NumPy arrays to ``numba``.
  A kernel without a version for a device runs its ``reference`` there (the references
  are written with ``xp = get_array_module(x)``, so they run on either).
* mode ``"reference"``: every kernel runs its plain NumPy reference — a whole network,
  forward and backward, in code that reads like the formulas. Set it for a process with
  ``MINICNN_KERNELS=reference``, or for a block::

      with kernel_mode("reference"):
          loss = criterion(model(x), y); loss.backward()

The registry (``KERNELS``) is also what the tests walk: every kernel's ``numba`` and
``cuda`` versions are held to its ``reference``.
"""
import contextlib
import os
import threading

from minicnn.backend import device_of

MODES = ("fast", "reference")


def _mode_from_environment():
    mode = os.environ.get("MINICNN_KERNELS", "fast").strip().lower() or "fast"
    if mode not in MODES:
        raise ValueError(f"MINICNN_KERNELS must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


_mode = _mode_from_environment()
# One thread's own mode, over the process's (``thread_kernel_mode``): the warm-up thread
# traces a network in reference mode while the main thread's kernels stay fast.
_this_thread = threading.local()

#: every registered kernel, by name
KERNELS = {}


def current_mode():
    """``"fast"`` or ``"reference"``: which versions kernels run now (in this thread)."""
    return getattr(_this_thread, "mode", None) or _mode


@contextlib.contextmanager
def kernel_mode(mode):
    """Inside the block, run every kernel in ``mode`` (``"fast"`` or ``"reference"``), in
    every thread (the threads a batch is split over run the same versions)."""
    global _mode
    _check_mode(mode, "kernel_mode")
    previous, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = previous


@contextlib.contextmanager
def thread_kernel_mode(mode):
    """Like ``kernel_mode``, for the calling thread only; other threads keep theirs."""
    _check_mode(mode, "thread_kernel_mode")
    previous, _this_thread.mode = getattr(_this_thread, "mode", None), mode
    try:
        yield
    finally:
        _this_thread.mode = previous


def _check_mode(mode, caller):
    if mode not in MODES:
        raise ValueError(f"{caller}: expected one of {', '.join(MODES)}, got {mode!r}")


class Kernel:
    """A kernel's versions under one name; calling it runs the one that fits.

    ``reference(*args)`` is required; ``numba`` and ``cuda`` take the same arguments and
    return the same results (the tests check it). ``device_argument`` names the argument whose
    array decides the device (the first by default).
    """

    def __init__(self, name, reference, numba=None, cuda=None, device_argument=0):
        self.name, self.reference, self.numba, self.cuda = name, reference, numba, cuda
        self.device_argument = device_argument

    def version(self, on_gpu):
        """The function that runs for an array on the GPU (``on_gpu``) or the CPU."""
        if current_mode() == "reference":
            return self.reference
        fast = self.cuda if on_gpu else self.numba
        return fast if fast is not None else self.reference

    def __call__(self, *args, **kwargs):
        on_gpu = device_of(args[self.device_argument]) == "gpu"
        return self.version(on_gpu)(*args, **kwargs)

    def __repr__(self):
        versions = [v for v in ("reference", "numba", "cuda") if getattr(self, v) is not None]
        return f"Kernel({self.name!r}, versions={versions})"


def register_kernel(name, reference, numba=None, cuda=None, device_argument=0):
    """Register a kernel once with its versions; returns the dispatching ``Kernel``."""
    if name in KERNELS:
        raise ValueError(f"kernel {name!r} is registered twice")
    KERNELS[name] = Kernel(name, reference, numba, cuda, device_argument)
    return KERNELS[name]
