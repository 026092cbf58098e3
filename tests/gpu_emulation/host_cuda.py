"""CUDA C compiled for the host: ``RawKernel`` and ``ElementwiseKernel`` as CuPy has them.

A kernel's source goes to g++ behind ``prelude.h`` (which gives it ``__global__``,
``blockIdx``/``threadIdx``, ``__syncthreads``, ``atomicAdd`` and CUDA's math), together
with a launcher generated from the kernel's own parameter list. The shared library is
cached under a temporary folder by the hash of everything compiled, so the suite pays
for each source once per machine, not once per run.

A launch is checked before it runs, argument by argument against the parameter list,
the way a real GPU would punish a mistake — silently, with wrong numbers:

* a ``T*`` needs a C-contiguous ``cupy.ndarray`` of exactly T's dtype (a float64 array
  handed to a ``float*`` would be read as twice as many wrong numbers);
* an ``int`` needs ``numpy.int32`` (a Python ``int`` is passed by CuPy as 64 bits);
* the count must match, the block must hold at most 1024 threads.

Then every thread of the grid runs (see prelude.h for how ``__syncthreads`` is kept), each
pointer parameter compiled as a bounds-checked array: an index outside its array is an
``IndexError`` naming the kernel, the parameter, the index and the thread, where a GPU
would read garbage or write over a neighbour.
"""
import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

PRELUDE = Path(__file__).with_name("prelude.h")
CACHE = Path(tempfile.gettempdir()) / f"minicnn-host-cuda-{os.getuid()}"
COMPILER = ["g++", "-std=c++20", "-O2", "-shared", "-fPIC", "-w"]

#: C parameter types a launch may pass, and what must arrive for each from Python
SCALAR_TYPES = {
    "int": np.int32, "unsigned int": np.uint32, "long long": np.int64,
    "unsigned long long": np.uint64, "float": np.float32, "double": np.float64,
}
TYPE_NAMES = {np.dtype(v): k for k, v in SCALAR_TYPES.items()}
# CuPy's names for the types of ElementwiseKernel parameters
CUPY_TYPES = {"int32": "int", "uint32": "unsigned int", "int64": "long long",
              "uint64": "unsigned long long", "float32": "float", "float64": "double"}

_libraries = {}


class HostCompileError(RuntimeError):
    """g++ refused a kernel source; the message holds its diagnostics."""


def _library(source):
    """The loaded shared library built from ``source`` (compiled once, cached by hash)."""
    text = f'#include "{PRELUDE}"\n{source}'
    digest = hashlib.sha256((PRELUDE.read_text() + text + " ".join(COMPILER)).encode())
    key = digest.hexdigest()[:24]
    if key not in _libraries:
        CACHE.mkdir(exist_ok=True)
        library = CACHE / f"{key}.so"
        if not library.exists():
            unit = CACHE / f"{key}.{os.getpid()}.cpp"
            unit.write_text(text)
            built = CACHE / f"{key}.{os.getpid()}.so"
            result = subprocess.run([*COMPILER, str(unit), "-o", str(built)],
                                    capture_output=True, text=True)
            unit.unlink()
            if result.returncode != 0:
                raise HostCompileError(f"g++ could not compile the kernel:\n{result.stderr}")
            os.replace(built, library)            # atomic: a parallel run sees all or nothing
        _libraries[key] = ctypes.CDLL(str(library))
    return _libraries[key]


# ============================================================================ RawKernel

