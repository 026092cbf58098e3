"""A stand-in ``cupy`` whose arrays live in host memory: the module the emulated GPU runs on.

``ndarray`` is a subclass of ``numpy.ndarray`` whose ``__module__`` is ``"cupy"``, so
``minicnn.backend.get_array_module`` and ``device_of`` route it to every GPU code path,
while its arithmetic runs in NumPy. What CuPy refuses, it refuses too, so a GPU path that
mixes devices fails here as it would on a GPU:

* a NumPy array in a ufunc, a ``cupy.*`` function or a NumPy function together with a
  ``cupy.ndarray`` is a ``TypeError`` (CuPy never copies implicitly);
* reductions and scalar indexing return 0-d arrays, not NumPy scalars, as CuPy does.

* a NumPy array assigned into part of a ``cupy.ndarray`` is a ``TypeError`` (CuPy copies
  one in only whole: ``gpu[...] = host``).

Blind spots, said plainly: ``numpy.asarray(gpu_array)`` and ``host[...] = gpu_array``
succeed here (NumPy gives a subclass no hook to refuse them) where CuPy raises;
``.get()``/``cupy.asnumpy`` are the spellings that work on both.

Kernels: ``RawKernel`` and ``ElementwiseKernel`` compile their CUDA C for the host
(``host_cuda``). Device queries, streams and the memory pool answer as one small GPU.
"""
import functools
import threading
import types
import weakref

import numpy as np

from tests.gpu_emulation.host_cuda import ElementwiseKernel, RawKernel  # noqa: F401  (cupy.*)

__version__ = "13.0.0+host-emulation"


def _is_host_array(value):
    return isinstance(value, np.ndarray) and not isinstance(value, ndarray)


def _refuse_host_arrays(where, values):
    for value in values:
        if _is_host_array(value) or (isinstance(value, (list, tuple))
                                     and any(_is_host_array(v) for v in value)):
            raise TypeError(f"{where}: got a numpy.ndarray where CuPy takes cupy.ndarray "
                            f"(CuPy does not copy between devices implicitly: cupy.asarray "
                            f"or .get() first)")


def _host_view(value):
    return value.view(np.ndarray) if isinstance(value, ndarray) else value


def _on_device(result):
    """What CuPy returns for ``result``: arrays on the device, scalars as 0-d arrays."""
    if isinstance(result, np.ndarray):
        if isinstance(result, ndarray):
            return result
        if result.base is None:                   # fresh memory: the pool hands it out
            _memory_pool.allocated(result)
        return result.view(ndarray)
    if isinstance(result, np.generic) and not isinstance(result, (np.bytes_, np.str_)):
        return np.asarray(result).view(ndarray)
    if isinstance(result, tuple):
        return tuple(_on_device(r) for r in result)
    if isinstance(result, list):
        return [_on_device(r) for r in result]
    return result


_dispatch = threading.local()
_dispatch.depth = 0


