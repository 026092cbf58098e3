"""Direct convolution for layers with few input channels, or few per group: no column
matrix at all.

Notation as in im2col.py; the weight is laid out as taps, channels-last,
``w_taps (KH, KW, C/G, CO)`` — the same numbers as im2col's ``wmat (G, K, CO/G)``, with
the groups' output channels side by side. Output channel o belongs to group
γ(o) = o // (CO/G) and reads the input channels γ(o)·C/G + c, c < C/G::

    y[n, oh, ow, o]    = Σ_{i,j,c} x[n, oh·SH − PH + i·DH, ow·SW − PW + j·DW, γ(o)·C/G + c] · w_taps[i, j, c, o]

    gx[n, ih, iw, γ·C/G + c] = Σ_{oh,ow,i,j, o in group γ : window (oh, ow) reads (ih, iw) at tap (i, j)}
                             gy[n, oh, ow, o] · w_taps[i, j, c, o]
    gw_taps[i, j, c, o] = Σ_{n,oh,ow} gy[n, oh, ow, o] · x[n, oh·SH − PH + i·DH, ow·SW − PW + j·DW, γ(o)·C/G + c]

(x outside the input reads as 0: the padding.)

Why: with one input channel (LeNet-5's first layer, a grayscale stem) im2col writes KH·KW
copies of every pixel — 25 for a 5×5 kernel — to feed a GEMM whose other side has only
CO = 6 columns, a shape BLAS handles badly (its kernels are blocked for wide matrices).
Here, at stride 1, each tap of each channel is one multiply-add of two contiguous runs
(see "cpu (Numba)" below), which the compiler turns into SIMD. On LeNet-5's first layer at
batch 64 (one thread) the forward takes ≈0.65–0.8 ms against ≈0.95 ms for im2col + GEMM,
with no 3.7 MB column matrix. With groups (ResNeXt's 32 of 4 channels) im2col copies
runs of only C/G values — 4 floats, one short loop each — and the loops over them cost
more than the GEMMs: there the direct kernels win while an output plane is large (see
``GROUPED_DIRECT_MIN_RUN`` in functional/conv.py).

Threads: the Numba kernels are plain serial loops over a range of samples (``nogil``),
run on one block of samples per thread by ``threads.over_blocks``. Samples share nothing
in y and gx, so blocks never write the same memory; the weight gradient is summed from one
partial per block.
"""
import numpy as np
from numba import njit

from minicnn.backend import get_array_module
from minicnn.kernels.registry import register_kernel
from minicnn.kernels.threads import over_blocks


# ----------------------------------------------------------------------------- reference

def _window(padded, i, j, g):
    """The input values tap (i, j) reads for every output position: (N, OH, OW, C)."""
    top, left = i * g.DH, j * g.DW
    return padded[:, top:top + g.SH * (g.OH - 1) + 1:g.SH,
                  left:left + g.SW * (g.OW - 1) + 1:g.SW, :]


def _padded(x, g):
    return get_array_module(x).pad(x, ((0, 0), (g.PH, g.PH), (g.PW, g.PW), (0, 0)))