class Parameter:
    """One parameter of a ``__global__`` function: its C type and what it points to."""

    def __init__(self, text, typedefs):
        self.const = bool(re.search(r"\bconst\b", text))
        declaration = re.sub(r"\b(const|__restrict__|__restrict)\b", " ", text)
        match = re.fullmatch(r"\s*([\w\s]+?)\s*(\*?)\s*(\w+)\s*", declaration)
        if match is None:
            raise HostCompileError(f"cannot read the kernel parameter {text.strip()!r}")
        element, star, self.name = match.groups()
        element = " ".join(typedefs.get(element, element).split())
        if element not in SCALAR_TYPES:
            raise HostCompileError(f"parameter {self.name}: unknown type {element!r}")
        self.pointer = bool(star)
        self.dtype = np.dtype(SCALAR_TYPES[element])
        self.c_type = element + ("*" if star else "")
        self.element = ("const " if self.const else "") + element

    def declaration(self):
        """The parameter as the emulation compiles it: pointers become checked arrays."""
        if self.pointer:
            return f"host_array<{self.element}> {self.name}"
        return f"{self.element} {self.name}"

    def argument(self, index):
        """The C++ expression that reads argument ``index`` in the launcher."""
        if self.pointer:
            return (f"host_array<{self.element}>{{*({self.element}**)args[{index}], "
                    f"extents[{index}], {index}}}")
        return f"*({self.c_type}*)args[{index}]"

    def check(self, index, argument, ndarray):
        where = f"argument {index} ({self.name}, {self.c_type})"
        if self.pointer:
            if not isinstance(argument, ndarray):
                raise TypeError(f"{where}: expected a cupy.ndarray, got {type(argument).__name__}")
            if argument.dtype != self.dtype:
                raise TypeError(f"{where}: expected an array of {self.dtype}, got {argument.dtype}")
            if not argument.flags.c_contiguous:
                raise ValueError(f"{where}: the array is not C-contiguous; a raw kernel indexes "
                                 f"its memory as if it were")
            return np.array([argument.ctypes.data], dtype=np.uintp)
        if not (isinstance(argument, np.generic) and argument.dtype == self.dtype):
            got = (f"numpy.{argument.dtype}" if isinstance(argument, np.generic)
                   else type(argument).__name__)
            raise TypeError(f"{where}: expected numpy.{self.dtype}, got {got}")
        return np.array([argument], dtype=self.dtype)


def _typedefs(source):
    return {alias: target for target, alias in
            re.findall(r"typedef\s+([\w\s]+?)\s+(\w+)\s*;", source)}


class RawKernel:
    """``cupy.RawKernel(source, name)``: call with ``(grid, block, args)``."""

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False):
        match = re.search(rf"__global__\s+void\s+{name}\s*\((.*?)\)\s*{{", code, re.S)
        if match is None:
            raise HostCompileError(f"no __global__ void {name}(...) in the source")
        self.name = name
        typedefs = _typedefs(code)
        self.parameters = [Parameter(p, typedefs) for p in match.group(1).split(",")]
        checked = ", ".join(p.declaration() for p in self.parameters)
        self.code = code[:match.start(1)] + checked + code[match.end(1):]
        self.uses_barriers = "__syncthreads" in code
        self._launch = None

    def _build(self):
        code = self.code
        arguments = ", ".join(p.argument(i) for i, p in enumerate(self.parameters))
        if self.uses_barriers:
            # the kernel becomes a coroutine: one per thread, suspended at each barrier
            code = re.sub(rf'(?:extern\s+"C"\s+)?__global__\s+void\s+{self.name}\s*\(',
                          f"__global__ host_block_thread {self.name}(", code)
            code = re.sub(r"\breturn\s*;", "co_return;", code)
            body = (f"return host_run_grid_with_barriers(grid, block, "
                    f"[&] {{ return {self.name}({arguments}); }});")
        else:
            body = f"host_run_grid(grid, block, [&] {{ {self.name}({arguments}); }}); return 0;"
        launcher = (f'\nextern "C" int host_launch(unsigned gx, unsigned gy, unsigned gz, '
                    f'unsigned bx, unsigned by, unsigned bz, void** args, '
                    f'const long long* extents) {{\n'
                    f'    dim3 grid{{gx, gy, gz}}, block{{bx, by, bz}};\n'
                    f'    host_first_violation.parameter = -1;\n    {body}\n}}\n'
                    + _VIOLATION_REPORT)
        library = _library(code + launcher)
        self._launch, self._violation = library.host_launch, library.host_violation_report
        self._launch.restype = ctypes.c_int

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        from tests.gpu_emulation.fake_cupy import ndarray
        grid, block = _dimensions("grid", grid), _dimensions("block", block)
        if block[0] * block[1] * block[2] > 1024:
            raise ValueError(f"{self.name}: a block holds at most 1024 threads, got {block}")
        if not isinstance(args, tuple):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.name}: the kernel takes {len(self.parameters)} arguments, "
                            f"the launch passes {len(args)}")
        values = [p.check(i, a, ndarray) for i, (p, a) in enumerate(zip(self.parameters, args))]
        if self._launch is None:
            self._build()
        # as cuLaunchKernel takes them: the address of each argument's value
        pointers = (ctypes.c_void_p * len(values))(*(v.ctypes.data for v in values))
        extents = np.array([a.size if p.pointer else 0 for p, a in zip(self.parameters, args)],
                           dtype=np.int64)
        if self._launch(*grid, *block, pointers, extents.ctypes.data_as(ctypes.c_void_p)):
            raise RuntimeError(f"{self.name}: threads of one block disagreed on "
                               f"__syncthreads() (some returned while others waited)")
        self._check_bounds()

    def _check_bounds(self):
        report = np.zeros(9, dtype=np.int64)
        self._violation(report.ctypes.data_as(ctypes.c_void_p))
        parameter, index, extent, *where = report.tolist()
        if parameter >= 0:
            raise IndexError(f"{self.name}: thread {tuple(where[3:])} of block "
                             f"{tuple(where[:3])} accessed {self.parameters[parameter].name}"
                             f"[{index}], outside its {extent} elements")


