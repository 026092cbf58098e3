"""Two process-wide settings that decide CPU speed more than any kernel does.

minicnn runs NumPy's BLAS (OpenBLAS threads) and Numba's parallel kernels (OpenMP threads)
one after the other on the same cores, and allocates fresh arrays for every activation and
gradient of every step. Left at their defaults, both habits cost more than the arithmetic.
Both settings are applied once, when ``minicnn`` is imported, and a value the user has set
in the environment always wins.

1. **Idle OpenMP threads sleep at once** (``OMP_WAIT_POLICY=PASSIVE``). By default a Numba
   worker thread spins after its kernel, waiting for more work, and holds the core that the
   next GEMM's OpenBLAS thread needs (and OpenBLAS's spinning threads do the same to the
   next kernel). On 2 cores, LeNet-5 training at batch 64 went from ≈ 1,100 to ≈ 6,000
   images/s. OpenMP reads the variable when its runtime loads, which is at the first
   parallel kernel, after this module has run.

2. **Freed arrays stay in the process** (glibc ``mallopt``). glibc hands blocks above a
   threshold (128 KB at first, adapting up to 32 MB) straight back to the kernel when they
   are freed, so the next step's arrays of the same size arrive as fresh pages, each
   zero-filled by the kernel on first touch. LeNet-5 at batch 256 took 3,600 such page
   faults per step — 14 MB, the step's whole working set — and ran 32 ms per step instead
   of 19 ms. Serving every block up to 32 MB from the heap, and not trimming the heap, lets
   each step reuse the memory of the one before. Peak memory is unchanged: it is the same
   working set, kept instead of returned and faulted back in. Blocks above 32 MB (the
   largest column matrices) still come from the kernel; their arithmetic dwarfs the cost.
   The environment variables ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` override
   it, as they would for any program; on a system without glibc nothing is changed.
"""
import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3        # glibc's mallopt parameter numbers
MMAP_THRESHOLD = 32 << 20                           # glibc's largest allowed value
TRIM_THRESHOLD = 1 << 30


def quiet_openmp_threads():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_memory():
    """Ask glibc to reuse freed blocks up to 32 MB; True when it agreed."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        gnu_libc = libc.gnu_get_libc_version      # only glibc has both
    except (OSError, AttributeError, TypeError):
        return False
    del gnu_libc
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def configure():
    quiet_openmp_threads()
    return keep_freed_memory()