def _grouped(values, g):
    """(..., C) -> (..., G, C/G): the channels of each group side by side."""
    return values.reshape(values.shape[:-1] + (g.G, g.C // g.G))


def _tap_by_group(w_tap, g):
    """w_taps[i, j] (C/G, CO) -> (G, C/G, CO/G): each group's own block of the weight."""
    return w_tap.reshape(g.C // g.G, g.G, g.CO // g.G).transpose(1, 0, 2)


def forward_reference(x, w_taps, geometry):
    """Plain NumPy: for every tap, the strided slice it reads times that tap's weights,
    group by group (one group: a plain (C, CO) product)."""
    g, xp = geometry, get_array_module(x)
    padded = _padded(x, g)
    y = xp.zeros((g.N, g.OH, g.OW, g.G, g.CO // g.G), dtype=x.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            window = _grouped(_window(padded, i, j, g), g)           # (N, OH, OW, G, C/G)
            y += xp.einsum("nhwgc,gco->nhwgo", window, _tap_by_group(w_taps[i, j], g))
    return y.reshape(g.N, g.OH, g.OW, g.CO)


def backward_input_reference(gy, w_taps, geometry):
    """Plain NumPy: each tap sends gy @ w_tapsᵀ (group by group) back to the slice it
    read, then crop."""
    g, xp = geometry, get_array_module(gy)
    padded = xp.zeros((g.N, g.H + 2 * g.PH, g.W + 2 * g.PW, g.C), dtype=gy.dtype)
    gy_groups = gy.reshape(g.N, g.OH, g.OW, g.G, g.CO // g.G)
    for i in range(g.KH):
        for j in range(g.KW):
            sent = xp.einsum("nhwgo,gco->nhwgc", gy_groups, _tap_by_group(w_taps[i, j], g))
            _window(padded, i, j, g)[...] += sent.reshape(g.N, g.OH, g.OW, g.C)
    return padded[:, g.PH:g.PH + g.H, g.PW:g.PW + g.W, :]


def backward_weight_reference(gy, x, geometry):
    """Plain NumPy: gw_taps[i, j] = (slice tap (i, j) read)ᵀ @ gy, over every position,
    group by group."""
    g, xp = geometry, get_array_module(x)
    padded = _padded(x, g)
    gy_groups = gy.reshape(g.M, g.G, g.CO // g.G)
    gw_taps = xp.empty((g.KH, g.KW, g.C // g.G, g.CO), dtype=gy.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            window = _grouped(_window(padded, i, j, g), g).reshape(g.M, g.G, g.C // g.G)
            blocks = xp.einsum("mgc,mgo->cgo", window, gy_groups)   # (C/G, G, CO/G)
            gw_taps[i, j] = blocks.reshape(g.C // g.G, g.CO)
    return gw_taps


# ----------------------------------------------------------------------------- cpu (Numba)
#
# Stride 1 only (``Direct.applies``). The input is padded once and stored channel-major,
# planes (N, C, HP, WP) with HP = H + 2·PH, WP = W + 2·PW. An output row is then a run of
# OW values at pitch WP, and the whole output plane of one (sample, channel) is the run
#
#     acc[o, oh·WP + ow]   0 ≤ oh < OH, 0 ≤ ow < OW      (L = (OH − 1)·WP + OW values)
#
# For tap (i, j) of channel c, the input values under every window are then *one
# contiguous run* of the flattened plane, starting at i·DH·WP + j·DW: the convolution is
# C·KH·KW·CO multiply-adds of runs of L ≈ OH·WP numbers (LeNet-5's first layer: 150 runs
# of 668 per sample), which the compiler turns into SIMD. The WP − OW columns between two
# output rows are computed and thrown away (LeNet-5's first layer: 4 in 28, 14% extra
# arithmetic); in the gradients they carry zeros, so they add nothing.

@njit(nogil=True, cache=True)
def _multiply_add(out, weight, values):
    """out += weight · values, elementwise (two runs of the same length)."""
    for t in range(out.size):
        out[t] += weight * values[t]


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _dot(a, b):
    """Σ a[t]·b[t]. ``reassoc`` lets the compiler sum in SIMD lanes (a different rounding
    order than one running sum, within float32's tolerance like BLAS's own)."""
    total = a[0] * 0
    for t in range(a.size):
        total += a[t] * b[t]
    return total


@njit(nogil=True, cache=True)
def _forward_block(planes, w_taps, y, first, last, DH, DW):
    """y[first:last] from planes (N, C, HP, WP); acc is one sample's output at pitch WP.
    Input channel c meets only its group's outputs, o in [γ·CO/G, (γ + 1)·CO/G).

    One tap per pass over the accumulator. Adding a kernel row's taps three at a time
    (fewer passes, less memory traffic) measured 0.65 → 0.51 ms on LeNet-5's first layer
    (batch 64, one core) but cost 0.45 s more compilation in LeNet-5's first training
    step, which then took 3.3 s on an empty cache (the target is 3 s); with three and one
    at a time, 0.57 ms and 0.28 s more. The first step wins."""
    C, WP = planes.shape[1], planes.shape[3]
    KH, KW, Cg, CO = w_taps.shape
    COg = CO // (C // Cg)
    OH, OW = y.shape[1], y.shape[2]
    L = (OH - 1) * WP + OW
    acc = np.empty((CO, L), dtype=y.dtype)
    for n in range(first, last):
        acc[:] = 0
        for c in range(C):
            plane = planes[n, c].reshape(-1)
            group, cg = c // Cg, c % Cg
            for i in range(KH):
                for j in range(KW):
                    start = i * DH * WP + j * DW
                    window = plane[start:start + L]
                    for o in range(group * COg, (group + 1) * COg):
                        _multiply_add(acc[o], w_taps[i, j, cg, o], window)
        for oh in range(OH):
            for ow in range(OW):
                for o in range(CO):
                    y[n, oh, ow, o] = acc[o, oh * WP + ow]


@njit(nogil=True, cache=True)
def _backward_input_block(grads, w_taps, grad_planes, first, last, DH, DW):
    """grad_planes[first:last] (zeros on entry): every run the forward read gets back
    w · the output gradient; grads (N, CO, OH·WP) is gy at pitch WP, zero between rows."""
    C, WP = grad_planes.shape[1], grad_planes.shape[3]
    KH, KW, Cg, CO = w_taps.shape
    COg = CO // (C // Cg)
    OH, OW = grads.shape[2] // WP, WP - (KW - 1) * DW       # stride 1
    L = (OH - 1) * WP + OW
    for n in range(first, last):
        for c in range(C):
            plane = grad_planes[n, c].reshape(-1)
            group, cg = c // Cg, c % Cg
            for i in range(KH):
                for j in range(KW):
                    start = i * DH * WP + j * DW
                    window = plane[start:start + L]
                    for o in range(group * COg, (group + 1) * COg):
                        _multiply_add(window, w_taps[i, j, cg, o], grads[n, o, :L])


@njit(nogil=True, cache=True)
def _backward_weight_block(grads, planes, gw_taps, first, last, DH, DW):
    """gw_taps += Σ over samples first … last − 1: one dot product of runs per weight."""
    C, WP = planes.shape[1], planes.shape[3]
    KH, KW, Cg, CO = gw_taps.shape
    COg = CO // (C // Cg)
    OH, OW = grads.shape[2] // WP, WP - (KW - 1) * DW       # stride 1
    L = (OH - 1) * WP + OW
    for n in range(first, last):
        for c in range(C):
            plane = planes[n, c].reshape(-1)
            group, cg = c // Cg, c % Cg
            for i in range(KH):
                for j in range(KW):
                    start = i * DH * WP + j * DW
                    window = plane[start:start + L]
                    for o in range(group * COg, (group + 1) * COg):
                        gw_taps[i, j, cg, o] += _dot(grads[n, o, :L], window)


def padded_planes(x, g):
    """x (N, H, W, C) -> (N, C, HP, WP): padded once, one contiguous plane per channel."""
    planes = np.zeros((g.N, g.C, g.H + 2 * g.PH, g.W + 2 * g.PW), dtype=x.dtype)
    planes[:, :, g.PH:g.PH + g.H, g.PW:g.PW + g.W] = x.transpose(0, 3, 1, 2)
    return planes


def gradient_runs(gy, g):
    """gy (N, OH, OW, CO) -> (N, CO, OH·WP): each output row at pitch WP, zeros between."""
    WP = g.W + 2 * g.PW
    grads = np.zeros((g.N, g.CO, g.OH, WP), dtype=gy.dtype)
    grads[:, :, :, :g.OW] = gy.transpose(0, 3, 1, 2)
    return grads.reshape(g.N, g.CO, g.OH * WP)


def forward_numba(x, w_taps, geometry):
    g = geometry
    planes, w_taps = padded_planes(x, g), np.ascontiguousarray(w_taps)
    y = np.empty((g.N, g.OH, g.OW, g.CO), dtype=x.dtype)
    over_blocks(lambda first, last: _forward_block(
        planes, w_taps, y, first, last, g.DH, g.DW), g.N, _work_per_sample(g))
    return y


def backward_input_numba(gy, w_taps, geometry):
    g = geometry
    grads, w_taps = gradient_runs(gy, g), np.ascontiguousarray(w_taps)
    grad_planes = np.zeros((g.N, g.C, g.H + 2 * g.PH, g.W + 2 * g.PW), dtype=gy.dtype)
    over_blocks(lambda first, last: _backward_input_block(
        grads, w_taps, grad_planes, first, last, g.DH, g.DW), g.N, _work_per_sample(g))
    return np.ascontiguousarray(
        grad_planes[:, :, g.PH:g.PH + g.H, g.PW:g.PW + g.W].transpose(0, 2, 3, 1))


def backward_weight_numba(gy, x, geometry):
    g = geometry
    grads, planes = gradient_runs(gy, g), padded_planes(x, g)

    def block(first, last):
        gw_taps = np.zeros((g.KH, g.KW, g.C // g.G, g.CO), dtype=gy.dtype)
        _backward_weight_block(grads, planes, gw_taps, first, last, g.DH, g.DW)
        return gw_taps

    return sum(over_blocks(block, g.N, _work_per_sample(g)))


def run_length(g):
    """L = (OH − 1)·WP + OW: the values of one output plane at pitch WP, the length of
    every run the kernels multiply and add (stride 1)."""
    return (g.OH - 1) * (g.W + 2 * g.PW) + g.OW


def _work_per_sample(g):
    """Multiply-adds per sample (the unit of ``threads.MIN_WORK_PER_THREAD``)."""
    return g.OH * g.OW * g.K * g.CO


# ----------------------------------------------------------------------------- registry

#: x (N, H, W, C), w_taps (KH, KW, C/G, CO) -> y (N, OH, OW, CO)
direct_forward = register_kernel("direct_forward", forward_reference, numba=forward_numba)
#: gy (N, OH, OW, CO), w_taps -> gx (N, H, W, C)
direct_backward_input = register_kernel("direct_backward_input", backward_input_reference,
                                        numba=backward_input_numba)
#: gy, x -> gw_taps (KH, KW, C/G, CO)
direct_backward_weight = register_kernel("direct_backward_weight", backward_weight_reference,
                                         numba=backward_weight_numba)