class ndarray(np.ndarray):
    """``cupy.ndarray``: a NumPy array that the library treats as living on the GPU."""

    __module__ = "cupy"                # what minicnn.backend looks at to tell the device

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if _dispatch.depth == 0:
            _refuse_host_arrays(f"cupy.{ufunc.__name__}", inputs + tuple(out or ()))
        if out is not None:
            kwargs["out"] = tuple(_host_view(o) for o in out)
        result = getattr(ufunc, method)(*(_host_view(x) for x in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _on_device(result)

    def __array_function__(self, function, types, args, kwargs):
        # Only the outermost call is the caller's: NumPy's own implementations mix in host
        # temporaries (zeros_like copies a host zero into its result), which CuPy's do not.
        if _dispatch.depth == 0 and any(not issubclass(t, ndarray) and issubclass(t, np.ndarray)
                                        for t in types):
            raise TypeError(f"numpy.{function.__name__}: got a numpy.ndarray where CuPy takes "
                            f"cupy.ndarray (CuPy does not copy between devices implicitly)")
        _dispatch.depth += 1
        try:
            return _on_device(super().__array_function__(function, types, args, kwargs))
        finally:
            _dispatch.depth -= 1

    def __array_finalize__(self, source):
        if self.base is None and source is not None:   # a copy made by an array method
            _memory_pool.allocated(self)

    def __getitem__(self, index):
        return _on_device(super().__getitem__(index))

    def __setitem__(self, index, value):
        # CuPy copies a host array in only as ``gpu[:] = host`` (or ``gpu[...] = host``)
        whole = index is Ellipsis or (isinstance(index, slice) and index == slice(None))
        if _is_host_array(value) and value.ndim > 0 and not whole:
            raise TypeError("cupy.ndarray.__setitem__: a numpy.ndarray can only be copied "
                            "in whole (gpu[...] = host); cupy.asarray it first")
        super().__setitem__(index, value)

    def get(self, stream=None, order="C", out=None):
        """A copy in host memory (``numpy.ndarray``)."""
        host = np.array(self.view(np.ndarray), order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, array, stream=None):
        self.view(np.ndarray)[...] = array

    @property
    def device(self):
        return cuda.Device(0)


# ============================================================================ functions

# Host arrays may enter the device through these (a copy, as cupy.asarray makes); every
# other function, ascontiguousarray included, takes device arrays only, as in CuPy.
_TRANSFERS = {"asarray", "array", "asanyarray"}


def _device_function(name, function):
    @functools.wraps(function)
    def on_device(*args, **kwargs):
        if name not in _TRANSFERS:
            _refuse_host_arrays(f"cupy.{name}", args + tuple(kwargs.values()))
        if name in _TRANSFERS and args and _is_host_array(args[0]):
            args = (np.array(args[0], copy=True),) + args[1:]   # a transfer copies
        return _on_device(function(*args, **kwargs))
    return on_device


class _Ufunc:
    """A NumPy ufunc as a CuPy one: refuses host arrays, returns device arrays."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        _refuse_host_arrays(f"cupy.{self.__name__}", args)
        if not any(isinstance(a, ndarray) for a in args):
            args = tuple(np.asarray(a).view(ndarray) if isinstance(a, (int, float, np.generic))
                         else a for a in args)
        return _on_device(self._ufunc(*args, **kwargs))

    def __getattr__(self, method):
        attribute = getattr(self._ufunc, method)
        return _device_function(f"{self.__name__}.{method}", attribute) if callable(attribute) \
            else attribute


def __getattr__(name):
    """Every other ``cupy.name``: NumPy's, made to keep its arrays on the device."""
    attribute = getattr(np, name)
    if isinstance(attribute, np.ufunc):
        wrapped = _Ufunc(attribute)
    elif callable(attribute) and not isinstance(attribute, type):
        wrapped = _device_function(name, attribute)
    else:
        return attribute                          # dtypes, constants, finfo, ...
    globals()[name] = wrapped
    return wrapped


def asnumpy(array, stream=None, order="C", out=None):
    """``cupy.asnumpy``: a host copy of a device array; host arrays pass through."""
    if isinstance(array, ndarray):
        return array.get(order=order, out=out)
    return np.asarray(array, order=order)


def get_array_module(*arrays):
    import sys
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in arrays) else np


# ====================================================================== device, streams, memory

class _Stream:
    null = None

    def __init__(self, non_blocking=False):
        pass

    def synchronize(self):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        return False


class _Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        pass

    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


class _Device:
    def __init__(self, device=0):
        if device not in (0, None):
            raise ValueError(f"the emulated GPU has one device (0), not {device}")
        self.id = 0

    def use(self):
        pass

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        return False


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDeviceProperties(device):
        return {"name": b"host emulation of a CUDA GPU", "totalGlobalMem": 16 * 2**30,
                "multiProcessorCount": 1, "major": 9, "minor": 0}

    @staticmethod
    def runtimeGetVersion():
        return 12040

    @staticmethod
    def deviceSynchronize():
        pass


class _MemoryPool:
    """CuPy's pool, as far as it shows: ``used_bytes`` is the memory of live arrays;
    ``total_bytes`` also holds what freed arrays gave back (the pool keeps it for reuse,
    so it is the peak since the last ``free_all_blocks``). No block rounding here."""

    def __init__(self):
        self._used = self._total = 0

    def allocated(self, owner):
        self._used += owner.nbytes
        self._total = max(self._total, self._used)
        weakref.finalize(owner, self._freed, owner.nbytes)

    def _freed(self, nbytes):
        self._used -= nbytes

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._total

    def free_all_blocks(self):
        self._total = self._used

    def set_limit(self, size=None, fraction=None):
        pass


_memory_pool, _pinned_pool = _MemoryPool(), _MemoryPool()

cuda = types.SimpleNamespace(
    runtime=_Runtime(), Device=_Device, Stream=_Stream, Event=_Event,
    get_current_stream=lambda device=None: _Stream(), MemoryPool=_MemoryPool,
    is_available=lambda: True)


def get_default_memory_pool():
    return _memory_pool


def get_default_pinned_memory_pool():
    return _pinned_pool


# ============================================================================ cupyx

def _scatter_add(target, index, values):
    """``cupyx.scatter_add``: target[index] += values, repeated indices accumulating."""
    _refuse_host_arrays("cupyx.scatter_add", (target, values))
    if not isinstance(target, ndarray):
        raise TypeError(f"cupyx.scatter_add: target must be a cupy.ndarray, "
                        f"got {type(target).__name__}")
    np.add.at(target.view(np.ndarray), _host_view(index) if not isinstance(index, tuple)
              else tuple(_host_view(i) for i in index), _host_view(values))


cupyx = types.ModuleType("cupyx")
cupyx.scatter_add = _scatter_add