_VIOLATION_REPORT = """
extern "C" int host_violation_report(long long* report) {
    const host_violation& v = host_first_violation;
    long long values[9] = {v.parameter, v.index, v.extent, v.block.x, v.block.y, v.block.z,
                           v.thread.x, v.thread.y, v.thread.z};
    for (int i = 0; i < 9; ++i) report[i] = values[i];
    return v.parameter;
}
"""


def _dimensions(what, value):
    value = (value,) if isinstance(value, int) else tuple(value)
    if not 1 <= len(value) <= 3 or not all(isinstance(v, (int, np.integer)) and v >= 1
                                          for v in value):
        raise ValueError(f"{what} must be 1 to 3 positive integers, got {value}")
    return tuple(int(v) for v in value) + (1,) * (3 - len(value))


# ============================================================================ ElementwiseKernel

class ElementwiseKernel:
    """``cupy.ElementwiseKernel(in_params, out_params, operation, name, preamble=...)``.

    As in CuPy: arrays are broadcast against each other, the type names (``T``) are bound
    by the arguments (every argument bound to one name must agree), ``i`` is the element's
    index, inputs are read-only values and outputs references into the arrays. Strided
    arrays are fine (each is indexed through its strides)."""

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="",
                 **options):
        self.inputs = self._parse(in_params)
        self.outputs = self._parse(out_params)
        self.operation, self.name, self.preamble = operation, name, preamble
        self._compiled = {}

    @staticmethod
    def _parse(params):
        parsed = []
        for text in filter(None, (p.strip() for p in params.split(","))):
            words = text.split()
            if len(words) != 2:
                raise ValueError(f"cannot read the parameter {text!r}")
            parsed.append(tuple(words))                           # (type, name)
        return parsed

    def _bind(self, arguments, ndarray):
        """{type name: dtype} from the arguments, refusing disagreement as CuPy does."""
        bound = {}
        for (kind, name), argument in zip(self.inputs + self.outputs, arguments):
            if kind in CUPY_TYPES:
                continue
            dtype = np.dtype(argument.dtype) if hasattr(argument, "dtype") else None
            if dtype is None:
                continue                                          # a Python number: weak
            if bound.setdefault(kind, dtype) != dtype:
                raise TypeError(f"{self.name}: type {kind} is bound to {bound[kind]} and "
                                f"{dtype} by argument {name}")
        return bound

    def __call__(self, *arguments):
        from tests.gpu_emulation.fake_cupy import ndarray
        parameters = self.inputs + self.outputs
        if len(arguments) != len(parameters):
            raise TypeError(f"{self.name}: takes {len(parameters)} arguments, "
                            f"got {len(arguments)}")
        for (kind, name), argument in zip(parameters, arguments):
            if isinstance(argument, np.ndarray) and not isinstance(argument, ndarray):
                raise TypeError(f"{self.name}: argument {name} is a numpy.ndarray; "
                                f"a GPU kernel takes cupy arrays")
        for (kind, name), argument in zip(self.outputs, arguments[len(self.inputs):]):
            if not isinstance(argument, ndarray):
                raise TypeError(f"{self.name}: output {name} must be a cupy.ndarray")
        bound = self._bind(arguments, ndarray)
        arrays = [a for a in arguments if isinstance(a, ndarray)]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        if any(a.shape != shape for a in arguments[len(self.inputs):]):
            raise ValueError(f"{self.name}: outputs must have the broadcast shape {shape}")
        unbound = {kind for kind, _ in parameters if kind not in CUPY_TYPES} - set(bound)
        if unbound:
            raise TypeError(f"{self.name}: nothing binds the type {sorted(unbound)[0]}")
        c_types = {kind: TYPE_NAMES[dtype] for kind, dtype in bound.items()}
        c_types.update(CUPY_TYPES)
        signature = tuple(sorted(c_types.items()))
        if signature not in self._compiled:
            self._compiled[signature] = self._build(c_types)
        run = self._compiled[signature]
        storage, pointers, strides = [], [], []
        for (kind, name), argument in zip(parameters, arguments):
            dtype = np.dtype(SCALAR_TYPES[c_types[kind]])
            if isinstance(argument, ndarray):
                view = np.broadcast_to(argument.view(np.ndarray), shape)
                pointers.append(view.ctypes.data)
                strides.append(view.strides or (0,))
            else:
                value = np.array(argument, dtype=dtype).reshape(1)
                storage.append(value)
                pointers.append(value.ctypes.data)
                strides.append((0,) * max(len(shape), 1))
        ndim = max(len(shape), 1)
        extents = np.array(shape or (1,), dtype=np.int64)
        stride_table = np.array([list(s) for s in strides], dtype=np.int64).reshape(-1, ndim)
        run(ctypes.c_longlong(int(np.prod(shape))), ctypes.c_int(ndim),
            extents.ctypes.data_as(ctypes.c_void_p),
            (ctypes.c_void_p * len(pointers))(*pointers),
            stride_table.ctypes.data_as(ctypes.c_void_p))
        outputs = arguments[len(self.inputs):]
        return outputs[0] if len(outputs) == 1 else outputs

    def _build(self, c_types):
        typedefs = "".join(f"    typedef {c} {kind};\n" for kind, c in c_types.items())
        reads = []
        for index, (kind, name) in enumerate(self.inputs + self.outputs):
            reference = "&" if index >= len(self.inputs) else ""
            qualifier = "" if reference else "const "
            reads.append(f"        {qualifier}{kind}{reference} {name} = *({kind}*)"
                         f"((char*)args[{index}] + offset(i, ndim, shape, "
                         f"strides + {index} * ndim));")
        source = (self.preamble + "\n"
                  "static long long offset(long long i, int ndim, const long long* shape,\n"
                  "                        const long long* strides) {\n"
                  "    long long at = 0;\n"
                  "    for (int d = ndim - 1; d >= 0; --d) { at += (i % shape[d]) * strides[d];"
                  " i /= shape[d]; }\n"
                  "    return at;\n}\n"
                  'extern "C" void host_elementwise(long long size, int ndim, const long long* '
                  "shape, void** args, const long long* strides) {\n"
                  + typedefs +
                  "    for (long long i = 0; i < size; ++i) {\n"
                  + "\n".join(reads) + "\n"
                  f"        {self.operation};\n    }}\n}}\n")
        function = _library(source).host_elementwise
        function.restype = None
        return function
