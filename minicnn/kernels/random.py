"""Counter-based uniform random numbers for the GPU: element i of a draw is a pure
function of (seed, i).

    z = seed + (i + 1)·φ      (φ = 0x9E3779B97F4A7C15, the golden ratio in 64 bits)
    z = (z ⊕ z≫30)·0xBF58476D1CE4E5B9;   z = (z ⊕ z≫27)·0x94D049BB133111EB;   z = z ⊕ z≫31
    u = (z ≫ 40)·2⁻²⁴ (float32)   or   (z ≫ 11)·2⁻⁵³ (float64),   in [0, 1)

— SplitMix64 (Steele, Lea & Flood 2014), all arithmetic mod 2⁶⁴. Every thread computes
its own element, so a draw is one launch with no generator state on the device at all:
whoever holds the seed holds the draw. Dropout on the GPU takes each call's seed from
its host generator (``minicnn.functional.dropout``), whose state checkpoints save — so a
resumed GPU run draws the same masks, which CuPy's global generator could not promise.

``counter_uniform_reference`` is the same arithmetic in NumPy (the documentation, and
what the tests hold the CUDA source to, compiled for the host).
"""
import math

import numpy as np

from minicnn.backend import cupy_or_none
from minicnn.kernels import _gpu

GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def counter_uniform_reference(seed, shape, dtype):
    """Uniform [0, 1) numbers of ``shape`` and ``dtype`` (float32 or float64) from ``seed``."""
    index = np.arange(1, math.prod(shape) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):                     # mod 2⁶⁴ is the point
        z = np.uint64(seed) + index * np.uint64(GOLDEN_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    z ^= z >> np.uint64(31)
    if np.dtype(dtype) == np.float32:
        u = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    else:
        u = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return u.reshape(shape)


_COUNTER_UNIFORM_CUDA = _gpu.register("counter_uniform", r"""
template <typename Real>
__device__ Real counter_uniform(const unsigned long long seed, const unsigned long long i) {
    unsigned long long z = seed + (i + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return sizeof(Real) == 4 ? Real((z >> 40) * (1.0 / 16777216.0))
                             : Real((z >> 11) * (1.0 / 9007199254740992.0));
}
""")


def counter_uniform_cuda(seed, shape, dtype):
    """``counter_uniform_reference`` as one CuPy launch, into a new array on the GPU."""
    out = cupy_or_none().empty(shape, dtype=dtype)
    _gpu.elementwise("minicnn_counter_uniform", "uint64 seed", "T u",
                     "u = counter_uniform<T>(seed, (unsigned long long)i)",
                     preamble=_COUNTER_UNIFORM_CUDA)(np.uint64(seed), out)
    return out
